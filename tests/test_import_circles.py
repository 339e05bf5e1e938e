"""No import circles in the product's packages or the benchmarks: every module imports only
modules below it, so a shared piece lives in the module both sides can import (STYLE.md).

Counted: every import that runs, at the top of a module or inside a function (a lazy import
that dodges a circle still ties the two modules). Not counted: ``if TYPE_CHECKING:`` imports,
which never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocol", "relay", "agent", "console", "client", "benchmarks")

#: The one circle kept on purpose: schema.py imports schema_health.py at its end so that the
#: health tables are on the shared ``metadata`` wherever the schema is imported.
KNOWN = [["relay.storage.schema", "relay.storage.schema_health"]]


def modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted names (``relay.handlers.api``; a package by its folder) of every Python file."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if "migrations" in parts:  # alembic loads these by path, none imports them
                continue
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that ``name`` imports when it runs."""
    is_package = path.name == "__init__.py"
    named: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                named.extend(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    here = name.split(".") if is_package else name.split(".")[:-1]
                    here = here[: len(here) - (child.level - 1)]
                    base = ".".join([*here, base] if base else here)
                # ``from package import module`` names the module; ``from module import name``
                # the module (a package's __init__ is not counted as importing its parent's)
                for alias in child.names:
                    dotted = f"{base}.{alias.name}".removeprefix("posassist.")
                    named.append(dotted if dotted in known else base)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found = set()
    for dotted in named:
        dotted = dotted.removeprefix("posassist.")
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        if dotted and dotted != name:
            found.add(dotted)
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of two or more modules that import each other round a loop (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                group.append(other)
                if other == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(found)


def graph_of(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    known = modules(root, packages)
    return {name: imports(name, path, known) for name, path in known.items()}


def test_the_packages_have_no_import_circle_but_the_known_one() -> None:
    assert circles(graph_of(ROOT, PACKAGES)) == KNOWN


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("lower", "circle"),
    [
        ("from .upper import shared\n", [["pkg.lower", "pkg.upper"]]),
        ("def f():\n    from pkg import upper\n", [["pkg.lower", "pkg.upper"]]),
        ("import posassist.pkg.upper\n", [["pkg.lower", "pkg.upper"]]),
        ("if TYPE_CHECKING:\n    from .upper import Shared\n", []),
        ("from .base import shared\n", []),
    ],
)
def test_a_circle_is_found_through_any_import_that_runs(
    tmp_path: Path, lower: str, circle: list[list[str]]
) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/base.py": "shared = 1\n",
            "pkg/upper.py": "from .lower import thing\nfrom . import base\n",
            "pkg/lower.py": lower,
        },
    )
    assert circles(graph_of(tmp_path, ("pkg",))) == circle
