"""Demo users, the portal's OAuth client and the command line's (device grant).

``DEMO_USERS`` and ``demo_passwords()`` are importable without configuring Django
(e.g. to print the sign-in hints); ``seed()`` needs ``devidp.settings`` loaded.
"""

from typing import NamedTuple

from devidp import config


class DemoUser(NamedTuple):
    username: str
    email: str
    first_name: str
    last_name: str
    groups: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("alice", "alice@example.com", "Alice", "Approver", ("finance-approvers",)),
    DemoUser("bob", "bob@example.com", "Bob", "Requester", ()),
    DemoUser("carol", "carol@example.com", "Carol", "Admin", ("portal-admins",)),
    DemoUser("dave", "dave@example.com", "Dave", "Bystander", ()),
)


def demo_passwords() -> dict[str, str]:
    """username -> password: DEVIDP_DEMO_PASSWORD for everyone if set, else `<username>-demo`."""
    shared = config.env("DEVIDP_DEMO_PASSWORD", "")
    return {user.username: shared or f"{user.username}-demo" for user in DEMO_USERS}


def client_id() -> str:
    return config.env("DEVIDP_CLIENT_ID", "approval-portal")


def cli_client_id() -> str:
    return config.env("DEVIDP_CLI_CLIENT_ID", "approvals-cli")


def _application(Application, client_id: str, **fields) -> None:
    """Create or update one OAuth client of the dev IdP (RS256-signed ID tokens), checked before saving:
    malformed redirect URIs from the environment fail the setup early."""
    app = Application.objects.filter(client_id=client_id).first() or Application(client_id=client_id)
    app.algorithm = Application.RS256_ALGORITHM
    for name, value in fields.items():
        setattr(app, name, value)
    app.full_clean()
    app.save()


def seed() -> None:
    """Create or update the demo users and the portal application from the environment."""
    from django.contrib.auth.models import Group, User
    from django.db import transaction
    from oauth2_provider.models import get_application_model

    Application = get_application_model()
    passwords = demo_passwords()

    with transaction.atomic():
        for demo in DEMO_USERS:
            user, _ = User.objects.get_or_create(username=demo.username)
            user.email = demo.email
            user.first_name = demo.first_name
            user.last_name = demo.last_name
            user.is_active = True
            user.set_password(passwords[demo.username])
            user.save()
            user.groups.set([Group.objects.get_or_create(name=name)[0] for name in demo.groups])

        _application(
            Application,
            client_id(),
            name="Approval Portal",
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
            skip_authorization=True,
            # Stored as given; DOT's ClientSecretField hashes it on save (hash_client_secret),
            # so the plaintext is never in the DB and is re-hashed on every setup run.
            hash_client_secret=True,
            client_secret=config.env("DEVIDP_CLIENT_SECRET", "approval-portal-dev-secret"),
            redirect_uris=" ".join(config.env_list("DEVIDP_REDIRECT_URIS", "http://127.0.0.1:8000/oidc/callback/")),
            post_logout_redirect_uris=" ".join(
                config.env_list("DEVIDP_POST_LOGOUT_REDIRECT_URIS", "http://127.0.0.1:8000/")
            ),
        )

        # The `approvals` command line: a public client (no secret to leak from a laptop) that may
        # only use the device authorization grant (RFC 8628): it prints a code, the person enters
        # it on the IdP's /device/ page after signing in here, and the command polls for a token.
        _application(
            Application,
            cli_client_id(),
            name="Approvals command line",
            client_type=Application.CLIENT_PUBLIC,
            authorization_grant_type=Application.GRANT_DEVICE_CODE,
            client_secret="",
            redirect_uris="",
            skip_authorization=False,  # the person confirms "Accept" for this client on the IdP
        )

        # The demo service account's client: a bot calling the portal's API with
        # client-credentials tokens (docs/api.md, "Service accounts").
        _application(
            Application,
            config.service_client_id(),
            name="Approvals demo bot",
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
            hash_client_secret=True,
            client_secret=config.service_client_secret(),
            redirect_uris="",
        )

        # Another demo bot whose access tokens are opaque (devidp/access_tokens.py): the portal
        # checks them at the introspection endpoint (devidp/views.py, docs/api.md "Tokens").
        _application(
            Application,
            config.opaque_client_id(),
            name="Approvals demo bot (opaque tokens)",
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
            hash_client_secret=True,
            client_secret=config.opaque_client_secret(),
            redirect_uris="",
        )
