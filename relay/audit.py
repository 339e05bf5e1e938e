"""The hash-chained audit log: canonical record bytes, chaining, and verification.

Each record's ``hash`` is ``SHA-256(prev_hash || canonical_bytes(record))``; the first record chains
from 32 zero bytes. This module is pure; appending (serialised, so the chain can't fork) lives in
:mod:`relay.storage`, and :func:`verify_store` streams a stored log through :class:`ChainVerifier`.

A chain alone proves nothing to someone who can rewrite the database: they can edit a record and
rehash everything after it, or cut the tail and move the head. So the relay signs the head from
time to time with a key kept *outside* the database (:class:`Checkpoint`, written by
:mod:`relay.checkpoints`), and verification checks the chain against those signed checkpoints
(docs/relay.md#audit-checkpoints).
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from posassist.relay.errors import CheckpointError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from posassist.relay.storage.interfaces import AuditLog

__all__ = [
    "CHECKPOINT_ACTION",
    "CHECKPOINT_CONTEXT",
    "GENESIS_HASH",
    "RELAY_CREATED",
    "TAMPERING_NOTES",
    "AuditRecord",
    "ChainVerifier",
    "Checkpoint",
    "CheckpointError",
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
#: The action of a relay's first record (``posassist-relay init``): a log that starts elsewhere
#: has lost its beginning.
RELAY_CREATED = "relay.init"
#: What the relay adds to a record's detail when it finds the log tampered with as it appends
#: (rows past the head, the head row deleted): it keeps working, and verification fails there.
TAMPERING_NOTES = ("stray_records", "head_rebuilt")
#: The action of the record a checkpoint signs (relay/checkpoints.py ``Checkpointer``).
CHECKPOINT_ACTION = "audit.checkpoint"
#: Prefixed to what a checkpoint key signs, so the signature can't be taken for another purpose.
CHECKPOINT_CONTEXT = b"posassist audit checkpoint v1\x00"


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
    if all(_reads_back_as_is(value) for value in detail.values()):
        # the usual detail (ids, counts, a list of names): what JSON would give back, without
        # writing and reading it (two of an audited request's four JSON passes)
        return {key: list(v) if type(v) in (list, tuple) else v for key, v in detail.items()}
    try:
        normalised: dict[str, Any] = json.loads(_dumps(dict(detail)))
    except TypeError as exc:
        raise ValueError("audit detail must be JSON-compatible") from exc
    return normalised


#: Types JSON gives back as they are (exactly these: a str or int subclass reads back as its base).
_AS_IS = frozenset({str, int, bool, type(None)})


def _reads_back_as_is(value: object) -> bool:
    """Whether ``value`` reads back from JSON equal and of the same type (a tuple as a list)."""
    kind = type(value)
    if kind in _AS_IS:
        return True
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    if kind is list or kind is tuple:
        return all(type(item) in _AS_IS for item in value)  # type: ignore[attr-defined]
    return False


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """The audit head (``seq``, ``hash``) at ``at``, signed by the relay's checkpoint key.

    One JSON object per line in the checkpoint file: ``signature`` is Ed25519 over
    :attr:`payload`; the key never touches the database, so rewriting the database can't make a
    checkpoint agree with a rewritten chain.
    """

    relay_id: str
    seq: int
    hash: bytes
    at: float
    signature: bytes = b""

    @property
    def payload(self) -> bytes:
        """What the signature covers: a context string, then the canonical JSON of the fields."""
        body = {
            "relay_id": self.relay_id,
            "seq": self.seq,
            "hash": self.hash.hex(),
            "at": float(self.at),
        }
        return CHECKPOINT_CONTEXT + _dumps(body).encode("utf-8")

    def to_line(self) -> str:
        """The checkpoint as one line of JSON (no newline)."""
        return _dumps(
            {
                "relay_id": self.relay_id,
                "seq": self.seq,
                "hash": self.hash.hex(),
                "at": float(self.at),
                "signature": base64.b64encode(self.signature).decode("ascii"),
            }
        )

    @classmethod
    def from_line(cls, line: str) -> Checkpoint:
        """Parse :meth:`to_line`'s output (the signature unchecked); CheckpointError if bad."""
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise CheckpointError("not a checkpoint line") from exc
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: object) -> Checkpoint:
        """:meth:`from_line` once the line is JSON; CheckpointError unless it is a checkpoint.

        ``seq`` must be a JSON integer and ``at`` a finite number (attack 16, F4 and I1:
        ``1e400`` or ``Infinity`` stopped ``serve`` with a traceback, ``34.9`` verified as 34).
        """
        if not isinstance(data, dict):
            raise CheckpointError("not a checkpoint line")
        seq, at = data.get("seq"), data.get("at")
        if type(seq) is not int or seq < 1:
            raise CheckpointError("not a checkpoint line: seq is not a positive integer")
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
            raise CheckpointError("not a checkpoint line: at is not a finite number")
        try:
            checkpoint = cls(
                relay_id=data["relay_id"],
                seq=seq,
                hash=bytes.fromhex(data["hash"]),
                at=float(at),
                signature=base64.b64decode(data["signature"], validate=True),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError("not a checkpoint line") from exc
        if type(checkpoint.relay_id) is not str or len(checkpoint.hash) != len(GENESIS_HASH):
            raise CheckpointError("not a checkpoint line")
        return checkpoint


class VerifyFailure(enum.StrEnum):
    """Why verification stopped."""

    MISSING = "record missing or out of order"
    PREV_HASH_MISMATCH = "prev_hash does not match the previous record's hash"
    HASH_MISMATCH = "hash does not match the record's contents"
    TRUNCATED = "records missing at the end of the log"
    NO_HEAD = "the chain head is missing"
    HEAD_MISMATCH = "the chain head does not match the last record"
    STRAY = "records past the chain head"
    NOT_CREATION = f"the first record is not the relay's creation ({RELAY_CREATED})"
    CHECKPOINT_MISMATCH = "record does not match the signed checkpoint (edited and rehashed?)"
    BEHIND_CHECKPOINT = "records missing up to a signed checkpoint (log truncated?)"
    TAMPERING_SEEN = "the relay found the log tampered with when it wrote this record"
    CHECKPOINT_UNSIGNED = (
        "checkpoint record with no signed line in the checkpoint file (file deleted or cut, "
        "or the relay stopped between the two writes)"
    )
    CHECKPOINT_KEY_CHANGED = "checkpoint record made with another key (checkpoint key replaced?)"


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
    """Feeds records in ``seq`` order, stopping at the first bad one (sans-I/O, streamable).

    ``checkpoints`` (seq → hash, from verified :class:`Checkpoint` lines) pin records the chain
    must still hold; ``first_action`` is what the first record must be (:data:`RELAY_CREATED`).
    ``checkpoint_key`` (the fingerprint of the key the checkpoints were verified with) also holds
    the chain's own ``audit.checkpoint`` records to them: each must name that key and be signed
    in ``checkpoints``, so deleting or cutting the checkpoint file, or replacing the key, fails.
    """

    def __init__(
        self,
        *,
        after_seq: int = 0,
        after_hash: bytes = GENESIS_HASH,
        checkpoints: Mapping[int, bytes] | None = None,
        first_action: str | None = None,
        checkpoint_key: str | None = None,
    ) -> None:
        self._last_seq = after_seq
        self._last_hash = after_hash
        self._checkpoints = dict(checkpoints or {})
        self._first_action = first_action
        self._checkpoint_key = checkpoint_key
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
        if record.seq == 1 and self._first_action not in (None, record.action):
            return self._fail(1, VerifyFailure.NOT_CREATION)
        if self._checkpoints.get(record.seq, record.hash) != record.hash:
            return self._fail(record.seq, VerifyFailure.CHECKPOINT_MISMATCH)
        if any(key in record.detail for key in TAMPERING_NOTES):
            return self._fail(record.seq, VerifyFailure.TAMPERING_SEEN)
        if self._checkpoint_key is not None and record.action == CHECKPOINT_ACTION:
            if record.detail.get("key") != self._checkpoint_key:
                return self._fail(record.seq, VerifyFailure.CHECKPOINT_KEY_CHANGED)
            if record.seq not in self._checkpoints:
                return self._fail(record.seq, VerifyFailure.CHECKPOINT_UNSIGNED)
        self._last_seq, self._last_hash = record.seq, record.hash
        self._checked += 1
        return True

    def result(
        self,
        *,
        head_seq: int | None = None,
        head_hash: bytes | None = None,
        head_missing: bool = False,
        last_stored_seq: int | None = None,
    ) -> VerifyResult:
        """The verdict once every record up to the head was fed.

        ``head_*`` (from the stored chain head) also catch a truncated tail; ``head_missing``
        says the head row is gone; ``last_stored_seq`` (the highest seq stored) catches records
        past the head. Signed checkpoints past the last record catch a truncation that moved
        the head back with it.
        """
        if not self.failed:
            self._judge_end(head_seq, head_hash, head_missing, last_stored_seq)
        return VerifyResult(
            ok=not self.failed,
            records_checked=self._checked,
            last_seq=self._last_seq,
            last_hash=self._last_hash,
            first_bad_seq=self._bad_seq,
            reason=self._reason,
        )

    def _judge_end(
        self,
        head_seq: int | None,
        head_hash: bytes | None,
        head_missing: bool,
        last_stored_seq: int | None,
    ) -> None:
        next_seq = self._last_seq + 1
        if self._first_action is not None and self._last_seq == 0:
            self._fail(1, VerifyFailure.NOT_CREATION)  # nothing at all: not even the creation
        elif head_missing:
            self._fail(next_seq, VerifyFailure.NO_HEAD)
        elif last_stored_seq is not None and last_stored_seq > self._last_seq:
            self._fail(next_seq, VerifyFailure.STRAY)
        elif head_seq is not None and head_seq > self._last_seq:
            self._fail(next_seq, VerifyFailure.TRUNCATED)
        elif max(self._checkpoints, default=0) > self._last_seq:
            self._fail(next_seq, VerifyFailure.BEHIND_CHECKPOINT)
        elif head_seq is not None and head_hash not in (None, self._last_hash):
            self._fail(self._last_seq, VerifyFailure.HEAD_MISMATCH)


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


async def verify_store(
    log: AuditLog,
    *,
    batch_size: int = 1000,
    checkpoints: Iterable[Checkpoint] = (),
    first_action: str | None = None,
    checkpoint_key: str | None = None,
) -> VerifyResult:
    """Verify a stored log, streaming it; records appended meanwhile are not checked.

    Args:
        log: the stored log.
        batch_size: records read per query.
        checkpoints: signed checkpoints, their signatures already verified
            (:func:`relay.checkpoints.read_checkpoints`).
        first_action: what the first record must be; :data:`RELAY_CREATED` for a relay's log.
        checkpoint_key: the fingerprint of the key that verified ``checkpoints``: the log's
            ``audit.checkpoint`` records must name it and be among them (:class:`ChainVerifier`).
    """
    head, last_stored_seq = await log.extent()
    verifier = ChainVerifier(
        checkpoints={c.seq: c.hash for c in checkpoints},
        first_action=first_action,
        checkpoint_key=checkpoint_key,
    )
    stop_seq = last_stored_seq if head is None else head.seq

    def feed(batch: list[AuditRecord]) -> bool:
        return all(verifier.feed(record) for record in batch)

    # The hashing (~57 us a record) runs in a worker a batch at a time: a million records
    # held the event loop, and every till and console with it, for about a minute.
    batch: list[AuditRecord] = []
    intact = True
    async for record in log.records(stop_seq=stop_seq, batch_size=batch_size):
        batch.append(record)
        if len(batch) >= batch_size:
            intact = await asyncio.to_thread(feed, batch)
            batch = []
            if not intact:
                break
    if intact and batch:
        await asyncio.to_thread(feed, batch)
    return verifier.result(
        head_seq=None if head is None else head.seq,
        head_hash=None if head is None else head.hash,
        head_missing=head is None,
        last_stored_seq=last_stored_seq,
    )


#: How much of a peer's data (a console's script params and collector names, an agent's
#: progress detail) one audit record keeps (attack finding F11): strings past
#: MAX_AUDITED_STRING characters keep their start, their length and a SHA-256 prefix; lists and
#: maps keep MAX_AUDITED_ITEMS entries and count the rest; MAX_AUDITED_DEPTH levels; and
#: MAX_AUDITED_CHARS characters in all, so a record stays a few KB whatever was sent.
MAX_AUDITED_STRING = 256
MAX_AUDITED_ITEMS = 64
MAX_AUDITED_DEPTH = 6
MAX_AUDITED_CHARS = 4096


def bounded(value: object) -> Any:
    """A JSON-compatible copy of ``value`` (a peer's data) small enough for the audit chain."""
    return _bound(value, [MAX_AUDITED_CHARS], 0)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _bound(value: object, left: list[int], depth: int) -> Any:
    if left[0] <= 0:
        return "…"
    if value is None or isinstance(value, (bool, int)):
        left[0] -= 8
        return value
    if isinstance(value, float):
        left[0] -= 8
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        keep = min(MAX_AUDITED_STRING, left[0])
        if len(value) <= keep:
            left[0] -= len(value) + 2
            return value
        left[0] -= keep + 64
        digest = _sha(value.encode("utf-8", "surrogatepass"))
        return f"{value[:keep]}…[{len(value)} chars, sha256:{digest}]"
    if isinstance(value, (bytes, bytearray)):
        left[0] -= 48
        return f"[{len(value)} bytes, sha256:{_sha(bytes(value))}]"
    if isinstance(value, Mapping):
        if depth >= MAX_AUDITED_DEPTH:
            left[0] -= 24
            return f"[map of {len(value)} entries]"
        out: dict[str, Any] = {}
        for index, (key, item) in enumerate(value.items()):
            if index >= MAX_AUDITED_ITEMS or left[0] <= 0:
                out["…"] = f"{len(value) - index} more entries"
                break
            name = str(key)
            if len(name) > 64:
                digest = _sha(name.encode("utf-8", "surrogatepass"))
                name = f"{name[:64]}…[{len(name)} chars, sha256:{digest}]"
            left[0] -= len(name) + 4
            out[name] = _bound(item, left, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        if depth >= MAX_AUDITED_DEPTH:
            left[0] -= 24
            return f"[list of {len(value)} items]"
        items: list[Any] = []
        for index, item in enumerate(value):
            if index >= MAX_AUDITED_ITEMS or left[0] <= 0:
                items.append(f"… {len(value) - index} more items")
                break
            items.append(_bound(item, left, depth + 1))
        return items
    left[0] -= 24
    return f"[{type(value).__name__}]"
