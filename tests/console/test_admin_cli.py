"""The operator's ``posassist`` commands (console/admin.py) against a real relay (aiohttp server,
SQLite), the way tests/console/test_service_cli.py drives ``store``: tables with names and times
in the store's zone, ``--json`` equal to the API's answer, passwords from a file or the
environment, confirmation before a delete; and the bad input the issue names: unknown ids,
another tenant's ids, bidi and control characters in names, an empty password file, no terminal
to ask on, a relay that is down. Each checks the error AND that nothing changed."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from posassist.console.__main__ import main
from posassist.protocol import messages as m
from posassist.relay.passwords import verify_password
from tests.e2e.test_attack_hostile_relay import EVIL, FORBIDDEN, _serve
from tests.relay.harness import PASSWORD, Agent
from tests.relay.test_admin_api import audit, call, sign_in, user_id
from tests.relay.test_admin_api import relay as relay

if TYPE_CHECKING:
    from pathlib import Path

    from tests.relay.harness import Relay

#: What a raw epoch (``1796397180.19``) or a dict repr would look like in a table.
RAW_EPOCH = re.compile(r"\b1\d{9}(\.\d+)?\b")


class Console:
    """``posassist ARGS`` in this process, signed in as one of the relay's users."""

    def __init__(
        self,
        relay: Relay,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        self.relay, self.tmp_path, self.monkeypatch, self.capsys = (
            relay,
            tmp_path,
            monkeypatch,
            capsys,
        )

    async def __call__(self, user: str, *argv: str, relay_url: str = "") -> tuple[int, str, str]:
        home = self.tmp_path / f"home-{user}"
        home.mkdir(exist_ok=True)
        session = {"relay": relay_url or self.relay.ws, "token": self.relay.tokens[user]}
        (home / "session.json").write_text(json.dumps({**session, "user": user}))
        self.monkeypatch.setenv("POSASSIST_HOME", str(home))
        self.capsys.readouterr()
        code = await asyncio.to_thread(main, list(argv))  # the console runs its own event loop
        out, err = self.capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err


@pytest.fixture
def run(
    relay: Relay,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Console:
    monkeypatch.delenv("POSASSIST_PASSWORD", raising=False)
    monkeypatch.delenv("POSASSIST_NEW_PASSWORD", raising=False)
    return Console(relay, tmp_path, monkeypatch, capsys)


def rows(out: str) -> list[str]:
    """A table's data lines (under the dashes)."""
    lines = out.splitlines()
    dashes = next(i for i, line in enumerate(lines) if set(line) <= {"-", " "} and line)
    return [line for line in lines[dashes + 1 :] if line.strip()]


async def _names(relay: Relay, kind: str) -> dict[str, str]:
    _status, body = await call(relay, "GET", f"/v1/{kind}s", "admin")
    return {row["id"]: row["name"] for row in body[f"{kind}s"]}


# --- the tenant tree -----------------------------------------------------------------------------


async def test_the_tenant_tree_is_listed_by_name_with_times_in_the_stores_zone(
    relay: Relay, run: Console
) -> None:
    await relay.state.storage.update_store(relay.store, now=relay.clock(), timezone="Asia/Shanghai")
    status, out, _ = await run("admin", "org", "list")
    assert status == 0, out
    assert any(line.startswith("Acme POS Service") for line in rows(out))
    assert "Other Service Co" in out
    status, out, _ = await run("admin", "merchant", "list", "--org", "Acme POS Service")
    (line,) = rows(out)
    assert line.split()[:4] == ["Noodle", "House", "Acme", "POS"]  # its organisation by name
    status, out, _ = await run("admin", "store", "list")
    (main_st,) = [line for line in rows(out) if line.startswith("Main St")]
    assert "Noodle House" in main_st  # the merchant's name, not its id
    assert "Asia/Shanghai" in main_st
    assert " CST" in main_st  # created, on the store's clock
    assert relay.store in main_st  # the id stays, for scripts and copy-paste
    for command in (["org", "list"], ["merchant", "list"], ["store", "list"], ["user", "list"]):
        status, out, _ = await run("admin", *command)
        assert not RAW_EPOCH.search(out), out
        assert "{" not in out, out


async def test_json_is_the_relays_own_answer(relay: Relay, run: Console) -> None:
    for command, path, key in (
        (["org", "list"], "/v1/organisations", "organisations"),
        (["merchant", "list"], "/v1/merchants", "merchants"),
        (["store", "list"], "/v1/stores", "stores"),
        (["user", "list"], "/v1/users", "users"),
        (["enrol-token", "list"], "/v1/enrolments", "enrolments"),
    ):
        status, out, _ = await run("admin", *command, "--json")
        assert status == 0, out
        _status, body = await call(relay, "GET", path, "admin")
        assert json.loads(out) == body[key], command
    status, out, _ = await run("admin", "jobs", "--json")
    assert json.loads(out) == {"jobs": [], "next_cursor": None}


async def test_a_store_is_renamed_by_its_name_and_by_its_id(relay: Relay, run: Console) -> None:
    status, out, _ = await run("admin", "store", "rename", "Main St", "人民路店")
    assert status == 0, out
    assert "Main St → 人民路店" in out
    assert (await _names(relay, "store"))[relay.store] == "人民路店"
    status, out, _ = await run("admin", "store", "rename", relay.store, "Main St", "--json")
    assert json.loads(out)["name"] == "Main St"
    status, out, _ = await run("admin", "org", "rename", "Acme POS Service", "Acme 维修")
    assert (await _names(relay, "organisation"))[relay.org] == "Acme 维修"


@pytest.mark.parametrize(
    "name", ["Main\x1b[2JSt", "Main\u202eSt", "Main\u2066St", "Main\nSt", ""], ids=repr
)
async def test_a_name_with_control_or_bidi_characters_is_refused_with_the_relays_words(
    relay: Relay, run: Console, name: str
) -> None:
    before = await _names(relay, "store")
    status, out, err = await run("admin", "store", "rename", relay.store, name)
    assert status == 1, out + err
    (line,) = err.splitlines()
    assert line.startswith("error: the relay refused the request: HTTP 400")
    assert "\x1b" not in line
    assert "\u202e" not in line
    assert await _names(relay, "store") == before


async def test_deleting_asks_first_and_without_a_terminal_needs_yes(
    relay: Relay, run: Console
) -> None:
    storage = relay.state.storage
    empty = (await storage.create_store(relay.merchant, "Closed Down", now=relay.clock())).id
    status, out, err = await run("admin", "store", "delete", "Closed Down")
    assert status == 2, out + err
    assert err.splitlines() == [
        "error: bad argument: not at a terminal: add --yes to confirm / 非交互环境, 请加 --yes 确认"
        " / 参数有误"
    ]
    assert empty in await _names(relay, "store")  # nothing deleted
    status, out, _ = await run("admin", "store", "delete", "Closed Down", "--yes")
    assert status == 0, out
    assert "deleted / 已删除" in out
    assert empty not in await _names(relay, "store")
    assert ("user:admin", "store.delete", "ok", f"store:{empty}", {}) in await audit(relay)


async def test_deleting_a_store_that_still_holds_a_till_keeps_it_and_says_why(
    relay: Relay, run: Console
) -> None:
    await relay.enrol()  # a device in Main St
    status, out, err = await run("admin", "store", "delete", "Main St", "--yes")
    assert status == 1, out + err
    (line,) = err.splitlines()
    assert "HTTP 409 NotEmpty" in line
    assert "仍在使用中" in line  # the relay's message_zh, kept
    assert relay.store in await _names(relay, "store")


# --- another tenant, unknown ids -----------------------------------------------------------------


async def test_another_tenants_nodes_are_not_found_and_nothing_changes(
    relay: Relay, run: Console
) -> None:
    other_store = relay.tokens["other_store"]
    before = await _names(relay, "store")
    for argv in (
        ["store", "rename", other_store, "Mine now"],
        ["store", "delete", other_store, "--yes"],
        ["store", "rename", "Tea Shop 1", "Mine now"],  # by its name: not in the scope either
        ["org", "delete", relay.tokens["other_org"], "--yes"],
        ["merchant", "rename", "no-such-merchant", "x"],
    ):
        status, out, err = await run("org.admin", *argv)
        assert status == 2, argv
        (line,) = err.splitlines()
        assert "that you may see" in line, line
        assert "Tea Shop" not in line or "Tea Shop 1" in argv  # no name leaks from an id
    assert await _names(relay, "store") == before
    status, out, _ = await run("org.admin", "store", "list")
    assert "Tea Shop" not in out


async def test_relay_refusals_say_why_in_both_languages_and_change_nothing(
    relay: Relay, run: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = await _users(relay)
    monkeypatch.setenv("POSASSIST_NEW_PASSWORD", "short")
    status, out, err = await run(
        "admin", "user", "create", "erin", "--role", "viewer", "--scope", "root"
    )
    assert status == 1, out + err  # the relay said no
    assert "at least 10 characters" in err
    assert "至少需要 10 个字符" in err
    assert await _users(relay) == users
    status, out, err = await run("admin", "user", "delete", "admin", "--yes")
    assert status == 1, out + err  # the relay said no
    assert "your own account" in err
    assert "不能对自己的账号" in err
    assert await _users(relay) == users
    await relay.enrol()
    _status, listed = await call(relay, "GET", "/v1/enrolments", "admin")
    used = next(e["id"] for e in listed["enrolments"] if e["status"] == "used")
    status, out, err = await run("admin", "enrol-token", "revoke", used)
    assert status == 1, out + err
    assert "HTTP 409" in err
    assert "already used: revoke the device instead" in err
    assert "登记码已被使用" in err
    _status, listed = await call(relay, "GET", "/v1/enrolments", "admin")
    assert {e["id"]: e["status"] for e in listed["enrolments"]}[used] == "used"


async def test_another_tenants_enrolment_token_and_user_are_not_found(
    relay: Relay, run: Console
) -> None:
    status, body = await call(
        relay, "POST", "/v1/enrolments", "admin", {"store_id": relay.tokens["other_store"]}
    )
    assert status == 201, body
    status, out, err = await run("org.admin", "enrol-token", "revoke", body["id"])
    assert status == 1, out + err
    (line,) = err.splitlines()
    assert "HTTP 404 NotFound" in line
    assert "未找到" in line  # the relay's Chinese words
    _status, listed = await call(relay, "GET", "/v1/enrolments", "admin")
    assert {e["id"]: e["status"] for e in listed["enrolments"]}[body["id"]] == "unused"

    tea = await user_id(relay, "tea.tech")
    for argv in (["user", "disable", tea], ["user", "delete", "tea.tech", "--yes"]):
        status, out, err = await run("org.admin", *argv)
        assert status == 2, argv
        assert "no user" in err
    status, _ = await call(relay, "GET", "/v1/devices", "tea.tech")
    assert status == 200  # still signed in: nothing was done to them


async def test_a_relay_that_is_down_is_one_line_and_exit_1(run: Console) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for argv in (["org", "list"], ["jobs"], ["audit"], ["user", "list"]):
        status, _out, err = await run("admin", *argv, relay_url=f"ws://127.0.0.1:{port}")
        assert status == 1, argv
        (line,) = err.splitlines()
        assert line.startswith("error: relay unreachable: ")
        assert line.endswith("/ 服务器无法连接")


@pytest.mark.parametrize("ttl", ["90d", "31d", "59s", "0m", "721h"])
async def test_a_ttl_the_relay_would_refuse_is_refused_here_with_exit_2_and_nothing_sent(
    relay: Relay, run: Console, ttl: str
) -> None:
    _status, listed = await call(relay, "GET", "/v1/enrolments", "admin")
    with socket.socket() as sock:  # had anything been sent, this would be "unreachable", exit 1
        sock.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{sock.getsockname()[1]}"
    argv = ["enrol-token", "create", "--store", "Main St", "--ttl", ttl]
    status, out, err = await run("admin", *argv, relay_url=dead)
    assert status == 2, out + err
    (line,) = err.splitlines()
    assert "1m .. 30d" in line
    assert "30 天" in line
    status, out, err = await run("admin", *argv)  # the real relay: still nothing created
    assert status == 2, out + err
    assert await call(relay, "GET", "/v1/enrolments", "admin") == (200, listed)
    status, out, err = await run("admin", *argv[:-1], "30d", relay_url=dead)
    assert status == 1, out + err  # the longest the relay takes is sent (and finds no relay)


async def test_the_relay_refuses_a_ttl_out_of_range_sent_past_the_console(relay: Relay) -> None:
    _status, listed = await call(relay, "GET", "/v1/enrolments", "admin")
    for ttl in (90 * 86400, 59, 30 * 86400 + 1, True, "1d"):
        body = {"store_id": relay.store, "ttl": ttl}
        status, answer = await call(relay, "POST", "/v1/enrolments", "admin", body)
        assert status == 400, ttl
        assert answer["error"] == "BadTtl"
        assert "30 天" in answer["message_zh"]
    assert await call(relay, "GET", "/v1/enrolments", "admin") == (200, listed)


async def test_a_technician_is_refused_the_admin_routes_with_the_relays_words(
    relay: Relay, run: Console
) -> None:
    status, out, err = await run("tech", "user", "list")
    assert status == 3, out + err  # EXIT_REFUSED
    assert "HTTP 403" in err


# --- users and passwords -------------------------------------------------------------------------


async def test_an_admin_manages_a_user_from_create_to_delete(
    relay: Relay, run: Console, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSASSIST_NEW_PASSWORD", "erin-first-password")
    status, out, err = await run(
        "admin", "user", "create", "erin", "--role", "technician", "--scope", "store:Main St"
    )
    assert status == 0, out + err
    assert (await sign_in(relay, "erin", "erin-first-password"))[0] == 200
    status, out, _ = await run("admin", "user", "list")
    (line,) = [row for row in rows(out) if row.startswith("erin ")]
    assert "store Main St" in line  # the scope by name
    assert "active / 正常" in line

    status, out, _ = await run("admin", "user", "disable", "erin")
    assert (status, "disabled" in out) == (0, True)
    status, _ = await call(relay, "GET", "/v1/devices", "erin")
    assert status == 401  # their sign-in ended
    status, out, _ = await run("admin", "user", "list")
    assert "disabled / 已停用" in next(r for r in rows(out) if r.startswith("erin "))
    status, out, _ = await run("admin", "user", "enable", "erin")
    assert status == 0

    new_file = tmp_path / "erin.pw"
    new_file.write_text("erin-second-password\n")
    status, out, _ = await run(
        "admin", "user", "reset-password", "erin", "--password-file", str(new_file)
    )
    assert status == 0, out
    assert (await sign_in(relay, "erin", "erin-second-password"))[0] == 200
    status, out, _ = await run("admin", "user", "revoke-tokens", "erin", "--json")
    assert json.loads(out)["tokens_revoked"] == 1
    status, out, _ = await run("admin", "user", "unlock", "erin")
    assert "unlocked" in out
    status, out, _ = await run("admin", "user", "rename", "erin", "erin.w")
    assert "erin is now erin.w" in out
    status, out, _ = await run("admin", "user", "delete", "erin.w", "--yes")
    assert status == 0, out
    _status, body = await call(relay, "GET", "/v1/users", "admin")
    assert "erin.w" not in [u["username"] for u in body["users"]]


async def _users(relay: Relay) -> list[str]:
    _status, body = await call(relay, "GET", "/v1/users", "admin")
    return sorted(u["username"] for u in body["users"])


async def test_an_empty_password_file_or_variable_is_refused_and_nothing_is_created(
    relay: Relay, run: Console, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await _users(relay)
    empty = tmp_path / "empty.pw"
    empty.write_text("\n")
    create = ["user", "create", "erin", "--role", "viewer", "--scope", "root"]
    status, out, err = await run("admin", *create, "--password-file", str(empty))
    assert status == 2, out + err
    assert f"--password-file {empty} is empty / 密码文件为空" in err
    monkeypatch.setenv("POSASSIST_NEW_PASSWORD", "")
    status, out, err = await run("admin", *create)
    assert status == 2, out + err
    assert "POSASSIST_NEW_PASSWORD is set but empty" in err
    assert await _users(relay) == before


async def test_no_terminal_to_ask_on_names_the_file_and_the_variable(
    relay: Relay, run: Console
) -> None:
    before = await _users(relay)
    status, out, err = await run(
        "admin", "user", "create", "erin", "--role", "viewer", "--scope", "root"
    )
    assert status == 2, out + err
    assert err.splitlines() == [
        "error: no terminal to ask on: give --password-file or set $POSASSIST_NEW_PASSWORD"
        " / 没有可输入密码的终端，请用文件提供"
    ]
    assert await _users(relay) == before
    hash_before = (await relay.state.storage.get_user("tech")).password_hash
    status, out, err = await run("tech", "password")
    assert status == 2
    assert "give --password-file or set $POSASSIST_PASSWORD" in err
    assert (await relay.state.storage.get_user("tech")).password_hash == hash_before


async def test_own_password_change_from_the_environment_and_a_wrong_old_one(
    relay: Relay, run: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSASSIST_PASSWORD", "not-the-password")
    monkeypatch.setenv("POSASSIST_NEW_PASSWORD", "techs-new-password")
    hash_before = (await relay.state.storage.get_user("tech")).password_hash
    status, out, err = await run("tech", "password")
    assert status == 3, out + err  # 401: refused
    assert "HTTP 401" in err
    assert (await relay.state.storage.get_user("tech")).password_hash == hash_before
    monkeypatch.setenv("POSASSIST_PASSWORD", PASSWORD)
    relay.state.login_backoff.unlock("tech")  # the wrong try counted; an admin clears it
    status, out, err = await run("tech", "password")
    assert status == 0, out + err
    assert "password changed / 密码已修改" in out
    stored = (await relay.state.storage.get_user("tech")).password_hash
    assert verify_password("techs-new-password", stored)


# --- enrolment tokens ----------------------------------------------------------------------------


async def test_enrolment_tokens_are_made_listed_and_revoked_by_store_name(
    relay: Relay, run: Console
) -> None:
    argv = ["enrol-token", "create", "--store", "Main St", "--ttl", "2h"]
    status, out, err = await run("admin", *argv)
    assert status == 0, out + err
    token_id = re.search(r"id (enr_\S+?);", out)
    assert token_id is not None, out
    status, out, _ = await run("admin", "enrol-token", "list", "--store", "Main St")
    (line,) = rows(out)
    assert line.startswith("Main St")
    assert "unused / 未使用" in line
    assert not RAW_EPOCH.search(out)
    status, out, _ = await run("admin", "enrol-token", "revoke", token_id.group(1))
    assert status == 0, out
    status, out, _ = await run("admin", "enrol-token", "list")
    assert "revoked / 已撤销" in out
    used = await relay.invite()
    device_id, _ = await relay.enrol(used)
    _status, listed = await call(relay, "GET", "/v1/enrolments", "admin")
    (used_id,) = [e["id"] for e in listed["enrolments"] if e["status"] == "used"]
    status, out, err = await run("admin", "enrol-token", "revoke", used_id)
    assert status == 1, out + err  # 409: used already; the relay's words
    assert "HTTP 409" in err
    status, out, _ = await run("admin", "enrol-token", "list")
    (line,) = [row for row in rows(out) if row.endswith(used_id)]
    assert "used / 已使用" in line
    assert f"Main St / {device_id}" in line  # the till it enrolled (no host name reported yet)


# --- history -------------------------------------------------------------------------------------


async def test_jobs_page_with_before_and_show_store_times(relay: Relay, run: Console) -> None:
    device_id, _ = await relay.enrol()
    storage = relay.state.storage
    await storage.update_store(relay.store, now=relay.clock(), timezone="Asia/Shanghai")
    for i in range(5):
        await storage.create_job(device_id, "diag.request", "tech", now=1_800_000_000.0 + i)
    status, out, _ = await run("admin", "jobs", "--limit", "2")
    assert status == 0, out
    page = rows(out)[:2]
    assert all(line.startswith("2027-01-15 16:00:0") for line in page), page
    assert all(" CST " in line for line in page), page  # the store's zone (Asia/Shanghai)
    assert all("Main St / " in line for line in page)  # the store's name with the device
    assert not RAW_EPOCH.search("\n".join(page))
    seen = [line.split()[-1] for line in page]
    for _page in range(5):
        found = re.search(r"posassist jobs --before (\S+)", out)
        if found is None:
            break
        status, out, _ = await run("admin", "jobs", "--limit", "2", "--before", found.group(1))
        seen += [line.split()[-1] for line in rows(out) if line.startswith("2027")]
    assert len(seen) == len(set(seen)) == 5
    before = await audit(relay)
    status, out, err = await run("admin", "jobs", "--before", "nonsense")
    assert status == 2  # a bad argument: nothing sent
    assert "--before is the cursor the last page printed" in err
    assert await audit(relay) == before


async def _run_asked(
    run: Console, agent: Agent, device_id: str
) -> tuple[asyncio.Task[Any], m.ScriptRunRequest, dict[str, Any]]:
    """``posassist run`` of printer-status under way, the request it made as the till got it,
    and the ids every reply to it carries."""
    running = asyncio.create_task(
        run("admin", "run", device_id, "printer-status", "--version", "1.0.0")
    )
    (asked,) = await agent.next()
    assert isinstance(asked, m.ScriptRunRequest)
    assert asked.job_id is not None
    return running, asked, {"id": asked.id, "job_id": asked.job_id}


async def test_jobs_names_the_script_a_run_ran_and_lists_an_older_job_without(
    relay: Relay, run: Console
) -> None:
    device_id, key = await relay.enrol()
    older = await relay.state.storage.create_job(
        device_id, "script.run", "tech", now=relay.clock()
    )  # as a job from before migration 0011 reads: no script
    async with Agent(relay, device_id, key) as agent:
        running, asked, ids = await _run_asked(run, agent, device_id)
        await agent.reply(m.ScriptFinished(**ids, status="cancelled", finished_at=2.0))
        await asyncio.wait_for(running, 30)
    status, out, _ = await run("admin", "jobs", "--device", device_id)
    assert status == 0, out
    (ran,) = [line for line in rows(out) if line.endswith(asked.job_id)]
    assert "script.run  printer-status 1.0.0  " in ran
    (old,) = [line for line in rows(out) if line.endswith(older.id)]
    assert "printer-status" not in old
    assert "script.run" in old


async def test_run_prints_the_job_id_before_the_merchant_answers(
    relay: Relay, run: Console
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        running, asked, ids = await _run_asked(run, agent, device_id)
        await agent.reply(m.ScriptProgress(**ids, step="verified", at=1.0, detail={"risk": "A"}))
        await agent.reply(
            m.ScriptProgress(**ids, step="consent_asked", at=1.0, detail={"timeout": 120})
        )
        # cancelled while asking: the script never started, so no "started (job …)" line
        await agent.reply(m.ScriptFinished(**ids, status="cancelled", finished_at=2.0))
        status, out, err = await asyncio.wait_for(running, 30)
    assert status == 1, out + err
    said = f"job {asked.job_id} (to stop it: posassist cancel {asked.job_id})"
    assert said in out
    assert out.index(said) < out.index("[verified]")
    assert out.count(asked.job_id) == 2  # once, and in its cancel hint; not per step


async def test_diag_of_an_unknown_device_is_zh_en_and_exit_3(relay: Relay, run: Console) -> None:
    before = await audit(relay)
    status, out, err = await run("tech", "diag", "dev_nosuch")
    assert status == 3, out + err
    (line,) = err.splitlines()
    assert "forbidden" in line
    assert "不在你的权限范围内" in line
    new = (await audit(relay))[len(before) :]
    assert [r[1] for r in new if r[2] == "ok" and r[1].startswith("diag")] == []  # nothing ran


async def test_audit_pages_back(relay: Relay, run: Console) -> None:
    status, out, _ = await run("admin", "audit", "--limit", "3")
    assert status == 0, out
    assert len(rows(out)[:3]) == 3
    found = re.search(r"posassist audit --before (\d+)", out)
    assert found is not None, out
    status, older, _ = await run("admin", "audit", "--limit", "3", "--before", found.group(1))
    assert all(int(line.split()[0]) < int(found.group(1)) for line in rows(older)[:3])
    status, out, _ = await run("org.admin", "audit", "--target", "store:Main St")
    assert status == 0, out
    status, out, _ = await run("org.admin", "audit", "--target", "store:Tea Shop 1")
    assert status == 2  # not in their scope: not found by name


async def test_audit_verify_asks_the_relay_and_exits_1_when_the_chain_is_broken(
    relay: Relay, run: Console
) -> None:
    status, out, _ = await run("admin", "audit", "verify")
    assert status == 0, out
    assert "audit chain intact" in out
    assert "审计链完整" in out
    status, out, _ = await run("admin", "audit", "verify", "--json")
    assert status == 0, out
    assert json.loads(out)["ok"] is True
    status, out, err = await run("tech", "audit", "verify")
    assert status != 0
    assert "ok" not in out
    assert "forbidden" in err or "403" in err, err
    assert [r[:3] for r in await audit(relay) if r[1] == "audit.verify"][-1] == (
        "user:tech",
        "audit.verify",
        "refused",
    )

    def edit(conn: Any) -> None:  # someone with the database rewrites a record
        conn.exec_driver_sql("UPDATE audit SET actor = 'mallory' WHERE seq = 2")

    await relay.state.storage.run_write(edit)
    status, out, _ = await run("admin", "audit", "verify")
    assert status == 1, out
    assert "BROKEN at seq 2" in out
    assert "审计链已损坏" in out
    status, out, _ = await run("admin", "audit", "verify", "--json")
    assert status == 1
    assert (json.loads(out)["ok"], json.loads(out)["first_bad"]) == (False, 2)


async def test_audit_details_are_in_words_not_epochs_reprs_or_store_ids(
    relay: Relay, run: Console
) -> None:
    status, out, _ = await run(
        "admin", "enrol-token", "create", "--store", "Main St", "--ttl", "2h"
    )
    assert status == 0, out
    status, out, _ = await run("admin", "store", "set", "Main St", "--hours", "mon-sun 09:00-22:00")
    assert status == 0, out
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await agent.reply(m.DeviceFacts(facts={"hostname": "TILL-MAIN-1"}))
        await agent.reply(m.Heartbeat(seq=1, sent_at=1.0))
        await agent.next()
    status, body = await call(relay, "POST", f"/v1/devices/{device_id}/revoke", "admin", {})
    assert status == 200, body
    status, out, _ = await run("admin", "audit", "--limit", "8")
    assert status == 0, out
    assert "Main St / TILL-MAIN-1" in out  # the till by store and host name, actor and target
    assert f"device:{device_id}" not in out
    assert "expires_at: 20" in out  # a time, not an epoch
    assert "09:00-22:00" in out
    assert not re.search(r"\b1[0-9]{9}\.[0-9]", out), out  # no raw epoch
    assert "{'" not in out
    assert "['" not in out
    assert "store Main St" in out
    assert "store:sto_" not in out


@pytest.mark.parametrize(
    "argv",
    [
        ["jobs", "--limit", "0"],
        ["jobs", "--limit", "201"],
        ["audit", "--before", "abc"],
        ["audit", "--target", "nowhere"],
        ["user", "create", "x", "--role", "admin", "--scope", "galaxy:far"],
        ["enrol-token", "create", "--store", "Main St", "--ttl", "forever"],
    ],
    ids=" ".join,
)
async def test_bad_arguments_are_one_line_exit_2_and_send_nothing(
    relay: Relay, run: Console, argv: list[str]
) -> None:
    before = await audit(relay)
    status, out, err = await run("admin", *argv)
    assert status == 2, out + err
    assert len(err.splitlines()) == 1, err
    assert await audit(relay) == before


async def test_devices_show_their_stores_name_and_last_contact_on_its_clock(
    relay: Relay, run: Console
) -> None:
    await relay.state.storage.update_store(relay.store, now=relay.clock(), timezone="Asia/Shanghai")
    device_id, key = await relay.enrol()
    status, out, _ = await run("tech", "devices")
    assert status == 0, out
    (line,) = rows(out)
    assert line.split()[:3] == [device_id, "no", "active"]
    assert "Main St" in line  # the store's name, not its id
    assert "never / 从未" in line
    async with Agent(relay, device_id, key):
        status, out, _ = await run("tech", "devices")
    (line,) = rows(out)
    assert line.split()[:3] == [device_id, "yes", "active"]
    assert " CST" in line  # seen, on the store's clock
    assert relay.store not in out
    assert not RAW_EPOCH.search(out)
    status, out, _ = await run("tech", "devices", "--json")
    _status, body = await call(relay, "GET", "/v1/devices", "tech")
    assert [d["id"] for d in json.loads(out)] == [d["id"] for d in body["devices"]] == [device_id]


# --- a relay that is not ours --------------------------------------------------------------------


def _hostile_admin_app(broken: bool) -> web.Application:
    """Every admin route answering escape sequences in every string (or, ``broken``, JSON of
    another shape); a rename refused with escapes in both languages."""
    node = {"id": f"org_1{EVIL}", "name": f"Acme{EVIL}", "created_at": 1.0, "timezone": EVIL}
    answers: dict[str, Any] = {
        "/v1/organisations": {"organisations": [node]},
        "/v1/merchants": {"merchants": [{**node, "organisation_id": node["id"]}]},
        "/v1/stores": {"stores": [{**node, "merchant_id": node["id"]}]},
        "/v1/devices": {"devices": []},
        "/v1/users": {
            "users": [
                {
                    "id": f"usr{EVIL}",
                    "username": f"li{EVIL}",
                    "role": f"admin{EVIL}",
                    "scope": {"kind": "organisation", "id": node["id"]},
                    "disabled": False,
                    "locked": EVIL,
                    "created_at": EVIL,
                }
            ]
        },
        "/v1/jobs": {
            "jobs": [{"id": f"job{EVIL}", "device_id": EVIL, "kind": EVIL, "status": EVIL}],
            "next_cursor": f"c{EVIL}",
        },
        "/v1/audit": {
            "records": [{"seq": EVIL, "at": 1e300, "actor": EVIL, "detail": {EVIL: EVIL}}],
            "next_before": EVIL,
        },
        "/v1/enrolments": {"enrolments": [{"id": EVIL, "store_id": EVIL, "status": EVIL}]},
    }
    wrong: dict[str, Any] = {
        "/v1/organisations": {"organisations": "none"},
        "/v1/merchants": {"merchants": [1, 2]},
        "/v1/stores": {},
        "/v1/devices": {"devices": [{}]},
        "/v1/users": {"users": [[]]},
        "/v1/jobs": {"jobs": None},
        "/v1/audit": [],
        "/v1/enrolments": {"enrolments": [None]},
    }

    async def listing(request: web.Request) -> web.Response:
        return web.json_response((wrong if broken else answers)[request.path])

    async def refuse(_: web.Request) -> web.Response:
        body = {"error": f"NotEmpty{EVIL}", "message": f"no{EVIL}", "message_zh": f"不{EVIL}"}
        return web.json_response(body, status=409)

    app = web.Application()
    for path in answers:
        app.router.add_get(path, listing)
    app.router.add_patch("/v1/organisations/{node_id}", refuse)
    return app


@pytest.mark.parametrize("broken", [False, True], ids=["escapes", "wrong-shapes"])
async def test_a_hostile_relays_answers_reach_the_terminal_inert_and_never_as_a_traceback(
    run: Console, broken: bool
) -> None:
    runner, url = await _serve(_hostile_admin_app(broken))
    try:
        for argv in (
            ["org", "list"],
            ["org", "list", "--json"],
            ["merchant", "list"],
            ["store", "list"],
            ["user", "list"],
            ["user", "list", "--json"],
            ["jobs"],
            ["audit"],
            ["enrol-token", "list"],
            ["devices"],
            ["org", "rename", f"org_1{EVIL}", "Acme"],
        ):
            status, out, err = await run("admin", *argv, relay_url=url)
            text = out + err
            assert not FORBIDDEN.search(text), (argv, text)
            if broken and "--json" in argv:
                assert status == 0, (argv, text)  # the relay's answer, as it came, printable
            elif broken:
                assert status in (1, 2), (argv, text)  # 2: no such org to rename
                assert len(err.splitlines()) == 1, (argv, err)
            elif argv[1:2] == ["rename"]:
                assert status == 1
                assert "HTTP 409" in err
                assert "不" in err  # the relay's Chinese words, made printable
            else:
                assert status == 0, (argv, text)
    finally:
        await runner.cleanup()


async def test_a_device_is_revoked_then_deleted_and_its_store_can_go(
    relay: Relay, run: Console
) -> None:
    device_id, _ = await relay.enrol(await relay.invite(relay.other_store))  # Harbour
    status, out, err = await run("admin", "device", "delete", device_id)  # no terminal, no --yes
    assert status == 2
    assert "--yes" in err
    status, out, err = await run("admin", "device", "delete", device_id, "--yes")
    assert status == 1, out + err  # the relay refused: still active, with what to do
    assert "revoke it first" in err
    assert "请先注销设备" in err
    assert (await relay.state.storage.get_device(device_id)).status.value == "active"
    status, out, err = await run("admin", "device", "revoke", device_id, "--yes")
    assert status == 0, out + err
    assert "revoked / 设备已注销" in out
    assert "Harbour" in out  # the store by name
    status, out, err = await run("admin", "device", "delete", device_id, "--yes", "--json")
    assert status == 0, out + err
    assert json.loads(out) == {"id": device_id, "deleted": True, "jobs_kept": 0}
    status, out, err = await run("admin", "store", "delete", "Harbour", "--yes")
    assert status == 0, out + err
    status, out, err = await run("admin", "device", "delete", device_id, "--yes")
    assert status == 3  # gone
    assert "没有这台设备" in err
