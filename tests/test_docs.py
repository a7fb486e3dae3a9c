"""The README is the front door and docs/ holds the rest: every relative link in README.md and
docs/*.md reaches a file (and a heading, when it names one), every docs page is reachable from the
README, the README stays short enough to read on a screen or two, and every environment variable
the product reads is named somewhere in them."""

import re
import sys
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 150
# What a newcomer sees first, before scrolling: what it is and the two commands.
FIRST_SCREEN_LINES = 30

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`+[^`]*`+")
# [text](target) and ![alt](target); the target ends at whitespace (an optional "title" follows).
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, …


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks."""
    lines, in_fence = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append((number, line))
    return lines


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link and image outside code."""
    found = []
    for number, line in prose_lines(path):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            found.append((number, match.group(1)))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped (letters, digits,
    spaces, hyphens and underscores stay), each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LMN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file; repeated headings get -1, -2, … as on GitHub."""
    seen: dict[str, int] = {}
    result = set()
    for _number, line in prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def resolve(source: Path, target: str) -> tuple[Path, str]:
    """The file a relative link points at, and its anchor ('' when none)."""
    path_part, _, anchor = target.partition("#")
    path = source if not path_part else (source.parent / unquote(path_part)).resolve()
    return path, unquote(anchor)


def broken_links(path: Path) -> list[str]:
    problems = []
    for number, target in links(path):
        if EXTERNAL.match(target):
            continue
        where = f"{path.relative_to(REPO)}:{number}: ({target})"
        resolved, anchor = resolve(path, target)
        if not resolved.exists():
            problems.append(f"{where} no such file")
        elif REPO not in resolved.parents and resolved != REPO:
            problems.append(f"{where} points outside the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where} no heading with the anchor #{anchor} in {resolved.relative_to(REPO)}")
    return problems


def test_the_slug_of_a_heading_is_githubs_anchor():
    assert slug("Trust boundary") == "trust-boundary"
    assert slug("Operations: metrics, health, logs") == "operations-metrics-health-logs"
    assert slug("Delegation (out of office)") == "delegation-out-of-office"
    assert slug("The admin's changelists (`make bench-admin`)") == "the-admins-changelists-make-bench-admin"
    assert slug("1. Ingest: 0.11 of the bare loop (goal 0.8)") == "1-ingest-011-of-the-bare-loop-goal-08"


def test_the_link_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path, monkeypatch):
    tmp_path = tmp_path.resolve()
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# There\n\n## A section\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/there.md#a-section) [ok too](#top) `[not a link](nowhere.md)`\n"
        "# Top\n"
        "[gone](docs/missing.md) [no anchor](docs/there.md#another-section) [web](https://example.com/x.md)\n"
        "```\n[in code](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    problems = broken_links(page)
    assert len(problems) == 2, problems
    assert "docs/missing.md) no such file" in problems[0]
    assert "no heading with the anchor #another-section" in problems[1]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_at_an_existing_file_and_heading(path):
    assert broken_links(path) == []


def test_the_readme_fits_in_its_line_budget():
    count = len(README.read_text(encoding="utf-8").splitlines())
    assert count <= README_MAX_LINES, f"README.md has {count} lines (at most {README_MAX_LINES}): move details to docs/"


def test_the_first_screen_of_the_readme_has_the_two_commands():
    first_screen = "\n".join(README.read_text(encoding="utf-8").splitlines()[:FIRST_SCREEN_LINES])
    assert "make run" in first_screen
    assert "make test" in first_screen


def test_the_readme_links_the_trust_boundary():
    targets = [target for _number, target in links(README)]
    assert "docs/security.md#trust-boundary" in targets


def test_every_docs_page_is_reachable_from_the_readme():
    reached, todo = set(), [README.resolve()]
    while todo:
        page = todo.pop()
        if page in reached:
            continue
        reached.add(page)
        for _number, target in links(page):
            if EXTERNAL.match(target):
                continue
            resolved, _anchor = resolve(page, target)
            if resolved.suffix == ".md" and resolved.exists():
                todo.append(resolved)
    unreached = [str(p.relative_to(REPO)) for p in sorted(DOCS.glob("*.md")) if p.resolve() not in reached]
    assert unreached == [], f"not linked from README.md (nor from a page it links): {unreached}"


# What the product reads from the environment: environ.Env's typed reads in portal/settings.py
# (env.str("NAME", …), env("NAME")), and os.environ / os.getenv anywhere in the product's code.
ENV_READ = re.compile(
    r"""(?:\benv(?:\.[a-z]+)?|environ\.Env\(\)\.[a-z]+|os\.environ\.get|os\.getenv)\(\s*["']([A-Z][A-Z0-9_]+)["']"""
    r"""|os\.environ\[\s*["']([A-Z][A-Z0-9_]+)["']\s*\]"""
)
PRODUCT_CODE = ("portal", "approvals", "worker")
# Read from the environment but not for operators: a test's fault point (tests/test_reliability.py).
NOT_CONFIGURATION = {"PORTAL_TEST_CRASH_AFTER_SEND"}


def environment_variables_read() -> dict[str, str]:
    """Each variable the product's code reads → the first file that reads it."""
    found: dict[str, str] = {}
    for package in PRODUCT_CODE:
        for path in sorted((REPO / package).rglob("*.py")):
            for match in ENV_READ.finditer(path.read_text(encoding="utf-8")):
                found.setdefault(match.group(1) or match.group(2), str(path.relative_to(REPO)))
    return found


def test_the_environment_scan_finds_the_reads_it_is_meant_to():
    read = environment_variables_read()
    for name in ("DATABASE_URL", "PORTAL_ENV", "PORTAL_VAR_DIR", "APPROVAL_QUEUE_URL", "PORTAL_TEST_CRASH_AFTER_SEND"):
        assert name in read
    assert ENV_READ.search('os.environ["SOME_NAME"]') and ENV_READ.search("env.int('SOME_NAME', default=1)")
    assert len(read) > 50


def test_every_environment_variable_the_portal_reads_is_documented():
    """An operator finds every setting in docs/ (most in configuration.md): one the code reads and
    no page names is a default nobody can know to change."""
    docs = "\n".join(path.read_text(encoding="utf-8") for path in markdown_files())
    missing = [
        f"{name} (read in {where})"
        for name, where in sorted(environment_variables_read().items())
        if name not in NOT_CONFIGURATION and not re.search(rf"\b{name}\b", docs)
    ]
    assert missing == [], "not in README.md or docs/*.md: " + ", ".join(missing)
