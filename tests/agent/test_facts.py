"""Device facts: what the till says about itself, cut to the protocol's bounds, probing nothing."""

from __future__ import annotations

import platform

from posassist.agent import __version__
from posassist.agent.collectors.serialports import describe_port
from posassist.agent.facts import MAX_LISTED, clean_text, gather, summarise, system_facts
from posassist.agent.profile import PosProfile
from posassist.agent.settings import PrinterConfig, Settings
from posassist.protocol import Codec, DeviceFacts
from posassist.protocol.messages import MAX_FACTS_TEXT, facts_size

SYSTEM = {
    "hostname": "TILL-01",
    "os": "Windows",
    "os_release": "7",
    "os_version": "6.1.7601",
    "machine": "x86",
    "python": "3.8.10",
    "distribution": "",  # not Linux: left out
}
EPSON = describe_port("COM3", "EPSON TM-T20III", "USB VID:PID=04B8:0E28 SER=X123")
BRIDGE = describe_port("COM4", "USB-SERIAL CH340 (COM4)", "USB VID:PID=1A86:7523")
UART = describe_port("COM1", "Communications Port (COM1)", "ACPI\\PNP0501\\1")
BARE = describe_port("/dev/ttyS0", "n/a", "n/a")


def test_summary_names_the_till_its_printers_and_ports() -> None:
    facts = summarise(
        SYSTEM,
        printers=(
            PrinterConfig(name="收银小票", serial="com3"),
            PrinterConfig(name="kitchen", serial="COM4"),
            PrinterConfig(name="bar", host="10.0.0.9", port=9100),
        ),
        ports=[EPSON, BRIDGE, UART, BARE],
        profile=PosProfile(name="windows-sqlexpress", display_name="SQL Express POS"),
        profile_name="ignored-when-a-profile-loaded",
    )
    assert facts == {
        "hostname": "TILL-01",
        "os": "Windows",
        "os_release": "7",
        "os_version": "6.1.7601",
        "machine": "x86",
        "python": "3.8.10",
        "agent_version": __version__,
        "pos_profile": "windows-sqlexpress",
        "pos_name": "SQL Express POS",
        "printers": [
            # the USB id table knows the printer on COM3 (matched case-insensitively)
            {"name": "收银小票", "target": "com3", "model": "Epson TM-T20III (printer class)"},
            # behind a USB-serial bridge the printer itself is unknown: no model is claimed
            {"name": "kitchen", "target": "COM4", "model": None},
            {"name": "bar", "target": "tcp://10.0.0.9:9100", "model": None},
        ],
        "serial_ports": [
            {"device": "COM3", "usb_id": "04b8:0e28", "product": "Epson TM-T20III (printer class)"},
            {"device": "COM4", "usb_id": "1a86:7523", "product": "WCH CH340 USB-serial"},
            {"device": "COM1", "usb_id": None, "product": "Communications Port (COM1)"},
            {"device": "/dev/ttyS0", "usb_id": None, "product": None},
        ],
    }
    DeviceFacts(facts=facts)


def test_summary_without_ports_or_profile_claims_neither() -> None:
    facts = summarise({"hostname": "till"}, ports=None, profile_name="broken-profile")
    assert facts == {
        "hostname": "till",
        "agent_version": __version__,
        "pos_profile": "broken-profile",  # configured, though it did not load
        "printers": [],
    }


def test_device_text_loses_control_characters_and_is_cut() -> None:
    assert clean_text("TM\x1b[2J-T20\r\nIII\x9b", 64) == "TM [2J-T20 III"
    assert clean_text("x" * 70, 64) == "x" * 63 + "…"
    assert clean_text(None, 8) == "None"
    hostile = describe_port("COM9", "\x1b]0;owned\x07" + "P" * 300, "n/a")
    facts = summarise({"hostname": "\x00" + "h" * 500}, ports=[hostile])
    assert facts["hostname"] == "h" * 127 + "…"
    (row,) = facts["serial_ports"]
    assert row["product"].startswith("]0;owned P")
    assert len(row["product"]) == 64
    DeviceFacts(facts=facts)


def test_long_lists_are_cut_and_counted() -> None:
    printers = [PrinterConfig(name=f"p{i}", serial=f"COM{i}") for i in range(MAX_LISTED + 3)]
    ports = [describe_port(f"COM{i}", "x", "n/a") for i in range(MAX_LISTED + 1)]
    facts = summarise({}, printers=printers, ports=ports)
    assert [p["name"] for p in facts["printers"]] == [f"p{i}" for i in range(MAX_LISTED)]
    assert facts["printers_omitted"] == 3
    assert len(facts["serial_ports"]) == MAX_LISTED
    assert facts["serial_ports_omitted"] == 1


def test_the_largest_summary_still_fits_the_protocol() -> None:
    long = "长" * 1000
    facts = summarise(
        {key: long for key in SYSTEM},
        printers=[PrinterConfig(name=long, serial=long + str(i)) for i in range(50)],
        ports=[describe_port(long + str(i), long, "USB VID:PID=04B8:0E28") for i in range(50)],
        profile=PosProfile(name=long, display_name=long),
    )
    assert 0 < facts_size(facts) <= MAX_FACTS_TEXT
    message = DeviceFacts(facts=facts)
    codec = Codec()
    decoded = codec.decode(codec.encode(message))
    assert isinstance(decoded, DeviceFacts)
    assert decoded.facts["hostname"] == long[:127] + "…"


def test_system_facts_are_this_machine() -> None:
    facts = system_facts()
    assert facts["hostname"] == platform.node()
    assert facts["python"] == platform.python_version()
    assert facts["os"] == platform.system()


def test_gather_reads_settings_and_lists_ports_without_opening_them(printer) -> None:  # type: ignore[no-untyped-def]
    from posassist.agent.diagnostics import DiagContext

    pty = printer.start_pty()  # a port that answers; gathering facts must not ask it anything
    ctx = DiagContext(
        Settings(pos_profile="demo", printers=(PrinterConfig(name="receipt", serial=pty),))
    )
    facts = gather(ctx)
    assert facts["hostname"] == platform.node()
    assert facts["printers"] == [{"name": "receipt", "target": pty, "model": None}]
    assert facts["pos_profile"] == "demo"
    assert isinstance(facts.get("serial_ports", []), list)
    assert printer.bytes_received == 0  # not one byte reached the printer
    assert gather(None)["printers"] == []
    DeviceFacts(facts=facts)
