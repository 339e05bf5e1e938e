"""``make demo``: start a relay and a store agent on 127.0.0.1 and show them talking.

Everything runs from a throw-away folder (demo-data/); needs no database or other service.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "demo-data"
PY = sys.executable


def step(text: str) -> None:
    pass


def run(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([PY, "-m", *args], cwd=ROOT, text=True, capture_output=True)
    if result.returncode not in (0, 3):
        pass
    return result


def wait_for_file(path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise SystemExit(f"demo: {path} did not appear in {timeout}s")


def main() -> int:
    shutil.rmtree(DATA, ignore_errors=True)
    (DATA / "relay").mkdir(parents=True)
    step("Starting the relay on 127.0.0.1 (embedded, no database needed)")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    relay = subprocess.Popen(
        [PY, "-m", "relay", "serve", "--data", str(DATA / "relay"), "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = wait_for_file(DATA / "relay" / "relay.url", 15)
        assert relay.stdout is not None

        step("Creating the store PC's identity (its key never leaves the PC)")
        run(
            "agent",
            "init",
            "--data",
            str(DATA / "till-1"),
            "--device-id",
            "noodle-shop-till-1",
            "--relay",
            url,
        )

        step("An agent the relay does not know tries to connect: it is refused")
        refused = run("agent", "run", "--data", str(DATA / "till-1"), "--once")

        step("The operator binds the till's public key to its device id")
        run(
            "relay",
            "device",
            "add",
            "--data",
            str(DATA / "relay"),
            "--device-id",
            "noodle-shop-till-1",
            "--key",
            str(DATA / "till-1" / "agent.pub"),
        )

        step("The agent connects: hello, version negotiation, signed challenge")
        agent = subprocess.Popen(
            [PY, "-m", "agent", "run", "--data", str(DATA / "till-1")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert agent.stdout is not None

        step("The technician's console asks the relay who is online")
        run("console", "health", "--relay", url)
        with urllib.request.urlopen(url.replace("ws://", "http://") + "/healthz") as r:
            agents = __import__("json").loads(r.read())["agents"]

        step("Stopping the agent and the relay")
        agent.terminate()
        agent.wait(10)
    finally:
        relay.terminate()
        relay.wait(10)
    ok = refused.returncode == 3 and agents == 1
    step("Demo " + ("finished: relay and agent talked / 演示完成" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
