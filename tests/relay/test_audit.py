"""The audit chain: canonical bytes, pure verification, and tampering with a stored log."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import threading
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from posassist.client.signer import NativeSigner
from posassist.protocol import signing
from posassist.relay.audit import (
    GENESIS_HASH,
    RELAY_CREATED,
    AuditRecord,
    ChainVerifier,
    Checkpoint,
    CheckpointError,
    Outcome,
    VerifyFailure,
    canonical_bytes,
    chain_hash,
    normalise_detail,
    verify,
    verify_store,
)
from posassist.relay.checkpoints import (
    CheckpointFile,
    append_checkpoint,
    create_key,
    load_key,
    read_checkpoints,
    read_last_checkpoint,
    sign_checkpoint,
)

if TYPE_CHECKING:
    from posassist.relay.storage import SqlStorage


def make_chain(n: int) -> list[AuditRecord]:
    records, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        record = AuditRecord(
            seq=seq,
            at=1000.0 + seq / 10,
            actor="usr_alice",
            action="script.run",
            target=f"dev_{seq}",
            outcome="ok",
            detail={"script": "clear-spooler", "版本": 1.5, "n": seq},
            prev_hash=prev,
        )
        record = dataclasses.replace(record, hash=chain_hash(prev, record))
        records.append(record)
        prev = record.hash
    return records


# -- pure ---------------------------------------------------------------------------------------


def test_canonical_bytes_are_deterministic_and_key_order_independent():
    a = AuditRecord(
        seq=1,
        at=1.0,
        actor="a",
        action="x",
        target="t",
        outcome="ok",
        detail={"b": 1, "a": [1, 2.5], "z": "收银"},
    )
    b = dataclasses.replace(a, detail={"z": "收银", "a": [1, 2.5], "b": 1})
    assert canonical_bytes(a) == canonical_bytes(b)
    assert (
        canonical_bytes(a)
        == (
            '{"action":"x","actor":"a","at":1.0,"detail":{"a":[1,2.5],"b":1,"z":"收银"},'
            '"outcome":"ok","seq":1,"target":"t"}'
        ).encode()
    )


def test_canonical_bytes_treat_integer_and_float_time_alike():
    a = AuditRecord(seq=1, at=5, actor="a", action="x", target="t", outcome="ok")
    assert canonical_bytes(a) == canonical_bytes(dataclasses.replace(a, at=5.0))


def test_first_record_chains_from_32_zero_bytes():
    first = make_chain(1)[0]
    assert first.prev_hash == bytes(32)
    import hashlib

    assert first.hash == hashlib.sha256(bytes(32) + canonical_bytes(first)).digest()


def _typed(value: object) -> object:
    """``value`` with the type of every part beside it, to compare exactly."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return (type(value), [_typed(v) for v in value])
    return (type(value), value)


@pytest.mark.parametrize(
    "detail",
    [
        {"job": "job_1", "n": 3, "ok": True, "none": None, "ms": 12.5, "big": 2**70},
        {"collectors": ("printers", "pos"), "store": "st_1", "zh": "打印机"},
        {"names": ["a", 1, None, False], "zero": -0.0},
        {"nested": {"a": (1, 2.5)}, "outcome": Outcome.OK, "floats": [1.5]},
        {},
    ],
)
def test_a_detail_reads_as_json_gives_it_back(detail):
    # the plain details skip the JSON round trip: they must come out exactly as it would
    # give them (tuples as lists, an enum as its string), so a record re-read hashes the same
    expected = json.loads(json.dumps(detail))
    assert _typed(normalise_detail(detail)) == _typed(expected)


@pytest.mark.parametrize(
    "bad",
    [{"x": math.nan}, {"x": math.inf}, {1: "int key"}, {"x": {1, 2}}, {"x": [math.nan]}],
)
def test_detail_that_is_not_json_is_refused(bad):
    with pytest.raises(ValueError):
        normalise_detail(bad)


def test_intact_chain_verifies():
    result = verify(make_chain(5), head_seq=5)
    assert result.ok
    assert result.records_checked == 5
    assert result.last_seq == 5
    assert "intact" in result.describe()


def test_empty_chain_verifies():
    assert verify([], head_seq=0).ok


def test_edited_field_is_named():
    records = make_chain(5)
    records[2] = dataclasses.replace(records[2], outcome="refused")
    result = verify(records)
    assert (result.ok, result.first_bad_seq, result.reason) == (
        False,
        3,
        VerifyFailure.HASH_MISMATCH,
    )
    assert "seq 3" in result.describe()


def test_deleted_record_is_named():
    records = make_chain(5)
    del records[2]
    result = verify(records)
    assert (result.first_bad_seq, result.reason) == (3, VerifyFailure.MISSING)


def test_deleted_and_renumbered_record_is_named():
    records = make_chain(5)
    del records[2]
    records[2:] = [dataclasses.replace(r, seq=r.seq - 1) for r in records[2:]]
    result = verify(records)
    assert (result.first_bad_seq, result.reason) == (3, VerifyFailure.HASH_MISMATCH)


def test_rehashed_record_breaks_the_next_link():
    records = make_chain(5)
    edited = dataclasses.replace(records[2], actor="mallory")
    records[2] = dataclasses.replace(edited, hash=chain_hash(edited.prev_hash, edited))
    result = verify(records)
    assert (result.first_bad_seq, result.reason) == (4, VerifyFailure.PREV_HASH_MISMATCH)


def test_deleted_tail_is_caught_by_the_head():
    records = make_chain(5)
    assert verify(records[:4]).ok  # the chain alone can't tell…
    result = verify(records[:4], head_seq=5, head_hash=records[4].hash)  # …the head can
    assert (result.first_bad_seq, result.reason) == (5, VerifyFailure.TRUNCATED)


# -- stored --------------------------------------------------------------------------------------


async def append_n(storage: SqlStorage, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await storage.append(
            actor="usr_alice",
            action="script.run",
            target=f"dev_{i}",
            outcome=Outcome.OK if i % 3 else Outcome.REFUSED,
            now=1700000000.0 + i * 0.1,
            detail={"i": i, "ratio": i / 7, "note": "打印机缺纸", "nested": {"b": [1, None]}},
        )


async def tamper(storage: SqlStorage, *statements: str, **params: object) -> None:
    def tx(conn: sa.Connection) -> None:
        for statement in statements:
            conn.execute(sa.text(statement), params)

    await storage.run_write(tx)


async def test_stored_intact_chain_verifies(storage):
    await append_n(storage, 5)
    result = await verify_store(storage, batch_size=2)  # several batches
    assert result.ok, result.describe()
    assert result.records_checked == 5
    assert result.last_hash == (await storage.head()).hash


async def test_stored_chain_is_hashed_off_the_event_loop(storage, monkeypatch):
    """Verifying a long log must not hold the loop (every till and console waits on it)."""
    await append_n(storage, 7)
    loop_thread = threading.get_ident()
    fed_on: list[int] = []
    feed = ChainVerifier.feed

    def recording_feed(self: ChainVerifier, record: AuditRecord) -> bool:
        fed_on.append(threading.get_ident())
        return feed(self, record)

    monkeypatch.setattr(ChainVerifier, "feed", recording_feed)
    result = await verify_store(storage, batch_size=3)  # two full batches and a part
    assert result.ok, result.describe()
    assert len(fed_on) == 7
    assert loop_thread not in fed_on
    await tamper(storage, "UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    fed_on.clear()
    result = await verify_store(storage, batch_size=3)
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert len(fed_on) == 2  # stopped at the bad record, as before


async def test_stored_records_read_back_exactly_as_hashed(storage):
    written = await storage.append(
        actor="a",
        action="x",
        target="t",
        outcome=Outcome.FAILED,
        now=1.1,
        detail={"tuple": (1, 2), "float": 0.1 + 0.2, "big": 2**62, "u": "é"},
    )
    [read] = [r async for r in storage.records()]
    assert read == written
    assert read.detail == {"tuple": [1, 2], "float": 0.30000000000000004, "big": 2**62, "u": "é"}


async def test_stored_edited_field_fails_verify_at_that_record(storage):
    await append_n(storage, 5)
    await tamper(storage, "UPDATE audit SET actor = 'mallory' WHERE seq = 3")
    result = await verify_store(storage)
    assert (result.ok, result.first_bad_seq, result.reason) == (
        False,
        3,
        VerifyFailure.HASH_MISMATCH,
    )


async def test_stored_edited_detail_fails_verify_at_that_record(storage):
    await append_n(storage, 5)
    await tamper(storage, "UPDATE audit SET detail = '{\"i\": 99}' WHERE seq = 2")
    result = await verify_store(storage)
    assert (result.first_bad_seq, result.reason) == (2, VerifyFailure.HASH_MISMATCH)


async def test_stored_deleted_record_fails_verify_at_that_seq(storage):
    await append_n(storage, 5)
    await tamper(storage, "DELETE FROM audit WHERE seq = 3")
    result = await verify_store(storage)
    assert (result.first_bad_seq, result.reason) == (3, VerifyFailure.MISSING)


async def test_stored_deleted_last_record_fails_verify(storage):
    await append_n(storage, 5)
    await tamper(storage, "DELETE FROM audit WHERE seq = 5")
    result = await verify_store(storage)
    assert (result.first_bad_seq, result.reason) == (5, VerifyFailure.TRUNCATED)


async def test_stored_swapped_records_fail_verify_at_the_first(storage):
    await append_n(storage, 5)
    await tamper(
        storage,
        "UPDATE audit SET seq = -1 WHERE seq = 3",
        "UPDATE audit SET seq = 3 WHERE seq = 4",
        "UPDATE audit SET seq = 4 WHERE seq = -1",
    )
    result = await verify_store(storage)
    assert (result.first_bad_seq, result.reason) == (3, VerifyFailure.HASH_MISMATCH)


async def test_stored_edited_hash_fails_verify_at_that_record(storage):
    await append_n(storage, 5)
    await tamper(storage, "UPDATE audit SET hash = :h WHERE seq = 4", h=b"\x01" * 32)
    result = await verify_store(storage)
    assert (result.first_bad_seq, result.reason) == (4, VerifyFailure.HASH_MISMATCH)


async def test_appending_after_tampering_does_not_hide_it(storage):
    await append_n(storage, 3)
    await tamper(storage, "UPDATE audit SET target = 'dev_x' WHERE seq = 2")
    await append_n(storage, 3, start=3)
    result = await verify_store(storage)
    assert (result.first_bad_seq, result.reason) == (2, VerifyFailure.HASH_MISMATCH)


async def test_concurrent_appends_on_two_connections_keep_one_chain(storage: SqlStorage, open_more):
    other = await open_more()

    async def one(i: int) -> AuditRecord:
        target = storage if i % 2 else other
        return await target.append(
            actor=f"node{i % 2}",
            action="ping",
            target=f"dev_{i}",
            outcome=Outcome.OK,
            now=float(i),
            detail={"i": i},
        )

    appended = await asyncio.gather(*(one(i) for i in range(50)))
    assert sorted(r.seq for r in appended) == list(range(1, 51))
    assert len({r.prev_hash for r in appended}) == 50  # no two chained from one predecessor
    result = await verify_store(storage)
    assert result.ok, result.describe()
    assert result.records_checked == 50
    assert (await other.head()).seq == 50


async def test_actions_after_reads_only_those_actions_since_a_seq_in_batches(storage):
    # How a running relay follows revocations made by another process (relay/app.py).
    await append_n(storage, 3)
    start = (await storage.head()).seq
    assert await storage.actions_after(start, ("device.revoke",)) == (start, [])
    for device in ("dev_a", "dev_b", "dev_c"):
        await storage.append(
            actor="operator",
            action="device.revoke",
            target=f"device:{device}",
            outcome=Outcome.OK,
            now=1700000100.0,
        )
        await append_n(storage, 2)  # the relay's own traffic in between
    newest = (await storage.head()).seq
    seq, records = await storage.actions_after(start, ("device.revoke", "user.logout"), limit=2)
    assert [r.target for r in records] == ["device:dev_a", "device:dev_b"]
    assert seq == records[-1].seq  # a full batch: carry on from there
    seq, records = await storage.actions_after(seq, ("device.revoke",), limit=2)
    assert [r.target for r in records] == ["device:dev_c"]
    assert seq == newest
    assert await storage.actions_after(seq, ("device.revoke",)) == (newest, [])


# -- anchoring: creation record, head, stray rows, signed checkpoints ---------------------------


def test_a_chain_not_starting_with_the_relays_creation_is_named():
    records = make_chain(3)
    result = ChainVerifier(first_action=RELAY_CREATED)
    assert not result.feed(records[0])
    assert (result.result().first_bad_seq, result.result().reason) == (
        1,
        VerifyFailure.NOT_CREATION,
    )


def test_an_empty_chain_lacks_the_relays_creation():
    result = ChainVerifier(first_action=RELAY_CREATED).result(head_seq=0, head_hash=GENESIS_HASH)
    assert (result.ok, result.first_bad_seq, result.reason) == (
        False,
        1,
        VerifyFailure.NOT_CREATION,
    )


def test_a_chain_starting_with_the_relays_creation_verifies():
    records = make_chain(1)
    created = dataclasses.replace(records[0], action=RELAY_CREATED)
    created = dataclasses.replace(created, hash=chain_hash(GENESIS_HASH, created))
    verifier = ChainVerifier(first_action=RELAY_CREATED)
    assert verifier.feed(created)
    assert verifier.result(head_seq=1, head_hash=created.hash).ok


@pytest.mark.parametrize(
    ("kwargs", "seq", "reason"),
    [
        ({"head_missing": True}, 4, VerifyFailure.NO_HEAD),
        ({"head_seq": 3, "last_stored_seq": 5}, 4, VerifyFailure.STRAY),
        ({"head_seq": 3, "head_hash": b"\x01" * 32}, 3, VerifyFailure.HEAD_MISMATCH),
        ({"head_seq": 4}, 4, VerifyFailure.TRUNCATED),
    ],
)
def test_the_head_is_judged_against_the_last_record(kwargs, seq, reason):
    verifier = ChainVerifier()
    for record in make_chain(3):
        verifier.feed(record)
    result = verifier.result(**kwargs)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, seq, reason)
    assert reason in result.describe()


def test_a_record_rehashed_under_a_checkpoint_is_named():
    original = make_chain(4)
    edited = dataclasses.replace(original[1], target="dev_x")
    forged, prev = [original[0]], original[0].hash
    for record in [edited, *original[2:]]:
        record = dataclasses.replace(record, prev_hash=prev)
        record = dataclasses.replace(record, hash=chain_hash(prev, record))
        forged.append(record)
        prev = record.hash
    assert verify(forged).ok  # consistent in itself
    verifier = ChainVerifier(checkpoints={3: original[2].hash})
    for record in forged:
        verifier.feed(record)
    result = verifier.result(head_seq=4, head_hash=forged[-1].hash)
    assert (result.first_bad_seq, result.reason) == (3, VerifyFailure.CHECKPOINT_MISMATCH)


def test_a_log_cut_before_a_checkpoint_is_named_even_with_the_head_moved():
    records = make_chain(5)
    verifier = ChainVerifier(checkpoints={5: records[4].hash})
    for record in records[:3]:
        verifier.feed(record)
    result = verifier.result(head_seq=3, head_hash=records[2].hash, last_stored_seq=3)
    assert (result.first_bad_seq, result.reason) == (4, VerifyFailure.BEHIND_CHECKPOINT)


def test_checkpoint_lines_round_trip_and_refuse_a_bad_signature(tmp_path):
    key = signing.generate_private_key()
    path = tmp_path / "checkpoints.jsonl"
    first = sign_checkpoint(key, relay_id="r", seq=1, hash=b"\x02" * 32, at=1.5)
    second = sign_checkpoint(key, relay_id="r", seq=7, hash=b"\x03" * 32, at=2.5)
    append_checkpoint(path, first)
    append_checkpoint(path, second)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert read_checkpoints(path, key.public_key()) == CheckpointFile([first, second], [])
    with path.open("a") as out:
        out.write(first.to_line()[:20])  # a write cut short by a crash: skipped, named
    assert read_checkpoints(path, key.public_key()) == CheckpointFile([first, second], [3])
    other = signing.generate_private_key()
    with pytest.raises(CheckpointError, match="line 1: the signature does not verify"):
        read_checkpoints(path, other.public_key())
    path.write_text(
        first.to_line()
        + "\n"
        + sign_checkpoint(key, relay_id="r", seq=1, hash=b"\x09" * 32, at=3).to_line()
        + "\n"
    )
    with pytest.raises(CheckpointError, match="line 2: seq 1 signed twice"):
        read_checkpoints(path, key.public_key())
    path.write_text('{"not": "a checkpoint"}\n')
    with pytest.raises(CheckpointError, match="line 1: not a checkpoint line"):
        read_checkpoints(path, key.public_key())
    assert read_checkpoints(tmp_path / "none.jsonl", key.public_key()) == CheckpointFile([], [])


def _line(checkpoint: Checkpoint, **changes: object) -> str:
    fields = json.loads(checkpoint.to_line())
    fields.update(changes)
    return json.dumps(fields)


@pytest.mark.parametrize(
    "seq",
    ["1e400", "-1e400", "Infinity", "NaN", "34.9", "7.0", "true", '"7"', "null", "0", "[7]"],
)
def test_a_checkpoint_line_whose_seq_is_not_a_positive_integer_is_named_not_a_traceback(
    tmp_path, seq
):
    """Attack 16, F4 and I1: ``1e400`` stopped serve and verify with OverflowError; ``34.9``
    verified as seq 34."""
    key = signing.generate_private_key()
    path = tmp_path / "checkpoints.jsonl"
    good = sign_checkpoint(key, relay_id="r", seq=7, hash=b"\x02" * 32, at=1.5)
    append_checkpoint(path, good)
    bad = _line(good).replace('"seq":7', f'"seq":{seq}').replace('"seq": 7', f'"seq": {seq}')
    assert bad != _line(good)
    with path.open("a") as out:
        out.write(bad + "\n")
    with pytest.raises(CheckpointError, match=r"line 2: not a checkpoint line: seq is not a posi"):
        read_checkpoints(path, key.public_key())
    with pytest.raises(CheckpointError, match=r"checkpoints.jsonl line 2: not a checkpoint line"):
        read_last_checkpoint(path, key)
    assert path.read_text().splitlines() == [good.to_line(), bad]  # nothing lost either


@pytest.mark.parametrize("at", ["1e400", "Infinity", "NaN", "true", '"1.5"'])
def test_a_checkpoint_line_whose_time_is_not_a_finite_number_is_named(tmp_path, at):
    key = signing.generate_private_key()
    path = tmp_path / "checkpoints.jsonl"
    good = sign_checkpoint(key, relay_id="r", seq=7, hash=b"\x02" * 32, at=1.5)
    path.write_text(_line(good).replace('"at": 1.5', f'"at": {at}') + "\n")
    with pytest.raises(CheckpointError, match="line 1: not a checkpoint line: at is not a finite"):
        read_checkpoints(path, key.public_key())
    path.write_text(_line(good, relay_id=7) + "\n")
    with pytest.raises(CheckpointError, match="line 1: not a checkpoint line"):
        read_checkpoints(path, key.public_key())


def test_an_old_checkpoint_line_appended_again_is_refused_with_its_line(tmp_path):
    """Attack 16, I1: the oldest line copied to the end passed the start check and verify."""
    key = signing.generate_private_key()
    path = tmp_path / "checkpoints.jsonl"
    lines = [sign_checkpoint(key, relay_id="r", seq=s, hash=b"\x02" * 32, at=s) for s in (1, 4, 9)]
    for checkpoint in lines:
        append_checkpoint(path, checkpoint)
    for old in (lines[0], lines[2]):  # an older one, and the newest one twice
        path.write_text("".join(c.to_line() + "\n" for c in [*lines, old]))
        with pytest.raises(CheckpointError, match=f"line 4: seq {old.seq} is not after the pre"):
            read_checkpoints(path, key.public_key())
        with pytest.raises(CheckpointError, match=f"line 4: seq {old.seq} is not after the line"):
            read_last_checkpoint(path, key)


def test_a_checkpoint_appended_after_a_torn_line_starts_a_line_of_its_own(tmp_path):
    """Attack 16, F3: a crash mid-write left a torn line; the next checkpoint was glued onto
    it, and every `audit verify` failed on it from then on, naming no line."""
    key = signing.generate_private_key()
    path = tmp_path / "checkpoints.jsonl"
    first, second, third = (
        sign_checkpoint(key, relay_id="r", seq=s, hash=b"\x02" * 32, at=s) for s in (1, 2, 3)
    )
    append_checkpoint(path, first)
    torn = second.to_line()[:50]
    with path.open("a") as out:
        out.write(torn)  # the crash
    assert read_last_checkpoint(path, key) == first  # at start: the torn write is not the newest
    append_checkpoint(path, third)
    assert path.read_text() == f"{first.to_line()}\n{torn}\n{third.to_line()}\n"  # kept
    assert read_checkpoints(path, key.public_key()) == CheckpointFile([first, third], [2])
    assert read_last_checkpoint(path, key) == third
    path.write_bytes(first.to_line().encode() + b"\n\xff\xfe torn\n" + third.to_line().encode())
    assert read_checkpoints(path, key.public_key()) == CheckpointFile([first], [2, 3])


async def test_stored_missing_head_fails_verify_and_the_next_append_says_so(storage):
    await append_n(storage, 3)
    await tamper(storage, "DELETE FROM audit_head")
    result = await verify_store(storage)
    assert (result.first_bad_seq, result.reason) == (4, VerifyFailure.NO_HEAD)
    record = await storage.append(actor="a", action="b", target="c", outcome=Outcome.OK, now=2.0)
    assert (record.seq, record.detail) == (4, {"head_rebuilt": True})  # the relay keeps working
    assert (await storage.head()).seq == 4
    result = await verify_store(storage)  # and the chain says where it was found
    assert (result.first_bad_seq, result.reason) == (4, VerifyFailure.TAMPERING_SEEN)


async def test_a_stray_row_past_the_head_does_not_stop_appends_and_stays_visible(storage):
    await append_n(storage, 3)
    head = await storage.head()
    await tamper(
        storage,
        "INSERT INTO audit (seq, at, actor, action, target, outcome, detail, prev_hash, hash) "
        "VALUES (4, 1.0, 'mallory', 'x', 'y', 'ok', '{}', :h, :h)",
        h=b"\x05" * 32,
    )
    assert (await verify_store(storage)).reason is VerifyFailure.STRAY
    record = await storage.append(actor="a", action="b", target="c", outcome=Outcome.OK, now=2.0)
    assert record.seq == 5  # after the stray row, not on top of it (which would be a 409)
    assert record.prev_hash == head.hash  # chained from what the relay itself wrote last
    assert record.detail == {"stray_records": [4, 4]}
    assert (await storage.head()).seq == 5
    result = await verify_store(storage)
    assert (result.ok, result.first_bad_seq) == (False, 4)
    await append_n(storage, 2, start=10)  # and it keeps working
    assert (await storage.head()).seq == 7


def test_the_newest_checkpoint_is_read_from_the_tail_of_a_long_file(tmp_path):
    key = signing.generate_private_key()
    path = tmp_path / "checkpoints.jsonl"
    assert read_last_checkpoint(path, key) is None
    path.write_text("")
    assert read_last_checkpoint(path, key) is None
    for seq in range(1, 60):  # well past the tail that is read
        append_checkpoint(
            path, sign_checkpoint(key, relay_id="r", seq=seq, hash=b"\x04" * 32, at=seq)
        )
    assert path.stat().st_size > 8192
    newest = read_last_checkpoint(path, key)
    assert newest is not None
    assert newest.seq == 59
    with path.open("a") as out:
        out.write('{"torn": ')  # a write cut short: the line before it is the newest
    newest = read_last_checkpoint(path, key)
    assert newest is not None
    assert newest.seq == 59
    with pytest.raises(CheckpointError):
        read_last_checkpoint(path, signing.generate_private_key())


def test_the_newest_checkpoint_must_be_the_one_the_loaded_key_signs(tmp_path):
    """A serving relay checks its newest checkpoint by signing it again with OpenSSL's key
    (client/signer.py): one an older relay signed with cryptography matches; an altered
    signature, an altered line under the old signature and another key's line do not."""
    key_path = tmp_path / "audit-checkpoint.key"
    made = create_key(key_path)  # cryptography's, as `relay init` makes it
    loaded = load_key(key_path)
    assert isinstance(loaded, NativeSigner)
    path = tmp_path / "checkpoints.jsonl"
    good = sign_checkpoint(made, relay_id="r", seq=3, hash=b"\x05" * 32, at=9.5)
    append_checkpoint(path, good)
    assert read_last_checkpoint(path, loaded) == good
    flipped = bytes([good.signature[0] ^ 1]) + good.signature[1:]
    moved = Checkpoint(relay_id="r", seq=4, hash=good.hash, at=good.at, signature=good.signature)
    stranger = sign_checkpoint(
        signing.generate_private_key(), relay_id="r", seq=3, hash=good.hash, at=good.at
    )
    for bad in (dataclasses.replace(good, signature=flipped), moved, stranger):
        path.write_text(bad.to_line() + "\n")
        with pytest.raises(CheckpointError, match="does not verify"):
            read_last_checkpoint(path, loaded)
        with pytest.raises(CheckpointError, match="does not verify"):
            read_checkpoints(path, made.public_key())  # what `audit verify` says of it too
