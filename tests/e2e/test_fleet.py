"""posassist-fleet against a real relay process: enrolment with real tokens, real sign-ins,
diagnostics and scripts answered to a real console, alerts stored, restart-all reconnects; and
the bad inputs it must refuse before a byte is sent (relay/fleet.py, docs/fleet.md)."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from posassist.console.connection import ConsoleConnection
from posassist.protocol import messages as m
from tests.e2e.cli import (
    ROOT,
    admin_token,
    api,
    communicate,
    invite,
    lines,
    provision,
    start_relay,
    stop,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow


def fleet(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "posassist.relay.fleet", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def fleet_run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "posassist.relay.fleet", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def next_event(proc: subprocess.Popen[str], kind: str, within: float = 60.0) -> dict[str, Any]:
    """The fleet's next JSON line of ``kind`` (its stdout is the event stream)."""
    deadline = time.monotonic() + within
    while line := lines(proc).readline(max(0.0, deadline - time.monotonic())):
        event: dict[str, Any] = json.loads(line)
        if event["event"] == kind:
            return event
    proc.kill()
    _, err = communicate(proc, 15)
    raise AssertionError(f"no {kind} event from the fleet: {err[-2000:]}")


@pytest.fixture
def relay(tmp_path: Path):
    data = tmp_path / "relay"
    store = provision(data)
    proc, url = start_relay(data)
    yield data, store, url
    stop(proc)


async def test_fifty_tills_enrol_connect_answer_raise_alerts_and_reconnect_after_restart(
    relay: tuple[Path, str, str], tmp_path: Path
) -> None:
    data, store, url = relay
    ids = tmp_path / "ids"
    proc = fleet(
        "--relay", url, "--identities", str(ids), "--enrol", "50", "--store", store,
        "--password-file", str(data / "admin.pw"), "--duration", "120", "--alert-rate", "60",
        "--processes", "2",
    )  # fmt: skip
    try:
        assert next_event(proc, "enrolled")["tills"] == 50
        first = next_event(proc, "all_connected")
        assert first["agents"] == 50
        token = await admin_token(url)
        devices = await api(url, token, "GET", "/v1/devices")
        assert len(devices["devices"]) == 50
        # each till is a folder in the agent's own format
        saved = {json.loads((d / "agent.json").read_text())["device_id"] for d in ids.iterdir()}
        assert saved == {d["id"] for d in devices["devices"]}
        device = sorted(saved)[7]
        async with ConsoleConnection.open(url, token) as console:
            replies = [
                r
                async for r in console.request(
                    m.DiagnosticsRequest(id=console.session.next_id(), device_id=device)
                )
            ]
            (report,) = replies
            assert isinstance(report, m.DiagnosticsReport)
            assert report.device_id == device
            assert report.sections["printers"]["data"]["printers"][0]["online"] is True
            run = [
                r
                async for r in console.request(
                    m.ScriptRunRequest(
                        id=console.session.next_id(),
                        device_id=device,
                        script="clear-print-queue",
                        version="1",
                    )
                )
            ]
        kinds = [type(r) for r in run]
        assert kinds[0] is m.ScriptStarted
        assert m.ScriptOutput in kinds
        assert isinstance(run[-1], m.ScriptFinished)
        assert run[-1].status == "succeeded"
        # 50 tills x one alert a second: alerts reach the relay's store, acknowledged
        acked = 0
        while acked < 20:
            acked = sum(
                next_event(proc, "status")["alerts_acked"] for _ in range(2)
            )  # one line from each process
        alerts = await api(url, token, "GET", "/v1/alerts")
        assert {a["device_id"] for a in alerts["alerts"]} <= saved
        assert alerts["alerts"]
        # everyone at once: every till drops and signs in again
        proc.send_signal(signal.SIGUSR1)
        again = next_event(proc, "all_connected")
        assert again["agents"] == 50
        assert again["generation"] == 1
        health = await api(url, token, "GET", "/healthz")
        assert health["agents"] == 50
    finally:
        proc.terminate()
        out, _err = communicate(proc, 30)
    done = [json.loads(line) for line in out.splitlines() if '"done"' in line]
    assert sum(d["authenticated"] for d in done) >= 100  # 50, and 50 again after the restart
    assert sum(d["refused"] for d in done) == 0
    # each acknowledged alert's round trip is in the done lines, in milliseconds
    latencies = [ms for d in done for ms in d["alert_ms"]]
    assert len(latencies) == sum(d["alerts_acked"] for d in done) >= 20
    assert all(ms > 0 for ms in latencies)


def test_saved_identities_are_loaded_again(relay: tuple[Path, str, str], tmp_path: Path) -> None:
    data, store, url = relay
    ids = tmp_path / "ids"
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(invite(data, store, url) for _ in range(3)) + "\n")
    enrolled = fleet("--relay", url, "--identities", str(ids), "--tokens", str(tokens),
                     "--duration", "30")  # fmt: skip
    try:
        assert next_event(enrolled, "all_connected")["agents"] == 3
    finally:
        enrolled.terminate()
        communicate(enrolled, 30)
    again = fleet("--relay", url, "--identities", str(ids), "--duration", "30", "--agents", "2")
    try:
        assert next_event(again, "all_connected")["agents"] == 2
    finally:
        again.terminate()
        communicate(again, 30)
    # the tokens were used once: enrolling with them again is refused, nothing new is made
    refused = fleet_run("--relay", url, "--identities", str(ids), "--tokens", str(tokens))
    assert refused.returncode == 2
    assert "中继拒绝了注册" in refused.stderr
    assert "refused the enrolment" in refused.stderr
    assert len(list(ids.iterdir())) == 3


async def test_more_tills_than_one_address_may_enrol_at_once_wait_and_all_are_saved(
    relay: tuple[Path, str, str], tmp_path: Path
) -> None:
    """From one address the relay enrols 10 at once, then one per 5 s (429 + Retry-After,
    docs/relay.md): the fleet waits as asked, and every till the relay enrolled is saved."""
    data, store, url = relay
    ids = tmp_path / "ids"
    result = await asyncio.to_thread(
        fleet_run, "--relay", url, "--identities", str(ids), "--enrol", "12", "--single-address",
        "--store", store, "--password-file", str(data / "admin.pw"), "--enrol-only",
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    enrolled = json.loads(result.stdout)
    assert enrolled["event"] == "enrolled"
    assert enrolled["tills"] == 12
    assert enrolled["retried"] >= 2  # the 11th and 12th were told to wait, at least once each
    token = await admin_token(url)
    devices = await api(url, token, "GET", "/v1/devices")
    saved = {json.loads((d / "agent.json").read_text())["device_id"] for d in ids.iterdir()}
    assert len(saved) == 12
    assert saved == {d["id"] for d in devices["devices"]}


async def test_a_refused_token_leaves_the_tills_enrolled_beside_it_saved(
    relay: tuple[Path, str, str], tmp_path: Path
) -> None:
    data, store, url = relay
    used = invite(data, store, url)
    first = tmp_path / "first.txt"
    first.write_text(used + "\n")
    assert fleet_run("--relay", url, "--identities", str(tmp_path / "a"), "--tokens", str(first),
                     "--enrol-only").returncode == 0  # fmt: skip
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join([invite(data, store, url), used, invite(data, store, url)]))
    ids = tmp_path / "b"
    result = await asyncio.to_thread(
        fleet_run, "--relay", url, "--identities", str(ids), "--tokens", str(tokens), "--enrol-only"
    )
    assert result.returncode == 2
    assert "refused the enrolment" in result.stderr
    assert "2 tills enrolled before it are saved" in result.stderr
    token = await admin_token(url)
    devices = {d["id"] for d in (await api(url, token, "GET", "/v1/devices"))["devices"]}
    saved = {
        json.loads((d / "agent.json").read_text())["device_id"]
        for d in [*ids.iterdir(), *(tmp_path / "a").iterdir()]
    }
    assert len(saved) == 3
    assert saved == devices


def test_new_tills_are_numbered_after_the_highest_folder_not_into_a_gap(tmp_path: Path) -> None:
    from posassist.relay.fleet import _prepare_folder

    ids = tmp_path / "ids"
    assert _prepare_folder(ids) == 0
    for name in ("00000", "00002"):
        (ids / name).mkdir()
    assert _prepare_folder(ids) == 3  # 00001 is missing: counting would hand out 00002 again


@pytest.mark.parametrize(
    "address",
    ["ws://10.0.0.1:8765", "ws://192.0.2.7:80", "ws://example.com:8765", "http://127.0.0.1:1",
     "ws://127.0.0.1", "ws://127.0.0.2:8765", "not a url"],
)  # fmt: skip
def test_a_relay_not_on_this_machine_is_refused_before_anything_is_made(
    address: str, tmp_path: Path
) -> None:
    ids = tmp_path / "ids"
    result = fleet_run("--relay", address, "--identities", str(ids), "--enrol", "5",
                       "--store", "sto_x", "--password-file", str(tmp_path / "pw"))  # fmt: skip
    assert result.returncode == 2
    assert "错误" in result.stderr
    assert "error:" in result.stderr
    assert not ids.exists()
    assert result.stdout == ""


def test_a_bad_identities_folder_is_refused_and_nothing_connects(
    relay: tuple[Path, str, str], tmp_path: Path
) -> None:
    _data, _store, url = relay
    missing = fleet_run("--relay", url, "--identities", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert "不存在" in missing.stderr
    assert "does not exist" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = fleet_run("--relay", url, "--identities", str(empty))
    assert nothing.returncode == 2
    assert "no till identities" in nothing.stderr
    broken = tmp_path / "broken"
    (broken / "00000").mkdir(parents=True)
    (broken / "00000" / "agent.json").write_text("{not json")
    damaged = fleet_run("--relay", url, "--identities", str(broken))
    assert damaged.returncode == 2
    assert "不是可用的终端身份" in damaged.stderr
    assert "is not a usable identity" in damaged.stderr
    for result in (missing, nothing, damaged):
        assert result.stdout == ""  # no status line: no till was started


def test_identities_of_another_relay_are_refused(
    relay: tuple[Path, str, str], tmp_path: Path
) -> None:
    data, store, url = relay
    ids = tmp_path / "ids"
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(invite(data, store, url))
    made = fleet("--relay", url, "--identities", str(ids), "--tokens", str(tokens),
                 "--duration", "30")  # fmt: skip
    try:
        next_event(made, "all_connected")
    finally:
        made.terminate()
        communicate(made, 30)
    other = url.rsplit(":", 1)[0] + ":1"
    result = fleet_run("--relay", other, "--identities", str(ids))
    assert result.returncode == 2
    assert "another relay" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "option",
    [["--agents", "0"], ["--agents", "-3"], ["--agents", "50001"], ["--processes", "0"],
     ["--enrol", "0"], ["--enrol", "-1"], ["--duration", "0"], ["--duration", "-5"],
     ["--duration", "nan"], ["--duration", "90000"], ["--alert-rate", "-1"],
     ["--connect-concurrency", "0"], ["--agents", "ten"]],
)  # fmt: skip
def test_zero_negative_and_unbounded_counts_are_refused(option: list[str], tmp_path: Path) -> None:
    ids = tmp_path / "ids"
    result = fleet_run("--relay", "ws://127.0.0.1:9", "--identities", str(ids), *option)
    assert result.returncode == 2
    assert option[0] in result.stderr
    assert "/" in result.stderr  # zh-CN / English
    assert not ids.exists()


def test_more_agents_than_identities_is_refused(
    relay: tuple[Path, str, str], tmp_path: Path
) -> None:
    data, store, url = relay
    ids = tmp_path / "ids"
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(invite(data, store, url))
    made = fleet("--relay", url, "--identities", str(ids), "--tokens", str(tokens),
                 "--duration", "30")  # fmt: skip
    try:
        next_event(made, "all_connected")
    finally:
        made.terminate()
        communicate(made, 30)
    result = fleet_run("--relay", url, "--identities", str(ids), "--agents", "5")
    assert result.returncode == 2
    assert "holds 1 identities" in result.stderr
    assert result.stdout == ""


def test_tills_enrol_and_connect_to_a_relay_on_ipv6_loopback(tmp_path: Path) -> None:
    """A relay on ::1 says ws://[::1]:PORT (it said ws://::1:PORT, which no client can use), and
    the fleet enrols and connects there (from ::1 itself: no per-store addresses on IPv6)."""
    data = tmp_path / "relay"
    store = provision(data)
    proc, url = start_relay(data, "--host", "::1")
    try:
        assert url.startswith("ws://[::1]:")
        run = fleet("--relay", url, "--identities", str(tmp_path / "ids"), "--enrol", "3",
                    "--store", store, "--password-file", str(data / "admin.pw"),
                    "--duration", "30")  # fmt: skip
        try:
            assert next_event(run, "all_connected")["agents"] == 3
        finally:
            run.terminate()
            communicate(run, 30)
    finally:
        stop(proc)


def test_a_till_the_fleet_writes_is_one_the_agent_loads(tmp_path: Path) -> None:
    """The fleet keeps the agent's identity format itself (the relay may not import the agent):
    what it writes, the agent's own loader reads as the same key and settings, and back."""
    from posassist.agent.config import load_identity as agent_load
    from posassist.protocol import signing
    from posassist.relay.fleet import Identity, load_identity, write_identity

    key = signing.generate_private_key()
    write_identity(tmp_path / "00000", Identity("dev_fleet0", "ws://127.0.0.1:9", key))
    loaded = agent_load(tmp_path / "00000")
    assert (loaded.device_id, loaded.relay_url) == ("dev_fleet0", "ws://127.0.0.1:9")
    payload = b"challenge"
    signing.verify(key.public_key(), loaded.key.sign(payload), payload)
    again = load_identity(tmp_path / "00000")
    assert signing.public_key_to_raw(again.key.public_key()) == signing.public_key_to_raw(
        key.public_key()
    )
    assert (tmp_path / "00000" / "agent.key").stat().st_mode & 0o777 == 0o600


def test_the_fleets_backoff_is_the_agents() -> None:
    import random

    from posassist.agent.backoff import backoff as agent_backoff
    from posassist.relay.fleet import backoff

    for cap in (1.0, 7.5, 60.0):
        random.seed(cap)
        ours = [d for d, _ in zip(backoff(cap), range(12), strict=False)]
        random.seed(cap)
        theirs = [d for d, _ in zip(agent_backoff(cap=cap), range(12), strict=False)]
        assert ours == theirs


def test_the_fleets_schedules_after_going_away_and_retry_after_are_the_agents() -> None:
    import random

    from posassist.agent import backoff as agents
    from posassist.relay import fleet

    assert fleet.GOING_AWAY_JITTER == agents.GOING_AWAY_JITTER
    assert fleet.GOING_AWAY_WINDOW == agents.GOING_AWAY_WINDOW
    assert fleet.MAX_RETRY_AFTER == agents.MAX_RETRY_AFTER
    for seed in range(5):
        random.seed(seed)
        ours = list(itertools.islice(fleet.after_going_away(fleet.backoff(60.0)), 30))
        random.seed(seed)
        theirs = list(itertools.islice(agents.after_going_away(agents.backoff(cap=60.0)), 30))
        assert ours == theirs
        assert max(ours[:5]) <= 2.0
    for value in (None, "", "x", "-1", "nan", "3", "0", "1e9", " 2.5 "):
        for scheduled in (0.1, 4.0, 500.0):
            random.seed(7)
            ours_delay = fleet.retry_after_delay(value, scheduled)
            random.seed(7)
            assert ours_delay == agents.retry_after_delay(value, scheduled), (value, scheduled)
