"""``posassist-relay check-config``: a ready relay passes; each broken piece is named, in both
languages, with what to do, and the check creates nothing (relay/checkconfig.py)."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

import asyncpg
import pytest

from tests.e2e.cli import ok, provision, py
from tests.relay.certs import make_certificate

if TYPE_CHECKING:
    from pathlib import Path


def _check(data: Path, *extra: str) -> tuple[int, list[str]]:
    done = py("relay", "check-config", "--data", str(data), *extra)
    assert done.stderr == "", done.stderr
    return done.returncode, done.stdout.splitlines()


def _cert(tmp_path: Path, name: str, *, days_from: int, days_to: int) -> tuple[Path, Path]:
    now = dt.datetime.now(dt.UTC)
    made = make_certificate(
        not_before=now + dt.timedelta(days=days_from), not_after=now + dt.timedelta(days=days_to)
    )
    return made.write(tmp_path, name)


@pytest.fixture
def relay(tmp_path: Path) -> Path:
    data = tmp_path / "relay"
    provision(data)
    data.chmod(0o700)  # as `relay init` makes it; provision made the folder first
    (data / "admin.pw").unlink()
    return data


def test_a_ready_relay_passes_with_its_identity_key_pin_and_schema(
    relay: Path, tmp_path: Path
) -> None:
    cert, key = _cert(tmp_path, "good", days_from=-1, days_to=365)
    code, lines = _check(relay, "--tls-cert", str(cert), "--tls-key", str(key))
    assert code == 0, lines
    problems = [line for line in lines if line.startswith(("error", "warning"))]
    assert problems == [
        "warning: no script repository published: tills can run no script (posassist-scripts "
        "publish --to DATA) / 尚未发布脚本库: 收银机无法运行维修脚本"
    ]
    relay_id = json.loads((relay / "relay.json").read_text())["relay_id"]
    assert f"ok: relay identity {relay_id} / 中继标识 {relay_id}" in lines
    assert any(line.startswith("ok: TLS key pin ") for line in lines)
    assert any(line.startswith("ok: database ") and "at schema" in line for line in lines)


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("no relay.json", "relay.json is missing: run posassist-relay init"),
        ("bad relay.json", "relay.json is unreadable"),
        ("no database", "no relay database"),
        ("not a database", "is not a SQLite database"),
        ("no checkpoint key", "cannot read the audit checkpoint key"),
    ],
)
def test_a_broken_data_directory_is_named_and_nothing_is_created(
    relay: Path, damage: str, said: str
) -> None:
    if damage == "no relay.json":
        (relay / "relay.json").unlink()
    elif damage == "bad relay.json":
        (relay / "relay.json").write_text('{"relay_id": ')
    elif damage == "no database":
        for db in relay.glob("relay.db*"):
            db.unlink()
    elif damage == "not a database":
        for db in relay.glob("relay.db*"):
            db.unlink()
        (relay / "relay.db").write_bytes(b"not sqlite at all" * 100)
    else:
        (relay / "audit-checkpoint.key").unlink()
    before = sorted(p.name for p in relay.iterdir())
    code, lines = _check(relay)
    assert code == 1
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, lines
    assert said in errors[0]
    assert " / " in errors[0]  # and in Chinese
    assert sorted(p.name for p in relay.iterdir()) == before


def test_a_published_repository_is_named_and_a_replaced_one_is_an_error(relay: Path) -> None:
    from posassist.console.scripts_repo import init_repository
    from posassist.relay.scripts_repo import anchored_root_hash
    from tests.agent.test_verify import PASS, approve

    good = init_repository(relay.parent / "approvers", ["alice"], PASS, high_risk_threshold=1)
    approve(good, "alice")
    good.publish(relay)
    anchored_root_hash(relay / "scripts")  # what the first serve records
    code, lines = _check(relay)
    assert code == 0, lines
    assert f"ok: script repository published, root hash {good.root_hash()}" in " ".join(lines)
    other = init_repository(relay.parent / "intruder", ["eve"], PASS, high_risk_threshold=1)
    approve(other, "eve")
    other.publish(relay)
    code, lines = _check(relay)
    assert code == 1
    assert any(
        line.startswith("error: the script repository is not the one this relay was set up with")
        for line in lines
    ), lines


def test_an_open_data_directory_is_a_warning(relay: Path) -> None:
    relay.chmod(0o755)
    code, lines = _check(relay)
    assert code == 0
    assert [line for line in lines if line.startswith("warning: data directory")] == [
        f"warning: data directory {relay} is open to others (mode 0755; its files stay 0600): "
        f"chmod 700 {relay} / 数据目录 {relay} 其他用户也能访问 (权限 0755): 建议执行 chmod 700"
    ]


def test_missing_data_directory_is_not_created(tmp_path: Path) -> None:
    code, lines = _check(tmp_path / "nowhere")
    assert code == 1
    assert lines[0].startswith("error: no relay data directory")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    ("case", "level", "said"),
    [
        ("mismatched key", "error", "key values mismatch"),
        ("expired", "error", "expired on"),
        ("expires soon", "warning", "renew it with the same key"),
        ("cert without key", "error", "give both --tls-cert and --tls-key"),
    ],
)
def test_tls_files_that_would_fail_or_lapse_are_named(
    relay: Path, tmp_path: Path, case: str, level: str, said: str
) -> None:
    cert, key = _cert(tmp_path, "a", days_from=-1, days_to=365)
    if case == "mismatched key":
        key = _cert(tmp_path, "b", days_from=-1, days_to=365)[1]
    elif case == "expired":
        cert, key = _cert(tmp_path, "old", days_from=-400, days_to=-1)
    elif case == "expires soon":
        cert, key = _cert(tmp_path, "soon", days_from=-300, days_to=10)
    args = ["--tls-cert", str(cert)] + (
        [] if case == "cert without key" else ["--tls-key", str(key)]
    )
    code, lines = _check(relay, *args)
    assert code == (1 if level == "error" else 0)
    assert any(line.startswith(f"{level}: ") and said in line for line in lines), lines


@pytest.mark.slow
async def test_postgresql_unreachable_or_empty_is_an_error_and_stays_empty(
    relay: Path, pg_database: str
) -> None:
    code, lines = _check(relay, "--database", "postgresql://posassist@127.0.0.1:1/none")
    assert code == 1
    unreachable = "cannot reach the database postgresql://posassist@127.0.0.1:1/none"
    assert any(unreachable in line for line in lines), lines
    code, lines = _check(relay, "--database", pg_database)
    assert code == 1
    assert any("has no posassist schema: run posassist-relay init" in line for line in lines)
    conn = await asyncpg.connect(pg_database, timeout=5)
    try:
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    assert tables == 0  # the check created nothing
    ok(py("relay", "init", "--data", str(relay.parent / "pg"), "--database", pg_database))
    code, lines = _check(relay, "--database", pg_database)
    assert code == 0, lines
