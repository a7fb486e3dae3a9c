"""Create the approval queue (with its DLQ) and the demo state machine from deploy/, and tell the
portal how far to trust the demo state machine's messages (docs/security.md, "Trust boundary")."""

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from approvals import services
from approvals.integrations import aws
from approvals.models import ApproverTrust

DEFINITION = Path(settings.BASE_DIR) / "deploy" / "state-machine.asl.json"
# The example with options, a form and a Choice state on the answer (docs/approver-input.md).
INPUT_DEFINITION = Path(settings.BASE_DIR) / "deploy" / "state-machine-input.asl.json"
# What the demo fills in for the definition's placeholders (CloudFormation's parameter defaults).
DEMO_APPROVER_GROUP = "finance-approvers"
DEMO_REQUESTER = "bob@example.com"


def demo_definition(
    queue_url: str,
    *,
    approver_group: str = DEMO_APPROVER_GROUP,
    requester: str = DEMO_REQUESTER,
    from_input: bool = False,
    with_options: bool = False,
) -> dict:
    """The example state machine with its queue, approver group and requester filled in
    (CloudFormation does the same): the execution's input names neither approvers nor requester.

    `from_input`: the variant that copies `approvers` and `requester` from the input — only for a
    state machine that nobody but an authenticating front door may start, and whose approver trust
    setting says so (docs/security.md, "Trust boundary").

    `with_options`: the example whose approver chooses among options and fills in a form, and
    whose Choice state branches on `$.approval.choice` (deploy/state-machine-input.asl.json).
    """
    text = (INPUT_DEFINITION if with_options else DEFINITION).read_text()
    for name, value in {"ApprovalQueueUrl": queue_url, "ApproverGroup": approver_group, "Requester": requester}.items():
        text = text.replace("${" + name + "}", value)
    definition = json.loads(text)
    if from_input:
        body = definition["States"]["WaitForApproval"]["Parameters"]["MessageBody"]
        del body["approvers"], body["requester"]
        body.update({"approvers.$": "$.approvers", "requester.$": "$.requester"})
    return definition


def demo_trust_configure(state_machine_arn: str, *, approver_group: str = DEMO_APPROVER_GROUP) -> ApproverTrust:
    """The demo state machine's approver trust setting, unless an admin already keeps one: its
    messages may name only the group its definition names, and must name a requester."""
    existing = ApproverTrust.objects.filter(state_machine_arn=state_machine_arn, state_name="").first()
    if existing is not None:
        return existing
    return services.approver_trust_save(
        actor=None,
        name=f"{state_machine_arn.rsplit(':', 1)[-1]}: approvers from its definition",
        state_machine_arn=state_machine_arn,
        state_name="",
        mode=ApproverTrust.Mode.ALLOW_LIST,
        allowed_users=[],
        allowed_groups=[approver_group],
        require_requester=True,
    )


class Command(BaseCommand):
    help = "Create the approval queue, its dead-letter queue and the demo state machine (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--role-arn", help="IAM role Step Functions assumes (required on real AWS)")
        parser.add_argument("--max-receive-count", type=int, default=5)

    def handle(self, *args, **options):
        role_arn = options["role_arn"]
        if settings.AWS_EMULATOR:
            aws.configure_emulator(settings.AWS_ENDPOINT_URL)
            role_arn = role_arn or "arn:aws:iam::123456789012:role/approval-demo-states"
        elif not role_arn:
            raise CommandError("--role-arn is required against real AWS (see deploy/)")
        try:
            queue_url = aws.ensure_queue(
                name=settings.APPROVAL_QUEUE_NAME,
                visibility_timeout=settings.APPROVAL_CONSUMER_VISIBILITY_TIMEOUT,
                max_receive_count=options["max_receive_count"],
            )
            name = settings.DEMO_STATE_MACHINE_ARN.rsplit(":", 1)[-1]
            machine_arn = aws.ensure_state_machine(name=name, definition=demo_definition(queue_url), role_arn=role_arn)
            input_arn = aws.ensure_state_machine(
                name=f"{name}-input", definition=demo_definition(queue_url, with_options=True), role_arn=role_arn
            )
        except aws.AwsError as error:
            raise CommandError(f"AWS refused: {error}") from None
        if queue_url != settings.APPROVAL_QUEUE_URL:
            self.stderr.write(f"warning: APPROVAL_QUEUE_URL is {settings.APPROVAL_QUEUE_URL}, the queue is {queue_url}")
        self.stdout.write(f"queue:         {queue_url}")
        setting = demo_trust_configure(machine_arn)
        self.stdout.write(f"state machine: {machine_arn}")
        self.stdout.write(f"approver trust: {setting.name} ({setting.get_mode_display()})")
        demo_trust_configure(input_arn)
        self.stdout.write(f"state machine with options and a form: {input_arn}")
