from django import forms

from approvals.models import NotificationPreference


class NotificationPreferenceForm(forms.ModelForm):
    """`slack_available=False` (Slack not set up): the Slack box is shown off and cannot be
    changed, and saving keeps the stored choice for the day Slack is set up."""

    class Meta:
        model = NotificationPreference
        fields = ["email_enabled", "slack_enabled", "digest_enabled"]
        labels = {
            "email_enabled": "Email me about requests that wait for me, and about my own requests' outcome",
            "slack_enabled": "Send me Slack messages with Approve / Reject buttons",
            "digest_enabled": "Send me a daily digest when many requests wait for me",
        }

    def __init__(self, *args, slack_available: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if not slack_available:
            field = self.fields["slack_enabled"]
            field.disabled = True  # a posted value is ignored
            field.widget.attrs["aria-describedby"] = "slack-not-set-up"
            self.initial["slack_enabled"] = False  # shown off: no Slack message is sent

    def clean(self):
        cleaned = super().clean()
        if self.fields["slack_enabled"].disabled:
            cleaned["slack_enabled"] = self.instance.slack_enabled
        return cleaned
