"""Redaction of text before it leaves the till: card numbers and caller patterns.

The card-number rule (docs/findings.md#redaction): a run of 13-19 digits (ASCII or full-width),
optionally grouped by single spaces, tabs, no-break spaces, dots or dashes, whose first digits fall
in a known card range (:data:`CARD_RANGES`, UnionPay's 62 included) is masked to its last four
digits, whether or not its Luhn check holds; never more than four of its digits stay readable.
Other numbers (timestamps, order numbers, a Chinese EAN-13 product barcode) are left alone.
``catalog/collect-log-bundle/log_bundle.py`` carries a copy of this rule;
tests/agent/test_redact.py keeps the two identical.
"""

from __future__ import annotations

import bisect
import re
from typing import List, Optional, Pattern, Sequence, Union

__all__ = [
    "CARD_RANGES",
    "REDACTED",
    "SECRET_PATTERNS",
    "Redactor",
    "ean13_ok",
    "in_card_range",
    "luhn_ok",
    "mask_card_numbers",
    "redact",
]

REDACTED = "[REDACTED]"

# Digit groups joined by one space or dash, not touching other digits. A contiguous run longer
# than 19 digits is not a card number (order ids, timestamps) and is left alone.
_DIGIT_RUN = re.compile(
    "(?<![0-9\uff10-\uff19])[0-9\uff10-\uff19]+"
    "(?:[ \t\u00a0.-][0-9\uff10-\uff19]+)*(?![0-9\uff10-\uff19])"
)
_GROUP = re.compile("[0-9\uff10-\uff19]+")
#: Full-width digits (a Chinese input method's) read as ASCII ones.
_ASCII = {0xFF10 + i: 0x30 + i for i in range(10)}


# Issuer ranges by leading digits, (low, high) inclusive and of equal length (ISO/IEC 7812 IINs):
# Visa 4; Mastercard 51-55 and 2221-2720; Maestro 50, 56-58; Amex 34, 37; Diners 300-305, 309,
# 36, 38-39; JCB 3528-3589; Discover, UnionPay (62), RuPay and Maestro 6.
CARD_RANGES = (
    ("4", "4"),
    ("50", "58"),
    ("2221", "2720"),
    ("34", "34"),
    ("37", "37"),
    ("300", "305"),
    ("309", "309"),
    ("36", "36"),
    ("38", "39"),
    ("3528", "3589"),
    ("6", "6"),
)


def in_card_range(digits: str) -> bool:
    """Tell whether a 13-19 digit string starts in a known card range (Luhn not consulted).

    A 13-digit GS1 China product barcode (EAN-13, prefix 690-699, its check digit right) is not
    a card: no card scheme issues 13-digit numbers there, and scanner errors must stay readable.
    """
    if not 13 <= len(digits) <= 19:
        return False
    if len(digits) == 13 and digits.startswith("69") and ean13_ok(digits):
        return False
    return any(lo <= digits[: len(lo)] <= hi for lo, hi in CARD_RANGES)


def ean13_ok(digits: str) -> bool:
    """Tell whether 13 ASCII digits end in their EAN-13 check digit."""
    total = sum((ord(ch) - 48) * (3 if i % 2 else 1) for i, ch in enumerate(digits[:12]))
    return (10 - total % 10) % 10 == ord(digits[12]) - 48


def luhn_ok(digits: str) -> bool:
    """Tell whether a string of ASCII digits passes the Luhn check.

    Args:
        digits: only the digits, no separators.

    Returns:
        True when the Luhn checksum is valid.
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _mask(span: str) -> str:
    """Replace every digit but the last four with ``*``, keeping separators."""
    keep = 4
    out: List[str] = []
    for ch in reversed(span):
        if ch.isdigit():
            out.append(ch if keep > 0 else "*")
            keep -= 1
        else:
            out.append(ch)
    return "".join(reversed(out))


def _mask_run(run: str) -> str:
    """Mask every card number in one run of digit groups.

    Every group-aligned window of 13-19 digits in a card range is a possible card; overlapping
    ones are joined into one region, masked but for the region's last four digits. So no window
    that could be a card (a stray digit before it, a 19-digit UnionPay number read as 16 + 3)
    ever shows more than four of its digits. Windows that only touch stay apart (two cards).
    """
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(run)]
    digits = "".join(run[a:b] for a, b in groups).translate(_ASCII)
    offsets = [0]
    for a, b in groups:
        offsets.append(offsets[-1] + b - a)
    regions: List[List[int]] = []  # [first group, last group]
    for i in range(len(groups)):
        # the longest window from group i of at most 19 digits (all share its first digits)
        j = bisect.bisect_right(offsets, offsets[i] + 19) - 2
        if j < i or not in_card_range(digits[offsets[i] : offsets[j + 1]]):
            continue
        if regions and i <= regions[-1][1]:
            regions[-1][1] = max(regions[-1][1], j)
        else:
            regions.append([i, j])
    pieces: List[str] = []
    pos = 0
    for first, last in regions:
        start, end = groups[first][0], groups[last][1]
        pieces.append(run[pos:start])
        pieces.append(_mask(run[start:end]))
        pos = end
    pieces.append(run[pos:])
    return "".join(pieces)


def mask_card_numbers(text: str) -> str:
    """Mask every 13-19 digit run in a known card range in ``text``, keeping its last four digits.

    ``6222 0212 3456 7890`` becomes ``**** **** **** 7890`` though it fails the Luhn check;
    ``20261205070000`` (a timestamp) is left alone: no card range starts with 20.

    Args:
        text: any text.

    Returns:
        The text with card numbers masked.
    """
    return _DIGIT_RUN.sub(lambda m: _mask_run(m.group(0)), text)


PatternLike = Union[str, Pattern[str]]

#: Secrets masked in any text that leaves the till, before a profile's own patterns: the value
#: after a password/token/secret key (``key=value``, ``"key": "value"``), in an XML element of
#: that name, an ``Authorization`` header's credentials, a member's phone number.
#: ``catalog/collect-log-bundle/log_bundle.py`` carries the same list (a test keeps them equal).
SECRET_PATTERNS = (
    r"(?i)\b(?:password|passwd|pwd|token|secret|api[_-]?key)[\"']?\s*[=:]\s*"
    r"(?P<q>[\"'])?(?P<secret>(?(q)[^\"']*|[^\s;,&\"'<]+))",
    r"(?i)<(?P<tag>password|passwd|pwd|token|secret)>(?P<secret>[^<]*)</(?P=tag)>",
    r"(?i)\bauthorization\s*:\s*(?:bearer|basic)\s+(?P<secret>[A-Za-z0-9._~+/=-]+)",
    r"(?i)\bmember_phone\s*[=:]\s*(?P<secret>\d{11})",
)


class Redactor:
    """Card-number masking, the built-in :data:`SECRET_PATTERNS`, plus extra patterns (e.g. from
    a POS profile).

    A pattern with a group named ``secret`` has only that group replaced, so
    ``r"password=(?P<secret>\\S+)"`` keeps the key and hides the value; otherwise the whole match
    is replaced by ``[REDACTED]``.
    """

    def __init__(self, patterns: Sequence[PatternLike] = ()) -> None:
        """Compile the extra patterns.

        Args:
            patterns: regular expressions (strings or compiled) to redact besides card numbers.

        Raises:
            re.error: a pattern does not compile.
        """
        self.patterns: List[Pattern[str]] = [
            p if isinstance(p, re.Pattern) else re.compile(p) for p in (*SECRET_PATTERNS, *patterns)
        ]

    def redact(self, text: str) -> str:
        """Return ``text`` with card numbers masked and the extra patterns replaced."""
        text = mask_card_numbers(text)
        for pattern in self.patterns:
            text = pattern.sub(_replacer, text)
        return text


def _replacer(match: re.Match[str]) -> str:
    if "secret" in match.re.groupindex and match.group("secret") is not None:
        whole = match.group(0)
        start = match.start("secret") - match.start(0)
        end = match.end("secret") - match.start(0)
        return whole[:start] + REDACTED + whole[end:]
    return REDACTED


def redact(text: str, patterns: Optional[Sequence[PatternLike]] = None) -> str:
    """Mask card numbers and the given patterns in ``text`` (see :class:`Redactor`)."""
    return Redactor(patterns or ()).redact(text)
