"""``make demo`` runs scripts/demo.py: run it to the end in a private folder and check what it
says it shows, and that it leaves no process and nothing in the checkout behind."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from tests.conftest import mode

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.py"


def _demo(data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEMO), "--data", str(data)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _checkout_demo_data() -> tuple[bool, float]:
    default = ROOT / "demo-data"
    return default.exists(), default.stat().st_mtime if default.exists() else 0.0


def test_make_demo_runs_the_demo_script() -> None:
    assert "$(BIN)/python scripts/demo.py" in (ROOT / "Makefile").read_text()


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
    assert re.search(r"listening on ws://127\.0\.0\.1:\d+", out), out
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
    assert "response / 响应时限: 15m (business time)" in out  # the SLA, set from the console
    assert "hours / 营业时间: mon-sun 07:00-23:00" in out
    assert re.search(r"\[till\] 承诺响应时间: \d\d-\d\d \d\d:\d\d \(", out), out  # its promise
    code = re.search(r"\[till\] 求助编号 \(电话中请报此编号\): ([A-Z0-9]{4}-[A-Z0-9]{4})", out)
    assert code is not None, out
    assert re.search(rf"{code[1]}\s+accepted / 已接单\s+printer", out), out
    assert out.count("[consent] approved by the merchant / 商户已同意") == 2
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
    for secret in ("relay/admin.pw", "relay/relay.url", "noodle-shop-till/agent.key"):
        assert mode(data / secret) == 0o600, secret
    assert _checkout_demo_data() == before
    left = [
        proc.info["cmdline"]
        for proc in psutil.process_iter(["cmdline"])
        if str(data) in " ".join(proc.info["cmdline"] or ())
    ]
    assert left == []
    with socket.socket() as probe:
        assert probe.connect_ex((printer[1], int(printer[2]))) != 0  # the printer is gone too


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
