"""Ed25519 helpers: round trips of every serialisation, sign/verify, fingerprints, auth payload."""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from posassist.protocol import SignatureError, signing


def test_sign_and_verify() -> None:
    key = signing.generate_private_key()
    signature = signing.sign(key, b"hello")
    assert len(signature) == 64
    signing.verify(key.public_key(), signature, b"hello")
    with pytest.raises(SignatureError):
        signing.verify(key.public_key(), signature, b"hellO")
    with pytest.raises(SignatureError):
        signing.verify(signing.generate_private_key().public_key(), signature, b"hello")


def test_private_key_pem_round_trip_plain_and_encrypted() -> None:
    key = signing.generate_private_key()
    raw = signing.private_key_to_raw(key)
    assert (
        signing.private_key_to_raw(signing.private_key_from_pem(signing.private_key_to_pem(key)))
        == raw
    )
    pem = signing.private_key_to_pem(key, b"correct horse")
    assert b"ENCRYPTED" in pem
    assert signing.private_key_to_raw(signing.private_key_from_pem(pem, b"correct horse")) == raw
    with pytest.raises(SignatureError):
        signing.private_key_from_pem(pem, b"wrong")
    with pytest.raises(SignatureError):
        signing.private_key_from_pem(pem)
    with pytest.raises(SignatureError):
        signing.private_key_from_pem(b"not pem")


def test_raw_round_trips_and_bad_lengths() -> None:
    key = signing.generate_private_key()
    raw = signing.private_key_to_raw(key)
    assert signing.private_key_to_raw(signing.private_key_from_raw(raw)) == raw
    pub = signing.public_key_to_raw(key.public_key())
    assert signing.public_key_to_raw(signing.public_key_from_raw(pub)) == pub
    with pytest.raises(SignatureError):
        signing.private_key_from_raw(b"short")
    with pytest.raises(SignatureError):
        signing.public_key_from_raw(b"short")


def test_public_key_pem_round_trip() -> None:
    pub = signing.generate_private_key().public_key()
    pem = signing.public_key_to_pem(pub)
    assert signing.public_key_to_raw(signing.public_key_from_pem(pem)) == signing.public_key_to_raw(
        pub
    )
    with pytest.raises(SignatureError):
        signing.public_key_from_pem(b"garbage")


def test_non_ed25519_keys_are_refused() -> None:
    ec = generate_private_key(SECP256R1())
    private_pem = ec.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    public_pem = ec.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(SignatureError, match="not Ed25519"):
        signing.private_key_from_pem(private_pem)
    with pytest.raises(SignatureError, match="not Ed25519"):
        signing.public_key_from_pem(public_pem)


def test_fingerprint_is_grouped_sha256() -> None:
    pub = signing.public_key_from_raw(bytes(32))
    text = signing.fingerprint(pub)
    assert re.fullmatch(r"SHA256:([0-9a-f]{4} ){15}[0-9a-f]{4}", text)
    # SHA-256 of 32 zero bytes
    assert text.replace(" ", "").endswith(
        "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
    )
    assert signing.fingerprint_raw(bytes(32)) == text  # the raw key's, without cryptography


def test_auth_payload_binds_every_field() -> None:
    base = signing.auth_payload("relay", "dev", b"n" * 32, 1)
    assert base.startswith(signing.AUTH_CONTEXT)
    variants = {
        signing.auth_payload("relay2", "dev", b"n" * 32, 1),
        signing.auth_payload("relay", "dev2", b"n" * 32, 1),
        signing.auth_payload("relay", "dev", b"m" * 32, 1),
        signing.auth_payload("relay", "dev", b"n" * 32, 2),
        # shifting a boundary between fields must change the bytes
        signing.auth_payload("rela", "ydev", b"n" * 32, 1),
    }
    assert base not in variants
    assert len(variants) == 5


def test_plain_pkcs8_pem_loads_as_cryptographys_loader_does() -> None:
    # The fast path (no cryptography.hazmat.primitives.serialization at agent idle) must give the
    # very key cryptography's own PEM loader gives, for keys we write and for CRLF files.
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    for _ in range(20):
        key = signing.generate_private_key()
        raw = signing.private_key_to_raw(key)
        pem = signing.private_key_to_pem(key)
        assert signing.pkcs8_ed25519_seed(pem) is not None
        for text in (pem, pem.replace(b"\n", b"\r\n"), b"\n" + pem + b"\n\n"):
            loaded = signing.private_key_from_pem(text)
            assert signing.private_key_to_raw(loaded) == raw
            theirs = load_pem_private_key(text, password=None)
            assert isinstance(theirs, Ed25519PrivateKey)
            assert signing.private_key_to_raw(theirs) == raw


def test_a_pem_that_is_not_exactly_plain_pkcs8_ed25519_goes_to_cryptographys_loader() -> None:
    # Each variant is left to cryptography's loader (the fast path returns None), which accepts
    # it or answers SignatureError: the fast path never decides a refusal on its own.
    key = signing.generate_private_key()
    pem = signing.private_key_to_pem(key)
    body = b"".join(pem.splitlines()[1:-1])
    der = base64.b64decode(body)
    wrapped = b"-----BEGIN PRIVATE KEY-----\n%s\n-----END PRIVATE KEY-----\n"
    refused = [
        b"not pem",
        pem.replace(b"PRIVATE KEY", b"EC PRIVATE KEY"),  # another PEM type
        wrapped % base64.b64encode(der[:-1]),  # a byte short
        wrapped % base64.b64encode(der + b"\x00"),  # a byte too many
        wrapped % base64.b64encode(b"\x31" + der[1:]),  # not a SEQUENCE
        wrapped % base64.b64encode(der[:15] + b"\x21" + der[16:]),  # OCTET STRING length wrong
        wrapped % (body[:10] + b"!" + body[11:]),  # not base64
    ]
    for bad in refused:
        assert signing.pkcs8_ed25519_seed(bad) is None, bad
        with pytest.raises(SignatureError):
            signing.private_key_from_pem(bad)
    # text before the PEM block: not our exact form, but cryptography reads it, and so do we
    with_comment = b"a comment\n" + pem
    assert signing.pkcs8_ed25519_seed(with_comment) is None
    assert signing.private_key_to_raw(
        signing.private_key_from_pem(with_comment)
    ) == signing.private_key_to_raw(key)


def test_the_key_classes_are_importable_from_here_and_other_names_are_not() -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from posassist.protocol.signing import Ed25519PrivateKey, Ed25519PublicKey

    assert (Ed25519PrivateKey, Ed25519PublicKey) == (
        ed25519.Ed25519PrivateKey,
        ed25519.Ed25519PublicKey,
    )
    with pytest.raises(AttributeError, match="no attribute 'Ed448PrivateKey'"):
        signing.Ed448PrivateKey  # noqa: B018
