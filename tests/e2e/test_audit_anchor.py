"""Attacks on the audit log by someone who can write the relay's database, and nothing else.

Each rewrites ``relay.db`` with direct SQL, the way such an attacker would, and checks that
``posassist-relay audit verify`` exits non-zero with a line naming what happened: the signed
checkpoints (key and file in the data directory, never in the database) anchor the chain.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
from typing import TYPE_CHECKING

import pytest

from posassist.relay.audit import AuditRecord, chain_hash
from tests.e2e.cli import ok, provision, py, start_relay, stop

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A relay initialised, given a tenancy tree, started once (which signs the head) and
    stopped: 2 signed checkpoints, the last one past every record the tree made."""
    data = tmp_path_factory.mktemp("pristine") / "relay"
    provision(data)
    relay, _url = start_relay(data)
    stop(relay)
    return data


@pytest.fixture
def data(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "relay"
    shutil.copytree(pristine, copy)
    return copy


def verify(data: Path, *extra: str) -> tuple[int, str]:
    result = py("relay", "audit", "verify", "--data", str(data), *extra)
    return result.returncode, (result.stdout + result.stderr).strip()


def sql(data: Path, *statements: str, **params: object) -> None:
    with sqlite3.connect(data / "relay.db") as db:
        for statement in statements:
            db.execute(statement, params)


def rows(data: Path) -> list[AuditRecord]:
    with sqlite3.connect(data / "relay.db") as db:
        found = db.execute(
            "SELECT seq, at, actor, action, target, outcome, detail, prev_hash, hash "
            "FROM audit ORDER BY seq"
        ).fetchall()
    return [
        AuditRecord(
            seq=r[0],
            at=r[1],
            actor=r[2],
            action=r[3],
            target=r[4],
            outcome=r[5],
            detail=json.loads(r[6]),
            prev_hash=bytes(r[7]),
            hash=bytes(r[8]),
        )
        for r in found
    ]


def rewrite(data: Path, records: list[AuditRecord]) -> None:
    """Replace the whole log by ``records``, renumbered and rehashed, and move the head: a
    chain that is perfectly consistent in itself."""
    prev = bytes(32)
    chained = []
    for seq, record in enumerate(records, 1):
        fresh = dataclasses.replace(record, seq=seq, prev_hash=prev)
        fresh = dataclasses.replace(fresh, hash=chain_hash(prev, fresh))
        chained.append(fresh)
        prev = fresh.hash
    with sqlite3.connect(data / "relay.db") as db:
        db.execute("DELETE FROM audit")
        db.executemany(
            "INSERT INTO audit (seq, at, actor, action, target, outcome, detail, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.seq,
                    r.at,
                    r.actor,
                    r.action,
                    r.target,
                    r.outcome,
                    json.dumps(r.detail),
                    r.prev_hash,
                    r.hash,
                )
                for r in chained
            ],
        )
        db.execute("UPDATE audit_head SET seq = ?, hash = ?", (len(chained), prev))


def test_an_untouched_log_verifies_and_is_anchored(data: Path) -> None:
    code, text = verify(data)
    assert code == 0, text
    assert "audit chain intact" in text
    assert "anchored by 2 signed checkpoint(s)" in text
    actions = [r.action for r in rows(data)]
    assert actions[0] == "relay.init"
    assert "relay.start" in actions
    assert actions[-1] == "audit.checkpoint"


def test_the_head_moved_back_over_records_left_in_place_is_named(data: Path) -> None:
    records = rows(data)
    sql(data, "UPDATE audit_head SET seq = :seq, hash = :hash", seq=3, hash=records[2].hash)
    code, text = verify(data)
    assert code == 1
    assert "audit chain broken at seq 4: records past the chain head" in text


def test_a_head_that_does_not_match_the_last_record_is_named(data: Path) -> None:
    sql(data, "UPDATE audit_head SET hash = :hash", hash=b"\x07" * 32)
    code, text = verify(data)
    assert code == 1
    assert "the chain head does not match the last record" in text


def test_a_missing_head_is_named(data: Path) -> None:
    sql(data, "DELETE FROM audit_head")
    code, text = verify(data)
    assert code == 1
    assert "the chain head is missing" in text


def test_the_log_truncated_is_named(data: Path) -> None:
    last = rows(data)[-1].seq
    sql(data, "DELETE FROM audit WHERE seq > 3")
    code, text = verify(data)
    assert code == 1
    assert "audit chain broken at seq 4: records missing at the end of the log" in text
    assert last > 4


def test_the_log_truncated_and_the_head_moved_with_it_is_caught_by_the_checkpoint(
    data: Path,
) -> None:
    records = rows(data)
    sql(
        data,
        "DELETE FROM audit WHERE seq > 3",
        "UPDATE audit_head SET seq = 3, hash = :hash",
        hash=records[2].hash,
    )
    code, text = verify(data)
    assert code == 1, text  # consistent in itself: only the signed checkpoint knows better
    assert "audit chain broken at seq 4: records missing up to a signed checkpoint" in text


def test_an_edit_rehashed_through_the_whole_chain_is_caught_by_the_checkpoint(data: Path) -> None:
    records = rows(data)
    edited = [
        dataclasses.replace(r, actor="mallory") if r.action == "organisation.create" else r
        for r in records
    ]
    rewrite(data, edited)
    code, text = verify(data)
    assert code == 1, text
    assert "record does not match the signed checkpoint" in text


def test_a_record_deleted_and_the_rest_renumbered_and_rehashed_is_caught(data: Path) -> None:
    records = rows(data)
    rewrite(data, [r for r in records if r.action != "store.create"])
    code, text = verify(data)
    assert code == 1, text
    # the checkpoint record moved down one seq, where the file signed nothing
    assert "checkpoint record with no signed line" in text


def test_a_log_rewritten_to_start_after_the_relays_creation_is_named(data: Path) -> None:
    rewrite(data, rows(data)[1:])
    code, text = verify(data)
    assert code == 1, text
    assert "audit chain broken at seq 1: the first record is not the relay's creation" in text


def test_both_tables_emptied_is_named(data: Path) -> None:
    sql(data, "DELETE FROM audit", "DELETE FROM audit_head")
    code, text = verify(data)
    assert code == 1
    assert "audit chain broken at seq 1" in text


def test_both_tables_emptied_and_the_head_reset_to_genesis_is_named(data: Path) -> None:
    sql(data, "DELETE FROM audit", "UPDATE audit_head SET seq = 0, hash = :h", h=bytes(32))
    code, text = verify(data)
    assert code == 1
    assert "the first record is not the relay's creation (relay.init)" in text


def test_both_tables_dropped_is_named(data: Path) -> None:
    sql(data, "DROP TABLE audit", "DROP TABLE audit_head")
    code, text = verify(data)
    assert code == 1
    assert "audit log gone" in text
    assert "2 signed checkpoint(s) say it reached seq" in text
    (data / "relay.db").unlink()
    code, text = verify(data)
    assert code == 1
    assert "audit log gone: no relay database" in text


def test_a_stray_row_past_the_head_is_named(data: Path) -> None:
    last = rows(data)[-1]
    forged = dataclasses.replace(last, seq=last.seq + 1, action="user.login", prev_hash=last.hash)
    forged = dataclasses.replace(forged, hash=chain_hash(last.hash, forged))
    rewrite_rows = [*rows(data), forged]
    with sqlite3.connect(data / "relay.db") as db:  # the row only, the head left where it was
        r = rewrite_rows[-1]
        db.execute(
            "INSERT INTO audit (seq, at, actor, action, target, outcome, detail, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, '{}', ?, ?)",
            (r.seq, r.at, r.actor, r.action, r.target, r.outcome, r.prev_hash, r.hash),
        )
    code, text = verify(data)
    assert code == 1
    assert f"audit chain broken at seq {last.seq + 1}: records past the chain head" in text


def test_a_forged_checkpoint_line_is_refused(data: Path) -> None:
    path = data / "audit-checkpoints.jsonl"
    first, *rest = path.read_text().splitlines()
    forged = json.loads(first)
    forged["hash"] = "00" * 32
    path.write_text("\n".join([json.dumps(forged), *rest]) + "\n")
    code, text = verify(data)
    assert code == 1
    assert "audit checkpoints unusable" in text
    assert "signature does not verify" in text


def test_verify_without_the_checkpoint_key_refuses(data: Path) -> None:
    (data / "audit-checkpoint.key").unlink()
    code, text = verify(data)
    assert code == 2
    assert "audit checkpoint key" in text


def test_checkpoint_key_and_file_are_private_to_the_relay(data: Path) -> None:
    for name in ("audit-checkpoint.key", "audit-checkpoints.jsonl"):
        assert oct((data / name).stat().st_mode & 0o777) == "0o600", name


def test_verify_by_url_checks_the_checkpoints_given(data: Path, tmp_path: Path) -> None:
    keys = tmp_path / "elsewhere"
    keys.mkdir()
    for name in ("audit-checkpoint.key", "audit-checkpoints.jsonl"):
        shutil.move(data / name, keys / name)
    url = f"sqlite:///{data / 'relay.db'}"
    bare = py("relay", "audit", "verify", "--database", url)
    assert bare.returncode == 0
    assert "not checked against signed checkpoints" in bare.stderr
    anchored = [
        "--checkpoint-key",
        str(keys / "audit-checkpoint.key"),
        "--checkpoint-file",
        str(keys / "audit-checkpoints.jsonl"),
    ]
    assert "anchored by 2" in ok(py("relay", "audit", "verify", "--database", url, *anchored))
    sql(data, "DELETE FROM audit WHERE seq > 3")
    sql(data, "UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit WHERE seq = 3)")
    assert py("relay", "audit", "verify", "--database", url).returncode == 0  # unanchored
    broken = py("relay", "audit", "verify", "--database", url, *anchored)
    assert broken.returncode == 1
    assert "records missing up to a signed checkpoint" in broken.stdout


# --- the checkpoint file and key attacked too (attack 2026-12) --------------------------------


def _edit_and_rehash(data: Path) -> None:
    records = rows(data)
    records[1] = dataclasses.replace(records[1], actor="user:mallory")
    rewrite(data, records)


@pytest.mark.parametrize("how", ["deleted", "emptied", "cut to its first line"])
def test_the_checkpoint_file_deleted_or_cut_after_an_edit_is_named(data: Path, how: str) -> None:
    """Before: with the file gone, an edit rehashed through the chain verified as ``intact``
    ("anchored by 0 signed checkpoint(s)"). The chain's own ``audit.checkpoint`` records now
    have to be signed in the file."""
    path = data / "audit-checkpoints.jsonl"
    first = path.read_text().splitlines()[0]
    _edit_and_rehash(data)
    if how == "deleted":
        path.unlink()
    else:
        path.write_text("" if how == "emptied" else first + "\n")
    code, text = verify(data)
    assert code == 1, text
    last_checkpoint = max(r.seq for r in rows(data) if r.action == "audit.checkpoint")
    # (the first line signs seq 1, the creation, which the edit left alone)
    assert f"broken at seq {last_checkpoint}: checkpoint record with no signed line" in text


def test_the_checkpoint_file_deleted_alone_is_named(data: Path) -> None:
    (data / "audit-checkpoints.jsonl").unlink()
    code, text = verify(data)
    assert code == 1
    assert "checkpoint record with no signed line in the checkpoint file" in text


def test_the_checkpoint_key_replaced_and_the_relay_restarted_is_named(data: Path) -> None:
    """Key and file deleted, the chain edited and rehashed, the relay restarted: it makes a new
    key and signs the forged head with it. The older checkpoint records name the old key."""
    _edit_and_rehash(data)
    (data / "audit-checkpoint.key").unlink()
    (data / "audit-checkpoints.jsonl").unlink()
    relay, _url = start_relay(data)
    stop(relay)
    code, text = verify(data)
    assert code == 1, text
    assert "checkpoint record made with another key (checkpoint key replaced?)" in text


def test_verify_names_the_key_so_it_can_be_compared_with_the_one_init_printed(
    data: Path,
) -> None:
    key = rows(data)[-1].detail["key"]
    assert f"key {key}" in ok(py("relay", "audit", "verify", "--data", str(data)))


def test_a_clean_stop_signs_the_head_last(data: Path) -> None:
    """SIGTERM: the relay's last act is a checkpoint, so no record is left after it."""
    relay, _url = start_relay(data)
    relay.terminate()
    relay.communicate(timeout=30)
    last = rows(data)[-1]
    assert last.action == "audit.checkpoint"
    lines = (data / "audit-checkpoints.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["seq"] == last.seq
    assert "intact" in ok(py("relay", "audit", "verify", "--data", str(data)))
