"""The REST API at /api/v1/ (docs/api.md): reads through the selectors, writes through the
services, the one decide rule in approvals/permissions.py. Nothing here decides on its own."""
