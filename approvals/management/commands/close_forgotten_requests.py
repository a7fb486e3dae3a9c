"""Close the waiting requests whose executions a restarted AWS emulator no longer knows.

The moto server keeps everything in memory: after `make run` restarts, the database still holds
requests whose executions are gone, and deciding one could never resume anything. `make run`
runs this before it serves (scripts/devstack.py). Only against a local emulator
(AWS_ENDPOINT_URL on this machine or a compose service): against real AWS it does nothing.
"""

from django.conf import settings
from django.core.management.base import BaseCommand

from approvals import delivery, selectors, services, stepfunctions
from approvals.integrations import aws


class Command(BaseCommand):
    help = (
        "Close (as 'Closed by the system') waiting requests whose executions the local AWS emulator "
        "no longer knows. Does nothing unless AWS_ENDPOINT_URL points at a local emulator."
    )

    def handle(self, *args, **options):
        verbose = options["verbosity"] >= 1
        if not settings.AWS_EMULATOR:
            if verbose:
                self.stdout.write("AWS_ENDPOINT_URL is not a local AWS emulator: nothing checked.")
            return
        closed = unreadable = 0
        # Each asked where the execution lives, as its source's role (another account's is unknown here).
        for request_id, execution_arn, route in selectors.waiting_executions():
            try:
                aws.describe_execution(execution_arn=execution_arn, route=route)
            except aws.AwsError as error:
                if error.code != stepfunctions.EXECUTION_UNKNOWN_CODE:
                    unreadable += 1  # left waiting: only a certain "does not exist" closes one
                    continue
                closed += services.approval_close_workflow_gone(request_id=request_id, found_by=services.FOUND_AT_START)
        if unreadable:
            self.stderr.write(f"{unreadable} waiting request(s) left as they are: their executions could not be read.")
        if closed:  # always said, even with -v0: `make run` shows this line under its banner
            self.stdout.write(delivery.forgotten_requests_notice(closed))
        elif verbose:
            self.stdout.write("Every waiting request's execution is known to the AWS emulator.")
