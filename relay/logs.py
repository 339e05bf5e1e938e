"""Structured logs for the relay: one JSON object per line (or readable text), secrets masked.

Fields come from ``logging``'s ``extra=`` and from :func:`log_context`, so handlers stay one-liners.

``relay/__main__.py`` calls :func:`configure_logging` once (``--log-json``). Handlers log with
fields (``log.info("agent connected", extra={"device_id": …})``); the API's error middleware
(relay/handlers/api.py) wraps every request in ``log_context(method=…, path=…, peer=…)``, so every
record logged while handling it carries them (tasks started inside inherit them).

Masking: any field whose name contains ``password``, ``passwd``, ``secret``, ``token``,
``authorization``, ``cookie``, ``api_key`` or ``private_key`` (at any depth of a dict or list) is
written as ``"***"``; in message and traceback text, ``Bearer …`` credentials and ``PA1-…``
enrolment tokens are masked too. Don't rely on the text scrub: pass secrets, if ever, as fields.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json as _json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any, Final

__all__ = [
    "MASK",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "log_context",
    "mask_fields",
    "scrub_text",
]

MASK: Final = "***"

_SENSITIVE = re.compile(
    r"password|passwd|secret|token|authorization|cookie|api_?key|private_?key", re.IGNORECASE
)
_TEXT_SECRETS = (
    # An HTTP bearer credential: "Authorization: Bearer abc.def", "bearer=abc".
    (re.compile(r"(?i)\b(bearer)([\s=:]+)[A-Za-z0-9._~+/=-]+"), rf"\1\2{MASK}"),
    # An enrolment token (protocol.enrolment.PREFIX + base64url): one use, but still a credential.
    (re.compile(r"\bPA1-[A-Za-z0-9_-]+"), f"PA1-{MASK}"),
)
# Characters that json.dumps(ensure_ascii=False) leaves raw but line readers split on.
_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "posassist_log_context", default=MappingProxyType({})
)

# Marks the handler configure_logging installed, so calling it again replaces rather than adds.
_OURS = "_posassist_handler"


def mask_fields(value: Any, key: str | None = None) -> Any:
    """``value`` with every field named like a secret replaced by :data:`MASK`, at any depth."""
    if key is not None and _sensitive(key):
        return MASK
    kind = type(value)  # exact types first: every log line passes here (the relay's hot path)
    if kind is str:
        return scrub_text(value)
    if kind in _PLAIN:
        return value
    if isinstance(value, Mapping):
        return {str(k): mask_fields(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_fields(v) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def scrub_text(text: str) -> str:
    """``text`` with bearer credentials and enrolment tokens masked."""
    if _MAYBE_SECRET.search(text) is None:  # one scan for the usual line with none
        return text
    for pattern, replacement in _TEXT_SECRETS:
        text = pattern.sub(replacement, text)
    return text


@functools.lru_cache(maxsize=1024)
def _sensitive(key: str) -> bool:
    return _SENSITIVE.search(key) is not None


_PLAIN: Final = frozenset({int, float, bool, type(None)})
# Where any of _TEXT_SECRETS could match (a superset: the substitutions decide).
_MAYBE_SECRET: Final = re.compile(r"(?i)bearer|PA1-")
# One encoder each, built once (json.dumps with options builds a new one per call).
_LINE_ENCODER: Final = _json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":"))
_FIELD_ENCODER: Final = _json.JSONEncoder(default=str)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every record logged inside the block (and in tasks it starts)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """Context fields, then the record's own ``extra=`` fields (which win on a clash)."""
    fields = dict(_context.get())
    fields.update((k, v) for k, v in vars(record).items() if k not in _RECORD_ATTRS)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (ISO-8601 UTC), ``level``, ``logger``, ``msg``, fields.

    Exceptions go in ``exc`` (the formatted traceback); values JSON can't carry become ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            entry.setdefault(key, value)  # an extra can't pass itself off as ts/level/msg
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        line = _LINE_ENCODER.encode(mask_fields(entry))
        return line.translate(_LINE_BREAKS)


class TextFormatter(logging.Formatter):
    """``2024-05-01T08:00:00.123Z INFO posassist.relay: msg key="value"`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        line = f"{ts.replace('+00:00', 'Z')} {record.levelname} {record.name}: "
        line += scrub_text(record.getMessage())
        fields = mask_fields(_fields(record))
        if fields:
            line += " " + " ".join(f"{k}={_FIELD_ENCODER.encode(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + scrub_text(self.formatException(record.exc_info))
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def configure_logging(
    level: int | str = logging.INFO, json: bool = False, *, stream: IO[str] | None = None
) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (stderr), as JSON or text.

    Calling it again replaces the handler it installed before; other handlers are left alone.

    Returns:
        The handler installed on the root logger.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
