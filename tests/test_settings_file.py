"""portal/settings.py reads top to bottom: one block per subject, and no block patches another.

A setting is given its whole value in the block (the `# ----` banner) that introduces it; a later
block that inserts into MIDDLEWARE, rewrites LOGGING or extends a list through `globals()` hides
from the reader what the setting really is. These tests read the file's syntax, so they hold for
every environment.
"""

import ast
import re
from pathlib import Path

SETTINGS_FILE = Path(__file__).resolve().parent.parent / "portal" / "settings.py"
BANNER = re.compile(r"^# -{20,}\n# (?P<title>[^\n]+)\n# -{20,}$", re.MULTILINE)
MUTATING_METHODS = {"append", "extend", "insert", "update", "setdefault", "pop", "remove", "clear"}


def _blocks(source: str) -> list[tuple[int, str]]:
    """(first line, title) of each banner block, in order; line 1 is the preamble."""
    blocks = [(1, "preamble")]
    for match in BANNER.finditer(source):
        blocks.append((source.count("\n", 0, match.start()) + 1, match["title"]))
    return blocks


def _block_of(line: int, blocks: list[tuple[int, str]]) -> str:
    return [title for first, title in blocks if first <= line][-1]


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Subscript | ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _settings_touched(tree: ast.Module):
    """(setting name, line) for every statement that binds or changes an UPPER_CASE name."""
    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATING_METHODS:
            targets = [node.func.value]
        for target in targets:
            for element in target.elts if isinstance(target, ast.Tuple) else [target]:
                name = _root_name(element)
                if name and name.isupper():
                    yield name, node.lineno


def test_every_setting_is_given_its_value_in_one_block():
    source = SETTINGS_FILE.read_text()
    blocks = _blocks(source)
    assert len(blocks) > 5, "the settings file lost its banner comments"
    homes: dict[str, set[str]] = {}
    for name, line in _settings_touched(ast.parse(source)):
        homes.setdefault(name, set()).add(_block_of(line, blocks))
    patched = {name: sorted(titles) for name, titles in homes.items() if len(titles) > 1}
    assert patched == {}, f"settings changed outside the block that defines them: {patched}"


def test_no_setting_is_built_from_globals():
    tree = ast.parse(SETTINGS_FILE.read_text())
    calls = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in {"globals", "locals"}
    ]
    assert calls == [], f"globals()/locals() at lines {calls}: give the setting its value where it is defined"


def test_the_patch_finder_finds_a_patch():
    # The rule above must be able to fail: a later block inserting into an earlier block's list.
    source = (
        "# ----------------------------------------\n# Django\n# ----------------------------------------\n"
        "MIDDLEWARE = ['a']\n"
        "# ----------------------------------------\n# Logging\n# ----------------------------------------\n"
        "MIDDLEWARE.insert(0, 'b')\nLOGGING = {}\nLOGGING['x'] = 1\n"
    )
    blocks = _blocks(source)
    touched = [(name, _block_of(line, blocks)) for name, line in _settings_touched(ast.parse(source))]
    assert ("MIDDLEWARE", "Django") in touched
    assert ("MIDDLEWARE", "Logging") in touched
    assert ("LOGGING", "Logging") in touched
