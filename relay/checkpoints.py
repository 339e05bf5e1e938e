"""Signed audit checkpoints: the key and the append-only file that anchor the audit chain.

The key (Ed25519, PEM, 0600) and the checkpoint file live in the relay's data directory, never in
the database, so someone who can only rewrite the database can't forge a checkpoint that agrees
with a rewritten chain (docs/relay.md#audit-checkpoints). Signing and verifying are pure
(:class:`relay.audit.Checkpoint`); this module does the file I/O.

A serving relay signs with the OpenSSL that ``ssl`` loaded (client/signer.py) and checks its own
newest checkpoint by signing it again (Ed25519 is deterministic): an idle relay need not map
cryptography's library (issue 16). ``audit verify`` checks with the public key, as anyone can.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from posassist.client.signer import load_signing_key, public_bytes_raw
from posassist.protocol import PosAssistError, signing

from .audit import CHECKPOINT_ACTION, Checkpoint, CheckpointError, Outcome
from .errors import CheckpointKeyError

if TYPE_CHECKING:
    from pathlib import Path

    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from posassist.client.signer import NativeSigner

    from .storage.interfaces import AuditLog

    #: What signs checkpoints: OpenSSL's key through ``ssl`` (a loaded key), or cryptography's.
    SigningKey = NativeSigner | Ed25519PrivateKey

__all__ = [
    "CHECKPOINTS_FILE",
    "KEY_FILE",
    "CheckpointFile",
    "Checkpointer",
    "append_checkpoint",
    "create_key",
    "load_key",
    "read_checkpoints",
    "read_last_checkpoint",
    "sign_checkpoint",
]

log = logging.getLogger("posassist.relay")

#: The checkpoint key's file name in a data directory (``--checkpoint-key`` overrides it).
KEY_FILE = "audit-checkpoint.key"
#: The checkpoint file's name in a data directory (``--checkpoint-file`` overrides it).
CHECKPOINTS_FILE = "audit-checkpoints.jsonl"


def create_key(path: Path) -> SigningKey:
    """A new checkpoint key written to ``path`` (0600); the one already there if it exists."""
    if path.exists():
        return load_key(path)
    key = signing.generate_private_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(signing.private_key_to_pem(key))
    return key


def load_key(path: Path) -> SigningKey:
    """The checkpoint key in ``path``; CheckpointKeyError if it is missing or not a key."""
    try:
        return load_signing_key(path.read_bytes())
    except OSError as exc:
        raise CheckpointKeyError(f"cannot read the audit checkpoint key {path}: {exc}") from exc
    except PosAssistError as exc:
        raise CheckpointKeyError(f"{path} is not an Ed25519 private key") from exc


def sign_checkpoint(
    key: SigningKey, *, relay_id: str, seq: int, hash: bytes, at: float
) -> Checkpoint:
    """A checkpoint of the head (``seq``, ``hash``) signed with ``key``."""
    unsigned = Checkpoint(relay_id=relay_id, seq=seq, hash=hash, at=at)
    return Checkpoint(
        relay_id=relay_id, seq=seq, hash=hash, at=at, signature=signing.sign(key, unsigned.payload)
    )


def append_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Append one line to the checkpoint file (created 0600) and wait for the disk.

    A file that does not end in a newline ends in a line a crash cut short: the new line starts
    after a newline of its own, so the torn line stays alone (``audit verify`` names it) and
    the new checkpoint is readable (attack 16, F3: it was glued onto the torn text).
    """
    line = (checkpoint.to_line() + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        if os.lseek(fd, 0, os.SEEK_END) > 0:
            os.lseek(fd, -1, os.SEEK_END)
            if os.read(fd, 1) != b"\n":
                line = b"\n" + line
        os.write(fd, line)  # O_APPEND: at the end, wherever the read left the offset
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class CheckpointFile:
    """What :func:`read_checkpoints` found: the checkpoints, and the numbers of the lines that
    are not JSON at all (a write a crash cut short; the newest may still be being written)."""

    checkpoints: list[Checkpoint]
    damaged: list[int]


def read_checkpoints(path: Path, public_key: Ed25519PublicKey) -> CheckpointFile:
    """Every checkpoint in ``path`` (none if there is no file), each signature verified, each
    seq greater than the one before.

    A line that is not JSON is what a crash leaves of a write cut short (a line that is whole
    JSON is never that): it is skipped and its number given in ``damaged``. Skipping it hides
    nothing that deleting it would not: a checkpoint record whose line is gone fails
    verification (:attr:`VerifyFailure.CHECKPOINT_UNSIGNED`).

    Raises:
        CheckpointError: naming the line: it is JSON but not a checkpoint, its signature doesn't
            verify, or its seq is not greater than the previous checkpoint's (a line copied
            again, or two checkpoints giving one seq different hashes).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return CheckpointFile([], [])
    checkpoints: list[Checkpoint] = []
    damaged: list[int] = []
    *lines, last = data.split(b"\n")
    if last:
        damaged.append(len(lines) + 1)  # no newline yet: cut short, or still being written
    for number, raw in enumerate(lines, 1):
        try:
            fields = json.loads(raw.decode("utf-8"))
        except ValueError:  # includes a cut in the middle of a UTF-8 sequence
            damaged.append(number)
            continue
        try:
            checkpoint = Checkpoint.from_json(fields)
        except CheckpointError as exc:
            raise CheckpointError(f"{path} line {number}: {exc}") from exc
        try:
            signing.verify(public_key, checkpoint.signature, checkpoint.payload)
        except PosAssistError as exc:
            raise CheckpointError(f"{path} line {number}: the signature does not verify") from exc
        before = checkpoints[-1] if checkpoints else None
        if before is not None and checkpoint.seq <= before.seq:
            if (checkpoint.seq, checkpoint.hash) == (before.seq, before.hash) or (
                checkpoint.seq < before.seq
            ):
                raise CheckpointError(
                    f"{path} line {number}: seq {checkpoint.seq} is not after the previous "
                    f"checkpoint's {before.seq} (an old line appended again?)"
                )
            raise CheckpointError(f"{path} line {number}: seq {checkpoint.seq} signed twice")
        checkpoints.append(checkpoint)
    return CheckpointFile(checkpoints, sorted(damaged))


def read_last_checkpoint(path: Path, key: SigningKey) -> Checkpoint | None:
    """The newest checkpoint in ``path``, signed with ``key``, reading only the file's tail (the
    file grows by a line an interval for the relay's whole life); None if there is none.

    Its signature must be the one ``key`` makes over its payload: Ed25519 signs deterministically
    (RFC 8032 §5.1.6), so a checkpoint this key signed always matches, and anything else is
    refused, as verifying with the public key would refuse it or stricter (another valid
    signature of the same payload, which only the key's holder can make, is refused too).
    The line before it, when it is a checkpoint, must have a lower seq (an old line appended
    again passed this check; attack 16, I1).

    Raises:
        CheckpointError: naming the line: the last complete line is not a checkpoint, is not
            signed by ``key``, or does not come after the checkpoint before it.
    """
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - _TAIL))
            tail = file.read()
    except FileNotFoundError:
        return None
    lines = tail.decode("utf-8", "replace").split("\n")[:-1]  # the last piece: "" or torn
    if size > _TAIL:
        lines = lines[1:]  # the first may be the end of a longer line
    if not lines:
        return None
    try:
        newest = _signed_by(lines[-1], key)
    except CheckpointError as exc:
        raise CheckpointError(f"{path} line {_count_lines(path)}: {exc}") from exc
    before = None
    with contextlib.suppress(CheckpointError):  # a damaged line before it: nothing to compare
        before = Checkpoint.from_line(lines[-2]) if len(lines) > 1 else None
    if before is not None and before.seq >= newest.seq:
        raise CheckpointError(
            f"{path} line {_count_lines(path)}: seq {newest.seq} is not after the line "
            f"before's {before.seq} (an old line appended again?)"
        )
    return newest


def _count_lines(path: Path) -> int:
    """The number of complete lines in ``path`` (only to name a bad one: it reads it all)."""
    with path.open("rb") as file:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(2**20), b""))


#: Bytes read from the end of the checkpoint file for the newest line (a line is ~250).
_TAIL = 4096


def _signed_by(line: str, key: SigningKey) -> Checkpoint:
    checkpoint = Checkpoint.from_line(line)
    if not hmac.compare_digest(signing.sign(key, checkpoint.payload), checkpoint.signature):
        raise CheckpointError("the newest checkpoint's signature does not verify")
    return checkpoint


@dataclass(slots=True)
class Checkpointer:
    """Signs the audit head now and then (relay/app.py runs it every
    ``audit_checkpoint_interval`` seconds): an ``audit.checkpoint`` record is appended, then
    that record's seq and hash are signed and written to the checkpoint file and the log."""

    key: SigningKey
    path: Path
    relay_id: str
    #: The key's fingerprint, written in each ``audit.checkpoint`` record.
    fingerprint: str
    #: The seq the last checkpoint covers; nothing is signed while the head stays there.
    last_seq: int = 0

    @classmethod
    def open(cls, key_path: Path, path: Path, relay_id: str) -> Checkpointer:
        """The checkpointer for these files; the key is made (0600) if there is none yet."""
        key = create_key(key_path)
        last = None
        with contextlib.suppress(CheckpointError):
            last = read_last_checkpoint(path, key)
        return cls(
            key=key,
            path=path,
            relay_id=relay_id,
            fingerprint=signing.fingerprint_raw(public_bytes_raw(key)),
            last_seq=0 if last is None else last.seq,
        )

    async def check_last(self, storage: AuditLog) -> str | None:
        """Why the newest checkpoint disagrees with the database, or None if it agrees."""
        try:
            last = await asyncio.to_thread(read_last_checkpoint, self.path, self.key)
        except (CheckpointError, OSError) as exc:
            return f"checkpoint file unreadable: {exc}"
        if last is None:
            return None
        records = [r async for r in storage.records(start_seq=last.seq, stop_seq=last.seq)]
        if not records:
            return f"record {last.seq} of the last checkpoint is missing"
        if records[0].hash != last.hash:
            return f"record {last.seq} differs from the last checkpoint"
        return None

    async def checkpoint(self, storage: AuditLog, *, now: float) -> Checkpoint | None:
        """Sign the head if it moved since the last checkpoint; None if it didn't."""
        head = await storage.head()
        if head.seq == self.last_seq:
            return None
        record = await storage.append(
            actor="relay",
            action=CHECKPOINT_ACTION,
            target="audit",
            outcome=Outcome.OK,
            now=now,
            detail={"previous": self.last_seq, "key": self.fingerprint},
        )
        checkpoint = sign_checkpoint(
            self.key, relay_id=self.relay_id, seq=record.seq, hash=record.hash, at=record.at
        )
        await asyncio.to_thread(append_checkpoint, self.path, checkpoint)
        self.last_seq = record.seq
        # A log shipper sends this line off the host too: a second copy out of the relay's reach.
        log.info("audit checkpoint %s", checkpoint.to_line())
        return checkpoint
