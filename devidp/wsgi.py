import os

from django.core.wsgi import get_wsgi_application

# Forced, not setdefault: the shell may export the portal's DJANGO_SETTINGS_MODULE.
os.environ["DJANGO_SETTINGS_MODULE"] = "devidp.settings"

application = get_wsgi_application()
