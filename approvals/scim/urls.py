"""Mounted at /scim/v2/ (portal/urls.py)."""

from django.urls import path, re_path

from approvals.scim import views

urlpatterns = [
    path("", views.not_found, name="scim-root"),
    path(".search", views.search_everything),
    path("ServiceProviderConfig", views.service_provider_config),
    path("ResourceTypes", views.resource_types),
    path("ResourceTypes/<str:name>", views.resource_types),
    path("Schemas", views.schemas),
    path("Schemas/<str:urn>", views.schemas),
    path("Users", views.users),
    path("Users/.search", views.users_search),
    path("Users/<str:scim_id>", views.user),
    path("Groups", views.groups),
    path("Groups/.search", views.groups_search),
    path("Groups/<str:scim_id>", views.group),
    re_path(r"^(?P<rest>.*)$", views.not_found),
]
