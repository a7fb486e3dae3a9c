"""The approval portal's data. Only `approvals.services` writes these rows."""

import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Lower, Upper
from django.utils import timezone

from approvals.contract import ApprovalOption, stored_options
from approvals.stepfunctions import account_of_queue_url, account_of_role


class User(AbstractUser):
    """A person who signs in through SSO, keyed by the IdP's (issuer, sub).

    Email is an attribute that can change at the IdP; (issuer, sub) never does.
    """

    # The inherited password hash: never an admin filter, as ApprovalRequest's secrets (Django's
    # UserAdmin refuses it too).
    secret_fields = frozenset({"password"})
    oidc_issuer = models.CharField(max_length=255, blank=True, default="")
    oidc_sub = models.CharField(max_length=255, blank=True, default="")
    # The last time the IdP vouched for this person: a successful SSO sign-in or session refresh.
    # Channels without a browser session (Slack) accept decisions only while this is recent.
    sso_verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["oidc_issuer", "oidc_sub"],
                condition=~Q(oidc_sub=""),
                name="user_unique_oidc_identity",
            )
        ]
        # People are found by their email in any case: `email__iexact` (UPPER(…) = UPPER(…)) for a
        # request's requester and the requester's groups, LOWER(…) IN (…) for a batch of mails'
        # recipients. Without these each lookup read every account.
        indexes = [
            models.Index(Upper("email"), name="user_email_upper"),
            models.Index(Lower("email"), name="user_email_lower"),
        ]


class RequestStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired"
    # Its workflow no longer exists (a restarted AWS emulator forgot the execution, or Step
    # Functions no longer keeps it): nobody decided this, the system closed it.
    CLOSED = "closed", "Closed by the system"


class ApprovalSource(models.Model):
    """An approval queue the portal consumes besides the environment's APPROVAL_QUEUE_URL (the
    default source, which has no row): another AWS account or region, read with its own role.

    Written only by approvals/services/sources.py (audited). The external ID is not a secret by
    AWS's definition, but it is treated like one: never logged, shown masked in the admin.
    """

    class State(models.TextChoices):
        OK = "ok", "OK"
        FAILING = "failing", "Failing"

    name = models.CharField("display name", max_length=100, unique=True)
    queue_url = models.CharField(max_length=1024, unique=True)
    region = models.CharField(max_length=32)
    # Assumed with STS AssumeRole for everything this source does (receive, callbacks,
    # heartbeats); empty: the portal's own credentials.
    role_arn = models.CharField("role ARN", max_length=2048, blank=True, default="")
    external_id = models.CharField("external ID", max_length=1224, blank=True, default="")
    secret_fields = frozenset({"external_id"})  # as ApprovalRequest's (the admin shows it masked)
    enabled = models.BooleanField(default=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.OK)
    # Redacted, never a credential: what the last failing poll answered.
    last_error = models.TextField(blank=True, default="")
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def account_id(self) -> str:
        """The AWS account it serves: the role's when it has one, else the queue URL's."""
        return account_of_role(self.role_arn) if self.role_arn else account_of_queue_url(self.queue_url)


class ApprovalRequest(models.Model):
    """One paused Step Functions task waiting for a human decision."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    title = models.CharField(max_length=300)
    details = models.JSONField(null=True, blank=True)
    requester_email = models.EmailField(blank=True, default="")
    # The account the requester's email named when the request arrived: four eyes refuses it
    # even after the account's email changes (approvals/permissions.py).
    requester_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="requested"
    )
    execution_arn = models.CharField(max_length=2048, blank=True, default="")
    state_machine_arn = models.CharField(max_length=2048, blank=True, default="")
    state_name = models.CharField(max_length=80, blank=True, default="")
    status = models.CharField(max_length=16, choices=RequestStatus.choices, default=RequestStatus.PENDING)
    deadline = models.DateTimeField(null=True, blank=True)
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True)
    heartbeat_seconds = models.PositiveIntegerField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The task token: a secret. Encrypted at rest, found by a keyed fingerprint.
    token_ciphertext = models.TextField(editable=False)
    token_fingerprint = models.CharField(max_length=64, unique=True, editable=False)
    # Never a filter in the admin, not even `__startswith`: an answer of rows or no rows reads a
    # value out one character at a time (admin/base.py, CraftedRequestsMixin).
    secret_fields = frozenset({"token_ciphertext", "token_fingerprint"})
    sqs_message_id = models.CharField(max_length=128, blank=True, default="")
    received_at = models.DateTimeField(default=timezone.now)
    # When its message was sent (SQS's SentTimestamp; a replay's, the original message's), never
    # later than received_at; null when unknown. Step Functions' timers (HeartbeatSeconds,
    # TimeoutSeconds) start about then: a message that waited in the queue used part of them.
    message_sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="decisions"
    )
    decision_comment = models.TextField(blank=True, default="")
    # The approval policy (the message's "policy", else the admin's ApprovalPolicy default):
    # how many approvals close it, from distinct groups or not, how many rejections deny it.
    required_approvals = models.PositiveSmallIntegerField(default=1)
    distinct_groups = models.BooleanField(default=False)
    rejections_to_deny = models.PositiveSmallIntegerField(default=1)
    # Separation of duties, copied from the admin's ApprovalPolicy when the request arrives.
    sod_distinct_levels = models.BooleanField(default=False)
    sod_exclude_requester_groups = models.BooleanField(default=False)
    # The requester's groups as the message names them ("requesterGroups"); the portal adds
    # the groups it mirrored when the requester last signed in.
    requester_groups = models.JSONField(default=list, blank=True)
    # "I'm on it": an approver of a group assignment took it; colleagues see it taken.
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="claims"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    # An approver asked the requester a question that has no answer yet.
    awaiting_info = models.BooleanField(default=False)
    # Approvers the message (or a routing rule) named that were not assigned, each with why:
    # [{"kind": "user"|"group", "value": ..., "reason": ...}] (approvals/selectors/trust.py).
    ignored_approvers = models.JSONField(default=list, blank=True)
    # What the approver chooses from and fills in, kept as the message carried them (the
    # contract's `options`, `multiple` and `form`; docs/approver-input.md). No options: the
    # default approve/reject (contract.DEFAULT_OPTIONS).
    options = models.JSONField(null=True, blank=True)
    multiple_options = models.BooleanField(default=False)
    form_schema = models.JSONField(null=True, blank=True)
    # The queue it came from, whose region and role its callbacks and heartbeats use; null:
    # the environment's default source (APPROVAL_QUEUE_URL).
    source = models.ForeignKey(ApprovalSource, null=True, blank=True, on_delete=models.PROTECT, related_name="requests")
    # The form's field names in the message's order: PostgreSQL's jsonb keeps an object's keys
    # sorted its own way, and the page shows the fields in the order the workflow wrote them.
    form_field_order = models.JSONField(null=True, blank=True)
    # Set at ingest, cleared once its "new request" notifications are planned (after the commit, in
    # a task: services/notifications.py new_requests_notify). Set this long: the planning task was
    # lost, and the notification sweep plans it. NULL for every request planned (or from before).
    notifications_unplanned_since = models.DateTimeField(null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        # Every filter and ordering the admin offers has an index (see approvals/admin/);
        # the changelists must stay fast with hundreds of thousands of rows.
        indexes = [
            models.Index(fields=["status", "-received_at"], name="request_status_received"),
            # The notification sweep's "left unplanned" lookup: only the few unplanned rows are indexed.
            models.Index(
                fields=["notifications_unplanned_since"],
                condition=models.Q(notifications_unplanned_since__isnull=False),
                name="request_notify_unplanned",
            ),
            models.Index(fields=["status", "deadline"], name="request_status_deadline"),
            models.Index(fields=["-received_at", "-id"], name="request_received"),
            models.Index(fields=["deadline", "id"], name="request_deadline"),
            models.Index(fields=["state_machine_arn", "-received_at"], name="request_machine_received"),
            models.Index(fields=["execution_arn"], name="request_execution"),
            # The inbox's tab counts read status and requester of every request assigned to the
            # user: from this narrow index, not the wide rows (details can be 256 KiB each).
            models.Index(fields=["id", "status"], include=["requester_email"], name="request_id_status"),
            # "I requested" and who may view a request: `requester_email__iexact`, i.e. UPPER(…) = UPPER(…).
            models.Index(Upper("requester_email"), name="request_requester_upper"),
            # The retention sweep: closed requests that still hold their task token (erased rows leave it).
            models.Index(
                fields=["decided_at"],
                condition=~Q(status="pending") & ~Q(token_ciphertext=""),
                name="request_token_retention",
            ),
            # The operations dashboard's last 30 days of decisions (selectors/ops.py): the window's
            # rows, not every decision ever made.
            models.Index(
                fields=["decided_at"],
                condition=Q(status__in=[RequestStatus.APPROVED, RequestStatus.REJECTED]),
                name="request_decided",
            ),
            # Plus, on PostgreSQL, trigram indexes for the admin's search on title and requester
            # (migration 0003: they need the pg_trgm extension, which SQLite has no use for).
        ]
        permissions = [
            ("decide_approvalrequest", "Can approve or reject approval requests in the admin"),
            ("reassign_approvalrequest", "Can reassign approval requests"),
            ("cancel_approvalrequest", "Can cancel approval requests"),
            ("release_claim_approvalrequest", "Can release someone's claim on an approval request"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def is_pending(self) -> bool:
        return self.status == RequestStatus.PENDING

    @property
    def is_overdue(self) -> bool:
        return self.deadline is not None and self.deadline <= timezone.now()

    @property
    def policy(self) -> dict:
        """The policy as the message contract spells it (also sent back to Step Functions)."""
        return {
            "required": self.required_approvals,
            "distinctGroups": self.distinct_groups,
            "rejectOn": "any" if self.rejections_to_deny == 1 else self.rejections_to_deny,
        }

    @property
    def has_quorum(self) -> bool:
        return self.required_approvals > 1

    @property
    def form(self) -> dict | None:
        """The stored form with its fields in the message's order (see `form_field_order`)."""
        if not self.form_schema:
            return None
        fields = self.form_schema.get("properties") or {}
        order = [name for name in (self.form_field_order or ()) if name in fields]
        ordered = {name: fields[name] for name in order} | {k: v for k, v in fields.items() if k not in order}
        return {**self.form_schema, "properties": ordered}

    def choices(self) -> tuple[ApprovalOption, ...]:
        """The options the approver chooses from (``contract.ApprovalOption``s): the stored
        ``options``, or the default approve/reject when the message had none."""
        return stored_options(self.options)


class CountedVoteManager(models.Manager):
    """The votes that count. A vote withdrawn by the callback's identity re-check stays as
    history (`Vote.with_withdrawn`), but no rule, count or list of votes sees it any more."""

    def get_queryset(self):
        return super().get_queryset().filter(withdrawn_at__isnull=True)


class Vote(models.Model):
    """One approver's approval or rejection. A request closes when its policy is met.

    `user` is who clicked; `on_behalf_of` the approver whose right they used (delegation),
    else null. `group` is the assignment the right came from: an assigned group's name, or
    "user:<email>" for a named approver (distinctGroups counts these).

    `withdrawn_at`/`withdrawn_reason`: the re-check before the callback found the voter no
    longer allowed (left the group, deactivated); the vote no longer counts and the request
    went back to pending (approvals/services/recheck.py).
    """

    request = models.ForeignKey(ApprovalRequest, on_delete=models.PROTECT, related_name="votes")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="votes")
    on_behalf_of = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="votes_by_delegates"
    )
    approve = models.BooleanField()
    comment = models.TextField(blank=True, default="")
    # A request with options: the ids of the option(s) chosen (one, or several success options
    # with `multiple`); null for a request with the default approve/reject. `answers`: the form's
    # answers as approvals/answers.py typed them; null when the request has no form.
    choice = models.JSONField(null=True, blank=True)
    answers = models.JSONField(null=True, blank=True)
    group = models.CharField(max_length=254, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_reason = models.TextField(blank=True, default="")

    objects = CountedVoteManager()  # the default: what rules, counts and lists read
    with_withdrawn = models.Manager()  # noqa: DJ012 - a manager, not a field

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # One counted vote per person: after a withdrawal they may vote again (if allowed).
            models.UniqueConstraint(
                fields=["request", "user"], condition=Q(withdrawn_at__isnull=True), name="vote_once_per_user"
            ),
            models.UniqueConstraint(
                fields=["request", "on_behalf_of"],
                condition=Q(on_behalf_of__isnull=False, withdrawn_at__isnull=True),
                name="vote_once_per_principal",
            ),
        ]
        indexes = [
            models.Index(fields=["user", "request"], name="vote_user_request"),
            models.Index(fields=["user", "-created_at"], name="vote_user_created"),  # "decided by me"
            models.Index(fields=["on_behalf_of", "request"], name="vote_principal_request"),
        ]

    def __str__(self) -> str:
        return f"{'Approval' if self.approve else 'Rejection'} by {self.user} of request {self.request_id}"

    @property
    def choice_labels(self) -> list[str]:
        """The labels of the options chosen, as the approver saw them."""
        labels = {option.id: option.label for option in self.request.choices()}
        return [labels.get(each, each) for each in self.choice or ()]

    @property
    def group_name(self) -> str:
        """The assigned group the vote counted for; "" for a named approver."""
        return "" if self.group.startswith("user:") else self.group


class InfoMessage(models.Model):
    """ "Needs more information": an approver's question and the requester's answer."""

    class Kind(models.TextChoices):
        QUESTION = "question", "Question"
        ANSWER = "answer", "Answer"

    request = models.ForeignKey(ApprovalRequest, on_delete=models.PROTECT, related_name="info_messages")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    author_label = models.CharField(max_length=254)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} by {self.author_label}"

    @classmethod
    def unanswered(cls, messages) -> list["InfoMessage"]:
        """The questions after the last answer among `messages` (oldest first): what the next
        answer answers."""
        questions: list[InfoMessage] = []
        for message in messages:
            questions = [] if message.kind == cls.Kind.ANSWER else [*questions, message]
        return questions


class DelegationQuerySet(models.QuerySet):
    def not_over(self, at):
        """Neither ended nor revoked at `at` (it may not have begun yet)."""
        return self.filter(Q(ends_at__gt=at), Q(revoked_at__isnull=True) | Q(revoked_at__gt=at))

    def active(self, at=None):
        """In force at `at` (now by default): the rows for which Delegation.active_at is true."""
        at = at or timezone.now()
        return self.not_over(at).filter(starts_at__lte=at)


class Delegation(models.Model):
    """ "Out of office until D, delegate to X": from starts_at to ends_at, X may see and decide
    what the delegator may. Not transitive. Revoking ends it early."""

    delegator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="delegations_given")
    delegate = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="delegations_received"
    )
    starts_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=200, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="delegations_created"
    )
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = DelegationQuerySet.as_manager()

    class Meta:
        ordering = ["-starts_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__gt=F("starts_at")), name="delegation_ends_after_start"),
            models.CheckConstraint(condition=~Q(delegator=F("delegate")), name="delegation_not_to_self"),
        ]
        indexes = [
            models.Index(fields=["delegate", "ends_at"], name="delegation_delegate_ends"),
            models.Index(fields=["delegator", "ends_at"], name="delegation_delegator_ends"),
        ]

    def __str__(self) -> str:
        return f"{self.delegator} → {self.delegate} until {self.ends_at:%Y-%m-%d %H:%M}"

    def active_at(self, moment) -> bool:
        return self.starts_at <= moment < self.ends_at and (self.revoked_at is None or self.revoked_at > moment)

    @property
    def effective_end(self):
        """When it stops: its end, or earlier if revoked (a revocation may be set for a later
        moment, when a replacing delegation takes over)."""
        return self.ends_at if self.revoked_at is None else min(self.ends_at, self.revoked_at)

    def state_at(self, moment) -> str:
        """upcoming, active, ended or revoked (cut short, or revoked before it began)."""
        if self.revoked_at is not None and self.revoked_at <= self.starts_at:
            return "revoked"
        if moment < self.starts_at:
            return "upcoming"
        if moment < self.effective_end:
            return "active"
        return "revoked" if self.revoked_at is not None and self.revoked_at < self.ends_at else "ended"


class Assignment(models.Model):
    """Who may decide: a user by email (they may not have signed in yet) or a group by name."""

    class Kind(models.TextChoices):
        USER = "user", "User"
        GROUP = "group", "Group"

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="assignments")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    value = models.CharField(max_length=254)
    created_at = models.DateTimeField(default=timezone.now)
    # The admin whose reassignment added it; null when the message or a routing rule named it.
    # Four eyes: nobody decides with an assignment they made themselves (approvals/permissions.py).
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["request", "kind", "value"], name="assignment_unique_per_request")
        ]
        indexes = [models.Index(fields=["kind", "value"], name="assignment_kind_value")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


class AuditAction(models.TextChoices):
    """What an audit event records: the one list of actions (stored as these strings)."""

    APPROVED = "approved"
    REJECTED = "rejected"
    APPROVAL_RECORDED = "approval_recorded"
    REJECTION_RECORDED = "rejection_recorded"
    DECISION_REFUSED = "decision_refused"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    REASSIGNED = "reassigned"
    CLAIMED = "claimed"
    UNCLAIMED = "unclaimed"
    CLAIM_RELEASED = "claim_released"
    REOPENED = "reopened"
    VOTE_WITHDRAWN = "vote_withdrawn"
    DECISION_RECOUNTED = "decision_recounted"
    CALLBACK_DELIVERED = "callback_delivered"
    CALLBACK_FAILED = "callback_failed"
    CALLBACK_RETRIED = "callback_retried"
    CLOSED_BY_STEP_FUNCTIONS = "closed_by_step_functions"
    CLOSED_BY_SYSTEM = "closed_by_system"
    INFO_REQUESTED = "info_requested"
    INFO_ANSWERED = "info_answered"
    DELEGATION_SET = "delegation_set"
    DELEGATION_REVOKED = "delegation_revoked"
    INGESTED = "ingested"
    INGEST_ERROR = "ingest_error"
    INGEST_ERROR_REPLAYED = "ingest_error_replayed"
    INGEST_ERROR_REPLAY_REFUSED = "ingest_error_replay_refused"
    INGEST_ERROR_DISCARDED = "ingest_error_discarded"
    TOKEN_KEYS_ROTATED = "token_keys_rotated"  # noqa: S105 - an audit action, not a secret
    TOKEN_KEY_ROTATION_SKIPPED = "token_key_rotation_skipped"  # noqa: S105 - an audit action, not a secret
    TOKEN_ERASED = "token_erased"  # noqa: S105 - an audit action, not a secret
    INGEST_MESSAGE_ERASED = "ingest_message_erased"
    IDEMPOTENCY_KEYS_PURGED = "idempotency_keys_purged"
    NOTIFICATION_REFUSED = "notification_refused"
    NOTIFICATION_RESENT = "notification_resent"
    NOTIFICATION_PREFERENCES_CHANGED = "notification_preferences_changed"
    REMINDER_SENT = "reminder_sent"
    ESCALATED = "escalated"
    APPROVAL_POLICY_SAVED = "approval_policy_saved"
    APPROVAL_POLICY_DELETED = "approval_policy_deleted"
    ROUTING_RULE_SAVED = "routing_rule_saved"
    ROUTING_RULE_DELETED = "routing_rule_deleted"
    APPROVER_TRUST_SAVED = "approver_trust_saved"
    APPROVER_TRUST_DELETED = "approver_trust_deleted"
    SLACK_IDENTITY_BOUND = "slack_identity_bound"
    SLACK_IDENTITY_UNBOUND = "slack_identity_unbound"
    SLACK_BINDING_REFUSED = "slack_binding_refused"
    SERVICE_ACCOUNT_CREATED = "service_account_created"
    SERVICE_ACCOUNT_SAVED = "service_account_saved"
    SCIM_USER_CREATED = "scim_user_created"
    SCIM_USER_LINKED = "scim_user_linked"
    SCIM_USER_UPDATED = "scim_user_updated"
    SCIM_USER_DELETED = "scim_user_deleted"
    SCIM_USER_REACTIVATED = "scim_user_reactivated"
    SCIM_USER_DEACTIVATED = "scim_user_deactivated"
    APPROVER_DEPROVISIONED = "approver_deprovisioned"
    SCIM_GROUP_CREATED = "scim_group_created"
    SCIM_GROUP_UPDATED = "scim_group_updated"
    SCIM_GROUP_DELETED = "scim_group_deleted"
    ASSIGNED_GROUP_RENAMED = "assigned_group_renamed"
    ASSIGNED_GROUP_DELETED = "assigned_group_deleted"
    REQUESTER_ACCOUNT_BOUND = "requester_account_bound"
    ASSIGNED_EMAIL_CHANGED = "assigned_email_changed"
    SCIM_TOKEN_CREATED = "scim_token_created"  # noqa: S105 - an audit action, not a secret
    SCIM_TOKEN_REVOKED = "scim_token_revoked"  # noqa: S105 - an audit action, not a secret
    SCIM_TOKEN_ROTATED = "scim_token_rotated"  # noqa: S105 - an audit action, not a secret
    SCIM_AUTH_REFUSED = "scim_auth_refused"
    SOURCE_CREATED = "source_created"
    SOURCE_SAVED = "source_saved"
    SOURCE_ENABLED = "source_enabled"
    SOURCE_DISABLED = "source_disabled"
    SOURCE_FAILING = "source_failing"
    SOURCE_RECOVERED = "source_recovered"


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("Audit events are append-only")

    def delete(self):
        raise TypeError("Audit events are append-only")


class AuditEvent(models.Model):
    """Append-only history: every state change and every refusal."""

    request = models.ForeignKey(
        ApprovalRequest, null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events"
    )
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    # Who acted, as text that survives the user row: an email, or "system".
    actor_label = models.CharField(max_length=254)
    action = models.CharField(max_length=64)  # an AuditAction
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["action", "-created_at"], name="audit_action_created"),
            models.Index(fields=["-created_at", "-id"], name="audit_created"),
            models.Index(Upper("actor_label"), name="audit_actor_label_upper"),
        ]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor_label}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise TypeError("Audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("Audit events are append-only")


class CallbackStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    RETRYING = "retrying", "Waiting to retry"
    DELIVERED = "delivered", "Sent to Step Functions"
    FAILED = "failed", "Failed permanently"


# A callback in these states may still be sent: its request needs its task token.
CALLBACK_IN_FLIGHT = (CallbackStatus.PENDING, CallbackStatus.SENDING, CallbackStatus.RETRYING)


class CallbackResolution(models.TextChoices):
    """What reading the execution showed, after an ambiguous delivery met a closed task.

    The words people see for a callback live in approvals/delivery.py."""

    NONE = "", "Not needed"
    CONFIRMED = "confirmed", "Delivered (confirmed from the execution history)"
    CLOSED = "closed", "Closed by Step Functions (timed out / execution ended)"
    UNCERTAIN = "uncertain", "Delivery uncertain"
    GONE = "gone", "The workflow no longer exists"


class Callback(models.Model):
    """The outbox row for the one call that resumes the execution."""

    class Kind(models.TextChoices):
        SUCCESS = "success", "SendTaskSuccess"
        FAILURE = "failure", "SendTaskFailure"

    request = models.OneToOneField(ApprovalRequest, on_delete=models.PROTECT, related_name="callback")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # SendTaskSuccess: {"output": {...}}; SendTaskFailure: {"error": "...", "cause": "..."}.
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=CallbackStatus.choices, default=CallbackStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # A short, redacted reason: an AWS error code and message, never the token.
    last_error = models.TextField(blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # An attempt may have reached Step Functions without us learning it did (its response lost,
    # or its worker gone before recording it): a later "task closed" answer proves nothing.
    maybe_delivered = models.BooleanField(default=False)
    # How a "task closed" answer was settled (reading the execution when maybe_delivered).
    resolution = models.CharField(max_length=16, choices=CallbackResolution.choices, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["status", "updated_at"], name="callback_status_updated"),
            models.Index(fields=["-updated_at", "-id"], name="callback_updated"),  # the admin's outbox list
            # What a delivery batch may take (services/callbacks.py, _due), oldest first: only the
            # rows not settled yet, so a claim never walks past the delivered ones.
            models.Index(
                fields=["id"],
                name="callback_due",
                condition=models.Q(
                    status__in=[CallbackStatus.PENDING, CallbackStatus.RETRYING, CallbackStatus.SENDING]
                ),
            ),
        ]
        permissions = [("retry_callback", "Can send a failed callback again")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for request {self.request_id} ({self.status})"


class IngestError(models.Model):
    """A queue message the portal could not turn into a request.

    Its body is shown redacted (`body_redacted`, no token). The whole message is kept
    encrypted like task tokens (`message_ciphertext`: it holds one), so the queue message is
    deleted once this row is committed, and an admin replays it from here (ingested again in
    place) or discards it (the ciphertext erased). Rows recorded before the message was kept
    (empty ciphertext, never erased) are replayed from the dead-letter queue instead.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        REPLAYED = "replayed", "Replayed"
        DISCARDED = "discarded", "Discarded"

    sqs_message_id = models.CharField(max_length=128, unique=True)
    code = models.CharField(max_length=32)
    reason = models.TextField()
    body_redacted = models.TextField(blank=True, default="")
    # The whole message, Fernet-encrypted with TOKEN_ENCRYPTION_KEYS; "" when erased (discarded,
    # replayed, past TOKEN_RETENTION_DAYS) or never kept.
    message_ciphertext = models.TextField(blank=True, default="", editable=False)
    secret_fields = frozenset({"message_ciphertext"})  # as ApprovalRequest's
    message_erased_at = models.DateTimeField(null=True, blank=True, editable=False)
    receive_count = models.PositiveIntegerField(default=1)
    first_seen_at = models.DateTimeField(default=timezone.now)
    # When the message was sent (ApprovalRequest.message_sent_at's rule): a replay counts from it.
    message_sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_seen_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # The id the message got when it was sent back to the queue.
    replayed_as_message_id = models.CharField(max_length=128, blank=True, default="")
    # The source it came from (null: the default one): a replay checks the message against it again.
    source = models.ForeignKey(ApprovalSource, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # The source's queue it was received from ("" for the default one, or recorded before this
    # was kept): its senders were that queue's account's, so a source moved to another queue since
    # does not replay it.
    source_queue_url = models.CharField(max_length=2048, blank=True, default="", editable=False)

    class Meta:
        ordering = ["-last_seen_at"]
        indexes = [
            models.Index(fields=["status", "-last_seen_at"], name="ingest_error_status_seen"),
            models.Index(fields=["-last_seen_at", "-id"], name="ingest_error_seen"),  # the admin's list
        ]
        permissions = [("resolve_ingesterror", "Can replay or discard ingest errors")]

    def __str__(self) -> str:
        return f"{self.code}: {self.reason[:80]}"


class MatchedByStateMachine(models.Model):
    """An admin-kept row that applies to requests of a state machine and/or state.

    A blank state machine or state matches any. The most specific enabled row wins (state
    machine and state, then state machine, then state, then neither); `priority` breaks ties
    between equally specific rows, higher first (selectors._most_specific).
    """

    name = models.CharField(max_length=200)
    state_machine_arn = models.CharField(max_length=2048, blank=True, default="")
    state_name = models.CharField(max_length=80, blank=True, default="")
    priority = models.IntegerField(default=0)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        ordering = ["-enabled", "-priority", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def specificity(self) -> int:
        return 2 * bool(self.state_machine_arn) + bool(self.state_name)


class RoutingRule(MatchedByStateMachine):
    """Who gets a request whose message names no approvers, kept by admins. No rule matches:
    APPROVAL_DEFAULT_GROUP."""

    users = models.JSONField(default=list, blank=True, help_text="Emails of approvers.")
    groups = models.JSONField(default=list, blank=True, help_text="SSO group names.")

    class Meta(MatchedByStateMachine.Meta):
        pass


class ApprovalPolicy(MatchedByStateMachine):
    """The admins' default policy for a state machine / state; a message's "policy" overrides the
    quorum fields. No match: one approval. Separation of duties is set here only, never by the
    message."""

    required_approvals = models.PositiveSmallIntegerField(default=1, help_text="Approvals needed (N of the assignees).")
    distinct_groups = models.BooleanField(
        default=False, help_text="Each approval must come from a different assigned group (or named approver)."
    )
    rejections_to_deny = models.PositiveSmallIntegerField(
        default=1, help_text="Rejections that deny the request; 1 means any rejection ends it."
    )
    sod_distinct_levels = models.BooleanField(
        "Not the same person at two levels",
        default=False,
        help_text="Nobody who decided an earlier state of the same execution decides this one.",
    )
    sod_exclude_requester_groups = models.BooleanField(
        "Not a member of the requester's groups",
        default=False,
        help_text="Approvers who share an SSO group with the requester may not decide.",
    )

    class Meta(MatchedByStateMachine.Meta):
        verbose_name_plural = "approval policies"
        constraints = [
            models.CheckConstraint(condition=Q(required_approvals__gte=1), name="policy_required_at_least_one"),
            models.CheckConstraint(condition=Q(rejections_to_deny__gte=1), name="policy_reject_at_least_one"),
        ]


class ApproverTrust(MatchedByStateMachine):
    """How far the portal trusts what a state machine's messages say about who decides.

    Whoever may start an execution controls its input; a message's approvers and requester are
    claims. No row matches a message: routing only (approvals/selectors/trust.py, docs/security.md "Trust boundary").
    """

    class Mode(models.TextChoices):
        FREE = "free", "Free: the message names its approvers"
        ALLOW_LIST = "allow_list", "Allow-list: the message chooses among the listed users and groups"
        ROUTING_ONLY = "routing_only", "Routing only: approvers the message names are ignored"

    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.ROUTING_ONLY)
    allowed_users = models.JSONField(default=list, blank=True, help_text="Emails a message may name (allow-list).")
    allowed_groups = models.JSONField(default=list, blank=True, help_text="Groups a message may name (allow-list).")
    require_requester = models.BooleanField(
        default=False, help_text="Refuse a message that names no requester (an ingest error)."
    )

    class Meta(MatchedByStateMachine.Meta):
        verbose_name = "approver trust setting"


class ConsumerStatus(models.Model):
    """Each queue consumer's last successful poll, for health checks and the admin."""

    name = models.CharField(max_length=200, unique=True)
    last_poll_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    last_error_at = models.DateTimeField(null=True, blank=True)
    messages_handled = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "consumer statuses"

    def __str__(self) -> str:
        return self.name


# ---------------------------------------------------------------------------
# Notifications (approvals/notifications/, written only by approvals/services/notifications.py)
# ---------------------------------------------------------------------------
class Notification(models.Model):
    """One message to one recipient on one channel: planned, then sent by a Celery task.

    The row is the outbox and the record: a send that keeps failing ends `failed`, with the
    redacted reason, for the admin.
    """

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        SLACK = "slack", "Slack"

    class Kind(models.TextChoices):
        NEW_REQUEST = "new_request", "New request"
        REASSIGNED = "reassigned", "Reassigned"
        REMINDER = "reminder", "Reminder"
        ESCALATION = "escalation", "Escalation"
        OUTCOME = "outcome", "Outcome"
        DIGEST = "digest", "Daily digest"
        QUESTION = "question", "Question for the requester"
        ANSWER = "answer", "The requester answered"
        REOPENED = "reopened", "Reopened: a vote no longer counts"
        APPROVER_LOST = "approver_lost", "An approver was deprovisioned"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Not needed any more"
        # The address is outside OIDC_ALLOWED_EMAIL_DOMAINS: never sent (the admin sees why).
        REFUSED = "refused", "Refused: address not in an allowed domain"

    request = models.ForeignKey(
        ApprovalRequest, null=True, blank=True, on_delete=models.CASCADE, related_name="notifications"
    )
    channel = models.CharField(max_length=8, choices=Channel.choices)
    # An email address; for Slack an email (a direct message) or a channel id (a group's channel).
    recipient = models.CharField(max_length=254)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # A short, redacted reason: an SMTP or Slack error, never a secret.
    last_error = models.TextField(blank=True, default="")
    # While a task sends it: a second task for the same row waits its turn instead of sending twice.
    locked_until = models.DateTimeField(null=True, blank=True)
    # Where a Slack message landed ("channel:ts"), so that it can be updated with the outcome.
    external_ref = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="notification_status_created"),
            models.Index(fields=["status", "updated_at"], name="notification_status_updated"),
            models.Index(fields=["recipient", "kind", "-created_at"], name="notification_recipient_kind"),
            models.Index(fields=["-created_at", "-id"], name="notification_created"),  # the admin's list
        ]
        permissions = [("resend_notification", "Can send a failed notification again")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} by {self.get_channel_display()} to {self.recipient} ({self.status})"


class FollowUp(models.Model):
    """A reminder or an escalation for a request: each happens at most once (the unique constraint)."""

    class Kind(models.TextChoices):
        REMINDER = "reminder", "Reminder"
        ESCALATION = "escalation", "Escalation"

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="follow_ups")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["request", "kind"], name="follow_up_once_per_request")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for request {self.request_id}"


class NotificationPreference(models.Model):
    """How a person wants to hear about approvals. No row: email and Slack on, digest off."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preference"
    )
    email_enabled = models.BooleanField("Email", default=True)
    slack_enabled = models.BooleanField("Slack", default=True)
    digest_enabled = models.BooleanField("Daily digest", default=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Notification preferences of {self.user}"


class SlackIdentity(models.Model):
    """A Slack user (workspace id + user id) bound to one portal account, by that account's
    owner through a signed-in SSO session. Slack clicks are taken only from bound identities."""

    team_id = models.CharField(max_length=32)
    slack_user_id = models.CharField(max_length=32)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="slack_identities")
    bound_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "Slack identities"
        constraints = [
            # One Slack identity speaks for one account; one account has one identity per workspace.
            models.UniqueConstraint(fields=["team_id", "slack_user_id"], name="slack_identity_unique"),
            models.UniqueConstraint(fields=["team_id", "user"], name="slack_identity_one_per_user"),
        ]

    def __str__(self) -> str:
        return f"{self.slack_user_id} in {self.team_id}"


# ---------------------------------------------------------------------------
# The REST API (approvals/api/, docs/api.md): service accounts and idempotency keys
# ---------------------------------------------------------------------------
SERVICE_USERNAME_PREFIX = "service-"


class ServiceAccount(models.Model):
    """A bot or tool calling the API with the IdP's client-credentials tokens, mapped to a portal
    user of its own (`user`, whose username starts with SERVICE_USERNAME_PREFIX). The token's
    (iss, sub) picks the account, as (iss, sub) picks a person. An admin scopes it: the state
    machines whose requests it sees, and whether it may decide (where it is an assignee, under
    the same four-eyes rules and policies as a person)."""

    name = models.CharField(max_length=100, unique=True)
    issuer = models.CharField(max_length=255)
    subject = models.CharField(
        max_length=255, help_text="The token's `sub`: the client id (Okta, the dev IdP) or the app's object id (Entra)."
    )
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="service_account")
    state_machines = models.JSONField(
        default=list, blank=True, help_text="State machine ARNs whose requests it sees; '*' for all."
    )
    may_decide = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="service_account_identity_unique")]

    def __str__(self) -> str:
        return self.name

    def covers(self, state_machine_arn: str) -> bool:
        return "*" in self.state_machines or (bool(state_machine_arn) and state_machine_arn in self.state_machines)


class IdempotencyKey(models.Model):
    """The first response to an API write sent with an `Idempotency-Key`, per caller: a retry
    with the same key and body gets it again instead of acting twice."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the method, path and body.")
    status_code = models.PositiveSmallIntegerField()
    response = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_unique_per_user")]

    def __str__(self) -> str:
        return f"{self.key} of {self.user_id}"


class ScimToken(models.Model):
    """A bearer token an IdP's SCIM client presents (docs/scim.md). Only its SHA-256 digest is
    stored: the secret is shown once, when an admin creates or rotates it.

    `issuer` is the OIDC issuer whose accounts this token provisions: the users it creates are
    the accounts SSO signs in to from that issuer, and it sees no one else's.
    """

    class SubjectAttribute(models.TextChoices):
        EXTERNAL_ID = "externalId", "externalId"
        USER_NAME = "userName", "userName"

    name = models.CharField(max_length=100)
    issuer = models.CharField(max_length=255)
    # The SCIM attribute that carries the IdP's OIDC subject (what SSO signs in with).
    subject_attribute = models.CharField(
        max_length=16, choices=SubjectAttribute.choices, default=SubjectAttribute.EXTERNAL_ID
    )
    # The first characters of the secret: tells tokens apart in the admin and the audit trail.
    prefix = models.CharField(max_length=16, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    secret_fields = frozenset({"digest"})  # as ApprovalRequest's
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Rotation: the token that replaced this one.
    replaced_by = models.OneToOneField("self", null=True, blank=True, on_delete=models.PROTECT, related_name="replaces")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "SCIM token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class ScimUser(models.Model):
    """A portal account provisioned by SCIM: the link between the IdP's SCIM resource and the
    account SSO signs in to (User.oidc_issuer, User.oidc_sub)."""

    scim_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="scim")
    issuer = models.CharField(max_length=255)
    user_name = models.CharField(max_length=255)
    external_id = models.CharField(max_length=255, blank=True, default="")
    display_name = models.CharField(max_length=255, blank=True, default="")
    # The SCIM attributes the portal declares (name, displayName, emails), as the IdP sent them.
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    # SCIM DELETE: the account stays (deactivated, so votes and audit keep their author), the
    # SCIM resource is gone. Provisioning the same subject again links it anew.
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                Upper("user_name"), "issuer", condition=Q(deleted_at__isnull=True), name="scim_user_unique_user_name"
            )
        ]

    def __str__(self) -> str:
        return self.user_name


class ScimGroup(models.Model):
    """A group the IdP manages through SCIM: its membership comes from SCIM, not from ID tokens."""

    scim_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    group = models.OneToOneField("auth.Group", on_delete=models.CASCADE, related_name="scim")
    issuer = models.CharField(max_length=255)
    external_id = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.group.name
