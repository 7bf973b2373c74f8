"""Import direction: the subpackages depend on each other one way only, read from the source with `ast`.

core <- client <- server, and api / admin above them; core imports nothing of sidepunch's above it, the client
never imports the server, and the server never imports api, admin or a web package. The framework integrations
(contrib) sit on top: nothing imports them, and nothing else imports a web framework. Cycles between modules
are refused too. Every import form counts: `from . import x`, `from ..core import y`, `import sidepunch.x`, and
imports inside functions.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sidepunch"
#: What each subpackage may import from sidepunch (besides itself). The top-level package (sidepunch/__init__,
#: which exports the client API, and __version__) is allowed to all but core.
ALLOWED = {
    "core": set(),
    # The client builds the built-in features from sidepunch.features (whose __init__ imports core only; the
    # feature modules, which may push through the client, are loaded by dotted path when a client is built).
    "client": {"core", "features"},
    "features": {"core", "client"},
    "server": {"core", "client", "features"},
    "api": {"core", "client", "features"},
    "admin": {"core", "client", "api", "web", "features"},
    "web": {"core", "client", "api", "features"},
    "testing": {"core", "client", "features"},
    # Framework integrations sit on top; nothing else imports them (no layer lists "contrib").
    "contrib": {"core", "client", "api", "web", "features"},
}
#: Single modules allowed one import beyond their layer's: Django's `manage.py sidepunchd` runs the daemon.
EXTRA = {"sidepunch.contrib.django.management.commands.sidepunchd": {"sidepunch.server.cli"}}
#: Frameworks only sidepunch.contrib may import (the web dashboard uses werkzeug, which is none of these).
FRAMEWORKS = {"django", "flask", "fastapi", "starlette"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every sidepunch module `path` imports, resolved to a dotted name."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "sidepunch")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "sidepunch":
                continue
            found.add(target)
            # `from . import keys` imports the module sidepunch.<pkg>.keys when there is one
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if _exists(sub):
                    found.add(sub)
    return found


def _exists(dotted: str) -> bool:
    rel = Path(*dotted.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists()


def layer(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else ""


def all_modules() -> dict[str, set[str]]:
    return {module_name(p): imported_modules(p) for p in sorted(PACKAGE.rglob("*.py"))}


GRAPH = all_modules()


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if layer(m)))
def test_imports_flow_one_way(module):
    own = layer(module)
    wrong = sorted(t for t in GRAPH[module]
                   if layer(t) != own and (layer(t) not in ALLOWED[own] if layer(t) else own == "core")
                   and t not in EXTRA.get(module, ()))
    assert not wrong, f"{module} ({own}) must not import {wrong}"


def test_no_import_cycles():
    graph = {m: {t for t in targets if t in GRAPH and t != m} for m, targets in GRAPH.items()}
    # The top-level package re-exports from below it; edges into it are what make a cycle, so keep them.
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1 and not _package_edge(node, nxt):
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2
    for module in sorted(graph):
        if module not in state:
            visit(module)


def _package_edge(src: str, dst: str) -> bool:
    """A module importing its own package's __init__ (for re-exports) is how packages work, not a cycle."""
    return src.startswith(dst + ".")


def test_the_guard_sees_every_import_form(tmp_path):
    """The checker itself: relative, absolute, bare `from . import` and function-level imports are all seen."""
    sample = PACKAGE / "core" / "keys.py"
    found = imported_modules(sample)
    assert all(layer(t) in ("", "core") for t in found)
    assert any(t.endswith(".payload") for t in imported_modules(PACKAGE / "client" / "prepare.py"))


def test_nothing_imports_contrib_and_only_contrib_imports_a_framework():
    """The top-level package may import any layer, but not contrib; and the core, client, server, api, admin,
    web and testing code never load Django, Flask, FastAPI or Starlette, even lazily."""
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        if layer(module) == "contrib":
            continue
        assert not [t for t in GRAPH[module] if layer(t) == "contrib"], f"{module} imports sidepunch.contrib"
        tree = ast.parse(path.read_text(), str(path))
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        assert not {name.split(".")[0] for name in names} & FRAMEWORKS, f"{module} imports a web framework"


def test_only_the_django_command_reaches_into_the_server():
    assert set(EXTRA) == {m for m in GRAPH if layer(m) == "contrib" and any(layer(t) == "server" for t in GRAPH[m])}
