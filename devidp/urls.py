import re

from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from django.views.generic import TemplateView
from oauth2_provider import urls as dot_urls

from devidp import config, views
from devidp.seed import DEMO_USERS, demo_passwords

# Only the protocol endpoints: DOT's application-management and dynamic
# registration views would let any signed-in demo user register clients.
oauth2_patterns = (
    dot_urls.base_urlpatterns + dot_urls.oidc_urlpatterns,
    "oauth2_provider",
)

# Default demo passwords are printed on the login page; a DEVIDP_DEMO_PASSWORD
# chosen by the operator is not.
_passwords = {} if config.env("DEVIDP_DEMO_PASSWORD", "") else demo_passwords()
demo_hint = [
    {
        "user": user,
        "password": _passwords.get(user.username),
        "groups": ", ".join(user.groups) or "no groups",
    }
    for user in DEMO_USERS
]

urlpatterns = [
    path("", TemplateView.as_view(template_name="devidp/home.html"), name="home"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(template_name="devidp/login.html", extra_context={"demo_users": demo_hint}),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Mounted under the issuer's path (default "o/") so endpoints are {issuer}/authorize/ etc.
    path(f"{config.issuer_path_prefix()}logout/", views.LogoutView.as_view()),  # before DOT's own
    # Before DOT's own: the discovery document with the device authorization endpoint (RFC 8628).
    re_path(
        rf"^{re.escape(config.issuer_path_prefix())}\.well-known/openid-configuration/?$", views.DiscoveryView.as_view()
    ),
    # And its device authorization endpoint, fixed for oauthlib 4 (views.DeviceAuthorizationView).
    path(f"{config.issuer_path_prefix()}device-authorization/", views.DeviceAuthorizationView.as_view()),
    # And its introspection endpoint, answering sub/iss/aud for opaque tokens (views.IntrospectTokenView).
    path(f"{config.issuer_path_prefix()}introspect/", views.IntrospectTokenView.as_view()),
    path(config.issuer_path_prefix(), include(oauth2_patterns)),
]
