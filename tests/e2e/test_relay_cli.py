"""The operator's command lines, run as subprocesses: audit verify, user create and password,
device revoke.

``audit verify`` pointed at the wrong place says what is missing and creates nothing; a user made
with ``user create`` signs in over HTTP with its role and scope, and bad input makes nobody; a
device revoked with ``device revoke`` is refused by the running relay.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from typing import TYPE_CHECKING

import asyncpg
import pytest
import sqlalchemy as sa
from aiohttp import ClientSession
from websockets.asyncio.client import connect

from posassist.protocol import messages as m
from posassist.protocol import signing
from posassist.relay.storage import open_storage
from tests.e2e.cli import (
    ADMIN_PASSWORD,
    enrol_over_http,
    invite,
    ok,
    provision,
    py,
    start_relay,
    stop,
)
from tests.relay.harness import agent_handshake

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

USER_PASSWORD = "a-technician-password"


def _one_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``error: …`` line a refused command prints (exit 2, nothing on stdout)."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    return line


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --- audit verify: only an existing relay database -----------------------------------------


@pytest.mark.parametrize(
    ("make", "missing"),
    [
        (lambda d: None, "no relay data directory"),
        (lambda d: d.mkdir(), "no relay database"),
        (lambda d: (d.mkdir(), (d / "relay.json").write_text("{}")), "no relay database"),
        (lambda d: (d.mkdir(), (d / "relay.db").write_bytes(b"")), "has no posassist schema"),
        (lambda d: (d.mkdir(), (d / "relay.db").write_text("notes")), "not a SQLite database"),
    ],
    ids=["nonexistent", "empty", "identity-only", "empty-file", "not-sqlite"],
)
def test_audit_verify_refuses_a_directory_without_relay_data_and_creates_nothing(
    tmp_path: Path, make: Callable[[Path], object], missing: str
) -> None:
    data = tmp_path / "relay"
    make(data)
    before = _files(tmp_path)
    contents = {p: (tmp_path / p).read_bytes() for p in before if (tmp_path / p).is_file()}
    result = py("relay", "audit", "verify", "--data", str(data))
    line = _one_error(result)
    assert result.stderr == line + "\n"  # only that line: no log noise
    assert missing in line
    assert "nothing verified" in line
    assert _files(tmp_path) == before
    assert {p: (tmp_path / p).read_bytes() for p in contents} == contents


@pytest.mark.parametrize("password", ["too-short", ""], ids=["short", "empty"])
def test_init_refuses_a_short_admin_password_and_creates_nothing(
    tmp_path: Path, password: str
) -> None:
    (tmp_path / "admin.pw").write_text(password)
    data = tmp_path / "relay"
    result = py(
        "relay", "init", "--data", str(data), "--admin-password-file", str(tmp_path / "admin.pw")
    )
    assert result.returncode == 2
    assert result.stderr == "error: the admin password must be at least 10 characters\n"
    assert _files(tmp_path) == ["admin.pw"]  # no directory, database or identity made


def test_audit_verify_refuses_a_sqlite_url_with_no_database_and_creates_nothing(
    tmp_path: Path,
) -> None:
    line = _one_error(py("relay", "audit", "verify", "--database", f"sqlite:///{tmp_path}/typo.db"))
    assert f"no SQLite database {tmp_path}/typo.db" in line
    assert _files(tmp_path) == []


def test_audit_verify_takes_exactly_one_of_data_and_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/relay.db"
    both = py("relay", "audit", "verify", "--data", str(tmp_path), "--database", url)
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr
    neither = py("relay", "audit", "verify")
    assert neither.returncode == 2
    assert "one of the arguments --data --database is required" in neither.stderr
    assert _files(tmp_path) == []


async def _public_tables(url: str) -> list[str]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    return sorted(row["table_name"] for row in rows)


async def test_audit_verify_refuses_a_postgresql_database_without_the_schema(
    pg_database: str,
) -> None:
    line = _one_error(py("relay", "audit", "verify", "--database", pg_database))
    assert "has no posassist schema (missing tables: alembic_version," in line
    assert await _public_tables(pg_database) == []  # not migrated
    # one table of another application is not a posassist schema either
    conn = await asyncpg.connect(pg_database, timeout=5)
    try:
        await conn.execute("CREATE TABLE audit (seq bigint)")
    finally:
        await conn.close()
    line = _one_error(py("relay", "audit", "verify", "--database", pg_database))
    assert "missing tables: alembic_version," in line
    assert await _public_tables(pg_database) == ["audit"]


async def test_audit_verify_refuses_a_postgresql_database_that_does_not_exist(
    pg_database: str,
) -> None:
    typo = pg_database + "_typo"
    line = _one_error(py("relay", "audit", "verify", "--database", typo))
    assert f"cannot read {typo}" in line
    assert "does not exist" in line
    conn = await asyncpg.connect(pg_database, timeout=5)
    try:
        created = await conn.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = $1", typo.rsplit("/", 1)[1]
        )
    finally:
        await conn.close()
    assert created == 0


async def _swap_audit_records(url: str, first: int, second: int) -> None:
    storage = open_storage(url)
    try:
        await storage.run_write(
            lambda conn: [
                conn.execute(sa.text(sql), {"a": first, "b": second})
                for sql in (
                    "UPDATE audit SET seq = -1 WHERE seq = :a",
                    "UPDATE audit SET seq = :a WHERE seq = :b",
                    "UPDATE audit SET seq = :b WHERE seq = -1",
                )
            ]
        )
    finally:
        await storage.close()


async def test_audit_verify_by_database_url_alone_names_the_first_of_two_swapped_records(
    tmp_path: Path, database: str
) -> None:
    data = tmp_path / "relay"
    provision(data, database)  # init, organisation, merchant, store: four records
    url = database or f"sqlite:///{data / 'relay.db'}"
    intact = py("relay", "audit", "verify", "--database", url)
    assert ok(intact) == "audit chain intact: 4 records, last seq 4"
    await _swap_audit_records(url, 2, 3)
    broken = py("relay", "audit", "verify", "--database", url)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert broken.stdout.strip() == (
        "audit chain broken at seq 2: hash does not match the record's contents"
    )
    if not database:  # --data reads the same database
        by_data = py("relay", "audit", "verify", "--data", str(data))
        assert (by_data.returncode, by_data.stdout) == (1, broken.stdout)


# --- user create -----------------------------------------------------------------------------


async def _login(http_url: str, username: str, password: str) -> tuple[int, dict[str, object]]:
    async with (
        ClientSession() as http,
        http.post(http_url + "/v1/login", json={"username": username, "password": password}) as r,
    ):
        return r.status, await r.json()


def _user_create(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    password = data / "user.pw"
    password.write_text(USER_PASSWORD)
    return py(
        "relay", "user", "create", "--data", str(data), "--password-file", str(password), *args
    )


def _users_and_audit(data: Path) -> tuple[list[tuple[str, ...]], int]:
    with sqlite3.connect(data / "relay.db") as db:
        users = db.execute(
            "SELECT username, role, scope_kind, scope_id FROM users ORDER BY username"
        ).fetchall()
        (records,) = db.execute("SELECT count(*) FROM audit").fetchone()
    return users, records


async def test_user_create_makes_a_user_who_signs_in_with_that_role_and_scope(
    tmp_path: Path,
) -> None:
    data = tmp_path / "relay"
    store = provision(data)
    proc, url = start_relay(data)
    try:
        created = _user_create(
            data, "--username", "dana", "--role", "technician", "--scope", f"store:{store}"
        )
        assert ok(created) == f"user dana (technician, store:{store})"
        http_url = url.replace("ws://", "http://")
        status, body = await _login(http_url, "dana", USER_PASSWORD)
        assert status == 200, body
        assert (body["role"], body["scope"]) == ("technician", {"kind": "store", "id": store})
        async with (
            ClientSession() as http,
            http.get(
                http_url + "/v1/devices", headers={"Authorization": f"Bearer {body['token']}"}
            ) as r,
        ):
            assert r.status == 200
        status, body = await _login(http_url, "dana", "not-her-password")
        assert status == 401
    finally:
        stop(proc)
    with sqlite3.connect(data / "relay.db") as db:
        actions = db.execute("SELECT actor, action, target, outcome FROM audit").fetchall()
    assert ("operator:cli", "user.create", "user:dana", "ok") in actions


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One initialised relay (an admin user, one store) for the refusals below."""
    data = tmp_path_factory.mktemp("cli") / "relay"
    return data, provision(data)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["--username", "erin", "--role", "wizard", "--scope", "root"],
            "argument --role: invalid choice: 'wizard'",
        ),
        (
            ["--username", "erin", "--role", "viewer", "--scope", "store:sto_doesnotexist"],
            "error: no store sto_doesnotexist",
        ),
        (
            ["--username", "erin", "--role", "viewer", "--scope", "merchant:mer_nope"],
            "error: no merchant mer_nope",
        ),
        (
            ["--username", "erin", "--role", "viewer", "--scope", "planet:earth"],
            "the kind must be one of root, organisation, merchant, store, device",
        ),
        (
            ["--username", "erin", "--role", "viewer", "--scope", "store"],
            "use root, or kind:id",
        ),
        (
            ["--username", "admin", "--role", "viewer", "--scope", "root"],
            "error: user admin already exists",
        ),
    ],
    ids=["unknown-role", "no-such-store", "no-such-merchant", "unknown-kind", "no-id", "dup"],
)
def test_user_create_refuses_bad_input_and_creates_nothing(
    provisioned: tuple[Path, str], args: list[str], error: str
) -> None:
    data, _store = provisioned
    before = _users_and_audit(data)
    result = _user_create(data, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert error in result.stderr
    assert result.stdout == ""
    assert _users_and_audit(data) == before


def test_user_create_refuses_a_short_password(provisioned: tuple[Path, str]) -> None:
    data, store = provisioned
    before = _users_and_audit(data)
    short = data / "short.pw"
    short.write_text("too-short")
    result = py(
        "relay",
        "user",
        "create",
        "--data",
        str(data),
        "--username",
        "erin",
        "--role",
        "viewer",
        "--scope",
        f"store:{store}",
        "--password-file",
        str(short),
    )
    assert "the password must be at least 10 characters" in _one_error(result)
    assert _users_and_audit(data) == before


# --- user password ---------------------------------------------------------------------------


def _password_hashes(data: Path) -> dict[str, str]:
    with sqlite3.connect(data / "relay.db") as db:
        return dict(db.execute("SELECT username, password_hash FROM users").fetchall())


async def test_user_password_replaces_the_admin_password_and_signs_the_admin_out(
    tmp_path: Path,
) -> None:
    data = tmp_path / "relay"
    provision(data)
    proc, url = start_relay(data)
    http_url = url.replace("ws://", "http://")
    try:
        status, body = await _login(http_url, "admin", ADMIN_PASSWORD)
        assert status == 200, body
        old_token = body["token"]
        new_password = tmp_path / "new.pw"
        new_password.write_text("a-better-admin-password\n")
        changed = py(
            "relay", "user", "password", "admin", "--data", str(data),
            "--password-file", str(new_password),
        )  # fmt: skip
        assert ok(changed) == "password of admin changed; 1 sign-in token(s) revoked"
        assert (await _login(http_url, "admin", ADMIN_PASSWORD))[0] == 401
        status, body = await _login(http_url, "admin", "a-better-admin-password")
        assert status == 200, body
        async with (
            ClientSession() as http,
            http.get(
                http_url + "/v1/devices", headers={"Authorization": f"Bearer {old_token}"}
            ) as r,
        ):
            assert r.status == 401  # the token signed in with the old password is revoked
    finally:
        stop(proc)
    with sqlite3.connect(data / "relay.db") as db:
        actions = db.execute("SELECT actor, action, target, outcome FROM audit").fetchall()
    assert ("operator:cli", "user.password", "user:admin", "ok") in actions


@pytest.mark.parametrize(
    ("username", "password", "error"),
    [
        ("admin", "too-short", "error: the password must be at least 10 characters"),
        ("admin", "", "error: the password must be at least 10 characters"),
        ("nobody", "a-long-enough-password", "error: no user nobody"),
    ],
    ids=["short", "empty", "unknown-user"],
)
def test_user_password_refuses_bad_input_and_changes_nothing(
    provisioned: tuple[Path, str], username: str, password: str, error: str
) -> None:
    data, _store = provisioned
    before = (_password_hashes(data), _users_and_audit(data))
    password_file = data / "attempt.pw"
    password_file.write_text(password)
    result = py(
        "relay", "user", "password", username, "--data", str(data),
        "--password-file", str(password_file),
    )  # fmt: skip
    assert _one_error(result) == error
    assert (_password_hashes(data), _users_and_audit(data)) == before


def test_user_password_without_a_file_or_terminal_says_so_and_changes_nothing(
    provisioned: tuple[Path, str],
) -> None:
    data, _store = provisioned
    before = (_password_hashes(data), _users_and_audit(data))
    result = subprocess.run(
        [sys.executable, "-m", "posassist.relay", "user", "password", "admin", "--data", str(data)],
        stdin=subprocess.DEVNULL,  # not a terminal, wherever the tests run
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert _one_error(result) == (
        "error: no terminal to ask on: give --password-file or set $POSASSIST_NEW_PASSWORD"
        " / 没有可输入密码的终端，请用文件提供"
    )
    assert (_password_hashes(data), _users_and_audit(data)) == before


# --- device revoke ---------------------------------------------------------------------------


async def _agent_answer(url: str, device_id: str, key: signing.Ed25519PrivateKey) -> m.Message:
    async with connect(url + "/v1/agent") as ws:
        _, answer = await agent_handshake(ws, device_id, key)
    return answer


async def test_device_revoke_marks_the_device_revoked_and_the_relay_refuses_it(
    tmp_path: Path,
) -> None:
    data = tmp_path / "relay"
    store = provision(data)
    proc, url = start_relay(data)
    try:
        device_id, key = await enrol_over_http(url, invite(data, store, url))
        assert isinstance(await _agent_answer(url, device_id, key), m.AuthAccepted)
        revoked = py("relay", "device", "revoke", device_id, "--data", str(data))
        assert ok(revoked).startswith(f"device {device_id} revoked")
        listed = ok(py("relay", "device", "list", "--data", str(data)))
        assert f"{device_id}\t{store}\trevoked\t" in listed
        # the running relay refuses the device from its next connection
        assert await _agent_answer(url, device_id, key) == m.AuthRefused(code="revoked")
    finally:
        stop(proc)
    with sqlite3.connect(data / "relay.db") as db:
        actions = db.execute("SELECT actor, action, target, outcome FROM audit").fetchall()
        (revoked_at,) = db.execute(
            "SELECT revoked_at FROM devices WHERE id = ?", (device_id,)
        ).fetchone()
    assert ("operator:cli", "device.revoke", f"device:{device_id}", "ok") in actions
    assert revoked_at is not None
    device = f"device:{device_id}"
    assert actions[-1] == (device, "agent.connect", device, "refused")


def test_device_revoke_of_an_unknown_device_is_a_clear_error(
    provisioned: tuple[Path, str],
) -> None:
    data, _store = provisioned
    before = _users_and_audit(data)
    result = py("relay", "device", "revoke", "dev_doesnotexist", "--data", str(data))
    assert _one_error(result) == "error: no device dev_doesnotexist"
    assert _users_and_audit(data) == before


# --- enrolment create: no token nobody can use -------------------------------------------------


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("wss://relay.example:8765", "a wss:// relay needs --tls-cert"),
        ("https://relay.example", "--relay-url must be ws:// or wss://"),
    ],
    ids=["wss-without-pin", "not-a-websocket-url"],
)
def test_enrolment_create_refuses_a_token_no_agent_could_use_and_stores_none(
    provisioned: tuple[Path, str], url: str, error: str
) -> None:
    data, store = provisioned

    def tokens() -> int:
        with sqlite3.connect(data / "relay.db") as db:
            (count,) = db.execute("SELECT count(*) FROM enrolment_tokens").fetchone()
        return int(count)

    before = (tokens(), _users_and_audit(data))
    result = py(
        "relay", "enrolment", "create", "--data", str(data), "--store", store, "--relay-url", url
    )
    assert error in _one_error(result)
    assert (tokens(), _users_and_audit(data)) == before


@pytest.mark.parametrize(
    "flag",
    [
        ("--heartbeat", "0"),
        ("--heartbeat", "nan"),
        ("--heartbeat", "1e9"),
        ("--port", "99999"),
        ("--request-timeout", "-1"),
    ],
)
def test_serve_refuses_a_value_that_would_break_every_connection(
    tmp_path: Path, flag: tuple[str, str]
) -> None:
    result = py("relay", "serve", "--data", str(tmp_path / "relay"), *flag)
    assert result.returncode == 2
    assert "must be between" in result.stderr
    assert not (tmp_path / "relay").exists()  # refused before anything was created


# --- audit verify: a damaged checkpoint file (outside attack 16, F3 and F4) ------------------


def _serve_once(data: Path) -> str:
    """Start and stop (SIGTERM) the relay on ``data``; its log."""
    relay, _ = start_relay(data)  # it has signed the head at start before it listens
    relay.terminate()
    out, err = relay.communicate(timeout=30)
    assert relay.returncode == 0, err
    return out + err


def test_a_torn_checkpoint_line_is_named_by_verify_and_the_checkpoints_after_it_verify(
    tmp_path: Path,
) -> None:
    """A crash mid-write leaves a torn line; the next checkpoint was glued onto it, and every
    `audit verify` then failed, naming no line. Now the torn line stays, alone, named."""
    data = tmp_path / "relay"
    provision(data)
    checkpoints = data / "audit-checkpoints.jsonl"
    before = checkpoints.read_text()
    whole = len(before.splitlines())
    torn = '{"at":1.5,"hash":"' + "ab" * 5000  # 10 KB cut short, no newline (the attack's)
    with checkpoints.open("a") as out:
        out.write(torn)
    assert "Traceback" not in _serve_once(data)
    lines = checkpoints.read_text().split("\n")
    assert lines[: whole + 1] == [*before.splitlines(), torn]  # kept, on a line of its own
    assert len(lines) > whole + 2  # the checkpoints signed after it, on lines of their own
    verified = py("relay", "audit", "verify", "--data", str(data))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{checkpoints} line {whole + 1} is not a checkpoint" in verified.stderr
    assert "audit chain intact" in verified.stdout
    assert f"anchored by {len(lines) - 2} signed checkpoint(s)" in verified.stdout
    assert "Traceback" not in verified.stderr


@pytest.mark.parametrize("seq", ["1e400", "Infinity", "34.9", "true"])
def test_a_checkpoint_line_with_a_seq_that_is_no_integer_is_named_at_start_and_by_verify(
    tmp_path: Path, seq: str
) -> None:
    """``1e400`` or ``Infinity`` stopped `serve` at start and `audit verify` with a traceback
    (OverflowError); ``34.9`` verified as seq 34."""
    data = tmp_path / "relay"
    provision(data)
    checkpoints = data / "audit-checkpoints.jsonl"
    last = checkpoints.read_text().splitlines()[-1]
    bad = last.replace('"seq":', f'"seq":{seq},"was":', 1)
    assert bad != last
    with checkpoints.open("a") as out:
        out.write(bad + "\n")
    number = len(checkpoints.read_text().splitlines())
    log = _serve_once(data)
    assert "Traceback" not in log
    assert f"checkpoint file unreadable: {checkpoints} line {number}: not a checkpoint" in log
    verified = py("relay", "audit", "verify", "--data", str(data))
    assert verified.returncode == 1
    assert verified.stdout.startswith(
        f"audit checkpoints unusable: {checkpoints} line {number}: not a checkpoint line"
    )
    assert "Traceback" not in verified.stderr
    assert checkpoints.read_text().splitlines()[number - 1] == bad  # nothing lost


def test_an_old_checkpoint_line_appended_again_is_refused_by_verify_with_its_line(
    tmp_path: Path,
) -> None:
    data = tmp_path / "relay"
    provision(data)
    _serve_once(data)
    checkpoints = data / "audit-checkpoints.jsonl"
    first = checkpoints.read_text().splitlines()[0]
    with checkpoints.open("a") as out:
        out.write(first + "\n")
    number = len(checkpoints.read_text().splitlines())
    verified = py("relay", "audit", "verify", "--data", str(data))
    assert verified.returncode == 1
    assert f"{checkpoints} line {number}: seq 1 is not after the previous" in verified.stdout
    log = _serve_once(data)  # the start check says so too
    assert f"{checkpoints} line {number}: seq 1 is not after the line before" in log
