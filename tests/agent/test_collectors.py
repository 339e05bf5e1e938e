"""Collectors' pure parsers on fixture text, and their thin I/O parts against real things."""

from __future__ import annotations

import stat
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest

from posassist.agent.collectors import network, pos, printqueue, system
from posassist.agent.errors import CollectorError, CollectorTimeout, ConfigError
from posassist.agent.profile import PROFILE_DIR, load_profile, parse_profile

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


# --- POS profiles and the TOML subset -------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(PROFILE_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_profile_loads(path: Path) -> None:
    assert tomllib.loads(path.read_text(encoding="utf-8"))["name"] == path.stem
    assert load_profile(path.stem, Path("/srv/till")).name == path.stem


@pytest.mark.parametrize(
    "text",
    [
        'name = "x"\nname = "y"',
        'name = "unterminated',
        'name = "x"\na = [1, 2',
        'name = "x"\n= 1',
        'name = "x"\n[logs\n',
    ],
)
def test_profile_that_is_not_toml_is_refused_naming_the_line(text: str) -> None:
    with pytest.raises(
        ConfigError, match=r"profile: not valid TOML: .*\((at line \d|at end of document)"
    ):
        parse_profile(text)


def test_profile_with_bad_regex_is_refused_when_loaded() -> None:
    with pytest.raises(ConfigError, match="bad pattern"):
        parse_profile('name = "x"\n[logs]\nerror_patterns = ["(unclosed"]\n')


# --- system ---------------------------------------------------------------------------------------


def test_os_release_parses_quoted_values_and_skips_junk() -> None:
    text = (FIXTURES / "system" / "os-release-ubuntu2004.txt").read_text()
    info = system.parse_os_release(text)
    assert info["PRETTY_NAME"] == "Ubuntu 20.04.6 LTS"
    assert info["ID"] == "ubuntu"
    assert "broken line" not in info


class _Proc:
    """A process_iter entry: psutil's own exceptions, as a real walk raises them."""

    def __init__(self, info=None, raises=None) -> None:
        self._info, self._raises = info, raises

    @property
    def info(self):
        if self._raises is not None:
            raise self._raises
        return self._info


def test_process_walk_survives_access_denied_and_vanished_processes() -> None:
    def walk(attrs, ad_value):
        assert ad_value is None
        assert "open_files" not in attrs
        yield _Proc({"pid": 1, "name": "init", "username": None, "memory_info": None})
        yield _Proc(raises=psutil.NoSuchProcess(4242))
        yield _Proc(raises=psutil.AccessDenied(4))
        yield _Proc(raises=psutil.ZombieProcess(77))
        yield _Proc({"pid": 9, "name": "pos", "username": "u", "memory_info": None})

    rows = system.process_rows(walk)
    assert [r["pid"] for r in rows["rows"]] == [1, 9]
    assert rows["vanished"] == 2  # ZombieProcess is a NoSuchProcess
    assert rows["access_denied"] == 3  # the refused call, and two rows with denied fields


def test_process_walk_of_real_processes_that_exit_mid_walk() -> None:
    children = [psutil.Popen([sys.executable, "-c", "pass"]) for _ in range(5)]
    procs = [psutil.Process(c.pid) for c in children]
    for c in children:
        c.wait()
    rows = system.process_rows(lambda attrs, ad_value: iter(procs))
    assert rows["count"] + rows["vanished"] == 5


def test_top_processes_orders_by_memory_and_keeps_refused_values() -> None:
    rows = [{"pid": 1, "rss": None}, {"pid": 2, "rss": 5}, {"pid": None, "rss": 9}]
    assert [r["pid"] for r in system.top_processes(rows, 5)] == [2, 1]


def test_system_collect_on_this_machine() -> None:
    data = system.collect(None)
    assert data["processes"]["count"] > 0
    assert data["memory"]["total"] > 0


# --- network --------------------------------------------------------------------------------------


def test_clock_offset_uses_the_shortest_round_trip() -> None:
    # relay 5 s ahead; the second sample waited in a queue
    samples = [(100.0, 105.05, 100.1), (200.0, 205.4, 200.9)]
    assert network.clock_offset(samples) == {"offset_s": 5.0, "rtt_s": 0.1, "samples": 2}
    assert network.clock_offset([]) is None


def test_relay_probe_reports_refused_connect(unused_port: int) -> None:
    out = network.probe_relay(f"ws://127.0.0.1:{unused_port}")
    assert out["dns"]["ok"] is True
    assert out["tcp"]["ok"] is False


# --- POS application ---------------------------------------------------------------------------


def _demo(tmp_path: Path):
    (tmp_path / "pos" / "logs").mkdir(parents=True)
    return load_profile("demo", tmp_path)


def test_pos_logs_are_redacted_and_gbk_lines_decoded(tmp_path: Path) -> None:
    profile = _demo(tmp_path)
    log = Path(profile.log_paths[0])
    log.write_bytes(
        b"INFO start\n"
        b"ERROR pay failed card 4111 1111 1111 1111 password=hunter2\n"
        + "ERROR 打印机 缺纸\n".encode("gbk")
        + b"INFO member_phone=13800138000 ok\n"
    )
    logs = pos._logs(profile)
    (entry,) = logs
    assert entry["error_count"] == 2
    text = "\n".join(entry["recent_errors"])
    assert "4111 1111 1111 1111" not in text
    assert "**** **** **** 1111" in text
    assert "hunter2" not in text
    assert "打印机 缺纸" in text
    assert entry["gb18030_lines"] == 1


def test_sale_open_follows_the_profile_file(tmp_path: Path) -> None:
    profile = _demo(tmp_path)
    assert pos.sale_open(profile, []) is None
    Path(profile.sale_open_file).write_text("1")
    assert pos.sale_open(profile, []) == "file " + profile.sale_open_file


def test_find_processes_is_case_insensitive_and_skips_refused_names() -> None:
    rows = [(5, "POS.EXE", 10.0), (6, None, 1.0), (7, "pos.exe", 5.0)]
    assert [p["pid"] for p in pos.find_processes(rows, ["pos.exe"])] == [7, 5]


def test_systemctl_output_maps_to_units() -> None:
    assert pos.parse_systemctl_is_active("active\ninactive\n", ["a", "b", "c"]) == {
        "a": "active",
        "b": "inactive",
        "c": "unknown",
    }


# --- print queue ----------------------------------------------------------------------------------


def test_lpstat_printers_show_disabled_queue_and_reason() -> None:
    text = (FIXTURES / "printqueue" / "lpstat-p.txt").read_text()
    printers = {p["name"]: p for p in printqueue.parse_lpstat_printers(text)}
    assert printers["Kitchen_TM_T20"]["state"] == "disabled"
    assert printers["Kitchen_TM_T20"]["reasons"] == ["/usr/lib/cups/backend/usb failed"]
    assert printers["Receipt_80mm"] == {
        "name": "Receipt_80mm",
        "state": "idle",
        "enabled": True,
        "reasons": [],
    }
    assert printers["Label_58"]["state"] == "printing"


def test_lpstat_jobs() -> None:
    jobs = printqueue.parse_lpstat_jobs((FIXTURES / "printqueue" / "lpstat-o.txt").read_text())
    assert [(j["queue"], j["size"]) for j in jobs] == [
        ("Kitchen_TM_T20", 3072),
        ("Kitchen_TM_T20", 2048),
        ("Label_58", 512),
    ]
    # the till's local time: the same wall-clock reading mktime gives
    expected = time.mktime(time.strptime("2026-11-25 11:58:01", "%Y-%m-%d %H:%M:%S"))
    assert jobs[0]["submitted_at"] == expected
    assert jobs[1]["submitted_at"] == expected + 314  # 12:03:15 PM


def test_lpstat_and_wmic_times_parse_or_give_none() -> None:
    c_locale = printqueue.parse_lpstat_time("Wed Nov 25 11:58:01 2026")
    assert c_locale == printqueue.parse_lpstat_time("Wed 25 Nov 2026 11:58:01 AM CST")
    assert printqueue.parse_lpstat_time("sometime yesterday") is None
    assert printqueue.parse_lpstat_time("") is None
    # 11:58:02.123 at UTC+8 is 03:58:02.123 UTC
    assert printqueue.parse_wmic_time("20261125115802.123000+480") == pytest.approx(1795579082.123)
    assert printqueue.parse_wmic_time("20261125115802") == 1795607882.0
    for junk in ("", "2026112511", "20261399115802.000000+480", "garbage"):
        assert printqueue.parse_wmic_time(junk) is None


def test_windows_spooler_listing_finds_offline_printer_and_stuck_job() -> None:
    report = printqueue.windows_queue(
        # bytes decoded as the collector decodes the pipe (read_text makes CR CR LF two lines)
        (FIXTURES / "printqueue" / "wmic-printer.txt").read_bytes().decode("utf-8"),
        (FIXTURES / "printqueue" / "wmic-printjob.txt").read_bytes().decode("utf-8"),
    )
    printers = {p["name"]: p for p in report["printers"]}
    assert printers["厨房打印机"]["state"] == "offline"
    assert printers["EPSON TM-T88V Receipt"]["default"] is True
    assert [(j["id"], j["stuck"]) for j in report["jobs"]] == [("12", True), ("13", False)]
    assert report["jobs"][0]["queue"] == "EPSON TM-T88V Receipt"
    assert report["jobs"][0]["submitted_at"] == pytest.approx(1795579082.123)


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "lpstat"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_cups_queue_runs_lpstat_by_argv(tmp_path: Path) -> None:
    fixture = FIXTURES / "printqueue"
    lpstat = _script(
        tmp_path,
        '[ "$LC_ALL" = C ] || exit 3\n'
        '[ "$1" = -r ] && echo "scheduler is running"\n'
        f'[ "$1" = -p ] && cat "{fixture}/lpstat-p.txt"\n'
        f'[ "$1" = -o ] && cat "{fixture}/lpstat-o.txt"\n'
        "exit 0\n",
    )
    data = printqueue.collect(None, lpstat=lpstat)
    assert data["scheduler_running"] is True
    assert len(data["printers"]) == 3
    assert len(data["jobs"]) == 3


def test_garbage_from_lpstat_is_unreadable_not_an_empty_ok_queue(tmp_path: Path) -> None:
    from posassist.agent.findings import annotate

    lpstat = _script(
        tmp_path,
        '[ "$1" = -r ] && echo "scheduler is running" && exit 0\n'
        '[ "$1" = -p ] && printf "\\033[31m\\377\\376 imprimante ???\\n" && exit 0\n'
        "exit 0\n",
    )
    data = printqueue.collect(None, lpstat=lpstat)
    assert data["printers"] == []
    (part,) = data["unreadable"]
    assert part["source"] == "lpstat -p"
    report: dict[str, Any] = {"sections": {"print_queue": {"ok": True, "data": data}}}
    annotate(report, None, time.time())
    section = report["sections"]["print_queue"]
    assert section["status"] == "unreadable"
    (finding,) = section["findings"]
    assert finding["code"] == "collector.unreadable"
    assert "lpstat -p said" in finding["detail"]["en"]
    wmic_empty = printqueue.windows_queue("\r\nNo Instance(s) Available.\r\n", "")
    assert "unreadable" not in wmic_empty


def test_a_stopped_cups_scheduler_is_a_finding_not_a_failed_section(tmp_path: Path) -> None:
    from posassist.agent.findings import evaluate

    # lpstat -r says so and exits 1; -p and -o would fail ("lpstat: Bad file descriptor")
    lpstat = _script(
        tmp_path,
        '[ "$1" = -r ] && { echo "scheduler is not running"; exit 1; }\n'
        'echo "lpstat: Bad file descriptor" >&2; exit 1\n',
    )
    data = printqueue.collect(None, lpstat=lpstat)
    assert data == {"system": "cups", "scheduler_running": False, "printers": [], "jobs": []}
    report = {"sections": {"print_queue": {"ok": True, "data": data}}}
    (finding,) = evaluate(report, None, time.time())
    assert finding.code == "queue.cups_stopped"


def test_a_stopped_windows_spooler_offers_the_spooler_reset() -> None:
    from posassist.agent.findings import evaluate

    data = {"system": "windows-spooler", "spooler": "stopped", "printers": [], "jobs": []}
    report = {"sections": {"print_queue": {"ok": True, "data": data}}}
    (finding,) = evaluate(report, None, time.time())
    assert finding.code == "queue.spooler_stopped"
    assert finding.to_dict("windows")["script"] == {"id": "spooler-reset-windows", "risk": "B"}
    assert finding.to_dict("linux")["script"] is None  # a Windows-only fix, never on Linux
    data["spooler"] = "running"
    assert evaluate(report, None, time.time()) == []


def test_hanging_lpstat_is_killed_at_its_timeout(tmp_path: Path) -> None:
    lpstat = _script(tmp_path, "exec sleep 30\n")
    started = time.monotonic()
    with pytest.raises(CollectorTimeout):
        printqueue.run_tool([lpstat, "-p"], timeout=0.5)
    assert time.monotonic() - started < 5


def test_tools_run_only_by_absolute_path() -> None:
    with pytest.raises(CollectorError, match="absolute"):
        printqueue.run_tool(["lpstat", "-p"], timeout=1)


def test_no_cups_is_a_note_not_a_failed_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A till that prints straight to its printers (network, serial) has no spooler: the
    section reads "none" and the findings say so as a note, not "unreadable"."""
    from posassist.agent.findings import evaluate

    monkeypatch.setattr(printqueue, "LPSTAT_PATHS", (str(tmp_path / "lpstat"),))
    data = printqueue.collect(None)
    assert data == {"system": "none", "printers": [], "jobs": []}
    report = {"sections": {"print_queue": {"ok": True, "data": data}}}
    (finding,) = [f for f in evaluate(report, None, 0.0) if f.section == "print_queue"]
    assert (finding.code, finding.severity.value) == ("queue.no_spooler", "info")


def test_settings_name_a_printer_by_usb_identity_or_refuse_a_bad_one() -> None:
    from posassist.agent.errors import ConfigError
    from posassist.agent.settings import parse_settings

    settings = parse_settings({"printers": [{"name": "r", "usb": "0416:5011:PRN-42/A"}]})
    (printer,) = settings.printers
    assert printer.usb == "0416:5011:PRN-42/A"
    assert printer.target == "usb:0416:5011:PRN-42/A"
    upper = parse_settings({"printers": [{"usb": "04B8:0E15", "serial": "COM3"}]}).printers[0]
    assert (upper.usb, upper.serial) == ("04b8:0e15", "COM3")
    for bad in ("0416", "0416:50111", "zz16:5011", "0416:5011:", "0416:5011:has space", 416):
        with pytest.raises(ConfigError, match=r"printers\[0\]\.usb must be"):
            parse_settings({"printers": [{"usb": bad}]})


def test_prober_lines_from_the_journal_name_the_ports_they_touched() -> None:
    from posassist.agent.collectors.serialports import parse_prober_lines

    text = (FIXTURES / "serial" / "journal-modemmanager.txt").read_text()
    found = parse_prober_lines(text)
    assert set(found) == {"ttyACM0", "ttyUSB1"}
    assert found["ttyACM0"]["probers"] == ["ModemManager"]
    assert found["ttyACM0"]["count"] == 3  # the kernel's own line does not count
    assert found["ttyUSB1"]["probers"] == ["ModemManager", "brltty"]
    assert parse_prober_lines("") == {}
    assert parse_prober_lines("ModemManager ttyACM0 without a pid\n") == {}


def test_serial_collector_reads_probers_through_journalctl_by_argv(tmp_path: Path) -> None:
    from posassist.agent.collectors import serialports
    from posassist.agent.findings import evaluate

    fixture = FIXTURES / "serial" / "journal-modemmanager.txt"
    journalctl = _script(tmp_path, f'echo "$@" > "{tmp_path}/argv"\ncat "{fixture}"\n')
    data = serialports.collect(None, journalctl=journalctl)
    argv = (tmp_path / "argv").read_text().split()
    assert argv[-4:] == ["-u", "ModemManager", "-u", "brltty"]
    assert data["probers"]["ports"]["ttyACM0"]["count"] == 3
    report = {"sections": {"serial": {"ok": True, "data": data}}}
    found = {f.subject: f for f in evaluate(report, None, time.time())}
    acm = found["ttyACM0"]
    assert acm.code == "serial.prober_interference"
    assert "ModemManager opened ttyACM0 (3 time(s))" in acm.detail["en"]
    assert "ID_MM_DEVICE_IGNORE" in acm.advice.tech_en
    assert acm.evidence["lines"][-1].endswith("port probe timed out")


def test_old_spool_files_are_stuck_jobs_on_windows() -> None:
    from posassist.agent.findings import evaluate

    now = 1_796_000_000.0
    entries = [
        ("00012.SPL", now - 1800, 40960),
        ("00012.SHD", now - 1800, 1024),
        ("00013.SPL", now - 30, 2048),
        ("desktop.ini", now - 10**6, 100),
    ]
    files = printqueue.spool_files(entries, now)
    assert [f["name"] for f in files] == ["00012.SPL", "00012.SHD", "00013.SPL"]
    data = {"system": "windows-spooler", "spooler": "running", "spool_files": files,
            "printers": [], "jobs": []}  # fmt: skip
    report = {"sections": {"print_queue": {"ok": True, "data": data}}}
    (finding,) = evaluate(report, None, now)
    assert finding.code == "queue.spool_files_stuck"
    assert finding.detail["en"] == "2 file(s) in the spool folder, the oldest 30 min old"
    assert finding.to_dict("windows")["script"] == {"id": "spooler-reset-windows", "risk": "B"}
    assert finding.to_dict("linux")["script"] is None  # a Windows-only fix, never on Linux
