"""The two things an agent reads from a TLS certificate, without an X.509 library: the bytes
of its SubjectPublicKeyInfo (for the pin) and its notAfter (for the expiry check).

Why not ``cryptography.x509``: loading it maps cryptography's 8.5 MB Rust library, most of an
idle till's budget (docs/notes/mem-status.md). Strict DER only (RFC 5280 §4.1, X.690 §10):
definite minimal lengths, exact nesting, nothing after the certificate. Anything else is a
``ValueError``: the caller refuses the certificate (a pin never matches a certificate it could
not read), it never guesses.
"""

from __future__ import annotations

from typing import List, NamedTuple, Tuple

__all__ = ["CertificateFacts", "certificate_facts", "pem_to_der"]

_SEQUENCE = 0x30
_INTEGER = 0x02
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18
_VERSION = 0xA0  # [0] EXPLICIT Version
#: nesting is at most a few levels here; a bound keeps hostile input cheap
_MAX_LENGTH = 1 << 24


class CertificateFacts(NamedTuple):
    #: the DER of subjectPublicKeyInfo exactly as in the certificate (tag and length included;
    #: what RFC 7469 pins hash; cryptography's re-encoding differs only for unusual keys such as
    #: a compressed EC point, whose pin therefore changed when this replaced it)
    spki: bytes
    #: notAfter, epoch seconds (UTC)
    not_after: float


def _element(data: bytes, at: int, end: int) -> Tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the element at ``at``; ValueError if it
    is not strict DER within ``end``."""
    if at + 2 > end:
        raise ValueError("certificate: truncated")
    tag, first = data[at], data[at + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("certificate: a multi-byte tag")
    at += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 3:
            raise ValueError("certificate: an indefinite or oversized length")
        if at + count > end:
            raise ValueError("certificate: truncated")
        length = int.from_bytes(data[at : at + count], "big")
        if length < 0x80 or data[at] == 0:
            raise ValueError("certificate: a length not in its shortest form")
        at += count
    if length > _MAX_LENGTH or at + length > end:
        raise ValueError("certificate: an element longer than what holds it")
    return tag, at, at + length


def _children(data: bytes, start: int, end: int) -> List[Tuple[int, int, int, int]]:
    """(tag, header start, contents start, contents end) of each element in [start, end)."""
    out = []
    at = start
    while at < end:
        tag, body, after = _element(data, at, end)
        out.append((tag, at, body, after))
        at = after
    return out


def _time(tag: int, text: bytes) -> float:
    try:
        raw = text.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("certificate: a time that is not ASCII") from None
    if tag == _UTC_TIME and len(raw) == 13 and raw.endswith("Z") and raw[:12].isdigit():
        year = int(raw[:2])
        full = (2000 if year < 50 else 1900) + year  # RFC 5280 §4.1.2.5.1
        digits = raw[2:12]
    elif tag == _GENERALIZED_TIME and len(raw) == 15 and raw.endswith("Z") and raw[:14].isdigit():
        full, digits = int(raw[:4]), raw[4:14]
    else:
        raise ValueError("certificate: notAfter is not a UTCTime or GeneralizedTime in UTC")
    month, day, hour, minute, second = (int(digits[i : i + 2]) for i in range(0, 10, 2))
    leap = full % 4 == 0 and (full % 100 != 0 or full % 400 == 0)
    days_in = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    if (
        not (1 <= month <= 12 and 1 <= day <= days_in[month - 1])
        or max(hour - 23, minute - 59, second - 59) > 0
    ):
        raise ValueError("certificate: notAfter is not a real date")
    return float(_days_from_civil(full, month, day) * 86400 + hour * 3600 + minute * 60 + second)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (no clock or datetime in protocol/)."""
    year -= month <= 2
    era = year // 400
    of_era = year - era * 400
    of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    of_cycle = of_era * 365 + of_era // 4 - of_era // 100 + of_year
    return era * 146097 + of_cycle - 719468


def certificate_facts(der: bytes) -> CertificateFacts:
    """The SPKI bytes and notAfter of one DER X.509 certificate; ValueError if it is not one."""
    data = bytes(der)
    tag, body, end = _element(data, 0, len(data))
    if tag != _SEQUENCE or end != len(data):
        raise ValueError("certificate: not one DER SEQUENCE")
    parts = _children(data, body, end)
    if len(parts) != 3 or parts[0][0] != _SEQUENCE:
        raise ValueError("certificate: not tbsCertificate, algorithm, signature")
    _, _, tbs_body, tbs_end = parts[0]
    fields = _children(data, tbs_body, tbs_end)
    if fields and fields[0][0] == _VERSION:
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, [extensions]
    if len(fields) < 6:
        raise ValueError("certificate: tbsCertificate is too short")
    expected = (_INTEGER, _SEQUENCE, _SEQUENCE, _SEQUENCE, _SEQUENCE, _SEQUENCE)
    if tuple(f[0] for f in fields[:6]) != expected:
        raise ValueError("certificate: tbsCertificate fields out of order")
    _, _, validity_body, validity_end = fields[3]
    times = _children(data, validity_body, validity_end)
    if len(times) != 2:
        raise ValueError("certificate: validity is not notBefore, notAfter")
    tag, _, start, stop = times[1]
    not_after = _time(tag, data[start:stop])
    _, header, _, spki_end = fields[5]
    spki = data[header:spki_end]
    if len(_children(data, fields[5][2], spki_end)) != 2:
        raise ValueError("certificate: subjectPublicKeyInfo is not algorithm, key")
    return CertificateFacts(spki, not_after)


def pem_to_der(pem: bytes) -> bytes:
    """The DER of the first PEM block of ``pem``, which must be a certificate (``CERTIFICATE``
    or ``X509 CERTIFICATE``, as OpenSSL reads the leaf a server presents); ValueError if it
    is not one: never the pin of a later block the server does not present."""
    import base64
    import binascii

    start = pem.find(b"-----BEGIN ")
    if start < 0:
        raise ValueError("no PEM certificate")
    for label in (b"CERTIFICATE", b"X509 CERTIFICATE"):
        begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
        if pem.startswith(begin, start):
            break
    else:
        raise ValueError("no PEM certificate: the first block is something else")
    stop = pem.find(end, start + len(begin))
    if stop < 0:
        raise ValueError("no PEM certificate")
    body = b"".join(pem[start + len(begin) : stop].split())
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a PEM certificate whose base64 is damaged") from None
