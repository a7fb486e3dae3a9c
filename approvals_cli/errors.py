"""The one error type of the command line, and its exit codes (docs/api.md#exit-codes)."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # the portal failed (5xx) or answered something unexpected
    USAGE = 2  # bad command line (argparse's own code)
    NOT_SIGNED_IN = 3  # no token, an expired or refused one, or the sign-in failed (401)
    FORBIDDEN = 4  # signed in, but not allowed (403: not_an_approver, requester_cannot_decide, ...)
    NOT_FOUND = 5  # no such request, or not visible to you (404)
    CONFLICT = 6  # the request's state forbids it (409: already_decided, ...)
    INVALID = 7  # the portal refused the input (400/422: validation_error, ...)
    THROTTLED = 8  # too many calls (429); try again later
    UNREACHABLE = 9  # the portal or the IdP could not be reached, or timed out
    UNSAFE_CREDENTIALS = 10  # the token file is readable by others or not ours: refused
    INTERRUPTED = 130  # Ctrl-C


class CLIError(Exception):
    """A failure the user should see as one line on stderr, ending the command with `exit_code`."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.ERROR):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
