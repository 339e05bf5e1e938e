"""`posassist diag --store S` and `posassist run --store S SCRIPT`: one request to every device of a
store through a real relay process, answered by posassist-fleet tills, one line per device
(console/fanout.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.cli import ROOT, Technician, provision, start_relay, stop
from tests.e2e.test_fleet import next_event

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store_with_tills(tmp_path_factory: pytest.TempPathFactory):
    """A relay whose store has 21 enrolled tills, 20 of them connected; a signed-in admin."""
    tmp_path = tmp_path_factory.mktemp("fanout")
    data = tmp_path / "relay"
    store = provision(data)
    relay, url = start_relay(data)
    ids = tmp_path / "ids"
    enrolled = subprocess.run(
        [sys.executable, "-m", "posassist.relay.fleet", "--relay", url, "--identities", str(ids),
         "--enrol", "21", "--store", store, "--password-file", str(data / "admin.pw"),
         "--duration", "0.1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    fleet = subprocess.Popen(
        [sys.executable, "-m", "posassist.relay.fleet", "--relay", url, "--identities", str(ids),
         "--agents", "20", "--duration", "300"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    next_event(fleet, "all_connected")
    offline = json.loads((sorted(ids.iterdir())[20] / "agent.json").read_text())["device_id"]
    tech = Technician(tmp_path / "tech").login(url)
    yield tech, store, offline
    fleet.terminate()
    fleet.communicate(timeout=30)
    stop(relay)


def test_diag_store_asks_every_device_and_says_which_did_not_answer(store_with_tills) -> None:
    tech, store, offline = store_with_tills
    result = tech("diag", "--store", store)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("21 devices of Main St")  # its name, though given its id
    answered = [line for line in lines if line.startswith("✓ ")]
    assert len(answered) == 20
    assert all("5/5 sections ok, 0 findings" in line for line in answered)
    (missing,) = [line for line in lines if line.startswith("✗ ")]
    assert offline in missing
    assert "offline" in missing
    assert lines[-1].startswith("20/21 devices ok")
    assert result.returncode == 1  # not every device answered


def test_diag_store_json_has_each_devices_report(store_with_tills) -> None:
    tech, store, offline = store_with_tills
    result = tech("diag", "--store", store, "--json", "--collector", "printers")
    start = result.stdout.index("{")
    end = result.stdout.rindex("}") + 1
    reports = json.loads(result.stdout[start:end])
    assert len(reports) == 21
    assert reports[offline] == {"error": "offline"}
    online = [r for d, r in reports.items() if d != offline]
    assert all(list(r) == ["printers"] for r in online)  # only the collector asked for


def test_run_store_runs_the_script_on_every_connected_device(store_with_tills) -> None:
    tech, store, offline = store_with_tills
    result = tech("run", "--store", store, "clear-print-queue", "--version", "1.0.0")
    lines = result.stdout.splitlines()
    succeeded = [line for line in lines if line.startswith("✓ ") and "succeeded" in line]
    assert len(succeeded) == 20
    assert any(offline in line and "offline" in line for line in lines)
    assert result.returncode == 1


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["diag"], "either a DEVICE or --store"),
        (["diag", "dev_x", "--store", "sto_x"], "either a DEVICE or --store"),
        (["run", "--store", "sto_x", "dev_x", "clear-print-queue", "--version", "1"],
         "only SCRIPT"),
        (["diag", "--store", "sto_nowhere"], "no store 'sto_nowhere' that you may see"),
        (["run", "dev_x", "--version", "1"], "run takes DEVICE SCRIPT"),
    ],
)  # fmt: skip
def test_a_bad_store_command_is_refused_and_nothing_is_sent(
    store_with_tills, argv: list[str], words: str
) -> None:
    tech, _store, _offline = store_with_tills
    result = tech(*argv)
    assert result.returncode == 2
    assert words in result.stderr
    assert "✓" not in result.stdout  # no device was asked
