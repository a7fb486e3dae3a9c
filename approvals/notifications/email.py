"""Email: HTML and plain text (EmailMultiAlternatives) through the configured mail backend.

The templates autoescape the HTML part; the plain-text part has no markup to inject into.
SMTP runs with EMAIL_TIMEOUT; errors become DeliveryError (permanent for a refused address).
"""

import contextlib
import smtplib
from collections.abc import Iterator
from contextvars import ContextVar

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.template.loader import render_to_string

from approvals.notifications import DeliveryError
from approvals.notifications.messages import MessageContent, details_summary


def render(content: MessageContent, *, to: str) -> EmailMultiAlternatives:
    context = {
        "content": content,
        "approval": content.request,
        # A summary of the details, never all of them (they may be 256 KiB): the page has the rest.
        "detail_lines": details_summary(content.request.details, indent=1) if content.request else [],
    }
    message = EmailMultiAlternatives(
        subject=content.subject,
        body=render_to_string("approvals/email/notification.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[to],
        # Out-of-office replies and auto-responders stay quiet.
        headers={"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All"},
    )
    message.attach_alternative(render_to_string("approvals/email/notification.html", context), "text/html")
    return message


class _SharedConnection:
    """One mail backend connection for the mails of a batch: opened at the first mail, kept open
    (Django's backends leave a connection they did not open themselves open), closed at the end
    or after a failed send (the next mail opens a fresh one: a dropped connection is not reused)."""

    def __init__(self):
        self.connection = None

    def get(self):
        if self.connection is None:
            connection = get_connection(fail_silently=False)
            connection.open()
            self.connection = connection
        return self.connection

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                connection.close()


_shared: ContextVar[_SharedConnection | None] = ContextVar("shared_mail_connection", default=None)


@contextlib.contextmanager
def shared_connection() -> Iterator[None]:
    """Within the block, `send` reuses one backend connection (one SMTP session for N mails)."""
    shared = _SharedConnection()
    token = _shared.set(shared)
    try:
        yield
    finally:
        _shared.reset(token)
        shared.close()


def send(content: MessageContent, *, to: str) -> None:
    message = render(content, to=to)
    try:
        _send_on_connection(message)
    except smtplib.SMTPRecipientsRefused as error:
        raise DeliveryError(f"the mail server refused the address: {error.recipients}", permanent=True) from None
    except smtplib.SMTPResponseException as error:
        # 5xx for this message: the server will say the same next time; 4xx: try again later. A
        # refused login or sender is the portal's configuration: retried, an admin fixes it.
        text = error.smtp_error.decode(errors="replace") if isinstance(error.smtp_error, bytes) else error.smtp_error
        configuration = isinstance(error, smtplib.SMTPAuthenticationError | smtplib.SMTPSenderRefused)
        permanent = 500 <= error.smtp_code < 600 and not configuration
        raise DeliveryError(f"SMTP {error.smtp_code}: {text}", permanent=permanent) from None
    except (smtplib.SMTPException, OSError) as error:
        # Connection refused, timeout, TLS failure, a dropped connection: the server is down.
        raise DeliveryError(f"{type(error).__name__}: {error}") from None


def _send_on_connection(message: EmailMultiAlternatives) -> None:
    """On the batch's shared connection (closed after a failure), else on a connection of its own."""
    shared = _shared.get()
    if shared is None:
        message.connection = get_connection(fail_silently=False)
        message.send()
        return
    try:
        message.connection = shared.get()
        message.send()
    except BaseException:
        shared.close()
        raise
