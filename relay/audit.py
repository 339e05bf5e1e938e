"""The hash-chained audit log: canonical record bytes, chaining, and verification.

Each record's ``hash`` is ``SHA-256(prev_hash || canonical_bytes(record))``; the first record chains
from 32 zero bytes. This module is pure; appending (serialised, so the chain can't fork) lives in
:mod:`relay.storage`, and :func:`verify_store` streams a stored log through :class:`ChainVerifier`.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from posassist.relay.storage.interfaces import AuditLog

__all__ = [
    "GENESIS_HASH",
    "AuditRecord",
    "ChainVerifier",
    "Outcome",
    "VerifyFailure",
    "VerifyResult",
    "canonical_bytes",
    "chain_hash",
    "normalise_detail",
    "verify",
    "verify_store",
]

#: What the first record's ``prev_hash`` is.
GENESIS_HASH = bytes(32)


class Outcome(enum.StrEnum):
    """How the audited action ended."""

    OK = "ok"
    REFUSED = "refused"
    FAILED = "failed"
    #: The relay lost track of it (a script that may have run); a later record says how it ended.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What a caller asks to append; the log adds seq, time and the chain hashes."""

    actor: str
    action: str
    target: str
    outcome: Outcome
    detail: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """One audit entry, as stored.

    ``at`` is epoch seconds; ``detail`` is JSON-compatible data (see :func:`normalise_detail`).
    """

    seq: int
    at: float
    actor: str
    action: str
    target: str
    outcome: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    prev_hash: bytes = GENESIS_HASH
    hash: bytes = GENESIS_HASH


def _dumps(value: object) -> str:
    # sort_keys + fixed separators + no ASCII escaping make the text a function of the value;
    # floats use repr(), which is the shortest round-tripping form and so deterministic.
    # NaN and infinities are refused: they are not JSON and have no canonical text.
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def normalise_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``detail`` as it will read back from the database (tuples → lists, etc.).

    Hashing the normalised value guarantees that a record re-read from storage hashes the same.

    Raises:
        ValueError: ``detail`` is not JSON-compatible (NaN, non-string keys, odd types).
    """
    if any(not isinstance(key, str) for key in detail):
        raise ValueError("audit detail keys must be strings")
    try:
        normalised: dict[str, Any] = json.loads(_dumps(dict(detail)))
    except TypeError as exc:
        raise ValueError("audit detail must be JSON-compatible") from exc
    return normalised


def canonical_bytes(record: AuditRecord) -> bytes:
    """The bytes a record's hash covers: every field except ``prev_hash`` and ``hash``.

    ``seq`` is included, so moving a record to another position breaks its hash.
    """
    body = {
        "seq": record.seq,
        "at": float(record.at),
        "actor": record.actor,
        "action": record.action,
        "target": record.target,
        "outcome": record.outcome,
        "detail": record.detail,
    }
    return _dumps(body).encode("utf-8")


def chain_hash(prev_hash: bytes, record: AuditRecord) -> bytes:
    """``SHA-256(prev_hash || canonical_bytes(record))``."""
    return hashlib.sha256(prev_hash + canonical_bytes(record)).digest()


class VerifyFailure(enum.StrEnum):
    """Why verification stopped."""

    MISSING = "record missing or out of order"
    PREV_HASH_MISMATCH = "prev_hash does not match the previous record's hash"
    HASH_MISMATCH = "hash does not match the record's contents"
    TRUNCATED = "records missing at the end of the log"


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyResult:
    """The outcome of a verification: ``ok``, or the first bad record's ``seq`` and why."""

    ok: bool
    records_checked: int
    last_seq: int
    last_hash: bytes
    first_bad_seq: int | None = None
    reason: VerifyFailure | None = None

    def describe(self) -> str:
        """One line for a human (``posassist-relay audit verify`` prints it)."""
        if self.ok:
            return f"audit chain intact: {self.records_checked} records, last seq {self.last_seq}"
        return f"audit chain broken at seq {self.first_bad_seq}: {self.reason}"


class ChainVerifier:
    """Feeds records in ``seq`` order, stopping at the first bad one (sans-I/O, streamable)."""

    def __init__(self, *, after_seq: int = 0, after_hash: bytes = GENESIS_HASH) -> None:
        self._last_seq = after_seq
        self._last_hash = after_hash
        self._checked = 0
        self._bad_seq: int | None = None
        self._reason: VerifyFailure | None = None

    @property
    def failed(self) -> bool:
        return self._reason is not None

    def _fail(self, seq: int, reason: VerifyFailure) -> bool:
        self._bad_seq, self._reason = seq, reason
        return False

    def feed(self, record: AuditRecord) -> bool:
        """Check the next record; False once the chain is broken (later records are ignored)."""
        if self.failed:
            return False
        expected_seq = self._last_seq + 1
        if record.seq != expected_seq:
            return self._fail(expected_seq, VerifyFailure.MISSING)
        if record.hash != chain_hash(record.prev_hash, record):
            return self._fail(record.seq, VerifyFailure.HASH_MISMATCH)
        if record.prev_hash != self._last_hash:
            return self._fail(record.seq, VerifyFailure.PREV_HASH_MISMATCH)
        self._last_seq, self._last_hash = record.seq, record.hash
        self._checked += 1
        return True

    def result(
        self, *, head_seq: int | None = None, head_hash: bytes | None = None
    ) -> VerifyResult:
        """The verdict; ``head_*`` (from the stored chain head) also catches a truncated tail."""
        if not self.failed and head_seq is not None:
            if head_seq > self._last_seq:
                self._fail(self._last_seq + 1, VerifyFailure.TRUNCATED)
            elif head_seq == self._last_seq and head_hash not in (None, self._last_hash):
                self._fail(self._last_seq, VerifyFailure.HASH_MISMATCH)
        return VerifyResult(
            ok=not self.failed,
            records_checked=self._checked,
            last_seq=self._last_seq,
            last_hash=self._last_hash,
            first_bad_seq=self._bad_seq,
            reason=self._reason,
        )


def verify(
    records: Iterable[AuditRecord],
    *,
    head_seq: int | None = None,
    head_hash: bytes | None = None,
) -> VerifyResult:
    """Verify records given in ``seq`` order from seq 1; pure.

    Args:
        records: the whole log, ordered by ``seq``.
        head_seq: the chain head's seq as separately recorded, to detect a deleted tail.
        head_hash: the chain head's hash as separately recorded.
    """
    verifier = ChainVerifier()
    for record in records:
        if not verifier.feed(record):
            break
    return verifier.result(head_seq=head_seq, head_hash=head_hash)


async def verify_store(log: AuditLog, *, batch_size: int = 1000) -> VerifyResult:
    """Verify a stored log, streaming it; records appended meanwhile are not checked."""
    head = await log.head()
    verifier = ChainVerifier()
    async for record in log.records(stop_seq=head.seq, batch_size=batch_size):
        if not verifier.feed(record):
            break
    return verifier.result(head_seq=head.seq, head_hash=head.hash)
