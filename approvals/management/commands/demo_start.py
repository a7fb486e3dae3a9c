"""Start executions of the demo state machine, so approvals flow in for real."""

import uuid

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from approvals.integrations import aws

# Title and details only: the demo state machine takes approvers and requester from its
# definition (deploy/state-machine.asl.json), never from the input whoever starts it chose.
DEMO_INPUTS = [
    {
        "title": "Approve order 1234 (EUR 5,300)",
        "details": {
            "order": {"id": 1234, "total": {"amount": "5300.00", "currency": "EUR"}},
            "supplier": "Müller & Söhne GmbH",
            "lines": [{"item": "Laptop", "qty": 2}, {"item": "Docking station", "qty": 2}],
        },
    },
    {
        "title": "Grant production database access to Bob",
        "details": {"system": "orders-db (production)", "role": "read-only", "duration": "7 days"},
    },
    {
        "title": "Publish release 2.4.0",
        "details": {"changes": ["New invoice layout", "Faster exports"], "risk": "low"},
    },
]


class Command(BaseCommand):
    help = "Start executions of the demo state machine; each becomes an approval request."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=len(DEMO_INPUTS))

    def handle(self, *args, **options):
        for index in range(options["count"]):
            execution_input = DEMO_INPUTS[index % len(DEMO_INPUTS)]
            try:
                arn = aws.start_execution(
                    state_machine_arn=settings.DEMO_STATE_MACHINE_ARN,
                    # moto names every unnamed execution "None": always pass a unique name.
                    name=f"demo-{uuid.uuid4().hex[:12]}",
                    execution_input=execution_input,
                )
            except aws.AwsError as error:
                raise CommandError(f"could not start an execution: {error}") from None
            self.stdout.write(f"started {arn}")
