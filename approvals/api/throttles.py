"""Throttling per caller: one budget per person, another per service account (portal/settings.py,
API_THROTTLE_USER / API_THROTTLE_SERVICE_ACCOUNT)."""

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from approvals.models import SERVICE_USERNAME_PREFIX


class CallerRateThrottle(SimpleRateThrottle):
    """A person and a service account each have their own rate, keyed by their user id."""

    scope = "user"

    def allow_request(self, request, view):
        self.scope = "service_account" if request.user.username.startswith(SERVICE_USERNAME_PREFIX) else "user"
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_rate(self):
        # Read when asked (not once at import), so a changed setting takes effect.
        return api_settings.DEFAULT_THROTTLE_RATES[self.scope]

    def get_cache_key(self, request, view):
        if not request.user or not request.user.is_authenticated:
            return None  # refused before any work: authentication comes first
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}
