"""protocol/der.py reads a certificate's SPKI and notAfter exactly as cryptography's x509 does,
and refuses (ValueError, never another exception) anything that is not strict DER."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from posassist.protocol import pins
from posassist.protocol.der import certificate_facts, pem_to_der

UTC = dt.UTC


def _cert(key: object, not_after: dt.datetime, *, version: x509.Version = x509.Version.v3) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if version is x509.Version.v1:
        builder._version = x509.Version.v1  # type: ignore[attr-defined]
        builder._extensions = []  # type: ignore[attr-defined]
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = builder.sign(key, algorithm)  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.DER)


KEYS = {
    "ec": lambda: ec.generate_private_key(ec.SECP256R1()),
    "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


@pytest.mark.parametrize("kind", sorted(KEYS))
@pytest.mark.parametrize(
    "not_after",
    [
        dt.datetime(2031, 6, 30, 23, 59, 59, tzinfo=UTC),  # UTCTime
        dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),  # UTCTime, its last year
        dt.datetime(2051, 1, 2, 3, 4, 5, tzinfo=UTC),  # GeneralizedTime
    ],
)
@pytest.mark.parametrize("version", [x509.Version.v3, x509.Version.v1])
def test_spki_and_not_after_are_what_cryptography_reads(
    kind: str, not_after: dt.datetime, version: x509.Version
) -> None:
    der = _cert(KEYS[kind](), not_after, version=version)
    cert = x509.load_der_x509_certificate(der)
    facts = certificate_facts(der)
    assert facts.spki == cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert facts.not_after == not_after.timestamp()
    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert pins.spki_pin_from_pem(b"chain:\n" + pem + pem) == hashlib.sha256(facts.spki).hexdigest()
    assert pem_to_der(pem) == der


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _tbs(*fields: bytes) -> bytes:
    return _der(0x30, _der(0x30, b"".join(fields)) + _der(0x30, b"") + _der(0x03, b"\x00"))


INT, SEQ = _der(0x02, b"\x01"), _der(0x30, b"")
SPKI = _der(0x30, _der(0x30, b"") + _der(0x03, b"\x00"))


def _validity(after: bytes, tag: int = 0x17) -> bytes:
    return _der(0x30, _der(0x17, b"200101000000Z") + _der(tag, after))


def test_a_minimal_handmade_certificate_reads() -> None:
    der = _tbs(INT, SEQ, SEQ, _validity(b"300101000000Z"), SEQ, SPKI)
    assert certificate_facts(der) == (SPKI, dt.datetime(2030, 1, 1, tzinfo=UTC).timestamp())
    nineties = _tbs(INT, SEQ, SEQ, _validity(b"991231235959Z"), SEQ, SPKI)
    assert (
        certificate_facts(nineties).not_after
        == dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    )


@pytest.mark.parametrize(
    ("der", "says"),
    [
        (b"", "truncated"),
        (b"\x30", "truncated"),
        (b"\x1f\x01\x00", "multi-byte tag"),
        (b"\x30\x80\x00\x00", "indefinite"),
        (b"\x30\x84\x00\x00\x00\x01\x00", "oversized"),
        (b"\x30\x82\x01", "truncated"),
        (b"\x30\x81\x05" + b"\x00" * 5, "shortest form"),
        (b"\x30\x82\x00\x90" + b"\x00" * 0x90, "shortest form"),
        (b"\x30\x05\x00", "longer than"),
        (_tbs(INT, SEQ, SEQ, _validity(b"300101000000Z"), SEQ, SPKI) + b"\x00", "one DER"),
        (b"\x02\x01\x00", "one DER"),
        (_der(0x30, SEQ + SEQ), "tbsCertificate, algorithm"),
        (_der(0x30, INT + SEQ + SEQ), "tbsCertificate, algorithm"),
        (_tbs(INT, SEQ, SEQ, SEQ, SEQ), "too short"),
        (_tbs(SEQ, SEQ, SEQ, SEQ, SEQ, SEQ), "out of order"),
        (_tbs(INT, SEQ, SEQ, _der(0x30, _der(0x17, b"x")), SEQ, SPKI), "notBefore, notAfter"),
        (_tbs(INT, SEQ, SEQ, _validity(b"30010100000\xff"), SEQ, SPKI), "not ASCII"),
        (_tbs(INT, SEQ, SEQ, _validity(b"3001010000Z"), SEQ, SPKI), "UTCTime or"),
        (_tbs(INT, SEQ, SEQ, _validity(b"300101000000+0800"), SEQ, SPKI), "UTCTime or"),
        (_tbs(INT, SEQ, SEQ, _validity(b"20300101000000", 0x18), SEQ, SPKI), "UTCTime or"),
        (_tbs(INT, SEQ, SEQ, _validity(b"300101000000Z", 0x04), SEQ, SPKI), "UTCTime or"),
        (_tbs(INT, SEQ, SEQ, _validity(b"301301000000Z"), SEQ, SPKI), "real date"),
        (_tbs(INT, SEQ, SEQ, _validity(b"300101000000Z"), SEQ, SEQ), "algorithm, key"),
    ],
)
def test_anything_but_strict_der_is_refused_saying_why(der: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        certificate_facts(der)
    with pytest.raises(pins.PinMismatch):
        pins.check_pin(der, "0" * 64)


def test_a_real_certificate_cut_anywhere_or_with_a_byte_changed_is_refused_or_read_whole() -> None:
    der = _cert(KEYS["ec"](), dt.datetime(2031, 1, 1, tzinfo=UTC))
    real = certificate_facts(der)
    for cut in range(len(der)):
        with pytest.raises(ValueError):
            certificate_facts(der[:cut])
    for i in range(0, len(der), 3):
        changed = bytearray(der)
        changed[i] ^= 0x55
        try:
            facts = certificate_facts(bytes(changed))
        except ValueError:
            continue
        # a byte inside a value: the structure still reads, and the SPKI is what the bytes say
        assert facts.spki == real.spki or facts.spki in bytes(changed)


@pytest.mark.slow
@given(st.binary(max_size=512))
def test_random_bytes_are_a_value_error_or_a_reading(data: bytes) -> None:
    try:
        facts = certificate_facts(data)
    except ValueError:
        return
    assert facts.spki in data


def test_pem_without_a_certificate_or_with_damaged_base64_is_refused() -> None:
    with pytest.raises(ValueError, match="no PEM certificate"):
        pem_to_der(b"no pem here")
    with pytest.raises(ValueError, match="first block is something else"):
        pem_to_der(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    # outside attack F10: a leaf labelled as OpenSSL also reads it is the leaf, not the next block
    x509_label = b"-----BEGIN X509 CERTIFICATE-----\nMAA=\n-----END X509 CERTIFICATE-----\n"
    assert pem_to_der(x509_label + b"-----BEGIN CERTIFICATE-----\nAAAA\n") == b"\x30\x00"
    with pytest.raises(ValueError, match="no PEM certificate"):
        pem_to_der(b"-----BEGIN CERTIFICATE-----\nAAAA\n")
    with pytest.raises(ValueError, match="damaged"):
        pem_to_der(b"-----BEGIN CERTIFICATE-----\nA*A\n-----END CERTIFICATE-----\n")
    der = base64.b64encode(b"\x30\x00")
    pem = b"-----BEGIN CERTIFICATE-----\n" + der + b"\n-----END CERTIFICATE-----\n"
    with pytest.raises(ValueError, match="tbsCertificate"):
        pins.spki_pin_from_pem(pem)


@pytest.mark.slow
@settings(max_examples=max(100, settings().max_examples // 10))  # 1,000 in CI: a date range
@given(st.datetimes(min_value=dt.datetime(1950, 1, 1), max_value=dt.datetime(9999, 12, 31)))
def test_times_are_the_epoch_seconds_datetime_says(when: dt.datetime) -> None:
    when = when.replace(microsecond=0, tzinfo=UTC)
    if when.year < 2050:
        text, tag = when.strftime("%y%m%d%H%M%SZ").encode(), 0x17
    else:
        text, tag = f"{when.year:04d}{when.strftime('%m%d%H%M%SZ')}".encode(), 0x18
    der = _tbs(INT, SEQ, SEQ, _validity(text, tag), SEQ, SPKI)
    assert certificate_facts(der).not_after == when.timestamp()


@pytest.mark.parametrize(
    "text",
    [
        b"300229000000Z",
        b"300001000000Z",
        b"300100000000Z",
        b"300101240000Z",
        b"300101006000Z",
        b"300101000060Z",
        b"300431000000Z",
    ],
)
def test_dates_that_do_not_exist_are_refused(text: bytes) -> None:
    with pytest.raises(ValueError, match="real date"):
        certificate_facts(_tbs(INT, SEQ, SEQ, _validity(text), SEQ, SPKI))
