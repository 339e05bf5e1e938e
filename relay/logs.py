"""Logging set-up for the relay: plain lines, or one JSON object per line (``--log-json``)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_SECRET_WORDS = ("token", "password", "secret")
_STANDARD = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    """ts, level, logger, msg and any ``extra`` fields; fields named like secrets are masked."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                masked = any(word in key.lower() for word in _SECRET_WORDS)
                entry[key] = "***" if masked else value
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", *, json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
