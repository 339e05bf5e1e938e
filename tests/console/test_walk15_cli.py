"""The README walk of issue 15 (docs/notes/walkfixA-status.md): ``posassist`` against a real
relay (the harness's, in process), the till played by the test. Each bad input is sent and both
the error and that nothing reached a till (or the audit log) are checked."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from posassist.protocol import messages as m
from tests.console.test_admin_cli import Console, rows
from tests.console.test_admin_cli import run as run
from tests.console.test_escapes import _reply_to_next
from tests.relay.harness import Agent
from tests.relay.test_admin_api import audit
from tests.relay.test_admin_api import relay as relay

if TYPE_CHECKING:
    from pathlib import Path

    from tests.relay.harness import Relay


def _report(device_id: str) -> m.DiagnosticsReport:
    sections = {"system": {"ok": True, "status": "ok", "data": {}}}
    return m.DiagnosticsReport(id=1, device_id=device_id, collected_at=1.0, sections=sections)


async def _till(relay: Relay, agent: Agent, hostname: str) -> None:
    await agent.reply(m.DeviceFacts(facts={"hostname": hostname}))
    await agent.reply(m.Heartbeat(seq=1, sent_at=1.0))
    await agent.next()


# --- M1: a store by its name ---------------------------------------------------------------------


async def test_diag_store_takes_the_stores_name(relay: Relay, run: Console) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        answer = asyncio.create_task(_reply_to_next(agent, _report(device_id)))
        status, out, err = await run("tech", "diag", "--store", "Main St")
        await answer
    assert status == 0, out + err
    assert out.splitlines()[0].startswith("1 device of Main St / 门店设备 1 台")
    assert f"✓ {device_id}" in out


async def test_a_store_name_nobody_has_is_refused_as_unknown_and_no_till_is_asked(
    relay: Relay, run: Console
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key):
        before = await audit(relay)
        status, out, err = await run("tech", "diag", "--store", "Nowhere St")
        assert status == 2, out + err
        assert "no store 'Nowhere St' that you may see" in err
        assert "没有设备" not in err  # not "the store has no till"
        status, out, err = await run(
            "tech", "run", "--store", "Nowhere St", "printer-status-test", "--version", "1.0.0"
        )
        assert status == 2, out + err
        assert await audit(relay) == before  # no request reached the relay, so no till


async def test_an_ambiguous_store_name_is_refused_listing_the_ids(
    relay: Relay, run: Console
) -> None:
    storage = relay.state.storage
    twin = (await storage.create_store(relay.merchant, "Main St", now=relay.clock())).id
    before = await audit(relay)
    status, out, err = await run("admin", "diag", "--store", "Main St")
    assert status == 2, out + err
    assert "2 stores are called 'Main St'" in err
    assert relay.store in err
    assert twin in err
    assert await audit(relay) == before


# --- M2: a till by its host name -----------------------------------------------------------------


async def test_diag_takes_a_tills_host_name(relay: Relay, run: Console) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await _till(relay, agent, "TILL-MAIN-1")
        answer = asyncio.create_task(_reply_to_next(agent, _report(device_id)))
        status, out, err = await run("tech", "diag", "till-main-1")  # any case, as on Windows
        await answer
    assert status == 0, out + err
    assert "forbidden" not in err


async def test_an_unknown_host_name_is_no_such_device_exit_3_and_nothing_is_sent(
    relay: Relay, run: Console
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await _till(relay, agent, "TILL-MAIN-1")
        before = await audit(relay)
        for argv in (
            ["diag", "vm"],
            ["run", "vm", "printer-status-test", "--version", "1.0.0"],
            ["restore", "vm", "bak_1"],
        ):
            status, out, err = await run("admin", *argv)
            assert status == 3, out + err
            assert "error: no such device: 'vm' is neither the id nor the host name" in err
            assert "没有这台设备" in err
            assert "forbidden" not in err
        assert await audit(relay) == before  # not even a refusal: the relay was never asked


async def test_devices_keeps_one_stores_or_those_matching_a_search(
    relay: Relay, run: Console
) -> None:
    main_id, main_key = await relay.enrol()
    harbour_id, _key = await relay.enrol(await relay.invite(relay.other_store))
    async with Agent(relay, main_id, main_key) as agent:
        await _till(relay, agent, "TILL-MAIN-1")
        status, out, _ = await run("admin", "devices", "--store", "Harbour")
        assert status == 0, out
        assert [line.split()[0] for line in rows(out)] == [harbour_id]
        status, out, _ = await run("admin", "devices", "--search", "till-main")
        assert [line.split()[0] for line in rows(out)] == [main_id]
        status, out, _ = await run("admin", "devices", "--search", "harb")
        assert [line.split()[0] for line in rows(out)] == [harbour_id]
        status, out, _ = await run("admin", "devices", "--search", "zzz")
        assert "no devices match / 没有符合条件的设备" in out
        status, out, err = await run("admin", "devices", "--store", "Nowhere")
        assert status == 2
        assert "no store 'Nowhere'" in err


# --- M3: where a deleted till's history is -------------------------------------------------------


async def test_deleting_a_till_says_where_its_history_is_and_that_command_shows_it(
    relay: Relay, run: Console
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await _till(relay, agent, "TILL-MAIN-1")
        answer = asyncio.create_task(_reply_to_next(agent, _report(device_id)))
        status, out, err = await run("tech", "diag", device_id)
        await answer
        assert status == 0, out + err
    status, out, err = await run("admin", "device", "revoke", "TILL-MAIN-1", "--yes")
    assert status == 0, out + err
    status, out, err = await run("admin", "device", "delete", device_id, "--yes")
    assert status == 0, out + err
    assert "1 jobs kept" not in out  # not a promise `posassist jobs` can't keep
    assert "its jobs (1) are no longer listed" in out
    hint = f"posassist audit --target device:{device_id}"
    assert hint in out
    status, listed, _ = await run("admin", "jobs")
    assert "no jobs / 没有任务" in listed  # as the message says
    status, history, err = await run("admin", *hint.split()[1:])
    assert status == 0, history + err
    for action in ("diag.request", "device.revoke", "device.delete"):
        assert action in history, history


# --- M4: names first, ids second -----------------------------------------------------------------


async def test_alerts_and_ticket_show_name_the_store_and_till(relay: Relay, run: Console) -> None:
    from tests.relay.alerting import raised, send_event

    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        await _till(relay, agent, "TILL-MAIN-1")
        await send_event(agent, raised(1, "printer-1", device_id=device_id))
    status, out, err = await run("tech", "alerts", "--store", "Main St")  # a name, too
    assert status == 0, out + err
    head = out.splitlines()[0]
    assert f"Main St / TILL-MAIN-1 ({device_id})" in head
    assert relay.store not in out
    status, out, err = await run(
        "tech", "ticket", "open", "--store", "Main St", "--device", device_id,
        "--category", "printer", "--description", "缺纸", "--contact", "13800138000",
    )  # fmt: skip
    assert status == 0, out + err
    code = out.split("服务码: ")[1].split()[0]
    status, out, err = await run("tech", "ticket", "show", code)
    assert status == 0, out + err
    assert "Main St" in out.splitlines()[0]
    assert relay.store not in out
    assert f"device / 设备: Main St / TILL-MAIN-1 ({device_id})" in out


# --- M6: opening hours in the syntax typed -------------------------------------------------------


async def _hours(relay: Relay) -> object:
    from tests.relay.test_admin_api import call

    status, body = await call(relay, "GET", f"/v1/stores/{relay.store}", "admin")
    assert status == 200, body
    return body["hours"]


async def test_bad_opening_hours_are_refused_in_the_syntax_typed_and_nothing_changes(
    relay: Relay, run: Console
) -> None:
    status, out, err = await run("admin", "store", "set", "Main St", "--hours", "daily 08:00-20:00")
    assert status == 0, out + err
    before = await _hours(relay)
    for hours, words in (
        ("mon-sun 25:00-26:00", "25:00 (in 25:00-26:00) is not a time of day"),
        ("mon 09:60-10:00", "09:60 (in 09:60-10:00) is not a time of day"),
        ("mon 09:00-12:00,11:00-13:00", "spans of a day must not overlap"),
    ):
        status, out, err = await run("admin", "store", "set", "Main St", "--hours", hours)
        assert status == 2, out + err
        assert words in err, err
        assert "{" not in err  # not the API's JSON
        assert "09:00-12:00,13:00-21:00" in err  # an example in the syntax typed
        assert await _hours(relay) == before


async def test_a_lunch_break_may_be_written_with_a_comma_or_a_space(
    relay: Relay, run: Console
) -> None:
    split = [["09:00", "12:00"], ["13:00", "21:00"]]
    for hours in ("mon-fri 09:00-12:00,13:00-21:00", "mon-fri 09:00-12:00 13:00-21:00"):
        await run("admin", "store", "set", "Main St", "--hours", "daily 08:00-20:00")
        status, out, err = await run("admin", "store", "set", "Main St", "--hours", hours)
        assert status == 0, out + err
        weekly = (await _hours(relay))["weekly"]  # type: ignore[index]
        assert weekly == {day: split for day in ("mon", "tue", "wed", "thu", "fri")}


def test_store_set_help_documents_the_hours_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    from posassist.console.__main__ import main

    with pytest.raises(SystemExit):
        main(["store", "set", "--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert "lunch break as two spans split by a comma or a space" in said
    assert "(00:00 … 24:00)" in said


# --- M8: a revoked till's alerts close -----------------------------------------------------------


async def test_revoking_a_till_resolves_its_open_alerts_audited_and_only_its_own(
    relay: Relay, run: Console
) -> None:
    from tests.relay.alerting import raised, send_event
    from tests.relay.test_admin_api import call

    gone, gone_key = await relay.enrol()
    kept, kept_key = await relay.enrol()
    for device_id, key in ((gone, gone_key), (kept, kept_key)):
        async with Agent(relay, device_id, key) as agent:
            await send_event(agent, raised(1, "pos-1", check="pos_process", device_id=device_id))
            await send_event(agent, raised(2, "prn-1", check="printer", device_id=device_id))
    status, body = await call(relay, "POST", "/v1/devices/dev_nosuchtill/revoke", "admin", {})
    assert status == 404, body  # a bad id: nothing resolved
    status, body = await call(relay, "GET", "/v1/alerts?open=1", "admin")
    assert len(body["alerts"]) == 4
    status, out, err = await run("admin", "device", "revoke", gone, "--yes")
    assert status == 0, out + err
    status, body = await call(relay, "GET", "/v1/alerts?open=1", "admin")
    assert {a["device_id"] for a in body["alerts"]} == {kept}  # the other till's stay open
    assert len(body["alerts"]) == 2
    status, body = await call(relay, "GET", "/v1/alerts", "admin")
    closed = [a for a in body["alerts"] if a["device_id"] == gone]
    assert [a["status"] for a in closed] == ["resolved", "resolved"]
    records = [r async for r in relay.state.storage.records()]
    resolved = [r for r in records if r.action == "alert.resolved"]
    assert {r.target for r in resolved} == {f"alert:{a['id']}" for a in closed}
    assert all(r.actor == "user:admin" for r in resolved)
    assert all(r.detail["reason"] == "device revoked" for r in resolved)
    status, out, err = await run("admin", "device", "revoke", gone, "--yes")  # again: no-op
    assert [r.action async for r in relay.state.storage.records()].count("alert.resolved") == 2


# --- L1: a run's steps in words ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "detail", "said"),
    [
        (
            "verified",
            {"risk": "C", "approvals": 2, "run_timeout": 30.0},
            "[verified] signatures verified / 签名已验证: risk C; approvals 2; time limit 30 s",
        ),
        (
            "backup_made",
            {"backup_id": "20261206T205629Z-17c1", "paths": ("/tmp/a/pos.ini",), "sizes": (36,)},
            "[backup_made] backup made / 已备份: backup 20261206T205629Z-17c1; "
            "files /tmp/a/pos.ini; sizes 36 B",
        ),
        (
            "restored",
            {"backup_id": "b-1", "restored": (), "removed": (), "unchanged": ("/tmp/a",),
             "verified": True},
            "[restored] restored / 已恢复: backup b-1; put back none 无; removed none 无; "
            "unchanged /tmp/a; checked afterwards yes 是",
        ),
        (
            "restore_failed",
            {"some_key": [1, 2]},
            "[restore_failed] restore failed / 恢复失败: some key 1, 2",
        ),
    ],
)  # fmt: skip
def test_run_and_restore_steps_are_words_not_reprs(
    step: str, detail: dict[str, object], said: str
) -> None:
    from posassist.console.__main__ import progress_line

    line = progress_line(m.ScriptProgress(id=1, job_id="j", step=step, at=1.0, detail=detail))
    assert line == said
    for raw in ("=(", "('", ",)", "30.0", "True", "run_timeout", "backup_id"):
        assert raw not in line


# --- L5: health after login ----------------------------------------------------------------------


async def test_health_after_login_needs_no_relay_argument(relay: Relay, run: Console) -> None:
    status, out, err = await run("tech", "health")
    assert status == 0, out + err
    assert "agent(s) connected" in out


def test_health_without_a_login_or_a_relay_says_what_to_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from posassist.console.__main__ import main

    monkeypatch.setenv("POSASSIST_HOME", str(tmp_path / "nobody"))
    assert main(["health"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad argument: health: give --relay URL, or sign in first")
    assert not (tmp_path / "nobody").exists()  # nothing written


# --- L6: a refusal says which role is needed -----------------------------------------------------


async def test_a_technicians_refusal_says_the_admin_role_is_needed(
    relay: Relay, run: Console
) -> None:
    for argv in (["audit"], ["user", "list"]):
        before = await audit(relay)
        status, out, err = await run("tech", *argv)
        assert status == 3, out + err
        assert "not permitted: this needs the admin role / 需要管理员角色" in err, err
        assert "无权操作" in err
        assert len(await audit(relay)) == len(before) + 1  # the refusal, audited; nothing else
        assert "refused" in (await audit(relay))[-1][2]


# --- L10: grammar --------------------------------------------------------------------------------


def test_help_and_totals_use_the_right_article_and_number(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from posassist.console.__main__ import main
    from posassist.console.fanout import DeviceResult, totals_line

    with pytest.raises(SystemExit):
        main(["org", "--help"])
    said = capsys.readouterr().out
    assert "rename an organisation" in said
    assert "a organisation" not in said
    assert totals_line([DeviceResult("dev_1", "ok", 0.1)], 0.1).startswith("1/1 device ok")
    two = [DeviceResult("dev_1", "ok", 0.1), DeviceResult("dev_2", "ok", 0.1)]
    assert totals_line(two, 0.1).startswith("2/2 devices ok")
