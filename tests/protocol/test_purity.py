"""protocol/ is sans-I/O: no sockets, asyncio, subprocess, files or clocks in any module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import posassist.protocol

FORBIDDEN_MODULES = {
    "asyncio",
    "socket",
    "ssl",
    "select",
    "selectors",
    "subprocess",
    "os",
    "pathlib",
    "io",
    "shutil",
    "tempfile",
    "time",
    "datetime",
    "threading",
    "multiprocessing",
    "concurrent",
    "signal",
    "random",
    "secrets",
    "urllib",
    "http",
    "sqlite3",
    "aiohttp",
    "websockets",
    "serial",
    "psutil",
    "uvloop",
    "logging",
}
FORBIDDEN_CALLS = {"open", "print", "input", "eval", "exec", "compile", "__import__", "breakpoint"}
#: The one place code is compiled: messages._define, for messages._compile_from_wire and
#: _compile_to_wire, which write each message's from_wire and to_wire from the class's own field
#: names (as dataclasses writes __init__), never from input; held to the generic
#: Message.from_wire and Message.to_wire by tests/protocol/test_messages.py.
COMPILERS = {"_define": {"exec", "compile"}}
PROTOCOL_DIR = Path(posassist.protocol.__file__).parent
MODULES = sorted(PROTOCOL_DIR.glob("*.py"))


def forbidden_uses(source: str) -> list[str]:
    found = []
    tree = ast.parse(source)
    allowed: dict[int, set[str]] = {}  # id() of an allowed call node → the names it may call
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in COMPILERS:
            for inner in ast.walk(node):
                allowed[id(inner)] = COMPILERS[node.name]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else []
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in FORBIDDEN_CALLS and node.func.id not in allowed.get(id(node), ()):
                found.append(f"call {node.func.id}() line {node.lineno}")
            continue
        else:
            continue
        found += [
            f"import {n} line {node.lineno}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES
        ]
    return found


def test_protocol_has_modules() -> None:
    assert {p.name for p in MODULES} >= {"codec.py", "messages.py", "session.py", "signing.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_protocol_module_is_sans_io(path: Path) -> None:
    assert forbidden_uses(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import os.path",
        "from time import monotonic",
        "from socket import socket",
        "open('x')",
        "import concurrent.futures",
        "def _define():\n    open('x')",
        "def elsewhere():\n    exec('x')",
        "def _compile_from_wire():\n    exec('x')",
        "def f():\n    def _define(): pass\n    exec('x')",
    ],
)
def test_purity_check_catches_forbidden_use(source: str) -> None:
    assert forbidden_uses(source) != []


def test_purity_check_allows_relative_and_pure_imports() -> None:
    assert (
        forbidden_uses("from . import codec\nimport hashlib\nfrom typing import Any\nx.open()")
        == []
    )


def test_only_the_message_compiler_may_compile() -> None:
    assert forbidden_uses("def _define():\n    exec(compile('', '', 'exec'))") == []
