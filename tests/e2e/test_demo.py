"""``make demo`` runs scripts/demo.py: run it to the end in a private folder and check what it
says it shows (TLS, a verified script run, the logs it keeps, the commands it says to try next,
each run as printed), and that it leaves no process and nothing in the checkout behind."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest
import websockets.exceptions
from websockets.sync.client import connect

from tests.conftest import mode

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.py"


def _demo(data: Path) -> subprocess.CompletedProcess[str]:
    """The demo to its end, in a process group of its own: if it overruns, it and everything it
    started (relay, till, stand-in printer) are killed, not left running after the test."""
    proc = subprocess.Popen(
        [sys.executable, str(DEMO), "--data", str(data)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # nothing left once it ended well
        except ProcessLookupError:
            pass
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _checkout_demo_data() -> tuple[bool, float]:
    default = ROOT / "demo-data"
    return default.exists(), default.stat().st_mtime if default.exists() else 0.0


def test_make_demo_runs_the_demo_script() -> None:
    assert "$(BIN)/python scripts/demo.py" in (ROOT / "Makefile").read_text()


@pytest.mark.slow
@pytest.mark.timeout(300)  # the demo (~35 s alone), then its "try next" commands
@pytest.mark.usefixtures("umask_022")  # the demo and its processes inherit it
def test_demo_runs_to_the_end_and_shows_what_it_claims(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    before = _checkout_demo_data()
    result = _demo(data)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "==> Demo finished / 演示完成" in out
    # the operator's relay and store, on 127.0.0.1
    assert re.search(r"organisation org_[0-9a-f]+ → merchant → store sto_[0-9a-f]+", out), out
    # over TLS: a certificate the demo made, the till and the console pinned to it
    listening = re.search(r"listening on (wss://127\.0\.0\.1:(\d+))", out)
    assert listening is not None, out
    assert (data / "relay" / "relay.url").read_text() == listening[1]
    assert re.search(r"enrolled as device dev_\w+ with wss://127\.0\.0\.1:\d+", out), out
    assert "a plain ws:// connection / 不加密的连接: error: relay unreachable" in out
    printer = re.search(r"printer answering DLE EOT on (127\.0\.0\.1):(\d+)", out)
    assert printer is not None, out
    # the till enrols; the same token a second time is refused by the relay
    (device,) = set(re.findall(r"enrolled as device (dev_[0-9a-f]+)", out))
    assert "this enrolment token was already used: ask support for a new one" in out
    assert re.search(rf"connected to relay relay-\w+ as {device} \(v\d+\)", out), out
    # the technician sees it online, and the printer's paper running low
    (listed,) = [line for line in out.splitlines() if line.startswith(device)]
    assert listed.split()[1] == "yes", listed
    assert f"diagnostics of {device}" in out
    assert "the printer's status bits / 打印机状态: paper_near_end" in out
    assert "finding codes / 诊断代码: printer.paper_near_end" in out  # what is wrong, in words
    assert "audit chain intact" in out
    # issue 12's story: out of paper, the merchant asks in the --text window, a technician takes
    # the ticket, runs the vetted printer test (the merchant approves twice), resolves; rating
    assert "  [till] • 打印机缺纸 (receipt)" in out  # the till's own check, in words
    assert "response / 响应时限: 15m (business time / 营业时间)" in out  # the SLA, from the console
    assert "hours / 营业时间: mon-sun 07:00-23:00" in out
    assert re.search(r"\[till\] 承诺响应时间: \d\d-\d\d \d\d:\d\d \(", out), out  # its promise
    code = re.search(r"\[till\] 求助编号 \(电话中请报此编号\): ([A-Z0-9]{4}-[A-Z0-9]{4})", out)
    assert code is not None, out
    assert re.search(rf"{code[1]}\s+accepted / 已接单\s+printer", out), out
    assert out.count("[consent] approved by the merchant / 商户已同意") == 2
    # the signed script, verified by the till before it ran, and its output
    assert out.count("[verified] signatures verified / 签名已验证: risk B; approvals 1") == 2
    assert "DLE EOT 4 -> 0x7e" in out  # the printer's paper sensor, read by the script on the till
    assert "  [till] 技术员的问题: 红灯是一直亮还是在闪?" in out  # the question reached the till
    assert "商户回复 / the merchant replied" not in out  # (the console's words are English first)
    assert "the merchant replied / 商户回复 一直在闪" in out  # and the answer reached the ticket
    assert "result / 结果: printer 127.0.0.1:" in out
    assert "脱机 / offline; 缺纸 / paper out; 因缺纸停止打印" in out  # the status bits in words
    assert "test receipt sent, cut requested" in out
    assert "  [till] 感谢您的评价!" in out
    assert (data / "report.html").exists()
    [ticket] = json.loads((data / "report.json").read_text())["stores"][0]["tickets"]
    assert (ticket["code"], ticket["rating"], ticket["status"]) == (code[1], 5, "closed")
    # it made its world in the folder given, none in the checkout, and stopped what it started
    assert {p.name for p in data.iterdir()} >= {".posassist-demo", "relay", "noodle-shop-till"}
    # readme-walk F1: every folder it made is private, and so are the password and the key
    for folder in (data, data / "relay", data / "noodle-shop-till", data / "technician"):
        assert mode(folder) == 0o700, folder
    assert mode(data / "tls") == 0o700
    for secret in ("relay/admin.pw", "relay/relay.url", "noodle-shop-till/agent.key"):
        assert mode(data / secret) == 0o600, secret
    assert mode(data / "tls" / "relay.key") == 0o600
    _the_logs_are_kept_and_shown(data, out)
    _every_try_next_command_works_as_printed(data, out, tmp_path, int(listening[2]))
    assert _checkout_demo_data() == before
    left = [
        proc.info["cmdline"]
        for proc in psutil.process_iter(["cmdline"])
        if str(data) in " ".join(proc.info["cmdline"] or ())
    ]
    assert left == []
    with socket.socket() as probe:
        assert probe.connect_ex((printer[1], int(printer[2]))) != 0  # the printer is gone too


def _the_logs_are_kept_and_shown(data: Path, out: str) -> None:
    relay_log = (data / "relay.log").read_text()
    agent_log = (data / "agent.log").read_text()
    assert re.search(r"listening on wss://127\.0\.0\.1:\d+", relay_log), relay_log
    assert "agent dev_" in relay_log  # the till's connection, as the relay saw it
    assert "posassist relay shutting down" in relay_log  # kept to the end
    assert "connected to relay relay-" in agent_log, agent_log
    assert "agent stopped" in agent_log  # kept to the end
    for log in ("relay.log", "agent.log"):  # where they are, and how each ended, at the end
        lines = len((data / log).read_text().splitlines())
        assert f"{data / log} ({lines} lines), the last " in out, out


def _try_next(out: str) -> list[tuple[str, bool]]:
    """The "try next" commands as printed, each with whether it keeps running (its comment says
    Ctrl-C stops it)."""
    block = out.split("==> Try next / 接着试试", 1)[1].split("\n", 1)[1]
    commands: list[tuple[str, bool]] = []
    keeps_running = False
    for line in block.splitlines():
        text = line.strip()
        if text.startswith("#"):
            keeps_running = "Ctrl-C stops it" in text
        elif text:
            commands.append((text, keeps_running))
            keeps_running = False
    return commands


def _wait_for_output(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()}"
        assert time.monotonic() < deadline, f"never said {text!r}: {log.read_text()}"
        time.sleep(0.05)  # polling the output of a process we started


def _every_try_next_command_works_as_printed(
    data: Path, out: str, tmp_path: Path, port: int
) -> None:
    """Each command typed into a shell elsewhere, as printed: the ones that keep running (the
    relay, then the till) until they are ready, the others to exit 0; then Ctrl-C's SIGTERM
    stops the long ones, cleanly. Meanwhile a plain ws:// connection to the relay fails."""
    commands = _try_next(out)
    assert [keeps for _, keeps in commands].count(True) == 2, commands
    assert len(commands) >= 8, commands
    readiness = {"posassist-relay serve": "listening on wss://", "agent run": "connected to relay"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "POSASSIST_HOME"}
    running: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for command, keeps_running in commands:
            if keeps_running:
                log = elsewhere / f"background-{len(running)}.log"
                with log.open("wb") as sink:
                    proc = subprocess.Popen(
                        ["bash", "-c", command],
                        cwd=elsewhere,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                running.append((command, proc))
                (ready,) = [text for key, text in readiness.items() if key in command]
                _wait_for_output(log, ready, proc, 60)
                continue
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=elsewhere,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=90,
            )
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        assert running, "no relay was started by the try next commands"
        with pytest.raises((websockets.exceptions.WebSocketException, OSError)):
            connect(f"ws://127.0.0.1:{port}/v1/agent", open_timeout=10).close()
    finally:
        codes = []
        for command, proc in reversed(running):  # the till first, then the relay
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                codes.append((command, proc.wait(timeout=30)))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                codes.append((command, proc.wait(timeout=30)))
    assert [code for _, code in codes] == [0, 0], codes


def test_demo_refuses_a_folder_it_did_not_make_and_leaves_it_alone(tmp_path: Path) -> None:
    data = tmp_path / "precious"
    data.mkdir()
    (data / "notes.txt").write_text("keep me")
    result = _demo(data)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"demo: {data} is not empty and not an earlier demo's; choose --data"
    )
    assert [p.name for p in data.iterdir()] == ["notes.txt"]
    assert (data / "notes.txt").read_text() == "keep me"
