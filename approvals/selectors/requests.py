"""Readers: the querysets views, admin and tasks use, with their joins, so nothing is N+1."""

import contextlib
import re
import uuid
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import NotSupportedError, connection
from django.db.models import BooleanField, Count, F, Func, Prefetch, Q, QuerySet, TextField
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.utils import timezone

from approvals import permissions, tokens
from approvals.integrations.aws import AwsRoute
from approvals.models import (
    CALLBACK_IN_FLIGHT,
    ApprovalPolicy,
    ApprovalRequest,
    ApproverTrust,
    Assignment,
    AuditEvent,
    Callback,
    ConsumerStatus,
    InfoMessage,
    IngestError,
    RequestStatus,
    RoutingRule,
    User,
    Vote,
)
from approvals.roles import APPROVER_ACCESS_GROUP
from approvals.selectors.sources import source_route


def delegated_identities(user: User) -> tuple[set[str], set[str]]:
    """The emails and SSO groups of the approvers `user` stands in for now (one query)."""
    rows = (
        permissions.active_delegations_to(user)
        .filter(delegator__is_active=True)
        .values_list("delegator__email", "delegator__groups__name")
    )
    emails, groups = set(), set()
    for email, group in rows:
        if email:
            emails.add(email.lower())
        if group and group != APPROVER_ACCESS_GROUP:
            groups.add(group)
    return emails, groups


def assignment_match(emails: Iterable[str], groups: Iterable[str]) -> Q:
    """Assignments that name one of these people (by email, in any case) or one of these groups,
    as the (kind, value) index can look them up."""
    match = Q(kind=Assignment.Kind.GROUP, value__in=sorted(set(groups)))
    emails = sorted({email.lower() for email in emails if email})
    if emails:
        match |= Q(kind=Assignment.Kind.USER, value__in=emails)
    return match


def _assigned_to(user: User, groups: set[str] | None = None, delegated: tuple[set[str], set[str]] | None = None) -> Q:
    """Assigned to the user by email or to one of their groups, or to someone the user stands in
    for by an active delegation. `groups` (permissions.user_group_names) and `delegated`
    (delegated_identities): already looked up by the caller, else looked up here."""
    groups = permissions.user_group_names(user) if groups is None else groups
    emails, their_groups = delegated_identities(user) if delegated is None else delegated
    match = assignment_match([user.email, *emails], set(groups) | their_groups)
    return Q(pk__in=Assignment.objects.filter(match).values("request_id"))


def _voted_by(user: User) -> Q:
    """Requests the user already voted on (a quorum request stays pending after their vote)."""
    return Q(pk__in=Vote.objects.filter(user=user).values("request_id"))


def _waiting_for(
    user: User, groups: set[str] | None = None, delegated: tuple[set[str], set[str]] | None = None
) -> QuerySet[ApprovalRequest]:
    """permissions.decision_refusal's rule as a query, but for the deadline: pending, assigned to
    the user (or to whom they stand in for), not their own request, not voted on yet."""
    requests = ApprovalRequest.objects.filter(_assigned_to(user, groups, delegated), status=RequestStatus.PENDING)
    requests = requests.exclude(_voted_by(user))
    if user.email:
        requests = requests.exclude(requester_email__iexact=user.email)
    return requests


def inbox_for(user: User) -> QuerySet[ApprovalRequest]:
    """What this person may decide now: pending, assigned to them, not their own, not voted yet."""
    return _waiting_for(user).prefetch_related("assignments").order_by("-received_at", "-id")


def request_detail(public_id) -> ApprovalRequest | None:
    return (
        ApprovalRequest.objects.select_related("decided_by", "callback", "claimed_by")
        .prefetch_related(
            "assignments",
            Prefetch("votes", queryset=Vote.objects.select_related("user", "on_behalf_of").order_by("created_at")),
            Prefetch("info_messages", queryset=InfoMessage.objects.order_by("created_at", "id")),
            Prefetch("audit_events", queryset=AuditEvent.objects.select_related("actor").order_by("created_at", "id")),
        )
        .filter(public_id=public_id)
        .first()
    )


def request_status(public_id) -> ApprovalRequest | None:
    """What the result page polls (and permissions.can_view reads): no details, no token."""
    return (
        ApprovalRequest.objects.select_related("callback")
        .defer(*_STATUS_DEFERRED)
        .prefetch_related("assignments", "votes")
        .filter(public_id=public_id)
        .first()
    )


_STATUS_DEFERRED = (
    "details",
    "token_ciphertext",
    "token_fingerprint",
    "decision_comment",
    "callback__payload",
    "callback__last_error",
)


# ---------------------------------------------------------------------------
# The inbox (approvals/views/): tabs, search, filters
# ---------------------------------------------------------------------------
INBOX_TABS = {
    "waiting": "Waiting for me",
    "groups": "My groups",
    "decided": "Decided by me",
    "requested": "I requested",
}
# A pending request whose deadline is closer than this is marked "due soon".
DUE_SOON = timedelta(hours=24)
# A list row needs none of these; details can be 256 KiB per request, the token is a secret.
_LIST_DEFERRED = (
    "details",
    "token_ciphertext",
    "token_fingerprint",
    "decision_comment",
    "sqs_message_id",
    "callback__payload",
    "callback__last_error",
)


def inbox_tab(
    user: User, tab: str, *, groups: set[str] | None = None, delegated: tuple[set[str], set[str]] | None = None
) -> QuerySet[ApprovalRequest]:
    """One tab of the inbox, in its natural order (newest first; "decided" by the user's vote).

    - waiting: what the user may decide now (inbox_for's rule: pending, assigned, not theirs,
      not voted on yet);
    - groups: every request assigned to one of the user's groups, in any status;
    - decided: what the user voted on (a quorum may still be open); requested: what they asked for.
    `groups` is permissions.user_group_names(user), passed in when the caller already has it.
    """
    if tab not in INBOX_TABS:
        raise ValueError(f"unknown inbox tab {tab!r}")
    groups = permissions.user_group_names(user) if groups is None else groups
    email = (user.email or "").lower()
    requests = ApprovalRequest.objects.all()
    order = ("-received_at", "-id")
    if tab == "waiting":
        requests = _waiting_for(user, groups, delegated)
    elif tab == "groups":
        in_groups = Assignment.objects.filter(kind=Assignment.Kind.GROUP, value__in=sorted(groups))
        requests = requests.filter(pk__in=in_groups.values("request_id")) if groups else requests.none()
    elif tab == "decided":
        # Joined to the user's own vote (one per request, a unique constraint), newest first:
        # read from the votes' (user, created_at) index, a page costs the same at 100 or 10,000
        # votes (ordered by the request's decision time, every vote was read and sorted).
        # A vote the callback's re-check withdrew no longer counts (Vote.objects): nor here.
        requests = requests.filter(votes__user=user, votes__withdrawn_at__isnull=True).annotate(
            voted_at=F("votes__created_at")
        )
        order = ("-voted_at", "-id")
    else:
        # UPPER(requester_email) = UPPER(…): the btree index of migration 0008.
        requests = requests.filter(requester_email__iexact=email) if email else requests.none()
    return requests.select_related("decided_by", "callback", "claimed_by").defer(*_LIST_DEFERRED).order_by(*order)


# Tab counts stop here ("999+"): counting every row of a long list costs more than the page.
INBOX_COUNT_CAP = 999


def _capped_count(requests: QuerySet) -> int:
    """The number of rows, or INBOX_COUNT_CAP + 1 for "more than the cap" (a COUNT over LIMIT)."""
    return requests.order_by()[: INBOX_COUNT_CAP + 1].count()


def inbox_counts(
    user: User, *, groups: set[str] | None = None, delegated: tuple[set[str], set[str]] | None = None
) -> dict[str, int]:
    """How many requests each tab holds, each counted up to INBOX_COUNT_CAP (a larger number
    means "more than the cap"): a page's cost must not grow with the user's history."""
    groups = permissions.user_group_names(user) if groups is None else groups
    return {
        tab: _capped_count(inbox_tab(user, tab, groups=groups, delegated=delegated))
        for tab in ("waiting", "groups", "decided", "requested")
    }


class SearchText(Func):
    """The columns the inbox's search looks in, as one string: title, requester, state machine
    and state, a space between. A search word has no space, so it is found in this string
    exactly when it is found in one of the columns.

    On PostgreSQL a trigram index (migration 0006) covers `UPPER(<this>)`, the expression Django
    generates for `icontains`: one indexed lookup per word instead of four unindexed ones.
    The SQL must stay as the index has it (tests/test_inbox.py checks that the index is used).
    """

    template = "(%(expressions)s)"
    arg_joiner = " || ' ' || "
    output_field = TextField()

    def __init__(self):
        super().__init__(F("title"), F("requester_email"), F("state_machine_arn"), F("state_name"))


# A word pg_trgm can look up: three letters or digits in a row give it at least one trigram.
_TRIGRAMS = re.compile(r"[^\W_]{3}")
_LETTERS_AND_DIGITS = re.compile(r"[^\W_]+")


class WordsStartWith(Func):
    """True when each of `beginnings` (letters and digits) begins a word of SearchText, a word
    being a run of letters and digits: "42" finds "supplier 42" and "order 42420", not "1042".

    For search words too short for a trigram (one or two letters or digits): as substrings they
    would have to be looked for in every request of the list, 100 ms and more at 10,000 (docs/
    benchmarks.md); as word beginnings, PostgreSQL looks them up in a text-search index
    (migration 0009, which must have the same expression: tests/test_inbox.py checks that it
    is used). SQLite, without the index, asks the same of a regular expression.
    """

    output_field = BooleanField()

    def __init__(self, beginnings: list[str]):
        self.beginnings = beginnings
        super().__init__(SearchText())

    def as_sql(self, compiler, connection, **extra_context):
        raise NotSupportedError("the inbox's search runs on PostgreSQL or SQLite")

    def as_postgresql(self, compiler, connection, **extra_context):
        text, params = compiler.compile(self.source_expressions[0])
        words = f"to_tsvector('simple'::regconfig, regexp_replace({text}, '[^[:alnum:]]+', ' ', 'g'))"
        prefixes = " & ".join(f"{beginning}:*" for beginning in self.beginnings)  # letters and digits only
        return f"{words} @@ to_tsquery('simple'::regconfig, %s)", (*params, prefixes)

    def as_sqlite(self, compiler, connection, **extra_context):
        text, params = compiler.compile(self.source_expressions[0])
        # Django's SQLite backend defines REGEXP with Python's re; [\W_] is neither letter nor digit.
        pattern = "(?is)^" + "".join(rf"(?=(?:.*[\W_])?{re.escape(beginning)})" for beginning in self.beginnings)
        return f"{text} REGEXP %s", (*params, pattern)


def inbox_filter(
    requests: QuerySet[ApprovalRequest], *, search: str = "", state_machine: str = "", due: str = "", sort: str = ""
) -> QuerySet[ApprovalRequest]:
    """Narrow a tab: every search word must appear in the title, requester, state machine or
    state (a whole ARN finds its execution or state machine; a word without three letters or
    digits in a row must begin words there, see WordsStartWith; one without any letter or
    digit is left out); `due` is "overdue" or "soon" (pending only); `sort` "deadline" puts
    the closest deadline first (none last)."""
    for word in search.split()[:8]:
        if word.startswith("arn:"):
            requests = requests.filter(Q(execution_arn=word) | Q(state_machine_arn=word))
        elif _TRIGRAMS.search(word):
            requests = requests.alias(search_text=SearchText()).filter(search_text__icontains=word)
        elif beginnings := _LETTERS_AND_DIGITS.findall(word):
            requests = requests.filter(WordsStartWith(beginnings))
    if state_machine:
        requests = requests.filter(state_machine_arn=state_machine)
    now = timezone.now()
    if due == "overdue":
        requests = requests.filter(status=RequestStatus.PENDING, deadline__lte=now)
    elif due == "soon":
        requests = requests.filter(status=RequestStatus.PENDING, deadline__gt=now, deadline__lte=now + DUE_SOON)
    if sort == "deadline":
        requests = requests.order_by(F("deadline").asc(nulls_last=True), "-received_at", "-id")
    return requests


def overdue_pending_request_ids(limit: int = 500) -> list[int]:
    return list(
        ApprovalRequest.objects.filter(status=RequestStatus.PENDING, deadline__lte=timezone.now())
        .order_by("deadline")
        .values_list("pk", flat=True)[:limit]
    )


def heartbeat_due_request_ids(limit: int = 500) -> list[int]:
    """Pending requests whose task has HeartbeatSeconds and whose next heartbeat is due.

    Sent at a third of the interval, so one missed sweep still leaves a margin — but never later
    than two sweeps before the interval ends: the sweep runs every HEARTBEAT_SWEEP_SECONDS, so a
    heartbeat left for the next one arrives up to that much later (a 40 s interval's third, 13 s,
    plus a 30 s sweep is 43 s: timed out). An interval under two sweeps gets one every sweep. The
    due time is computed here rather than in SQL: interval arithmetic differs between PostgreSQL
    and SQLite, and only waiting requests with heartbeats are read.

    The first one counts from when the message was sent (message_sent_at, never later than
    received_at), as Step Functions' HeartbeatSeconds does: a message that waited in the queue
    has used part of its interval, and may need its heartbeat at once.
    """
    now = timezone.now()
    sweep = settings.HEARTBEAT_SWEEP_SECONDS
    waiting = (
        ApprovalRequest.objects.filter(status=RequestStatus.PENDING, heartbeat_seconds__isnull=False)
        .annotate(last=Coalesce("last_heartbeat_at", "message_sent_at", "received_at"))
        .values_list("pk", "last", "heartbeat_seconds")
    )
    due = []
    for pk, last, seconds in waiting.iterator():
        at = last + timedelta(seconds=min(seconds / 3, max(0, seconds - 2 * sweep)))
        if at <= now:
            due.append((at, pk))
    return [pk for _, pk in sorted(due)[:limit]]


def stale_consumers(max_age_seconds: int) -> list[ConsumerStatus]:
    """Consumers that have not completed a poll recently (a stuck or dead worker)."""
    cutoff = timezone.now() - timedelta(seconds=max_age_seconds)
    return list(ConsumerStatus.objects.filter(Q(last_poll_at__lt=cutoff) | Q(last_poll_at__isnull=True)))


# ---------------------------------------------------------------------------
# The admin
# ---------------------------------------------------------------------------
def admin_requests_for(user: User) -> QuerySet[ApprovalRequest]:
    """The approval requests `user` sees in the admin, with the assignees and the callback
    prefetched (the status column's words, delivery.request_status_label, read whether it
    exists: no query per row), the callback's large fields deferred.

    Prefetched, not joined: the prefetch reads the callbacks of the page's rows once the page
    is chosen. Joined, a search's every match was joined before the sort picked the page: at
    100,000 requests PostgreSQL hashed all 75,000 callbacks for a search of 1,100 matches.

    Admins (superusers) see all. Anyone else sees exactly the requests they may decide now or
    have decided: permissions.decision_refusal's rule as a query (assigned, not their own
    request, pending, deadline not passed; an inactive user may decide nothing).
    """
    queryset = ApprovalRequest.objects.prefetch_related(
        "assignments", Prefetch("callback", queryset=Callback.objects.defer("payload", "last_error"))
    )
    if user.is_superuser:
        return queryset
    decided = Vote.objects.filter(user=user.pk).order_by().values("request_id")
    if not user.is_active:
        return queryset.filter(pk__in=decided)
    may_decide = _waiting_for(user).filter(Q(deadline__isnull=True) | Q(deadline__gt=timezone.now()))
    # A union of two indexed lookups, not an OR over the table (which would read every row).
    return queryset.filter(pk__in=may_decide.order_by().values("pk").union(decided))


def request_ids_matching(term: str) -> QuerySet:
    """Ids of requests the admin's search box finds: one indexed lookup per kind of match.

    Title, requester or execution ARN containing the term (trigram indexes on PostgreSQL: an
    execution is found by its name, the ARN's last part), an approver's email or a group
    exactly, an execution ARN exactly, or the request's id.

    A term that starts like an ARN is looked up in the ARNs from their start instead (btree,
    migration 0027): the same rows, as a name may not contain ':' and so "arn:" is only ever at
    the start, but the trigrams of a whole ARN are common to every row, and the trigram index
    read all of their entries for one match.
    """
    term = term.strip()
    requests = ApprovalRequest.objects.order_by()
    by_arn = (
        requests.filter(execution_arn__istartswith=term)
        if term[:4].lower() == "arn:"
        else requests.filter(execution_arn__icontains=term)
    )
    parts = [
        requests.filter(title__icontains=term).values("pk"),
        requests.filter(requester_email__icontains=term).values("pk"),
        requests.filter(execution_arn=term).values("pk"),
        by_arn.values("pk"),
        Assignment.objects.filter(
            Q(kind=Assignment.Kind.USER, value=term.lower()) | Q(kind=Assignment.Kind.GROUP, value=term)
        )
        .order_by()
        .values("request_id"),
    ]
    with contextlib.suppress(ValueError):
        parts.append(requests.filter(public_id=uuid.UUID(term)).values("pk"))
    return parts[0].union(*parts[1:])


# Up to this many matches, the admin's search hands the page their ids as values (see below).
SEARCH_IDS_LIMIT = 5_000
# SQLite has no arrays: the ids are as many parameters, in each of the drill-down's (up to 31)
# probes too, and SQLite allows 32,766 parameters in a statement.
SQLITE_SEARCH_IDS_LIMIT = 500


def admin_search(queryset: QuerySet[ApprovalRequest], term: str) -> QuerySet[ApprovalRequest]:
    """`queryset` narrowed to the requests the admin's search box finds (request_ids_matching).

    The matching ids are read first (index lookups, at most SEARCH_IDS_LIMIT + 1 of them) and
    the list is then filtered by those values: PostgreSQL sees how few they are and fetches
    them by primary key. As a sub-select (`id IN (SELECT … UNION …)`) its estimate made it read
    the whole table instead, for any number of matches (124-211 ms at 100,000 requests for 2,000
    matches, against 16 ms by key). One more query, at every size. More matches than the limit
    (a term in most titles): filtered by the sub-select, as before.
    """
    matching = request_ids_matching(term)
    limit = SEARCH_IDS_LIMIT if connection.vendor == "postgresql" else SQLITE_SEARCH_IDS_LIMIT
    ids = [row["pk"] for row in matching[: limit + 1]]
    if len(ids) > limit:
        return queryset.filter(pk__in=matching)
    if connection.vendor != "postgresql":
        return queryset.filter(pk__in=ids)
    # One array parameter, `id = ANY(%s::bigint[])`: as `IN (%s, %s, …)` each id is a parameter of every
    # statement that filters by them, the drill-down's probes too (31 × 5,000 would pass
    # PostgreSQL's limit of 65,535 parameters).
    # The array is passed as its text ('{1,2,3}'), which psycopg sends as it is: as a list,
    # psycopg dumped all of its ids again for each statement (the count, the page, the
    # drill-down's probes), 5 % of a search page with 1,100 matches.
    column = f"{connection.ops.quote_name(ApprovalRequest._meta.db_table)}.{connection.ops.quote_name('id')}"
    array = "{" + ",".join(str(pk) for pk in ids) + "}"
    kind = ApprovalRequest._meta.pk.db_type(connection)
    # (RawSQL: the SQL is our own quoted column name and the key's type; the ids are a parameter.)
    return queryset.filter(RawSQL(f"{column} = ANY(%s::{kind}[])", (array,), output_field=BooleanField()))  # noqa: S611


def _distinct_values(model, column: str, *, kind: str | None = None) -> list[str]:
    """The distinct values of an indexed column, by a loose index scan.

    One index probe per distinct value instead of reading every row (PostgreSQL has no skip
    scan before 18): the admin's filters list a handful of values out of millions of rows.
    `kind` narrows to Assignment rows of one kind, matching the (kind, value) index.
    """
    table = connection.ops.quote_name(model._meta.db_table)
    col = connection.ops.quote_name(column)
    where, params = ("", [])
    if kind is not None:
        where, params = (f" AND {connection.ops.quote_name('kind')} = %s", [kind])
    sql = (
        f"WITH RECURSIVE walk(v) AS ("  # noqa: S608 - identifiers quoted, values are parameters
        f" SELECT MIN({col}) FROM {table} WHERE {col} > ''{where}"
        f" UNION ALL"
        f" SELECT (SELECT MIN({col}) FROM {table} WHERE {col} > walk.v{where}) FROM walk WHERE walk.v IS NOT NULL"
        f") SELECT v FROM walk WHERE v IS NOT NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params + params)
        return [row[0] for row in cursor.fetchall()]


def state_machine_arns() -> list[str]:
    """The state machines that sent requests, for the admin's filter."""
    return _distinct_values(ApprovalRequest, "state_machine_arn")


def inbox_state_machine_arns(
    user: User, *, groups: set[str] | None = None, delegated: tuple[set[str], set[str]] | None = None
) -> list[str]:
    """The state machines of requests `user` may see, for the inbox's filter: the name of a
    state machine says what a company automates, so nobody learns of one they have no request of.
    `groups` and `delegated` as for inbox_tab, when the caller already has them."""
    if user.is_superuser:
        return state_machine_arns()
    rows = (
        ApprovalRequest.objects.filter(pk__in=_visible_ids(user, groups, delegated))
        .exclude(state_machine_arn="")
        .order_by("state_machine_arn")
        .values_list("state_machine_arn", flat=True)
        .distinct()
    )
    return list(rows)


def assigned_group_names() -> list[str]:
    """The groups requests were ever assigned to, for the admin's filter."""
    return _distinct_values(Assignment, "value", kind=Assignment.Kind.GROUP)


def audit_actions() -> list[str]:
    return _distinct_values(AuditEvent, "action")


# ---------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------
def _most_specific(model, *, state_machine_arn: str, state_name: str, usable=None):
    """The most specific enabled row of a RoutingRule-like model for this state machine and state."""
    # A blank field in a rule matches anything; a blank field in the message matches only "any".
    machine = Q(state_machine_arn="")
    if state_machine_arn:
        machine |= Q(state_machine_arn=state_machine_arn)
    state = Q(state_name="")
    if state_name:
        state |= Q(state_name=state_name)
    candidates = [row for row in model.objects.filter(machine, state, enabled=True) if usable is None or usable(row)]
    candidates.sort(key=lambda row: (-row.specificity, -row.priority, row.pk))
    return candidates[0] if candidates else None


def routing_rule_for(*, state_machine_arn: str, state_name: str) -> RoutingRule | None:
    """The most specific enabled rule matching this state machine and state, if any."""
    return _most_specific(
        RoutingRule,
        state_machine_arn=state_machine_arn,
        state_name=state_name,
        usable=lambda rule: rule.users or rule.groups,
    )


def approver_trust_for(*, state_machine_arn: str, state_name: str) -> ApproverTrust | None:
    """The admins' approver trust setting for this state machine and state (matched like routing);
    None: nobody configured it, and approvals.trust treats it as routing only."""
    return _most_specific(ApproverTrust, state_machine_arn=state_machine_arn, state_name=state_name)


def approval_policy_for(*, state_machine_arn: str, state_name: str) -> ApprovalPolicy | None:
    """The admins' default policy for this state machine and state, if any (matched like routing)."""
    return _most_specific(ApprovalPolicy, state_machine_arn=state_machine_arn, state_name=state_name)


# ---------------------------------------------------------------------------
# Executions: a Map or Parallel state asks for several approvals at once
# ---------------------------------------------------------------------------
# The request page lists at most this many other requests of its execution.
MAX_EXECUTION_SIBLINGS = 50


def _visible_to(user: User, groups: set[str] | None = None, delegated: tuple[set[str], set[str]] | None = None) -> Q:
    """permissions.can_view's rule as a query: assigned to them (or to whom they stand in for),
    requested by them, decided or voted on by them; admins see everything."""
    if user.is_superuser:
        return Q()
    visible = _assigned_to(user, groups, delegated) | _voted_by(user) | Q(decided_by=user)
    if user.email:
        visible |= Q(requester_email__iexact=user.email)
    return visible


def _visible_ids(user: User, groups: set[str] | None = None, delegated: tuple[set[str], set[str]] | None = None):
    """_visible_to's rows for a non-admin, as a union of one indexed lookup per way of seeing
    a request. As an OR of the four over the table, PostgreSQL read every request to test each
    (a sequential scan: 150-220 ms at 100,000 requests, however few were the user's)."""
    groups = permissions.user_group_names(user) if groups is None else groups
    emails, their_groups = delegated_identities(user) if delegated is None else delegated
    match = assignment_match([user.email, *emails], set(groups) | their_groups)
    parts = [
        ApprovalRequest.objects.order_by().filter(decided_by=user).values("pk"),
        Assignment.objects.order_by().filter(match).values("request_id"),
        Vote.objects.order_by().filter(user=user).values("request_id"),
    ]
    if user.email:
        # UPPER(requester_email) = UPPER(…): the btree index of migration 0008.
        parts.append(ApprovalRequest.objects.order_by().filter(requester_email__iexact=user.email).values("pk"))
    return parts[0].union(*parts[1:])


def execution_siblings(request: ApprovalRequest, user: User) -> tuple[list[ApprovalRequest], bool]:
    """The other requests of `request`'s execution that `user` may see, oldest first, at most
    MAX_EXECUTION_SIBLINGS; and whether there are more."""
    if not request.execution_arn:
        return [], False
    rows = list(
        ApprovalRequest.objects.filter(_visible_to(user), execution_arn=request.execution_arn)
        .exclude(pk=request.pk)
        .select_related("callback")
        # decided_by and whether a callback exists: the status's words (delivery.request_status_label).
        .only("public_id", "title", "state_name", "status", "received_at", "deadline", "decided_by", "callback__id")
        .order_by("received_at", "id")[: MAX_EXECUTION_SIBLINGS + 1]
    )
    return rows[:MAX_EXECUTION_SIBLINGS], len(rows) > MAX_EXECUTION_SIBLINGS


def execution_counts(within: QuerySet[ApprovalRequest], execution_arns: Iterable[str]) -> dict[str, int]:
    """How many requests of `within` (an inbox tab, before search and filters) each of these
    executions has: one grouped query on the execution_arn index for the ARNs of a page, none
    when the page has none. (A correlated count in the list's own query would also run for every
    row an OFFSET skips.)"""
    arns = sorted({arn for arn in execution_arns if arn})
    if not arns:
        return {}
    counted = within.filter(execution_arn__in=arns).order_by().values("execution_arn").annotate(count=Count("pk"))
    return {row["execution_arn"]: row["count"] for row in counted}


def closed_token_request_ids(*, limit: int = 1000) -> list[int]:
    """Requests closed more than TOKEN_RETENTION_DAYS ago that still hold their task token.

    A request whose callback may still be sent (pending, sending, retrying) keeps its token.
    """
    if settings.TOKEN_RETENTION_DAYS <= 0:
        return []
    cutoff = timezone.now() - timedelta(days=settings.TOKEN_RETENTION_DAYS)
    return list(
        ApprovalRequest.objects.exclude(status=RequestStatus.PENDING)
        .exclude(token_ciphertext=tokens.ERASED)
        .filter(decided_at__lte=cutoff)
        .exclude(callback__status__in=CALLBACK_IN_FLIGHT)
        .order_by("decided_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )


def expired_ingest_message_ids(*, limit: int = 1000) -> list[int]:
    """Ingest errors last seen more than TOKEN_RETENTION_DAYS ago that still keep their message
    (it holds a task token, long refused by Step Functions by then)."""
    if settings.TOKEN_RETENTION_DAYS <= 0:
        return []
    cutoff = timezone.now() - timedelta(days=settings.TOKEN_RETENTION_DAYS)
    return list(
        IngestError.objects.exclude(message_ciphertext="")
        .filter(last_seen_at__lte=cutoff)
        .order_by("last_seen_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )


# ---------------------------------------------------------------------------
# Workflows that may no longer exist (approvals/services/workflow_gone.py)
# ---------------------------------------------------------------------------
def waiting_executions() -> list[tuple[int, str, AwsRoute | None]]:
    """(request id, execution ARN, where to ask about it) of every waiting request whose message
    named its execution: the execution's region, as its source's role (selectors/sources.py)."""
    requests = (
        ApprovalRequest.objects.filter(status=RequestStatus.PENDING)
        .exclude(execution_arn="")
        .select_related("source")
        .only("pk", "execution_arn", "source")
        .order_by("pk")
    )
    return [
        (request.pk, request.execution_arn, source_route(request.source, execution_arn=request.execution_arn))
        for request in requests
    ]
