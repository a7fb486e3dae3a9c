"""Throttling per caller: one budget per person, another per service account (portal/settings.py,
API_THROTTLE_USER / API_THROTTLE_SERVICE_ACCOUNT)."""

from rest_framework.throttling import SimpleRateThrottle


class CallerRateThrottle(SimpleRateThrottle):
    """A person and a service account each have their own rate, keyed by their user id."""

    scope = "user"

    def allow_request(self, request, view):
        self.scope = "service_account" if request.user.username.startswith("service-") else "user"
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view):
        if not request.user or not request.user.is_authenticated:
            return None  # refused before any work: authentication comes first
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}
