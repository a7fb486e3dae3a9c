"""The development mail backend: each mail into a file, one log line with its link.

`make run` has no mail server. Printing whole mails (HTML and text, with their signed links)
to the console buried every other line, so each mail goes to EMAIL_FILE_PATH (var/mail) as
`<time>-<n>.eml` (any mail client opens it) plus `.html` when it has an HTML part (a browser
shows it), and the log gets one line: who it is for, the subject and the file's link.
"""

import itertools
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.mail.backends.base import BaseEmailBackend

logger = logging.getLogger("portal.mail")
_counter = itertools.count(1)


def html_part(message) -> str | None:
    for content, mimetype in getattr(message, "alternatives", []) or []:
        if mimetype == "text/html":
            return content
    return None


def link(path: Path) -> str:
    """A file:// link to the mail; its name alone when the log would redact the link (a directory
    path of 64 or more token-like characters looks like a task token; the banner of `make run`
    prints the directory)."""
    from approvals.redaction import redact

    uri = path.resolve().as_uri()
    return uri if redact(uri) == uri else f"{path.name} (in EMAIL_FILE_PATH)"


class LocalFileEmailBackend(BaseEmailBackend):
    def __init__(self, *args, file_path=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.directory = Path(file_path or settings.EMAIL_FILE_PATH)

    def send_messages(self, email_messages):
        if not email_messages:
            return 0
        self.directory.mkdir(parents=True, exist_ok=True)
        sent = 0
        for message in email_messages:
            # Dots, not dashes: a long run of token-like characters would be redacted from the log.
            stamp = datetime.now(tz=UTC).strftime("%Y%m%d.%H%M%S.%f")
            stem = self.directory / f"{stamp}.{next(_counter)}"
            eml = stem.with_suffix(".eml")
            try:
                eml.write_bytes(message.message().as_bytes(linesep="\n"))
                html = html_part(message)
                shown = eml
                if html is not None:
                    shown = stem.with_suffix(".html")
                    shown.write_text(html, encoding="utf-8")
            except Exception:
                if not self.fail_silently:
                    raise
                continue
            subject = re.sub(r"\s+", " ", str(message.subject))
            logger.info("mail to %s: %r %s", ", ".join(message.recipients()), subject, link(shown))
            sent += 1
        return sent
