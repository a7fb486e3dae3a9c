"""What every service shares: the domain error and the audit writer."""

from approvals.models import ApprovalRequest, AuditEvent, User

SYSTEM = "system"
# SendTaskFailure's documented limits.
MAX_ERROR_LENGTH = 256
MAX_CAUSE_LENGTH = 32768


class ApprovalError(Exception):
    """A refused or impossible action, with a code the views map to a page and status."""

    def __init__(self, message: str, code: str, *, request: ApprovalRequest | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.request = request


def audit(*, action: str, request: ApprovalRequest | None, actor: User | None, **data) -> AuditEvent:
    label = actor.email or actor.get_username() if actor is not None else SYSTEM
    return AuditEvent.objects.create(request=request, actor=actor, actor_label=label, action=action, data=data)


def truncate(text: str, limit: int) -> str:
    """At most `limit` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def locked_request(public_id, *, related: tuple[str, ...] = ()) -> ApprovalRequest:
    """The request with its row locked until the transaction ends, and what the decision rule
    reads prefetched. Every change to one request takes this lock, so they take turns: two
    approvers completing a 2-of-2 at the same moment, an answer racing the decision."""
    request = (
        ApprovalRequest.objects.select_for_update(of=("self",))
        .select_related(*related)
        .prefetch_related("assignments", "votes")
        .filter(public_id=public_id)
        .first()
    )
    if request is None:
        raise ApprovalError("This approval request does not exist.", "not_found")
    return request
