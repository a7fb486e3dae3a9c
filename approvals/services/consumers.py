"""The queue consumers' own bookkeeping: when each last polled successfully."""

from django.db.models import F
from django.utils import timezone

from approvals.models import ConsumerStatus
from approvals.redaction import redact


def consumer_poll_recorded(*, name: str, handled: int) -> None:
    # A liveness timestamp, not a domain state change: no audit event per poll.
    updated = ConsumerStatus.objects.filter(name=name).update(
        last_poll_at=timezone.now(), messages_handled=F("messages_handled") + handled
    )
    if not updated:
        ConsumerStatus.objects.get_or_create(
            name=name, defaults={"last_poll_at": timezone.now(), "messages_handled": handled}
        )


def consumer_error_recorded(*, name: str, error: str) -> None:
    ConsumerStatus.objects.update_or_create(
        name=name, defaults={"last_error": redact(error)[:2000], "last_error_at": timezone.now()}
    )
