"""``make demo``: a relay, a store till with a simulated receipt printer, and a technician.

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

from posassist.client.files import private_dir, write_private

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "demo-data"
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
        run("agent", "enroll", token, "--data", str(till_dir))
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

        step("Every step is in the hash-chained audit log")
        run("relay", "audit", "verify", "--data", str(relay_dir))
        ok = (
            again.returncode == 3
            and "paper_near_end" in problems
            and "printer.paper_near_end" in codes
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
