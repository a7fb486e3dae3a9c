"""System checks for the notification settings (registered from approvals/checks.py)."""

from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def notification_settings_check(app_configs, **kwargs):
    messages = []
    if settings.SLACK_BOT_TOKEN and not settings.SLACK_SIGNING_SECRET:
        messages.append(
            Error(
                "SLACK_BOT_TOKEN is set but SLACK_SIGNING_SECRET is not: Slack's button clicks cannot be verified",
                id="approvals.E101",
            )
        )
    if settings.SLACK_BOT_TOKEN and not settings.SLACK_TEAM_ID:
        messages.append(
            Error(
                "SLACK_BOT_TOKEN is set but SLACK_TEAM_ID is not: clicks from any workspace would be refused",
                id="approvals.E103",
            )
        )
    if settings.SLACK_GROUP_CHANNELS and not settings.SLACK_BOT_TOKEN:
        messages.append(
            Warning("SLACK_GROUP_CHANNELS is set but Slack is off (no SLACK_BOT_TOKEN)", id="approvals.W101")
        )
    if settings.NOTIFICATION_MAX_ATTEMPTS < 1:
        messages.append(Error("NOTIFICATION_MAX_ATTEMPTS must be at least 1", id="approvals.E102"))
    return messages
