"""Verify a vetted script against the TUF repository before every run (docs/scripts.md#verify).

Python 3.8-compatible. ``tuf`` is imported inside :func:`verify_script` only, so an idle agent
never loads it. Every refusal is a :class:`ScriptVerificationError` whose ``reason`` names why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Set, Tuple, Union

from posassist.client.http import HttpError
from posassist.protocol.manifest import Manifest, ManifestError, parse_manifest
from posassist.protocol.pins import PinMismatch

from ..errors import AgentError

__all__ = [
    "MANIFEST_FIELD",
    "REASONS",
    "ScriptVerificationError",
    "refresh_metadata",
    "verify_script",
]

#: Where the signed target's ``custom`` metadata carries the manifest (console/scripts_repo.py).
MANIFEST_FIELD = "posassist-manifest"
#: The root field with each role's minimum version, set by a retirement (console/scripts_repo).
MIN_VERSIONS_FIELD = "x-posassist-min-versions"
#: The most bytes one download from the repository may have, whatever tuf allows.
MAX_DOWNLOAD = 64 * 1024 * 1024
#: Path tiers, tried in this order; ``high`` is the role with the two-approver threshold.
TIERS = ("high", "low")

REASONS = {
    "root-mismatch": "the trusted root does not match the enrolment token's root hash",
    "unsigned": "metadata is not signed by enough trusted keys",
    "rollback": "the repository offered older metadata than the agent has seen",
    "expired": "the repository's metadata has expired",
    "tampered": "a file or metadata does not match its signed hash or length",
    "not-found": "the script version is not in the signed repository",
    "oversized": "the script is larger than the agent accepts",
    "below-threshold": "a risk C script is not signed by two approvers",
    "bad-manifest": "the signed manifest is invalid or inconsistent",
    "invalid-metadata": "the repository's metadata is invalid",
    "unreachable": "the script repository could not be reached",
}


class ScriptVerificationError(AgentError):
    """The script is refused before anything runs; ``reason`` is a key of :data:`REASONS`."""

    public_reason = "script verification failed"
    public_reason_zh = "脚本校验未通过"

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        text = REASONS[reason]
        super().__init__(f"{reason}: {text}" + (f" ({detail})" if detail else ""))


def _read_root(trusted_root: Union[bytes, str, Path]) -> bytes:
    if isinstance(trusted_root, bytes):
        return trusted_root
    return Path(trusted_root).read_bytes()


def _prepare_cache(cache_dir: Path, pinned: str) -> bool:
    """Make the metadata cache; start it afresh if it was seeded by another root.

    Returns True when a local ``root.json`` (already verified from the pinned root) exists.
    """
    metadata_dir = cache_dir / "metadata"
    marker = cache_dir / "pinned-root.sha256"
    if marker.is_file() and marker.read_text().strip() != pinned:
        shutil.rmtree(metadata_dir, ignore_errors=True)
        shutil.rmtree(cache_dir / "targets", ignore_errors=True)
    metadata_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(pinned + "\n")
    return (metadata_dir / "root.json").is_file()


def _pinned_fetcher(pin: str) -> Any:
    """A tuf fetcher for an https relay trusted by its TLS key pin alone (no CA, no hostname),
    the same trust as the agent's websocket (docs/protocol.md#enrolment), through client/http.py."""
    from tuf.api.exceptions import DownloadHTTPError
    from tuf.ngclient.fetcher import FetcherInterface

    from posassist.client import http

    class PinnedFetcher(FetcherInterface):
        def _fetch(self, url: str) -> Iterator[bytes]:
            # tuf caps each file's length itself; MAX_DOWNLOAD is only the backstop.
            with http.stream("GET", url, pin=pin, timeout=30, max_bytes=MAX_DOWNLOAD) as answer:
                if answer.status != 200:
                    raise DownloadHTTPError(f"HTTP {answer.status} for {url}", answer.status)
                yield from answer.iter_bytes()

    return PinnedFetcher()


def _updater_parameters(updater_class: Any) -> Set[str]:
    import inspect

    return set(inspect.signature(updater_class.__init__).parameters)


def verify_script(
    metadata_url: str,
    targets_url: str,
    trusted_root: Union[bytes, str, Path],
    cache_dir: Union[str, Path],
    script_id: str,
    version: str,
    max_size: int,
    *,
    root_hash: Optional[str] = None,
    tls_pin: Optional[str] = None,
) -> Tuple[Manifest, Path]:
    """Refresh the repository's metadata and verify one script version; blocking.

    Args:
        metadata_url: base URL of the metadata (``…/v1/scripts/metadata/``).
        targets_url: base URL of the targets (``…/v1/scripts/targets/``).
        trusted_root: the root metadata pinned at enrolment (bytes or a file).
        cache_dir: the agent's cache; metadata and verified files persist here between runs.
        script_id: the script's id; version: its ``MAJOR.MINOR.PATCH``.
        max_size: the most bytes the script's files may add up to.
        root_hash: the approvers' root hash; when given, ``trusted_root`` must hash to it.
        tls_pin: the relay's TLS key pin, required for https URLs (the relay is trusted by it).

    Returns:
        The manifest from the signed metadata and the folder holding the verified files.

    Raises:
        ScriptVerificationError: with ``reason`` naming why (see :data:`REASONS`).
    """
    cache = Path(cache_dir)
    with _mapped_errors():
        updater = _refreshed(metadata_url, targets_url, trusted_root, cache, root_hash, tls_pin)
        return _verify_target(updater, cache, script_id, version, max_size)


def refresh_metadata(
    metadata_url: str,
    targets_url: str,
    trusted_root: Union[bytes, str, Path],
    cache_dir: Union[str, Path],
    *,
    root_hash: Optional[str] = None,
    tls_pin: Optional[str] = None,
) -> Dict[str, int]:
    """Refresh every role's metadata into the cache, without fetching a script; blocking.

    This keeps the rollback floor moving (docs/scripts.md#revocation): what the cache holds is
    what the next answer may not go below, so a till that refreshed after a retirement refuses a
    relay that serves the older role again. Returns role → version now trusted.

    Raises:
        ScriptVerificationError: as :func:`verify_script`.
    """
    cache = Path(cache_dir)
    with _mapped_errors():
        updater = _refreshed(metadata_url, targets_url, trusted_root, cache, root_hash, tls_pin)
        for tier in TIERS:  # loads (and checks) each delegated role, as a lookup would
            updater.get_targetinfo(f"{tier}/-/0.0.0/manifest.json")
        return _trusted_versions(cache)


def _trusted_versions(cache: Path) -> Dict[str, int]:
    snapshot = json.loads((cache / "metadata" / "snapshot.json").read_bytes())
    meta = snapshot["signed"]["meta"]
    return {name[: -len(".json")]: int(info["version"]) for name, info in meta.items()}


def _check_floors(cache: Path) -> None:
    """Refuse a snapshot that pins a role below the version the (approver-signed, out-of-band
    pinned) root demands: a retirement's floor, which a relay can't lower (console/scripts_repo.py
    :data:`MIN_VERSIONS_FIELD`)."""
    root = json.loads((cache / "metadata" / "root.json").read_bytes())
    floors = root["signed"].get(MIN_VERSIONS_FIELD, {})
    if not isinstance(floors, dict):
        raise ScriptVerificationError("invalid-metadata", "bad minimum versions in root")
    trusted = _trusted_versions(cache)
    for role, floor in floors.items():
        if type(floor) is not int or trusted.get(str(role), 0) < floor:
            raise ScriptVerificationError(
                "rollback", f"{str(role)[:32]} is below the version the root requires"
            )


def _refreshed(
    metadata_url: str,
    targets_url: str,
    trusted_root: Union[bytes, str, Path],
    cache: Path,
    root_hash: Optional[str],
    tls_pin: Optional[str],
) -> Any:
    """An ngclient Updater over ``cache``, refreshed (root, timestamp, snapshot, targets)."""
    root_bytes = _read_root(trusted_root)
    pinned = hashlib.sha256(root_bytes).hexdigest()
    if root_hash is not None and pinned != root_hash.lower():
        raise ScriptVerificationError("root-mismatch")
    if not _prepare_cache(cache, pinned):
        # Seed the client with the pinned root. (tuf 6 also takes it as ``bootstrap=``; tuf 5.1,
        # the last release whose client imports on Python 3.8, only reads metadata_dir/root.json.)
        (cache / "metadata" / "root.json").write_bytes(root_bytes)

    from tuf.ngclient import Updater

    # tuf 7 requires ``bootstrap`` (None: read metadata_dir/root.json, seeded above from
    # the pinned root); tuf 5.1, for Python 3.8 tills, has no such argument.
    extra: Dict[str, Any] = (
        {"bootstrap": None} if "bootstrap" in _updater_parameters(Updater) else {}
    )
    if metadata_url.startswith("https://"):
        if not tls_pin:
            raise ScriptVerificationError("unreachable", "an https relay needs its TLS pin")
        extra["fetcher"] = _pinned_fetcher(tls_pin)
    updater = Updater(
        metadata_dir=str(cache / "metadata"),
        metadata_base_url=metadata_url,
        target_dir=str(cache / "targets"),
        target_base_url=targets_url,
        **extra,
    )
    updater.refresh()
    _check_floors(cache)
    return updater


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    """tuf's and the transport's exceptions as ScriptVerificationError with a reason."""
    try:
        yield
    except ScriptVerificationError:
        raise
    except Exception as exc:
        mapped = _mapped(exc)
        if mapped is None:
            raise
        raise mapped from None


def _mapped(exc: Exception) -> Optional[ScriptVerificationError]:
    # tuf is imported here, not above: a refusal before any download must not load it
    from tuf.api import exceptions as tuf_errors

    if isinstance(exc, (PinMismatch, HttpError)):  # raised while tuf reads the fetcher's stream
        return ScriptVerificationError("unreachable", exc.public_reason)
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return ScriptVerificationError("unsigned", str(exc))
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return ScriptVerificationError("rollback", str(exc))
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return ScriptVerificationError("expired", str(exc))
    if isinstance(
        exc, (tuf_errors.LengthOrHashMismatchError, tuf_errors.DownloadLengthMismatchError)
    ):
        return ScriptVerificationError("tampered", str(exc))
    if isinstance(exc, tuf_errors.DownloadError):
        return ScriptVerificationError("unreachable", type(exc).__name__)
    if isinstance(exc, (tuf_errors.RepositoryError, ValueError, KeyError, TypeError)):
        return ScriptVerificationError("invalid-metadata", type(exc).__name__)
    if isinstance(exc, OSError):
        return ScriptVerificationError("unreachable", type(exc).__name__)
    return None


def _verify_target(
    updater: Any, cache: Path, script_id: str, version: str, max_size: int
) -> Tuple[Manifest, Path]:
    for tier in TIERS:
        prefix = f"{tier}/{script_id}/{version}/"
        info = updater.get_targetinfo(prefix + "manifest.json")
        if info is not None:
            break
    else:
        raise ScriptVerificationError("not-found", f"{script_id} {version}"[:80])
    raw = info.custom.get(MANIFEST_FIELD)
    try:
        manifest = parse_manifest(raw)
    except ManifestError as exc:
        raise ScriptVerificationError("bad-manifest", str(exc)) from None
    if (manifest.id, manifest.version) != (script_id, version):
        raise ScriptVerificationError("bad-manifest", "manifest names another script or version")
    if manifest.approvals_needed > 1 and tier != "high":
        raise ScriptVerificationError("below-threshold", "risk C script signed as low risk")
    infos: Dict[str, Any] = {"manifest.json": info}
    for name in manifest.files:
        file_info = updater.get_targetinfo(prefix + name)
        if file_info is None:
            raise ScriptVerificationError("not-found", "a file the manifest lists")
        if file_info.custom.get(MANIFEST_FIELD) != raw:
            raise ScriptVerificationError("bad-manifest", "files signed with another manifest")
        infos[name] = file_info
    total = sum(i.length for i in infos.values())
    if total > max_size:
        raise ScriptVerificationError("oversized", f"{total} > {max_size} bytes")
    folder = cache / "targets" / tier / script_id / version
    folder.mkdir(parents=True, exist_ok=True)
    for name, file_info in infos.items():
        path = str(folder / name)
        if updater.find_cached_target(file_info, path) is None:
            updater.download_target(file_info, path)
    # The manifest file must say what the signed custom metadata says.
    if json.loads((folder / "manifest.json").read_bytes().decode("utf-8")) != raw:
        raise ScriptVerificationError("bad-manifest", "manifest.json differs from its metadata")
    _drop_strangers(folder, set(infos))
    return manifest, folder


def _drop_strangers(folder: Path, names: Set[str]) -> None:
    """Remove files in ``folder`` that no signed target names (left by an earlier attempt)."""
    for entry in os.listdir(str(folder)):
        if entry not in names:
            path = folder / entry
            if path.is_dir():
                shutil.rmtree(str(path), ignore_errors=True)
            else:
                path.unlink()
