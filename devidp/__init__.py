"""Development OpenID Connect provider (django-oauth-toolkit) for the approval portal.

A separate Django project with its own settings module (``devidp.settings``); the
portal must never import it. Run it with ``python -m devidp setup|serve``.
"""
