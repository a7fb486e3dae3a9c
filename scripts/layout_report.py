"""How `approvals/` and `worker/` are laid out: module count, the largest module, import cycles, upward imports.

Reads the source with `ast` (nothing is imported or run), so it measures any checkout:
`python scripts/layout_report.py [ROOT]`. Layers, top to bottom: interface (views, admin, tasks, api, scim,
urls, forms, templatetags, management commands), application (services, selectors), domain (everything
else). An upward import is a module importing one of a higher layer; a cycle is a strongly connected set of
modules (imports inside functions count: a late import hides a cycle, it doesn't remove it).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("approvals", "worker")
INTERFACE = {"views", "admin", "tasks", "api", "scim", "urls", "forms", "templatetags", "management"}
APPLICATION = {"services", "selectors"}
LAYER_NAMES = {3: "interface", 2: "application", 1: "domain"}


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


def layer(module: str) -> int:
    if module in ("worker.tasks", "worker.notify_tasks"):  # the old tree's Celery tasks
        return 3
    for part in module.split(".")[1:]:
        stem = part.rsplit("_", 1)[-1] if "_" in part else part
        if part in INTERFACE or stem in INTERFACE:
            return 3
        if part in APPLICATION or stem in APPLICATION:
            return 2
    return 1


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
