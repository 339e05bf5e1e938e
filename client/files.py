"""The one way posassist makes a private folder or file (readme-walk F1, F20), and reads back
the JSON state it keeps in one.

A folder the product creates is 0700 and a key, database, password or state file 0600 from its
first byte, whatever the umask (it can only take more away). An existing folder keeps its mode:
it was made by someone else, for their reasons. Runs on the till (Python 3.8).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import logging
    from pathlib import Path

__all__ = ["private_dir", "read_state", "write_private"]


def private_dir(path: Path) -> Path:
    """``path`` as a folder, each missing level of it (parents too) made 0700; returns ``path``."""
    missing = []
    level = path
    while not level.exists():
        missing.append(level)
        if level.parent == level:
            break
        level = level.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # made meanwhile by someone else; it keeps its mode
            pass
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a folder")
    return path


def write_private(path: Path, data: Union[bytes, str], *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path``, 0600 from the first byte, in a private folder made if missing.

    The new content replaces the old at once (a temporary file in the same folder, then a
    rename): a reader or a power cut sees the old file or the new one. ``exclusive`` refuses
    (FileExistsError) if ``path`` exists, and writes it in place.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    private_dir(path.parent)
    if exclusive:
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
        os.replace(str(tmp), str(path))
    except BaseException:
        if tmp.exists():  # unlink(missing_ok=) is Python 3.8+, but spell it plainly
            tmp.unlink()
        raise


def read_state(path: Path, what: str, log: logging.Logger) -> Any:
    """The JSON a state file holds; None if there is none yet, and None with a warning on ``log``
    if it can't be read or parsed (the caller starts empty: a damaged file stops nothing)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s in %s not read, starting empty: %s", what, path, exc)
        return None
