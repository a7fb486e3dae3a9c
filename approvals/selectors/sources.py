"""The approval sources: which queues to consume, and where (region, role) each request's calls go.

The environment's APPROVAL_QUEUE_URL is the default source: it has no row, and its calls use
AWS_REGION and the portal's own credentials (route None), as before sources existed.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from approvals.integrations.aws import AwsRoute
from approvals.models import ApprovalRequest, ApprovalSource, RequestStatus
from approvals.stepfunctions import arn_parts, queue_identity

# Metrics are labelled by source for at most this many sources (the rest count as "other").
MAX_LABELLED_SOURCES = 50


@dataclass(frozen=True)
class SourceToPoll:
    """One queue the consumer reads this round: the default (source None) or a row."""

    queue_url: str
    source: ApprovalSource | None
    route: AwsRoute | None

    @property
    def key(self) -> str:
        return "default" if self.source is None else str(self.source.pk)

    @property
    def label(self) -> str:
        return "default" if self.source is None else f"{self.source.pk}:{self.source.name}"


def source_route(source: ApprovalSource | None, *, execution_arn: str = "") -> AwsRoute | None:
    """The route of a source's calls: the execution's region (the source's own when the message
    named no execution) with the source's role; None for the default source."""
    if source is None:
        return None
    region, _ = arn_parts(execution_arn)
    return AwsRoute(region=region or source.region, role_arn=source.role_arn, external_id=source.external_id)


def sources_to_poll() -> list[SourceToPoll]:
    """The default queue (when configured) and every enabled source, read afresh each round."""
    polled = []
    if settings.APPROVAL_QUEUE_URL:
        polled.append(SourceToPoll(queue_url=settings.APPROVAL_QUEUE_URL, source=None, route=None))
    for source in ApprovalSource.objects.filter(enabled=True).order_by("pk"):
        polled.append(SourceToPoll(queue_url=source.queue_url, source=source, route=source_route(source)))
    return polled


def sources_by_account() -> dict[str, str]:
    """Each account a source (enabled or not) serves → the name of the first source serving it."""
    accounts: dict[str, str] = {}
    for source in ApprovalSource.objects.order_by("pk").only("name", "queue_url", "role_arn"):
        if source.account_id:
            accounts.setdefault(source.account_id, source.name)
    return accounts


def sources_by_queue() -> dict[str, list[ApprovalSource]]:
    """The sources (enabled or not, oldest first) by the queue they read, however its URL is spelled
    (stepfunctions.queue_identity)."""
    queues: dict[str, list[ApprovalSource]] = {}
    for source in ApprovalSource.objects.order_by("pk").only("name", "queue_url", "enabled"):
        queues.setdefault(queue_identity(source.queue_url), []).append(source)
    return queues


def failing_sources() -> list[ApprovalSource]:
    """Enabled sources whose last poll failed (for /readyz and the ops dashboard)."""
    return list(ApprovalSource.objects.filter(enabled=True, state=ApprovalSource.State.FAILING).order_by("pk"))


def any_source() -> bool:
    return ApprovalSource.objects.exists()


def labelled_sources() -> list[ApprovalSource]:
    """The enabled sources metrics label by name (bounded: MAX_LABELLED_SOURCES)."""
    return list(ApprovalSource.objects.filter(enabled=True).order_by("pk")[:MAX_LABELLED_SOURCES])


def source_choices() -> list[tuple[str, str]]:
    """("<id>", "name (account, region)") of every source, for the inbox's and admin's source filter."""
    return [
        (str(source.pk), f"{source.name} ({source.account_id or '?'}, {source.region})")
        for source in ApprovalSource.objects.order_by("name").only("name", "queue_url", "role_arn", "region")
    ]


def requests_of_source(requests: QuerySet[ApprovalRequest], source: str) -> QuerySet[ApprovalRequest]:
    """Narrow to one source: "default" (the environment's queue), a source's id, or "" for all."""
    if source == "default":
        return requests.filter(source__isnull=True)
    if source.isascii() and source.isdigit() and len(source) < 10:
        return requests.filter(source_id=int(source))
    return requests


def source_flows() -> list[dict]:
    """Each source's flow for the ops dashboard (the default queue first): requests received in the
    last 24 hours, pending now, and its state. Empty when there are no sources."""
    sources = list(ApprovalSource.objects.order_by("name"))
    if not sources:
        return []
    since = timezone.now() - timedelta(hours=24)
    counts = {
        row["source"]: row
        for row in ApprovalRequest.objects.filter(Q(received_at__gte=since) | Q(status=RequestStatus.PENDING))
        .values("source")
        .annotate(
            received_24h=Count("pk", filter=Q(received_at__gte=since)),
            pending=Count("pk", filter=Q(status=RequestStatus.PENDING)),
        )
    }
    flows = [
        {
            "name": "Default queue (APPROVAL_QUEUE_URL)",
            "enabled": bool(settings.APPROVAL_QUEUE_URL),
            "account": "",
            "region": settings.AWS_REGION,
            "state": "see Queue consumers",
            "failing": False,
            "received_24h": counts.get(None, {}).get("received_24h", 0),
            "pending": counts.get(None, {}).get("pending", 0),
            "last_polled_at": None,
            "last_message_at": None,
            "last_error": "",
        }
    ]
    for source in sources:
        flows.append(
            {
                "name": source.name,
                "enabled": source.enabled,
                "account": source.account_id,
                "region": source.region,
                "state": source.get_state_display(),
                "failing": source.state == ApprovalSource.State.FAILING,
                "received_24h": counts.get(source.pk, {}).get("received_24h", 0),
                "pending": counts.get(source.pk, {}).get("pending", 0),
                "last_polled_at": source.last_polled_at,
                "last_message_at": source.last_message_at,
                "last_error": source.last_error,
            }
        )
    return flows
