"""The vetted-script repository on The Update Framework: keys, staging, signing and publishing.

This is the approvers' offline side (docs/scripts.md#repository); the relay serves what
:meth:`ScriptRepository.publish` writes and re-signs only timestamp and snapshot.

Roles and thresholds::

    root        offline, people        signs the keys of every top-level role
    targets     offline, people        delegates; lists no script itself
    ├── high-risk  approvers, threshold 2   paths ``high/*/*/*``  (risk C scripts)
    └── low-risk   approvers, threshold 1   paths ``low/*/*/*``   (risk A and B)
    snapshot    online (relay)         pins the versions of targets, high-risk, low-risk
    timestamp   online (relay)         pins snapshot; re-signed daily by the relay

A script version's files are targets ``<tier>/<id>/<version>/<file>`` plus
``<tier>/<id>/<version>/manifest.json``, each carrying the manifest in its ``custom`` metadata
under ``posassist-manifest``. The tier in the path decides which delegation may sign it, so
TUF's own path check keeps a one-approver role from vouching for a ``high/`` target, and the agent
refuses a risk C manifest that arrived under ``low/`` (agent/scripts/verify.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from posassist.client.files import private_dir
from posassist.protocol.errors import PosAssistError
from posassist.protocol.manifest import Manifest, ManifestError, parse_manifest
from posassist.protocol.signing import (
    Ed25519PrivateKey,
    generate_private_key,
    private_key_from_pem,
    private_key_to_pem,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from pathlib import Path

__all__ = [
    "APPROVER_ROLES",
    "MANIFEST_FIELD",
    "MIN_VERSIONS_FIELD",
    "OFFLINE_ROLES",
    "RoleStatus",
    "ScriptRepoError",
    "ScriptRepository",
    "TargetStatus",
    "init_repository",
    "load_signer",
    "root_hash",
    "tier_for",
]

#: The key in a target's ``custom`` metadata that holds the script's manifest.
MANIFEST_FIELD = "posassist-manifest"
#: The root's field of role → lowest version a till accepts (agent/scripts/verify.py checks it).
MIN_VERSIONS_FIELD = "x-posassist-min-versions"
HIGH, LOW = "high-risk", "low-risk"
APPROVER_ROLES = (HIGH, LOW)
OFFLINE_ROLES = ("root", "targets", HIGH, LOW)
TIER_PATH = {HIGH: "high", LOW: "low"}
EXPIRY = {
    "root": timedelta(days=365),
    "targets": timedelta(days=180),
    HIGH: timedelta(days=90),
    LOW: timedelta(days=90),
    "snapshot": timedelta(days=7),
    "timestamp": timedelta(days=1),
}
EXPIRING_SOON = timedelta(days=14)
ONLINE = ("snapshot", "timestamp")
_SERIALIZER = JSONSerializer(compact=False)


class ScriptRepoError(PosAssistError):
    """The script repository can't do what was asked; the message says why. Nothing was written."""

    public_reason = "script repository error"
    public_reason_zh = "脚本库出错"


def tier_for(manifest: Manifest) -> str:
    """The delegated role that must sign ``manifest``: two approvers for risk C."""
    return HIGH if manifest.approvals_needed >= 2 else LOW


def root_hash(root_bytes: bytes) -> str:
    """The enrolment token's ``h``: SHA-256 of a root metadata file (docs/protocol.md#enrolment)."""
    return hashlib.sha256(root_bytes).hexdigest()


def load_signer(pem: bytes, passphrase: bytes | None) -> CryptoSigner:
    """A TUF signer for an Ed25519 PEM key; ScriptRepoError on a wrong passphrase."""
    try:
        key = private_key_from_pem(pem, passphrase or None)
    except PosAssistError as exc:
        raise ScriptRepoError(f"cannot open key (wrong passphrase?): {exc}") from None
    return CryptoSigner(key)


def _public(key: Ed25519PrivateKey) -> SSlibKey:
    return SSlibKey.from_crypto(key.public_key())


def _expires(role: str, now: datetime) -> datetime:
    return (now + EXPIRY[role]).replace(microsecond=0)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@dataclasses.dataclass(frozen=True)
class TargetStatus:
    """One staged target: its path, risk and size."""

    path: str
    script_id: str
    version: str
    risk: str
    length: int


@dataclasses.dataclass(frozen=True)
class RoleStatus:
    """Who has signed one offline role and whether it meets its threshold."""

    role: str
    version: int
    expires: datetime
    threshold: int
    signed_by: tuple[str, ...]
    missing: tuple[str, ...]
    targets: tuple[TargetStatus, ...]

    @property
    def complete(self) -> bool:
        """The role has at least its threshold of valid signatures."""
        return len(self.signed_by) >= self.threshold

    def expires_soon(self, now: datetime) -> bool:
        """Within :data:`EXPIRING_SOON` of expiry (or already expired)."""
        return self.expires - now <= EXPIRING_SOON


def init_repository(
    path: Path,
    approvers: Sequence[str],
    passphrase: bytes,
    *,
    high_risk_threshold: int = 2,
    now: datetime | None = None,
) -> ScriptRepository:
    """Create a repository in ``path``: keys for root, targets, each approver and the online roles.

    People's keys (root, targets, approvers) are written to ``path/keys`` encrypted with
    ``passphrase``; move each to its owner's medium and ``rotate-key`` to give it their own
    passphrase. The online keys (``keys/online``) are unencrypted: the relay must use them
    unattended.
    """
    now = now or datetime.now(UTC)
    names = list(dict.fromkeys(approvers))
    if len(names) != len(approvers) or not names:
        raise ScriptRepoError("give at least one approver, each name once")
    if any(not n.isidentifier() or n in (*OFFLINE_ROLES, *ONLINE) for n in names):
        raise ScriptRepoError("approver names are letters, digits and _, not a role name")
    if len(names) < high_risk_threshold:
        raise ScriptRepoError(
            f"risk C scripts need {high_risk_threshold} approvers; only {len(names)} given"
        )
    if not passphrase:
        raise ScriptRepoError("people's keys are encrypted at rest: a passphrase is required")
    if (path / "metadata").exists():
        raise ScriptRepoError(f"{path} already holds a repository")
    keys_dir = path / "keys"
    private_dir(keys_dir / "online")  # the keys' folders are 0700 (readme-walk F2)
    keys: dict[str, Ed25519PrivateKey] = {}
    for name in ("root", "targets", *names, *ONLINE):
        keys[name] = generate_private_key()
        online = name in ONLINE
        pem = private_key_to_pem(keys[name], None if online else passphrase)
        _write_atomic((keys_dir / "online" if online else keys_dir) / f"{name}.pem", pem, 0o600)
    root = Root(expires=_expires("root", now), consistent_snapshot=True)
    for role in ("root", "targets", *ONLINE):
        root.add_key(_public(keys[role]), role)
    approver_keys = {n: _public(keys[n]) for n in names}
    delegations = Delegations(
        keys={k.keyid: k for k in approver_keys.values()},
        roles={
            HIGH: DelegatedRole(
                HIGH,
                [k.keyid for k in approver_keys.values()],
                high_risk_threshold,
                True,
                ["high/*/*/*"],
            ),
            LOW: DelegatedRole(
                LOW, [k.keyid for k in approver_keys.values()], 1, True, ["low/*/*/*"]
            ),
        },
    )
    targets = Targets(expires=_expires("targets", now), delegations=delegations)
    path.mkdir(parents=True, exist_ok=True)
    people = {_public(keys[n]).keyid: n for n in ("root", "targets", *names)}
    people |= {_public(keys[n]).keyid: n for n in ONLINE}
    _write_atomic(path / "people.json", json.dumps(people, indent=2).encode())
    repo = ScriptRepository(path)
    repo._save("root", Metadata(root))
    repo._save("targets", Metadata(targets))
    for role in APPROVER_ROLES:
        repo._save(role, Metadata(Targets(expires=_expires(role, now))))
    for name in ("root", "targets"):
        repo.sign(private_key_to_pem(keys[name], passphrase), passphrase, roles=[name])
    # The high-risk list starts empty and signed by every approver (init holds all their keys),
    # so a first publish of only risk A/B scripts needs one approver, as their tier says, not
    # also a second one for an empty list (issue 17). Any approver's signature covers low-risk.
    for name in names:
        repo.sign(private_key_to_pem(keys[name], passphrase), passphrase, roles=[HIGH])
    return repo


class ScriptRepository:
    """An approvers' working copy of the script repository in one directory.

    Layout: ``metadata/`` (``N.root.json``, ``targets.json``, ``high-risk.json``,
    ``low-risk.json``), ``targets/<tier>/<id>/<version>/<file>``, ``keys/`` (encrypted people's
    keys, ``online/`` for the relay's) and ``people.json`` (key id → name).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if not (path / "people.json").is_file():
            raise ScriptRepoError(f"{path} is not a script repository (run init first)")

    # -- storage ---------------------------------------------------------------------------------

    def _file(self, role: str) -> Path:
        return self.path / "metadata" / f"{role}.json"

    def _root_versions(self) -> list[int]:
        found = (p.name.split(".", 1)[0] for p in (self.path / "metadata").glob("*.root.json"))
        return sorted(int(v) for v in found if v.isdigit())

    def load(self, role: str) -> Metadata[Any]:
        """The staged metadata of an offline role."""
        if role == "root":
            return self.load_root()
        return Metadata.from_file(str(self._file(role)))

    def load_root(self, version: int | None = None) -> Metadata[Root]:
        """The newest root, or root ``version``."""
        version = version or self._root_versions()[-1]
        return Metadata[Root].from_file(str(self.path / "metadata" / f"{version}.root.json"))

    def _save(self, role: str, md: Metadata[Any]) -> None:
        name = f"{md.signed.version}.root.json" if role == "root" else f"{role}.json"
        _write_atomic(self.path / "metadata" / name, md.to_bytes(_SERIALIZER))

    def people(self) -> dict[str, str]:
        """Key id → the person or role that holds it."""
        data: dict[str, str] = json.loads((self.path / "people.json").read_text())
        return data

    def root_hash(self) -> str:
        """SHA-256 of the newest root metadata, for enrolment tokens."""
        versions = self._root_versions()
        return root_hash((self.path / "metadata" / f"{versions[-1]}.root.json").read_bytes())

    def _edit(self, role: str, now: datetime) -> Metadata[Any]:
        """Load ``role`` for a change: a signed role gets a new version; signatures are dropped."""
        md = self.load(role)
        if md.signatures:
            md.signed.version += 1
        md.signatures.clear()
        md.signed.expires = _expires(role, now)
        return md

    def _delegator(self, role: str) -> Metadata[Any]:
        return self.load("targets") if role in APPROVER_ROLES else self.load_root()

    # -- staging ---------------------------------------------------------------------------------

    def add_script(self, folder: Path, *, now: datetime | None = None) -> Manifest:
        """Stage the script in ``folder`` (``manifest.json`` and the files it lists).

        The manifest is validated with :func:`protocol.manifest.parse_manifest`; its risk picks
        the delegated role, whose signatures are then cleared until approvers sign again.
        """
        try:
            raw = json.loads((folder / "manifest.json").read_bytes())
            manifest = parse_manifest(raw)
        except (OSError, ValueError, ManifestError) as exc:
            raise ScriptRepoError(f"{folder}: bad or missing manifest.json: {exc}") from None
        files: dict[str, bytes] = {}
        for name in manifest.files:
            try:
                files[name] = (folder / name).read_bytes()
            except OSError as exc:
                raise ScriptRepoError(f"{folder}: cannot read {name}: {exc}") from None
        files["manifest.json"] = (folder / "manifest.json").read_bytes()
        self.stage(tier_for(manifest), raw, files, now=now)
        return manifest

    def stage(
        self,
        role: str,
        raw_manifest: Mapping[str, Any],
        files: Mapping[str, bytes],
        *,
        now: datetime | None = None,
    ) -> list[str]:
        """Stage ``files`` as targets of ``role``; the lower level of :meth:`add_script`."""
        now = now or datetime.now(UTC)
        try:
            manifest = parse_manifest(dict(raw_manifest))
        except ManifestError as exc:
            raise ScriptRepoError(f"bad manifest: {exc}") from None
        prefix = f"{TIER_PATH[role]}/{manifest.id}/{manifest.version}/"
        md = self._edit(role, now)
        signed: Targets = md.signed
        if any(p.startswith(prefix) for p in signed.targets):
            raise ScriptRepoError(
                f"{manifest.id} {manifest.version} is already staged; retire it or bump the version"
            )
        added = []
        for name, data in files.items():
            target = TargetFile.from_data(prefix + name, data, ["sha256"])
            target.unrecognized_fields["custom"] = {MANIFEST_FIELD: dict(raw_manifest)}
            signed.targets[target.path] = target
            _write_atomic(self.path / "targets" / target.path, data)
            added.append(target.path)
        self._save(role, md)
        return added

    def retire(self, script_id: str, version: str, *, now: datetime | None = None) -> list[str]:
        """Remove a script version from whichever role lists it; approvers must sign again.

        The root gets a new version that carries the role's new version as a minimum
        (:data:`MIN_VERSIONS_FIELD`), so the root key's holder signs too. Tills refuse a role
        below its minimum, so a relay can't serve the older role that still lists the retired
        version, not even to a till that enrols later (docs/scripts.md#revocation).
        """
        now = now or datetime.now(UTC)
        removed: list[str] = []
        floors: dict[str, int] = {}
        for role in APPROVER_ROLES:
            prefix = f"{TIER_PATH[role]}/{script_id}/{version}/"
            if not any(p.startswith(prefix) for p in self.load(role).signed.targets):
                continue
            md = self._edit(role, now)
            for path in [p for p in md.signed.targets if p.startswith(prefix)]:
                del md.signed.targets[path]
                removed.append(path)
            self._save(role, md)
            floors[role] = md.signed.version
        if not removed:
            raise ScriptRepoError(f"{script_id} {version} is not in the repository")
        self._raise_floors(floors, now)
        return removed

    def renew(
        self, roles: Iterable[str] | None = None, *, now: datetime | None = None
    ) -> list[str]:
        """Give offline roles a new version with a fresh expiry; their signers sign again.

        Without ``roles``: each role that expires within :data:`EXPIRING_SOON`. Short approver
        role lifetimes bound how long a role the relay rolls back stays valid on a till that
        never saw the newer one (docs/scripts.md#revocation). Returns the roles renewed.
        """
        now = now or datetime.now(UTC)
        wanted = list(roles) if roles is not None else list(OFFLINE_ROLES)
        renewed = []
        for role in wanted:
            if role not in OFFLINE_ROLES:
                raise ScriptRepoError(f"unknown role {role!r}")
            if roles is None and self.load(role).signed.expires - now > EXPIRING_SOON:
                continue
            self._save(role, self._edit(role, now))
            renewed.append(role)
        return renewed

    def min_versions(self) -> dict[str, int]:
        """Role → the lowest version tills accept, as the newest root says."""
        raw = self.load_root().signed.unrecognized_fields.get(MIN_VERSIONS_FIELD, {})
        return {str(k): int(v) for k, v in raw.items()}

    def _raise_floors(self, floors: Mapping[str, int], now: datetime) -> None:
        current = self.min_versions()
        wanted = {r: max(current.get(r, 0), v) for r, v in floors.items()}
        if all(current.get(r) == v for r, v in wanted.items()):
            return
        root = self._edit("root", now)
        root.signed.unrecognized_fields[MIN_VERSIONS_FIELD] = current | wanted
        self._save("root", root)

    # -- signing ---------------------------------------------------------------------------------

    def _authorised(self, role: str) -> set[str]:
        """Key ids that may sign ``role`` (for root: the newest and the previous root's keys)."""
        if role == "root":
            versions = self._root_versions()
            ids: set[str] = set()
            for v in versions[-2:]:
                ids |= set(self.load_root(v).signed.roles["root"].keyids)
            return ids
        delegator = self._delegator(role).signed
        if role in APPROVER_ROLES:
            return set(delegator.delegations.roles[role].keyids)
        return set(delegator.roles[role].keyids)

    def sign(
        self, key_pem: bytes, passphrase: bytes | None, roles: Iterable[str] | None = None
    ) -> list[str]:
        """Add one person's signature to every offline role (or ``roles``) their key may sign.

        Returns the roles signed (none if this key signed them all already). A role already
        signed by this key is left as it is; a key that may sign no role is an error.
        """
        signer = load_signer(key_pem, passphrase)
        keyid = signer.public_key.keyid
        wanted = list(roles) if roles is not None else list(OFFLINE_ROLES)
        signed = []
        authorised = False
        for role in wanted:
            if role not in OFFLINE_ROLES:
                raise ScriptRepoError(f"unknown role {role!r}")
            if keyid not in self._authorised(role):
                continue
            authorised = True
            md = self.load(role)
            if keyid in md.signatures:
                continue
            md.sign(signer, append=True)
            self._save(role, md)
            signed.append(role)
        if not authorised and roles is None:
            raise ScriptRepoError(
                "this key may sign no role: not root's, targets' or an approver's"
            )
        return signed

    def status(self, now: datetime | None = None) -> list[RoleStatus]:
        """Who has signed each offline role and what each lists."""
        now = now or datetime.now(UTC)
        people = self.people()
        out = []
        for role in OFFLINE_ROLES:
            md = self.load(role)
            if role == "root":
                result = md.signed.get_verification_result("root", md.signed_bytes, md.signatures)
            else:
                result = self._delegator(role).signed.get_verification_result(
                    role, md.signed_bytes, md.signatures
                )
            targets = []
            if role in APPROVER_ROLES:
                for target in md.signed.targets.values():
                    raw = target.custom.get(MANIFEST_FIELD, {})
                    targets.append(
                        TargetStatus(
                            target.path,
                            str(raw.get("id")),
                            str(raw.get("version")),
                            str(raw.get("risk")),
                            target.length,
                        )
                    )
            out.append(
                RoleStatus(
                    role=role,
                    version=md.signed.version,
                    expires=md.signed.expires,
                    threshold=result.threshold,
                    signed_by=tuple(sorted(people.get(k, k[:12]) for k in result.signed)),
                    missing=tuple(sorted(people.get(k, k[:12]) for k in result.unsigned)),
                    targets=tuple(targets),
                )
            )
        return out

    def verify_offline(self) -> None:
        """ScriptRepoError unless every offline role meets its threshold (and the root chain)."""
        versions = self._root_versions()
        previous = self.load_root(versions[0])
        try:
            previous.verify_delegate("root", previous)
            for v in versions[1:]:
                current = self.load_root(v)
                previous.verify_delegate("root", current)
                current.verify_delegate("root", current)
                previous = current
            root = previous
            targets = self.load("targets")
            root.verify_delegate("targets", targets)
            for role in APPROVER_ROLES:
                targets.verify_delegate(role, self.load(role))
        except UnsignedMetadataError as exc:
            raise ScriptRepoError(f"below threshold: {exc}") from None

    # -- keys ------------------------------------------------------------------------------------

    def rotate_key(
        self, name: str, passphrase: bytes, *, now: datetime | None = None
    ) -> tuple[Path, str]:
        """Replace ``name``'s key (an approver, root, targets, snapshot or timestamp).

        The new key is written to ``keys/<name>.pem`` (the old one kept as
        ``keys/<name>.<keyid>.old.pem``). An approver's rotation changes ``targets``; the others
        change ``root``, which the old and the new root keys then sign. Returns (key file, key id).
        """
        now = now or datetime.now(UTC)
        people = self.people()
        old_ids = [k for k, n in people.items() if n == name]
        if not old_ids:
            raise ScriptRepoError(f"no key belongs to {name!r}")
        new_key = generate_private_key()
        new_pub = _public(new_key)
        online = name in ONLINE
        if name in ("root", "targets", *ONLINE):
            md = self._edit("root", now)
            for old in old_ids:
                if old in md.signed.roles[name].keyids:
                    md.signed.revoke_key(old, name)
            md.signed.add_key(new_pub, name)
            self._save("root", md)
        else:
            md = self._edit("targets", now)
            delegations = md.signed.delegations
            for role in delegations.roles.values():
                role.keyids = [k for k in role.keyids if k not in old_ids] + [new_pub.keyid]
            for old in old_ids:
                delegations.keys.pop(old, None)
            delegations.keys[new_pub.keyid] = new_pub
            self._save("targets", md)
        keys_dir = self.path / "keys" / ("online" if online else "")
        current = keys_dir / f"{name}.pem"
        if current.exists():
            current.rename(keys_dir / f"{name}.{old_ids[0][:12]}.old.pem")
        _write_atomic(current, private_key_to_pem(new_key, None if online else passphrase), 0o600)
        people = {k: v for k, v in people.items() if k not in old_ids} | {new_pub.keyid: name}
        _write_atomic(self.path / "people.json", json.dumps(people, indent=2).encode())
        return current, new_pub.keyid

    # -- publishing ------------------------------------------------------------------------------

    def publish(self, dest: Path, *, now: datetime | None = None) -> Path:
        """Write the repository the relay serves to ``dest/scripts`` and return that folder.

        Refuses (ScriptRepoError) while any offline role is below its threshold. Snapshot and
        timestamp are made here with the online keys, numbered after whatever the relay has
        already published, and the online keys are copied for the relay's re-signing.
        """
        now = now or datetime.now(UTC)
        self.verify_offline()
        out = dest / "scripts"
        meta_out = out / "metadata"
        private_dir(meta_out)  # a new --to folder is 0700: it may become a relay's data dir
        private_dir(out / "targets")  # served even while no script is signed
        for v in self._root_versions():
            shutil.copyfile(self.path / "metadata" / f"{v}.root.json", meta_out / f"{v}.root.json")
        newest = self._root_versions()[-1]
        shutil.copyfile(self.path / "metadata" / f"{newest}.root.json", meta_out / "root.json")
        snapshot = Snapshot(expires=_expires("snapshot", now))
        for role in ("targets", *APPROVER_ROLES):
            md = self.load(role)
            _write_atomic(
                meta_out / f"{md.signed.version}.{role}.json", self._file(role).read_bytes()
            )
            snapshot.meta[f"{role}.json"] = MetaFile(version=md.signed.version)
            if role in APPROVER_ROLES:
                for target in md.signed.targets.values():
                    digest = target.hashes["sha256"]
                    head, _, base = target.path.rpartition("/")
                    dst = out / "targets" / head / f"{digest}.{base}"
                    if not dst.exists():
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(self.path / "targets" / target.path, dst)
        old_snapshot = _published_version(meta_out / "timestamp.json", "snapshot")
        old_timestamp = _published_version(meta_out / "timestamp.json", "timestamp")
        snapshot.version = old_snapshot + 1
        online_dir = out / "keys"
        online_dir.mkdir(mode=0o700, exist_ok=True)
        for role in ONLINE:  # 0600 from the first byte
            pem = (self.path / "keys" / "online" / f"{role}.pem").read_bytes()
            _write_atomic(online_dir / f"{role}.pem", pem, 0o600)
        snap_md = Metadata(snapshot)
        snap_md.sign(_online_signer(out, "snapshot"))
        _write_atomic(meta_out / f"{snapshot.version}.snapshot.json", snap_md.to_bytes(_SERIALIZER))
        timestamp = Timestamp(
            version=old_timestamp + 1,
            expires=_expires("timestamp", now),
            snapshot_meta=MetaFile(version=snapshot.version),
        )
        ts_md = Metadata(timestamp)
        ts_md.sign(_online_signer(out, "timestamp"))
        _write_atomic(meta_out / "timestamp.json", ts_md.to_bytes(_SERIALIZER))
        return out


def _published_version(timestamp_file: Path, role: str) -> int:
    """The version the relay last published for snapshot or timestamp (0 if none)."""
    if not timestamp_file.is_file():
        return 0
    md = Metadata[Timestamp].from_bytes(timestamp_file.read_bytes())
    return md.signed.version if role == "timestamp" else md.signed.snapshot_meta.version


def _online_signer(published: Path, role: str) -> CryptoSigner:
    keys_dir = published / "keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    return load_signer((keys_dir / f"{role}.pem").read_bytes(), None)
