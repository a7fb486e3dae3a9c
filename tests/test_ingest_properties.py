"""Property-based tests of the whole ingest path: any body, mixed into a batch with good ones.

Each example sends a batch of up to ten messages to the moto server's SQS queue and runs one
consumer pass (`worker.consumer.consume_once`, what the worker runs) against PostgreSQL. For
any bodies at all (random JSON shapes, sizes around the limit, unicode, numbers at and beyond
the edges of a double, deep nesting, broken JSON), the pass never raises, every good message
becomes exactly one request, every other message exactly one request or one IngestError
(never both, never neither; the contract decides which), and no task token is in any stored
error, audit event or log line. Messages may carry `options` and a `form` (good ones, ones with
one part broken, and random JSON in their place): a request keeps them as the contract parsed
them, and a refusal names the path of what it refused.

The example budget is bounded (MAX_EXAMPLES, some twenty seconds): CI runs this with the rest.
Task tokens are made fresh for each example (os.urandom), so an example replayed while
shrinking never meets the request an earlier one left behind; hypothesis chooses their shape.
"""

import base64
import json
import logging
import os
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from approvals import tokens
from approvals.contract import MAX_NESTING_DEPTH, ContractError, parse_message
from approvals.models import ApprovalRequest, AuditEvent, IngestError
from tests.test_answers import schemas
from tests.test_ingest import assert_token_absent, sqs_client
from worker.consumer import consume_once

MAX_EXAMPLES = 20
# A small size limit keeps a batch of ten bodies "around the limit" far below SQS's 256 KiB.
LIMIT = 6 * 1024
# Hidden long enough that a message left on the queue by mistake is not received by the next example.
VISIBILITY = 600

# Characters SQS accepts in a body (#x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF).
SQS_TEXT = st.characters(
    codec="utf-8", exclude_characters=[chr(c) for c in range(32) if c not in (9, 10, 13)] + ["\ufffe", "\uffff"]
)
EDGE_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "\u0000",
        "\ud800",
        "\udfff",
        "\u202e",
        "\u200b",
        "\ufeff",
        "\u2028",
        "\x1b[31m",
        "<script>alert(1)</script>",
        "Müller & Söhne",
        "日本語のテキスト",
        "👨\u200d👩\u200d👧",
        "x" * 400,
    ]
)
# Number literals written into the body as they are: JSON's grammar accepts the first ones,
# Python reads some as infinity or zero; the last ones are not JSON.
EDGE_NUMBERS = [
    "0",
    "-0.0",
    "1e-400",
    "5e-324",
    "1.7976931348623157e308",
    "1e308",
    "1e309",
    "1e400",
    "-1e400",
    "123456789e999",
    "9223372036854775808",
    "-9223372036854775809",
    "9" * 500,
    "9" * 5000,
    "NaN",
    "Infinity",
    "-Infinity",
]
# Placeholders a json.dumps'ed body carries until the text replaces them (json.dumps cannot
# write 1e400, and recurses on deep nesting).
EDGE = "\u0000edge-number\u0000"
DEEP = "\u0000deep\u0000"

ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=11))])

# Hypothesis takes naive bounds and adds the zone.
DEADLINES = st.datetimes(
    min_value=datetime(1900, 1, 1),  # noqa: DTZ001
    max_value=datetime(9000, 1, 1),  # noqa: DTZ001
    timezones=ZONES,
).map(datetime.isoformat)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(SQS_TEXT, max_size=40)
    | EDGE_STRINGS
    | st.just(EDGE)
)
any_json = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(SQS_TEXT, max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)


def nested(depth: int, leaf: object) -> object:
    for level in range(depth):
        leaf = [leaf] if level % 2 else {"n": leaf}
    return leaf


@st.composite
def token_of_some_shape(draw) -> str:
    """A fresh token in a shape hypothesis picks: the emulator's UUID or AWS's long opaque string."""
    if draw(st.booleans()):
        return str(uuid.uuid4())
    length = draw(st.integers(min_value=100, max_value=2048))
    return base64.b64encode(os.urandom(length)).decode()[:length]


def dumps(data: object, ensure_ascii: bool) -> str:
    text = json.dumps(data, ensure_ascii=ensure_ascii)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only its JSON escape can travel
        text = json.dumps(data)
    return text


def to_body(data: dict, *, ensure_ascii: bool, edge_number: str, depth: int = 0) -> str:
    """The body's text; `depth` levels of arrays around the details, written as text."""
    if depth:
        details = dumps(data.get("details"), ensure_ascii)
        data = {**data, "details": DEEP}
    body = dumps(data, ensure_ascii)
    if depth:
        body = body.replace(json.dumps(DEEP), "[" * depth + details + "]" * depth)
    return body.replace(json.dumps(EDGE), edge_number)


@st.composite
def any_message(draw, token: str) -> str:
    """Anything: random JSON around a token (or none), deep, large, broken or not JSON at all."""
    # Half start from a good message, so that a single bad part (one number, the depth) decides.
    data: dict = draw(good_data(token)) if draw(st.booleans()) else {}
    data.update(draw(st.just({}) | st.dictionaries(st.sampled_from(FIELDS), any_json, max_size=6)))
    if draw(st.integers(0, 3)) == 0:
        data = draw(near_miss(data))
    where = draw(st.sampled_from(["taskToken", "taskToken", "none", "in details too", "wrong type"]))
    data.pop("taskToken", None)
    if where in ("taskToken", "in details too"):
        data["taskToken"] = token
    if where == "in details too":  # every copy must go from a stored body, not only the field's
        data["details"] = {"note": f"copy {token} here", "again": [token], token[:36]: 1}
    if where == "wrong type":
        data["taskToken"] = {"value": token}
    # Around the limit, and around Python's own recursion limit (1,000 frames).
    depth = draw(st.sampled_from([0, 0, MAX_NESTING_DEPTH - 1, MAX_NESTING_DEPTH, 950, 990]) | st.integers(0, 1200))
    if draw(st.booleans()):  # an edge number where it is stored
        data["details"] = [EDGE, data.get("details")]
    # Sizes just under, at and over the limit as well as anywhere below it.
    padding = draw(st.sampled_from([0, 0, LIMIT - 400, LIMIT - 100, LIMIT]) | st.integers(0, LIMIT + 64))
    if padding:
        data["padding"] = "p" * padding
    edge_number = draw(st.sampled_from(EDGE_NUMBERS) | st.sampled_from(["1e400", "-1e400", "1e309"]))
    body = to_body(data, ensure_ascii=draw(st.booleans()), edge_number=edge_number, depth=depth)
    shape = draw(st.sampled_from(["as is", "as is", "as is", "cut off", "not json"]))
    if shape == "cut off":
        body = body[: draw(st.integers(min_value=1, max_value=max(1, len(body) - 1)))]
    elif shape == "not json":
        body = draw(st.text(SQS_TEXT, min_size=1, max_size=200)) + f" {token}"
    return body or " "


FIELDS = [
    "title",
    "details",
    "approvalRequest",
    "approvers",
    "requester",
    "approvalDeadline",
    "timeoutSeconds",
    "heartbeatSeconds",
    "execution",
    "stateMachine",
    "state",
    "policy",
    "requesterGroups",
    "options",
    "multiple",
    "form",
    "somethingNew",
]

one_line = st.text(st.characters(categories=["L", "N", "P", "S", "Zs"]), max_size=60)
good_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8", exclude_characters=["\u0000"]), max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(one_line, children, max_size=3),
    max_leaves=8,
)


@st.composite
def good_options(draw) -> list[dict]:
    """2 to 4 choices the contract accepts, at least one a success."""
    options = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "id": st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,15}\Z"),
                    "label": st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=20),
                    "outcome": st.sampled_from(["success", "failure"]),
                },
                optional={"error": st.from_regex(r"\A[A-Z][A-Za-z0-9_.:-]{0,30}\Z")},
            ),
            min_size=2,
            max_size=4,
            unique_by=lambda option: option["id"],
        )
    )
    options[0]["outcome"] = "success"
    for option in options:
        if option["outcome"] == "success" or option.get("error", "").startswith("States."):
            option.pop("error", None)
    return options


good_forms = schemas().map(lambda pair: pair[0])
# Parts of a form or an option that the contract must refuse, each in its own way.
BAD_PARTS = [
    {"$ref": "#/properties/a"},
    {"type": "object", "properties": {}},
    {"type": "string", "pattern": "^(a+)+$"},
    {"type": "string", "pattern": "(unclosed"},
    {"type": "number", "minimum": EDGE},
    {"type": "integer", "default": 2**60},
    {"type": "string", "format": "date", "default": "2026-02-30"},
    {"type": "string", "title": "\u202eevil"},
    {"type": "string", "enum": []},
    {"id": "x y", "label": "Bad", "outcome": "success"},
    {"id": "bad", "label": "Bad", "outcome": "failure", "error": "ApprovalCancelled"},
    {"id": "bad", "label": "\u0000", "outcome": "failure"},
    "string",
    None,
]


@st.composite
def near_miss(draw, data: dict) -> dict:
    """A good message whose options or form has one part replaced by something else."""
    data = {**data, "options": draw(good_options()), "form": draw(good_forms)}
    part = draw(st.sampled_from(BAD_PARTS) | any_json)
    where = draw(st.sampled_from(["option", "field", "form key", "multiple"]))
    if where == "option":
        data["options"][draw(st.integers(0, len(data["options"]) - 1))] = part
    elif where == "field":
        data["form"]["properties"][draw(st.sampled_from(sorted(data["form"]["properties"])))] = part
    elif where == "form key":
        data["form"][draw(st.sampled_from(["type", "required", "properties", "title", "$ref", "items"]))] = part
    else:
        data["multiple"] = part
    return data


@st.composite
def good_data(draw, token: str) -> dict:
    """A message the contract accepts, in the rich or the seed's shape, with unicode and edge values."""
    data: dict = {"taskToken": token}
    if draw(st.booleans()):
        data["title"] = draw(one_line)
        data["details"] = draw(good_json)
        data["approvers"] = {
            "users": draw(st.lists(st.sampled_from(["alice@example.com", "Carol@Example.COM"]), max_size=2)),
            "groups": draw(
                st.lists(st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=20), max_size=2)
            ),
        }
        data["requester"] = draw(st.sampled_from(["bob@example.com", "", None]))
        data["timeoutSeconds"] = draw(st.none() | st.integers(min_value=1, max_value=31_536_000))
        # good_json nests up to 8 levels itself: together within the limit.
        data["details"] = nested(draw(st.integers(min_value=0, max_value=MAX_NESTING_DEPTH - 9)), data["details"])
    else:
        data["approvalRequest"] = draw(good_json)
        data["approvalDeadline"] = draw(DEADLINES)
    if draw(st.booleans()):
        data["options"] = draw(good_options())
        data["multiple"] = draw(st.none() | st.just(False))
    if draw(st.booleans()):
        data["form"] = draw(good_forms)
    return data


@st.composite
def good_message(draw, token: str) -> str:
    body = to_body(draw(good_data(token)), ensure_ascii=draw(st.booleans()), edge_number="0")
    assert len(body.encode()) <= LIMIT, "the good-message strategy must stay within the limit"
    return body


@st.composite
def batches(draw) -> list[tuple[str, str, bool]]:
    """Up to ten (token, body, good) messages, in any order, at least one good one."""
    count = draw(st.integers(min_value=1, max_value=10))
    good_count = draw(st.integers(min_value=1, max_value=count))
    batch = []
    for index in range(count):
        token = draw(token_of_some_shape())
        good = index < good_count
        batch.append((token, draw(good_message(token) if good else any_message(token)), good))
    return draw(st.permutations(batch))


def contract_accepts(body: str) -> bool:
    try:
        parse_message(body, max_bytes=LIMIT)
    except ContractError:
        return False
    return True


@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=batches())
def test_any_batch_of_bodies_ingests_every_good_message_once_and_records_every_other_once_without_tokens(
    aws, caplog, batch
):
    caplog.set_level(logging.INFO)
    log_start = len(caplog.records)
    queue_url = aws.APPROVAL_QUEUE_URL
    sent = sqs_client().send_message_batch(
        QueueUrl=queue_url,
        Entries=[{"Id": str(index), "MessageBody": body} for index, (_, body, _) in enumerate(batch)],
    )
    assert not sent.get("Failed"), sent.get("Failed")
    message_ids = {int(entry["Id"]): entry["MessageId"] for entry in sent["Successful"]}

    handled = 0
    while True:  # never raises: that is the property
        received = consume_once(queue_url=queue_url, wait_seconds=0, visibility_timeout=VISIBILITY, max_bytes=LIMIT)
        if not received:
            break
        handled += received
    assert handled == len(batch)
    attributes = sqs_client().get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}

    for index, (token, body, good) in enumerate(batch):
        message_id = message_ids[index]
        requests = list(ApprovalRequest.objects.filter(sqs_message_id=message_id))
        errors = list(IngestError.objects.filter(sqs_message_id=message_id))
        assert len(requests) + len(errors) == 1, (good, body[:300])
        event(f"outcome: {errors[0].code if errors else 'request'}")  # --hypothesis-show-statistics
        if good or contract_accepts(body):
            assert good <= contract_accepts(body), "a good message the contract refuses: " + body[:300]
            assert requests, (errors[0].code, errors[0].reason, body[:300])
            assert tokens.decrypt_token(requests[0].token_ciphertext) == token
            # Kept as the contract parsed them.
            message = parse_message(body, max_bytes=LIMIT)
            assert requests[0].options == ([option.as_json() for option in message.options] or None)
            assert requests[0].form_schema == message.form
            assert requests[0].multiple_options is message.multiple
        else:
            assert errors and errors[0].receive_count == 1
            # Kept whole (encrypted) for the admin's replay: the queue message itself is gone.
            assert tokens.decrypt_token(errors[0].message_ciphertext) == body
        for error in errors:
            audit = AuditEvent.objects.filter(action="ingest_error", data__sqs_message_id=message_id)
            for other_token, _, _ in batch:
                assert_token_absent(
                    other_token, error.reason, error.body_redacted, *(json.dumps(a.data) for a in audit)
                )

    log_text = "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records[log_start:])
    for token, _, _ in batch:
        assert_token_absent(token, log_text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_options_and_forms_with_one_part_broken_never_crash_and_every_refusal_names_its_path(data):
    token = str(uuid.uuid4())
    good = data.draw(good_data(token))
    body = to_body(data.draw(near_miss(good)), ensure_ascii=data.draw(st.booleans()), edge_number="1e400")
    try:
        message = parse_message(body)
    except ContractError as error:
        event(f"refused: {error.code}")
        assert error.field is not None and error.field.split(".")[0].split("[")[0] in ("options", "form", "multiple")
        assert f"field '{error.field}'" in error.message, error.message
        assert token not in error.message and error.__context__ is None
        return
    event("accepted")
    # Accepted only as the contract promises: 2 to 10 options, a form in the subset.
    assert 2 <= len(message.options) <= 10 and message.form is not None
