"""The layering in docs/architecture.md, checked on the source: imports only run down, no circles, one home per setting.

Every import counts, at module level or inside a function: an import that hides in a function still
makes the lower layer depend on the higher one.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
# Lower number = lower floor. An app may import its own floor's modules only from itself, and any lower floor.
LAYERS = {
    "miandan": 0,
    "accounts": 1,
    "events": 1,  # beside accounts: the outbox every business service writes to (campaign and above import it)
    "campaign": 2,
    "vouchers": 3,
    "orders": 4,
    "referrals": 4,  # beside orders: neither imports the other
    "reports": 5,
    "demo": 6,
    "web": 7,  # the pages (home, campaign page): may read every app and the demo's constants
    "bench": 7,  # beside web: neither imports the other
}


def _source_files() -> list[Path]:
    files = []
    for top in LAYERS:
        for path in (ROOT / top).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            files.append(path)
    return files


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # `from pkg import mod` imports pkg.mod when that is a module of ours.
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                found.append((candidate if _is_module(candidate) else module, node.lineno))
    return found


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _top(module: str) -> str:
    return module.split(".")[0]


def test_no_import_runs_up_the_layers():
    upward = []
    for path in _source_files():
        source = _top(_module_name(path))
        for module, line in _imports(path):
            target = _top(module)
            if target not in LAYERS or target == source:
                continue
            if LAYERS[target] >= LAYERS[source]:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not upward, "imports that run up (or sideways) the layers:\n" + "\n".join(upward)


def test_no_import_circles_between_modules():
    graph: dict[str, set[str]] = defaultdict(set)
    for path in _source_files():
        name = _module_name(path)
        for module, _ in _imports(path):
            if _top(module) in LAYERS and _is_module(module) and module != name:
                graph[name].add(module)
    # A package's __init__ imported by its own modules is not a circle of behaviour; keep the edge only one way.
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif state.get(nxt) is None:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_every_setting_is_read_directly_and_declared_in_settings_py():
    """No `getattr(settings, NAME, default)` with a private default: every name lives in settings.py once."""
    hidden, undeclared = [], []
    declared = set(re.findall(r"^([A-Z][A-Z0-9_]+)\s*[:=]", (ROOT / "miandan" / "settings.py").read_text(), re.M))
    for path in _source_files():
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"getattr\(\s*settings\s*,", text):
            hidden.append(f"{path.relative_to(ROOT)}:{text[:match.start()].count(chr(10)) + 1}")
        for name in set(re.findall(r"\bsettings\.([A-Z][A-Z0-9_]+)\b", text)):
            if name not in declared and not hasattr(settings, name):
                undeclared.append(f"{path.relative_to(ROOT)}: settings.{name}")
            elif name.startswith("MIANDAN_") and name not in declared:
                undeclared.append(f"{path.relative_to(ROOT)}: settings.{name} (not in settings.py)")
    assert not hidden, "settings read with a hidden default:\n" + "\n".join(hidden)
    assert not undeclared, "\n".join(undeclared)


@pytest.mark.parametrize("name", ["NotUnderstood", "client_ip", "client_inet", "campaign_is_live"])
def test_one_definition(name):
    pattern = re.compile(rf"^\s*(?:class|def)\s+{name}\b", re.M)
    places = [str(p.relative_to(ROOT)) for p in _source_files() if pattern.search(p.read_text(encoding="utf-8"))]
    assert len(places) == 1, places
