"""Running a vetted script from the web console, over a real relay serving a real signed
repository, to an agent played by the test over a real websocket: the form is built from the
manifest (HTML limits for the browser), the relay checks the parameters again (an out-of-range
one runs nothing, makes no job, is audited), and the job page follows the run's steps, consent
and output live and escapes what the till says."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import ClientSession, CookieJar

from posassist.agent.scripts.results import INTERRUPTED
from posassist.console.scripts_repo import init_repository
from posassist.protocol import messages as m
from posassist.relay.web.words import finished_detail, job_error
from tests.agent.test_verify import PASS, add, approve, manifest
from tests.relay.harness import Agent, Console, Relay, start_relay, wait_until
from tests.relay.test_web_console import Browser

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

PARAMS: dict[str, Any] = {
    "host": {"type": "string", "pattern": "[a-z0-9.-]{1,63}", "max_length": 63, "required": True},
    "tcp_port": {"type": "integer", "min": 1, "max": 65535, "default": 9100},
    "baud": {"type": "enum", "enum": ["9600", "19200"], "default": "9600"},
    "cut": {"type": "boolean"},
}


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    repo = init_repository(tmp_path / "approvers", ["alice", "bob"], PASS)
    script = manifest("printer-test")
    script["params"] = PARAMS
    script["consent"] = True
    add(repo, tmp_path, script)
    approve(repo, "alice", "bob")
    repo.publish(tmp_path / "relay")  # the harness's relay serves this folder
    relay = await start_relay(tmp_path)
    yield relay
    await relay.server.close()


@pytest.fixture
async def browser(relay: Relay) -> AsyncIterator[Browser]:
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        yield Browser(relay.http, http)


def _form(csrf: str, **params: str) -> dict[str, str]:
    form = {"csrf": csrf, "script": "printer-test", "version": "1.0.0"}
    form.update({k if k == "unattended" else f"p_{k}": v for k, v in params.items()})
    return form


async def _jobs(relay: Relay, device_id: str) -> list[Any]:
    from posassist.relay.storage import Scope
    from posassist.relay.storage.admin import AdminStore

    jobs, _ = await AdminStore(relay.state.storage).jobs_page(
        Scope.root(), limit=10, device_id=device_id
    )
    return jobs


async def test_the_run_form_is_built_from_the_manifest(relay: Relay, browser: Browser) -> None:
    device_id, _ = await relay.enrol()
    await browser.sign_in("tech")
    _, page, _ = await browser.get(f"/devices/{device_id}")
    assert f'href="/devices/{device_id}/run"' in page
    _, page, _ = await browser.get(f"/devices/{device_id}/run")
    assert "printer-test" in page
    assert "打印机状态" in page  # its title, Chinese first
    status, page, _ = await browser.get(
        f"/devices/{device_id}/run?script=printer-test&version=1.0.0"
    )
    assert status == 200
    assert re.search(
        r'name="p_host" value="" maxlength="63"\s+pattern="\[a-z0-9\\.\\-\]\{1,63\}" required', page
    )
    assert re.search(r'name="p_tcp_port" value="9100" step="1"\s+min="1"\s+max="65535"', page)
    assert '<option value="9600" selected>9600</option>' in page
    assert 'type="checkbox" name="p_cut"' in page
    # labels in words with a hint of what to type; the manifest's key beside them
    assert '<label>打印机地址 * <code class="muted">host</code>' in page
    assert "IP 或主机名" in page
    assert '<label>网络端口 <code class="muted">tcp_port</code>' in page
    assert '<label>cut <code class="muted">cut</code>' in page  # not in the table: as itself
    status, _, _ = await browser.get(f"/devices/{device_id}/run?script=nope&version=1.0.0")
    assert status == 200  # an unknown script: the list again


@pytest.mark.parametrize(
    "params",
    [
        {"host": "till-printer", "tcp_port": "70000"},  # above its max
        {"host": "till-printer", "tcp_port": "0"},  # below its min
        {"host": "till-printer", "tcp_port": "12.5"},  # not an integer
        {"host": "till-printer", "tcp_port": "9_100"},  # int() takes it; a port field does not
        {"host": "till-printer", "tcp_port": "\u0669\u0661\u0660\u0660"},  # Arabic-Indic 9100
        {"host": "till-printer", "baud": "300"},  # not a choice
        {"host": "TILL PRINTER; rm -rf /"},  # against its pattern
        {"tcp_port": "9100"},  # a required one missing
        {"host": "till-printer", "evil": "x"},  # not in the manifest
        {"host": "till-printer", "unattended": "on"},  # the manifest does not allow it
    ],
    ids=[
        "above-max",
        "below-min",
        "not-integer",
        "underscored",
        "other-digits",
        "not-a-choice",
        "pattern",
        "missing",
        "unknown",
        "unattended",
    ],
)
async def test_a_bad_parameter_is_refused_by_the_relay_and_nothing_runs(
    relay: Relay, browser: Browser, params: dict[str, str]
) -> None:
    device_id, key = await relay.enrol()
    await browser.sign_in("tech")
    csrf = await browser.csrf()
    async with Agent(relay, device_id, key) as agent:
        status, page, _ = await browser.post(f"/devices/{device_id}/run", _form(csrf, **params))
        assert status == 400
        assert "参数无效, 没有运行" in page
        assert "rm -rf" not in page.split('role="alert"')[1].split("</p>")[0]  # not echoed
        reason = page.split('role="alert"')[1].split("</p>")[0]
        assert re.search(r"[\u4e00-\u9fff].* / [A-Za-z]", reason), reason  # why, in zh and en
        assert await _jobs(relay, device_id) == []  # no job, nothing routed
        # the next (good) run is the first thing the agent hears
        status, _, _ = await browser.post(
            f"/devices/{device_id}/run", _form(csrf, host="till-printer")
        )
        assert status == 303
        (request,) = await agent.next()
        assert isinstance(request, m.ScriptRunRequest)
        assert request.params == {"host": "till-printer", "cut": False}  # defaults: the agent's
    refused = [
        dict(r.detail)
        async for r in relay.state.storage.records()
        if r.action == "script.run" and str(r.outcome) == "refused"
    ]
    assert [(d["reason"], d["via"]) for d in refused] == [("invalid_params", "web")]


async def test_a_run_shows_its_consent_steps_and_output_live(
    relay: Relay, browser: Browser
) -> None:
    device_id, key = await relay.enrol()
    await browser.sign_in("tech")
    csrf = await browser.csrf()
    async with Agent(relay, device_id, key) as agent:
        status, _, response = await browser.post(
            f"/devices/{device_id}/run", _form(csrf, host="10.0.0.7", tcp_port="9101", cut="on")
        )
        assert status == 303
        job_url = response.headers["Location"]
        (request,) = await agent.next()
        assert isinstance(request, m.ScriptRunRequest)
        assert request.params == {"host": "10.0.0.7", "tcp_port": 9101, "cut": True}
        assert request.job_id is not None
        job_id = request.job_id
        assert job_url == f"/jobs/{job_id}"
        ids = {"id": request.id, "job_id": job_id}

        _, page, _ = await browser.get(job_url)
        assert 'hx-get="/jobs/' in page  # follows itself while running
        await agent.reply(m.ScriptProgress(**ids, step="verified", at=1.0, detail={"risk": "B"}))
        await agent.reply(
            m.ScriptProgress(**ids, step="consent_asked", at=2.0, detail={"timeout": 120})
        )
        await agent.reply(m.Heartbeat(seq=1, sent_at=1.0))
        await agent.next()  # acked: the relay has handled what came before
        _, fragment, _ = await browser.get(job_url + "/progress")
        assert "等待商户确认 (120 秒)" in fragment
        assert 'class="consent consent-asked"' in fragment

        await agent.reply(
            m.ScriptProgress(
                **ids,
                step="consent_answered",
                at=3.0,
                detail={"decision": "granted", "answered_by": "cashier"},
            )
        )
        await agent.reply(m.ScriptStarted(**ids, started_at=4.0))
        await agent.reply(
            m.ScriptOutput(**ids, seq=0, stream="stdout", data=b"status ok <script>x</script>\n")
        )
        await agent.reply(m.ScriptFinished(**ids, status="succeeded", finished_at=5.0, exit_code=0))
        await agent.reply(m.Heartbeat(seq=2, sent_at=2.0))
        await agent.next()
    _, page, _ = await browser.get(job_url)
    assert "商户已同意" in page
    assert "status ok &lt;script&gt;x&lt;/script&gt;" in page
    assert "<script>x" not in page
    assert "succeeded" in page
    assert 'hx-get="/jobs/' not in page  # finished: it stops asking
    (job,) = await _jobs(relay, device_id)
    assert (job.id, job.status.value, job.requested_by) == (job_id, "succeeded", "tech")


async def test_a_viewer_gets_no_form_and_a_posted_run_is_refused(
    relay: Relay, browser: Browser
) -> None:
    device_id, key = await relay.enrol()
    await browser.sign_in("viewer")
    _, page, _ = await browser.get(f"/devices/{device_id}/run")
    assert "你的角色不能运行脚本" in page
    csrf = await browser.csrf()
    async with Agent(relay, device_id, key):
        status, _, _ = await browser.post(
            f"/devices/{device_id}/run", _form(csrf, host="till-printer")
        )
    assert status == 403
    assert await _jobs(relay, device_id) == []


async def test_a_run_without_its_csrf_token_or_on_another_stores_till_runs_nothing(
    relay: Relay, browser: Browser
) -> None:
    device_id, _ = await relay.enrol()
    theirs, _ = await relay.enrol(await relay.invite(relay.other_store))
    await browser.sign_in("tech")
    status, _, _ = await browser.post(f"/devices/{device_id}/run", _form("wrong", host="x"))
    assert status == 403
    csrf = await browser.csrf()
    status, _, _ = await browser.post(f"/devices/{theirs}/run", _form(csrf, host="x"))
    assert status == 404
    assert await _jobs(relay, device_id) == []
    assert await _jobs(relay, theirs) == []


async def test_an_offline_till_fails_the_job_and_says_so(relay: Relay, browser: Browser) -> None:
    device_id, _ = await relay.enrol()
    await browser.sign_in("tech")
    csrf = await browser.csrf()
    status, _, response = await browser.post(
        f"/devices/{device_id}/run", _form(csrf, host="till-printer")
    )
    assert status == 303
    _, page, _ = await browser.get(response.headers["Location"])
    assert "offline" in page
    assert "设备离线" in page
    (job,) = await _jobs(relay, device_id)
    assert job.status.value == "failed"


async def test_a_runs_backup_is_restored_from_its_job_page(relay: Relay, browser: Browser) -> None:
    device_id, key = await relay.enrol()
    await browser.sign_in("tech")
    csrf = await browser.csrf()
    async with Agent(relay, device_id, key) as agent:
        _, _, response = await browser.post(
            f"/devices/{device_id}/run", _form(csrf, host="till-printer")
        )
        job_url = response.headers["Location"]
        (run,) = await agent.next()
        assert isinstance(run, m.ScriptRunRequest)
        assert run.job_id is not None
        await agent.reply(
            m.ScriptFinished(
                id=run.id,
                job_id=run.job_id,
                status="succeeded",
                finished_at=1.0,
                exit_code=0,
                backup_id="bk_0123",
            )
        )
        await agent.reply(m.Heartbeat(seq=1, sent_at=1.0))
        await agent.next()
        _, page, _ = await browser.get(job_url)
        assert f'action="{job_url}/restore"' in page
        status, _, _ = await browser.post(job_url + "/restore", {"csrf": "forged"})
        assert status == 403
        status, _, response = await browser.post(job_url + "/restore", {"csrf": csrf})
        assert status == 303
        restore_url = response.headers["Location"]
        (asked,) = await agent.next()  # the forged form reached nothing
        assert isinstance(asked, m.ScriptRestoreRequest)
        assert (asked.backup_id, asked.device_id) == ("bk_0123", device_id)
        assert asked.job_id is not None
        assert restore_url == f"/jobs/{asked.job_id}"
        ids = {"id": asked.id, "job_id": asked.job_id}
        restored = {"files": 1, "restored": ("/pos/pos.ini",), "removed": (), "verified": True}
        await agent.reply(m.ScriptProgress(**ids, step="restored", at=2.0, detail=restored))
        counts = "restored 1, removed 0, unchanged 2"  # as agent/scripts/service.py says it
        await agent.reply(
            m.ScriptFinished(**ids, status="succeeded", finished_at=2.0, detail=counts)
        )
        await agent.reply(m.Heartbeat(seq=2, sent_at=2.0))
        await agent.next()
    _, page, _ = await browser.get(restore_url)
    assert "恢复备份 <code>bk_0123</code>" in page
    assert "<h1>恢复备份 · Main St / " in page  # the till and its store on the page
    assert "还没有输出" not in page  # ended: "no output", not "not yet"
    assert "没有输出" in page
    # the steps in words: lists spelled out, yes/no, no Python tuples; the end in Chinese
    assert "已恢复: files 1; restored /pos/pos.ini; removed —; verified 是" in page
    assert "('" not in page
    assert "()" not in page
    assert '<p class="finished job-succeeded"><strong>成功</strong>' in page
    assert ">succeeded<" not in page
    assert "已恢复 1 个文件, 删除 0 个, 2 个未变" in page  # the till's counts in the page's words
    assert counts not in page
    await browser.get("/lang?to=en&next=/fleet")
    _, page, _ = await browser.get(restore_url)
    assert f"<strong>succeeded</strong> · {counts}" in page
    await browser.get("/lang?to=zh&next=/fleet")
    jobs = {job.kind: job.status.value for job in await _jobs(relay, device_id)}
    assert jobs == {"script.run": "succeeded", "script.restore": "succeeded"}
    status, _, _ = await browser.post(restore_url + "/restore", {"csrf": csrf})
    assert status == 404  # a restore has no backup of its own to restore
    _, page, _ = await browser.get(job_url)  # the run's own page: restored, not offered again
    assert "此备份已恢复 <code>bk_0123</code>" in page
    assert f'action="{job_url}/restore"' not in page


async def test_a_run_cancelled_while_asking_says_so_once_and_no_longer_waits(
    relay: Relay, browser: Browser
) -> None:
    device_id, key = await relay.enrol()
    await browser.sign_in("tech")
    csrf = await browser.csrf()
    own = "已按要求取消 / cancelled on request"
    async with Agent(relay, device_id, key) as agent:
        _, _, response = await browser.post(
            f"/devices/{device_id}/run", _form(csrf, host="till-printer")
        )
        job_url = response.headers["Location"]
        (run,) = await agent.next()
        assert isinstance(run, m.ScriptRunRequest)
        ids = {"id": run.id, "job_id": run.job_id}
        await agent.reply(
            m.ScriptProgress(**ids, step="consent_asked", at=2.0, detail={"timeout": 120})
        )
        await agent.reply(m.ScriptFinished(**ids, status="cancelled", finished_at=3.0, detail=own))
        await agent.reply(m.Heartbeat(seq=1, sent_at=1.0))
        await agent.next()
    _, page, _ = await browser.get(job_url)
    assert "已取消" in page
    assert page.count("已按要求取消") == 1  # the reason once
    assert 'class="consent consent-asked"' not in page  # not "waiting for the merchant"
    assert "<h1>运行脚本 · Main St / " in page
    _, page, _ = await browser.get(f"/devices/{device_id}")
    (row,) = re.findall(r'<tr class="job-cancelled">(.*?)</tr>', page, re.S)
    assert ">运行脚本</a>" in row  # the kind in words, not script.run
    assert "已取消: 已按要求取消 / cancelled on request" in row


def test_a_jobs_stored_error_reads_as_words_never_a_bare_status() -> None:
    assert job_error("failed: ", "zh") == "失败: 设备没有说明原因"
    assert job_error("failed:", "en") == "failed: the till gave no reason"
    assert job_error("timed_out: no answer", "zh") == "超时: no answer"
    assert job_error("never_delivered: the device never received this job", "en") == (
        "never_delivered: the device never received this job"
    )
    assert job_error(None, "zh") == ""


def test_a_runs_end_detail_from_the_till_reads_in_the_pages_language() -> None:
    assert finished_detail(INTERRUPTED, "zh") == "中断: 脚本运行时收银助手停止了"
    assert finished_detail(INTERRUPTED, "en") == INTERRUPTED
    own = "已按要求取消 / cancelled on request: the script's process tree was stopped"
    assert finished_detail(own, "zh") == own  # the agent's own bilingual words, as sent
    assert finished_detail("restored 1, removed 0, unchanged x", "zh") == (
        "restored 1, removed 0, unchanged x"
    )


async def test_a_revoked_till_offers_no_action_and_each_is_refused_on_the_relay(
    relay: Relay, browser: Browser
) -> None:
    device_id, key = await relay.enrol()
    await browser.sign_in("tech")
    csrf = await browser.csrf()
    async with Agent(relay, device_id, key) as agent:  # a run that left a backup behind
        _, _, response = await browser.post(
            f"/devices/{device_id}/run", _form(csrf, host="till-printer")
        )
        job_url = response.headers["Location"]
        (run,) = await agent.next()
        assert isinstance(run, m.ScriptRunRequest)
        assert run.job_id is not None
        finished = m.ScriptFinished(
            id=run.id, job_id=run.job_id, status="succeeded", finished_at=1.0, backup_id="bk_1"
        )
        await agent.reply(finished)
        await agent.reply(m.Heartbeat(seq=1, sent_at=1.0))
        await agent.next()
    _, page, _ = await browser.get(f"/devices/{device_id}")
    assert f'action="/devices/{device_id}/diagnose"' in page  # while it is active
    status, body = await relay.post(f"/v1/devices/{device_id}/revoke", {}, relay.tokens["admin"])
    assert status == 200, body
    jobs = await _jobs(relay, device_id)

    _, page, _ = await browser.get(f"/devices/{device_id}")
    assert f'action="/devices/{device_id}/diagnose"' not in page
    assert f'href="/devices/{device_id}/run"' not in page
    assert "该设备已注销或已转移" in page
    _, page, _ = await browser.get(job_url)
    assert f'action="{job_url}/restore"' not in page
    for method, path, form in (
        ("GET", f"/devices/{device_id}/run", None),
        ("POST", f"/devices/{device_id}/run", _form(csrf, host="till-printer")),
        ("POST", f"/devices/{device_id}/diagnose", {"csrf": csrf}),
        ("POST", f"{job_url}/restore", {"csrf": csrf}),
    ):
        if method == "GET":
            status, page, _ = await browser.get(path)
        else:
            status, page, _ = await browser.post(path, form)
        assert status == 409, path
        assert "设备已注销或已转移到其他服务商" in page, path
    assert await _jobs(relay, device_id) == jobs  # no job made
    refused = [
        (r.action, dict(r.detail).get("reason"))
        async for r in relay.state.storage.records()
        if str(r.outcome) == "refused" and r.target == f"device:{device_id}"
    ]
    assert refused.count(("script.run", "device revoked")) == 2
    assert ("diag.request", "device revoked") in refused
    assert ("script.restore", "device revoked") in refused

    async with Console(relay) as console:  # the command line's way in: refused the same
        await console.request(m.DiagnosticsRequest(id=1, device_id=device_id, timeout=5))
        (answer,) = await console.next()
    assert isinstance(answer, m.ErrorReply)
    assert answer.code == "revoked"
    assert "revoked" in answer.message
    assert await _jobs(relay, device_id) == jobs


async def test_only_scripts_for_the_tills_os_are_offered_and_another_is_refused(
    relay: Relay, browser: Browser
) -> None:
    # printer-test's manifest says platforms ["linux"] (tests/agent/test_verify.py)
    linux_id, linux_key = await relay.enrol()
    windows_id, windows_key = await relay.enrol()
    for device_id, key, os_name in (
        (linux_id, linux_key, "Linux"),
        (windows_id, windows_key, "Windows"),
    ):
        async with Agent(relay, device_id, key) as agent:
            await agent.reply(m.DeviceFacts(facts={"hostname": f"till-{os_name}", "os": os_name}))
            await agent.reply(m.Heartbeat(seq=1, sent_at=1.0))
            await agent.next()
    await wait_until(lambda: not relay.state.presence and not relay.state.writing)
    await browser.sign_in("tech")
    csrf = await browser.csrf()
    _, page, _ = await browser.get(f"/devices/{linux_id}/run")
    assert "script=printer-test" in page
    _, page, _ = await browser.get(f"/devices/{windows_id}/run")
    assert "script=printer-test" not in page  # a Linux-only script is not offered to Windows
    status, page, _ = await browser.get(
        f"/devices/{windows_id}/run", params={"script": "printer-test", "version": "1.0.0"}
    )
    assert status == 400
    assert "printer-test 只能在 linux 上运行, 这台收银机是 windows" in page
    assert 'action="/devices/' not in page  # no form to send
    async with Agent(relay, windows_id, windows_key) as agent:
        status, page, _ = await browser.post(
            f"/devices/{windows_id}/run", _form(csrf, host="till-printer")
        )
        assert status == 400
        assert "printer-test 只能在 linux 上运行" in page
        await agent.reply(m.Heartbeat(seq=2, sent_at=2.0))
        (only,) = await agent.next()  # nothing else reached the till
        assert isinstance(only, m.HeartbeatAck)
    assert await _jobs(relay, windows_id) == []
    refused = [
        dict(r.detail)
        async for r in relay.state.storage.records()
        if r.action == "script.run" and r.target == f"device:{windows_id}"
    ]
    assert [(d["reason"], d["platform"]) for d in refused] == [("wrong_platform", "windows")]

    # the command line's way in (a console over the websocket): refused the same, no job
    async with Agent(relay, windows_id, windows_key) as agent, Console(relay) as console:
        asked = m.ScriptRunRequest(
            id=1, device_id=windows_id, script="printer-test", version="1.0.0", params={}
        )
        await console.request(asked)
        (answer,) = await console.next()
        assert isinstance(answer, m.ErrorReply)
        assert answer.code == "wrong_platform"
        assert answer.message == (
            "printer-test runs on linux only; this till runs windows"
            " / printer-test 只能在 linux 上运行, 这台收银机是 windows"
        )
        await agent.reply(m.Heartbeat(seq=3, sent_at=3.0))
        (only,) = await agent.next()  # nothing reached the till
        assert isinstance(only, m.HeartbeatAck)
    assert await _jobs(relay, windows_id) == []


@pytest.mark.parametrize(
    ("params", "unattended", "words"),
    [
        ({"host": "till-printer", "tcp_port": 0}, False, "参数 tcp_port: 小于最小值"),
        ({"host": "till-printer", "tcp_port": 70000}, False, "参数 tcp_port: 大于最大值"),
        ({"host": "a;rm -rf /"}, False, "参数 host:"),
        ({}, False, "参数 host: 必须填写"),
        ({"host": "till-printer", "evil": "1"}, False, "未知参数: evil"),
        ({"host": "till-printer"}, True, "这个脚本不能无人值守运行"),
    ],
)
async def test_a_consoles_run_with_bad_parameters_is_refused_on_the_relay(
    relay: Relay, params: dict[str, Any], unattended: bool, words: str
) -> None:
    """The command line's way in (a websocket console) is checked against the published
    manifest as the web form is: refused before any job, nothing reaches the till, audited."""
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        asked = m.ScriptRunRequest(
            id=1,
            device_id=device_id,
            script="printer-test",
            version="1.0.0",
            params=params,
            unattended=unattended,
        )
        await console.request(asked)
        (answer,) = await console.next()
        assert isinstance(answer, m.ErrorReply)
        assert answer.code == "invalid_params"
        assert words in answer.message
        assert " / " in answer.message  # and the English
        await agent.reply(m.Heartbeat(seq=1, sent_at=1.0))
        (only,) = await agent.next()  # nothing reached the till
        assert isinstance(only, m.HeartbeatAck)
    assert await _jobs(relay, device_id) == []
    refused = [
        dict(r.detail).get("reason")
        async for r in relay.state.storage.records()
        if r.action == "script.run" and r.target == f"device:{device_id}"
    ]
    assert refused == ["invalid_params"]
