"""The Linux catalog scripts run for real through ScriptRunner: against the simulated ESC/POS
printer on 127.0.0.1, and stand-in tools, sysfs, config files and temp folders under a test root
(tests/catalog/conftest.py; docs/scripts.md#test-root)."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import TYPE_CHECKING

import pytest

from tests.fakes.refprinter import OK, RefPrinter
from tests.fakes.simprinter import PrinterState, SimPrinter

from .conftest import Catalog, load

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux scripts")


@pytest.fixture
def printer() -> Iterator[SimPrinter]:
    with SimPrinter() as p:
        p.start_tcp("127.0.0.1")
        yield p


def tcp(p: SimPrinter) -> dict[str, object]:
    assert p.tcp_address is not None
    return {"host": p.tcp_address[0], "tcp_port": p.tcp_address[1]}


# --- printer-status-test ------------------------------------------------------------------------


async def test_status_then_test_receipt_and_cut(catalog: Catalog, printer: SimPrinter) -> None:
    run = await catalog.run("printer-status-test", tcp(printer))
    assert run.status == "succeeded", run
    assert catalog.consent.asked == ["printer-status-test"]
    assert printer.model.status_requests[:4] == [1, 2, 3, 4]
    assert b"posassist test receipt" in printer.model.print_data
    assert printer.model.cuts == 1
    assert printer.model.inits == 1
    assert run.result_json()["done"] is True


async def test_paper_out_is_reported_and_nothing_is_printed(
    catalog: Catalog, printer: SimPrinter
) -> None:
    printer.set_state(PrinterState.PAPER_OUT)
    run = await catalog.run("printer-status-test", tcp(printer))
    assert (run.status, run.result.exit_code) == ("failed", 2), run
    result = run.result_json()
    assert "paper_end" in result["problems"]
    assert "offline" in result["problems"]
    assert result["raw"] == {"1": "0x1a", "2": "0x32", "3": "0x12", "4": "0x7e"}
    assert printer.model.print_data == b""
    assert printer.model.cuts == 0


async def test_status_only_prints_nothing(catalog: Catalog, printer: SimPrinter) -> None:
    printer.set_state(PrinterState.PAPER_NEAR_END)
    run = await catalog.run("printer-status-test", {**tcp(printer), "action": "status"})
    assert run.status == "succeeded", run
    assert "paper near end" in run.stdout
    assert printer.model.print_data == b""
    assert printer.model.cuts == 0


async def test_a_silent_printer_is_no_status_not_ok(catalog: Catalog, printer: SimPrinter) -> None:
    printer.set_state(PrinterState.GARBAGE_REPLY)
    run = await catalog.run("printer-status-test", tcp(printer))
    assert (run.status, run.result.exit_code) == ("failed", 3), run


async def test_nothing_runs_while_a_sale_is_open(catalog: Catalog, printer: SimPrinter) -> None:
    (catalog.data / "pos" / "sale.open").write_text("1")
    run = await catalog.run("printer-status-test", tcp(printer))
    assert run.status == "refused"
    assert run.result.refusal is not None
    assert run.result.refusal.code == "sale_open"
    assert printer.bytes_received == 0


async def test_serial_printer_through_pyserial(catalog: Catalog) -> None:
    pytest.importorskip("serial")
    with SimPrinter() as p:
        pty = p.start_pty()
        os.symlink(pty, catalog.path("/dev/ttyUSB0"))
        run = await catalog.run("printer-status-test", {"serial": "/dev/ttyUSB0"})
        assert run.status == "succeeded", run
        assert p.model.cuts == 1


# --- drawer-kick-test ---------------------------------------------------------------------------


async def test_drawer_kick_sends_one_esc_p(catalog: Catalog, printer: SimPrinter) -> None:
    run = await catalog.run("drawer-kick-test", {**tcp(printer), "pin": "5", "pulse_ms": 120})
    assert run.status == "succeeded", run
    (kick,) = printer.model.drawer_kicks
    assert (kick.pin, kick.on_ms, kick.off_ms, kick.realtime, kick.fired) == (
        5,
        120,
        500,
        False,
        True,
    )
    assert "CASH EVENT" in run.stdout


async def test_no_drawer_kick_while_the_printer_is_offline(
    catalog: Catalog, printer: SimPrinter
) -> None:
    printer.set_state(PrinterState.COVER_OPEN)
    run = await catalog.run("drawer-kick-test", tcp(printer))
    assert (run.status, run.result.exit_code) == ("failed", 2), run
    assert printer.model.drawer_kicks == []  # a queued ESC p would fire later, unattended


# --- cups-clear-queue ---------------------------------------------------------------------------


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


async def test_cups_queue_is_cleared_and_re_enabled(catalog: Catalog) -> None:
    cups(catalog)
    run = await catalog.run("cups-clear-queue", {"queue": "receipt", "cancel_jobs": True})
    assert run.status == "succeeded", run
    assert catalog.calls() == [
        ["/usr/bin/lpstat", "-p", "receipt"],
        ["/usr/bin/lpstat", "-o", "receipt"],
        ["/usr/bin/cancel", "-a", "receipt"],
        ["/usr/sbin/cupsenable", "receipt"],
        ["/usr/sbin/cupsaccept", "receipt"],
        ["/usr/bin/lpstat", "-p", "receipt"],
    ]


async def test_cups_keeps_jobs_by_default_and_refuses_unknown_queues(catalog: Catalog) -> None:
    cups(catalog)
    run = await catalog.run("cups-clear-queue", {"queue": "receipt"})
    assert run.status == "succeeded", run
    assert ["/usr/bin/cancel", "-a", "receipt"] not in catalog.calls()
    run = await catalog.run("cups-clear-queue", {"queue": "kitchen"})
    assert (run.status, run.result.exit_code) == ("failed", 3)


# --- restart-pos-service ------------------------------------------------------------------------


def systemctl(catalog: Catalog, after_restart: str) -> None:
    state = catalog.root / "unit-state"
    state.write_text("failed")
    catalog.tool(
        "/usr/bin/systemctl",
        f"""
        if sys.argv[1] == 'restart':
            open({str(state)!r}, 'w').write({after_restart!r})
        elif sys.argv[1] == 'is-active':
            s = open({str(state)!r}).read()
            print(s)
            sys.exit(0 if s == 'active' else 3)
        """,
    )


async def test_pos_service_is_restarted_and_comes_back(catalog: Catalog) -> None:
    systemctl(catalog, "active")
    run = await catalog.run("restart-pos-service", {"unit": "demo-pos.service"})
    assert run.status == "succeeded", run
    calls = catalog.calls()
    assert calls[:3] == [
        ["/usr/bin/systemctl", "is-active", "demo-pos.service"],
        ["/usr/bin/systemctl", "restart", "demo-pos.service"],
        ["/usr/bin/systemctl", "is-active", "demo-pos.service"],
    ]


async def test_pos_service_that_stays_down_fails_with_its_status(catalog: Catalog) -> None:
    systemctl(catalog, "activating")
    run = await catalog.run("restart-pos-service", {"unit": "demo-pos.service", "wait": 5})
    assert run.status == "failed", run
    assert ["/usr/bin/systemctl", "status", "--no-pager", "--lines=20", "demo-pos.service"] in (
        catalog.calls()
    )


async def test_only_pos_units_can_be_restarted(catalog: Catalog) -> None:
    systemctl(catalog, "active")
    for unit in ("sshd.service", "demo-pos", "pos-.service", "demo-pos.service --now"):
        run = await catalog.run("restart-pos-service", {"unit": unit})
        assert run.status == "refused", unit
    assert catalog.calls() == []


# --- resync-clock -------------------------------------------------------------------------------


def chronyc(catalog: Catalog, offset: str) -> None:
    catalog.tool(
        "/usr/bin/chronyc",
        f"""
        if sys.argv[1] == 'tracking':
            print('Reference ID    : C0A80101 (ntp.local)')
            print('System time     : {offset} seconds slow of NTP time')
        """,
    )


async def test_clock_is_stepped_with_chrony(catalog: Catalog) -> None:
    chronyc(catalog, "12.500000")
    run = await catalog.run("resync-clock", {})
    assert run.status == "succeeded", run
    assert catalog.calls() == [
        ["/usr/bin/chronyc", "tracking"],
        ["/usr/bin/chronyc", "makestep"],
        ["/usr/bin/chronyc", "tracking"],
    ]
    assert "offset before: -12.5 s" in run.stdout


async def test_a_step_over_the_limit_needs_a_person(catalog: Catalog) -> None:
    chronyc(catalog, "7200.000000")
    run = await catalog.run("resync-clock", {})
    assert (run.status, run.result.exit_code) == ("failed", 4), run
    assert ["/usr/bin/chronyc", "makestep"] not in catalog.calls()


async def test_clock_without_chrony_uses_timedatectl(catalog: Catalog) -> None:
    catalog.tool("/usr/bin/timedatectl", "print('NTPSynchronized=yes')")
    run = await catalog.run("resync-clock", {})
    assert run.status == "succeeded", run
    assert catalog.calls() == [
        ["/usr/bin/timedatectl", "set-ntp", "true"],
        ["/usr/bin/timedatectl", "show", "-p", "NTPSynchronized"],
    ]


# --- clean-temp-folders -------------------------------------------------------------------------


def aged(path: os.PathLike[str], days: float, size: int = 100) -> None:
    with open(path, "wb") as f:
        f.write(b"x" * size)
    then = time.time() - days * 86400
    os.utime(path, (then, then))


async def test_temp_cleaning_stays_in_its_folder(
    catalog: Catalog, tmp_path: os.PathLike[str]
) -> None:
    top = catalog.path("/var/tmp/x").parent
    (top / "sub").mkdir()
    aged(top / "old.tmp", 10, 1000)
    aged(top / "sub" / "old2.tmp", 30, 24)
    aged(top / "new.tmp", 1)
    outside = catalog.root / "precious"
    outside.mkdir()
    aged(outside / "keep.db", 100)
    os.symlink(outside, top / "link-to-outside")
    os.symlink(outside / "keep.db", top / "file-link")
    dry = await catalog.run("clean-temp-folders", {"folder": "var_tmp", "dry_run": True})
    assert dry.status == "succeeded", dry
    assert "FREED_BYTES 1024" in dry.stdout
    assert (top / "old.tmp").exists()
    run = await catalog.run("clean-temp-folders", {"folder": "var_tmp", "days": 7})
    assert run.status == "succeeded", run
    assert "FREED_BYTES 1024" in run.stdout
    assert not (top / "old.tmp").exists()
    assert not (top / "sub" / "old2.tmp").exists()
    assert (top / "new.tmp").exists()
    assert (top / "sub").is_dir()
    assert (outside / "keep.db").exists()
    assert (top / "file-link").is_symlink()


async def test_temp_cleaning_refuses_a_folder_that_is_a_link(catalog: Catalog) -> None:
    elsewhere = catalog.root / "elsewhere"
    elsewhere.mkdir()
    aged(elsewhere / "old", 30)
    os.symlink(elsewhere, catalog.path("/tmp"))
    run = await catalog.run("clean-temp-folders", {"folder": "tmp"})
    assert (run.status, run.result.exit_code) == ("failed", 3), run
    assert (elsewhere / "old").exists()
    run = await catalog.run("clean-temp-folders", {"folder": "windows_temp"})
    assert (run.status, run.result.exit_code) == ("failed", 3), run


# --- printer-recover (DLE ENQ, reference §1.3) -------------------------------------------------

JAMMED = {1: 0x1A, 2: 0x52, 3: 0x1A, 4: 0x12}  # offline, error, autocutter error


async def test_printer_recover_sends_dle_enq_2_after_a_cleared_jam(catalog: Catalog) -> None:
    with RefPrinter(JAMMED, on_enq={2: OK}) as device:
        run = await catalog.run("printer-recover", {"host": "127.0.0.1", "tcp_port": device.port})
        assert run.status == "succeeded", run
        assert catalog.consent.asked == ["printer-recover"]
        assert device.enq == [2]
        assert device.other == b""  # nothing but status requests and the one DLE ENQ
        result = run.result_json()
        assert result["recovered"] is True
        assert result["before"]["autocutter"] is True
        assert result["after"]["raw"] == {"1": "0x12", "2": "0x12", "3": "0x12", "4": "0x12"}
        assert "reprint" in run.stdout


@pytest.mark.parametrize(
    ("replies", "refused"),
    [
        ({1: 0x1A, 2: 0x56, 3: 0x12, 4: 0x12}, "needs_person"),  # cover open
        ({1: 0x1A, 2: 0x32, 3: 0x12, 4: 0x72}, "needs_person"),  # paper out
        ({1: 0x1A, 2: 0x52, 3: 0x32, 4: 0x12}, "unrecoverable"),
    ],
)
async def test_printer_recover_refuses_what_a_person_must_fix_and_sends_nothing(
    catalog: Catalog, replies: dict[int, int], refused: str
) -> None:
    with RefPrinter(replies, on_enq={2: OK}) as device:
        run = await catalog.run("printer-recover", {"host": "127.0.0.1", "tcp_port": device.port})
        assert (run.status, run.result.exit_code) == ("failed", 2), run
        assert run.result_json()["refused"] == refused
        assert device.enq == []


async def test_printer_recover_with_nothing_to_recover_or_no_recovery(catalog: Catalog) -> None:
    with RefPrinter(OK) as healthy:
        run = await catalog.run("printer-recover", {"host": "127.0.0.1", "tcp_port": healthy.port})
        assert run.status == "succeeded", run
        assert healthy.enq == []
    with RefPrinter(JAMMED) as stuck:  # the jam was not cleared: DLE ENQ changes nothing
        params = {"host": "127.0.0.1", "tcp_port": stuck.port, "mode": "restart-line"}
        run = await catalog.run("printer-recover", params)
        assert (run.status, run.result.exit_code) == ("failed", 1), run
        assert stuck.enq == [1]
        assert "autocutter" in run.result_json()["still"]


async def test_printer_recover_refused_while_a_sale_is_open(catalog: Catalog) -> None:
    (catalog.data / "pos" / "sale.open").write_text("1")
    with RefPrinter(JAMMED, on_enq={2: OK}) as device:
        run = await catalog.run("printer-recover", {"host": "127.0.0.1", "tcp_port": device.port})
        assert run.status == "refused"
        assert device.asked == []


# --- collect-log-bundle -------------------------------------------------------------------------


async def test_log_bundle_masks_cards_and_secrets_and_is_bounded(catalog: Catalog) -> None:
    logs = catalog.data / "pos" / "logs"  # the folder of the demo profile's [logs] paths
    logs.mkdir()
    (logs / "pos.log").write_text(
        "2026-01-01 ERROR pay card=4111 1111 1111 1111 order=1234567890123 "
        "password=hunter2 member_phone=13812345678\n打印机 缺纸\n"
        "2026-01-01 INFO unionpay 6222 0212 3456 7890 ts 20260101120000123\n",
        encoding="utf-8",
    )
    (logs / "big.log").write_bytes(b"0123456789abcdef\n" * 100_000)
    os.utime(logs / "big.log", (time.time() - 3600, time.time() - 3600))
    (logs / "old.log.gz").write_bytes(b"\x1f\x8b")
    run = await catalog.run("collect-log-bundle", {"source": "pos", "max_kb": 16})
    assert run.status == "succeeded", run
    out = run.stdout
    assert "**** **** **** 1111" in out
    assert "4111 1111 1111 1111" not in out
    assert "1234567890123" in out  # no card range starts with 12: an order number stays readable
    assert "**** **** **** 7890" in out  # fails Luhn, but 62 is UnionPay's range
    assert "20260101120000123" in out  # a timestamp: no card range starts with 20
    assert "hunter2" not in out
    assert "13812345678" not in out
    assert "打印机 缺纸" in out
    assert "old.log.gz" not in out
    assert len(out.encode()) < 16 * 1024 + 2048


async def test_log_bundle_reads_only_the_logs_a_profile_names(catalog: Catalog) -> None:
    from posassist.agent.profile import parse_profile

    decoy = catalog.path("/opt/demo-pos/logs/pos.log")  # the old fixed demo folder
    decoy.write_text("not this one\n")
    catalog.runner.profile = parse_profile('name = "bare"\n[sale]\nopen_file = "/nonexistent"\n')
    run = await catalog.run("collect-log-bundle", {"source": "pos"})
    assert (run.status, run.result.exit_code) == ("failed", 3), run
    assert "names no log files" in run.stderr
    assert run.stdout == ""


# --- fix-printer-port ---------------------------------------------------------------------------

CONFIG = (
    b"\xef\xbb\xbf; demo POS config\r\n[shop]\r\nname = \xe6\xb5\x8b\xe8\xaf\x95\r\n"
    b"[printer]\r\nport = COM3\r\nbaud = 9600\r\n\r\n[db]\r\npath = pos.db\r\n"
)


async def test_printer_address_is_changed_and_verified(
    catalog: Catalog, printer: SimPrinter
) -> None:
    ini = catalog.data / "pos" / "pos.ini"  # where the demo profile's [config] path points
    ini.write_bytes(CONFIG)
    assert printer.tcp_address is not None
    address = "{}:{}".format(*printer.tcp_address)
    run = await catalog.run("fix-printer-port", {"address": address})
    assert run.status == "succeeded", run
    assert run.result.backup_id is not None
    want = CONFIG.replace(
        b"baud = 9600\r\n", b"baud = 9600\r\naddress = " + address.encode() + b"\r\n"
    )
    assert ini.read_bytes() == want
    assert printer.model.status_requests == [1]


async def test_printer_port_change_that_fails_is_restored_byte_for_byte(
    catalog: Catalog,
) -> None:
    ini = catalog.data / "pos" / "pos.ini"
    ini.write_bytes(CONFIG)
    before = hashlib.sha256(CONFIG).hexdigest()
    run = await catalog.run("fix-printer-port", {"port": "/dev/ttyUSB9"})
    assert (run.status, run.result.exit_code) == ("failed", 1), run
    assert "config written" in run.stdout  # it did change the file before failing
    assert [e.kind for e in run.events][-2:] == ["finished", "restored"]
    assert run.result.restore is not None
    assert run.result.restore.verified
    assert hashlib.sha256(ini.read_bytes()).hexdigest() == before


async def test_printer_port_change_to_an_existing_device(catalog: Catalog) -> None:
    ini = catalog.data / "pos" / "pos.ini"
    ini.write_bytes(CONFIG)
    catalog.path("/dev/ttyUSB1").write_text("")
    run = await catalog.run("fix-printer-port", {"port": "/dev/ttyUSB1"})
    assert run.status == "succeeded", run
    assert ini.read_bytes() == CONFIG.replace(b"port = COM3", b"port = /dev/ttyUSB1")


async def test_the_profile_names_the_config_file_section_and_key(catalog: Catalog) -> None:
    from posassist.agent.profile import parse_profile

    ini = catalog.data / "other-pos" / "settings.cfg"
    ini.parent.mkdir()
    ini.write_bytes(b"[Receipt]\nComPort=COM3\n[Kitchen]\nComPort=COM5\n")
    catalog.runner.profile = parse_profile(
        'name = "other"\n[process]\nnames = ["other-pos"]\n'
        '[sale]\nopen_file = "/nonexistent/sale"\n'
        f'[config]\npath = "{ini}"\nprinter_section = "Receipt"\nport_key = "ComPort"\n'
    )
    catalog.runner.placeholders["POS_CONFIG"] = str(ini)
    catalog.path("/dev/ttyUSB1").write_text("")
    run = await catalog.run("fix-printer-port", {"port": "/dev/ttyUSB1"})
    assert run.status == "succeeded", run
    assert ini.read_bytes() == b"[Receipt]\nComPort=/dev/ttyUSB1\n[Kitchen]\nComPort=COM5\n"


async def test_without_a_config_in_the_profile_nothing_runs(catalog: Catalog) -> None:
    from posassist.agent.profile import parse_profile

    catalog.runner.profile = parse_profile(
        'name = "bare"\n[process]\nnames = ["bare-pos"]\n[sale]\nopen_file = "/nonexistent"\n'
    )
    catalog.runner.placeholders.pop("POS_CONFIG", None)
    run = await catalog.run("fix-printer-port", {"port": "/dev/ttyUSB1"})
    assert run.status == "refused", run  # the backup path has no value: refused before it ran
    assert run.result.refusal is not None
    assert run.result.refusal.code == "backup_failed"
    assert "${POS_CONFIG}" in run.result.refusal.en
    assert run.stdout == ""


async def test_a_header_and_a_key_with_comments_are_edited_in_place(catalog: Catalog) -> None:
    """attack 14 F11: ``[printer] ; receipt`` was not seen as the section, so a second
    [printer] was appended, the POS kept reading COM3, and the run said "verified"."""
    ini = catalog.data / "pos" / "pos.ini"
    ini.write_bytes(b"[printer] ; receipt\nport = COM3 ; the receipt printer\n")
    catalog.path("/dev/ttyUSB1").write_text("")
    run = await catalog.run("fix-printer-port", {"port": "/dev/ttyUSB1"})
    assert run.status == "succeeded", run
    assert ini.read_bytes() == b"[printer] ; receipt\nport = /dev/ttyUSB1 ; the receipt printer\n"


async def test_a_utf16_config_is_edited_in_utf16(catalog: Catalog) -> None:
    ini = catalog.data / "pos" / "pos.ini"
    ini.write_bytes("[general]\r\nname=小店\r\n[printer]\r\nport=COM3\r\n".encode("utf-16"))
    catalog.path("/dev/ttyUSB1").write_text("")
    run = await catalog.run("fix-printer-port", {"port": "/dev/ttyUSB1"})
    assert run.status == "succeeded", run
    raw = ini.read_bytes()
    assert raw.startswith(b"\xff\xfe")
    assert raw.decode("utf-16") == "[general]\r\nname=小店\r\n[printer]\r\nport=/dev/ttyUSB1\r\n"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"[shop]\nname = x\n", "no [printer] section"),
        ("[printer]\nport=COM3\n".encode("utf-16-le"), "unknown encoding"),  # no BOM
    ],
)
async def test_a_config_it_can_not_edit_safely_is_left_alone(
    catalog: Catalog, content: bytes, why: str
) -> None:
    ini = catalog.data / "pos" / "pos.ini"
    ini.write_bytes(content)
    catalog.path("/dev/ttyUSB1").write_text("")
    run = await catalog.run("fix-printer-port", {"port": "/dev/ttyUSB1"})
    assert (run.status, run.result.exit_code) == ("failed", 3), run
    assert why in run.stderr
    assert "nothing changed" in run.stderr
    assert ini.read_bytes() == content  # not touched at all


def test_fix_printer_port_backs_up_exactly_the_file_it_edits() -> None:
    manifest, folder = load("fix-printer-port")
    source = (folder / "fix_printer_port.py").read_text(encoding="utf-8")
    assert manifest.backup == ("${POS_CONFIG}",)
    assert 'CONFIG = os.environ.get("POSASSIST_PROFILE_CONFIG", "")' in source
    assert manifest.platforms == ("linux", "windows")


# --- flush-dns ----------------------------------------------------------------------------------


async def test_dns_flush_uses_resolvectl(catalog: Catalog) -> None:
    catalog.tool("/usr/bin/resolvectl", "")
    run = await catalog.run("flush-dns", {"check_host": "localhost"})
    assert run.status == "succeeded", run
    assert catalog.calls() == [["/usr/bin/resolvectl", "flush-caches"]]
    assert "localhost ->" in run.stdout


async def test_dns_flush_without_a_cache_is_fine(catalog: Catalog) -> None:
    run = await catalog.run("flush-dns", {})
    assert run.status == "succeeded", run
    assert "nothing to flush" in run.stdout


# --- reset-usb-serial ---------------------------------------------------------------------------


def fake_sysfs(catalog: Catalog, driver: str) -> tuple[Path, Path]:
    interface = catalog.path("/sys/devices/pci0000:00/usb1/1-1/1-1.2:1.0/ttyUSB0/x").parent.parent
    port = interface / "ttyUSB0"
    drivers = catalog.path(f"/sys/bus/usb/drivers/{driver}/x").parent
    (drivers / "bind").write_text("")
    (drivers / "unbind").write_text("")
    os.symlink(drivers, interface / "driver")
    tty = catalog.path("/sys/class/tty/ttyUSB0/x").parent
    os.symlink(port, tty / "device")
    return drivers / "unbind", drivers / "bind"


async def test_usb_serial_adapter_is_unbound_and_rebound(catalog: Catalog) -> None:
    unbind, bind = fake_sysfs(catalog, "ch341")
    run = await catalog.run("reset-usb-serial", {"device": "ttyUSB0"})
    assert run.status == "succeeded", run
    assert unbind.read_text() == "1-1.2:1.0"
    assert bind.read_text() == "1-1.2:1.0"


async def test_usb_reset_refuses_other_drivers_and_missing_devices(catalog: Catalog) -> None:
    unbind, _ = fake_sysfs(catalog, "usbhid")
    run = await catalog.run("reset-usb-serial", {"device": "ttyUSB0"})
    assert (run.status, run.result.exit_code) == ("failed", 3), run
    assert unbind.read_text() == ""
    run = await catalog.run("reset-usb-serial", {"device": "ttyACM3"})
    assert (run.status, run.result.exit_code) == ("failed", 3), run
