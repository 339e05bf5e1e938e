"""The till's own audit log: what the people at this PC decided here, without a relay (a provider
switch asked, refused or done; an uninstall that waited for or cancelled a script).

One JSON object a line in ``audit.log`` in the data folder (0600, appended, never rewritten; past
:data:`MAX_BYTES` it moves to ``audit.log.1`` and a new one starts). docs/agent.md#local-audit.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["MAX_BYTES", "read", "record"]

#: Size of ``audit.log`` past which it is moved to ``audit.log.1`` (the one before is dropped).
MAX_BYTES = 1024 * 1024


def record(
    data_dir: Path,
    action: str,
    outcome: str,
    detail: Optional[Mapping[str, Any]] = None,
    *,
    now: Optional[float] = None,
) -> Dict[str, Any]:
    """Append one record: ``at`` (epoch seconds), ``action``, ``outcome`` (ok, refused, failed…),
    ``actor`` (the OS user), ``detail``. OSError if the data folder can't be written."""
    entry: Dict[str, Any] = {
        "at": time.time() if now is None else now,
        "action": action,
        "outcome": outcome,
        "actor": _actor(),
        "detail": dict(detail or {}),
    }
    line = (json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    path = data_dir / "audit.log"
    try:
        if path.stat().st_size + len(line) > MAX_BYTES:
            os.replace(str(path), str(data_dir / "audit.log.1"))
    except FileNotFoundError:
        pass
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # an installer running as root:
            owner = os.stat(str(data_dir))  # the agent's own user must still append to it
            os.fchown(fd, owner.st_uid, owner.st_gid)
        os.write(fd, line)  # one write of one line: records of two processes never interleave
    finally:
        os.close(fd)
    return entry


def read(data_dir: Path) -> List[Dict[str, Any]]:
    """Every record still kept, oldest first; a damaged line is skipped."""
    entries: List[Dict[str, Any]] = []
    for name in ("audit.log.1", "audit.log"):
        try:
            text = (data_dir / name).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


def _actor() -> str:
    """Who ran the command, as the OS says (``root``, ``DOMAIN\\merchant``); "?" if unknown."""
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no user name in the environment nor in the password database
        return "?"
