"""Ed25519 helpers on ``cryptography``: keys, serialisation, sign/verify and fingerprints.

Agents prove who they are by signing :func:`auth_payload` (docs/protocol.md#agent-authentication).
"""

from __future__ import annotations

import hashlib
from typing import Optional

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import SignatureError

__all__ = [
    "AUTH_CONTEXT",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "auth_payload",
    "fingerprint",
    "generate_private_key",
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


def generate_private_key() -> Ed25519PrivateKey:
    """A new Ed25519 private key from the operating system's random source."""
    return Ed25519PrivateKey.generate()


def private_key_to_pem(key: Ed25519PrivateKey, passphrase: Optional[bytes] = None) -> bytes:
    """PKCS#8 PEM, encrypted with ``passphrase`` when one is given."""
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
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SignatureError(f"cannot load private key: {type(exc).__name__}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("private key is not Ed25519")
    return key


def private_key_to_raw(key: Ed25519PrivateKey) -> bytes:
    """The 32-byte raw private key."""
    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def private_key_from_raw(data: bytes) -> Ed25519PrivateKey:
    """Load a 32-byte raw private key."""
    try:
        return Ed25519PrivateKey.from_private_bytes(data)
    except ValueError:
        raise SignatureError("raw private key must be 32 bytes") from None


def public_key_to_raw(key: Ed25519PublicKey) -> bytes:
    """The 32-byte raw public key, as stored by the relay."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_from_raw(data: bytes) -> Ed25519PublicKey:
    """Load a 32-byte raw public key."""
    try:
        return Ed25519PublicKey.from_public_bytes(data)
    except ValueError:
        raise SignatureError("raw public key must be 32 bytes") from None


def public_key_to_pem(key: Ed25519PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_from_pem(data: bytes) -> Ed25519PublicKey:
    """Load a PEM public key; SignatureError if it is not Ed25519."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise SignatureError("cannot load public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("public key is not Ed25519")
    return key


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``data``."""
    return key.sign(data)


def verify(key: Ed25519PublicKey, signature: bytes, data: bytes) -> None:
    """Return if ``signature`` is ``key``'s over ``data``; raise SignatureError otherwise."""
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise SignatureError("signature does not verify") from None


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key in 16 groups, to read aloud: ``SHA256:3f2a 9c01 …``."""
    digest = hashlib.sha256(public_key_to_raw(key)).hexdigest()
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
