"""The portal's REST API (/api/v1/) over `requests`: timeouts, retries, problem details.

Every call has a timeout. GETs and decisions are retried (three attempts, 1 s then 2 s apart)
when the portal can't be reached or answers 502/503/504; a decision carries one
`Idempotency-Key` for all its attempts, so a retry the portal already processed returns the first
result instead of deciding twice. Redirects are not followed: a bearer token goes only to the URL
it was meant for. Errors become `CLIError`s whose message is one line built from the RFC 9457
problem document (or the status line when the body isn't one) and whose exit code says the kind.
"""

import time
import uuid
from urllib.parse import quote, urlencode, urljoin, urlsplit

import requests

from approvals_cli.errors import CLIError, ExitCode
from approvals_cli.terminal import safe, truncate

TIMEOUT = (5, 30)  # seconds: connect, read
ATTEMPTS = 3
BACKOFF = (1.0, 2.0)
RETRYABLE_STATUS = frozenset({502, 503, 504})
USER_AGENT = "approvals-cli/1"

_EXIT_BY_STATUS = {
    400: ExitCode.INVALID,
    401: ExitCode.NOT_SIGNED_IN,
    403: ExitCode.FORBIDDEN,
    404: ExitCode.NOT_FOUND,
    405: ExitCode.ERROR,
    409: ExitCode.CONFLICT,
    410: ExitCode.NOT_FOUND,
    412: ExitCode.CONFLICT,
    422: ExitCode.INVALID,
    429: ExitCode.THROTTLED,
}
PROBLEM_PREFIX = "urn:approvals:problem:"


def check_portal_url(url: str) -> str:
    """The portal's base URL, normalised; refuses what would send a token in the clear to another host."""
    url = (url or "").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CLIError(f"not a portal URL: {safe(url)!s} (expected https://host[:port])", ExitCode.USAGE)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise CLIError("the portal URL must not carry a query, fragment or credentials", ExitCode.USAGE)
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise CLIError(f"refusing to send a token over plain http to {safe(parts.hostname)}: use https", ExitCode.USAGE)
    return url


def problem_message(response: requests.Response) -> str:
    """One line for an error response: the problem's title, detail and code, or the status line."""
    status = response.status_code
    document = None
    try:
        document = response.json()
    except ValueError:
        document = None
    if isinstance(document, dict) and (document.get("title") or document.get("detail")):
        title = safe(document.get("title") or "").strip()
        detail = safe(document.get("detail") or "").strip()
        kind = document.get("type")
        code = kind[len(PROBLEM_PREFIX) :] if isinstance(kind, str) and kind.startswith(PROBLEM_PREFIX) else ""
        text = title if not detail or detail == title else (f"{title}: {detail}" if title else detail)
        suffix = f" [{safe(code)}, HTTP {status}]" if code else f" [HTTP {status}]"
        return truncate(text, 400) + suffix
    reason = safe(response.reason or "").strip()
    return f"the portal answered HTTP {status}{' ' + truncate(reason, 80) if reason else ''} (no problem details)"


def exit_code_for(status: int) -> ExitCode:
    return _EXIT_BY_STATUS.get(status, ExitCode.ERROR)


def _header_safe(token: str) -> bool:
    # RFC 6750's b64token and every opaque token an IdP issues are visible ASCII. Anything else
    # (a line break from a pasted value) makes requests raise an error that quotes the header.
    return bool(token) and all("!" <= char <= "~" for char in token)


class PortalClient:
    def __init__(self, portal_url: str, access_token: str):
        self.portal_url = check_portal_url(portal_url)
        if not _header_safe(access_token):
            raise CLIError(
                "the access token holds a line break, a space or a character no HTTP header carries: "
                "check APPROVALS_TOKEN, or run `approvals login` again",
                ExitCode.NOT_SIGNED_IN,
            )
        self._session = requests.Session()
        self._session.trust_env = False  # no .netrc credentials or proxy surprises for a bearer token
        self._session.headers.update(
            {"Authorization": f"Bearer {access_token}", "Accept": "application/json", "User-Agent": USER_AGENT}
        )

    def __repr__(self) -> str:
        return f"PortalClient({self.portal_url!r})"

    def url(self, path: str) -> str:
        return urljoin(self.portal_url + "/", path.lstrip("/"))

    def request_url(self, request_id: str, suffix: str = "") -> str:
        return self.url(f"api/v1/requests/{quote(request_id, safe='')}/{suffix}")

    def _send(self, method: str, url: str, *, retry: bool, **kwargs) -> requests.Response:
        attempts = ATTEMPTS if retry else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._session.request(method, url, timeout=TIMEOUT, allow_redirects=False, **kwargs)
            except requests.Timeout:
                if last:
                    message = f"the portal did not answer in time ({self.portal_url})"
                    raise CLIError(message, ExitCode.UNREACHABLE) from None
            except requests.ConnectionError:
                if last:
                    raise CLIError(f"cannot reach the portal at {self.portal_url}", ExitCode.UNREACHABLE) from None
            else:
                if response.status_code not in RETRYABLE_STATUS or last:
                    return response
            time.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def call(self, method: str, url: str, *, json_body: dict | None = None, idempotency_key: str | None = None,
             retry: bool = False) -> dict:  # fmt: skip
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if url != self.portal_url and not url.startswith(self.portal_url + "/"):
            # A `next` link pointing elsewhere would take our token with it.
            raise CLIError(f"the portal sent a link to another site: {truncate(safe(url), 120)}", ExitCode.ERROR)
        response = self._send(method, url, retry=retry, json=json_body, headers=headers)
        if 300 <= response.status_code < 400:
            raise CLIError(
                f"the portal redirected the call (HTTP {response.status_code}); is {self.portal_url} the portal's URL?",
                ExitCode.ERROR,
            )
        if response.status_code >= 400:
            raise CLIError(problem_message(response), exit_code_for(response.status_code))
        try:
            document = response.json()
        except ValueError:
            raise CLIError(
                f"the portal answered HTTP {response.status_code} without JSON; is {self.portal_url} the portal's URL?",
                ExitCode.ERROR,
            ) from None
        if not isinstance(document, dict):
            raise CLIError("the portal answered with JSON that is not an object", ExitCode.ERROR)
        return document

    # --- the resources the commands use (the API contract, docs/api.md) ---
    def inbox(self, *, tab: str, search: str | None, all_pages: bool, max_pages: int = 100) -> dict:
        params = {"tab": tab, **({"q": search} if search else {})}
        url = self.url("api/v1/inbox/") + "?" + urlencode(params)
        results: list = []
        page = {}
        for _ in range(max_pages):
            page = self.call("GET", url, retry=True)
            results.extend(page.get("results") or [])
            url = page.get("next")
            if not all_pages or not url:
                break
            url = urljoin(self.portal_url + "/", url)
        return {"results": results, "next": page.get("next") if not all_pages else None}

    def request(self, request_id: str) -> dict:
        return self.call("GET", self.request_url(request_id), retry=True)

    def decide(self, request_id: str, body: dict) -> dict:
        # One key per invocation, the same for every retry of it.
        key = str(uuid.uuid4())
        return self.call("POST", self.request_url(request_id, "decision/"), json_body=body, idempotency_key=key,
                         retry=True)  # fmt: skip

    def reassign(self, request_id: str, body: dict) -> dict:
        return self.call("POST", self.request_url(request_id, "reassign/"), json_body=body)

    def cancel(self, request_id: str, body: dict) -> dict:
        return self.call("POST", self.request_url(request_id, "cancel/"), json_body=body)
