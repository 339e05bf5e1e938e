"""Ed25519 helpers on ``cryptography``: keys, serialisation, sign/verify and fingerprints.

Agents prove who they are by signing :func:`auth_payload` (docs/protocol.md#agent-authentication).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING, Any, Optional, Protocol

from .errors import SignatureError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

# cryptography is imported by the functions that need it, when they are called: a running agent
# reads its seed with :func:`pkcs8_ed25519_seed` and signs through the OpenSSL that ``ssl``
# loaded (client/signer.py), and never maps cryptography's 8.5 MB library (the relay and console
# do, on their first key). ``Ed25519PrivateKey`` and ``Ed25519PublicKey`` are still importable
# from here (module ``__getattr__``).


def __getattr__(name: str) -> Any:
    if name in ("Ed25519PrivateKey", "Ed25519PublicKey"):
        from cryptography.hazmat.primitives.asymmetric import ed25519

        return getattr(ed25519, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AUTH_CONTEXT",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "Signer",
    "auth_payload",
    "fingerprint",
    "fingerprint_raw",
    "generate_private_key",
    "pkcs8_ed25519_seed",
    "private_key_from_pem",
    "private_key_from_raw",
    "private_key_to_pem",
    "private_key_to_raw",
    "public_key_from_pem",
    "public_key_from_raw",
    "public_key_to_pem",
    "public_key_to_raw",
    "sign",
    "verify",
]

#: Domain separation for agent authentication signatures; bump with the payload layout.
AUTH_CONTEXT = b"posassist-agent-auth-v1"


#: DER of an unencrypted PKCS#8 Ed25519 private key (RFC 8410 §7) up to its 32-byte seed: what
#: ``private_key_to_pem(key)`` writes, version 0 and no public key or attributes.
_PKCS8_ED25519_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_PEM_BEGIN = b"-----BEGIN PRIVATE KEY-----"
_PEM_END = b"-----END PRIVATE KEY-----"


def pkcs8_ed25519_seed(data: bytes) -> Optional[bytes]:
    """The 32-byte seed of exactly an unencrypted PKCS#8 Ed25519 PEM as we write it, else None.

    None means "not this one exact form": the caller then asks cryptography's PEM loader,
    which accepts or refuses it; this never refuses anything itself.
    """
    lines = data.strip().split(b"\n")
    if len(lines) < 3 or lines[0].strip() != _PEM_BEGIN or lines[-1].strip() != _PEM_END:
        return None
    try:
        der = base64.b64decode(b"".join(line.strip() for line in lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(der) != len(_PKCS8_ED25519_PREFIX) + 32 or not der.startswith(_PKCS8_ED25519_PREFIX):
        return None
    return der[len(_PKCS8_ED25519_PREFIX) :]


def generate_private_key() -> Ed25519PrivateKey:
    """A new Ed25519 private key from the operating system's random source."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def private_key_to_pem(key: Ed25519PrivateKey, passphrase: Optional[bytes] = None) -> bytes:
    """PKCS#8 PEM, encrypted with ``passphrase`` when one is given."""
    from cryptography.hazmat.primitives import serialization

    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def private_key_from_pem(data: bytes, passphrase: Optional[bytes] = None) -> Ed25519PrivateKey:
    """Load a PEM private key; SignatureError if it is not Ed25519 or the passphrase is wrong."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if passphrase is None:
        seed = pkcs8_ed25519_seed(data)
        if seed is not None:
            return Ed25519PrivateKey.from_private_bytes(seed)

    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SignatureError(f"cannot load private key: {type(exc).__name__}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("private key is not Ed25519")
    return key


def private_key_to_raw(key: Ed25519PrivateKey) -> bytes:
    """The 32-byte raw private key."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def private_key_from_raw(data: bytes) -> Ed25519PrivateKey:
    """Load a 32-byte raw private key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        return Ed25519PrivateKey.from_private_bytes(data)
    except ValueError:
        raise SignatureError("raw private key must be 32 bytes") from None


def public_key_to_raw(key: Ed25519PublicKey) -> bytes:
    """The 32-byte raw public key, as stored by the relay."""
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_from_raw(data: bytes) -> Ed25519PublicKey:
    """Load a 32-byte raw public key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        return Ed25519PublicKey.from_public_bytes(data)
    except ValueError:
        raise SignatureError("raw public key must be 32 bytes") from None


def public_key_to_pem(key: Ed25519PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM."""
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_from_pem(data: bytes) -> Ed25519PublicKey:
    """Load a PEM public key; SignatureError if it is not Ed25519."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise SignatureError("cannot load public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("public key is not Ed25519")
    return key


class Signer(Protocol):
    """What signs: cryptography's private key, or the agent's OpenSSL one (client/signer.py)."""

    def sign(self, data: bytes) -> bytes: ...


def sign(key: Signer, data: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``data``."""
    return key.sign(data)


def verify(key: Ed25519PublicKey, signature: bytes, data: bytes) -> None:
    """Return if ``signature`` is ``key``'s over ``data``; raise SignatureError otherwise."""
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise SignatureError("signature does not verify") from None


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key in 16 groups, to read aloud: ``SHA256:3f2a 9c01 …``."""
    return fingerprint_raw(public_key_to_raw(key))


def fingerprint_raw(public_key: bytes) -> str:
    """:func:`fingerprint` of a 32-byte raw public key (no cryptography needed)."""
    digest = hashlib.sha256(public_key).hexdigest()
    return "SHA256:" + " ".join(digest[i : i + 4] for i in range(0, len(digest), 4))


def _field(value: bytes) -> bytes:
    # Length-prefixed so that ("ab", "c") and ("a", "bc") can never sign the same bytes.
    return len(value).to_bytes(2, "big") + value


def auth_payload(relay_id: str, device_id: str, nonce: bytes, version: int) -> bytes:
    """The bytes an agent signs: bound to this relay, this device, this nonce and version."""
    return b"".join(
        (
            AUTH_CONTEXT,
            _field(relay_id.encode("utf-8")),
            _field(device_id.encode("utf-8")),
            _field(nonce),
            version.to_bytes(2, "big"),
        )
    )
