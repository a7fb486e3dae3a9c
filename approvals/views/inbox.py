"""Signing in and the inbox: what waits for the signed-in user, by tab, search and filters."""

from django.contrib.auth.decorators import login_required
from django.http import HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_GET

from approvals import permissions, selectors
from approvals.execution_groups import mark_execution_groups
from approvals.forms.requests import InboxFilterForm
from approvals.paginators import seek_page
from approvals.selectors import delegations as delegation_selectors
from approvals.selectors import sources as source_selectors


def _safe_next(request, default: str = "/") -> str:
    target = request.GET.get("next", "")
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return default


@require_GET
def signin(request):
    next_url = _safe_next(request)
    if request.user.is_authenticated:
        return HttpResponseRedirect(next_url)
    sso_url = reverse("oidc_authentication_init") + "?" + urlencode({"next": next_url})
    return render(request, "approvals/signin.html", {"sso_url": sso_url})


def admin_login(request):
    """The admin has no password form: it signs in through SSO."""
    if request.user.is_authenticated and not request.user.is_staff:
        return render(request, "approvals/error.html", {"message": "The admin is for portal admins."}, status=403)
    return redirect(reverse("signin") + "?" + urlencode({"next": _safe_next(request, "/admin/")}))


INBOX_PAGE_SIZE = 25
INBOX_SEARCH_COUNT_LIMIT = 50


@login_required
@require_GET
def inbox(request):
    filters = InboxFilterForm(request.GET, tabs=selectors.INBOX_TABS)
    groups = permissions.user_group_names(request.user)
    delegated = selectors.delegated_identities(request.user)
    counts = selectors.inbox_counts(request.user, groups=groups, delegated=delegated)
    tab = filters.value("tab") or _landing_tab(counts)
    requests = selectors.inbox_tab(request.user, tab, groups=groups, delegated=delegated)
    if tab == "waiting":  # rows that reach the user through a delegation say for whom
        requests = delegation_selectors.with_delegated_for(requests, request.user, groups=groups, delegated=delegated)
    narrowed = {name: filters.value(name) for name in ("q", "machine", "due", "sort", "source")}
    listed = selectors.inbox_filter(
        requests,
        search=narrowed["q"],
        state_machine=narrowed["machine"],
        due=narrowed["due"],
        sort=narrowed["sort"],
    )
    listed = source_selectors.requests_of_source(listed, narrowed["source"])
    filtering = any(narrowed[name] for name in ("q", "machine", "due", "source"))
    page = seek_page(
        listed,
        per_page=INBOX_PAGE_SIZE,
        after=request.GET.get("after", ""),
        before=request.GET.get("before", ""),
        page=request.GET.get("page", ""),
        # Unfiltered: the tab's count, the same rows (don't count them twice). A search is
        # counted up to a limit ("more than 50"); the filters' indexes make their count cheap.
        count=None if filtering else min(counts[tab], selectors.INBOX_COUNT_CAP),
        capped=not filtering and counts[tab] > selectors.INBOX_COUNT_CAP,
        count_limit=INBOX_SEARCH_COUNT_LIMIT if narrowed["q"] else None,
    )
    page.object_list = mark_execution_groups(
        page.object_list, selectors.execution_counts(requests, [row.execution_arn for row in page.object_list])
    )
    return render(
        request,
        "approvals/inbox.html",
        {
            "page": page,
            "tab": tab,
            "tabs": [(key, label, _count_label(counts[key])) for key, label in selectors.INBOX_TABS.items()],
            "filters": filters,
            "narrowed": narrowed,
            "filtering": filtering,
            # The state machines of the requests this user may see (admins: all).
            "state_machines": selectors.inbox_state_machine_arns(request.user, groups=groups, delegated=delegated),
            # Approval sources (accounts, regions): none, and the filter is not shown.
            "sources": source_selectors.source_choices(),
        },
    )


def _landing_tab(counts: dict[str, int]) -> str:
    """The tab the inbox opens on: "Waiting for me", unless nothing waits and the user has
    requested something (a requester, not an approver, follows their own requests)."""
    return "requested" if not counts["waiting"] and counts["requested"] else "waiting"


def _count_label(count: int) -> str:
    return f"{selectors.INBOX_COUNT_CAP}+" if count > selectors.INBOX_COUNT_CAP else str(count)
