"""Enrol this PC with a relay using a one-time token (``posassist-agent enroll TOKEN``).

Makes the key pair here (the private key never leaves the PC), sends only the public key and the
token's secret, and keeps what the token pins: relay id and TLS pin. The script repository's root
is trusted only by the hash the approvers hand out out of band (``--root-hash``, shown by
``posassist-scripts root-hash``), never by the token alone, which the relay wrote
(docs/scripts.md#trust); ``posassist-agent trust-root`` installs it later.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from posassist.client import http
from posassist.client.files import write_private
from posassist.protocol import PosAssistError, signing
from posassist.protocol.enrolment import EnrolmentInvite
from posassist.protocol.messages import DEVICE_ID
from posassist.protocol.pins import PIN_PATTERN

from . import __version__
from .config import Identity, load_identity, write_identity
from .errors import ConfigError, RelayRefusedError, RootHashOutOfDate, UntrustedRootError

if TYPE_CHECKING:
    from pathlib import Path


#: The most bytes a root metadata file may have.
MAX_ROOT = 256 * 1024
#: The most bytes the enrolment answer may have.
MAX_ANSWER = 64 * 1024


def _post_json(
    base_url: str, path: str, body: Dict[str, Any], pin: Optional[str]
) -> Dict[str, Any]:
    """POST JSON and return the JSON object answered; RelayRefusedError for a refusal."""
    answer = http.request(
        "POST",
        base_url + path,
        body=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        pin=pin,
        max_bytes=MAX_ANSWER,
    )
    try:
        answer.raise_for_status()
    except http.HttpStatusError as exc:
        raise RelayRefusedError(exc.error or str(exc)) from None
    detail = answer.json()
    if not isinstance(detail, dict):
        raise ConfigError("the relay's answer was not a JSON object")
    return detail


#: How many older roots are looked at to tell an out-of-date hash from another repository's.
MAX_OLD_ROOTS = 32


def _get_root(base_url: str, name: str, pin: Optional[str]) -> bytes:
    with http.stream(
        "GET", base_url + "/v1/scripts/metadata/" + name, pin=pin, max_bytes=MAX_ROOT
    ) as answer:
        return b"".join(answer.iter_bytes()) if answer.status == 200 else b""


def _fetch_root(base_url: str, root_hash: str, pin: Optional[str]) -> bytes:
    """The script repository's current root metadata, checked against the approvers' hash."""
    raw = _get_root(base_url, "root.json", pin)
    if hashlib.sha256(raw).hexdigest() != root_hash:
        _refuse_root(base_url, root_hash, pin, raw, "the relay's")
    return raw


def _refuse_root(
    base_url: str, root_hash: str, pin: Optional[str], current: Optional[bytes], whose: str
) -> None:
    """Raise for a root hash that does not name the current root: RootHashOutOfDate when it names
    an older root of the repository the relay serves (only words change: nothing is trusted on
    the relay's say-so), else UntrustedRootError."""
    version = 0
    try:
        raw = current if current is not None else _get_root(base_url, "root.json", pin)
        version = int(json.loads(raw.decode("utf-8"))["signed"]["version"])
        for older in range(version - 1, max(0, version - 1 - MAX_OLD_ROOTS), -1):
            if (
                hashlib.sha256(_get_root(base_url, f"{older}.root.json", pin)).hexdigest()
                == root_hash
            ):
                raise RootHashOutOfDate(
                    f"it names root version {older}; the approvers have published version "
                    f"{version} since: ask them for the current hash (posassist-scripts root-hash)"
                )
    except RootHashOutOfDate:
        raise
    except (PosAssistError, OSError, ValueError, KeyError, TypeError):
        pass  # the relay's answer only chooses the words; nothing of it is trusted
    raise UntrustedRootError(f"{whose} script repository root is not the one named")


def _checked_root_hash(text: Optional[str]) -> Optional[str]:
    if text is None:
        return None
    text = text.strip().lower()
    if not PIN_PATTERN.match(text):
        raise ConfigError("--root-hash must be 64 hex digits (posassist-scripts root-hash)")
    return text


def _install_root(data_dir: Path, root: bytes) -> None:
    write_private(data_dir / "scripts" / "root.json", root)


def enrol(token_text: str, data_dir: Path, root_hash: Optional[str] = None) -> Identity:
    """Enrol with the relay the token names; write the identity to ``data_dir``.

    ``root_hash`` is the script repository root's SHA-256 as the approvers gave it, out of band.
    With it, the relay's root must hash to it (and the token, if it names one, must name the
    same), or nothing is enrolled and the token is not used. Without it, the till enrols but
    trusts no script repository (it runs no script) until ``trust-root``.

    Raises InvalidEnrolmentToken for damaged text, UntrustedRootError for a root that is not the
    one named, RelayRefusedError when the relay says no (used, expired, revoked, another relay's
    token), ConfigError when this PC already has an identity, and client/http.py's errors
    (PinMismatch, RelayUnreachable…) when the relay can't be reached.
    """
    invite = EnrolmentInvite.decode(token_text)
    wanted = _checked_root_hash(root_hash)
    if (data_dir / "agent.key").exists():
        raise ConfigError(f"{data_dir / 'agent.key'} exists already; this PC has an identity")
    identity, root = register(invite, wanted)
    install(data_dir, identity, root, invite, wanted)
    return identity


def register(invite: EnrolmentInvite, wanted: Optional[str]) -> Tuple[Identity, Optional[bytes]]:
    """Enrol with the relay ``invite`` names: a new key pair made here, the token used up. Nothing
    is written: the identity (its key in memory only) and the root checked against ``wanted``.
    Raises as :func:`enrol` does; when it raises, the token was not used unless the relay said
    no to it (used, expired…)."""
    if wanted is not None and invite.root_hash not in (None, wanted):
        _refuse_root(http.http_url(invite.relay_url), wanted, invite.tls_pin, None, "the token's")
    key = signing.generate_private_key()
    raw_public = signing.public_key_to_raw(key.public_key())
    base_url = http.http_url(invite.relay_url)
    # The root first: a relay serving another repository never gets to consume the token.
    root = _fetch_root(base_url, wanted, invite.tls_pin) if wanted else None
    answer = _post_json(
        base_url,
        "/v1/enrol",
        {
            "secret": invite.secret,
            "public_key": base64.b64encode(raw_public).decode("ascii"),
            "agent_version": "posassist-agent/" + __version__,
        },
        invite.tls_pin,
    )
    device_id = answer.get("device_id")
    if answer.get("relay_id") != invite.relay_id or not isinstance(device_id, str):
        raise ConfigError("the relay that answered is not the one the token names")
    if not DEVICE_ID.fullmatch(device_id):  # printed, logged and kept: nothing but an id
        raise ConfigError("the relay answered a device id that is not one")
    return Identity(device_id, invite.relay_url, key, invite.tls_pin), root


def install(
    data_dir: Path,
    identity: Identity,
    root: Optional[bytes],
    invite: EnrolmentInvite,
    wanted: Optional[str],
) -> None:
    """Write what :func:`register` gave into ``data_dir`` (the key never over an existing one)."""
    if root is not None:
        _install_root(data_dir, root)
    write_identity(
        data_dir,
        identity,
        {"relay_id": invite.relay_id, "tls_pin": invite.tls_pin, "root_hash": wanted},
    )


def trust_root(data_dir: Path, root_hash: str) -> None:
    """Give an enrolled till its script repository root: fetched from its relay over the pinned
    connection and kept only if it hashes to ``root_hash``, which the approvers gave out of band.

    A till that already trusts a root keeps it (a new root reaches it through TUF's chain of
    signed root versions, not through this command): asking for another is UntrustedRootError.
    """
    wanted = _checked_root_hash(root_hash)
    assert wanted is not None
    identity = load_identity(data_dir)
    config_path = data_dir / "agent.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    current = config.get("root_hash")
    if (data_dir / "scripts" / "root.json").exists() and current:
        if current == wanted:
            return
        raise UntrustedRootError("this till already trusts another script repository root")
    root = _fetch_root(http.http_url(identity.relay_url), wanted, identity.tls_pin)
    _install_root(data_dir, root)
    config["root_hash"] = wanted
    write_private(config_path, json.dumps(config, indent=2))


__all__ = ["enrol", "install", "register", "trust_root"]
