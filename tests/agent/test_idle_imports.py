"""The idle agent's import set: what a connected agent that was asked nothing has loaded.

Its RSS budget (≤ 40 MB, issue 10 and 13) is mostly modules; these stay out until they are used
(docs/notes/mem-status.md): enrolment and pinned HTTP, cryptography's PEM/x509 code, the
diagnostics collectors, psutil, the script service. A real relay, a real enrolled till, on this
Python and on the till's Python 3.8. Not covered: what the device-facts worker imports just after
the handshake (pyserial's port listing, collectors.system) races with the dump, so it is neither
required nor reliably caught here.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.cli import invite, provision, start_relay, stop

ROOT = Path(__file__).resolve().parents[2]
PY38 = ROOT / ".venv38" / "bin" / "python"

#: Runs ``posassist-agent`` as ``-m`` does; on SIGUSR1 writes ``sorted(sys.modules)`` to the
#: file named by argv[1], then says so on stdout.
HARNESS = """
import json, runpy, signal, sys
out = sys.argv.pop(1)
def dump(*_):
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
    print("modules written", flush=True)
signal.signal(signal.SIGUSR1, dump)
sys.argv[0] = "posassist-agent"
runpy.run_module("posassist.agent", run_name="__main__", alter_sys=True)
"""

#: Loaded when used, never at idle (a prefix matches the package and everything under it).
NOT_AT_IDLE = (
    "posassist.agent.enrol",
    "posassist.protocol.enrolment",
    "posassist.client.http",
    # (the help link's consent answers and the results log it checks at start are idle's)
    "posassist.agent.scripts.service",
    "posassist.agent.scripts.runner",
    "posassist.agent.scripts.verify",
    "posassist.agent.scripts.backup",
    "posassist.agent.scripts.process",
    "posassist.agent.scripts.preconditions",
    "posassist.agent.findings",
    "posassist.agent.collectors.network",
    "posassist.agent.collectors.pos",
    "posassist.agent.collectors.printers",
    "posassist.agent.collectors.escpos",
    "posassist.agent.collectors.peripherals",
    "posassist.agent.collectors.printqueue",
    "posassist.agent.collectors.hostconfig",
    # the sign-in signature is OpenSSL's through ssl (client/signer.py), the TLS pin is read by
    # protocol/der.py: none of cryptography's 8.5 MB library is mapped
    "cryptography",
    "_cffi_backend",
    "psutil",
    "aiohttp",
    "tuf",
)

#: Proof that the dump is of a connected agent, not of an interpreter that did nothing.
AT_IDLE = (
    "posassist.agent.connection",
    "posassist.protocol.signing",
    "websockets.asyncio.client",
    "posassist.client.signer",
)


def pythons() -> list[object]:
    return [
        pytest.param(sys.executable, id="this-python"),
        pytest.param(str(PY38), id="python3.8", marks=pytest.mark.py38),
    ]


def _loaded(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)]


@pytest.mark.slow
@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss-pinned"])
@pytest.mark.parametrize("python", pythons())
def test_a_connected_idle_agent_has_not_imported_what_only_requests_use(
    python: str, tls: bool, tmp_path: Path
) -> None:
    if not Path(python).exists():
        pytest.fail(f"{python} is missing: `make venv` builds it (docs/windows7.md)")
    relay_dir = tmp_path / "relay"
    store = provision(relay_dir)
    cert = None
    if tls:  # as a real relay is reached: TLS, its key pinned by the enrolment token
        from tests.relay.certs import make_certificate

        cert, key = make_certificate().write(tmp_path / "tls")
        relay, url = start_relay(relay_dir, "--tls-cert", str(cert), "--tls-key", str(key))
    else:
        relay, url = start_relay(relay_dir)
    try:
        till = tmp_path / "till"
        token = invite(relay_dir, store, url, tls_cert=cert)
        enrolled = subprocess.run(
            [python, "-m", "posassist.agent", "enroll", token, "--data", str(till)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert enrolled.returncode == 0, enrolled.stderr
        dump = tmp_path / "modules.json"
        agent = subprocess.Popen(
            # Checks off: this guards the connection's idle set; the health checks' own cost,
            # which needs the findings and collectors, is measured by benchmarks/bench_agent.py.
            [python, "-c", HARNESS, str(dump), "run", "--data", str(till), "--no-checks"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert agent.stdout is not None
            assert agent.stderr is not None
            line = agent.stdout.readline()
            assert "connected to relay" in line, line + agent.stderr.read()
            agent.send_signal(signal.SIGUSR1)
            answer = agent.stdout.readline()  # an exited agent gives "" here
            assert answer == "modules written\n", answer + agent.stderr.read()
            assert agent.poll() is None  # the dump did not stop the agent
        finally:
            agent.terminate()
            agent.communicate(timeout=15)
    finally:
        stop(relay)
    modules = json.loads(dump.read_text())
    assert _loaded(modules, AT_IDLE) == sorted(AT_IDLE)
    assert _loaded(modules, NOT_AT_IDLE) == []
