"""Operators' endpoints: /healthz, /readyz, /metrics, and the admin's dashboard page.

The first three need no sign-in (probes and Prometheus have no session) and are exempt from
the OIDC session refresh and the HTTPS redirect (settings, "Operations"). /metrics and the
error details of /readyz answer only a scraper: METRICS_TOKEN or METRICS_ALLOWED_IPS.
"""

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from approvals.ops import charts as ops_charts
from approvals.ops import health, metrics
from approvals.selectors import ops as ops_selectors
from approvals.selectors import sources as source_selectors


def _is_scraper(request) -> bool:
    return metrics.scrape_allowed(
        remote_addr=request.META.get("REMOTE_ADDR", ""), authorization=request.headers.get("Authorization", "")
    )


@never_cache
@require_GET
def healthz(request):
    """Liveness: the process answers. Nothing else is checked (a restart would not fix it)."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request):
    """Readiness: every dependency, each with its verdict; 503 naming what failed."""
    results = health.last_readiness.results()
    required = set(settings.READYZ_REQUIRED_CHECKS)
    failed = [result.name for result in results if not result.ok and result.name in required]
    with_detail = _is_scraper(request)
    body = {
        "status": "fail" if failed else "ok",
        "failed": failed,
        "checks": {
            result.name: result.as_json(with_detail=with_detail, required=result.name in required) for result in results
        },
    }
    return JsonResponse(body, status=503 if failed else 200)


@never_cache
@require_GET
def metrics_view(request):
    if not _is_scraper(request):
        return HttpResponse(
            "metrics: not allowed from this address without the token\n", status=403, content_type="text/plain"
        )
    return HttpResponse(metrics.web_exposition(), content_type=metrics.CONTENT_TYPE)


@staff_member_required
@require_GET
def ops_dashboard(request):
    """Counts by status, decision times per state machine, failing callbacks, consumers."""
    # Approvers are staff too (approvals/roles.py), but this page shows every request: admins only.
    if not request.user.has_perm("approvals.view_callback"):
        raise PermissionDenied("The dashboard is for portal admins.")
    now = timezone.now()
    counts = ops_selectors.request_status_counts()
    per_day = ops_selectors.decisions_per_day(30, now=now)
    context = {
        **admin.site.each_context(request),
        "title": "Operations dashboard",
        "now": now,
        "status_counts": counts,
        "total_requests": sum(counts.values()),
        "decision_times": [
            {
                "name": metrics.state_machine_label(row.state_machine_arn),
                "arn": row.state_machine_arn,
                "median_7d": ops_charts.duration_text(row.median_7d),
                "decided_7d": row.decided_7d,
                "median_30d": ops_charts.duration_text(row.median_30d),
                "decided_30d": row.decided_30d,
            }
            for row in ops_selectors.decision_time_medians(now=now)
        ],
        "decisions_chart": ops_charts.decisions_bar_chart(per_day),
        "decisions_30d": sum(approved + rejected for _, approved, rejected in per_day),
        "failing_callbacks": ops_selectors.failing_callbacks(),
        "callback_counts": ops_selectors.callback_status_counts(),
        "open_ingest_errors": ops_selectors.open_ingest_error_count(),
        "consumers": ops_selectors.consumers(),
        "consumer_max_age": settings.READYZ_CONSUMER_MAX_AGE_SECONDS,
        "sources": source_selectors.source_flows(),
    }
    return render(request, "approvals/ops_dashboard.html", context)
