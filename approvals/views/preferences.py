"""The signed-in user's notification preferences: a form, one service call."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from approvals.forms.preferences import NotificationPreferenceForm
from approvals.models import NotificationPreference
from approvals.notifications import slack
from approvals.services import notifications as services


@login_required
def preferences(request):
    current = NotificationPreference.objects.filter(user=request.user).first() or NotificationPreference()
    form = NotificationPreferenceForm(request.POST or None, instance=current, slack_available=slack.enabled())
    if request.method == "POST" and form.is_valid():
        services.notification_preference_update(user=request.user, actor=request.user, **form.cleaned_data)
        messages.success(request, "Your notification preferences are saved.")
        return redirect("notification-preferences")
    return render(
        request,
        "approvals/preferences.html",
        {
            "form": form,
            "slack_enabled": slack.enabled(),
            "digest_min_pending": settings.DIGEST_MIN_PENDING,
        },
    )
