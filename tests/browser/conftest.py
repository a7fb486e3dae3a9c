"""A real browser for the portal: Debian's Chromium driven by Playwright, headless.

`playwright install` is not needed (nor possible offline): the tests use /usr/bin/chromium
(`apt-get install --no-install-recommends chromium`). Without it the tests skip with a reason,
which CI (CI=true) counts as a failure.
"""

import os
import re
from pathlib import Path

import pytest

from devidp.seed import demo_passwords

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
REPO_DIR = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_DIR / "var" / "screenshots"  # git-ignored; docs/screenshots/ holds a committed set
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install --no-install-recommends chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -r requirements-dev.txt")
    # Playwright's sync API keeps an event loop running in this thread, and Django refuses
    # ORM calls next to a running loop. The tests call the ORM only between browser steps.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def new_page(browser):
    """`new_page(viewport=PHONE, javascript=False)`: a fresh browser context (own cookies) and page."""
    contexts = []

    def make(*, viewport: dict = DESKTOP, javascript: bool = True):
        context = browser.new_context(
            viewport=viewport,
            java_script_enabled=javascript,
            device_scale_factor=2 if viewport["width"] < 600 else 1,
            is_mobile=viewport["width"] < 600,
            has_touch=viewport["width"] < 600,
            locale="en-GB",
            timezone_id="Europe/Berlin",
        )
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def sign_in(page, portal_url: str, username: str) -> None:
    """Through the portal's sign-in page and the dev IdP's real login form, back to the inbox."""
    from playwright.sync_api import expect

    page.goto(f"{portal_url}/")
    expect(page).to_have_url(re.compile(r"/signin/"))
    page.get_by_role("link", name="Sign in with company SSO").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(demo_passwords()[username])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{portal_url}/")


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def assert_accessible(page, what: str) -> None:
    """axe-core (from axe-playwright-python): no serious or critical WCAG 2.1 A/AA violation.

    Needs JavaScript in the page (axe runs there): a context made with javascript=False would hang.
    """
    from axe_playwright_python.sync_playwright import Axe

    assert page.evaluate("() => typeof Promise") == "function"

    options = {
        "runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]},
        "resultTypes": ["violations"],
    }
    results = Axe().run(page, options=options)
    violations = [v for v in results.response["violations"] if v.get("impact") in {"serious", "critical"}]
    report = "\n".join(
        f"- {v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:5]}" for v in violations
    )
    assert not violations, f"accessibility violations on the {what} page:\n{report}"


def assert_fits(page, width: int, what: str) -> None:
    """Nothing wider than the viewport: no sideways scrolling on a phone."""
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"the {what} page is {scroll_width}px wide on a {width}px screen"
