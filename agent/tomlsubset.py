"""A parser for the small TOML subset that POS profiles use (``tomllib`` is 3.11+, tills run 3.8).

Supported: comments, ``[table]`` and ``[a.b]`` headers, ``key = value`` with bare or quoted keys,
basic ("...") and literal ('...') strings, integers, floats, booleans, and arrays of those
(which may span lines). Anything else (inline tables, dates, multi-line strings, arrays of
tables) is refused with :class:`TomlSubsetError` naming the line, never silently misread.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

__all__ = ["TomlSubsetError", "loads"]


class TomlSubsetError(ValueError):
    """The text is not in the supported TOML subset (or not TOML at all)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_INT = re.compile(r"[+-]?(0|[1-9](_?[0-9])*)")
_FLOAT = re.compile(r"[+-]?(0|[1-9](_?[0-9])*)(\.[0-9](_?[0-9])*)?([eE][+-]?[0-9](_?[0-9])*)?")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    @property
    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def fail(self, message: str) -> TomlSubsetError:
        return TomlSubsetError(self.line, message)

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def skip_space(self, newlines: bool = False) -> None:
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in " \t" or (newlines and ch in "\r\n"):
                self.pos += 1
            elif ch == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def end_of_line(self) -> None:
        self.skip_space()
        if self.pos >= len(self.text):
            return
        if self.text.startswith("\r\n", self.pos):
            self.pos += 2
        elif self.peek() == "\n":
            self.pos += 1
        else:
            raise self.fail(f"unexpected {self.peek()!r} after the value")

    def key(self) -> str:
        ch = self.peek()
        if ch in ('"', "'"):
            return self.string()
        match = _BARE_KEY.match(self.text, self.pos)
        if not match:
            raise self.fail("expected a key")
        self.pos = match.end()
        return match.group(0)

    def dotted_key(self) -> List[str]:
        parts = [self.key()]
        self.skip_space()
        while self.peek() == ".":
            self.pos += 1
            self.skip_space()
            parts.append(self.key())
            self.skip_space()
        return parts

    def string(self) -> str:
        quote = self.peek()
        if self.text.startswith(quote * 3, self.pos):
            raise self.fail("multi-line strings are not supported in profiles")
        self.pos += 1
        out: List[str] = []
        while True:
            if self.pos >= len(self.text):
                raise self.fail("unterminated string")
            ch = self.text[self.pos]
            if ch in "\r\n":
                raise self.fail("unterminated string")
            self.pos += 1
            if ch == quote:
                return "".join(out)
            if ch == "\\" and quote == '"':
                out.append(self.escape())
            else:
                out.append(ch)

    def escape(self) -> str:
        ch = self.peek()
        self.pos += 1
        if ch in _ESCAPES:
            return _ESCAPES[ch]
        if ch in ("u", "U"):
            width = 4 if ch == "u" else 8
            digits = self.text[self.pos : self.pos + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise self.fail("bad unicode escape")
            self.pos += width
            return chr(int(digits, 16))
        raise self.fail(f"unknown escape \\{ch}")

    def value(self) -> Any:
        ch = self.peek()
        if ch in ('"', "'"):
            return self.string()
        if ch == "[":
            return self.array()
        if ch == "{":
            raise self.fail("inline tables are not supported in profiles")
        for word, result in (("true", True), ("false", False)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return result
        match = _FLOAT.match(self.text, self.pos)
        if not match or match.end() == self.pos:
            raise self.fail("expected a value (string, number, boolean or array)")
        token = match.group(0)
        after = self.text[match.end() : match.end() + 1]
        if after and after not in " \t\r\n#,]":
            raise self.fail(f"unsupported value near {token + after!r} (dates are not supported)")
        self.pos = match.end()
        plain = token.replace("_", "")
        if _INT.fullmatch(token):
            return int(plain)
        return float(plain)

    def array(self) -> List[Any]:
        self.pos += 1
        items: List[Any] = []
        while True:
            self.skip_space(newlines=True)
            if self.peek() == "]":
                self.pos += 1
                return items
            if not self.peek():
                raise self.fail("unterminated array")
            items.append(self.value())
            self.skip_space(newlines=True)
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "]":
                raise self.fail("expected ',' or ']' in an array")


def _table(root: Dict[str, Any], path: List[str], reader: _Reader) -> Dict[str, Any]:
    table = root
    for part in path:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise reader.fail(f"{part!r} is already a value, not a table")
    return table


def loads(text: str) -> Dict[str, Any]:
    """Parse ``text`` in the supported subset into a dict, like ``tomllib.loads`` would.

    Args:
        text: the profile's text.

    Returns:
        Tables as nested dicts; arrays as lists.

    Raises:
        TomlSubsetError: the text uses something outside the subset, or is malformed.
    """
    reader = _Reader(text.lstrip("\ufeff"))
    root: Dict[str, Any] = {}
    current = root
    defined: List[Tuple[str, ...]] = []
    while True:
        reader.skip_space(newlines=True)
        if reader.pos >= len(reader.text):
            return root
        if reader.peek() == "[":
            if reader.text.startswith("[[", reader.pos):
                raise reader.fail("arrays of tables are not supported in profiles")
            reader.pos += 1
            reader.skip_space()
            path = reader.dotted_key()
            if reader.peek() != "]":
                raise reader.fail("expected ']' after the table name")
            reader.pos += 1
            if tuple(path) in defined:
                raise reader.fail(f"table [{'.'.join(path)}] defined twice")
            defined.append(tuple(path))
            current = _table(root, path, reader)
            reader.end_of_line()
            continue
        path = reader.dotted_key()
        if reader.peek() != "=":
            raise reader.fail("expected '=' after the key")
        reader.pos += 1
        reader.skip_space()
        value = reader.value()
        target = _table(current, path[:-1], reader)
        if path[-1] in target:
            raise reader.fail(f"key {path[-1]!r} defined twice")
        target[path[-1]] = value
        reader.end_of_line()
