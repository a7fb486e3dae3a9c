"""The only module that talks to AWS (boto3): small typed functions, timeouts, our own errors.

Errors come out as `AwsTransientError` (retry with backoff: throttling, 5xx, connection
trouble) or `AwsPermanentError` (retrying cannot help: the task is closed, the input is bad).
Their messages never contain a task token.
"""

import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

import boto3
import botocore.session
import requests
from botocore.config import Config
from botocore.credentials import DeferredRefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.utils import timezone

from approvals.delivery import ExecutionReading, TaskClosure
from approvals.redaction import redact
from approvals.stepfunctions import TRANSIENT_CODES

logger = logging.getLogger(__name__)


class AwsError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class AwsTransientError(AwsError):
    """Worth retrying later."""


class AwsPermanentError(AwsError):
    """Retrying cannot help."""


@dataclass(frozen=True)
class QueueMessage:
    message_id: str
    receipt_handle: str
    body: str = field(repr=False)  # holds the task token
    receive_count: int
    # When SQS says it was sent (SentTimestamp), by SQS's clock; None when it did not say.
    sent_at: datetime | None = None
    # A message sent again from the dead-letter queue (move_message): when the original was sent.
    first_sent_at: datetime | None = None


# The message attribute move_message gives a message it sends again: when the original was sent
# (milliseconds since the epoch, as SentTimestamp), which the new message's SentTimestamp is not.
FIRST_SENT_ATTRIBUTE = "approvalFirstSentTimestamp"
MAX_MESSAGE_ATTRIBUTES = 10  # SQS's limit per message: a message that has them all goes without


def _timestamp(value) -> datetime | None:
    """SQS's milliseconds since the epoch as an aware datetime; None when it is not one."""
    try:
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _translate(error: Exception, *secrets: str) -> AwsError:
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "Unknown")
        message = redact(error.response.get("Error", {}).get("Message", ""), *secrets)
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in TRANSIENT_CODES or status >= 500:
            return AwsTransientError(code, message)
        return AwsPermanentError(code, message)
    # Connection refused, read timeout, endpoint unreachable: the network's bad minute.
    return AwsTransientError(type(error).__name__, redact(str(error), *secrets))


@dataclass(frozen=True)
class AwsRoute:
    """Where and as whom a call goes: a region, and optionally a role assumed with STS.

    None instead of a route means the environment's default (AWS_REGION, the portal's own
    credentials). The external ID is kept out of every repr (it is treated as sensitive).
    """

    region: str
    role_arn: str = ""
    external_id: str = field(default="", repr=False)


# How long an assumed role's credentials last (AssumeRole's default; botocore refreshes them
# 15 minutes before they expire, and insists 10 minutes before).
ASSUMED_ROLE_SECONDS = 3600
ROLE_SESSION_NAME = "approval-portal"


def credentials_clock():
    """The time botocore compares an assumed role's expiry with: a seam a test can move."""
    return timezone.now()


_role_credentials: dict[tuple[str, str], DeferredRefreshableCredentials] = {}
_role_credentials_lock = threading.Lock()


def _assume_role(role_arn: str, external_id: str) -> dict:
    """STS AssumeRole with the portal's own credentials, in botocore's refresh format."""
    sts = _client(
        "sts",
        endpoint_url=settings.AWS_ENDPOINT_URL,
        region=settings.AWS_REGION,
        connect_timeout=settings.AWS_CONNECT_TIMEOUT,
        read_timeout=settings.AWS_READ_TIMEOUT,
        attempts=3,
    )
    arguments = {"RoleArn": role_arn, "RoleSessionName": ROLE_SESSION_NAME, "DurationSeconds": ASSUMED_ROLE_SECONDS}
    if external_id:
        arguments["ExternalId"] = external_id
    try:
        credentials = sts.assume_role(**arguments)["Credentials"]
    except (ClientError, BotoCoreError) as error:
        # Never the external ID in what is raised (and so logged or recorded).
        raise _translate(error, external_id) from None
    logger.info("assumed role %s (credentials until %s)", role_arn, credentials["Expiration"])
    return {
        "access_key": credentials["AccessKeyId"],
        "secret_key": credentials["SecretAccessKey"],
        "token": credentials["SessionToken"],
        "expiry_time": credentials["Expiration"].isoformat(),
    }


def role_credentials(role_arn: str, external_id: str) -> DeferredRefreshableCredentials:
    """One set of credentials per role and external ID, assumed on first use and refreshed by
    botocore before they expire (compared with `credentials_clock`); shared by every client."""
    key = (role_arn, external_id)
    with _role_credentials_lock:
        credentials = _role_credentials.get(key)
        if credentials is None:
            credentials = DeferredRefreshableCredentials(
                refresh_using=lambda: _assume_role(role_arn, external_id),
                method="sts-assume-role",
                time_fetcher=lambda: credentials_clock(),
            )
            _role_credentials[key] = credentials
    return credentials


@lru_cache(maxsize=64)
def _client(
    service: str,
    *,
    endpoint_url: str | None,
    region: str,
    connect_timeout: float,
    read_timeout: float,
    attempts: int,
    role_arn: str = "",
    external_id: str = "",
):
    """The one place a boto3 client is made: one per service, region, role and timeouts, cached
    (clients are thread-safe). With a role, its credentials come from STS (`role_credentials`)."""
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": attempts, "mode": "standard"},
    )
    if role_arn:
        core = botocore.session.get_session()
        core._credentials = role_credentials(role_arn, external_id)  # botocore's way to hand a session credentials
        return boto3.session.Session(botocore_session=core).client(
            service, region_name=region, endpoint_url=endpoint_url, config=config
        )
    return boto3.session.Session().client(
        service,
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=settings.AWS_ACCESS_KEY_ID,
        aws_secret_access_key=settings.AWS_SECRET_ACCESS_KEY,
        config=config,
    )


# Making a client loads the service's model (tens of milliseconds of CPU): threads that need the
# same client at once (a batch's Send* calls) wait for the first to make it instead of each
# making their own.
_client_lock = threading.Lock()


def _working_client(service: str, read_timeout: float, route: AwsRoute | None = None):
    with _client_lock:
        return _client(
            service,
            endpoint_url=settings.AWS_ENDPOINT_URL,
            region=route.region if route else settings.AWS_REGION,
            connect_timeout=settings.AWS_CONNECT_TIMEOUT,
            read_timeout=read_timeout,
            attempts=3,
            role_arn=route.role_arn if route else "",
            external_id=route.external_id if route else "",
        )


def warm_clients() -> None:
    """Make the default route's Step Functions client before the first task needs it (a worker
    process's start): the first callback after a (re)start then costs no client creation."""
    _sfn()


def _sqs(read_timeout: float | None = None, route: AwsRoute | None = None):
    timeout = max(settings.AWS_READ_TIMEOUT, read_timeout or 0)
    return _working_client("sqs", timeout, route)


def _sfn(route: AwsRoute | None = None):
    return _working_client("stepfunctions", settings.AWS_READ_TIMEOUT, route)


def _secret(route: AwsRoute | None) -> str:
    return route.external_id if route else ""


# ---------------------------------------------------------------------------
# SQS: the approval queue
# ---------------------------------------------------------------------------
def receive_batch(
    *, queue_url: str, wait_seconds: int, visibility_timeout: int, max_messages: int = 10, route: AwsRoute | None = None
) -> list[QueueMessage]:
    """Long-poll for up to `max_messages` (SQS caps a batch at 10)."""
    try:
        response = _sqs(read_timeout=wait_seconds + 10, route=route).receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(max_messages, 10),
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_timeout,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            MessageAttributeNames=[FIRST_SENT_ATTRIBUTE],
        )
    except (ClientError, BotoCoreError) as error:
        raise _translate(error, _secret(route)) from None
    return [
        QueueMessage(
            message_id=item["MessageId"],
            receipt_handle=item["ReceiptHandle"],
            body=item.get("Body", ""),
            receive_count=int(item.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            sent_at=_timestamp(item.get("Attributes", {}).get("SentTimestamp")),
            first_sent_at=_timestamp(
                item.get("MessageAttributes", {}).get(FIRST_SENT_ATTRIBUTE, {}).get("StringValue")
            ),
        )
        for item in response.get("Messages", [])
    ]


def delete_messages(*, queue_url: str, receipt_handles: list[str], route: AwsRoute | None = None) -> list[str]:
    """Delete in batches of 10; returns the receipt handles that failed."""
    failed: list[str] = []
    for start in range(0, len(receipt_handles), 10):
        chunk = receipt_handles[start : start + 10]
        entries = [{"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(chunk)]
        try:
            response = _sqs(route=route).delete_message_batch(QueueUrl=queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as error:
            logger.warning("delete_message_batch failed: %s", _translate(error, _secret(route)))
            failed.extend(chunk)
            continue
        failed.extend(chunk[int(item["Id"])] for item in response.get("Failed", []))
    return failed


def extend_visibility(
    *, queue_url: str, receipt_handles: list[str], timeout: int, route: AwsRoute | None = None
) -> None:
    """Keep messages hidden while a slow batch is still being ingested."""
    for start in range(0, len(receipt_handles), 10):
        chunk = receipt_handles[start : start + 10]
        entries = [{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": timeout} for i, h in enumerate(chunk)]
        try:
            _sqs(route=route).change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as error:
            # Not fatal: at worst a message is received twice, and ingestion is idempotent.
            logger.warning("change_message_visibility_batch failed: %s", _translate(error, _secret(route)))


def send_message(*, queue_url: str, body: str, route: AwsRoute | None = None) -> str:
    try:
        return _sqs(route=route).send_message(QueueUrl=queue_url, MessageBody=body)["MessageId"]
    except (ClientError, BotoCoreError) as error:
        raise _translate(error, _secret(route)) from None


def ensure_queue(*, name: str, visibility_timeout: int, max_receive_count: int, route: AwsRoute | None = None) -> str:
    """Create the queue and its dead-letter queue (redrive after `max_receive_count`)."""
    try:
        sqs = _sqs(route=route)
        dlq_url = sqs.create_queue(QueueName=f"{name}-dlq", Attributes={"MessageRetentionPeriod": "1209600"})[
            "QueueUrl"
        ]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)})
        queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
        sqs.set_queue_attributes(
            QueueUrl=queue_url,
            Attributes={"VisibilityTimeout": str(visibility_timeout), "RedrivePolicy": redrive},
        )
        return queue_url
    except (ClientError, BotoCoreError) as error:
        raise _translate(error, _secret(route)) from None


# ---------------------------------------------------------------------------
# SQS: the dead-letter queue (ingest errors an admin replays or discards)
# ---------------------------------------------------------------------------
# How far a search for one message looks into a queue: 100 receives of 10.
MESSAGE_SEARCH_BATCHES = 100


def dead_letter_queue_url(*, queue_url: str) -> str | None:
    """The DLQ named by the queue's redrive policy, or None when it has none."""
    try:
        sqs = _sqs()
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
        policy = attributes.get("RedrivePolicy")
        if not policy:
            return None
        # arn:aws:sqs:<region>:<account>:<name>
        _, _, _, _, account, name = json.loads(policy)["deadLetterTargetArn"].split(":", 5)
        return sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    except (ClientError, BotoCoreError) as error:
        raise _translate(error) from None


def _find_message(sqs, queue_url: str, message_id: str) -> dict | None:
    """Receive from `queue_url` until the message with `message_id` turns up, or the queue runs dry.

    Messages looked at on the way are hidden for a moment (so the next receive returns others)
    and made visible again at the end. Only for a dead-letter queue, which nobody consumes.
    """
    passed: list[str] = []
    found = None
    try:
        for _ in range(MESSAGE_SEARCH_BATCHES):
            messages = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                VisibilityTimeout=60,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["SentTimestamp"],
            ).get("Messages", [])
            if not messages:
                break
            for message in messages:
                if found is None and message["MessageId"] == message_id:
                    found = message
                else:
                    passed.append(message["ReceiptHandle"])
            if found is not None:
                break
    finally:
        for start in range(0, len(passed), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for i, handle in enumerate(passed[start : start + 10])
            ]
            try:
                sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
            except (ClientError, BotoCoreError) as error:  # they reappear after 60 s anyway
                logger.warning("could not release messages on %s: %s", queue_url, _translate(error))
    return found


def move_message(*, source_queue_url: str, target_queue_url: str, message_id: str) -> str | None:
    """Send one message (found by id) from `source` to `target` and delete it from `source`.

    Returns the id it got on `target`, or None when it is not on `source` (any more). The
    body goes across untouched: it holds the task token, and never passes through our logs.
    The copy is a new message, sent now: when the original was sent (SQS keeps a dead letter's
    SentTimestamp, and a copy moved before carries its own) goes along in FIRST_SENT_ATTRIBUTE,
    as Step Functions' timers started then.
    """
    try:
        sqs = _sqs()
        message = _find_message(sqs, source_queue_url, message_id)
        if message is None:
            return None
        attributes = {
            name: {key: value[key] for key in ("DataType", "StringValue", "BinaryValue") if key in value}
            for name, value in message.get("MessageAttributes", {}).items()
        }
        first_sent_missing = FIRST_SENT_ATTRIBUTE not in attributes and len(attributes) < MAX_MESSAGE_ATTRIBUTES
        if first_sent_missing and "SentTimestamp" in message.get("Attributes", {}):
            first_sent = message["Attributes"]["SentTimestamp"]
            attributes[FIRST_SENT_ATTRIBUTE] = {"DataType": "Number", "StringValue": first_sent}
        sent = sqs.send_message(QueueUrl=target_queue_url, MessageBody=message["Body"], MessageAttributes=attributes)
    except (ClientError, BotoCoreError) as error:
        raise _translate(error) from None
    try:
        sqs.delete_message(QueueUrl=source_queue_url, ReceiptHandle=message["ReceiptHandle"])
    except (ClientError, BotoCoreError) as error:
        # Harmless: ingestion is idempotent on the token; the copy left behind can be discarded.
        logger.warning("message %s sent again but not deleted from %s: %s", message_id, source_queue_url, error)
    return sent["MessageId"]


def delete_message_by_id(*, queue_url: str, message_id: str) -> bool:
    """Delete one message (found by id); False when it is not on the queue (any more)."""
    try:
        sqs = _sqs()
        message = _find_message(sqs, queue_url, message_id)
        if message is None:
            return False
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return True
    except (ClientError, BotoCoreError) as error:
        raise _translate(error) from None


# ---------------------------------------------------------------------------
# Step Functions: the callbacks
# ---------------------------------------------------------------------------
# `route`: the execution's region and its source's role (approvals/selectors/sources.py);
# None: the default source's (AWS_REGION, the portal's own credentials).
def send_task_success(*, task_token: str, output: dict, route: AwsRoute | None = None) -> None:
    try:
        _sfn(route).send_task_success(taskToken=task_token, output=json.dumps(output, ensure_ascii=False))
    except (ClientError, BotoCoreError) as error:
        raise _translate(error, task_token, _secret(route)) from None


def send_task_failure(*, task_token: str, error: str, cause: str, route: AwsRoute | None = None) -> None:
    try:
        _sfn(route).send_task_failure(taskToken=task_token, error=error, cause=cause)
    except (ClientError, BotoCoreError) as exc:
        raise _translate(exc, task_token, _secret(route)) from None


def send_task_heartbeat(*, task_token: str, route: AwsRoute | None = None) -> None:
    try:
        _sfn(route).send_task_heartbeat(taskToken=task_token)
    except (ClientError, BotoCoreError) as error:
        raise _translate(error, task_token, _secret(route)) from None


# ---------------------------------------------------------------------------
# Step Functions: reading an execution (what became of an ambiguous callback)
# ---------------------------------------------------------------------------
# At most this many history events are read (1,000 a page); an approval execution has dozens.
MAX_HISTORY_EVENTS = 20_000
_CLOSURE_DETAILS = {
    "TaskSucceeded": "taskSucceededEventDetails",
    "TaskFailed": "taskFailedEventDetails",
    "TaskTimedOut": "taskTimedOutEventDetails",
}


def read_execution(*, execution_arn: str, task_token: str, route: AwsRoute | None = None) -> ExecutionReading:
    """DescribeExecution and GetExecutionHistory, boiled down to what closed which task.

    Needs states:DescribeExecution and states:GetExecutionHistory (deploy/iam-policy.json); a
    refusal comes out as AwsPermanentError (AccessDeniedException). `task_token` only finds the
    TaskScheduled event that issued it; it is never returned, logged or put in an error.
    """
    try:
        sfn = _sfn(route)
        described = sfn.describe_execution(executionArn=execution_arn)
        pages = sfn.get_paginator("get_execution_history").paginate(
            executionArn=execution_arn,
            includeExecutionData=True,
            PaginationConfig={"MaxItems": MAX_HISTORY_EVENTS, "PageSize": 1000},
        )
        events = [event for page in pages for event in page["events"]]
    except (ClientError, BotoCoreError) as error:
        raise _translate(error, task_token, _secret(route)) from None
    return _execution_reading(described, events, task_token)


def _execution_reading(described: dict, events: list[dict], task_token: str) -> ExecutionReading:
    by_id = {event["id"]: event for event in events}
    quoted = json.dumps(task_token)[1:-1]
    ours = {
        event["id"]
        for event in events
        if event["type"] == "TaskScheduled"
        and (
            task_token in (parameters := event.get("taskScheduledEventDetails", {}).get("parameters", ""))
            or quoted in parameters
        )
    }

    def scheduled_by(event: dict) -> int | None:
        # TaskSucceeded -> TaskSubmitted -> TaskStarted -> TaskScheduled, by previousEventId.
        for _ in range(20):
            previous = by_id.get(event.get("previousEventId"))
            if previous is None:
                return None
            if previous["type"] == "TaskScheduled":
                return previous["id"]
            event = previous
        return None

    closures = tuple(
        TaskClosure(
            event=event["type"],
            ours=scheduled_by(event) in ours,
            output=details.get("output", "") or "",
            error=details.get("error", "") or "",
            cause=details.get("cause", "") or "",
        )
        for event in events
        if event["type"] in _CLOSURE_DETAILS
        for details in [event.get(_CLOSURE_DETAILS[event["type"]], {})]
    )
    return ExecutionReading(
        status=described.get("status", ""),
        output=described.get("output", "") or "",
        task_found=bool(ours),
        closures=closures,
        complete=len(events) < MAX_HISTORY_EVENTS,
    )


# ---------------------------------------------------------------------------
# Step Functions: the demo state machine (local development and tests)
# ---------------------------------------------------------------------------
def ensure_state_machine(*, name: str, definition: dict, role_arn: str, route: AwsRoute | None = None) -> str:
    body = json.dumps(definition)
    try:
        sfn = _sfn(route)
        for machine in sfn.list_state_machines()["stateMachines"]:
            if machine["name"] == name:
                sfn.update_state_machine(stateMachineArn=machine["stateMachineArn"], definition=body, roleArn=role_arn)
                return machine["stateMachineArn"]
        return sfn.create_state_machine(name=name, definition=body, roleArn=role_arn)["stateMachineArn"]
    except (ClientError, BotoCoreError) as error:
        raise _translate(error, _secret(route)) from None


def start_execution(*, state_machine_arn: str, name: str, execution_input: dict, route: AwsRoute | None = None) -> str:
    try:
        return _sfn(route).start_execution(
            stateMachineArn=state_machine_arn, name=name, input=json.dumps(execution_input, ensure_ascii=False)
        )["executionArn"]
    except (ClientError, BotoCoreError) as error:
        raise _translate(error, _secret(route)) from None


def describe_execution(*, execution_arn: str, route: AwsRoute | None = None) -> dict:
    try:
        return _sfn(route).describe_execution(executionArn=execution_arn)
    except (ClientError, BotoCoreError) as error:
        raise _translate(error, _secret(route)) from None


def get_execution_history(*, execution_arn: str, route: AwsRoute | None = None) -> list[dict]:
    """Every event of an execution, oldest first."""
    try:
        pages = _sfn(route).get_paginator("get_execution_history").paginate(executionArn=execution_arn)
        return [event for page in pages for event in page["events"]]
    except (ClientError, BotoCoreError) as error:
        raise _translate(error, _secret(route)) from None


def configure_emulator(endpoint_url: str) -> None:
    """Turn on the moto server's state machine execution (off by default: executions never run)."""
    response = requests.post(
        f"{endpoint_url.rstrip('/')}/moto-api/config",
        json={"stepfunctions": {"execute_state_machine": True}},
        timeout=10,
    )
    response.raise_for_status()


# ---------------------------------------------------------------------------
# Operations: queue depth for /metrics, reachability for /readyz
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueDepth:
    """SQS's approximate counts (CloudWatch's ApproximateAgeOfOldestMessage is not in the API)."""

    visible: int
    in_flight: int
    delayed: int
    dead_letter_visible: int | None  # None: no redrive policy, or not allowed to read the DLQ


def _sqs_probe(route: AwsRoute | None = None):
    # Health checks and scrapes must answer fast: short timeouts and no retries.
    timeout = settings.AWS_PROBE_TIMEOUT
    return _client(
        "sqs",
        endpoint_url=settings.AWS_ENDPOINT_URL,
        region=route.region if route else settings.AWS_REGION,
        connect_timeout=timeout,
        read_timeout=timeout,
        attempts=1,
        role_arn=route.role_arn if route else "",
        external_id=route.external_id if route else "",
    )


_DEPTH_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


def probe_queue(*, queue_url: str, route: AwsRoute | None = None) -> None:
    """One cheap call that proves AWS answers and the queue exists (raises AwsError if not)."""
    try:
        _sqs_probe(route).get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    except (ClientError, BotoCoreError) as error:
        raise _translate(error, _secret(route)) from None


def queue_depth(*, queue_url: str, route: AwsRoute | None = None) -> QueueDepth:
    """The queue's message counts, and its dead-letter queue's when the redrive policy names one."""
    try:
        sqs = _sqs_probe(route)
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[*_DEPTH_ATTRIBUTES, "RedrivePolicy"])[
            "Attributes"
        ]
    except (ClientError, BotoCoreError) as error:
        raise _translate(error, _secret(route)) from None
    return QueueDepth(
        visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        dead_letter_visible=_dead_letter_depth(sqs, attributes.get("RedrivePolicy")),
    )


def _dead_letter_depth(sqs, policy: str | None) -> int | None:
    if not policy:
        return None
    try:
        # arn:aws:sqs:<region>:<account>:<name>
        _, _, _, _, account, name = json.loads(policy)["deadLetterTargetArn"].split(":", 5)
        url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        response = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    except (ValueError, KeyError) as error:
        logger.debug("unreadable redrive policy: %s", error)
        return None
    except (ClientError, BotoCoreError) as error:
        # The portal's IAM policy may not cover the DLQ: the main queue's numbers still count.
        logger.debug("dead-letter queue depth unavailable: %s", _translate(error))
        return None
    return int(response["Attributes"].get("ApproximateNumberOfMessages", 0))
