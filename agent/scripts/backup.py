"""Back up the files a script's manifest names, and restore them byte for byte, hashes verified.

A backup is a folder ``<root>/<backup id>/`` with ``index.json`` (path, existed?, size, SHA-256,
mode) and one numbered copy per file. Symbolic links are never followed: a listed path that is a
link, or sits under one, is refused, and restore replaces the directory entry itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Dict, List, Mapping, Optional, Sequence, Tuple

from posassist.agent.errors import BackupError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "BackupEntry",
    "BackupRecord",
    "BackupStore",
    "RestoreResult",
    "expand_paths",
    "sha256_file",
]

_ID = re.compile(r"\A\d{8}T\d{6}Z-[0-9a-f]{8}\Z")
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
_CHUNK = 1024 * 1024


def expand_paths(templates: Sequence[str], values: Mapping[str, str]) -> List[str]:
    """Replace ``${NAME}`` placeholders (``${DATA}``, ``${POS_DATA}``…) in the manifest's paths.

    Raises:
        BackupError: a placeholder has no value, or a path is not absolute once expanded.
    """
    out = []
    for template in templates:

        def value(match: Any) -> str:
            name = match.group(1)
            if name not in values:
                raise BackupError(f"backup path uses an unknown placeholder ${{{name}}}")
            return values[name]

        path = _PLACEHOLDER.sub(value, template)
        if not os.path.isabs(path):
            raise BackupError(f"backup path is not absolute: {path}")
        out.append(os.path.normpath(path))
    return out


def _copy(src: BinaryIO, dst: BinaryIO) -> Tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while True:
        block = src.read(_CHUNK)
        if not block:
            break
        digest.update(block)
        dst.write(block)
        size += len(block)
    return digest.hexdigest(), size


def sha256_file(path: str) -> Tuple[str, int]:
    """SHA-256 (hex) and size of a regular file, read without following a final symlink."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        digest, size = hashlib.sha256(), 0
        while True:
            block = f.read(_CHUNK)
            if not block:
                return digest.hexdigest(), size
            digest.update(block)
            size += len(block)


def _check_parents(path: str) -> None:
    """Refuse a path with a link among its parents (it would lead out of place)."""
    parent = os.path.dirname(path)
    if os.path.realpath(parent) != os.path.normpath(os.path.abspath(parent)):
        raise BackupError(f"a parent of {path} is a symbolic link")


def _check_in_place(path: str) -> None:
    """Refuse a path that is a link or has a link among its parents."""
    _check_parents(path)
    if os.path.islink(path):
        raise BackupError(f"{path} is a symbolic link")


@dataclass(frozen=True)
class BackupEntry:
    """One listed path: whether it existed, and if so its bytes' hash, size and mode."""

    path: str
    existed: bool
    sha256: str = ""
    size: int = 0
    mode: int = 0
    copy: str = ""


@dataclass(frozen=True)
class BackupRecord:
    """A backup made before a run; ``id`` is what a technician's restore request names."""

    id: str
    created_at: float
    entries: Tuple[BackupEntry, ...]

    def to_json(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "entries": [e.__dict__ for e in self.entries],
        }


@dataclass(frozen=True)
class RestoreResult:
    """What a restore did; ``verified`` when every restored file hashes as it did at backup."""

    backup_id: str
    restored: Tuple[str, ...]
    removed: Tuple[str, ...]
    unchanged: Tuple[str, ...]
    verified: bool


class BackupStore:
    """Backups under the agent's data directory (``<data dir>/backups``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def backup(self, paths: Sequence[str], now: Optional[float] = None) -> BackupRecord:
        """Copy each of ``paths`` (absolute, expanded) into a new backup (blocking I/O).

        Raises:
            BackupError: a path is a link, under a link, a directory or unreadable; nothing is
                kept in that case.
        """
        created = time.time() if now is None else now
        backup_id = (
            time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created)) + "-" + secrets.token_hex(4)
        )
        folder = self.root / backup_id
        folder.mkdir(parents=True, mode=0o700)
        try:
            entries = []
            for n, path in enumerate(paths):
                if not os.path.isabs(path):
                    raise BackupError(f"backup path is not absolute: {path}")
                _check_in_place(path)
                try:
                    info = os.lstat(path)
                except FileNotFoundError:
                    entries.append(BackupEntry(path=path, existed=False))
                    continue
                if not stat.S_ISREG(info.st_mode):
                    raise BackupError(f"{path} is not a regular file (directories: not yet)")
                copy = f"{n:03d}"
                fd = os.open(
                    path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
                )
                with os.fdopen(fd, "rb") as src, open(folder / copy, "xb") as dst:
                    digest, size = _copy(src, dst)
                    dst.flush()
                    os.fsync(dst.fileno())
                entries.append(
                    BackupEntry(
                        path=path,
                        existed=True,
                        sha256=digest,
                        size=size,
                        mode=stat.S_IMODE(info.st_mode),
                        copy=copy,
                    )
                )
            record = BackupRecord(id=backup_id, created_at=created, entries=tuple(entries))
            tmp = folder / "index.json.tmp"
            tmp.write_text(json.dumps(record.to_json(), indent=2), encoding="utf-8")
            os.replace(tmp, folder / "index.json")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return record

    def load(self, backup_id: str) -> BackupRecord:
        """The record of an earlier backup.

        Raises:
            BackupError: the id is malformed or unknown, or its index is unreadable.
        """
        if not _ID.match(backup_id):
            raise BackupError("malformed backup id")
        try:
            raw = json.loads((self.root / backup_id / "index.json").read_text(encoding="utf-8"))
            entries = tuple(BackupEntry(**e) for e in raw["entries"])
            return BackupRecord(id=raw["id"], created_at=raw["created_at"], entries=entries)
        except FileNotFoundError:
            raise BackupError(f"no backup {backup_id}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"backup {backup_id} index unreadable: {exc}") from None

    def restore(self, backup_id: str) -> RestoreResult:
        """Put every path of a backup back as it was, then verify the hashes (blocking I/O).

        A path that did not exist at backup time is removed. A file already identical is left
        alone. Each file is written beside its target and renamed over it, so a crash leaves the
        old or the restored bytes, never a mix.

        Raises:
            BackupError: the backup is unknown or damaged (its copy no longer matches its hash),
                a path now sits under a symbolic link, or a restored file does not verify.
        """
        record = self.load(backup_id)
        folder = self.root / backup_id
        # check every copy before touching anything, so a damaged backup changes nothing
        for entry in record.entries:
            if entry.existed and sha256_file(str(folder / entry.copy)) != (
                entry.sha256,
                entry.size,
            ):
                raise BackupError(f"backup copy of {entry.path} is damaged")
        restored, removed, unchanged = [], [], []
        for entry in record.entries:
            path = entry.path
            parent = os.path.dirname(path)
            _check_parents(path)
            if not entry.existed:
                if os.path.islink(path) or os.path.isfile(path):
                    os.unlink(path)
                    removed.append(path)
                elif os.path.isdir(path):
                    shutil.rmtree(path)  # rmtree never follows links inside
                    removed.append(path)
                continue
            if not os.path.islink(path) and os.path.isfile(path):
                if sha256_file(path) == (entry.sha256, entry.size):
                    os.chmod(path, entry.mode)
                    unchanged.append(path)
                    continue
            elif os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            os.makedirs(parent, exist_ok=True)
            tmp = f"{path}.posassist-restore-{secrets.token_hex(4)}"
            try:
                with open(folder / entry.copy, "rb") as src, open(tmp, "xb") as dst:
                    digest, size = _copy(src, dst)
                    dst.flush()
                    os.fsync(dst.fileno())
                if (digest, size) != (entry.sha256, entry.size):
                    raise BackupError(f"backup copy of {path} changed while restoring")
                os.chmod(tmp, entry.mode)
                os.replace(tmp, path)  # replaces a link itself, never its target
            except BaseException:
                if os.path.lexists(tmp):
                    os.unlink(tmp)
                raise
            restored.append(path)
        verified = all(
            sha256_file(e.path) == (e.sha256, e.size) if e.existed else not os.path.lexists(e.path)
            for e in record.entries
        )
        if not verified:
            raise BackupError(f"restore of {backup_id} did not verify")
        return RestoreResult(
            backup_id=backup_id,
            restored=tuple(restored),
            removed=tuple(removed),
            unchanged=tuple(unchanged),
            verified=verified,
        )
