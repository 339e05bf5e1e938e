"""TLS pins: computed from PEM and DER alike, compared exactly, damage refused clearly."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from posassist.protocol.pins import PinMismatch, check_pin, spki_pin_from_der, spki_pin_from_pem


def make_cert() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_pin_is_the_same_from_pem_and_der_and_checks() -> None:
    cert = make_cert()
    pem = cert.public_bytes(serialization.Encoding.PEM)
    der = cert.public_bytes(serialization.Encoding.DER)
    pin = spki_pin_from_pem(pem)
    assert pin == spki_pin_from_der(der)
    assert len(pin) == 64
    assert pin == pin.lower()
    check_pin(der, pin)


def test_other_key_or_garbage_is_a_pin_mismatch() -> None:
    der = make_cert().public_bytes(serialization.Encoding.DER)
    other = spki_pin_from_der(make_cert().public_bytes(serialization.Encoding.DER))
    with pytest.raises(PinMismatch) as info:
        check_pin(der, other)
    assert info.value.public_reason == "TLS public key does not match the pin"
    with pytest.raises(PinMismatch):
        check_pin(b"not a certificate", other)


@pytest.mark.parametrize("bad", ["", "ABC", "A" * 64, "g" * 64, "0" * 63, "0" * 65, None])
def test_malformed_pins_are_refused(bad: str) -> None:
    from posassist.protocol.pins import validate_pin

    with pytest.raises(ValueError, match="64 lowercase hex"):
        validate_pin(bad)
    assert validate_pin("0" * 64) == "0" * 64
