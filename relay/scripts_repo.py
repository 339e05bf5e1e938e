"""The relay's side of the vetted-script repository: serve it read-only, keep timestamp fresh.

``posassist-scripts publish --to DATA`` writes ``DATA/scripts/{metadata,targets,keys}``. The relay
holds only the online snapshot and timestamp keys (``keys/``, never served) and re-signs
``timestamp.json`` (and ``N.snapshot.json`` when it too nears expiry) before agents would refuse
it as frozen. It can't sign targets, so it can't add or change a script (docs/scripts.md#trust).

``create_app`` (relay/app.py) adds these routes when the data directory holds a published
repository; agents then fetch ``http(s)://relay/v1/scripts/metadata/`` and ``…/targets/``
through client/http.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Snapshot, Timestamp
from tuf.api.serialization.json import JSONSerializer

from posassist.protocol.signing import private_key_from_pem

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from aiohttp import web

__all__ = [
    "METADATA_PREFIX",
    "SNAPSHOT_LIFETIME",
    "TARGETS_PREFIX",
    "TIMESTAMP_LIFETIME",
    "add_script_routes",
    "refresh_online_metadata",
]

log = logging.getLogger("posassist.relay.scripts")

METADATA_PREFIX = "/v1/scripts/metadata"
TARGETS_PREFIX = "/v1/scripts/targets"
TIMESTAMP_LIFETIME = timedelta(days=1)
SNAPSHOT_LIFETIME = timedelta(days=7)
_SERIALIZER = JSONSerializer(compact=False)


def _signer(repo_dir: Path, role: str) -> CryptoSigner:
    return CryptoSigner(private_key_from_pem((repo_dir / "keys" / f"{role}.pem").read_bytes()))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def refresh_online_metadata(
    repo_dir: Path,
    now: datetime,
    *,
    timestamp_lifetime: timedelta = TIMESTAMP_LIFETIME,
    snapshot_lifetime: timedelta = SNAPSHOT_LIFETIME,
    force: bool = False,
) -> bool:
    """Re-sign timestamp (and snapshot) when less than half their lifetime is left; blocking.

    Returns True if a new timestamp was written. Versions only go up, so agents that saw the old
    one accept the new one.
    """
    meta = repo_dir / "metadata"
    ts_md = Metadata[Timestamp].from_bytes((meta / "timestamp.json").read_bytes())
    timestamp = ts_md.signed
    if not force and timestamp.expires - now > timestamp_lifetime / 2:
        return False
    snap_version = timestamp.snapshot_meta.version
    snap_md = Metadata[Snapshot].from_bytes((meta / f"{snap_version}.snapshot.json").read_bytes())
    if force or snap_md.signed.expires - now <= snapshot_lifetime / 2:
        snap_md.signed.version += 1
        snap_md.signed.expires = (now + snapshot_lifetime).replace(microsecond=0)
        snap_md.signatures.clear()
        snap_md.sign(_signer(repo_dir, "snapshot"))
        snap_version = snap_md.signed.version
        _write_atomic(meta / f"{snap_version}.snapshot.json", snap_md.to_bytes(_SERIALIZER))
    timestamp.version += 1
    timestamp.expires = (now + timestamp_lifetime).replace(microsecond=0)
    timestamp.snapshot_meta = MetaFile(version=snap_version)
    ts_md.signatures.clear()
    ts_md.sign(_signer(repo_dir, "timestamp"))
    _write_atomic(meta / "timestamp.json", ts_md.to_bytes(_SERIALIZER))
    return True


def add_script_routes(
    app: web.Application,
    repo_dir: Path,
    *,
    check_interval: float = 600.0,
    timestamp_lifetime: timedelta = TIMESTAMP_LIFETIME,
) -> None:
    """Serve ``repo_dir/metadata`` and ``repo_dir/targets`` read-only, and keep timestamp fresh.

    The ``keys`` folder is never served. A background task checks every ``check_interval``
    seconds and re-signs in a worker thread.
    """
    app.router.add_static(METADATA_PREFIX, repo_dir / "metadata", follow_symlinks=False)
    app.router.add_static(TARGETS_PREFIX, repo_dir / "targets", follow_symlinks=False)

    async def resigner(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                try:
                    renewed = await asyncio.to_thread(
                        refresh_online_metadata,
                        repo_dir,
                        datetime.now(UTC),
                        timestamp_lifetime=timestamp_lifetime,
                    )
                    if renewed:
                        log.info("re-signed the script repository's timestamp")
                except Exception:
                    log.exception("could not re-sign the script repository's timestamp")
                await asyncio.sleep(check_interval)

        task = asyncio.create_task(loop(), name="scripts timestamp")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.append(resigner)


def published_root_hash(repo_dir: Path) -> str | None:
    """SHA-256 of the repository's current root metadata (what new agents pin), if published."""
    first_root = repo_dir / "metadata" / "root.json"
    if not first_root.is_file():
        return None
    return hashlib.sha256(first_root.read_bytes()).hexdigest()
