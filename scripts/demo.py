"""``make demo``: a relay, a store till with a simulated receipt printer, and a technician.

The story: the till enrols, the technician sees it and its printer's paper running low; then the
paper runs out, the merchant asks for help in the ``--text`` help window (driven here as a
cashier would type), the technician takes the ticket and runs the signed printer test, which the
merchant approves; paper loaded, a test receipt, the ticket resolved and rated, the merchant's
service report written, the audit chain verified.

Everything runs on 127.0.0.1 from a throw-away folder (demo-data/ in the checkout, or
``--data DIR``), with the relay's embedded SQLite: no database server or any other service is
needed. The folder is emptied first, so it must be empty, missing, or an earlier demo's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from posassist.client.files import private_dir, write_private

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "demo-data"
#: The noodle shop's hours: the SLA's clocks count only while it is open.
_HOURS = "daily 07:00-23:00"
MARKER = ".posassist-demo"  # marks a folder the demo made, and so may empty again
PY = sys.executable
ENV = dict(os.environ, PYTHONUNBUFFERED="1")


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _module(name: str) -> str:
    """``relay`` → ``posassist.relay``; other modules (the simulated printer) as given."""
    return "posassist." + name if name in ("relay", "agent", "console") else name


def run(*args: str, show: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [PY, "-m", _module(args[0]), *args[1:]],
        cwd=ROOT,
        env=ENV,
        text=True,
        capture_output=True,
        timeout=120,
    )
    if show and result.stdout.strip():
        print(result.stdout.rstrip())
    if result.returncode != 0:
        print(result.stderr.rstrip(), file=sys.stderr)
        raise SystemExit(f"demo: `{' '.join(args[:3])} …` failed ({result.returncode})")
    return result


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-m", _module(args[0]), *args[1:]],
        cwd=ROOT,
        env=ENV,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def wait_for_file(path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise SystemExit(f"demo: {path} did not appear in {timeout}s")


def _fresh(data: Path) -> None:
    """Empty ``data`` for a new demo; refuse a folder with something in it the demo didn't make."""
    mine = data == DATA.resolve() or (data / MARKER).exists()
    if data.exists() and any(data.iterdir()) and not mine:
        raise SystemExit(f"demo: {data} is not empty and not an earlier demo's; choose --data")
    shutil.rmtree(data, ignore_errors=True)
    private_dir(data)
    (data / MARKER).write_text("made by scripts/demo.py; emptied by the next demo\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="make demo: the whole system on 127.0.0.1")
    parser.add_argument("--data", type=Path, default=DATA, help="the demo's folder (demo-data/)")
    data = parser.parse_args(argv).data.resolve()
    _fresh(data)
    ENV["POSASSIST_HOME"] = str(data / "technician")
    relay_dir, till_dir = data / "relay", data / "noodle-shop-till"
    write_private(relay_dir / "admin.pw", "demo-admin-password")  # in a new 0700 relay/
    children: list[subprocess.Popen[str]] = []
    try:
        step("The operator sets up the relay (embedded SQLite) and a store")
        run(
            "relay",
            "init",
            "--data",
            str(relay_dir),
            "--admin-password-file",
            str(relay_dir / "admin.pw"),
        )
        org = run(
            "relay",
            "organisation",
            "create",
            "--data",
            str(relay_dir),
            "--name",
            "Acme POS Service",
            show=False,
        ).stdout.strip()
        merchant = run(
            "relay",
            "merchant",
            "create",
            "--data",
            str(relay_dir),
            "--name",
            "Noodle House 面馆",
            "--organisation",
            org,
            show=False,
        )
        store = run(
            "relay",
            "store",
            "create",
            "--data",
            str(relay_dir),
            "--name",
            "Main St",
            "--merchant",
            merchant.stdout.strip(),
            show=False,
        ).stdout.strip()
        print(f"organisation {org} → merchant → store {store}")

        step("The approvers sign a vetted script offline and publish it to the relay")
        repo = data / "approvers"
        ENV["POSASSIST_SCRIPTS_PASSPHRASE"] = "demo approvers' passphrase"
        run(
            "posassist.console.scripts_cli",
            *("init", str(repo), "--approver", "alice", "--approver", "bob"),
            show=False,
        )
        run(
            "posassist.console.scripts_cli",
            "add",
            str(repo),
            str(ROOT / "catalog" / "printer-status-test"),
        )
        for approver in ("alice", "bob"):  # the high-risk role wants both (docs/scripts.md)
            run(
                "posassist.console.scripts_cli",
                *("sign", str(repo), "--key", str(repo / "keys" / f"{approver}.pem")),
                show=False,
            )
        run("posassist.console.scripts_cli", "publish", str(repo), "--to", str(relay_dir))
        root_hash = run(
            "posassist.console.scripts_cli", "root-hash", str(repo), show=False
        ).stdout.strip()

        step("Starting the relay on 127.0.0.1")
        relay = start("relay", "serve", "--data", str(relay_dir), "--port", "0")
        children.append(relay)
        url = wait_for_file(relay_dir / "relay.url", 20)
        assert relay.stdout is not None
        print(relay.stdout.readline().rstrip())

        step("The till's receipt printer (a simulated Epson on a loopback port)")
        printer = start("tests.fakes.simprinter", "--tcp", "--state", "ok")
        children.append(printer)
        assert printer.stdout is not None
        printer_at = printer.stdout.readline().split()[1]
        print(f"ESC/POS printer answering DLE EOT on {printer_at}")

        step("The operator makes a one-time enrolment token for the store")
        token = run(
            "relay",
            "enrolment",
            "create",
            "--data",
            str(relay_dir),
            "--store",
            store,
            "--relay-url",
            url,
            "--ttl",
            "600",
            show=False,
        ).stdout.strip()
        print(token[:48] + "…")

        step("At the till: enrol with the token (the private key never leaves the PC)")
        run("agent", "enroll", token, "--data", str(till_dir), "--root-hash", root_hash)
        (till_dir / "settings.json").write_text(
            json.dumps(
                {
                    "pos_profile": "demo",
                    "printers": [{"name": "receipt", "tcp": printer_at}],
                    "printer_min_interval": 0,
                }
            )
        )
        device = json.loads((till_dir / "agent.json").read_text())["device_id"]
        pos = start("tests.fakes.simpos", "--data", str(till_dir), "--printer", printer_at)
        children.append(pos)  # a stand-in for the shop's POS software, named as its profile says
        assert pos.stdout is not None
        print(pos.stdout.readline().rstrip())

        step("The same token a second time is refused")
        again = subprocess.run(
            [PY, "-m", "posassist.agent", "enroll", token, "--data", str(data / "x")],
            cwd=ROOT,
            env=ENV,
            text=True,
            capture_output=True,
            timeout=60,
        )
        print((again.stdout + again.stderr).rstrip())
        if again.returncode != 3:  # refused for lack of trust (docs/relay.md#errors-and-exit-codes)
            raise SystemExit(f"demo: a used token was not refused (exit {again.returncode})")

        step("The agent connects: hello, version negotiation, signed challenge")
        agent = start("agent", "run", "--data", str(till_dir))
        children.append(agent)
        assert agent.stdout is not None
        print(agent.stdout.readline().rstrip())

        step("A technician signs in and sees the till online")
        run(
            "console",
            "login",
            "--relay",
            url,
            "--user",
            "admin",
            "--password-file",
            str(relay_dir / "admin.pw"),
        )
        run("console", "devices")

        step("The provider promises the merchant: an answer in 15 minutes while the shop is open")
        run("console", "store", "set", store, "--timezone", "Asia/Shanghai", "--hours", _HOURS)
        run(
            "console", "sla", "set", merchant.stdout.strip(), "--response", "15m", "--resolve", "4h"
        )

        step("The printer runs low on paper; the technician asks the till for diagnostics")
        assert printer.stdin is not None
        printer.stdin.write("paper_near_end\n")
        printer.stdin.flush()
        report = run(
            "console",
            "diag",
            device,
            "--collector",
            "printers",
            "--collector",
            "system",
            show=False,
        ).stdout
        print("\n".join(_interesting(report)))
        # The claim is checked on the report's data (--json), not on how it is rendered.
        sections = json.loads(
            run("console", "diag", device, "--collector", "printers", "--json", show=False).stdout
        )
        problems = sorted(_problems(sections))
        codes = sorted(_finding_codes(sections))
        print(f"the printer's status bits / 打印机状态: {', '.join(problems) or 'no problem'}")
        print(f"finding codes / 诊断代码: {', '.join(codes) or 'none'}")

        helped = _help_story(printer, device, store, printer_at, till_dir, data, children)

        step("Every step is in the hash-chained audit log")
        run("relay", "audit", "verify", "--data", str(relay_dir))
        ok = (
            again.returncode == 3
            and "paper_near_end" in problems
            and "printer.paper_near_end" in codes
            and helped
        )
    finally:
        for child in reversed(children):
            child.terminate()
            try:
                child.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
    step("Demo " + ("finished / 演示完成" if ok else "FAILED"))
    return 0 if ok else 1


class _Till:
    """The merchant at the till: ``posassist-agent help --text``, typed into as a cashier would."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        import queue
        import threading

        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, out: Any) -> None:
        for line in out:
            self.lines.put(line)
        self.lines.put("")

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        """Show the till's screen up to the line holding ``text``; that line."""
        import queue

        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise SystemExit(f"demo: the help window never showed {text!r}") from None
            if not line:
                raise SystemExit(f"demo: the help window ended before {text!r}")
            print("  [till] " + line.rstrip(), flush=True)
            if text in line:
                return line

    def type(self, text: str) -> None:
        print(f"  [till] > {text}", flush=True)
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()


def _help_story(
    printer: subprocess.Popen[str],
    device: str,
    store: str,
    printer_at: str,
    till_dir: Path,
    data: Path,
    children: list[subprocess.Popen[str]],
) -> bool:
    """Issue 12's story: out of paper, the merchant asks for help, a technician takes the
    ticket and runs a vetted script the merchant approves, then resolves; the merchant rates;
    the service report is written."""
    step("The printer runs out of paper; the merchant opens 获取帮助 / Get help (--text)")
    assert printer.stdin is not None
    printer.stdin.write("paper_out\n")
    printer.stdin.flush()
    till = _Till(start("agent", "help", "--data", str(till_dir), "--text"))
    children.append(till.proc)
    till.wait_for("打印机缺纸")  # the till's own check, in words
    till.wait_for("哪里出了问题?")
    till.type("1")
    till.wait_for("请简单描述问题")
    till.type("小票打印不出来, 红灯一直闪")
    till.wait_for("联系电话")
    till.type("138 0000 0000")
    shown = till.wait_for("求助编号 (电话中请报此编号): ")
    code = shown.rsplit(": ", 1)[1].strip()  # the support code read out on the phone
    till.wait_for("技术员: 尚未接单")
    till.wait_for("承诺响应时间")  # the SLA's promise, counted in the shop's hours, in its zone

    step("The technician sees the ticket, takes it, and runs the printer test on the till")
    run("console", "tickets", "--store", store)
    run("console", "ticket", "accept", code)
    host, _, port = printer_at.rpartition(":")
    fix = start(
        "console",
        "run",
        device,
        "printer-status-test",
        "--version",
        "1.0.0",
        "--param",
        f"host={host}",
        "--param",
        f"tcp_port={port}",
        "--param",
        "action=status",
        "--ticket",
        code,
    )
    children.append(fix)
    till.wait_for("技术员请求在本机运行以下操作")
    till.wait_for("y = 同意")
    till.type("y")
    out, _ = fix.communicate(timeout=60)
    print(out.rstrip())
    found = "paper_end" in out  # the printer says why, from the till: its paper is out

    step("The merchant loads paper; the technician prints a test receipt (asked again)")
    printer.stdin.write("ok\n")
    printer.stdin.flush()
    receipt = start(
        "console",
        "run",
        device,
        "printer-status-test",
        *("--version", "1.0.0", "--param", f"host={host}", "--param", f"tcp_port={port}"),
        *("--param", "action=receipt", "--ticket", code),
    )
    children.append(receipt)
    till.wait_for("y = 同意")
    till.type("y")
    out, _ = receipt.communicate(timeout=60)
    print(out.rstrip())
    approved = "[consent] approved by the merchant" in out and "succeeded" in out

    step("The technician resolves the ticket; the merchant rates the service")
    run("console", "ticket", "resolve", code, "--note", "换了纸卷 / loaded a new paper roll")
    till.wait_for("请为本次服务打分")
    till.wait_for("请选择 1 到 5 分")  # the prompt itself, or the transcript shows 5 typed first
    till.type("5")
    till.wait_for("意见或建议")
    till.type("很快就修好了")
    till.wait_for("感谢您的评价")
    till.type("q")
    till.proc.wait(30)

    step("The merchant's service report: every ticket, its SLA, what was run, consent, rating")
    report = data / "report.html"
    run(
        "console",
        "report",
        "--store",
        store,
        "--html",
        str(report),
        "--json",
        str(data / "report.json"),
    )
    shown = json.loads((data / "report.json").read_text())
    rated = [
        ticket.get("rating")
        for one in shown.get("stores", [])
        for ticket in one.get("tickets", [])
        if ticket.get("code") == code
    ] == [5]
    return found and approved and rated


def _problems(data: object) -> set[str]:
    """Every problem named under a ``problems`` key anywhere in a diagnostics report."""
    if isinstance(data, dict):
        problems = data.get("problems")
        found = {str(p) for p in problems} if isinstance(problems, list) else set()
        return found.union(*(_problems(value) for value in data.values()))
    if isinstance(data, list):
        return set().union(*(_problems(item) for item in data))
    return set()


def _finding_codes(sections: object) -> set[str]:
    """The codes of the findings in each section of a report (docs/findings.md#json)."""
    codes: set[str] = set()
    for section in sections.values() if isinstance(sections, dict) else ():
        findings = section.get("findings") if isinstance(section, dict) else None
        for finding in findings if isinstance(findings, list) else ():
            if isinstance(finding, dict) and isinstance(finding.get("code"), str):
                codes.add(finding["code"])
    return codes


def _interesting(report: str) -> list[str]:
    """The findings in full and each section's heading, to keep the demo readable."""
    keep: list[str] = []
    section = ""
    for line in report.splitlines():
        if line.startswith(("[", "== ")):
            section = line
            keep.append(line)
        elif section.startswith("== ") or line.startswith("diagnostics"):
            keep.append(line)
    return keep


if __name__ == "__main__":
    sys.exit(main())
