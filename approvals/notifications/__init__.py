"""Telling approvers where they work: email and Slack, with signed one-click actions.

- `messages`: what a notification says (the same content for every channel), built from the
  row at send time, so a late retry never shows stale approvers;
- `email`: HTML + plain text through Django's mail backend (SMTP, console, file, locmem);
- `slack`: Block Kit messages through the Web API (plain `requests`), and the checks the
  interactivity endpoint (`approvals/views/slack.py`) needs: signature and user mapping.

Rows are written only by `approvals.services.notifications`; Celery tasks in
`approvals/tasks/notifications.py` do the sending, after commit, never inside a web request.
"""


class DeliveryError(Exception):
    """A send that did not go through. `permanent`: retrying cannot help (a bad address)."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
