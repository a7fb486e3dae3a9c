from django.contrib import admin
from django.urls import include, path

from approvals.auth import PortalLogoutView
from approvals.views import inbox, ops

urlpatterns = [
    # Operations: probes, Prometheus, and the admin's dashboard (before the admin's own URLs).
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics_view, name="metrics"),
    path("admin/dashboard/", ops.ops_dashboard, name="ops-dashboard"),
    # The admin signs in through SSO like everything else.
    path("admin/login/", inbox.admin_login),
    path("admin/logout/", PortalLogoutView.as_view()),  # the admin's "Log out" ends the IdP session too
    path("admin/", admin.site.urls),
    path("oidc/logout/", PortalLogoutView.as_view(), name="oidc_logout"),  # before the library's
    path("oidc/", include("mozilla_django_oidc.urls")),
    path("api/", include("approvals.api.urls")),  # the REST API and its schema (docs/api.md)
    path("scim/v2/", include("approvals.scim.urls")),  # provisioning from the company's IdP (docs/scim.md)
    path("", include("approvals.urls")),
]
