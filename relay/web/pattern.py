"""A manifest's parameter pattern (a Python regular expression) as an HTML ``pattern``
attribute, which browsers compile with JavaScript's ``v`` flag: inside a character class that
mode wants ``( ) [ ] { } / - \\ |`` and the other reserved punctuators escaped, so
``[A-Za-z0-9-]`` is refused there and the browser then checks nothing. ``None`` when the
pattern can't be converted with confidence: the field then has no ``pattern`` (the relay and
the agent check anyway)."""

from __future__ import annotations

#: Inside a v-mode class these must be escaped to be literal (syntax characters and the
#: ClassSetReservedPunctuators); each may be escaped with a backslash there.
_CLASS_ESCAPE = frozenset("()[]{}/-\\|&!#%,:;<=>@`~^$.*+?")
#: Python-only constructs outside a class (named groups, inline flags, comments, \A \Z...).
_PYTHON_ONLY = ("(?P", "(?#", "(?a", "(?i", "(?L", "(?m", "(?s", "(?u", "(?x", "(?-", "(?(")
_PYTHON_ESCAPES = frozenset("AZ")


def html_pattern(pattern: str | None) -> str | None:
    """``pattern`` for a browser's ``v``-flag ``pattern`` attribute, or ``None``."""
    if not pattern or any(token in pattern for token in _PYTHON_ONLY):
        return None
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n or pattern[i + 1] in _PYTHON_ESCAPES:
                return None
            out.append(pattern[i : i + 2])
            i += 2
        elif ch == "[":
            converted = _class(pattern, i)
            if converted is None:
                return None
            text, i = converted
            out.append(text)
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _class(pattern: str, start: int) -> tuple[str, int] | None:
    """The class starting at ``pattern[start] == "["`` in v-mode, and the index after it."""
    out = ["["]
    i = start + 1
    n = len(pattern)
    if i < n and pattern[i] == "^":
        out.append("^")
        i += 1
    first = True
    can_range = False  # the last atom was a single character that may start a range
    while i < n:
        ch = pattern[i]
        if ch == "]" and not first:
            out.append("]")
            return "".join(out), i + 1
        if ch == "-" and can_range and i + 1 < n and pattern[i + 1] != "]":
            atom = _atom(pattern, i + 1)
            if atom is None or not atom[2]:
                return None
            out.append("-" + atom[0])
            i = atom[1]
            can_range = False
        else:
            atom = _atom(pattern, i)
            if atom is None:
                return None
            out.append(atom[0])
            i = atom[1]
            can_range = atom[2]
        first = False
    return None  # never closed


def _atom(pattern: str, i: int) -> tuple[str, int, bool] | None:
    """One class member at ``i`` in v-mode, the index after it, and whether it is one
    character (so may end or start a range)."""
    ch = pattern[i]
    if ch == "\\":
        if i + 1 >= len(pattern):
            return None
        nxt = pattern[i + 1]
        if nxt in "dDwWsS":
            return pattern[i : i + 2], i + 2, False
        if nxt.isalnum() and nxt not in "nrtfv":
            return None  # \x41, \u..., \b... : not worth the risk
        if nxt.isalnum() or nxt in _CLASS_ESCAPE:
            return pattern[i : i + 2], i + 2, True
        return nxt, i + 2, True  # an escaped ordinary character: itself
    if ch == "[":
        return None  # Python reads it as a literal; v-mode as a nested class
    if ch in _CLASS_ESCAPE:
        return "\\" + ch, i + 1, True
    return ch, i + 1, True
