"""How `approvals/` and `worker/` are laid out: module count, the largest module, import cycles, upward imports.

Reads the source with `ast` (nothing is imported or run), so it measures any checkout:
`python scripts/layout_report.py [ROOT]`. Layers, top to bottom, as pyproject.toml's import-linter contract
names them: urls; interface (admin, views, tasks, management, auth, api, scim; worker/); forms and template
tags; services; delivery and ops (notifications, ops); selectors; the AWS integration; the domain (everything
else). An upward import is a module importing one of a higher layer; a cycle is a strongly connected set of
modules (imports inside functions count: a late import hides a cycle, it doesn't remove it).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("approvals", "worker")
# The layers of pyproject.toml's import-linter contract, top to bottom; the old tree's names map onto them.
RANKS = {
    "urls": 7,
    **dict.fromkeys(["admin", "views", "tasks", "management", "auth", "api", "scim"], 6),
    **dict.fromkeys(["forms", "templatetags"], 5),
    "services": 4,
    **dict.fromkeys(["notifications", "ops", "metrics", "health", "charts"], 3),
    "selectors": 2,
    **dict.fromkeys(["integrations", "gateway"], 1),
}
LAYER_NAMES = {
    7: "urls",
    6: "interface",
    5: "forms/tags",
    4: "services",
    3: "delivery/ops",
    2: "selectors",
    1: "integration",
    0: "domain",
}


def rank_of(name: str) -> int | None:
    """A module or package name's layer: `ops_selectors` and `claim_views` (the old flat names) by their suffix."""
    return RANKS.get(name, RANKS.get(name.rsplit("_", 1)[-1]) if "_" in name else None)


def layer(module: str) -> int:
    parts = module.split(".")
    if parts[0] == "worker":  # process wiring (the old tree's tasks and gateway lived there too)
        return 1 if parts[-1] == "gateway" else 6
    if len(parts) == 1:
        return 0
    # approvals.notifications.{admin,views,forms,selectors}: the old tree filed those by subject.
    if len(parts) > 2 and parts[1] == "notifications" and rank_of(parts[2]) not in (None, 3):
        return rank_of(parts[2])
    found = rank_of(parts[1])
    return 0 if found is None else found


def module_files(root: Path) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from package import module` depends on that module; `from module import name` on the module.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            target = resolve(name)
            if target and target != module:
                targets.add(target)
    return targets


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    files = module_files(root)
    graph = {module: imports_of(module, path, set(files)) for module, path in files.items()}
    sizes = {module: len(path.read_text().splitlines()) for module, path in files.items()}
    largest = max(sizes, key=sizes.get)
    upward = sorted((m, t) for m, targets in graph.items() for t in targets if layer(t) > layer(m))
    found = cycles(graph)
    print(f"modules in {' + '.join(p + '/' for p in PACKAGES)}: {len(files)}")
    print(f"largest module: {largest} ({sizes[largest]} lines)")
    print(f"import cycles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))
    print(f"upward imports: {len(upward)}")
    for module, target in upward:
        print(f"  {module} ({LAYER_NAMES[layer(module)]}) -> {target} ({LAYER_NAMES[layer(target)]})")


if __name__ == "__main__":
    main()
