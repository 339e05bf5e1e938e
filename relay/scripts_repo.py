"""The relay's side of the vetted-script repository: serve it read-only, keep timestamp fresh.

``posassist-scripts publish --to DATA`` writes ``DATA/scripts/{metadata,targets,keys}``. The relay
holds only the online snapshot and timestamp keys (``keys/``, never served) and re-signs
``timestamp.json`` (and ``N.snapshot.json`` when it too nears expiry) before agents would refuse
it as frozen. It can't sign targets, so it can't add or change a script (docs/scripts.md#trust).

``create_app`` (relay/app.py) adds these routes always; they serve whatever is published now
(a publish while the relay runs needs no restart; 404 before the first). Agents fetch
``http(s)://relay/v1/scripts/metadata/`` and ``…/targets/`` through client/http.py.

The relay keeps the first root it ever served in ``DATA/scripts-first-root.json`` (outside
``scripts/``, which a publish replaces) and from then on serves, and makes enrolment tokens for,
only a root that chains from it: each root version N+1 signed by a threshold of root N's keys
and of its own (:func:`anchored_root_hash`; docs/scripts.md#trust).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from posassist.protocol.errors import EXIT_REFUSED, PosAssistError
from posassist.protocol.manifest import Manifest, ManifestError, parse_manifest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from aiohttp import web
    from securesystemslib.signer import CryptoSigner

# TUF and securesystemslib (~5 MB) load only when a repository is published and its metadata
# is read or signed: an idle relay with no scripts never imports them (issue 16).

__all__ = [
    "FIRST_ROOT",
    "METADATA_PREFIX",
    "SNAPSHOT_LIFETIME",
    "TARGETS_PREFIX",
    "TIMESTAMP_LIFETIME",
    "UntrustedRootError",
    "add_script_routes",
    "anchored_root_hash",
    "device_platform",
    "offered_scripts",
    "param_reason",
    "refresh_online_metadata",
    "wrong_platform",
]

log = logging.getLogger("posassist.relay.scripts")

METADATA_PREFIX = "/v1/scripts/metadata"
TARGETS_PREFIX = "/v1/scripts/targets"
TIMESTAMP_LIFETIME = timedelta(days=1)
SNAPSHOT_LIFETIME = timedelta(days=7)
#: Beside ``scripts/`` in the relay's data directory: the first root this relay served.
FIRST_ROOT = "scripts-first-root.json"
#: The most root versions a chain may step through (each one a file read and two checks).
MAX_ROOT_CHAIN = 1024


class UntrustedRootError(PosAssistError):
    """The published repository's root does not chain from the first root this relay served:
    someone replaced the repository. The relay neither serves it nor makes tokens for it."""

    exit_code = EXIT_REFUSED
    public_reason = "the script repository is not the one this relay was set up with"
    public_reason_zh = "脚本库不是本服务器最初使用的脚本库"


def _signer(repo_dir: Path, role: str) -> CryptoSigner:
    from securesystemslib.signer import CryptoSigner

    from posassist.protocol.signing import private_key_from_pem

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
    from tuf.api.metadata import Metadata, MetaFile, Snapshot, Timestamp
    from tuf.api.serialization.json import JSONSerializer

    serializer = JSONSerializer(compact=False)
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
        _write_atomic(meta / f"{snap_version}.snapshot.json", snap_md.to_bytes(serializer))
    timestamp.version += 1
    timestamp.expires = (now + timestamp_lifetime).replace(microsecond=0)
    timestamp.snapshot_meta = MetaFile(version=snap_version)
    ts_md.signatures.clear()
    ts_md.sign(_signer(repo_dir, "timestamp"))
    _write_atomic(meta / "timestamp.json", ts_md.to_bytes(serializer))
    return True


#: A metadata file name (``timestamp.json``, ``3.snapshot.json``…) and one part of a target's path.
_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


class _Served:
    """The repository as published now: files are looked up per request, so a repository
    published (or re-published) while the relay runs is served at once, and a changed root is
    checked against the anchor before anything of it is served again."""

    def __init__(self, app: web.Application, repo_dir: Path) -> None:
        self.app = app
        self.repo_dir = repo_dir
        self.root_seen: tuple[int, int, int] | None = None
        self.refusal: str | None = None
        self.lock = asyncio.Lock()

    def _root_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.repo_dir / "metadata" / "root.json")
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    async def _check_root(self) -> None:
        """Check the anchor again when root.json changed (a publish); remember the verdict."""
        stamp = await asyncio.to_thread(self._root_stamp)
        if stamp == self.root_seen:
            return
        async with self.lock:
            if stamp == self.root_seen:
                return
            try:
                root_hash = await asyncio.to_thread(anchored_root_hash, self.repo_dir)
            except UntrustedRootError as exc:
                log.error("not serving the script repository: %s", exc)
                self.refusal = str(exc)
            else:
                self.refusal = None
                if root_hash is not None:
                    self._new_root_hash(root_hash)
            self.root_seen = stamp

    def _new_root_hash(self, root_hash: str) -> None:
        """Enrolment tokens made through the API from now on carry the published root."""
        from dataclasses import replace

        from .state import STATE

        state = self.app.get(STATE)
        if state is None or state.config.root_hash == root_hash:
            return
        if state.config.root_hash is None:
            log.info("serving the script repository published with root %s", root_hash)
        state.config = replace(state.config, root_hash=root_hash)

    def _file(self, folder: str, parts: list[str]) -> Path | None:
        """The file to serve, or None: only plain names, no link anywhere on the way."""
        if not parts or not all(_NAME.match(part) for part in parts):
            return None
        try:
            base = (self.repo_dir / folder).resolve(strict=True)  # DATA itself may be a link
            path = base.joinpath(*parts)
            if path.resolve(strict=True) != path or not path.is_file():
                return None  # a link inside the repository (never followed), or a folder
        except (OSError, RuntimeError):
            return None
        return path

    async def serve(
        self, request: web.Request, folder: str, parts: list[str]
    ) -> web.StreamResponse:
        from aiohttp import web

        await self._check_root()
        if self.refusal is not None:
            raise web.HTTPServiceUnavailable(
                text=f"script repository refused: {self.refusal} / 脚本库被拒绝"
            )
        path = await asyncio.to_thread(self._file, folder, parts)
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def metadata(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, "metadata", [request.match_info["name"]])

    async def target(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, "targets", request.match_info["path"].split("/"))


def add_script_routes(
    app: web.Application,
    repo_dir: Path,
    *,
    check_interval: float = 600.0,
    timestamp_lifetime: timedelta = TIMESTAMP_LIFETIME,
) -> None:
    """Serve ``repo_dir/metadata`` and ``repo_dir/targets`` read-only, and keep timestamp fresh.

    Whether published before the relay started or while it runs (then without a restart). The
    ``keys`` folder is never served. A background task checks every ``check_interval`` seconds
    and re-signs in a worker thread. A published repository whose root does not chain from the
    anchor stops the start (UntrustedRootError); one published so while running is not served.
    """
    anchored_root_hash(repo_dir)  # UntrustedRootError: a replaced repository is never served
    served = _Served(app, repo_dir)
    app.router.add_get(METADATA_PREFIX + "/{name}", served.metadata)
    app.router.add_get(TARGETS_PREFIX + "/{path:.+}", served.target)

    def refresh() -> bool:
        if not (repo_dir / "metadata" / "timestamp.json").is_file():
            return False  # nothing published yet
        return refresh_online_metadata(
            repo_dir, datetime.now(UTC), timestamp_lifetime=timestamp_lifetime
        )

    async def resigner(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                try:
                    if await asyncio.to_thread(refresh):
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


def _chain_problem(first: bytes, repo_dir: Path) -> str | None:
    """Why ``repo_dir``'s current root does not chain from ``first``, or None when it does."""
    from tuf.api.exceptions import UnsignedMetadataError
    from tuf.api.metadata import Metadata, Root

    meta = repo_dir / "metadata"
    current = (meta / "root.json").read_bytes()
    if current == first:
        return None
    try:
        trusted = Metadata[Root].from_bytes(first)
        newest = Metadata[Root].from_bytes(current)
        if newest.signed.version <= trusted.signed.version:
            return f"root version {newest.signed.version} is not after {trusted.signed.version}"
        if newest.signed.version - trusted.signed.version > MAX_ROOT_CHAIN:
            return "the root chain is too long"
        for version in range(trusted.signed.version + 1, newest.signed.version + 1):
            step = meta / f"{version}.root.json"
            if not step.is_file():
                return f"root version {version} is missing"
            raw = step.read_bytes()
            candidate = Metadata[Root].from_bytes(raw)
            if candidate.signed.version != version:
                return f"{step.name} holds version {candidate.signed.version}"
            trusted.verify_delegate("root", candidate)  # the previous root's keys vouch for it
            candidate.verify_delegate("root", candidate)  # and so do its own
            trusted = candidate
        if raw != current:
            return "root.json is not the newest root of the chain"
    except UnsignedMetadataError as exc:
        return f"not signed by the previous root's keys ({exc})"
    except (ValueError, KeyError, TypeError) as exc:  # tuf's DeserializationError is a ValueError
        return f"root metadata is invalid ({type(exc).__name__})"
    return None


def anchored_root_hash(repo_dir: Path) -> str | None:
    """The SHA-256 of the published root (for tokens), once it chains from the first root served.

    The first call with a published repository records its root as the anchor; later calls raise
    :class:`UntrustedRootError` for a root that the anchor's keys did not (transitively) sign.
    Returns None when no repository is published. Blocking.
    """
    current = repo_dir / "metadata" / "root.json"
    if not current.is_file():
        return None
    anchor = repo_dir.parent / FIRST_ROOT
    if not anchor.is_file():
        tmp = anchor.with_name(anchor.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(current.read_bytes())
        os.replace(tmp, anchor)
        log.info("recorded the script repository's first root (%s)", published_root_hash(repo_dir))
    problem = _chain_problem(anchor.read_bytes(), repo_dir)
    if problem is not None:
        raise UntrustedRootError(problem)
    return published_root_hash(repo_dir)


# --- what the published repository offers (the run form, and the relay's platform check) --------

#: The delegated targets roles a publish writes (docs/scripts.md), and where a target keeps its
#: manifest.
_ROLES = ("low-risk", "high-risk")
_MANIFEST_FIELD = "posassist-manifest"


def _read(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))["signed"]


#: scripts folder → (its timestamp.json's identity, what it offered then): a run's check reads
#: the repository again only after a publish or a timestamp re-signing (both replace the file)
_OFFERED: dict[str, tuple[tuple[int, int, int], dict[tuple[str, str], Manifest]]] = {}


def offered_scripts(scripts_dir: Path) -> dict[tuple[str, str], Manifest]:
    """(id, version) → manifest of every script the published repository lists, as published
    (the relay's own files; devices verify the signatures). Empty without a repository; a
    manifest that does not parse is left out (and logged). Blocking: run it in a worker."""
    try:
        stat = (scripts_dir / "metadata" / "timestamp.json").stat()
    except OSError:
        return {}
    stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    cached = _OFFERED.get(str(scripts_dir))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    offered = _read_offered(scripts_dir)
    if len(_OFFERED) >= 64:  # one per relay application; tests make many
        _OFFERED.clear()
    _OFFERED[str(scripts_dir)] = (stamp, offered)
    return offered


def _read_offered(scripts_dir: Path) -> dict[tuple[str, str], Manifest]:
    metadata = scripts_dir / "metadata"
    try:
        timestamp = _read(metadata / "timestamp.json")
        snapshot = _read(
            metadata / f"{timestamp['meta']['snapshot.json']['version']}.snapshot.json"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    offered: dict[tuple[str, str], Manifest] = {}
    for role in _ROLES:
        try:
            version = snapshot["meta"][f"{role}.json"]["version"]
            targets = _read(metadata / f"{version}.{role}.json")["targets"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for path, info in targets.items():
            raw = info.get("custom", {}).get(_MANIFEST_FIELD) if isinstance(info, dict) else None
            try:
                manifest = parse_manifest(raw)
            except ManifestError as exc:
                log.warning(
                    "published target %s has a manifest the relay can't read: %s", path, exc
                )
                continue
            offered[(manifest.id, manifest.version)] = manifest
    return offered


def device_platform(facts: Any) -> str:
    """``windows`` or ``linux`` from a device's reported ``os`` fact; "" when it did not say."""
    os_name = facts.get("os") if hasattr(facts, "get") else None
    if not isinstance(os_name, str) or not os_name:
        return ""
    return "windows" if os_name.lower().startswith("windows") else "linux"


def wrong_platform(device: Any, manifest: Manifest) -> tuple[str, str] | None:
    """Why ``manifest`` can't run on ``device`` (its ``platforms`` leave out the OS the till
    reported), as (Chinese, English); None when it can, or the till never said."""
    platform = device_platform(device.facts)
    if not platform or platform in manifest.platforms:
        return None
    allowed = ", ".join(manifest.platforms)
    return (
        f"{manifest.id} 只能在 {allowed} 上运行, 这台收银机是 {platform}",
        f"{manifest.id} runs on {allowed} only; this till runs {platform}",
    )


#: A parameter refusal's English words (protocol/manifest.py) and their Chinese.
_PARAM_ZH = (
    (re.compile(r"\Aparameter '([^']*)' (.*)\Z", re.S), "参数 {0}: {1}"),
    (re.compile(r"\Aunknown parameter\(s\): (.*)\Z", re.S), "未知参数: {0}"),
    (re.compile(r"\Athis script may not run unattended\Z"), "这个脚本不能无人值守运行"),
)
_WHAT_ZH = (
    ("does not match its pattern", "格式不对"),
    ("contains characters that are not allowed", "含有不允许的字符"),
    ("may not start with '-'", "不能以 '-' 开头"),
    ("must be a relative path without '..'", "必须是不含 '..' 的相对路径"),
    ("is required", "必须填写"),
    ("must be an integer", "必须是整数"),
    ("must be a number", "必须是数字"),
    ("must be finite", "必须是有限的数字"),
    ("must be true or false", "必须是 是/否"),
    ("must be text", "必须是文字"),
    ("may not be negative", "不能是负数"),
    ("is below its minimum", "小于最小值"),
    ("is above its maximum", "大于最大值"),
    ("is longer than", "太长"),
    ("must be one of", "只能是以下之一"),
)


def param_reason(english: str) -> str:
    """A parameter refusal in Chinese and English: ``参数 host: 格式不对 / parameter 'host'
    does not match its pattern`` (the English alone when no Chinese is known)."""
    for pattern, zh in _PARAM_ZH:
        found = pattern.match(english)
        if found is None:
            continue
        groups = list(found.groups())
        if groups and pattern is _PARAM_ZH[0][0]:
            what = groups[1]
            words = next((z for e, z in _WHAT_ZH if what.startswith(e)), None)
            if words is None:
                return english
            tail = what[len(next(e for e, z in _WHAT_ZH if z == words)) :].strip()
            groups[1] = f"{words} {tail}".strip()
        return f"{zh.format(*groups)} / {english}"
    return english
