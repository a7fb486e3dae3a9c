from django.urls import path

from approvals import claim_views, conversation_views, delegation_views, slack_binding_views, slack_views, views
from approvals.notifications import views as notification_views

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("signin/", views.signin, name="signin"),
    path("requests/<uuid:public_id>/", views.request_detail, name="request-detail"),
    path("requests/<uuid:public_id>/confirm/", views.confirm_decision, name="request-confirm"),
    path("requests/<uuid:public_id>/decide/", views.decide, name="request-decide"),
    path("requests/<uuid:public_id>/result/", views.decision_result, name="request-result"),
    path("requests/<uuid:public_id>/details/", views.request_details, name="request-details"),
    path("requests/<uuid:public_id>/status/", views.request_status, name="request-status"),
    path("requests/<uuid:public_id>/ask/", conversation_views.ask, name="request-ask"),
    path("requests/<uuid:public_id>/answer/", conversation_views.answer, name="request-answer"),
    path("requests/<uuid:public_id>/claim/", claim_views.claim, name="request-claim"),
    path("requests/<uuid:public_id>/unclaim/", claim_views.unclaim, name="request-unclaim"),
    path("links/<str:token>/", views.decision_link, name="decision-link"),
    path("preferences/", notification_views.preferences, name="notification-preferences"),
    path("out-of-office/", delegation_views.out_of_office, name="out-of-office"),
    path("out-of-office/<int:delegation_id>/revoke/", delegation_views.revoke, name="delegation-revoke"),
    path("slack/interactivity/", slack_views.interactivity, name="slack-interactivity"),
    path("slack/link/<str:token>/", slack_binding_views.bind, name="slack-bind"),
]
