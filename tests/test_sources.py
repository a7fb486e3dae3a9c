"""Approval sources: queues in other AWS accounts and regions, each read (and called back) with its
own role assumed through STS (docs/sources.md).

Real parts: the moto server is SQS, STS and Step Functions for every region and account (an
assumed role's credentials act in the role's account there, and a task token only works in the
account and region that issued it), PostgreSQL is the database.

One emulator gap, bridged in the open: moto's Step Functions sends its `sqs:sendMessage` as the
emulator's default account, so a member account's execution cannot reach the member account's own
queue there. `relay()` forwards each message from the queue moto did reach to the member's queue,
untouched; everything the portal does (receive, callbacks, reads) uses the member's queue and role.
"""

import json
import logging
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from unittest import mock

import boto3
import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from approvals import services
from approvals.integrations import aws as gateway
from approvals.models import ApprovalRequest, ApprovalSource, AuditEvent, Callback, CallbackStatus, IngestError
from approvals.selectors.sources import SourceToPoll, source_route
from tests.support import make_user, signed_in, wait_for
from worker.consumer import QueueConsumer, consume_once, poll_wait_seconds

ACCOUNT_A, REGION_A = "111111111111", "us-west-2"
ACCOUNT_B, REGION_B = "222222222222", "eu-west-1"


# ---------------------------------------------------------------------------
# Member accounts on the emulator
# ---------------------------------------------------------------------------
def _base(region: str, **credentials):
    return {
        "region_name": region,
        "endpoint_url": django_settings.AWS_ENDPOINT_URL,
        "aws_access_key_id": credentials.get("key", "testing"),
        "aws_secret_access_key": credentials.get("secret", "testing"),
        "aws_session_token": credentials.get("token"),
    }


class Member:
    """One member account: its role, queue and state machine, made with its own credentials."""

    def __init__(self, account: str, region: str, message: dict | None = None):
        self.account, self.region = account, region
        self.role_arn = f"arn:aws:iam::{account}:role/approval-portal-{uuid.uuid4().hex[:6]}"
        self.external_id = f"ext-{uuid.uuid4().hex}"
        sts = boto3.client("sts", **_base(region))
        credentials = sts.assume_role(RoleArn=self.role_arn, RoleSessionName="test-setup", ExternalId=self.external_id)[
            "Credentials"
        ]
        self.creds = {
            "key": credentials["AccessKeyId"],
            "secret": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
        }
        assert boto3.client("sts", **_base(region, **self.creds)).get_caller_identity()["Account"] == account
        name = f"approvals-{uuid.uuid4().hex[:8]}"
        self.sqs = boto3.client("sqs", **_base(region, **self.creds))
        self.queue_url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        # Where moto's Step Functions really sends (its default account): see the module docstring.
        self.moto_sqs = boto3.client("sqs", **_base(region))
        self.moto_queue_url = self.moto_sqs.create_queue(QueueName=name)["QueueUrl"]
        self.sfn = boto3.client("stepfunctions", **_base(region, **self.creds))
        definition = {
            "StartAt": "WaitForApproval",
            "States": {
                "WaitForApproval": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                    "Parameters": {
                        "QueueUrl": self.queue_url,
                        "MessageBody": {
                            "taskToken.$": "$$.Task.Token",
                            "title.$": "$.title",
                            "approvers": {"groups": ["finance-approvers"]},
                            "heartbeatSeconds": 3600,
                            "execution.$": "$$.Execution.Id",
                            "stateMachine.$": "$$.StateMachine.Id",
                            "state.$": "$$.State.Name",
                            **(message or {}),
                        },
                    },
                    "HeartbeatSeconds": 3600,
                    "End": True,
                }
            },
        }
        self.machine_arn = self.sfn.create_state_machine(
            name=f"approval-{uuid.uuid4().hex[:6]}",
            definition=json.dumps(definition),
            roleArn=f"arn:aws:iam::{account}:role/states",
        )["stateMachineArn"]

    def start(self, title: str) -> str:
        return self.sfn.start_execution(
            stateMachineArn=self.machine_arn, name=f"run-{uuid.uuid4().hex[:8]}", input=json.dumps({"title": title})
        )["executionArn"]

    def relay(self) -> int:
        """Forward what moto's Step Functions sent to the member's own queue (body untouched)."""
        messages = self.moto_sqs.receive_message(
            QueueUrl=self.moto_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        for message in messages:
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=message["Body"])
            self.moto_sqs.delete_message(QueueUrl=self.moto_queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages)

    def status(self, execution_arn: str) -> str:
        return self.sfn.describe_execution(executionArn=execution_arn)["status"]


@pytest.fixture
def sources_aws(aws):
    aws.APPROVAL_CONSUMER_WAIT_SECONDS = 1
    gateway._role_credentials.clear()
    yield aws
    gateway._role_credentials.clear()


@pytest.fixture
def celery_eager():
    from portal.celery import app as celery_app

    old = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = old


def add_source(admin, member: Member, name: str) -> ApprovalSource:
    return services.source_save(
        actor=admin,
        source_id=None,
        name=name,
        queue_url=member.queue_url,
        region=member.region,
        role_arn=member.role_arn,
        external_id=member.external_id,
    )


def secrets_of(*members: Member) -> list[str]:
    found = []
    for member in members:
        found += [member.external_id, member.creds["secret"], member.creds["token"]]
        frozen = gateway.role_credentials(member.role_arn, member.external_id).get_frozen_credentials()
        found += [frozen.secret_key, frozen.token]
    return found


# ---------------------------------------------------------------------------
# Must show 1: two regions, two accounts, each from its own queue, approved, SUCCEEDED
# ---------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_two_accounts_in_two_regions_are_ingested_from_their_queues_and_resumed_in_their_own_account(
    sources_aws, celery_eager, caplog
):
    caplog.set_level(logging.INFO)
    admin = make_user("root", admin=True)
    alice = make_user("alice", "finance-approvers")
    member_a, member_b = Member(ACCOUNT_A, REGION_A), Member(ACCOUNT_B, REGION_B)
    source_a, source_b = add_source(admin, member_a, "team A"), add_source(admin, member_b, "team B")
    execution_a, execution_b = member_a.start("order A"), member_b.start("order B")
    assert execution_a.split(":")[3:5] == [REGION_A, ACCOUNT_A]
    assert execution_b.split(":")[3:5] == [REGION_B, ACCOUNT_B]

    consumer = QueueConsumer()

    def both_ingested():
        member_a.relay()
        member_b.relay()
        consumer.run_round("test-consumer")
        return ApprovalRequest.objects.filter(execution_arn__in=[execution_a, execution_b]).count() == 2

    wait_for(both_ingested, timeout=30)
    request_a = ApprovalRequest.objects.get(execution_arn=execution_a)
    request_b = ApprovalRequest.objects.get(execution_arn=execution_b)
    assert (request_a.source, request_b.source) == (source_a, source_b)
    # Read from the member's own queue, with its role: nothing left there.
    for member in (member_a, member_b):
        attributes = member.sqs.get_queue_attributes(QueueUrl=member.queue_url, AttributeNames=["All"])["Attributes"]
        assert attributes["ApproximateNumberOfMessages"] == "0"
    source_a.refresh_from_db()
    assert source_a.state == ApprovalSource.State.OK and source_a.last_message_at is not None

    for request in (request_a, request_b):
        services.approval_decide(public_id=request.public_id, user=alice, approve=True, comment="ok")
        assert Callback.objects.get(request=request).status == CallbackStatus.DELIVERED

    # The callback landed where the execution lives: it succeeded there, read with that account's
    # credentials in that region (a token works nowhere else on the emulator, as on AWS).
    wait_for(lambda: member_a.status(execution_a) == "SUCCEEDED", timeout=15)
    wait_for(lambda: member_b.status(execution_b) == "SUCCEEDED", timeout=15)
    default_sfn_b = boto3.client("stepfunctions", **_base(REGION_B))
    with pytest.raises(default_sfn_b.exceptions.ExecutionDoesNotExist):
        default_sfn_b.describe_execution(executionArn=execution_b)

    # No secret in the logs, the audit trail or the admin's pages.
    client = signed_in(admin)
    pages = [
        client.get("/admin/approvals/approvalsource/").content.decode(),
        client.get(f"/admin/approvals/approvalsource/{source_b.pk}/change/").content.decode(),
    ]
    assert "team B" in pages[0] and "••••••••" in pages[1]
    audit = json.dumps([event.data for event in AuditEvent.objects.all()])
    for secret in secrets_of(member_a, member_b):
        assert secret not in caplog.text
        assert secret not in audit
        for page in pages:
            assert secret not in page


@pytest.mark.django_db(transaction=True)
def test_an_option_and_its_typed_answers_reach_an_execution_in_another_account_and_region(sources_aws, celery_eager):
    """Three features at once (#24 options and a form, #26 sources, #23 batched callbacks): what the
    approver chose and typed is validated, stored, and sent to the member account's region."""
    admin = make_user("root", admin=True)
    alice = make_user("alice", "finance-approvers")
    message = {
        "options": [
            {"id": "eu", "label": "Deploy to EU", "outcome": "success"},
            {"id": "later", "label": "Not now", "outcome": "failure", "error": "Release.Postponed"},
        ],
        "form": {
            "type": "object",
            "required": ["replicas"],
            "properties": {"replicas": {"type": "integer", "minimum": 1, "maximum": 5}},
        },
    }
    member = Member(ACCOUNT_B, REGION_B, message=message)
    add_source(admin, member, "team B")
    execution = member.start("release 7")
    consumer = QueueConsumer()

    def ingested():
        member.relay()
        consumer.run_round("test-consumer")
        return ApprovalRequest.objects.filter(execution_arn=execution).exists()

    wait_for(ingested, timeout=30)
    request = ApprovalRequest.objects.get(execution_arn=execution)
    # A bad answer is refused before anything is sent; the right one goes to the member's region.
    with pytest.raises(services.ApprovalError) as refused:
        services.approval_decide(public_id=request.public_id, user=alice, choice=["eu"], answers={"replicas": 9})
    assert refused.value.code == "answers_invalid" and not Callback.objects.filter(request=request).exists()
    services.approval_decide(
        public_id=request.public_id, user=alice, choice=["eu"], answers={"replicas": "3"}, answers_from_form=True
    )
    assert Callback.objects.get(request=request).status == CallbackStatus.DELIVERED
    wait_for(lambda: member.status(execution) == "SUCCEEDED", timeout=15)
    output = json.loads(member.sfn.describe_execution(executionArn=execution)["output"])
    assert output["choice"] == "eu" and output["input"] == {"replicas": 3}


# ---------------------------------------------------------------------------
# Must show 2: one source failing while the other keeps flowing
# ---------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_source_whose_queue_is_deleted_fails_alone_and_is_named_in_the_admin_and_readyz(
    sources_aws, celery_eager, client, caplog
):
    caplog.set_level(logging.INFO)
    admin = make_user("root", admin=True)
    member_a, member_b = Member(ACCOUNT_A, REGION_A), Member(ACCOUNT_B, REGION_B)
    source_a, source_b = add_source(admin, member_a, "team A"), add_source(admin, member_b, "team B")
    consumer = QueueConsumer()
    consumer.run_round("test-consumer")  # both answer
    assert set(ApprovalSource.objects.values_list("state", flat=True)) == {"ok"}

    member_b.sqs.delete_queue(QueueUrl=member_b.queue_url)  # mid-run
    executions = [member_a.start(f"order {n}") for n in range(3)]

    def flowed():
        member_a.relay()
        consumer.run_round("test-consumer")
        return ApprovalRequest.objects.filter(execution_arn__in=executions).count() == 3

    wait_for(flowed, timeout=30)
    source_a.refresh_from_db()
    source_b.refresh_from_db()
    assert source_a.state == ApprovalSource.State.OK
    assert source_b.state == ApprovalSource.State.FAILING
    assert "NonExistentQueue" in source_b.last_error or "QueueDoesNotExist" in source_b.last_error
    # It backs off alone: the consumer skips it until its own retry time.
    assert consumer.backoff[str(source_b.pk)][1] > time.monotonic()
    assert str(source_a.pk) not in consumer.backoff
    assert AuditEvent.objects.filter(action="source_failing", data__source_id=source_b.pk).count() == 1

    changelist = signed_in(admin).get("/admin/approvals/approvalsource/?state__exact=failing").content.decode()
    assert "team B" in changelist and "Failing" in changelist and "team A" not in changelist

    body = client.get("/readyz").json()
    assert body["checks"]["sources"]["ok"] is False
    assert "team B" in body["checks"]["sources"]["detail"]
    assert "team A" not in body["checks"]["sources"]["detail"]
    assert "sources" not in body["failed"]  # reported, not a reason to take the portal out of service
    for secret in secrets_of(member_b):
        assert secret not in json.dumps(body)
        assert secret not in caplog.text


# ---------------------------------------------------------------------------
# Must show 3: credentials refreshed before they expire (a controllable clock)
# ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_assumed_credentials_are_reused_then_refreshed_before_they_expire(sources_aws, monkeypatch):
    member = Member(ACCOUNT_A, REGION_A)
    now = [timezone.now()]
    monkeypatch.setattr(gateway, "credentials_clock", lambda: now[0])
    route = gateway.AwsRoute(region=REGION_A, role_arn=member.role_arn, external_id=member.external_id)

    gateway.send_message(queue_url=member.queue_url, body="{}", route=route)
    credentials = gateway.role_credentials(member.role_arn, member.external_id)
    first = credentials.get_frozen_credentials().access_key

    now[0] += timedelta(minutes=30)  # 30 minutes left of the hour: still good
    assert gateway.receive_batch(queue_url=member.queue_url, wait_seconds=0, visibility_timeout=0, route=route)
    assert credentials.get_frozen_credentials().access_key == first

    now[0] += timedelta(minutes=17)  # 13 minutes left: inside botocore's 15-minute refresh window
    assert gateway.receive_batch(queue_url=member.queue_url, wait_seconds=0, visibility_timeout=0, route=route)
    second = credentials.get_frozen_credentials().access_key
    assert second != first
    # New credentials, in the member's account still.
    sts = boto3.client("sts", **_base(REGION_A, key=second, secret="x"))
    assert sts.get_caller_identity()["Account"] == ACCOUNT_A


# ---------------------------------------------------------------------------
# The trust rule: a source serves its own region and account only
# ---------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_message_naming_an_execution_of_another_account_or_region_is_refused_and_replayable_once_fixed(
    sources_aws,
):
    admin = make_user("root", admin=True)
    member = Member(ACCOUNT_A, REGION_A)
    source = add_source(admin, member, "team A")
    route = source_route(source)
    foreign = [
        f"arn:aws:states:{REGION_A}:{ACCOUNT_B}:execution:m:other-account",
        f"arn:aws:states:{REGION_B}:{ACCOUNT_A}:execution:m:other-region",
    ]
    for arn in foreign:
        body = json.dumps({"taskToken": str(uuid.uuid4()), "approvers": {"users": ["a@example.com"]}, "execution": arn})
        gateway.send_message(queue_url=member.queue_url, body=body, route=route)

    def both_refused():
        consume_once(queue_url=member.queue_url, wait_seconds=1, visibility_timeout=30, max_bytes=262144, source=source)
        return IngestError.objects.count() == 2

    wait_for(both_refused, timeout=15)
    assert ApprovalRequest.objects.count() == 0
    errors = IngestError.objects.order_by("pk")
    assert {error.code for error in errors} == {services.OUTSIDE_SOURCE}
    assert all(error.source == source for error in errors)
    assert "account 222222222222" in errors.first().reason or "region eu-west-1" in errors.first().reason

    # The admin widens nothing by accident: a replay is refused again until the source is fixed...
    wrong_region = next(error for error in errors if "other-region" in error.body_redacted)
    again = services.ingest_error_replay(ingest_error_id=wrong_region.pk, actor=admin)
    assert again.status == IngestError.Status.OPEN
    # ...then the source is fixed (its queue is in region B, it turns out) and the replay goes through.
    services.source_save(
        actor=admin,
        source_id=source.pk,
        name=source.name,
        queue_url=source.queue_url,
        region=REGION_B,
        role_arn=source.role_arn,
        external_id=None,
    )
    replayed = services.ingest_error_replay(ingest_error_id=wrong_region.pk, actor=admin)
    assert replayed.status == IngestError.Status.REPLAYED
    assert ApprovalRequest.objects.get().source == source


# ---------------------------------------------------------------------------
# Services, admin and the consumer's schedule
# ---------------------------------------------------------------------------
def team_a_source(admin) -> ApprovalSource:
    """A source in account A with an external ID (no queue behind it: services and admin only)."""
    return services.source_save(
        actor=admin,
        source_id=None,
        name="team A",
        queue_url=f"https://sqs.{REGION_A}.amazonaws.com/{ACCOUNT_A}/approvals",
        region=REGION_A,
        role_arn=f"arn:aws:iam::{ACCOUNT_A}:role/portal",
        external_id="very-sensitive-id",
    )


@pytest.mark.django_db
def test_saving_a_source_is_audited_without_its_external_id_and_a_blank_one_keeps_it():
    admin = make_user("root", admin=True)
    source = team_a_source(admin)
    services.source_save(
        actor=admin,
        source_id=source.pk,
        name="team A (prod)",
        queue_url=source.queue_url,
        region=REGION_A,
        role_arn=source.role_arn,
        external_id=None,
    )
    source.refresh_from_db()
    assert source.external_id == "very-sensitive-id" and source.account_id == ACCOUNT_A
    events = list(AuditEvent.objects.filter(action__startswith="source_").order_by("pk"))
    assert [event.action for event in events] == ["source_created", "source_saved"]
    assert events[0].data["external_id_set"] is True and events[1].data["external_id_changed"] is False
    assert "very-sensitive-id" not in json.dumps([event.data for event in events])
    assert "very-sensitive-id" not in repr(source_route(source))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("region", "Europe"),
        ("role_arn", "arn:aws:iam::12:role/x"),
        ("queue_url", "ftp://example.com/q"),
        ("external_id", "has spaces in it"),
    ],
)
def test_a_source_with_a_malformed_field_is_refused_with_a_clear_reason(field, value):
    admin = make_user("root", admin=True)
    fields = {
        "name": "team A",
        "queue_url": f"https://sqs.{REGION_A}.amazonaws.com/{ACCOUNT_A}/approvals",
        "region": REGION_A,
        "role_arn": f"arn:aws:iam::{ACCOUNT_A}:role/portal",
        "external_id": "ok-id",
        field: value,
    }
    with pytest.raises(services.ApprovalError) as refused:
        services.source_save(actor=admin, source_id=None, **fields)
    assert refused.value.code == "invalid"
    assert "has spaces" not in refused.value.message
    assert not ApprovalSource.objects.exists()


@pytest.mark.django_db
def test_the_admin_never_shows_the_external_id_and_a_non_admin_cannot_open_sources():
    admin = make_user("root", admin=True)
    source = team_a_source(admin)
    page = signed_in(admin).get(f"/admin/approvals/approvalsource/{source.pk}/change/")
    assert page.status_code == 200
    assert "very-sensitive-id" not in page.content.decode()
    approver = make_user("alice", "finance-approvers")
    approver.is_staff = True
    approver.save()
    assert signed_in(approver).get("/admin/approvals/approvalsource/").status_code == 403


def test_several_sources_share_the_long_poll_so_an_idle_round_takes_about_the_configured_wait():
    assert poll_wait_seconds(10, 1) == 10
    assert poll_wait_seconds(10, 4) == 2
    assert poll_wait_seconds(10, 40) == 1


@pytest.mark.django_db
def test_with_no_source_rows_the_consumer_polls_only_the_default_queue_as_before(settings):
    from approvals.selectors.sources import sources_to_poll

    settings.APPROVAL_QUEUE_URL = "http://127.0.0.1:1/123456789012/approvals"
    assert sources_to_poll() == [SourceToPoll(queue_url=settings.APPROVAL_QUEUE_URL, source=None, route=None)]


# ---------------------------------------------------------------------------
# deploy/member-account.yaml
# ---------------------------------------------------------------------------
MEMBER_TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "member-account.yaml"


def test_the_member_account_template_passes_cfn_lint():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), str(MEMBER_TEMPLATE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_member_role_trusts_only_the_portal_with_the_external_id_and_grants_the_least_it_needs():
    from cfnlint.decode import decode

    template, problems = decode(str(MEMBER_TEMPLATE))
    assert not problems
    assert template["Parameters"]["ExternalId"]["NoEcho"] is True
    role = template["Resources"]["PortalSourceRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${PortalAccountId}:root"}}
    assert trust["Condition"]["StringEquals"] == {"sts:ExternalId": {"Ref": "ExternalId"}}
    (policy,) = role["Policies"]
    granted = {s["Sid"]: (set(s["Action"]), s["Resource"]) for s in policy["PolicyDocument"]["Statement"]}
    assert granted["ConsumeTheApprovalQueue"] == (
        {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"},
        {"Fn::GetAtt": ["ApprovalQueue", "Arn"]},
    )
    assert granted["ResumeWaitingExecutions"][0] == {
        "states:SendTaskSuccess",
        "states:SendTaskFailure",
        "states:SendTaskHeartbeat",
    }
    assert "${AWS::AccountId}:execution:" in granted["ReadExecutionsToSettleCallbacks"][1]["Fn::Sub"]
    assert set(granted) == {"ConsumeTheApprovalQueue", "ResumeWaitingExecutions", "ReadExecutionsToSettleCallbacks"}
    assert {"QueueUrl", "Region", "RoleArn"} <= set(template["Outputs"])


# ---------------------------------------------------------------------------
# Seen everywhere: inbox and admin filters, the ops dashboard, metrics
# ---------------------------------------------------------------------------
def _request_from(source: ApprovalSource | None, title: str) -> ApprovalRequest:
    from approvals.contract import parse_message

    body = {"taskToken": str(uuid.uuid4()), "title": title, "approvers": {"groups": ["finance-approvers"]}}
    request, created = services.approval_request_ingest(message=parse_message(json.dumps(body)), source=source)
    assert created
    return request


@pytest.fixture
def two_sources(db):
    admin = make_user("root", admin=True)
    made = []
    for name, account, region in (("team A", ACCOUNT_A, REGION_A), ("team B", ACCOUNT_B, REGION_B)):
        made.append(
            services.source_save(
                actor=admin,
                source_id=None,
                name=name,
                queue_url=f"https://sqs.{region}.amazonaws.com/{account}/approvals",
                region=region,
                role_arn=f"arn:aws:iam::{account}:role/portal",
                external_id=f"secret-{name[-1]}",
            )
        )
    return admin, made


@pytest.mark.django_db
def test_the_inbox_and_the_admin_filter_requests_by_source(two_sources):
    admin, (source_a, source_b) = two_sources
    _request_from(source_a, "Order from team A")
    _request_from(source_b, "Order from team B")
    _request_from(None, "Order from the default queue")
    alice = signed_in(make_user("alice", "finance-approvers"))

    inbox = alice.get(f"/?tab=groups&source={source_b.pk}").content.decode()
    assert "Order from team B" in inbox and "Order from team A" not in inbox
    assert f"team B ({ACCOUNT_B}, {REGION_B})" in inbox
    default_only = alice.get("/?tab=groups&source=default").content.decode()
    assert "Order from the default queue" in default_only and "Order from team" not in default_only
    assert "Order from team A" in alice.get("/?tab=groups&source=junk'").content.decode()  # ignored, not an error

    changelist = signed_in(admin).get(f"/admin/approvals/approvalrequest/?source={source_a.pk}").content.decode()
    assert "Order from team A" in changelist and "Order from team B" not in changelist
    assert "secret-A" not in changelist and "secret-B" not in inbox


@pytest.mark.django_db
def test_the_ops_dashboard_shows_each_sources_flow_and_the_metrics_label_them(two_sources, settings):
    admin, (source_a, source_b) = two_sources
    _request_from(source_a, "one")
    _request_from(source_a, "two")
    services.source_poll_failed(source_id=source_b.pk, error="AccessDenied: not authorized secret-B")
    page = signed_in(admin).get("/admin/dashboard/").content.decode()
    assert 'id="sources"' in page and "team A" in page and "team B" in page and "Failing" in page
    assert "secret-B" not in page

    from approvals.ops import metrics

    exposition = metrics.web_exposition().decode()
    assert f'approvals_source_up{{queue="{source_a.pk}:team A"}} 1.0' in exposition
    assert f'approvals_source_up{{queue="{source_b.pk}:team B"}} 0.0' in exposition


def test_metric_labels_for_sources_are_bounded():
    from approvals.ops import metrics

    class Fake:
        def __init__(self, pk):
            self.pk, self.name = pk, f"source {pk}"

    labels = {metrics.source_label(Fake(pk)) for pk in range(10_000, 10_000 + metrics.MAX_SOURCE_LABELS + 20)}
    assert "other" in labels and len(labels) <= metrics.MAX_SOURCE_LABELS + 1
    assert metrics.source_label(None) == "approvals"


_ANY_ARN = st.one_of(
    st.text(max_size=300),
    st.builds(
        lambda partition, region, account, rest: f"arn:{partition}:states:{region}:{account}:{rest}",
        st.sampled_from(["aws", "aws-cn", "aws-us-gov"]),
        st.sampled_from([REGION_A, REGION_B, "", "US-WEST-2", " us-west-2"]),
        st.sampled_from([ACCOUNT_A, ACCOUNT_B, "", "11111111111", "111111111111 ", "１１１１１１１１１１１１"]),
        st.one_of(st.text(max_size=50), st.sampled_from(["execution:m:run", "stateMachine:m"])),
    ),
)


@given(execution_arn=_ANY_ARN, state_machine_arn=st.one_of(st.just(""), _ANY_ARN))
def test_the_trust_rule_passes_only_the_sources_own_region_and_account_whatever_the_arns(
    execution_arn, state_machine_arn
):
    from approvals.contract import ContractError
    from approvals.stepfunctions import arn_parts

    source = ApprovalSource(
        name="team A",
        queue_url=f"https://sqs.{REGION_A}.amazonaws.com/{ACCOUNT_A}/approvals",
        region=REGION_A,
        role_arn=f"arn:aws:iam::{ACCOUNT_A}:role/portal",
        external_id="secret-A",
    )
    named = [arn for arn in (execution_arn, state_machine_arn) if arn]
    try:
        services.source_trust_check(source=source, execution_arn=execution_arn, state_machine_arn=state_machine_arn)
    except ContractError as refused:
        assert refused.code == services.OUTSIDE_SOURCE
        assert "secret-A" not in refused.message
        assert any(arn_parts(arn) != (REGION_A, ACCOUNT_A) for arn in named)
    else:
        assert all(arn_parts(arn) == (REGION_A, ACCOUNT_A) for arn in named)


@pytest.mark.django_db
def test_a_source_is_added_through_the_admin_form_and_a_refused_form_does_not_echo_the_external_id():
    admin = make_user("root", admin=True)
    browser = signed_in(admin)
    browser.get("/admin/")
    form = {
        "csrfmiddlewaretoken": browser.cookies["portal_csrftoken"].value,
        "name": "team A",
        "queue_url": f"https://sqs.{REGION_A}.amazonaws.com/{ACCOUNT_A}/approvals",
        "region": "not a region",
        "role_arn": f"arn:aws:iam::{ACCOUNT_A}:role/portal",
        "external_id": "typed-in-secret-id",
        "enabled": "on",
    }
    refused = browser.post("/admin/approvals/approvalsource/add/", form)
    assert refused.status_code == 200
    assert "is not an AWS region name" in refused.content.decode()
    assert "typed-in-secret-id" not in refused.content.decode()
    assert not ApprovalSource.objects.exists()

    saved = browser.post("/admin/approvals/approvalsource/add/", {**form, "region": REGION_A})
    assert saved.status_code == 302
    source = ApprovalSource.objects.get()
    assert source.external_id == "typed-in-secret-id"
    assert AuditEvent.objects.filter(action="source_created", actor=admin).exists()
    # Editing without typing it again keeps it; the page never shows it.
    page = browser.get(f"/admin/approvals/approvalsource/{source.pk}/change/").content.decode()
    assert "typed-in-secret-id" not in page
    browser.post(
        f"/admin/approvals/approvalsource/{source.pk}/change/", {**form, "region": REGION_A, "external_id": ""}
    )
    source.refresh_from_db()
    assert source.external_id == "typed-in-secret-id"


@pytest.mark.django_db(transaction=True)
def test_a_source_whose_role_cannot_be_assumed_fails_alone_without_leaking_its_external_id(sources_aws, caplog):
    from botocore.exceptions import ClientError

    caplog.set_level(logging.INFO)
    admin = make_user("root", admin=True)
    member_a, member_b = Member(ACCOUNT_A, REGION_A), Member(ACCOUNT_B, REGION_B)
    source_a, source_b = add_source(admin, member_a, "team A"), add_source(admin, member_b, "team B")
    sts = gateway._client(
        "sts",
        endpoint_url=django_settings.AWS_ENDPOINT_URL,
        region=django_settings.AWS_REGION,
        connect_timeout=django_settings.AWS_CONNECT_TIMEOUT,
        read_timeout=django_settings.AWS_READ_TIMEOUT,
        attempts=3,
    )
    real_assume_role = sts.assume_role

    def assume_role(**arguments):
        if arguments["RoleArn"] == member_b.role_arn:
            # The moto server assumes any role: AWS's refusal (a trust policy that names another
            # external ID) is simulated. Its message quotes the external ID to prove it is redacted.
            raise ClientError(
                {
                    "Error": {
                        "Code": "AccessDenied",
                        "Message": f"not authorized to perform sts:AssumeRole (ExternalId {arguments['ExternalId']})",
                    },
                    "ResponseMetadata": {"HTTPStatusCode": 403},
                },
                "AssumeRole",
            )
        return real_assume_role(**arguments)

    executions = [member_a.start(f"order {n}") for n in range(2)]
    consumer = QueueConsumer()
    with mock.patch.object(sts, "assume_role", side_effect=assume_role):

        def flowed():
            member_a.relay()
            consumer.run_round("test-consumer")
            return ApprovalRequest.objects.filter(execution_arn__in=executions).count() == 2

        wait_for(flowed, timeout=30)
    source_a.refresh_from_db()
    source_b.refresh_from_db()
    assert (source_a.state, source_b.state) == ("ok", "failing")
    assert "AccessDenied" in source_b.last_error
    assert member_b.external_id not in source_b.last_error
    assert member_b.external_id not in caplog.text
    assert member_b.external_id not in json.dumps([event.data for event in AuditEvent.objects.all()])


def test_the_member_account_template_deploys_on_the_aws_emulator(moto_server):
    def client(service: str):
        return boto3.client(
            service,
            endpoint_url=moto_server,
            region_name=REGION_B,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - the emulator takes any
        )

    suffix = uuid.uuid4().hex[:8]
    stack = f"approval-source-{suffix}"
    client("cloudformation").create_stack(
        StackName=stack,
        TemplateBody=MEMBER_TEMPLATE.read_text(),
        Capabilities=["CAPABILITY_IAM"],
        Parameters=[
            {"ParameterKey": "PortalAccountId", "ParameterValue": ACCOUNT_A},
            {"ParameterKey": "ExternalId", "ParameterValue": f"ext-{suffix}"},
            {"ParameterKey": "QueueName", "ParameterValue": f"approvals-{suffix}"},
        ],
    )
    described = client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
    assert outputs["Region"] == REGION_B
    attributes = client("sqs").get_queue_attributes(QueueUrl=outputs["QueueUrl"], AttributeNames=["All"])["Attributes"]
    assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"].endswith(f":approvals-{suffix}-dlq")
    role = client("iam").get_role(RoleName=outputs["RoleArn"].rsplit("/", 1)[-1])["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"] == f"ext-{suffix}"


# ---------------------------------------------------------------------------
# Fairness, and changes without a restart
# ---------------------------------------------------------------------------
def _plain_source(admin, name: str) -> ApprovalSource:
    """A source in the portal's own account (no role), on a fresh queue."""
    queue_url = gateway.ensure_queue(
        name=f"approvals-{uuid.uuid4().hex[:8]}", visibility_timeout=30, max_receive_count=3
    )
    return services.source_save(
        actor=admin, source_id=None, name=name, queue_url=queue_url, region=django_settings.AWS_REGION
    )


def _send(source: ApprovalSource, count: int, title: str) -> None:
    for n in range(count):
        body = {"taskToken": str(uuid.uuid4()), "title": f"{title} {n}", "approvers": {"groups": ["finance-approvers"]}}
        gateway.send_message(queue_url=source.queue_url, body=json.dumps(body))


@pytest.mark.django_db(transaction=True)
def test_a_busy_source_does_not_starve_a_quiet_one_and_sources_change_without_a_restart(sources_aws):
    admin = make_user("root", admin=True)
    busy = _plain_source(admin, "busy")
    _send(busy, 40, "busy")
    consumer = QueueConsumer()
    consumer.run_round("test-consumer")
    assert ApprovalRequest.objects.filter(source=busy).count() <= 10  # one batch per turn

    quiet = _plain_source(admin, "quiet")  # added while the consumer runs
    _send(quiet, 1, "quiet")
    consumer.run_round("test-consumer")
    # The quiet source's message came in the very next round, with the busy queue far from empty.
    assert ApprovalRequest.objects.filter(source=quiet).count() == 1
    assert ApprovalRequest.objects.filter(source=busy).count() <= 20

    services.source_set_enabled(actor=admin, source_id=quiet.pk, enabled=False)
    _send(quiet, 1, "quiet again")
    consumer.run_round("test-consumer")
    assert ApprovalRequest.objects.filter(source=quiet).count() == 1  # disabled: no longer read
    assert AuditEvent.objects.filter(action="source_disabled", data__source_id=quiet.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_heartbeats_go_to_the_executions_region_with_its_sources_role(sources_aws):
    from approvals.tasks.sweeps import send_heartbeats

    admin = make_user("root", admin=True)
    member = Member(ACCOUNT_B, REGION_B)
    add_source(admin, member, "team B")
    execution = member.start("order B")
    consumer = QueueConsumer()

    def ingested():
        member.relay()
        consumer.run_round("test-consumer")
        return ApprovalRequest.objects.filter(execution_arn=execution).first()

    request = wait_for(ingested, timeout=30)
    assert request.heartbeat_seconds == 3600
    # Its first heartbeat is due a third of the interval after its message was sent.
    ApprovalRequest.objects.filter(pk=request.pk).update(message_sent_at=timezone.now() - timedelta(minutes=30))

    assert send_heartbeats() == 1
    request.refresh_from_db()
    # Sent with the wrong account or region, the emulator answers InvalidToken and the request
    # would be closed as "closed by Step Functions".
    assert request.status == "pending" and request.last_heartbeat_at is not None
    assert member.status(execution) == "RUNNING"


@pytest.mark.django_db
def test_a_source_written_in_other_digits_is_ignored_by_the_inbox_not_a_server_error(two_sources):
    # "²".isdigit() is true and int("²") raises: the inbox answered 500.
    _request_from(None, "Order from the default queue")
    alice = signed_in(make_user("alice", "finance-approvers"))
    for source in ("²", "١"):
        response = alice.get("/?tab=groups", {"source": source})
        assert response.status_code == 200 and "Order from the default queue" in response.content.decode()


# ---------------------------------------------------------------------------
# One account's sender does not borrow another account's settings
# ---------------------------------------------------------------------------
MACHINE_OF_B = f"arn:aws:states:{REGION_B}:{ACCOUNT_B}:stateMachine:payouts"


@pytest.mark.django_db
@pytest.mark.trust_unconfigured
@pytest.mark.parametrize(
    "execution_arn",
    ["", f"arn:aws:states:{REGION_A}:{ACCOUNT_A}:execution:payouts:run-1"],
    ids=["no execution", "an execution of the source's own account"],
)
def test_a_message_on_one_sources_queue_naming_another_accounts_state_machine_does_not_get_its_free_trust(
    execution_arn,
):
    admin = make_user("root", admin=True)
    source = team_a_source(admin)
    # Account B's admins let B's messages name their approvers; account A's did not.
    services.approver_trust_save(
        actor=admin, name="B payouts", state_machine_arn=MACHINE_OF_B, state_name="", mode="free"
    )
    body = {
        "taskToken": str(uuid.uuid4()),
        "stateMachine": MACHINE_OF_B,
        "state": "Approve",
        "approvers": {"users": ["mallory@example.com"]},
        **({"execution": execution_arn} if execution_arn else {}),
    }
    single = services.received_message_ingest(
        sqs_message_id="m-1", body=json.dumps(body), max_bytes=262144, source=source
    )
    # The consumer's batch path reads the same rule.
    batch = {**body, "taskToken": str(uuid.uuid4())}
    received = gateway.QueueMessage(message_id="m-2", receipt_handle="r", body=json.dumps(batch), receive_count=1)
    (outcome,) = services.received_batch_ingest(messages=[received], max_bytes=262144, source=source)

    assert not ApprovalRequest.objects.exists()
    # With an execution of the source's own account, the contract refuses it first: its execution
    # is not of the state machine it names (approvals/contract.py).
    code = "execution_mismatch" if execution_arn else services.OUTSIDE_SOURCE
    for error in (single, outcome.error):
        assert error is not None and error.code == code
        assert ACCOUNT_B in error.reason and "state machine" in error.reason
        assert "very-sensitive-id" not in error.reason


@pytest.mark.django_db
@pytest.mark.trust_unconfigured
def test_a_message_on_the_default_queue_naming_a_sources_account_does_not_get_that_accounts_free_trust(settings):
    admin = make_user("root", admin=True)
    settings.APPROVAL_QUEUE_URL = "https://sqs.eu-central-1.amazonaws.com/999999999999/approvals"
    team_a_source(admin)
    machine_of_a = f"arn:aws:states:{REGION_A}:{ACCOUNT_A}:stateMachine:payouts"
    services.approver_trust_save(
        actor=admin, name="A payouts", state_machine_arn=machine_of_a, state_name="", mode="free"
    )
    body = {
        "taskToken": str(uuid.uuid4()),
        "stateMachine": machine_of_a,
        "approvers": {"users": ["mallory@example.com"]},
    }
    single = services.received_message_ingest(sqs_message_id="m-1", body=json.dumps(body), max_bytes=262144)
    batch = {**body, "taskToken": str(uuid.uuid4())}
    received = gateway.QueueMessage(message_id="m-2", receipt_handle="r", body=json.dumps(batch), receive_count=1)
    (outcome,) = services.received_batch_ingest(messages=[received], max_bytes=262144)

    assert not ApprovalRequest.objects.exists()
    for error in (single, outcome.error):
        assert error is not None and error.code == services.OUTSIDE_SOURCE and error.source is None
        assert "team A" in error.reason

    # The default queue's own account (any region, as before sources existed) still passes.
    own = {
        **body,
        "taskToken": str(uuid.uuid4()),
        "stateMachine": "arn:aws:states:us-east-1:999999999999:stateMachine:m",
    }
    assert services.received_message_ingest(sqs_message_id="m-3", body=json.dumps(own), max_bytes=262144) is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("queue_url", "region"),
    [
        (f"https://sqs.{REGION_A}.amazonaws.com/{ACCOUNT_A}/approvals", REGION_A),
        (f"https://sqs.{REGION_B}.amazonaws.com/{ACCOUNT_B}/approvals", REGION_A),
    ],
    ids=["queue in another account", "queue in another region"],
)
def test_a_source_whose_queue_is_in_another_account_or_region_than_its_role_and_region_is_refused(queue_url, region):
    """The queue's senders are its account's: with account B's role on account A's queue, A's
    senders could name B's state machines and get B's settings."""
    admin = make_user("root", admin=True)
    with pytest.raises(services.ApprovalError) as refused:
        services.source_save(
            actor=admin,
            source_id=None,
            name="team B",
            queue_url=queue_url,
            region=region,
            role_arn=f"arn:aws:iam::{ACCOUNT_B}:role/portal",
        )
    assert refused.value.code == "invalid"
    assert not ApprovalSource.objects.exists()


@pytest.mark.django_db
def test_a_source_saved_earlier_with_its_queue_and_role_in_two_accounts_serves_neither():
    source = ApprovalSource.objects.create(
        name="team A, B's role",
        queue_url=f"https://sqs.{REGION_A}.amazonaws.com/{ACCOUNT_A}/approvals",
        region=REGION_A,
        role_arn=f"arn:aws:iam::{ACCOUNT_B}:role/portal",
    )
    from approvals.contract import ContractError

    for account in (ACCOUNT_A, ACCOUNT_B):
        with pytest.raises(ContractError):
            services.source_trust_check(
                source=source,
                execution_arn="",
                state_machine_arn=f"arn:aws:states:{REGION_A}:{account}:stateMachine:payouts",
            )


@pytest.mark.django_db(transaction=True)
@pytest.mark.trust_unconfigured
def test_through_the_consumer_neither_a_source_nor_the_default_queue_takes_another_accounts_free_trust(
    sources_aws, settings
):
    admin = make_user("root", admin=True)
    member_a, member_b = Member(ACCOUNT_A, REGION_A), Member(ACCOUNT_B, REGION_B)
    source_a, source_b = add_source(admin, member_a, "team A"), add_source(admin, member_b, "team B")
    services.approver_trust_save(
        actor=admin, name="B payouts", state_machine_arn=MACHINE_OF_B, state_name="", mode="free"
    )
    body = json.dumps(
        {"taskToken": str(uuid.uuid4()), "stateMachine": MACHINE_OF_B, "approvers": {"users": ["m@example.com"]}}
    )
    gateway.send_message(queue_url=member_a.queue_url, body=body, route=source_route(source_a))
    default = json.dumps({**json.loads(body), "taskToken": str(uuid.uuid4())})
    gateway.send_message(queue_url=settings.APPROVAL_QUEUE_URL, body=default)

    def both_refused():
        consume_once(
            queue_url=member_a.queue_url, wait_seconds=1, visibility_timeout=30, max_bytes=262144, source=source_a
        )
        consume_once(queue_url=settings.APPROVAL_QUEUE_URL, wait_seconds=1, visibility_timeout=30, max_bytes=262144)
        return IngestError.objects.count() == 2

    wait_for(both_refused, timeout=15)
    assert not ApprovalRequest.objects.exists()
    assert {(error.code, error.source_id) for error in IngestError.objects.all()} == {
        (services.OUTSIDE_SOURCE, source_a.pk),
        (services.OUTSIDE_SOURCE, None),
    }
    assert source_b.enabled


@pytest.mark.django_db
@pytest.mark.trust_unconfigured
def test_a_message_refused_from_one_queue_is_not_replayed_after_its_source_is_moved_to_another_accounts_queue():
    """Its senders were the first queue's account's: moving the source to account B's queue and
    role must not replay them with B's settings."""
    admin = make_user("root", admin=True)
    source = team_a_source(admin)
    services.approver_trust_save(
        actor=admin, name="B payouts", state_machine_arn=MACHINE_OF_B, state_name="", mode="free"
    )
    body = {"taskToken": str(uuid.uuid4()), "stateMachine": MACHINE_OF_B, "approvers": {"users": ["m@example.com"]}}
    error = services.received_message_ingest(
        sqs_message_id="m-1", body=json.dumps(body), max_bytes=262144, source=source
    )
    assert error.code == services.OUTSIDE_SOURCE

    services.source_save(
        actor=admin,
        source_id=source.pk,
        name=source.name,
        queue_url=f"https://sqs.{REGION_B}.amazonaws.com/{ACCOUNT_B}/approvals",
        region=REGION_B,
        role_arn=f"arn:aws:iam::{ACCOUNT_B}:role/portal",
        external_id=None,
    )
    with pytest.raises(services.ApprovalError) as refused:
        services.ingest_error_replay(ingest_error_id=error.pk, actor=admin)

    assert refused.value.code == "source_moved"
    assert not ApprovalRequest.objects.exists()
    error.refresh_from_db()
    assert error.status == IngestError.Status.OPEN


# ---------------------------------------------------------------------------
# One consumer per queue: a queue read twice gives a message the trust rule of whichever
# consumer received it (the source's account check, or the default queue's)
# ---------------------------------------------------------------------------
DEFAULT_QUEUE = "https://sqs.eu-west-1.amazonaws.com/333333333333/approval-requests"
SPELLINGS_OF_THE_DEFAULT_QUEUE = [
    DEFAULT_QUEUE,
    DEFAULT_QUEUE + "/",
    "https://SQS.EU-WEST-1.AMAZONAWS.COM/333333333333/approval-requests",
    "https://eu-west-1.queue.amazonaws.com/333333333333/approval-requests",
    "https://sqs.eu-west-1.amazonaws.com:443//333333333333/approval-requests",
]


@pytest.mark.django_db
@pytest.mark.parametrize("queue_url", SPELLINGS_OF_THE_DEFAULT_QUEUE)
def test_a_source_on_the_default_queue_is_refused_however_its_url_is_spelled(settings, queue_url):
    settings.APPROVAL_QUEUE_URL = DEFAULT_QUEUE
    admin = make_user("root", admin=True)
    with pytest.raises(services.ApprovalError) as refused:
        services.source_save(
            actor=admin,
            source_id=None,
            name="team C",
            queue_url=queue_url,
            region="eu-west-1",
            role_arn="arn:aws:iam::333333333333:role/portal",
        )
    assert refused.value.code == "invalid"
    assert "default queue (APPROVAL_QUEUE_URL)" in refused.value.message
    assert not ApprovalSource.objects.exists()


@pytest.mark.django_db
def test_the_admin_form_refuses_the_default_queue_as_a_source_with_the_reason(settings):
    settings.APPROVAL_QUEUE_URL = DEFAULT_QUEUE
    admin = make_user("root", admin=True)
    browser = signed_in(admin)
    browser.get("/admin/")
    form = {
        "csrfmiddlewaretoken": browser.cookies["portal_csrftoken"].value,
        "name": "team C",
        "queue_url": DEFAULT_QUEUE + "/",
        "region": "eu-west-1",
        "role_arn": "arn:aws:iam::333333333333:role/portal",
        "enabled": "on",
    }
    refused = browser.post("/admin/approvals/approvalsource/add/", form)
    assert refused.status_code == 200
    assert "default queue (APPROVAL_QUEUE_URL)" in refused.content.decode()
    assert not ApprovalSource.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "spelling",
    [
        lambda url: url,
        lambda url: url + "/",
        lambda url: url.replace("https://sqs", "https://SQS"),
        lambda url: url.replace("https://", "http://"),
    ],
    ids=["same", "trailing slash", "host case", "scheme"],
)
def test_a_second_source_on_a_queue_another_source_has_is_refused_however_its_url_is_spelled(spelling):
    admin = make_user("root", admin=True)
    first = team_a_source(admin)
    with pytest.raises(services.ApprovalError) as refused:
        services.source_save(
            actor=admin,
            source_id=None,
            name="team A again",
            queue_url=spelling(first.queue_url),
            region=REGION_A,
            role_arn=f"arn:aws:iam::{ACCOUNT_A}:role/other",
        )
    assert refused.value.code == "duplicate"
    assert "'team A' already has this queue" in refused.value.message
    assert list(ApprovalSource.objects.all()) == [first]
    # The source itself may be saved again with its queue spelled another way.
    services.source_save(
        actor=admin,
        source_id=first.pk,
        name="team A",
        queue_url=spelling(first.queue_url),
        region=REGION_A,
        role_arn=first.role_arn,
    )


@pytest.mark.django_db
def test_enabling_a_source_whose_queue_has_become_the_default_queue_is_refused(settings):
    admin = make_user("root", admin=True)
    source = team_a_source(admin)
    services.source_set_enabled(actor=admin, source_id=source.pk, enabled=False)
    settings.APPROVAL_QUEUE_URL = source.queue_url  # changed in the environment after the source was saved
    with pytest.raises(services.ApprovalError) as refused:
        services.source_set_enabled(actor=admin, source_id=source.pk, enabled=True)
    assert "default queue (APPROVAL_QUEUE_URL)" in refused.value.message
    source.refresh_from_db()
    assert not source.enabled


@pytest.mark.django_db
def test_the_database_check_warns_of_saved_sources_that_read_the_default_queue_or_one_queue_together(settings):
    from approvals.checks import approval_sources_check

    settings.APPROVAL_QUEUE_URL = DEFAULT_QUEUE
    assert approval_sources_check(None, databases=["default"]) == []
    # Rows as they may be after APPROVAL_QUEUE_URL changed, or from before the admin refused them.
    ApprovalSource.objects.create(name="on the default", queue_url=DEFAULT_QUEUE + "/", region="eu-west-1")
    shared = f"https://sqs.{REGION_A}.amazonaws.com/{ACCOUNT_A}/approvals"
    ApprovalSource.objects.create(name="first", queue_url=shared, region=REGION_A)
    ApprovalSource.objects.create(name="second", queue_url=shared + "/", region=REGION_A)
    ApprovalSource.objects.create(name="off", queue_url=shared.replace("sqs.", "SQS."), region=REGION_A, enabled=False)

    warnings = approval_sources_check(None, databases=["default"])

    assert sorted(warning.id for warning in warnings) == ["approvals.W051", "approvals.W052"]
    text = " ".join(warning.msg for warning in warnings)
    assert "'on the default'" in text and "'first', 'second'" in text and "'off'" not in text
    # Django runs database checks only when asked for a database (`migrate`, `check --database`).
    assert approval_sources_check(None) == []
