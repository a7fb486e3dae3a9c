from django.urls import path

from approvals.views import claims, conversations, delegations, inbox, preferences, requests, slack, slack_binding

urlpatterns = [
    path("", inbox.inbox, name="inbox"),
    path("signin/", inbox.signin, name="signin"),
    path("requests/<uuid:public_id>/", requests.request_detail, name="request-detail"),
    path("requests/<uuid:public_id>/confirm/", requests.confirm_decision, name="request-confirm"),
    path("requests/<uuid:public_id>/decide/", requests.decide, name="request-decide"),
    path("requests/<uuid:public_id>/result/", requests.decision_result, name="request-result"),
    path("requests/<uuid:public_id>/details/", requests.request_details, name="request-details"),
    path("requests/<uuid:public_id>/status/", requests.request_status, name="request-status"),
    path("requests/<uuid:public_id>/ask/", conversations.ask, name="request-ask"),
    path("requests/<uuid:public_id>/answer/", conversations.answer, name="request-answer"),
    path("requests/<uuid:public_id>/claim/", claims.claim, name="request-claim"),
    path("requests/<uuid:public_id>/unclaim/", claims.unclaim, name="request-unclaim"),
    path("links/<str:token>/", requests.decision_link, name="decision-link"),
    path("preferences/", preferences.preferences, name="notification-preferences"),
    path("out-of-office/", delegations.out_of_office, name="out-of-office"),
    path("out-of-office/<int:delegation_id>/revoke/", delegations.revoke, name="delegation-revoke"),
    path("slack/interactivity/", slack.interactivity, name="slack-interactivity"),
    path("slack/link/<str:token>/", slack_binding.bind, name="slack-bind"),
]
