"""Step Functions' vocabulary, in one place: ARNs (names, regions), links to the AWS console, and the
error codes its API answers (closed task, unknown token or execution, transient, never sent)."""

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from django.conf import settings

CONSOLE = "https://console.aws.amazon.com/states/home"


# ---------------------------------------------------------------------------
# ARNs: arn:aws:states:<region>:<account>:stateMachine:<name>
#       arn:aws:states:<region>:<account>:execution:<machine>:<name>
# ---------------------------------------------------------------------------
def arn_region(arn: str) -> str:
    """The region an ARN names; the configured AWS_REGION when it names none."""
    parts = (arn or "").split(":")
    return parts[3] if len(parts) > 4 and parts[0] == "arn" and parts[3] else settings.AWS_REGION


def arn_parts(arn: str) -> tuple[str, str]:
    """(region, account) an ARN names, each "" when it names none (no fallback to AWS_REGION)."""
    parts = (arn or "").split(":")
    if len(parts) > 5 and parts[0] == "arn":
        return parts[3], parts[4]
    return "", ""


def account_of_role(role_arn: str) -> str:
    """`arn:aws:iam::<account>:role/<name>` → the account; "" when it is not such an ARN."""
    parts = (role_arn or "").split(":")
    return parts[4] if len(parts) > 5 and parts[0] == "arn" and parts[2] == "iam" else ""


def account_of_queue_url(queue_url: str) -> str:
    """`https://sqs.<region>.amazonaws.com/<account>/<name>` → the account ("" if none is named)."""
    path = urlsplit(queue_url or "").path.strip("/").split("/")
    return path[0] if len(path) == 2 and path[0].isdigit() else ""


_QUEUE_HOST = re.compile(
    r"^(?:sqs(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?|([a-z0-9-]+)\.queue\.amazonaws\.com)$"
)


def region_of_queue_url(queue_url: str) -> str:
    """`https://sqs.<region>.amazonaws.com/<account>/<name>` → the region ("" for another host: an emulator's)."""
    match = _QUEUE_HOST.match((urlsplit(queue_url or "").hostname or "").lower())
    return (match.group(1) or match.group(2)) if match else ""


def queue_identity(queue_url: str) -> str:
    """What names the queue a URL reaches, whatever its spelling, so that two spellings of one queue
    compare equal: the scheme, the host's case, a default port, empty path segments (a trailing
    slash) and AWS's other endpoints of the region (`<region>.queue.amazonaws.com`, FIPS) do not count."""
    queue_url = (queue_url or "").strip()
    parts = urlsplit(queue_url)
    host = parts.hostname or ""
    region = region_of_queue_url(queue_url)
    if region:
        host = f"sqs.{region}"
    else:
        try:
            port = parts.port
        except ValueError:
            port = None
        if port not in (None, 80, 443):
            host = f"{host}:{port}"
    return "/".join([host, *(segment for segment in parts.path.split("/") if segment)])


def state_machine_name(arn: str) -> str:
    """The last part of a state machine's ARN (its name); "" without an ARN."""
    return arn.rsplit(":", 1)[-1] if arn else ""


def arn_name(arn: str) -> str:
    """`arn:aws:states:…:stateMachine:approval-demo` → approval-demo; executions: `machine/name`."""
    parts = (arn or "").split(":")
    if len(parts) >= 7 and parts[0] == "arn":
        return "/".join(parts[6:]) if parts[5] == "execution" else parts[-1]
    return arn


# The forms a message's `stateMachine` ($$.StateMachine.Id) and `execution` ($$.Execution.Id) take:
#   arn:<partition>:states:<region>:<account>:stateMachine:<name>            a state machine
#   …:stateMachine:<name>:<version> | …:stateMachine:<name>:<alias>          run through a version or alias
#   …:stateMachine:<name>/<label>                                            a Distributed Map's child workflow
#   …:execution:<name>:<execution>                                           a Standard execution
#   …:execution:<name>/<label>:<id>                                          a Distributed Map's child execution
#   …:express:<name>:<execution>:<id>  (and …:express:<name>/<label>:…)      an Express execution
# Step Functions refuses whitespace, ':' and '/' in names, labels, versions and aliases, so a part
# never hides another (a state machine's name and a label are at most 80 characters; the length of
# the rest is the contract's limit on the whole ARN). Partitions: aws, aws-cn, aws-us-gov, aws-iso…
_ARN_PART = r"[^\s:/]+"
_NAME_PART = r"[^\s:/]{1,80}"
_STATES_ARN = (
    r"arn:(?P<partition>aws(?:-[a-z]+)*):states:(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]+):(?P<account>[0-9]{12}):"
)
_MACHINE = rf"(?P<machine>{_NAME_PART}(?:/{_NAME_PART})?)"
_STATE_MACHINE_ARN = re.compile(rf"{_STATES_ARN}stateMachine:{_MACHINE}(?::{_ARN_PART})?")
_EXECUTION_ARN = re.compile(rf"{_STATES_ARN}(?P<kind>execution|express):{_MACHINE}:{_ARN_PART}(?P<id>:{_ARN_PART})?")


@dataclass(frozen=True)
class StateMachineRef:
    """The state machine an ARN belongs to: `machine` is its name, with a Distributed Map's label
    (`name/label`) for a child workflow; `name` is the state machine whose definition that is."""

    partition: str
    region: str
    account: str
    machine: str

    @property
    def name(self) -> str:
        return self.machine.split("/", 1)[0]

    @property
    def identity(self) -> tuple[str, str, str, str]:
        """What two ARNs of one state machine share, whatever the version, alias or Map label."""
        return (self.partition, self.region, self.account, self.name)

    @property
    def arn(self) -> str:
        """The state machine's ARN, as `$$.StateMachine.Id` holds it in an execution run without a version."""
        return f"arn:{self.partition}:states:{self.region}:{self.account}:stateMachine:{self.machine}"


def _state_machine_ref(match: re.Match | None) -> StateMachineRef | None:
    if match is None:
        return None
    return StateMachineRef(match["partition"], match["region"], match["account"], match["machine"])


def state_machine_of_arn(arn: str) -> StateMachineRef | None:
    """The state machine a state machine ARN (a version's, an alias's, a Map child's) names; None for another form."""
    return _state_machine_ref(_STATE_MACHINE_ARN.fullmatch(arn or ""))


def state_machine_of_execution(arn: str) -> StateMachineRef | None:
    """The state machine an execution ARN (Standard, Express, a Map child's) is of; None for another form."""
    match = _EXECUTION_ARN.fullmatch(arn or "")
    if match is not None and (match["kind"] == "express") != bool(match["id"]):
        return None  # an Express execution's ARN ends in an id, a Standard one's does not
    return _state_machine_ref(match)


def execution_console_url(arn: str) -> str:
    """The execution in the AWS console, in the region its ARN names."""
    return f"{CONSOLE}?region={quote(arn_region(arn))}#/v2/executions/details/{quote(arn, safe=':')}"


def state_machine_console_url(arn: str) -> str:
    """The state machine in the AWS console, in the region its ARN names."""
    return f"{CONSOLE}?region={quote(arn_region(arn))}#/statemachines/view/{quote(arn, safe=':')}"


# ---------------------------------------------------------------------------
# Error codes the Step Functions / AWS APIs answer, and what each means to the portal
# ---------------------------------------------------------------------------
# The task is gone (timed out, execution ended, token unknown): no retry can help.
CLOSED_TASK_CODES = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})
# Answers that may mean the execution itself is gone (then DescribeExecution tells).
TOKEN_UNKNOWN_CODES = frozenset({"InvalidToken", "TaskDoesNotExist"})
EXECUTION_UNKNOWN_CODE = "ExecutionDoesNotExist"
# Worth retrying later: throttling and AWS's own bad minute (any HTTP 5xx counts too).
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestThrottled",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
        "RequestTimeout",
        "KMSThrottlingException",
    }
)
# Transient failures where the request certainly did not reach (or was refused by) AWS.
NOT_SENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestThrottled",
        "EndpointConnectionError",
        "ConnectTimeoutError",
    }
)
