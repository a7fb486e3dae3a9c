from django import forms

from approvals.models import NotificationPreference


class NotificationPreferenceForm(forms.ModelForm):
    class Meta:
        model = NotificationPreference
        fields = ["email_enabled", "slack_enabled", "digest_enabled"]
        labels = {
            "email_enabled": "Email me about requests that wait for me, and about my own requests' outcome",
            "slack_enabled": "Send me Slack messages with Approve / Reject buttons",
            "digest_enabled": "Send me a daily digest when many requests wait for me",
        }
