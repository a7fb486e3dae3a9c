"""/api/ (mounted in portal/urls.py): v1 resources, the OpenAPI schema and its UIs."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from approvals.api import views

v1 = [
    path("inbox/", views.InboxView.as_view(), name="inbox"),
    path("requests/<uuid:public_id>/", views.RequestView.as_view(), name="request"),
    path("requests/<uuid:public_id>/decision/", views.DecisionView.as_view(), name="decision"),
    path("requests/<uuid:public_id>/claim/", views.ClaimView.as_view(), name="claim"),
    path("requests/<uuid:public_id>/questions/", views.QuestionView.as_view(), name="questions"),
    path("requests/<uuid:public_id>/answers/", views.AnswerView.as_view(), name="answers"),
    path("requests/<uuid:public_id>/reassign/", views.ReassignView.as_view(), name="reassign"),
    path("requests/<uuid:public_id>/cancel/", views.CancelView.as_view(), name="cancel"),
    path("delegations/", views.DelegationsView.as_view(), name="delegations"),
    path("delegations/<int:delegation_id>/", views.DelegationView.as_view(), name="delegation"),
    path("callbacks/<int:callback_id>/retry/", views.CallbackRetryView.as_view(), name="callback-retry"),
    path("ingest-errors/", views.IngestErrorsView.as_view(), name="ingest-errors"),
    path(
        "ingest-errors/<int:ingest_error_id>/replay/",
        views.IngestErrorActionView.as_view(action="replay"),
        name="ingest-error-replay",
    ),
    path(
        "ingest-errors/<int:ingest_error_id>/discard/",
        views.IngestErrorActionView.as_view(action="discard"),
        name="ingest-error-discard",
    ),
    path("audit-events/", views.AuditEventsView.as_view(), name="audit-events"),
]

urlpatterns = [
    path("v1/", include((v1, "api"))),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    # Anything else under /api/ (an id that is no id, a typo) is a problem document too, not a page.
    re_path(r"", views.no_such_resource),
]
