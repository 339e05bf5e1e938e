"""Changing provider without reinstalling (issue 17 item 6, docs/agent.md#changing-provider):
two real relay processes on 127.0.0.1 (two providers) and a real agent process.

The switch: the agent enrols with the new relay, the old relay shows the device handed over and
refuses the old identity, the running agent moves to the new relay by itself, settings kept.
Bad input: the merchant says no (and no terminal to ask on), a damaged, used or expired token,
the new relay down: nothing changed on either side. The old relay down: the switch completes
and says the old relay was not told.
"""

from __future__ import annotations

import atexit
import json
import os
import pty
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.cli import (
    ROOT,
    Technician,
    _provision,
    invite,
    lines,
    ok,
    provision,
    py,
    start_agent,
    start_relay,
    stop,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow  # two relay processes and an agent per test

SETTINGS = {
    "printers": [{"name": "receipt", "tcp": "127.0.0.1:9"}],
    "printer_min_interval": 30,
    "time_zone": "Asia/Shanghai",
}


class Provider:
    """One provider: a relay process with its own data (and relay id) and one store."""

    def __init__(self, data: Path, store: str) -> None:
        self.data, self.store = data, store
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> Provider:
        self.proc, self.url = start_relay(self.data)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def token(self, ttl: float = 3600) -> str:
        return invite(self.data, self.store, self.url, ttl=ttl)

    def devices(self) -> dict[str, list[str]]:
        """``posassist-relay device list``: device id → its other columns."""
        listed = ok(py("relay", "device", "list", "--data", str(self.data)))
        rows = [line.split("\t") for line in listed.splitlines() if line.strip()]
        return {row[0]: row[1:] for row in rows}

    @property
    def relay_id(self) -> str:
        return str(json.loads((self.data / "relay.json").read_text())["relay_id"])


#: The other provider's relay, provisioned by the real commands once per test process and copied
#: for each test (as tests/e2e/cli.provision does for the first): it has a relay id of its own.
_OTHER: tuple[Path, str] | None = None


def _other_provider(data: Path) -> str:
    global _OTHER
    if _OTHER is None:
        home = Path(tempfile.mkdtemp(prefix="posassist-other-provider-"))
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        _OTHER = home / "relay", _provision(home / "relay", "")
    shutil.copytree(_OTHER[0], data)
    return _OTHER[1]


@pytest.fixture
def providers(tmp_path: Path) -> Iterator[tuple[Provider, Provider]]:
    old = Provider(tmp_path / "old", provision(tmp_path / "old")).start()
    new = Provider(tmp_path / "new", _other_provider(tmp_path / "new")).start()
    assert old.relay_id != new.relay_id
    yield old, new
    old.stop()
    new.stop()


@pytest.fixture
def till(tmp_path: Path, providers: tuple[Provider, Provider]) -> Path:
    """A till enrolled with the old provider, with the merchant's settings."""
    old, _ = providers
    till = tmp_path / "till"
    ok(py("agent", "enroll", old.token(), "--data", str(till)))
    (till / "settings.json").write_text(json.dumps(SETTINGS, indent=2), encoding="utf-8")
    return till


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the local audit log left out) and its bytes."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith("audit.log")
    }


def _journal(till: Path) -> list[dict[str, Any]]:
    path = till / "audit.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _switch(till: Path, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return py("agent", "switch-provider", "--data", str(till), "--token", token, *extra)


def test_a_till_moves_to_another_provider_and_the_old_one_shows_it_handed_over(
    tmp_path: Path, providers: tuple[Provider, Provider], till: Path
) -> None:
    old, new = providers
    settings = (till / "settings.json").read_bytes()
    agent, old_device = start_agent(till, "--no-checks")
    try:
        switched = _switch(till, new.token(), "--yes")
        out = ok(switched)
        assert "moved to the new provider as device dev_" in out
        assert f"the old relay was told: device {old_device} shows as handed over" in out
        new_device = json.loads((till / "agent.json").read_text())["device_id"]
        assert new_device != old_device
        # the running agent was replaced by the handover connection and took up the new identity
        lines(agent).wait_for("moved to a new provider", 30)
        lines(agent).wait_for(f"connected to relay {new.relay_id} as {new_device}", 30)
        assert agent.poll() is None
    finally:
        stop(agent)
    # the merchant's settings are kept byte for byte; the old identity is retired, not lost
    assert (till / "settings.json").read_bytes() == settings
    retired = till / "retired" / old_device
    assert json.loads((retired / "agent.json").read_text())["device_id"] == old_device
    assert (retired / "agent.key").stat().st_mode & 0o077 == 0
    record = json.loads((retired / "handover.json").read_text())
    assert (record["told"], record["new_device"]) == ("told", new_device)
    assert not (till / "switch.new").exists()
    # the old relay: handed over, with the time; it refuses the old identity, saying why
    status, *rest = old.devices()[old_device][1:]
    assert status == "handed_over"
    assert any(col.startswith("handed over 1") for col in rest), rest
    refused = py("agent", "run", "--once", "--data", str(retired))
    assert refused.returncode == 3
    assert "handed over to another provider" in refused.stdout + refused.stderr
    assert "已转到其他服务商" in refused.stdout + refused.stderr
    # the console of the old provider lists it as handed over / 已转移 with the time
    tech = Technician(tmp_path / "tech-old").login(old.url)
    listing = ok(tech("devices"))
    assert old_device in listing
    assert "handed over / 已转移: 20" in listing
    assert "CST" in listing  # the store's zone (Asia/Shanghai), not the technician's
    # the new relay: the new device, active
    assert new.devices()[new_device][1] == "active"
    # the till's own audit log says who agreed and what happened
    (entry,) = [e for e in _journal(till) if e["action"] == "provider.switch"]
    assert entry["outcome"] == "ok"
    assert (entry["detail"]["old_device"], entry["detail"]["new_device"]) == (
        old_device,
        new_device,
    )


def test_the_merchant_saying_no_changes_nothing_on_either_side(
    providers: tuple[Provider, Provider], till: Path
) -> None:
    old, new = providers
    before = _snapshot(till)
    token = new.token()
    # asked at the till's terminal, in Chinese and English; the merchant types "no"
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "posassist.agent",
                "switch-provider",
                "--data",
                str(till),
                "--token",
                token,
            ],
            cwd=ROOT,
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.write(primary, b"no\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc.returncode == 1, out + err
    assert "将本收银机转到另一家服务商" in out
    assert new.url in out
    assert "商户未同意更换服务商, 未做任何更改" in err
    # no terminal and no --yes: nothing asked, nothing changed
    blind = _switch(till, token)
    assert blind.returncode == 2
    assert "--yes" in blind.stderr
    assert _snapshot(till) == before
    assert not (till / "retired").exists()
    assert next(iter(old.devices().values()))[1] == "active"
    assert new.devices() == {}
    refusals = [e for e in _journal(till) if e["action"] == "provider.switch"]
    assert [e["outcome"] for e in refusals] == ["refused"]
    # the token was not used: it still enrols (another till)
    ok(py("agent", "enroll", token, "--data", str(till.parent / "other-till")))


@pytest.mark.parametrize("fault", ["damaged", "used", "expired", "new relay down"])
def test_a_bad_token_or_a_new_relay_down_changes_nothing(
    tmp_path: Path, providers: tuple[Provider, Provider], till: Path, fault: str
) -> None:
    old, new = providers
    if fault == "damaged":
        token, code, words = "PA1-not-a-token", 2, "token"
    elif fault == "used":
        token, code, words = new.token(), 3, "already used"
        ok(py("agent", "enroll", token, "--data", str(tmp_path / "someone-else")))
    elif fault == "expired":
        token, code, words = new.token(ttl=1), 3, "expired"
        expires = time.time() + 1.5
        while time.time() < expires:  # the token's own clock: nothing to wait on but time
            time.sleep(0.1)
    else:
        token, code, words = new.token(), 1, "relay"
        new.stop()
    before = _snapshot(till)
    new_before = {} if fault == "new relay down" else new.devices()
    failed = _switch(till, token, "--yes")
    assert failed.returncode == code, failed.stdout + failed.stderr
    assert words in failed.stderr
    assert "Traceback" not in failed.stderr
    assert _snapshot(till) == before
    assert not (till / "retired").exists()
    assert not (till / "switch.new").exists()
    (row,) = old.devices().values()
    assert row[1] == "active"
    if fault != "new relay down":
        assert new.devices() == new_before
    # the till still works with its old provider
    ok(py("agent", "run", "--once", "--data", str(till)))


def test_with_the_old_relay_down_the_switch_completes_and_says_it_was_not_told(
    providers: tuple[Provider, Provider], till: Path
) -> None:
    old, new = providers
    old_device = json.loads((till / "agent.json").read_text())["device_id"]
    old.stop()
    out = ok(_switch(till, new.token(), "--yes"))
    assert "the old relay was NOT told (unreachable" in out
    assert f"ask the old provider to revoke device {old_device}" in out
    record = json.loads((till / "retired" / old_device / "handover.json").read_text())
    assert record["told"].startswith("unreachable")
    ok(py("agent", "run", "--once", "--data", str(till)))  # the new relay takes it
    old.start()
    assert old.devices()[old_device][1] == "active"  # never told: still active there
