"""Relay core over real websockets and HTTP: enrolment, sign-in, scope, routing, audit.

Each bad input from issue 4 is sent for real; the test checks the clear error and that nothing
was let in, run or lost (the device saw nothing, the job says what happened, the audit records it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sqlite3
from typing import TYPE_CHECKING, Any

import msgpack
import pytest
from websockets.asyncio.client import connect

from posassist.protocol import Codec, signing
from posassist.protocol import messages as m
from posassist.protocol.enrolment import EnrolmentInvite
from posassist.relay.audit import verify_store
from posassist.relay.connection import WebSocketSession, binary_frame_header
from posassist.relay.errors import StorageError
from posassist.relay.storage import JobStatus, Scope, open_storage
from tests.relay.harness import (
    PASSWORD,
    Agent,
    Console,
    Relay,
    agent_handshake,
    close_code,
    console_handshake,
    start_relay,
    wait_until,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

CODEC = Codec()


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path)
    yield relay
    await relay.server.close()


async def _chain_ok(relay: Relay) -> None:
    result = await verify_store(relay.state.storage)
    assert result.ok, result.describe()


# --- enrolment ----------


async def test_enrolment_binds_key_to_new_device_in_the_store(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    device = await relay.state.storage.get_device(device_id)
    assert device.store_id == relay.store
    assert device.public_key == signing.public_key_to_raw(key.public_key())
    async with Agent(relay, device_id, key):
        pass
    assert ("device.enrol", "ok", f"store:{relay.store}") in await relay.audit_actions()
    await _chain_ok(relay)


async def test_enrolment_token_carries_relay_url_and_id(relay: Relay) -> None:
    invite = EnrolmentInvite.decode(await relay.invite())
    assert invite.relay_url == relay.ws
    assert invite.relay_id == relay.state.config.relay_id
    assert invite.tls_pin is None


async def _enrol_raw(relay: Relay, secret: str) -> tuple[int, dict[str, object]]:
    raw = signing.public_key_to_raw(signing.generate_private_key().public_key())
    return await relay.post(
        "/v1/enrol", {"secret": secret, "public_key": base64.b64encode(raw).decode()}
    )


async def test_enrolment_token_used_twice_is_refused(relay: Relay) -> None:
    text = await relay.invite()
    await relay.enrol(text)
    status, body = await _enrol_raw(relay, EnrolmentInvite.decode(text).secret)
    assert status == 403
    assert body["message"] == "enrolment token already used"
    assert len(await relay.state.storage.list_devices(relay_scope_root())) == 1


async def test_expired_enrolment_token_is_refused(relay: Relay) -> None:
    text = await relay.invite(ttl=60)
    relay.clock.offset = 120
    status, body = await _enrol_raw(relay, EnrolmentInvite.decode(text).secret)
    assert status == 403
    assert body["message"] == "enrolment token expired"
    assert await relay.state.storage.list_devices(relay_scope_root()) == []


async def test_enrolment_token_for_another_relay_is_refused(relay: Relay) -> None:
    _, secret = await relay.state.storage.create_enrolment(
        relay.store, "relay-elsewhere", now=relay.clock(), ttl=3600
    )
    status, body = await _enrol_raw(relay, secret)
    assert status == 403
    assert body["message"] == "enrolment token is for another relay"
    assert await relay.state.storage.list_devices(relay_scope_root()) == []
    assert ("device.enrol", "refused", "relay") in await relay.audit_actions()


async def test_enrolment_over_the_address_allowance_is_429_with_when_to_come_back(
    tmp_path: Path,
) -> None:
    """A fleet or an installer enrolling many tills from one address is told when the next try
    can succeed (docs/fleet.md), not left to guess: 1 try per 5 s after a burst of 2."""
    from aiohttp import ClientSession

    relay = await start_relay(tmp_path, enrol_rate=0.2, enrol_burst=2)
    try:
        for _ in range(2):
            assert (await _enrol_raw(relay, "x" * 32))[0] == 403  # unknown secret: spent a try
        async with (
            ClientSession() as http,
            http.post(relay.http + "/v1/enrol", json={"secret": "x" * 32}) as answer,
        ):
            assert answer.status == 429
            assert answer.headers["Retry-After"] == "5"
            assert (await answer.json())["error"] == "RateLimited"
        relay.clock.offset = 5
        assert (await _enrol_raw(relay, "x" * 32))[0] == 403  # refilled: heard again
    finally:
        await relay.server.close()


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"secret": "x", "public_key": "not base64!"},
        {"secret": "x", "public_key": base64.b64encode(b"short").decode()},
        {"secret": 5, "public_key": "AAAA"},
        [1, 2],
    ],
)
async def test_malformed_enrolment_is_bad_request(relay: Relay, body: object) -> None:
    status, answer = await relay.post("/v1/enrol", body)
    assert status == 400
    assert answer == {"error": "BadRequest", "message": "bad request", "message_zh": "请求无效"}


def relay_scope_root() -> Scope:
    return Scope.root()


# --- agent authentication ----------


async def test_agent_with_unknown_key_is_refused_and_audited(relay: Relay) -> None:
    device_id, _ = await relay.enrol()
    async with connect(relay.ws + "/v1/agent") as ws:
        _, answer = await agent_handshake(ws, device_id, signing.generate_private_key())
        assert answer == m.AuthRefused(code="bad_signature")
        assert await close_code(ws) == 4001
    assert ("agent.connect", "refused", f"device:{device_id}") in await relay.audit_actions()
    assert relay.state.router.agent(device_id) is None


async def test_unknown_device_is_refused(relay: Relay) -> None:
    async with connect(relay.ws + "/v1/agent") as ws:
        _, answer = await agent_handshake(ws, "dev_nobody", signing.generate_private_key())
        assert answer == m.AuthRefused(code="unknown_device")


async def test_replayed_challenge_response_is_refused(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    captured: list[bytes] = []

    def record(payload: bytes) -> bytes:
        captured.append(signing.sign(key, payload))
        return captured[-1]

    async with connect(relay.ws + "/v1/agent") as ws:
        _, answer = await agent_handshake(ws, device_id, key, sign=record)
        assert isinstance(answer, m.AuthAccepted)
    # an eavesdropper replays the recorded response on a new connection (new nonce)
    async with connect(relay.ws + "/v1/agent") as ws:
        _, answer = await agent_handshake(ws, device_id, key, sign=lambda _: captured[0])
        assert answer == m.AuthRefused(code="bad_signature")
        assert await close_code(ws) == 4001


async def test_revoked_device_is_disconnected_at_once_and_refused_after(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        status, _ = await relay.post(f"/v1/devices/{device_id}/revoke", {}, relay.tokens["admin"])
        assert status == 200
        assert agent.ws is not None
        assert await close_code(agent.ws) == 4003
    async with connect(relay.ws + "/v1/agent") as ws:
        _, answer = await agent_handshake(ws, device_id, key)
        assert answer == m.AuthRefused(code="revoked")
    assert ("device.revoke", "ok", f"device:{device_id}") in await relay.audit_actions()


async def test_second_connection_replaces_the_first(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as first, Agent(relay, device_id, key) as second:
        assert first.ws is not None
        assert await close_code(first.ws) == 4002
        assert relay.state.router.agent(device_id) is not None
        assert second.ws is not None


async def test_replaced_connection_fails_only_its_own_requests(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    device_id, key = await relay.enrol()
    async with Console(relay) as console, Agent(relay, device_id, key) as first:
        await console.request(m.DiagnosticsRequest(id=1, device_id=device_id, timeout=30))
        (old_request,) = await first.next()
        assert isinstance(old_request, m.DiagnosticsRequest)
        # Hold the old connection's handler once its socket is closed (it has detached by then),
        # so the new connection has a request in flight when the old one finishes closing.
        old_link = relay.state.router.agent(device_id)
        assert isinstance(old_link, WebSocketSession)
        release = asyncio.Event()
        stop_writer = WebSocketSession.stop_writer

        async def held_stop_writer(link: WebSocketSession) -> None:
            # The test server (unlike the relay's own runner) cancels a handler whose connection
            # is lost; the hold outlasts that, as the relay's handler would run on.
            while link is old_link and old_link.ws.closed and not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    assert task is not None
                    task.uncancel()
            await stop_writer(link)

        # (on the class: a session has slots, not a dict to patch; only the old link is held)
        monkeypatch.setattr(WebSocketSession, "stop_writer", held_stop_writer)
        try:
            async with Agent(relay, device_id, key) as second:
                assert first.ws is not None
                assert await close_code(first.ws) == 4002
                await console.request(m.DiagnosticsRequest(id=2, device_id=device_id, timeout=30))
                (new_request,) = await second.next()
                assert isinstance(new_request, m.DiagnosticsRequest)
                # each connection numbers its own requests: the same agent id is in flight on both
                assert new_request.id == old_request.id
                # the old link's route was detached before its handler awaited anything
                assert relay.state.router.routes_in_flight == 1

                release.set()
                (answer,) = await console.next()
                assert answer == m.ErrorReply(
                    id=1, code="offline", message="the device disconnected"
                )
                await second.reply(
                    m.DiagnosticsReport(
                        id=new_request.id, device_id=device_id, collected_at=1.0, sections={"ok": 1}
                    )
                )
                (report,) = await console.next()
                assert isinstance(report, m.DiagnosticsReport)
                assert (report.id, report.sections) == (2, {"ok": 1})
                assert relay.state.router.agent(device_id) is not None
        finally:
            release.set()  # never leave the old handler held, even when this test fails
    jobs = await _jobs(relay)
    assert [(j.status, j.error) for j in jobs] == [
        (JobStatus.FAILED, "offline: the device disconnected"),
        (JobStatus.SUCCEEDED, None),
    ]
    await _chain_ok(relay)


# --- technician sign-in ----------


RATE_LIMITED = "too many requests; slow down"


async def _login(relay: Relay, password: str, user: str = "tech") -> tuple[int, str]:
    status, body = await relay.post("/v1/login", {"username": user, "password": password})
    return status, str(body.get("message", "")) if status != 200 else "ok"


async def _login_refusals(relay: Relay, target: str) -> list[str]:
    return [
        str(r.detail.get("reason"))
        async for r in relay.state.storage.records()
        if (r.action, r.outcome, r.target) == ("user.login", "refused", target)
    ]


async def test_wrong_password_twenty_times_backs_off_and_is_audited(tmp_path: Path) -> None:
    # A login rate limit far above 21 attempts, so every refusal below is the back-off's own;
    # a first wait of a minute, so the test's own run time doesn't end it.
    relay = await start_relay(tmp_path, login_burst=1000, login_backoff=60.0)
    try:
        replies = [await _login(relay, "wrong password") for _ in range(20)]
        bad = (401, "invalid username or password")
        assert replies == [bad] * 20  # backed off looks exactly like wrong
        # the right password is refused while backed off: the same answer again
        assert await _login(relay, PASSWORD) == bad
        user = await relay.state.storage.get_user("tech")
        assert (user.failed_logins, user.locked_until) == (0, None)  # nothing stored per account
        # five wrong passwords in full; of the 16 tries while backed off (nothing was looked at)
        # the first is in full and the rest are summarised for the address (relay/refusals.py)
        assert await _login_refusals(relay, "user:tech") == ["bad password"] * 5 + ["locked out"]
        await relay.state.write_refusal_summaries(final=True)
        summaries = [
            r
            async for r in relay.state.storage.records()
            if r.action == "user.login" and (r.detail or {}).get("summary")
        ]
        assert [(r.actor, r.detail["count"], r.detail["reasons"]) for r in summaries] == [
            ("ip:127.0.0.1", 15, {"locked_out": 15})
        ]
        # nothing was rate limited: the summary above counts only backed-off tries
        assert "rate limited" not in await _login_refusals(relay, "relay")
        # the first wait is a minute from the last failure (the attempts above took real time)
        left = relay.state.login_backoff.retry_after("127.0.0.1", "tech", relay.clock())
        assert 0 < left <= 60
        relay.clock.offset += max(0.0, left - 10)
        assert await _login(relay, PASSWORD) == bad
        relay.clock.offset += 11  # the wait ends: the right password works
        assert await _login(relay, PASSWORD) == (200, "ok")
        assert ("user.login", "ok", "user:tech") in (await relay.audit_actions())[-1:]
        # and the failure count started again: five wrong passwords before any wait
        assert [await _login(relay, "wrong password") for _ in range(5)] == [bad] * 5
        assert 50 < relay.state.login_backoff.retry_after("127.0.0.1", "tech", relay.clock()) <= 60
        await _chain_ok(relay)
    finally:
        await relay.server.close()


async def test_login_rate_limit_refuses_with_its_own_message_and_locks_nobody(
    tmp_path: Path,
) -> None:
    # One try per address (start_relay's own sign-in uses it), then one a minute.
    relay = await start_relay(tmp_path, login_burst=1, login_rate=1 / 60)
    try:
        replies = [await _login(relay, "wrong password") for _ in range(6)]
        assert replies == [(429, RATE_LIMITED)] * 6
        assert await _login(relay, PASSWORD) == (429, RATE_LIMITED)
        # the first refusal in full, the other six counted into one summary (relay/refusals.py)
        assert await _login_refusals(relay, "relay") == ["rate limited"]
        await relay.state.write_refusal_summaries(final=True)
        assert [
            r.detail.get("count", 1)
            async for r in relay.state.storage.records()
            if (r.action, r.outcome, r.target) == ("user.login", "refused", "relay")
        ] == [1, 6]
        # refused before the password was looked at: no failure counted, nobody locked out
        assert await _login_refusals(relay, "user:tech") == []
        user = await relay.state.storage.get_user("tech")
        assert (user.failed_logins, user.locked_until) == (0, None)
        relay.clock.offset = 61  # a token back in the bucket
        assert await _login(relay, PASSWORD) == (200, "ok")
    finally:
        await relay.server.close()


async def test_unknown_user_and_bad_body_are_clear_errors(relay: Relay) -> None:
    status, body = await relay.post("/v1/login", {"username": "ghost", "password": "x"})
    assert (status, body["message"]) == (401, "invalid username or password")
    status, body = await relay.post("/v1/login", {"username": "tech"})
    assert status == 400


async def test_expired_and_revoked_bearer_tokens_are_refused(relay: Relay) -> None:
    token = relay.tokens["tech"]
    assert (await relay.get("/v1/devices", token))[0] == 200
    relay.clock.offset = 9 * 3600
    status, body = await relay.get("/v1/devices", token)
    assert (status, body["message"]) == (401, "token expired")
    async with connect(relay.ws + "/v1/console") as ws:
        _, answer = await console_handshake(ws, token)
        assert answer == m.AuthRefused(code="bad_token")
        assert await close_code(ws) == 4001
    relay.clock.offset = 0
    status, _ = await relay.post("/v1/logout", {}, relay.tokens["viewer"])
    assert status == 200
    status, body = await relay.get("/v1/devices", relay.tokens["viewer"])
    assert (status, body["message"]) == (401, "token revoked")
    status, _ = await relay.get("/v1/devices")
    assert status == 401


# --- scope and routing ----------


async def test_console_diagnostics_round_trip_reaches_only_the_caller(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with (
        Agent(relay, device_id, key) as agent,
        Console(relay) as console,
        Console(relay, "admin") as bystander,
    ):
        await console.request(m.DiagnosticsRequest(id=41, device_id=device_id, timeout=5))
        (request,) = await agent.next()
        assert isinstance(request, m.DiagnosticsRequest)
        await agent.reply(
            m.DiagnosticsReport(
                id=request.id,
                device_id=device_id,
                collected_at=1.0,
                sections={"printer": {"ok": True}},
            )
        )
        (report,) = await console.next()
        assert isinstance(report, m.DiagnosticsReport)
        assert report.id == 41
        assert report.sections == {"printer": {"ok": True}}
        with pytest.raises(TimeoutError):
            await bystander.next(timeout=0.3)
    jobs = await _jobs(relay)
    assert [(j.kind, j.status) for j in jobs] == [("diag.request", JobStatus.SUCCEEDED)]
    await _chain_ok(relay)


async def test_a_reply_is_on_the_consoles_socket_before_its_jobs_end_is_written(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job's end is written on the event loop (relay/storage/engine.py): the reply must not
    # wait in the console's outbox behind it (relay/connection.py flush_nowait).
    storage = relay.state.storage
    finish_job = storage.finish_job
    queued_at_finish: list[int] = []

    async def noting(*args, **kwargs):  # type: ignore[no-untyped-def]
        (peer,) = next(iter(relay.state.console_tokens.values()))
        queued_at_finish.append(len(peer._outbox))
        return await finish_job(*args, **kwargs)

    monkeypatch.setattr(storage, "finish_job", noting)
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        for request_id in (5, 6):
            await console.request(m.DiagnosticsRequest(id=request_id, device_id=device_id))
            (request,) = await agent.next()
            assert isinstance(request, m.DiagnosticsRequest)
            await agent.reply(
                m.DiagnosticsReport(
                    id=request.id, device_id=device_id, collected_at=1.0, sections={}
                )
            )
            (report,) = await console.next()
            assert isinstance(report, m.DiagnosticsReport)
            assert report.id == request_id
    assert queued_at_finish == [0, 0]
    jobs = await _jobs(relay)
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 2
    await _chain_ok(relay)


async def test_script_output_streams_back_and_job_finishes(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        await console.request(
            m.ScriptRunRequest(
                id=7,
                device_id=device_id,
                script="printer-test",
                version="1.0.0",
                params={"copies": 1},
            )
        )
        (request,) = await agent.next()
        rid = request.id  # type: ignore[attr-defined]
        await agent.reply(m.ScriptStarted(id=rid, job_id="j", started_at=1.0))
        for seq in range(3):
            await agent.reply(
                m.ScriptOutput(id=rid, job_id="j", seq=seq, stream="stdout", data=b"line\n")
            )
        await agent.reply(
            m.ScriptFinished(
                id=rid,
                job_id="j",
                status="failed",
                finished_at=2.0,
                exit_code=3,
                detail="paper out",
            )
        )
        got: list[m.Message] = []
        while len(got) < 5:
            got += await console.next()
    assert [g.TAG for g in got] == ["script.started"] + ["script.output"] * 3 + ["script.finished"]
    assert all(g.id == 7 for g in got)  # type: ignore[attr-defined]
    (job,) = await _jobs(relay)
    assert job.status is JobStatus.FAILED
    assert "paper out" in (job.error or "")


async def test_a_burst_of_output_reaches_the_console_whole_and_in_order(relay: Relay) -> None:
    # Frames queued together for a console go out in one write, each with a header the relay
    # builds itself (relay/connection.py): every size class of RFC 6455 length (7-bit, 16-bit,
    # 64-bit) must arrive byte for byte, in order, under the console's request id.
    sizes = [0, 1, 40, 125, 126, 200, 65_000, 65_535, 65_536, 3, 64 * 1024, 7]
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        await console.request(
            m.ScriptRunRequest(id=70, device_id=device_id, script="log-bundle", version="1")
        )
        (request,) = await agent.next()
        rid = request.id  # type: ignore[attr-defined]
        assert agent.ws is not None
        assert agent.session is not None
        for burst in range(3):
            for seq, size in enumerate(sizes):
                data = bytes([burst * 16 + seq % 16]) * size
                agent.session.send(
                    m.ScriptOutput(id=rid, job_id="j", seq=seq, stream="stdout", data=data)
                )
            for frame in agent.session.data_to_send():  # back to back, one frame each
                await agent.ws.send(frame)
        got: list[m.Message] = []
        while len(got) < 3 * len(sizes):
            got += await console.next()
        (peer,) = next(iter(relay.state.console_tokens.values()))
        assert peer.batched_writes > 0  # frames did go out together
    expected = [
        (seq, bytes([burst * 16 + seq % 16]) * size)
        for burst in range(3)
        for seq, size in enumerate(sizes)
    ]
    assert [(g.seq, g.data) for g in got] == expected  # type: ignore[attr-defined]
    assert all(g.id == 70 for g in got)  # type: ignore[attr-defined]


async def test_replies_reach_a_reading_console_without_waking_its_writer_task(
    relay: Relay,
) -> None:
    # While a console's writer waits for work, what is queued for it in one turn of the loop is
    # written at the end of that turn (relay/connection.py send_nowait): no switch to the writer
    # task and back per batch. The writer only wakes when the socket's buffer is full, which
    # tests/relay/test_outbox_bytes.py drives (a console that stops reading is still shed).
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        await console.request(
            m.ScriptRunRequest(id=71, device_id=device_id, script="log-bundle", version="1")
        )
        (request,) = await agent.next()
        rid = request.id  # type: ignore[attr-defined]
        (peer,) = next(iter(relay.state.console_tokens.values()))
        await wait_until(lambda: peer._parked)  # the writer waits for work
        waiting = peer._wakeup  # what would wake it
        assert waiting is not None
        got: list[m.Message] = []
        for seq in range(5):  # one at a time, each alone in its turn of the relay's loop
            await agent.reply(
                m.ScriptOutput(id=rid, job_id="j", seq=seq, stream="stdout", data=b"%d" % seq)
            )
            got += await console.next()
        assert [(g.id, g.seq) for g in got] == [(71, seq) for seq in range(5)]  # type: ignore[attr-defined]
        assert peer._wakeup is waiting
        assert not waiting.done()  # never woken: every frame went out at once


def test_binary_frame_headers_follow_rfc_6455() -> None:
    assert binary_frame_header(0) == b"\x82\x00"
    assert binary_frame_header(125) == b"\x82\x7d"
    assert binary_frame_header(126) == b"\x82\x7e\x00\x7e"
    assert binary_frame_header(65_535) == b"\x82\x7e\xff\xff"
    assert binary_frame_header(65_536) == b"\x82\x7f" + (65_536).to_bytes(8, "big")


async def test_technician_outside_scope_is_refused_audited_and_device_sees_nothing(
    relay: Relay,
) -> None:
    device_id, key = await relay.enrol(await relay.invite(relay.other_store))
    async with Agent(relay, device_id, key) as agent, Console(relay, "tech") as console:
        await console.request(m.DiagnosticsRequest(id=1, device_id=device_id))
        (answer,) = await console.next()
        assert answer == m.ErrorReply(id=1, code="forbidden", message="device not in your scope")
        with pytest.raises(TimeoutError):
            await agent.next(timeout=0.5)
    assert ("diag.request", "refused", f"device:{device_id}") in await relay.audit_actions()
    assert await _jobs(relay) == []


async def test_unknown_device_looks_the_same_as_out_of_scope(relay: Relay) -> None:
    async with Console(relay) as console:
        await console.request(m.DiagnosticsRequest(id=1, device_id="dev_nope"))
        (answer,) = await console.next()
        assert answer == m.ErrorReply(id=1, code="forbidden", message="device not in your scope")


async def test_viewer_may_look_but_not_run_scripts(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay, "viewer") as console:
        await console.request(
            m.ScriptRunRequest(id=1, device_id=device_id, script="s", version="1")
        )
        (answer,) = await console.next()
        assert answer == m.ErrorReply(id=1, code="forbidden", message="your role may not do this")
        with pytest.raises(TimeoutError):
            await agent.next(timeout=0.3)


async def test_request_to_offline_device_gets_clear_error(relay: Relay) -> None:
    device_id, _ = await relay.enrol()
    async with Console(relay) as console:
        await console.request(m.DiagnosticsRequest(id=3, device_id=device_id))
        (answer,) = await console.next()
        assert isinstance(answer, m.ErrorReply)
        assert answer.code == "offline"
    (job,) = await _jobs(relay)
    assert (job.status, job.error) == (JobStatus.FAILED, "offline")


async def test_agent_that_never_replies_times_out_and_job_fails(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        await console.request(m.DiagnosticsRequest(id=9, device_id=device_id, timeout=0.5))
        (request,) = await agent.next()
        assert isinstance(request, m.DiagnosticsRequest)
        (answer,) = await console.next(timeout=5)
        assert answer == m.ErrorReply(
            id=9, code="timeout", message="no reply from the device within 0.5 s"
        )
        # a late reply is dropped quietly: the agent is not disconnected for it
        await agent.reply(
            m.DiagnosticsReport(
                id=request.id,
                device_id=device_id,
                collected_at=1.0,
                sections={},
            )
        )
        await asyncio.sleep(0.2)
        assert relay.state.router.agent(device_id) is not None
        with pytest.raises(TimeoutError):
            await console.next(timeout=0.3)
    (job,) = await _jobs(relay)
    assert job.status is JobStatus.FAILED
    assert (job.error or "").startswith("timeout")
    await _chain_ok(relay)


async def test_console_flooding_requests_is_rate_limited(tmp_path: Path) -> None:
    relay = await start_relay(tmp_path, console_rate=1.0, console_burst=5)
    try:
        device_id, key = await relay.enrol()
        async with Agent(relay, device_id, key) as agent, Console(relay) as console:
            for rid in range(1, 21):
                await console.request(m.DiagnosticsRequest(id=rid, device_id=device_id))
            answers: list[m.Message] = []
            while len(answers) < 15:
                answers += await console.next()
            assert all(isinstance(a, m.ErrorReply) and a.code == "rate_limited" for a in answers)
            forwarded: list[m.Message] = []
            while len(forwarded) < 5:
                forwarded += await agent.next()
            with pytest.raises(TimeoutError):
                await agent.next(timeout=0.3)
        refused = [a for a in await relay.audit_actions() if a[1] == "refused"]
        assert len(refused) == 15
    finally:
        await relay.server.close()


async def test_console_exceeding_requests_in_flight_is_disconnected(tmp_path: Path) -> None:
    relay = await start_relay(tmp_path, console_max_in_flight=3, console_burst=100)
    try:
        device_id, key = await relay.enrol()
        async with Agent(relay, device_id, key), Console(relay) as console:
            for rid in range(1, 5):
                await console.request(m.DiagnosticsRequest(id=rid, device_id=device_id))
            assert console.ws is not None
            assert await close_code(console.ws) == 1008
    finally:
        await relay.server.close()


async def test_console_endpoint_closes_bad_frames(relay: Relay) -> None:
    for frame, code in [
        (b"\xc1", 1007),
        (b"\x00" * (1024 * 1024 + 1), 1009),
        (msgpack.packb({"t": "nope"}), 1003),
        (CODEC.encode(m.Hello(role="agent", versions=(1,), software="")), 1002),
    ]:
        async with connect(relay.ws + "/v1/console", max_size=None) as ws:
            await ws.send(frame)
            assert await close_code(ws) == code
    async with Console(relay) as console:  # still serving
        assert console.session is not None


async def test_garbage_after_sign_in_closes_only_that_console(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key), Console(relay) as good, Console(relay) as bad:
        assert bad.ws is not None
        await bad.ws.send(b"\x92\x01")  # truncated
        assert await close_code(bad.ws) == 1007
        await good.request(m.DiagnosticsRequest(id=1, device_id=device_id, timeout=0.3))
        (answer,) = await good.next()
        assert answer.TAG == "error"  # the test agent doesn't answer: timeout, not a crash


async def test_oversized_script_params_close_the_console_and_reach_no_agent(relay: Relay) -> None:
    """100 KB of parameters (no manifest allows over 4096 characters) are refused at the relay:
    1007, no job, nothing forwarded, and the agent and other consoles go on."""
    device_id, key = await relay.enrol()
    wire = m.ScriptRunRequest(
        id=1, device_id=device_id, script="printer-status-test", version="1.0.0"
    ).to_wire()
    wire["params"] = {"printer": "x" * 100_000}
    async with Agent(relay, device_id, key) as agent, Console(relay) as bad:
        assert bad.ws is not None
        await bad.ws.send(msgpack.packb(wire))
        assert await close_code(bad.ws) == 1007
        async with Console(relay) as good:
            await good.request(m.DiagnosticsRequest(id=1, device_id=device_id, timeout=5))
            (forwarded,) = await agent.next()  # the first thing the agent ever got
            assert isinstance(forwarded, m.DiagnosticsRequest)
    assert not [a for a in await relay.audit_actions() if a[0].startswith("script.run")]


async def test_healthz_counts_agents_and_consoles(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key), Console(relay):
        status, body = await relay.get("/healthz")
    assert status == 200
    assert (body["agents"], body["consoles"]) == (1, 1)


# --- administration ----------


async def test_admin_builds_the_tree_and_technician_cannot(relay: Relay) -> None:
    admin = relay.tokens["admin"]
    status, org = await relay.post("/v1/organisations", {"name": "Beta"}, admin)
    assert status == 201
    status, merchant = await relay.post(
        "/v1/merchants", {"organisation_id": org["id"], "name": "Tea"}, admin
    )
    assert status == 201
    status, store = await relay.post(
        "/v1/stores", {"merchant_id": merchant["id"], "name": "A"}, admin
    )
    assert status == 201
    status, _ = await relay.post(
        "/v1/users",
        {
            "username": "li",
            "password": "long enough pw",
            "role": "technician",
            "scope_kind": "store",
            "scope_id": store["id"],
        },
        admin,
    )
    assert status == 201
    status, body = await relay.post("/v1/organisations", {"name": "X"}, relay.tokens["tech"])
    assert (status, body["message"]) == (403, "not permitted")
    status, body = await relay.post(
        "/v1/enrolments", {"store_id": relay.other_store}, relay.tokens["tech"]
    )
    assert status == 403
    refused = [a for a in await relay.audit_actions() if a[1] == "refused"]
    assert len(refused) == 2
    await _chain_ok(relay)


async def test_scoped_admin_stays_in_scope(relay: Relay) -> None:
    from posassist.relay.storage import Role, Scope, ScopeKind
    from tests.relay.harness import _HASH

    await relay.state.storage.create_user(
        "store-admin", _HASH, Role.ADMIN, Scope(ScopeKind.STORE, relay.store), now=relay.clock()
    )
    _status, body = await relay.post("/v1/login", {"username": "store-admin", "password": PASSWORD})
    token = str(body["token"])
    assert (await relay.post("/v1/enrolments", {"store_id": relay.store}, token))[0] == 201
    assert (await relay.post("/v1/enrolments", {"store_id": relay.other_store}, token))[0] == 403
    assert (await relay.post("/v1/enrolments", {"store_id": "sto_missing"}, token))[0] == 403


async def test_device_list_is_scoped(relay: Relay) -> None:
    mine, _ = await relay.enrol()
    await relay.enrol(await relay.invite(relay.other_store))
    status, body = await relay.get("/v1/devices", relay.tokens["tech"])
    assert status == 200
    devices = body["devices"]
    assert isinstance(devices, list)
    assert [d["id"] for d in devices] == [mine]
    status, body = await relay.get("/v1/devices", relay.tokens["admin"])
    assert len(body["devices"]) == 2  # type: ignore[arg-type]


async def _jobs(relay: Relay) -> list:  # type: ignore[type-arg]
    import sqlalchemy as sa

    from posassist.relay.storage import schema

    query = sa.select(schema.jobs.c.id).order_by(schema.jobs.c.created_at)
    ids = await relay.state.storage.run_read(lambda conn: conn.execute(query).scalars().all())
    return [await relay.state.storage.get_job(i) for i in ids]


async def test_metrics_count_agents_consoles_routed_requests_and_refusals(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        await console.request(m.DiagnosticsRequest(id=1, device_id=device_id, timeout=5))
        (request,) = await agent.next()
        assert isinstance(request, m.DiagnosticsRequest)
        await agent.reply(
            m.DiagnosticsReport(id=request.id, device_id=device_id, collected_at=1.0, sections={})
        )
        await console.next()
        await relay.post("/v1/login", {"username": "tech", "password": "wrong"})
        from aiohttp import ClientSession

        async with ClientSession() as http, http.get(relay.http + "/metrics") as response:
            assert response.status == 404  # never on the agents' port: serve() has a listener
        text = relay.metrics_text()
    assert "posassist_relay_agents_connected 1.0" in text
    assert "posassist_relay_consoles_connected 1.0" in text
    assert 'posassist_relay_requests_routed_total{kind="diag.request",outcome="ok"} 1.0' in text
    assert 'posassist_relay_refusals_total{reason="bad_credentials"} 1.0' in text
    assert 'reason="user.login"' not in text  # labelled by why, never by the action
    assert "posassist_relay_handshake_duration_seconds_count 1.0" in text
    assert 'posassist_relay_frames_received_total{endpoint="agent"}' in text


async def test_console_that_stops_reading_is_disconnected_not_the_agent(tmp_path: Path) -> None:
    # The console's diagnostics request fails (console_gone); its script runs on at the till
    # regardless, so that job is unknown until the agent's end of it reconciles it
    # (docs/protocol.md#request-lifetime-relay).
    relay = await start_relay(tmp_path, max_outbox=4)
    try:
        device_id, key = await relay.enrol()
        async with Agent(relay, device_id, key) as agent, Console(relay) as console:
            await console.request(m.DiagnosticsRequest(id=1, device_id=device_id, timeout=60))
            await console.request(
                m.ScriptRunRequest(id=2, device_id=device_id, script="flood", version="1")
            )
            asked: list[m.Message] = []
            while len(asked) < 2:
                asked += await agent.next()
            (request,) = [r for r in asked if isinstance(r, m.ScriptRunRequest)]
            rid = request.id
            chunk = b"x" * 65_536
            assert console.ws is not None
            # the console reads nothing while the agent streams far more than socket buffers hold
            for seq in range(400):
                await agent.reply(
                    m.ScriptOutput(id=rid, job_id="j", seq=seq, stream="stdout", data=chunk)
                )
                if relay.state.router.routes_in_flight == 0:
                    break
            await wait_until(lambda: relay.state.router.routes_in_flight == 0)
            # the agent is still connected and served; the console was closed for being slow
            assert relay.state.router.agent(device_id) is not None
            await agent.reply(m.Heartbeat(seq=1, sent_at=1.0))
            (ack,) = await agent.next()
            assert isinstance(ack, m.HeartbeatAck)
            jobs = {job.kind: job for job in await _jobs(relay)}
            assert jobs["diag.request"].status is JobStatus.FAILED
            assert (jobs["diag.request"].error or "").startswith("console_gone")
            assert jobs["script.run"].status is JobStatus.UNKNOWN
            # the script ends at the till: the job says how, though nobody watches any more
            await agent.reply(
                m.ScriptFinished(id=rid, job_id="j", status="succeeded", finished_at=2.0)
            )
            # the relay handles an agent's frames in order: the ack comes once the job is settled
            await agent.reply(m.Heartbeat(seq=2, sent_at=2.0))
            (ack,) = await agent.next()
            assert isinstance(ack, m.HeartbeatAck)
            assert relay.state.router.orphans == 0
        jobs = {job.kind: job for job in await _jobs(relay)}
        assert jobs["script.run"].status is JobStatus.SUCCEEDED
        # and audited: each request's end is in the chain, which still verifies
        actions = await relay.audit_actions()
        assert ("diag.request.finished", "failed", f"device:{device_id}") in actions
        assert ("script.run.finished", "unknown", f"device:{device_id}") in actions
        assert ("script.run.reconciled", "ok", f"device:{device_id}") in actions
        await _chain_ok(relay)
    finally:
        await relay.server.close()


async def test_agent_that_stops_reading_is_disconnected_and_requests_fail_clearly(
    tmp_path: Path,
) -> None:
    # The device's outbox is bounded too: requests to an agent that reads nothing fill the socket
    # buffers and then its outbox; the request that finds it full is answered "unavailable" (its
    # job failed) and the agent is closed with 4008, not buffered without limit.
    relay = await start_relay(
        tmp_path, max_outbox=2, console_burst=400, console_max_in_flight=256, request_timeout=60
    )
    big = {f"p{i}": "x" * 4000 for i in range(60)}  # about 240 KB a request
    try:
        device_id, key = await relay.enrol()
        async with Agent(relay, device_id, key) as agent, Console(relay) as console:
            assert agent.ws is not None
            answers: list[m.Message] = []
            for rid in range(1, 200):
                await console.request(
                    m.ScriptRunRequest(
                        id=rid, device_id=device_id, script="s", version="1", params=big
                    )
                )
                with contextlib.suppress(TimeoutError):
                    answers += await console.next(timeout=0.05)
                if answers:
                    break
            assert [(a.TAG, a.code) for a in answers] == [("error", "unavailable")]  # type: ignore[attr-defined]
            assert await close_code(agent.ws, timeout=30) == 4008
        await wait_until(lambda: relay.state.router.routes_in_flight == 0)
        # the jobs of the routes the closed link ended are written after their routes are gone
        # (finish_route), and have no event to await: poll the stored jobs until none is pending
        async with asyncio.timeout(10):
            while JobStatus.PENDING in (statuses := [j.status for j in await _jobs(relay)]):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        # the refused one failed; the scripts lost with the link may have run: unknown
        assert statuses.count(JobStatus.FAILED) == 1
        assert set(statuses) == {JobStatus.FAILED, JobStatus.UNKNOWN}
    finally:
        await relay.server.close()


async def test_presence_records_last_seen_and_agent_version(relay: Relay) -> None:
    device_id, key = await relay.enrol()

    async def listed() -> dict[str, object]:
        _, body = await relay.get("/v1/devices", relay.tokens["tech"])
        devices = body["devices"]
        assert isinstance(devices, list)
        (device,) = devices
        assert isinstance(device, dict)
        return device

    relay.clock.offset = 100
    async with Agent(relay, device_id, key):
        device = await listed()
        assert device["online"] is True
        assert device["agent_version"] == "test-agent"
        connected_seen = device["last_seen"]
        assert isinstance(connected_seen, float)
        relay.clock.offset = 200  # the agent stays a while, then leaves
    await wait_until(lambda: relay.state.router.agent(device_id) is None)  # the relay saw it go
    device = await listed()  # the listing shows presence not yet written
    assert device["online"] is False
    last_seen = device["last_seen"]
    assert isinstance(last_seen, float)
    assert last_seen >= connected_seen + 99  # recorded again when it disconnected
    await wait_until(
        lambda: not relay.state.presence and not relay.state.writing, timeout=5
    )  # written behind, within ~1 s
    stored = await relay.state.storage.get_device(device_id)
    assert stored.last_seen == last_seen
    assert stored.agent_version == "test-agent"


# --- device facts (docs/protocol.md#device-facts) -------------------------------------------------

FACTS = {
    "hostname": "TILL-01",
    "os": "Windows",
    "os_release": "7",
    "agent_version": "9.9-says-the-device",
    "printers": ({"name": "收银小票", "target": "COM3", "model": "Epson TM-T20III"},),
}
#: FACTS as JSON gives them back (arrays as lists)
FACTS_JSON = {**FACTS, "printers": [dict(FACTS["printers"][0])]}  # type: ignore[index]


async def _listed(relay: Relay, device_id: str, user: str = "tech") -> dict[str, object]:
    _, body = await relay.get("/v1/devices", relay.tokens[user])
    devices = body["devices"]
    assert isinstance(devices, list)
    (device,) = [d for d in devices if d["id"] == device_id]
    assert isinstance(device, dict)
    return device


async def test_agent_facts_reach_the_listing_and_then_the_database(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    other_id, _ = await relay.enrol()
    assert (await _listed(relay, device_id))["facts"] == {}  # nothing known yet
    async with Agent(relay, device_id, key) as agent:
        # naming another device inside the facts changes nothing about which device they describe
        await agent.reply(m.DeviceFacts(facts={**FACTS, "device_id": other_id}))
        await agent.reply(m.Heartbeat(seq=1, sent_at=1.0))
        await agent.next()  # the ack: the relay has handled the facts before it
        device = await _listed(relay, device_id)
        assert device["facts"] == {**FACTS_JSON, "device_id": other_id}  # not yet written
        # self-reported: the agent version shown is the one from hello, not the facts' own
        assert device["agent_version"] == "test-agent"
        await wait_until(
            lambda: not relay.state.presence and not relay.state.writing, timeout=5
        )  # written behind
        stored = await relay.state.storage.get_device(device_id)
        assert stored.facts == {**FACTS_JSON, "device_id": other_id}
        assert stored.agent_version == "test-agent"
        assert (await relay.state.storage.get_device(other_id)).facts == {}
        assert (await _listed(relay, device_id))["facts"] == stored.facts  # now from the database
        # newer facts replace the old ones whole
        await agent.reply(m.DeviceFacts(facts={"hostname": "TILL-02"}))
        await agent.reply(m.Heartbeat(seq=2, sent_at=2.0))
        await agent.next()
        assert (await _listed(relay, device_id))["facts"] == {"hostname": "TILL-02"}
    await wait_until(lambda: not relay.state.presence and not relay.state.writing, timeout=5)
    assert (await relay.state.storage.get_device(device_id)).facts == {"hostname": "TILL-02"}
    assert (await _listed(relay, device_id, "admin"))["facts"] == {"hostname": "TILL-02"}


def _facts_frame(facts: object) -> bytes:
    frame: bytes = msgpack.packb({"t": "agent.facts", "facts": facts})
    return frame


BAD_FACT_FRAMES = [
    ("string too long", _facts_frame({"hostname": "x" * 257}), "agent.facts"),
    ("too many keys", _facts_frame({f"k{i}": i for i in range(33)}), "agent.facts"),
    ("over the total", _facts_frame({f"k{i}": ["x" * 256] * 16 for i in range(3)}), "agent.facts"),
    ("bytes value", _facts_frame({"hostname": b"TILL"}), "agent.facts"),
    ("bytes key", _facts_frame({b"hostname": "TILL"}), "agent.facts"),
    ("terminal escape", _facts_frame({"hostname": "\x1b]0;pwned\x07"}), "agent.facts"),
    ("nested too deep", _facts_frame({"cpu": {"inner": {"x": 1}}}), "agent.facts"),
    ("list in a list", _facts_frame({"tags": [[1]]}), "agent.facts"),
    ("not a map", _facts_frame(["hostname", "TILL"]), "agent.facts"),
    ("int key", _facts_frame({"cpu": {1: 2}}), None),  # msgpack itself refuses it
]


@pytest.mark.parametrize(
    ("what", "frame", "tag"), BAD_FACT_FRAMES, ids=[b[0] for b in BAD_FACT_FRAMES]
)
async def test_bad_facts_are_refused_audited_and_the_old_facts_kept(
    tmp_path: Path, what: str, frame: bytes, tag: str | None
) -> None:
    relay = await start_relay(tmp_path, presence_interval=3600.0)  # flushed by hand below
    try:
        device_id, key = await relay.enrol()
        async with Agent(relay, device_id, key) as agent:
            await agent.reply(m.DeviceFacts(facts=FACTS))
        await wait_until(lambda: relay.state.router.agent(device_id) is None)
        await relay.state.flush_presence()
        assert (await relay.state.storage.get_device(device_id)).facts == FACTS_JSON
        async with Agent(relay, device_id, key) as agent:
            await agent.reply(m.DeviceFacts(facts={"hostname": "TILL-NEW"}))  # not written yet
            assert agent.ws is not None
            await agent.ws.send(frame)
            assert await close_code(agent.ws) == 1007
        await wait_until(lambda: relay.state.router.agent(device_id) is None)
        # the good facts sent before the bad frame are kept, and nothing of the bad frame
        assert (await _listed(relay, device_id))["facts"] == {"hostname": "TILL-NEW"}
        await relay.state.flush_presence()
        assert (await relay.state.storage.get_device(device_id)).facts == {"hostname": "TILL-NEW"}
        refusals = [r async for r in relay.state.storage.records() if r.action == "agent.message"]
        (refusal,) = refusals
        assert (str(refusal.outcome), refusal.target) == ("refused", f"device:{device_id}")
        assert refusal.detail["reason"] in {"invalid message", "malformed message"}
        assert refusal.detail["close_code"] == 1007
        assert refusal.detail.get("message") == tag
        await _chain_ok(relay)
        async with Agent(relay, device_id, key):  # the device may come back at once
            pass
    finally:
        await relay.server.close()


async def test_bad_first_facts_leave_the_stored_facts_empty(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent:
        assert agent.ws is not None
        await agent.ws.send(_facts_frame({"hostname": "x" * 257}))
        assert await close_code(agent.ws) == 1007
    await wait_until(lambda: not relay.state.presence and not relay.state.writing, timeout=5)
    stored = await relay.state.storage.get_device(device_id)
    assert stored.facts == {}
    assert stored.last_seen is not None  # the connection itself is still recorded


async def test_facts_from_a_version_1_agent_are_refused(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key, versions=(1,)) as agent:
        assert agent.session is not None
        assert agent.session.version == 1
        assert agent.ws is not None
        await agent.ws.send(CODEC.encode(m.DeviceFacts(facts=FACTS)))
        assert await close_code(agent.ws) == 1002
    await wait_until(lambda: not relay.state.presence and not relay.state.writing, timeout=5)
    assert (await relay.state.storage.get_device(device_id)).facts == {}
    assert ("agent.message", "refused", f"device:{device_id}") in await relay.audit_actions()


async def test_presence_kept_when_a_flush_fails_keeps_facts_noted_meanwhile(
    tmp_path: Path,
) -> None:
    relay = await start_relay(tmp_path, presence_interval=3600.0)  # flushed by hand below
    state = relay.state
    served = state.storage
    impatient = open_storage(state.config.database, busy_timeout=0.2)
    try:
        device_id, _ = await relay.enrol()
        state.seen(device_id, "agent/2", facts={"hostname": "TILL-01"})
        state.storage = impatient
        locker = sqlite3.connect(relay.state.config.data_dir / "relay.db", isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # another writer holds the database
        try:
            flush = asyncio.ensure_future(state.flush_presence())
            await wait_until(lambda: not state.presence)  # the flush took the batch: on the lock
            pending = state.pending(device_id)  # still listed while being written
            assert pending is not None
            assert pending[1:] == ("agent/2", {"hostname": "TILL-01"})
            state.seen(device_id)  # the device is seen again meanwhile, with nothing new
            with pytest.raises(StorageError):
                await flush
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        seen_at, version, facts = state.presence[device_id]
        assert (version, facts) == ("agent/2", {"hostname": "TILL-01"})  # nothing lost
        await state.flush_presence()
        stored = await served.get_device(device_id)
        assert (stored.last_seen, stored.agent_version) == (seen_at, "agent/2")
        assert stored.facts == {"hostname": "TILL-01"}
    finally:
        state.storage = served
        await impatient.close()
        await relay.server.close()


async def test_heartbeats_move_last_seen_at_most_once_a_minute(tmp_path: Path) -> None:
    """A till online for a while shows a recent last seen, not its connect time; its heartbeats
    add at most one presence write a minute (issue 15: 1,000s of tills beat)."""
    relay = await start_relay(tmp_path, presence_interval=3600.0)  # flushed by hand below
    state = relay.state
    try:
        device_id, key = await relay.enrol()
        async with Agent(relay, device_id, key) as agent:
            await state.flush_presence()
            connected = (await state.storage.get_device(device_id)).last_seen
            assert connected is not None
            writes: list[set[str]] = []
            record = state.storage.record_presences

            async def counted(seen: Any) -> None:
                writes.append(set(seen))
                await record(seen)

            state.storage.record_presences = counted  # type: ignore[method-assign]
            for seq in range(1, 4):  # three beats within the minute: nothing new to write
                relay.clock.offset += 15.0
                await agent.reply(m.Heartbeat(seq=seq, sent_at=1.0))
                assert isinstance((await agent.next())[0], m.HeartbeatAck)
            assert device_id not in state.presence
            await state.flush_presence()
            assert writes == [set()]
            assert (await _listed(relay, device_id))["last_seen"] == connected
            relay.clock.offset += 16.0  # 61 s online: the next beat moves last seen
            await agent.reply(m.Heartbeat(seq=4, sent_at=1.0))
            assert isinstance((await agent.next())[0], m.HeartbeatAck)
            shown = (await _listed(relay, device_id))["last_seen"]  # before any write
            assert isinstance(shown, float)
            assert shown >= connected + 61.0
            await state.flush_presence()
            assert writes[-1] == {device_id}
            assert (await state.storage.get_device(device_id)).last_seen == shown
            relay.clock.offset += 1.0  # and the beat after it writes nothing again
            await agent.reply(m.Heartbeat(seq=5, sent_at=1.0))
            assert isinstance((await agent.next())[0], m.HeartbeatAck)
            assert device_id not in state.presence
    finally:
        await relay.server.close()
