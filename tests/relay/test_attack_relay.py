"""The relay-side findings of the outside attack (2026-12-05, /work/notes/attack.md), each
performed against a real relay (aiohttp server, real websockets, SQLite): F0, F2, F5, F8, F11."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from typing import TYPE_CHECKING

import pytest

from posassist.protocol import Codec
from posassist.protocol import messages as m
from posassist.protocol.errors import LocalProtocolError
from posassist.relay.audit import AuditRecord, Outcome, verify_store
from posassist.relay.storage import DeviceStatus, JobStatus
from tests.relay.harness import Agent, Console, Relay, close_code, start_relay, wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path)
    yield relay
    await relay.server.close()


async def _revoke_elsewhere(relay: Relay, device_id: str) -> None:
    """What ``posassist-relay device revoke`` does in its own process: the row, then the record."""
    storage = relay.state.storage
    await storage.revoke_device(device_id, now=relay.clock())
    await storage.append(
        actor="operator",
        action="device.revoke",
        target=f"device:{device_id}",
        outcome=Outcome.OK,
        now=relay.clock(),
    )


async def _job_rows(relay: Relay) -> list[tuple[str, str, str | None]]:
    rows = await relay.state.storage.run_read(
        lambda conn: conn.exec_driver_sql("SELECT id, status, error FROM jobs").all()
    )
    return [(str(job_id), str(status), error) for job_id, status, error in rows]


# -- F0: a refused revoke must not disconnect the device -------------------------------------


async def test_a_refused_revoke_of_a_device_out_of_scope_leaves_it_connected(relay: Relay) -> None:
    # techA may act only in store A; the target is a till in the other store.
    theirs, their_key = await relay.enrol(await relay.invite(relay.other_store))
    witness, witness_key = await relay.enrol()
    async with (
        Agent(relay, theirs, their_key) as target,
        Agent(relay, witness, witness_key) as other,
        Console(relay, "admin") as console,
    ):
        for _ in range(2):  # the attacker repeats it
            status, body = await relay.post(
                f"/v1/devices/{theirs}/revoke", {}, relay.tokens["tech"]
            )
            assert status == 403, body
        # A real revocation, written after the refused ones: once the relay's follower has acted
        # on it, it has read past the refused records too (no sleeping).
        await _revoke_elsewhere(relay, witness)
        assert other.ws is not None
        assert await close_code(other.ws, timeout=5) == 4003
        # The target was not touched: still connected, still served.
        assert relay.state.router.agent(theirs) is not None
        await console.request(m.DiagnosticsRequest(id=3, device_id=theirs, timeout=5))
        (request,) = await target.next()
        assert isinstance(request, m.DiagnosticsRequest)
    assert (await relay.state.storage.get_device(theirs)).status is DeviceStatus.ACTIVE
    async with Agent(relay, theirs, their_key):  # and it signs in again as before
        assert relay.state.router.agent(theirs) is not None
    actions = await relay.audit_actions()
    assert actions.count(("device.revoke", "refused", f"device:{theirs}")) == 2
    assert ("device.revoke", "ok", f"device:{theirs}") not in actions


async def test_the_follower_reads_only_revocations_that_were_done(relay: Relay) -> None:
    storage = relay.state.storage
    start = (await storage.head()).seq
    for outcome in (Outcome.REFUSED, Outcome.OK, Outcome.FAILED):
        for action, target in (("device.revoke", "device:dev_x"), ("user.unlock", "user:tech")):
            await storage.append(
                actor="user:tech", action=action, target=target, outcome=outcome, now=relay.clock()
            )
    _, records = await storage.actions_after(start, ("device.revoke", "user.unlock"))
    assert [(r.action, str(r.outcome)) for r in records] == [
        ("device.revoke", "ok"),
        ("user.unlock", "ok"),
    ]


# -- F2: a password set from the command line signs the user's consoles out -----------------


async def test_a_password_set_from_the_command_line_closes_the_users_consoles(
    relay: Relay, tmp_path: Path
) -> None:
    device_id, key = await relay.enrol()
    secret = tmp_path / "new-password"
    secret.write_text("a brand new password\n")
    async with (
        Agent(relay, device_id, key) as agent,
        Console(relay, "tech") as signed_out,
        Console(relay, "viewer") as other,
    ):
        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "posassist.relay",
            "user",
            "password",
            "tech",
            "--data",
            str(tmp_path / "relay"),
            "--password-file",
            str(secret),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await cli.communicate()
        assert cli.returncode == 0, out
        assert b"1 sign-in token(s) revoked" in out
        assert signed_out.ws is not None
        assert await close_code(signed_out.ws, timeout=5) == 4001
        # Only that user's consoles: the viewer's is untouched and still routes.
        await other.request(m.DiagnosticsRequest(id=4, device_id=device_id, timeout=5))
        (request,) = await agent.next()
        assert isinstance(request, m.DiagnosticsRequest)
        assert other.ws is not None
        assert other.ws.close_code is None
    assert ("console.sign_in_ended", "ok", "user:tech") in await relay.audit_actions()
    # The new password signs in; the old one does not.
    status, _ = await relay.post("/v1/login", {"username": "tech", "password": "x" * 12})
    assert status == 401
    status, _ = await relay.post(
        "/v1/login", {"username": "tech", "password": "a brand new password"}
    )
    assert status == 200


async def test_a_sign_out_elsewhere_closes_a_console_here(relay: Relay) -> None:
    # Another relay on the same database signs the token out: this one learns it from storage.
    async with Console(relay, "tech") as console:
        await relay.state.storage.revoke_token(relay.tokens["tech"], now=relay.clock())
        assert console.ws is not None
        assert await close_code(console.ws, timeout=5) == 4001
    await wait_until(lambda: not relay.state.console_tokens)


# -- F5: a job whose device is revoked ends, it does not stay unknown --------------------------


async def test_revoking_a_device_mid_run_fails_its_job_device_revoked(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        await console.request(
            m.ScriptRunRequest(id=9, device_id=device_id, script="printer-status", version="1")
        )
        (request,) = await agent.next()
        await agent.reply(m.ScriptStarted(id=request.id, job_id="j", started_at=1.0))  # type: ignore[attr-defined]
        (started,) = await console.next()
        assert isinstance(started, m.ScriptStarted)
        status, body = await relay.post(
            f"/v1/devices/{device_id}/revoke", {}, relay.tokens["admin"]
        )
        assert status == 200, body
        assert agent.ws is not None
        assert await close_code(agent.ws) == 4003
        (error,) = await console.next()
        assert isinstance(error, m.ErrorReply)
        assert (error.id, error.code) == (9, "device_revoked")
    await wait_until(lambda: relay.state.router.routes_in_flight == 0)
    ((_, job_status, job_error),) = await _job_rows(relay)
    assert JobStatus(job_status) is JobStatus.FAILED
    assert job_error is not None
    assert job_error.startswith("device_revoked")
    assert ("script.run.finished", "failed", f"device:{device_id}") in await relay.audit_actions()


async def test_a_job_left_unknown_ends_when_its_device_is_revoked_elsewhere(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    witness, witness_key = await relay.enrol()
    async with Console(relay) as console:
        async with Agent(relay, device_id, key) as agent:
            await console.request(
                m.ScriptRunRequest(id=5, device_id=device_id, script="printer-status", version="1")
            )
            (request,) = await agent.next()
            await agent.reply(m.ScriptStarted(id=request.id, job_id="j", started_at=1.0))  # type: ignore[attr-defined]
            (started,) = await console.next()
            assert isinstance(started, m.ScriptStarted)
        (error,) = await console.next()  # the till left mid-run: unknown, reconciled later...
        assert isinstance(error, m.ErrorReply)
        assert error.code == "outcome_unknown"
    await wait_until(lambda: relay.state.router.routes_in_flight == 0)
    ((_, job_status, _),) = await _job_rows(relay)
    assert JobStatus(job_status) is JobStatus.UNKNOWN
    # ...but it is revoked from the command line and will never reconnect.
    async with Agent(relay, witness, witness_key):
        await _revoke_elsewhere(relay, device_id)

        async def ended() -> bool:
            ((_, status, _),) = await _job_rows(relay)
            return JobStatus(status) is JobStatus.FAILED

        deadline = asyncio.get_running_loop().time() + 5
        while not await ended():
            assert asyncio.get_running_loop().time() < deadline, "job still unknown"
            await asyncio.sleep(0.05)  # polling a condition with a deadline
    ((_, _, job_error),) = await _job_rows(relay)
    assert job_error is not None
    assert job_error.startswith("device_revoked")
    assert ("script.run.reconciled", "failed", f"device:{device_id}") in await relay.audit_actions()


# -- F8: a reply that no longer fits once re-numbered for the console ---------------------------


async def _report_at_the_frame_limit(relay: Relay, request: m.Message) -> m.DiagnosticsReport:
    """A report whose frame under the relay's request id is the biggest the relay takes in
    (aiohttp's ``max_msg_size`` refuses a message of exactly the limit: one byte under)."""
    codec = Codec()
    limit = relay.state.config.limits.max_frame - 1
    request_id: int = getattr(request, "id")  # noqa: B009
    device_id: str = getattr(request, "device_id")  # noqa: B009

    def report(size: int) -> m.DiagnosticsReport:
        # strings of at most 200 KB each (the codec's string limit is 256 KiB)
        pads = {f"x{i}": "a" * 200_000 for i in range(size // 200_000)}
        pads["rest"] = "a" * (size % 200_000)
        sections = {"pad": {"ok": True, "data": pads}}
        return m.DiagnosticsReport(
            id=request_id, device_id=device_id, collected_at=1.0, sections=sections
        )

    first = len(codec.encode(report(limit - 200)))
    exact = report(limit - 200 + (limit - first))
    assert len(codec.encode(exact)) == limit
    with pytest.raises(LocalProtocolError):  # 8 more bytes of request id (2**62): too big
        codec.encode_with_id(exact, 2**62)
    return exact


@pytest.mark.parametrize(("console_id", "fits"), [(7, True), (2**62, False)])
async def test_a_reply_at_the_frame_limit_reaches_the_console_or_fails_the_job_clearly(
    relay: Relay, console_id: int, fits: bool
) -> None:
    device_id, key = await relay.enrol()
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        await console.request(m.DiagnosticsRequest(id=console_id, device_id=device_id, timeout=20))
        (request,) = await agent.next()
        await agent.reply(await _report_at_the_frame_limit(relay, request))
        (answer,) = await console.next()  # at once, not after the console's own timeout
        assert getattr(answer, "id") == console_id  # noqa: B009
        if fits:  # one id byte each way: forwarded whole
            assert isinstance(answer, m.DiagnosticsReport)
        else:  # 8 more id bytes: over the limit, said so
            assert isinstance(answer, m.ErrorReply)
            assert answer.code == "too_big"
        # the agent keeps its connection and is served
        await console.request(m.DiagnosticsRequest(id=9, device_id=device_id, timeout=5))
        (again,) = await agent.next()
        assert isinstance(again, m.DiagnosticsRequest)
    await wait_until(lambda: relay.state.router.routes_in_flight == 0)
    statuses = {status for _, status, _ in await _job_rows(relay)}
    actions = await relay.audit_actions()
    finished = ("diag.request.finished", "ok" if fits else "failed", f"device:{device_id}")
    assert finished in actions
    if not fits:
        assert JobStatus.FAILED.value in statuses
        errors = [error for _, status, error in await _job_rows(relay) if error]
        assert any(error.startswith("too_big") for error in errors)


# -- F11: what a console or a till sends is bounded in the audit chain --------------------------


async def _audit_bytes_after(relay: Relay, seq: int) -> tuple[int, list[AuditRecord]]:
    records = [r async for r in relay.state.storage.records(start_seq=seq + 1)]
    return sum(len(json.dumps(r.detail)) for r in records), records


async def test_twenty_requests_with_the_most_params_allowed_grow_the_audit_by_a_bounded_amount(
    relay: Relay,
) -> None:
    device_id, key = await relay.enrol()
    # The most the protocol lets through (64 values of 4096 characters, 256 KB); more is refused
    # at the relay (test_relay_core.py test_oversized_script_params_close_the_console...).
    big = {f"p{i}": chr(ord("a") + i % 26) * 4096 for i in range(64)}
    start = (await relay.state.storage.head()).seq
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        for n in range(1, 21):
            await console.request(
                m.ScriptRunRequest(
                    id=n, device_id=device_id, script="printer-status", version="1", params=big
                )
            )
            (request,) = await agent.next()
            assert isinstance(request, m.ScriptRunRequest)
            assert request.params == big  # the till still gets the request whole
            await agent.reply(m.ErrorReply(id=request.id, code="unsupported", message="no"))
            (answer,) = await console.next()
            assert isinstance(answer, m.ErrorReply)
    size, records = await _audit_bytes_after(relay, start)
    runs = [r for r in records if r.action == "script.run"]
    assert len(runs) == 20  # every request is still audited...
    assert size < 20 * 2 * 8_000  # ...in a few KB each, not 1 MB
    params = runs[0].detail["params"]
    digest = hashlib.sha256(big["p0"].encode()).hexdigest()[:16]
    assert params["p0"].endswith(f"[4096 chars, sha256:{digest}]")  # which value it was
    assert params["p0"].startswith("a" * 256)
    assert (await verify_store(relay.state.storage)).ok  # the chain stays whole


async def test_a_tills_huge_progress_detail_is_audited_bounded(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    start = (await relay.state.storage.head()).seq
    async with Agent(relay, device_id, key) as agent, Console(relay) as console:
        await console.request(
            m.ScriptRunRequest(id=3, device_id=device_id, script="printer-status", version="1")
        )
        (request,) = await agent.next()
        rid: int = getattr(request, "id")  # noqa: B009
        huge = {f"k{i}": "x" * 200_000 for i in range(4)}
        for _ in range(10):
            await agent.reply(
                m.ScriptProgress(id=rid, job_id="j", step="backup_made", detail=huge, at=1.0)
            )
        await agent.reply(m.ErrorReply(id=rid, code="failed", message="no"))
        replies: list[m.Message] = []
        while not any(isinstance(r, m.ErrorReply) for r in replies):
            replies += await console.next()
    size, records = await _audit_bytes_after(relay, start)
    steps = [r for r in records if r.action == "script.run.backup_made"]
    assert len(steps) == 10  # each step is audited...
    assert size < 12 * 8_000  # ...bounded, not 8 MB
    assert steps[0].detail["agent"]["k0"].startswith("x" * 256)


async def test_the_token_recheck_reads_many_consoles_in_batches(relay: Relay) -> None:
    live = hashlib.sha256(relay.tokens["viewer"].encode()).digest()
    unknown = [hashlib.sha256(str(n).encode()).digest() for n in range(1200)]
    await relay.state.storage.revoke_token(relay.tokens["tech"], now=relay.clock())
    revoked = hashlib.sha256(relay.tokens["tech"].encode()).digest()
    ended = await relay.state.storage.revoked_tokens([live, revoked, *unknown])
    assert ended.pop(revoked) == "tech"
    assert ended == dict.fromkeys(unknown, "")  # gone rows too; the live token is not there
