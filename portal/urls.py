from django.contrib import admin
from django.urls import include, path

from approvals import views

urlpatterns = [
    # The admin signs in through SSO like everything else.
    path("admin/login/", views.admin_login),
    path("admin/", admin.site.urls),
    path("oidc/", include("mozilla_django_oidc.urls")),
    path("", include("approvals.urls")),
]
