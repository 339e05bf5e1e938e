"""One error tree: every exception class of the product derives from PosAssistError, declares its
close code, HTTP status and exit code, and only a command's ``main`` ends the process.

The walk reads every module's AST (so a class inside a function is seen too), then imports the
module to resolve what each class derives from.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import re
from pathlib import Path

import pytest

from posassist.protocol.errors import EXIT_FAILURE, EXIT_REFUSED, EXIT_USAGE, PosAssistError

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocol", "relay", "agent", "console", "client")
BUILTIN_EXCEPTIONS = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}


def _modules() -> list[Path]:
    return sorted(
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
    )


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return "posassist." + ".".join(parts)


def _exception_classes() -> list[tuple[str, str, type | None, list[str]]]:
    """(file, class name, the class if importable at module level, its base names)."""
    found = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
        module = None
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = [ast.unparse(base) for base in node.bases]
            cls = None
            if node.name in top:
                module = module or importlib.import_module(_module_name(path))
                cls = getattr(module, node.name, None)
                if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                    continue
            elif not any(b.rsplit(".", 1)[-1] in BUILTIN_EXCEPTIONS for b in bases):
                continue  # a nested class deriving from no built-in exception
            found.append((str(path.relative_to(ROOT)), node.name, cls, bases))
    return found


CLASSES = _exception_classes()


def test_the_walk_finds_the_tree() -> None:
    names = {name for _, name, _, _ in CLASSES}
    assert {"PosAssistError", "OfflineError", "ConnectionClosedError", "HttpStatusError"} <= names
    assert len(CLASSES) > 60


@pytest.mark.parametrize(
    ("where", "name", "cls", "bases"), CLASSES, ids=[f"{w}:{n}" for w, n, _, _ in CLASSES]
)
def test_every_exception_class_is_in_the_tree(
    where: str, name: str, cls: type | None, bases: list[str]
) -> None:
    assert cls is not None, f"{where}: {name}({', '.join(bases)}) is outside PosAssistError"
    assert issubclass(cls, PosAssistError), f"{where}: {name} is outside PosAssistError"
    assert cls.public_reason
    assert cls.public_reason_zh
    assert 1000 <= cls.close_code < 5000
    assert 400 <= cls.http_status < 600
    assert cls.exit_code in (EXIT_FAILURE, EXIT_USAGE, EXIT_REFUSED)


_CJK = re.compile(r"[\u4e00-\u9fff]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@pytest.mark.parametrize(
    ("where", "name", "cls", "bases"), CLASSES, ids=[f"{w}:{n}" for w, n, _, _ in CLASSES]
)
def test_every_exception_class_says_it_in_chinese_too(
    where: str, name: str, cls: type | None, bases: list[str]
) -> None:
    """Strict: a class that states its own English reason states its own Chinese one (an
    inherited Chinese text would say something else); every text is one clean line."""
    assert cls is not None
    assert issubclass(cls, PosAssistError)
    own = vars(cls)
    if "public_reason" in own:
        assert "public_reason_zh" in own, (
            f"{where}: {name} has public_reason but no public_reason_zh"
        )
    assert _CJK.search(cls.public_reason_zh), f"{where}: {name}.public_reason_zh is not Chinese"
    for text in (cls.public_reason, cls.public_reason_zh):
        assert not _CONTROL.search(text)
        assert len(text) <= 120


#: A row of a drawn tree: the class name, then its close code, HTTP status and exit code.
_ROW = re.compile(r"[├└]── (\w+)\s.*?\s(\d{4})\s+(\d{3})\s+(\d)\s*$")


def test_the_drawn_tree_states_each_class_close_code_http_status_and_exit_code() -> None:
    from posassist.protocol import errors

    by_name = {
        name: cls
        for _, name, cls, _ in CLASSES
        if cls is not None and issubclass(cls, PosAssistError)
    }
    rows = [
        _ROW.search(line)
        for line in (errors.__doc__ or "").splitlines()
        if "──" in line or "PosAssistError  " in line
    ]
    drawn = {m.group(1): tuple(int(x) for x in m.groups()[1:]) for m in rows if m is not None}
    assert len(drawn) >= 15
    for name, (close, status, exit_code) in drawn.items():
        cls = by_name[name]
        assert (cls.close_code, cls.http_status, cls.exit_code) == (close, status, exit_code), name


def _process_exits() -> list[str]:
    """``raise SystemExit``/``sys.exit``/``os._exit`` outside a function named ``main`` or the
    ``if __name__ == "__main__"`` block."""
    found = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        allowed: set[int] = set()
        for node in ast.walk(tree):
            is_main = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (
                node.name == "main"
            )
            is_guard = isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
            if is_main or is_guard:
                allowed.update(id(inner) for inner in ast.walk(node))
        for node in ast.walk(tree):
            if id(node) in allowed:
                continue
            text = ""
            if isinstance(node, ast.Raise) and node.exc is not None:
                text = ast.unparse(node.exc)
                if not text.startswith("SystemExit"):
                    text = ""
            elif isinstance(node, ast.Call):
                called = ast.unparse(node.func)
                text = called if called in ("sys.exit", "os._exit", "exit", "quit") else ""
            if text:
                found.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}: {text}")
    return found


def test_only_a_main_ends_the_process() -> None:
    assert _process_exits() == []


def test_the_docstring_draws_every_class_of_protocol_errors() -> None:
    from posassist.protocol import errors

    drawn = errors.__doc__ or ""
    for name, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, PosAssistError):
            assert name in drawn
