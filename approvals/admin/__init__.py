"""The admin: the portal's workbench for approvers and admins, one module per admin class.

Two roles (approvals/roles.py), both from SSO groups:
- approvers see only "Approval requests", narrowed to what they may decide or decided, and
  approve or reject there (one by one or in bulk);
- admins (superusers) see everything: reassign, cancel, retry callbacks, replay or discard
  ingest errors, the audit trail, routing rules.

Nothing here writes a model: every change is one call to approvals.services, row by row, so a
refused row is reported with its reason and never blocks the others. Step Functions' fields
are read-only, and the task token (ciphertext, fingerprint) is declared out of every page.

Built for big tables: the assignees are prefetched (no query per row), no full COUNT(*)
(LargeTablePaginator, show_full_result_count off, no facets), filters list their choices by
loose index scans, and every filter and ordering offered has an index (approvals/models.py).

Django's admin autodiscovery imports this package; importing the modules registers their classes.
"""

from approvals.admin import (  # noqa: F401 - each module registers its admin classes
    audit,
    callbacks,
    delegations,
    ingest_errors,
    notifications,
    requests,
    routing,
    scim_tokens,
    service_accounts,
    slack,
    sources,
    users,
)
