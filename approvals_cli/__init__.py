"""`approvals`: the approval portal's command line, a client of its REST API (/api/v1/).

Standalone on purpose: it needs only `requests` and the standard library, never Django or the
portal's code, so it runs anywhere the portal's URL is reachable (docs/api.md#cli).
"""
