"""The development keys that `make run`, the tests and docker-compose's dev stack use.

They are public (they are in this repository), so a production deployment that still uses
one of them has no secret at all: `approvals.checks` refuses to start with any of them.
"""

DJANGO_SECRET_KEY = "dev-only-insecure-secret-key-do-not-deploy"  # noqa: S105 - public, development only
TOKEN_ENCRYPTION_KEY = "gK4Uu4GyaBWHw1Y1e-ul7Njunfod6T_MVILQckeZBvA="  # noqa: S105 - public, development only
TOKEN_FINGERPRINT_KEY = "dev-only-token-fingerprint-key"  # noqa: S105 - public, development only
OIDC_RP_CLIENT_SECRET = "approval-portal-dev-secret"  # noqa: S105 - public, development only
