"""Approval sources (queues in other AWS accounts and regions): an admin's create, edit, enable and
disable (audited), the consumer's record of each poll, and the trust rule every message of a
source passes: its execution must be in the source's region and account."""

import logging
import re
from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals.contract import ContractError
from approvals.models import ApprovalSource, AuditAction, User
from approvals.redaction import redact
from approvals.selectors.sources import sources_by_account as read_sources_by_account
from approvals.selectors.sources import sources_by_queue
from approvals.services.common import ApprovalError, audit
from approvals.stepfunctions import (
    account_of_queue_url,
    account_of_role,
    arn_parts,
    queue_identity,
    region_of_queue_url,
)

logger = logging.getLogger(__name__)

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]{2,1224}$")
MAX_ERROR_TEXT = 1000
# The code of the IngestError for a message whose execution its source may not serve.
OUTSIDE_SOURCE = "outside_source"


def source_fields_check(
    *, name: str, queue_url: str, region: str, role_arn: str, external_id: str, source_id: int | None = None
) -> None:
    """Refuse a source that is malformed, or whose queue another consumer already reads (`source_id`:
    the source being edited, None for a new one)."""
    if not name.strip():
        raise ApprovalError("A source needs a display name.", "invalid")
    if not queue_url.startswith(("https://", "http://")):
        raise ApprovalError("The queue URL must be an SQS queue URL (https://sqs.<region>.amazonaws.com/…).", "invalid")
    if not _REGION.match(region):
        raise ApprovalError(f"{region!r} is not an AWS region name (like eu-west-1).", "invalid")
    if role_arn and not _ROLE_ARN.match(role_arn):
        raise ApprovalError("The role ARN must look like arn:aws:iam::<account>:role/<name>.", "invalid")
    if external_id and not _EXTERNAL_ID.match(external_id):
        # Never echo it: it is treated as a secret.
        raise ApprovalError("The external ID must be 2 to 1224 characters of letters, digits and +=,.@:/-", "invalid")
    if external_id and not role_arn:
        raise ApprovalError("An external ID is only used with a role to assume.", "invalid")
    if not role_arn and not account_of_queue_url(queue_url):
        raise ApprovalError("Without a role, the queue URL must name the account (…/<account>/<queue>).", "invalid")
    # Whoever may send to the queue is its account's: a role (or region) elsewhere would let those
    # senders name that account's state machines, and get its settings (the trust rule below).
    queue_account, queue_region = account_of_queue_url(queue_url), region_of_queue_url(queue_url)
    if role_arn and queue_account and account_of_role(role_arn) != queue_account:
        raise ApprovalError(
            f"The queue is in account {queue_account}, the role in account {account_of_role(role_arn)}: "
            "use the role the member-account template made in the queue's account.",
            "invalid",
        )
    if queue_region and queue_region != region:
        raise ApprovalError(f"The queue is in region {queue_region}, not {region}.", "invalid")
    source_queue_check(queue_url=queue_url, source_id=source_id)


def source_queue_check(*, queue_url: str, source_id: int | None, enabled_only: bool = False) -> None:
    """One consumer per queue. A queue read by two (the default queue's and a source's, or two
    sources') gives each message the trust rule of whichever consumer received it: the source's
    account check or the default queue's, one source's account or the other's. `enabled_only`:
    only the sources consumed now count (enabling a source; a save refuses any other's queue)."""
    if settings.APPROVAL_QUEUE_URL and queue_identity(queue_url) == queue_identity(settings.APPROVAL_QUEUE_URL):
        raise ApprovalError(
            "This is the default queue (APPROVAL_QUEUE_URL), which the portal already consumes with the "
            "default queue's trust rule: give the source a queue of its own.",
            "invalid",
        )
    others = [
        source
        for source in sources_by_queue().get(queue_identity(queue_url), [])
        if source.pk != source_id and (source.enabled or not enabled_only)
    ]
    if others:
        raise ApprovalError(
            f"Source {others[0].name!r} already has this queue: give each source a queue of its own.",
            "duplicate",
        )


@transaction.atomic
def source_save(
    *,
    actor: User,
    source_id: int | None,
    name: str,
    queue_url: str,
    region: str,
    role_arn: str = "",
    external_id: str | None = None,
    enabled: bool = True,
) -> ApprovalSource:
    """Create (source_id None) or edit a source. `external_id` None keeps the one it has (the
    admin never shows it back); "" removes it. The audit names whether it changed, never its value."""
    name, queue_url, region, role_arn = name.strip(), queue_url.strip(), region.strip(), role_arn.strip()
    if source_id is None:
        source = ApprovalSource()
    else:
        source = ApprovalSource.objects.select_for_update().filter(pk=source_id).first()
        if source is None:
            raise ApprovalError("This source does not exist.", "not_found")
    new_external_id = source.external_id if external_id is None else external_id.strip()
    source_fields_check(
        name=name,
        queue_url=queue_url,
        region=region,
        role_arn=role_arn,
        external_id=new_external_id,
        source_id=source.pk,
    )
    if ApprovalSource.objects.exclude(pk=source.pk).filter(name=name).exists():
        raise ApprovalError("Another source has this name.", "duplicate")
    external_id_changed = new_external_id != source.external_id
    before = _place(source)
    created = source.pk is None
    source.name, source.queue_url, source.region, source.role_arn = name, queue_url, region, role_arn
    source.external_id = new_external_id
    if created or before != _place(source):
        # A changed place or role: what failed before says nothing about it now.
        source.state, source.last_error = ApprovalSource.State.OK, ""
    enabled_changed = not created and source.enabled != enabled
    source.enabled = enabled
    source.save()
    audit(
        action=AuditAction.SOURCE_CREATED if created else AuditAction.SOURCE_SAVED,
        request=None,
        actor=actor,
        source_id=source.pk,
        name=name,
        queue_url=queue_url,
        region=region,
        role_arn=role_arn,
        external_id_set=bool(new_external_id),
        external_id_changed=external_id_changed,
        enabled=enabled,
        before=None if created else before,
    )
    if enabled_changed:
        _enabled_audit(actor, source)
    return source


def _place(source: ApprovalSource) -> dict[str, str]:
    """What says where a source's messages come from and with which role (audited as `before`)."""
    return {"name": source.name, "queue_url": source.queue_url, "region": source.region, "role_arn": source.role_arn}


def _enabled_audit(actor: User, source: ApprovalSource) -> None:
    audit(
        action=AuditAction.SOURCE_ENABLED if source.enabled else AuditAction.SOURCE_DISABLED,
        request=None,
        actor=actor,
        source_id=source.pk,
        name=source.name,
    )


@transaction.atomic
def source_set_enabled(*, actor: User, source_id: int, enabled: bool) -> ApprovalSource:
    """Start or stop consuming a source (callbacks of its requests still go out)."""
    source = ApprovalSource.objects.select_for_update().filter(pk=source_id).first()
    if source is None:
        raise ApprovalError("This source does not exist.", "not_found")
    if source.enabled == enabled:
        return source
    if enabled:
        # Saved when its queue was no other consumer's (APPROVAL_QUEUE_URL may have changed since).
        source_queue_check(queue_url=source.queue_url, source_id=source.pk, enabled_only=True)
    source.enabled = enabled
    source.save(update_fields=["enabled"])
    _enabled_audit(actor, source)
    return source


def source_poll_succeeded(*, source_id: int, handled: int) -> None:
    """A poll that worked: a timestamp (no audit per poll), and a recovery audited once."""
    now = timezone.now()
    fields = {"last_polled_at": now}
    if handled:
        fields["last_message_at"] = now
    ApprovalSource.objects.filter(pk=source_id).update(**fields)
    if ApprovalSource.objects.filter(pk=source_id, state=ApprovalSource.State.FAILING).exists():
        _source_state_change(source_id=source_id, failing=False, error="")


def source_poll_failed(*, source_id: int, error: str) -> None:
    """A poll that failed (access denied, queue deleted, throttled): the source is failing, with
    the error redacted (its external ID too); a new failure is audited once, not every retry."""
    source = ApprovalSource.objects.filter(pk=source_id).only("external_id", "state").first()
    if source is None:
        return
    text = redact(error, source.external_id)[:MAX_ERROR_TEXT]
    if source.state == ApprovalSource.State.FAILING:
        ApprovalSource.objects.filter(pk=source_id).update(last_error=text, last_error_at=timezone.now())
        return
    _source_state_change(source_id=source_id, failing=True, error=text)


@transaction.atomic
def _source_state_change(*, source_id: int, failing: bool, error: str) -> None:
    source = ApprovalSource.objects.select_for_update().filter(pk=source_id).first()
    wanted = ApprovalSource.State.FAILING if failing else ApprovalSource.State.OK
    if source is None:
        return
    changed = source.state != wanted
    if not changed and not failing:
        return
    source.state = wanted
    if failing:
        source.last_error, source.last_error_at = error, timezone.now()
    source.save(update_fields=["state", "last_error", "last_error_at"])
    if changed:
        audit(
            action=AuditAction.SOURCE_FAILING if failing else AuditAction.SOURCE_RECOVERED,
            request=None,
            actor=None,
            source_id=source.pk,
            name=source.name,
            error=error,
        )
        logger.warning("approval source %s is %s%s", source.name, wanted.label.lower(), f": {error}" if error else "")


def source_trust_check(
    *,
    source: ApprovalSource | None,
    execution_arn: str,
    state_machine_arn: str = "",
    sources_by_account: Callable[[], dict[str, str]] | None = None,
) -> None:
    """Refuse a message whose execution or state machine its source may not serve: an ARN in
    another region, or another account than the source's (the role's, else the queue URL's). The
    state machine counts as much as the execution: the admins' settings (routing rules, approver
    trust, default policies) are matched by it, so a message on one account's queue naming another
    account's state machine would borrow that account's settings. A message that names neither is
    routed to the source's own region and account (a token only works there).

    The default source serves any region and any account as before sources existed, except an
    account a source serves (unless it is the default queue's own): its settings are that
    source's senders', not the default queue's. `sources_by_account` reads those accounts (a
    batch passes one cached reader)."""
    arns = (("execution", execution_arn), ("stateMachine", state_machine_arn))
    if source is None:
        _default_source_check(arns, sources_by_account or read_sources_by_account)
        return
    allowed_account = account_of_role(source.role_arn) if source.role_arn else account_of_queue_url(source.queue_url)
    if account_of_queue_url(source.queue_url) not in ("", allowed_account):
        # Saved before source_fields_check refused it: the queue's senders are another account's.
        allowed_account = ""
    for field, arn in arns:
        if not arn:
            continue
        region, account = arn_parts(arn)
        if region != source.region or account != allowed_account:
            raise ContractError(
                OUTSIDE_SOURCE,
                f"The {_WHAT[field]} is in region {region or '?'} and account {account or '?'}, but source "
                f"{source.name!r} serves region {source.region} and account {allowed_account or '?'}. Fix the "
                "source (or the state machine's queue) and replay.",
                field,
            )


_WHAT = {"execution": "execution", "stateMachine": "state machine"}


def _default_source_check(arns, sources_by_account: Callable[[], dict[str, str]]) -> None:
    own_account = account_of_queue_url(settings.APPROVAL_QUEUE_URL)
    for field, arn in arns:
        _, account = arn_parts(arn)
        if not account or account == own_account:
            continue
        served_by = sources_by_account().get(account)
        if served_by is not None:
            raise ContractError(
                OUTSIDE_SOURCE,
                f"The {_WHAT[field]} is in account {account}, which source {served_by!r} serves, but the "
                "message came from the default queue (APPROVAL_QUEUE_URL). Point the state machine at its "
                "source's queue and replay.",
                field,
            )
