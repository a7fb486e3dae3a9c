from django.contrib import admin
from django.urls import include, path

from approvals import ops_views, views
from approvals.auth import PortalLogoutView

urlpatterns = [
    # Operations: probes, Prometheus, and the admin's dashboard (before the admin's own URLs).
    path("healthz", ops_views.healthz, name="healthz"),
    path("readyz", ops_views.readyz, name="readyz"),
    path("metrics", ops_views.metrics_view, name="metrics"),
    path("admin/dashboard/", ops_views.ops_dashboard, name="ops-dashboard"),
    # The admin signs in through SSO like everything else.
    path("admin/login/", views.admin_login),
    path("admin/logout/", PortalLogoutView.as_view()),  # the admin's "Log out" ends the IdP session too
    path("admin/", admin.site.urls),
    path("oidc/logout/", PortalLogoutView.as_view(), name="oidc_logout"),  # before the library's
    path("oidc/", include("mozilla_django_oidc.urls")),
    path("scim/v2/", include("approvals.scim.urls")),  # provisioning from the company's IdP (docs/scim.md)
    path("", include("approvals.urls")),
]
