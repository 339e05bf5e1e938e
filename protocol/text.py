"""Text from a peer made safe for a terminal: the one place escape sequences are stripped.

Pure, Python 3.8. The console prints every string an agent or the relay supplies through
:func:`printable` (console/render.py re-exports it); the agent does the same with what the relay
sends it; :func:`posassist.protocol.errors.error_line` applies it to every error a command prints.
"""

from __future__ import annotations

import re

__all__ = ["printable"]

#: Terminal escape sequences, 7-bit (ESC …) and 8-bit (C1) forms: CSI up to its final byte,
#: OSC/DCS/SOS/PM/APC up to their terminator (or the end of the text), any other ESC sequence.
_ESCAPES = re.compile(
    r"""
    (?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?
  | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?
  | \x1b[ -/]*[0-~]?
    """,
    re.VERBOSE,
)
#: What is left to drop: C0 controls but newline and tab, DEL, C1, and the bidirectional overrides
#: and isolates that make text read in another order than it is stored.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, *, multiline: bool = True) -> str:
    """``text`` from a peer made safe to print on a terminal.

    Escape sequences and control characters are removed; ``\\n`` and ``\\t`` stay when
    ``multiline`` (script output), else they become spaces. ``\\r\\n`` becomes ``\\n``; a lone
    ``\\r`` (which would let a line overwrite what was printed before it) is dropped.
    """
    text = _CONTROLS.sub("", _ESCAPES.sub("", text.replace("\r\n", "\n")))
    return text if multiline else text.replace("\n", " ").replace("\t", " ")
