import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

application = get_wsgi_application()

# gunicorn runs no system checks: production refuses to serve with a development key (approvals.checks).
from approvals.checks import refuse_unsafe_production  # noqa: E402 - needs the app registry loaded above

refuse_unsafe_production()
