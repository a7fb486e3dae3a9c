"""A task's loop over many items (beat's sweeps, reminders, digests): each item's failure is its own."""

import contextlib
import logging
from collections.abc import Iterator

from approvals.services import DATABASE_GONE

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def one_of_many(what: str) -> Iterator[None]:
    """One item of the loop: a bug in it (or data no check foresaw) is logged with its traceback
    and the loop goes on. Raised, it cost every item after it, round after round, since the next
    round meets the same item first again. The item's own transaction rolled back, so the next
    round tries it again. The database going away still ends the task: every item would fail."""
    try:
        yield
    except DATABASE_GONE:
        raise
    except Exception:
        logger.exception("%s failed; the others go on", what)
