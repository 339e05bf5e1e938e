"""Diagnostics settings in the data directory (``settings.json``): printers, POS profile, limits.

Optional: a till without the file gets defaults (no printers configured, no POS profile).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from posassist.agent.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["PrinterConfig", "Settings", "load_settings", "parse_settings"]


@dataclass(frozen=True)
class PrinterConfig:
    """A receipt printer the POS uses: on a serial port (``/dev/ttyUSB0``, ``COM3``) or TCP.

    A USB-serial printer may be named by its USB identity ``usb`` (``vvvv:pppp[:serial]``, §0.9):
    the port it has now is found by that identity, so a renumbered port is still found, and
    ``serial`` (if given) is the port the POS is configured for.
    """

    name: str
    serial: str = ""
    baudrate: int = 9600
    host: str = ""
    port: int = 9100
    usb: str = ""

    @property
    def target(self) -> str:
        if self.host:
            return f"tcp://{self.host}:{self.port}"
        return self.serial or f"usb:{self.usb}"


@dataclass(frozen=True)
class SerialDeviceConfig:
    """A scale or a serial barcode scanner: listened to (never written to) in an opt-in window."""

    name: str
    serial: str
    baudrate: int = 9600
    parity: str = "N"  # "N" (8N1) or "E"/"O" (7E1/7O1, common on NCI scales, §3.3)
    protocol: str = "toledo"  # scales: "toledo" continuous or Chinese-indicator "ascii"
    listen_s: float = 2.0


@dataclass(frozen=True)
class Settings:
    """What the diagnostics need to know about this till beyond its identity."""

    relay_url: str = ""
    #: the relay's TLS key pin from enrolment (agent.json), for the clock check over HTTPS
    relay_pin: str = ""
    pos_profile: str = ""
    printers: Tuple[PrinterConfig, ...] = ()
    #: a printer is asked for its status at most once in this many seconds (§2.3: be polite)
    printer_min_interval: float = 30.0
    #: per-collector timeouts in seconds, overriding the defaults
    timeouts: Tuple[Tuple[str, float], ...] = ()
    #: scales and serial scanners, for the opt-in ``scale`` and ``scanner`` collectors
    scales: Tuple[SerialDeviceConfig, ...] = ()
    scanners: Tuple[SerialDeviceConfig, ...] = ()
    #: the store's time zone (IANA ``Asia/Shanghai`` or a Windows id), to catch a wrong one (§5 #20)
    time_zone: str = ""
    #: the help window's link (docs/helpwindow.md): ``auto`` (a Unix socket on Linux, loopback
    #: and a secret on Windows), ``unix``, ``tcp``, or ``off``
    help_link: str = "auto"
    #: uids of the desktop users allowed on the link (Unix socket); empty: the agent's own
    desktop_uids: Tuple[int, ...] = ()
    #: scripts whose manifest allows unattended runs: ``ask`` a window if one is open (else run),
    #: ``allow`` without asking, ``require`` an answer like any other script
    unattended_consent: str = "ask"
    #: seconds the merchant has to answer a consent question (no answer: denied, timed_out)
    consent_timeout: float = 120.0


_USB_ID = re.compile(r"^[0-9A-Fa-f]{4}:[0-9A-Fa-f]{4}(?::[\x21-\x7e]{1,64})?$")


def _printer(raw: Any, index: int) -> PrinterConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"settings: printers[{index}] must be an object")
    name = str(raw.get("name") or f"printer{index + 1}")
    if "tcp" in raw:
        host, _, port = str(raw["tcp"]).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"settings: printers[{index}].tcp must be host:port")
        return PrinterConfig(name=name, host=host, port=int(port))
    if "serial" in raw or "usb" in raw:
        baud = raw.get("baudrate", 9600)
        if type(baud) is not int or baud <= 0:
            raise ConfigError(f"settings: printers[{index}].baudrate must be a positive integer")
        usb = raw.get("usb", "")
        if not isinstance(usb, str) or (usb and not _USB_ID.match(usb)):
            raise ConfigError(
                f"settings: printers[{index}].usb must be vvvv:pppp or vvvv:pppp:serial (hex ids)"
            )
        usb = usb[:9].lower() + usb[9:]  # hex ids in lower case, the serial number as it is
        return PrinterConfig(name=name, serial=str(raw.get("serial", "")), baudrate=baud, usb=usb)
    raise ConfigError(f"settings: printers[{index}] needs 'tcp', 'serial' or 'usb'")


def _serial_devices(
    doc: Dict[str, Any], key: str, listen_s: float
) -> Tuple[SerialDeviceConfig, ...]:
    raw = doc.get(key, [])
    if not isinstance(raw, list) or len(raw) > 8:
        raise ConfigError(f"settings: {key} must be a list of at most 8 devices")
    out = []
    for i, dev in enumerate(raw):
        where = f"settings: {key}[{i}]"
        if not isinstance(dev, dict) or not isinstance(dev.get("serial"), str) or not dev["serial"]:
            raise ConfigError(f"{where} needs 'serial' (the port)")
        baud = dev.get("baudrate", 9600)
        if type(baud) is not int or not 300 <= baud <= 921600:
            raise ConfigError(f"{where}.baudrate must be an integer in 300..921600")
        parity = dev.get("parity", "N")
        if parity not in ("N", "E", "O"):
            raise ConfigError(f"{where}.parity must be N, E or O")
        protocol = dev.get("protocol", "toledo")
        if protocol not in ("toledo", "ascii"):
            raise ConfigError(f"{where}.protocol must be toledo or ascii")
        seconds = dev.get("listen_s", listen_s)
        if (
            not isinstance(seconds, (int, float))
            or isinstance(seconds, bool)
            or not 0.5 <= seconds <= 30
        ):
            raise ConfigError(f"{where}.listen_s must be 0.5..30 seconds")
        name = str(dev.get("name") or f"{key[:-1]}{i + 1}")
        out.append(SerialDeviceConfig(name, dev["serial"], baud, parity, protocol, float(seconds)))
    return tuple(out)


def parse_settings(doc: Dict[str, Any], relay_url: str = "") -> Settings:
    """Build settings from the decoded ``settings.json``; ConfigError names a bad field."""
    printers = doc.get("printers", [])
    if not isinstance(printers, list):
        raise ConfigError("settings: printers must be a list")
    interval = doc.get("printer_min_interval", 30.0)
    if not isinstance(interval, (int, float)) or isinstance(interval, bool) or interval < 0:
        raise ConfigError("settings: printer_min_interval must be a number of seconds")
    timeouts = doc.get("timeouts", {})
    if not isinstance(timeouts, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in timeouts.values()
    ):
        raise ConfigError("settings: timeouts must map collector names to seconds")
    return Settings(
        relay_url=str(doc.get("relay_url", relay_url)),
        pos_profile=str(doc.get("pos_profile", "")),
        printers=tuple(_printer(p, i) for i, p in enumerate(printers)),
        printer_min_interval=float(interval),
        timeouts=tuple((str(k), float(v)) for k, v in timeouts.items()),
        scales=_serial_devices(doc, "scales", 2.0),
        scanners=_serial_devices(doc, "scanners", 10.0),
        time_zone=_time_zone(doc.get("time_zone", "")),
        **_help(doc),
    )


def _help(doc: Dict[str, Any]) -> Dict[str, Any]:
    link = doc.get("help_link", "auto")
    if link not in ("auto", "unix", "tcp", "off"):
        raise ConfigError("settings: help_link must be auto, unix, tcp or off")
    uids = doc.get("desktop_uids", [])
    if not isinstance(uids, list) or not all(type(u) is int and u >= 0 for u in uids):
        raise ConfigError("settings: desktop_uids must be a list of user ids (integers >= 0)")
    policy = doc.get("unattended_consent", "ask")
    if policy not in ("ask", "allow", "require"):
        raise ConfigError("settings: unattended_consent must be ask, allow or require")
    timeout = doc.get("consent_timeout", 120.0)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 1 <= timeout <= 900
    ):
        raise ConfigError("settings: consent_timeout must be 1..900 seconds")
    return {
        "help_link": link,
        "desktop_uids": tuple(uids),
        "unattended_consent": policy,
        "consent_timeout": float(timeout),
    }


def _time_zone(value: Any) -> str:
    if (
        not isinstance(value, str)
        or len(value) > 64
        or not re.match(r"^[A-Za-z0-9/_+ .-]*$", value)
    ):
        raise ConfigError("settings: time_zone must be a zone name such as Asia/Shanghai")
    return value


def load_settings(data_dir: Path) -> Settings:
    """Read ``settings.json`` (optional) and the relay URL and pin from ``agent.json`` (if any)."""
    relay_url = pin = ""
    try:
        agent = json.loads((data_dir / "agent.json").read_text(encoding="utf-8"))
        relay_url = str(agent["relay_url"])
        pin = str(agent.get("tls_pin") or "")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    path = data_dir / "settings.json"
    try:
        text: Optional[str] = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    if text is None:
        return Settings(relay_url=relay_url, relay_pin=pin)
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: must hold a JSON object")
    return dataclasses.replace(parse_settings(doc, relay_url), relay_pin=pin)
