"""Create the approval queue (with its DLQ) and the demo state machine from deploy/."""

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from worker import gateway

DEFINITION = Path(settings.BASE_DIR) / "deploy" / "state-machine.asl.json"


def demo_definition(queue_url: str) -> dict:
    """The example state machine with its queue filled in (CloudFormation does the same)."""
    return json.loads(DEFINITION.read_text().replace("${ApprovalQueueUrl}", queue_url))


class Command(BaseCommand):
    help = "Create the approval queue, its dead-letter queue and the demo state machine (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--role-arn", help="IAM role Step Functions assumes (required on real AWS)")
        parser.add_argument("--max-receive-count", type=int, default=5)

    def handle(self, *args, **options):
        role_arn = options["role_arn"]
        if settings.AWS_EMULATOR:
            gateway.configure_emulator(settings.AWS_ENDPOINT_URL)
            role_arn = role_arn or "arn:aws:iam::123456789012:role/approval-demo-states"
        elif not role_arn:
            raise CommandError("--role-arn is required against real AWS (see deploy/)")
        try:
            queue_url = gateway.ensure_queue(
                name=settings.APPROVAL_QUEUE_NAME,
                visibility_timeout=settings.APPROVAL_CONSUMER_VISIBILITY_TIMEOUT,
                max_receive_count=options["max_receive_count"],
            )
            name = settings.DEMO_STATE_MACHINE_ARN.rsplit(":", 1)[-1]
            machine_arn = gateway.ensure_state_machine(
                name=name, definition=demo_definition(queue_url), role_arn=role_arn
            )
        except gateway.AwsError as error:
            raise CommandError(f"AWS refused: {error}") from None
        if queue_url != settings.APPROVAL_QUEUE_URL:
            self.stderr.write(f"warning: APPROVAL_QUEUE_URL is {settings.APPROVAL_QUEUE_URL}, the queue is {queue_url}")
        self.stdout.write(f"queue:         {queue_url}")
        self.stdout.write(f"state machine: {machine_arn}")
