"""The §5 remediations added for issue 14 (cups-enable-queue, restart-print-service,
modemmanager-ignore, usb-power-always-on, set-time-zone, stop-duplicate-pos) run for real
through ScriptRunner on Linux: stand-in tools, sysfs and rule files under the test root
(tests/catalog/conftest.py), and real processes for the duplicate POS. Each finding that names a
script names one the catalog ships, with the manifest's own risk class."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from posassist.agent.findings import ADVICE
from posassist.agent.profile import parse_profile
from posassist.client.advice import CATALOG, script_for

from .conftest import SCRIPT_IDS, Catalog, load

if TYPE_CHECKING:
    from collections.abc import Iterator

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux scripts")


def test_every_script_a_finding_names_is_in_the_catalog_with_that_risk() -> None:
    named = {(a.script, a.risk) for a in ADVICE.values() if a.script}
    assert len(named) >= 15
    for script_id, risk in sorted(named):
        assert script_id in SCRIPT_IDS, f"{script_id} is named by a finding but not shipped"
        assert load(script_id)[0].risk == risk, script_id


def test_the_findings_that_gained_a_remediation_name_it() -> None:
    wanted = {
        "queue.disabled": "cups-enable-queue",
        "queue.cups_stopped": "restart-print-service",
        "queue.offline": "printer-resume-windows",
        "serial.prober_interference": "modemmanager-ignore",
        "host.usb_disconnects": "usb-power-always-on",
        "host.time_zone_wrong": "set-time-zone",
        "host.winhttp_proxy": "proxy-reset-windows",
        "pos.duplicate_instances": "stop-duplicate-pos",
        "pos.database_down": "start-database-service",
    }
    assert {code: ADVICE[code].script for code in wanted} == wanted


def test_the_catalog_table_is_the_manifests() -> None:
    """client/advice.py CATALOG (platforms, risk) is what each shipped manifest says."""
    shipped = {sid: (tuple(load(sid)[0].platforms), load(sid)[0].risk) for sid in SCRIPT_IDS}
    assert CATALOG == shipped


@pytest.mark.parametrize("platform", ["linux", "windows"])
def test_a_finding_advises_only_a_script_that_runs_on_the_tills_platform(platform: str) -> None:
    """readme-walk 14: a Windows till was told to run the Linux-only restart-pos-service and
    reset-usb-serial, a Linux till the Windows-only start-database-service."""
    advised = 0
    for code, advice in ADVICE.items():
        fix = script_for(advice, platform)
        if fix is None:
            continue
        advised += 1
        manifest = load(fix[0])[0]
        assert platform in manifest.platforms, (code, fix)
        assert manifest.risk == fix[1], (code, fix)
    assert advised >= 12


def test_the_other_platforms_script_is_offered_where_the_catalog_has_one() -> None:
    windows = {
        "printer.usb_wedged": ("reset-usb-serial-windows", "B"),
        "host.usb_disconnects": ("usb-suspend-off-windows", "B"),
        "queue.disabled": ("printer-resume-windows", "B"),
        "queue.cups_stopped": ("spooler-reset-windows", "B"),
        "pos.not_running": None,  # restart-pos-service is Linux (systemd) only
        "pos.database_down": ("start-database-service", "A"),
    }
    assert {code: script_for(ADVICE[code], "windows") for code in windows} == windows
    linux = {
        "queue.offline": ("cups-enable-queue", "A"),
        "pos.database_down": None,  # SQL Server Express is a Windows service
        "pos.not_running": ("restart-pos-service", "B"),
    }
    assert {code: script_for(ADVICE[code], "linux") for code in linux} == linux


# --- cups-enable-queue --------------------------------------------------------------------------


def cups(catalog: Catalog) -> None:
    state = catalog.root / "queue-state"
    state.write_text("disabled")
    catalog.tool(
        "/usr/bin/lpstat",
        f"""
        if sys.argv[1:2] == ['-p']:
            if sys.argv[2] != 'receipt':
                sys.exit(1)
            print('printer receipt ' + open({str(state)!r}).read() + ' since today')
        """,
    )
    catalog.tool("/usr/bin/cancel", "")
    catalog.tool("/usr/sbin/cupsenable", f"open({str(state)!r}, 'w').write('is idle.  enabled')")
    catalog.tool("/usr/sbin/cupsaccept", "")


@linux
async def test_a_disabled_queue_is_enabled_without_asking_and_no_job_is_cancelled(
    catalog: Catalog,
) -> None:
    cups(catalog)
    run = await catalog.run("cups-enable-queue", {"queue": "receipt"})
    assert run.status == "succeeded", run
    assert catalog.consent.asked == []  # class A: no consent asked
    assert catalog.calls() == [
        ["/usr/bin/lpstat", "-p", "receipt"],
        ["/usr/bin/lpstat", "-o", "receipt"],
        ["/usr/sbin/cupsenable", "receipt"],
        ["/usr/sbin/cupsaccept", "receipt"],
        ["/usr/bin/lpstat", "-p", "receipt"],
    ]
    assert "queue receipt enabled" in run.stdout


@linux
async def test_enabling_an_unknown_queue_changes_nothing(catalog: Catalog) -> None:
    cups(catalog)
    run = await catalog.run("cups-enable-queue", {"queue": "kitchen"})
    assert (run.status, run.result.exit_code) == ("failed", 3), run
    assert catalog.calls() == [["/usr/bin/lpstat", "-p", "kitchen"]]
    assert (catalog.root / "queue-state").read_text() == "disabled"
    # cancelling jobs is cups-clear-queue's (class B): this class-A script has no such parameter
    run = await catalog.run("cups-enable-queue", {"queue": "receipt", "cancel_jobs": True})
    assert run.status == "refused", run
    assert len(catalog.calls()) == 1


# --- restart-print-service ----------------------------------------------------------------------


@linux
async def test_the_print_service_is_restarted_and_only_cups_may_be_named(
    catalog: Catalog,
) -> None:
    state = catalog.root / "unit-state"
    state.write_text("failed")
    catalog.tool(
        "/usr/bin/systemctl",
        f"""
        if sys.argv[1] == 'restart':
            open({str(state)!r}, 'w').write('active')
        elif sys.argv[1] == 'is-active':
            s = open({str(state)!r}).read()
            print(s)
            sys.exit(0 if s == 'active' else 3)
        """,
    )
    for unit in ("sshd.service", "demo-pos.service", "cups.service --now"):
        refused = await catalog.run("restart-print-service", {"unit": unit})
        assert refused.status == "refused", unit
    assert catalog.calls() == []
    run = await catalog.run("restart-print-service", {})
    assert run.status == "succeeded", run
    assert catalog.calls()[:2] == [
        ["/usr/bin/systemctl", "is-active", "cups.service"],
        ["/usr/bin/systemctl", "restart", "cups.service"],
    ]


# --- modemmanager-ignore and usb-power-always-on ------------------------------------------------

MM_RULES = "/etc/udev/rules.d/99-posassist-modemmanager.rules"
POWER_RULES = "/etc/udev/rules.d/99-posassist-usb-power.rules"


def udevadm(catalog: Catalog, exit_code: int = 0) -> None:
    catalog.tool("/usr/bin/udevadm", f"sys.exit({exit_code})")


async def run_rooted(catalog: Catalog, script_id: str, params: dict[str, object]) -> object:
    """Run with the manifest's backup paths moved under the test root, as the script's are."""
    manifest, folder = load(script_id)
    rooted = tuple(str(catalog.path(p)) for p in manifest.backup)
    return await catalog.run_manifest(dataclasses.replace(manifest, backup=rooted), folder, params)


@linux
async def test_modemmanager_is_told_to_ignore_the_device_once_and_other_lines_are_kept(
    catalog: Catalog,
) -> None:
    udevadm(catalog)
    rules = catalog.path(MM_RULES)
    rules.write_text('# site rule\nATTRS{idVendor}=="0403", ENV{ID_MM_DEVICE_IGNORE}="1"\n')
    params = {"usb_vendor": "1A86", "usb_product": "7523"}
    run = await run_rooted(catalog, "modemmanager-ignore", params)
    assert run.status == "succeeded", run  # type: ignore[attr-defined]
    line = 'ATTRS{idVendor}=="1a86", ATTRS{idProduct}=="7523", ENV{ID_MM_DEVICE_IGNORE}="1"'
    assert rules.read_text().splitlines() == [
        "# site rule",
        'ATTRS{idVendor}=="0403", ENV{ID_MM_DEVICE_IGNORE}="1"',
        line,
    ]
    assert catalog.calls() == [
        ["/usr/bin/udevadm", "control", "--reload-rules"],
        [
            "/usr/bin/udevadm", "trigger", "--action=change", "--subsystem-match=usb",
            "--attr-match=idVendor=1a86", "--attr-match=idProduct=7523",
        ],
    ]  # fmt: skip
    again = await run_rooted(catalog, "modemmanager-ignore", params)
    assert again.status == "succeeded", again  # type: ignore[attr-defined]
    assert "already in" in again.stdout  # type: ignore[attr-defined]
    assert rules.read_text().count(line) == 1


@linux
async def test_a_rule_whose_reload_fails_is_taken_back_by_the_backup(catalog: Catalog) -> None:
    udevadm(catalog, exit_code=1)
    rules = catalog.path(MM_RULES)
    assert not rules.exists()
    run = await run_rooted(
        catalog, "modemmanager-ignore", {"usb_vendor": "1a86", "usb_product": "7523"}
    )
    assert (run.status, run.result.exit_code) == ("failed", 1), run  # type: ignore[attr-defined]
    assert "added to" in run.stdout  # type: ignore[attr-defined]  # it wrote, then udevadm failed
    assert run.result.restore is not None  # type: ignore[attr-defined]
    assert run.result.restore.verified  # type: ignore[attr-defined]
    assert not rules.exists()  # absent before the run: absent after


@linux
async def test_usb_power_is_kept_on_now_and_at_every_plug_in(catalog: Catalog) -> None:
    udevadm(catalog)
    for name, vid, pid in (("1-1.2", "1a86", "7523"), ("1-1.3", "046d", "c52b")):
        catalog.path(f"/sys/bus/usb/devices/{name}/idVendor").write_text(vid + "\n")
        catalog.path(f"/sys/bus/usb/devices/{name}/idProduct").write_text(pid + "\n")
        catalog.path(f"/sys/bus/usb/devices/{name}/power/control").write_text("auto\n")
    run = await run_rooted(
        catalog, "usb-power-always-on", {"usb_vendor": "1a86", "usb_product": "7523"}
    )
    assert run.status == "succeeded", run  # type: ignore[attr-defined]
    assert "1-1.2 power/control: auto -> on" in run.stdout  # type: ignore[attr-defined]
    assert catalog.path("/sys/bus/usb/devices/1-1.2/power/control").read_text() == "on"
    assert catalog.path("/sys/bus/usb/devices/1-1.3/power/control").read_text() == "auto\n"
    assert (
        'ATTR{idVendor}=="1a86", ATTR{idProduct}=="7523"' in catalog.path(POWER_RULES).read_text()
    )


@linux
async def test_usb_power_for_a_device_not_plugged_in_writes_only_the_rule(catalog: Catalog) -> None:
    udevadm(catalog)
    run = await run_rooted(
        catalog, "usb-power-always-on", {"usb_vendor": "1a86", "usb_product": "7523"}
    )
    assert run.status == "succeeded", run  # type: ignore[attr-defined]
    assert "not plugged in now" in run.stdout  # type: ignore[attr-defined]
    assert catalog.path(POWER_RULES).read_text().startswith("# written by posassist")


@linux
async def test_without_udev_nothing_is_written(catalog: Catalog) -> None:
    run = await run_rooted(
        catalog, "modemmanager-ignore", {"usb_vendor": "1a86", "usb_product": "7523"}
    )
    assert (run.status, run.result.exit_code) == ("failed", 3), run  # type: ignore[attr-defined]
    assert not catalog.path(MM_RULES).exists()


def test_the_udev_scripts_back_up_exactly_the_rule_file_they_edit() -> None:
    for script_id, rules in (
        ("modemmanager-ignore", MM_RULES),
        ("usb-power-always-on", POWER_RULES),
    ):
        manifest, folder = load(script_id)
        assert manifest.backup == (rules,)
        assert f'"{rules}"' in (folder / "udev_rule.py").read_text(encoding="utf-8")


# --- set-time-zone ------------------------------------------------------------------------------


def timedatectl(catalog: Catalog, sticks: bool = True) -> Path:
    state = catalog.root / "zone-state"
    state.write_text("Etc/UTC")
    catalog.tool(
        "/usr/bin/timedatectl",
        f"""
        if sys.argv[1] == 'show':
            print(open({str(state)!r}).read())
        elif sys.argv[1] == 'set-timezone' and {sticks!r}:
            open({str(state)!r}, 'w').write(sys.argv[2])
        """,
    )
    for zone in ("Asia/Shanghai", "Etc/UTC"):
        catalog.path(f"/usr/share/zoneinfo/{zone}").write_bytes(b"TZif2")
    return state


@linux
async def test_the_time_zone_is_set_and_the_old_one_recorded(catalog: Catalog) -> None:
    state = timedatectl(catalog)
    run = await catalog.run("set-time-zone", {"zone": "Asia/Shanghai"})
    assert run.status == "succeeded", run
    assert state.read_text() == "Asia/Shanghai"
    assert run.result_json() == {"previous": "Etc/UTC", "zone": "Asia/Shanghai"}
    assert catalog.calls()[1] == ["/usr/bin/timedatectl", "set-timezone", "Asia/Shanghai"]


@linux
async def test_an_unknown_zone_changes_nothing(catalog: Catalog) -> None:
    state = timedatectl(catalog)
    for zone in ("Asia/Atlantis", "China Standard Time"):  # not in the zone database here
        run = await catalog.run("set-time-zone", {"zone": zone})
        assert (run.status, run.result.exit_code) == ("failed", 3), run
    for bad in ("../../etc/passwd", "Asia/Shanghai; reboot", "Asia/../../x"):
        assert (await catalog.run("set-time-zone", {"zone": bad})).status == "refused"
    assert catalog.calls() == []
    assert state.read_text() == "Etc/UTC"


@linux
async def test_a_zone_that_does_not_read_back_is_put_back(catalog: Catalog) -> None:
    state = timedatectl(catalog, sticks=False)
    run = await catalog.run("set-time-zone", {"zone": "Asia/Shanghai"})
    assert (run.status, run.result.exit_code) == ("failed", 1), run
    assert catalog.calls()[-1] == ["/usr/bin/timedatectl", "set-timezone", "Etc/UTC"]
    assert state.read_text() == "Etc/UTC"


# --- stop-duplicate-pos -------------------------------------------------------------------------

LOOP = "import sys\nprint('ready', flush=True)\nsys.stdin.read()\n"


#: This test process's POS name: tests running side by side must not see each other's.
POS_NAME = f"pos-{os.getpid()}"


def start_loop(exe: str) -> subprocess.Popen[str]:
    """A real process that says it is ready and waits on its stdin."""
    p = subprocess.Popen(
        [exe, "-c", LOOP], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    return p


@pytest.fixture
def pos_instances(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Two real processes named ``POS_NAME`` (comm is the exec'd file's name)."""
    exe = tmp_path / POS_NAME
    os.symlink(os.path.realpath(sys.executable), exe)
    procs = [start_loop(str(exe)) for _ in range(2)]
    yield procs
    for p in procs:
        p.kill()
        p.communicate(timeout=10)


def dup_profile(catalog: Catalog) -> None:
    catalog.runner.profile = parse_profile(
        f'name = "dup"\n[process]\nnames = ["{POS_NAME}"]\n'
        '[sale]\nopen_file = "/nonexistent/sale"\n'
    )
    (catalog.root / "proc").symlink_to("/proc")  # the script reads <root>/proc in tests


def alive(p: subprocess.Popen[str]) -> bool:
    return p.poll() is None


@linux
async def test_the_second_pos_instance_is_stopped_and_the_first_keeps_running(
    catalog: Catalog, pos_instances: list[subprocess.Popen[str]]
) -> None:
    dup_profile(catalog)
    first, second = pos_instances
    run = await catalog.run("stop-duplicate-pos", {"process_id": second.pid})
    assert run.status == "succeeded", run
    assert catalog.consent.asked == ["stop-duplicate-pos"]
    assert second.wait(timeout=10) == -15  # ended by SIGTERM, not killed
    assert alive(first)
    assert run.result_json() == {"stopped": second.pid, "running": [first.pid]}


@linux
async def test_the_only_instance_and_other_processes_are_never_stopped(
    catalog: Catalog, pos_instances: list[subprocess.Popen[str]]
) -> None:
    dup_profile(catalog)
    first, second = pos_instances
    other = start_loop(sys.executable)
    try:
        run = await catalog.run("stop-duplicate-pos", {"process_id": other.pid})
        assert (run.status, run.result.exit_code) == ("failed", 3), run
        assert "not an instance of the POS" in run.stderr
        assert alive(other)
        second.kill()
        second.wait(timeout=10)
        run = await catalog.run("stop-duplicate-pos", {"process_id": first.pid})
        assert (run.status, run.result.exit_code) == ("failed", 3), run
        assert "the only POS instance" in run.stderr
        assert alive(first)
    finally:
        other.kill()
        other.communicate(timeout=10)


@linux
async def test_without_process_names_in_the_profile_nothing_is_stopped(
    catalog: Catalog, pos_instances: list[subprocess.Popen[str]]
) -> None:
    catalog.runner.profile = parse_profile('name = "bare"\n[sale]\nopen_file = "/nonexistent"\n')
    run = await catalog.run("stop-duplicate-pos", {"process_id": pos_instances[1].pid})
    assert (run.status, run.result.exit_code) == ("failed", 3), run
    assert all(alive(p) for p in pos_instances)


def test_the_profile_gives_scripts_its_process_names_as_json() -> None:
    from posassist.agent.profile import load_profile, profile_env

    env = profile_env(load_profile("demo", Path("/d")))
    assert json.loads(env["POSASSIST_PROFILE_PROCESSES"]) == ["posassist-demo-pos", "demo-pos"]
    assert json.loads(env["POSASSIST_PROFILE_LOG_DIRS"]) == ["/d/pos/logs"]


def test_the_findings_table_in_the_docs_names_the_same_scripts() -> None:
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "findings.md").read_text()
    rows = re.findall(r"^\| `([a-z_]+\.[a-z_0-9]+)` \| [^|]* \| [^|]* \| ([^|]*) \|", doc, re.M)
    assert len(rows) >= len(ADVICE) - 2
    for code, column in rows:
        a = ADVICE[code]
        assert column.strip() == (f"`{a.script}` ({a.risk})" if a.script else "—"), code


# --- fix-printer-port: the POS is closed by the profile's own names ------------------------------


@linux
async def test_fix_printer_port_waits_for_the_pos_the_profile_names_and_needs_one(
    catalog: Catalog, pos_instances: list[subprocess.Popen[str]]
) -> None:
    ini = catalog.data / "pos.ini"
    ini.write_bytes(b"[printer]\nport = COM3\n")
    catalog.runner.placeholders["POS_CONFIG"] = str(ini)
    catalog.path("/dev/ttyUSB1").write_text("")
    config = f'[config]\npath = "{ini}"\n[sale]\nopen_file = "/nonexistent/sale"\n'
    catalog.runner.profile = parse_profile(
        f'name = "p"\n[process]\nnames = ["{POS_NAME}"]\n{config}'
    )
    run = await catalog.run("fix-printer-port", {"port": "/dev/ttyUSB1"})
    assert run.status == "refused", run
    assert run.result.refusal is not None
    assert run.result.refusal.code == "pos_running"
    assert POS_NAME in run.result.refusal.en
    assert "收银软件" in run.result.refusal.zh
    catalog.runner.profile = parse_profile(f'name = "p"\n{config}')  # names no process
    run = await catalog.run("fix-printer-port", {"port": "/dev/ttyUSB1"})
    assert run.result.refusal is not None
    assert run.result.refusal.code == "pos_unknown"
    assert ini.read_bytes() == b"[printer]\nport = COM3\n"  # neither refusal touched it
    assert catalog.consent.asked == []
    for p in pos_instances:
        p.kill()
        p.wait(timeout=10)
    catalog.runner.profile = parse_profile(
        f'name = "p"\n[process]\nnames = ["{POS_NAME}"]\n{config}'
    )
    run = await catalog.run("fix-printer-port", {"port": "/dev/ttyUSB1"})
    assert run.status == "succeeded", run
    assert ini.read_bytes() == b"[printer]\nport = /dev/ttyUSB1\n"
