"""Device facts: a small summary of the till the relay keeps with its presence (protocol v2).

Pure :func:`summarise` clips what the collectors' cheap parts know to docs/protocol.md#device-facts;
:func:`gather` reads them and probes nothing: no port opened, no printer asked, no process walked.
"""

from __future__ import annotations

import logging
import platform
import re
import sys
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence

from . import __version__

if TYPE_CHECKING:
    from posassist.agent.collectors.serialports import SerialPort
    from posassist.agent.diagnostics import DiagContext
    from posassist.agent.profile import PosProfile
    from posassist.agent.settings import PrinterConfig

__all__ = ["MAX_LISTED", "clean_text", "gather", "summarise", "system_facts"]

log = logging.getLogger("posassist.agent")

#: Printers and serial ports listed at most; how many more there were is counted.
MAX_LISTED = 8
#: Characters kept of one top-level string, and of one string inside a printer or a port. With
#: these, the most this module can send stays under the protocol's 8,192 characters in total.
MAX_TEXT = 128
MAX_ITEM_TEXT = 64

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def clean_text(value: object, limit: int) -> str:
    """``value`` as one line of at most ``limit`` characters: control characters (a USB
    descriptor, a printer name) become a space, and a cut is marked with "…"."""
    text = _CONTROL.sub(" ", str(value)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _printer_row(printer: PrinterConfig, ports: Sequence[SerialPort]) -> Dict[str, Any]:
    model = None
    # the printer's port, if pyserial lists it (Windows port names are case-insensitive)
    port = next(
        (p for p in ports if printer.serial and p.device.lower() == printer.serial.lower()), None
    )
    known = port.known if port is not None else None
    if known is not None and known.kind.value == "receipt_printer":
        model = clean_text(f"{known.vendor} {known.product}", MAX_ITEM_TEXT)
    return {
        "name": clean_text(printer.name, MAX_ITEM_TEXT),
        "target": clean_text(printer.target, MAX_ITEM_TEXT),
        "model": model,
    }


def _port_row(port: SerialPort) -> Dict[str, Any]:
    known = port.known
    if known is not None:
        product: Optional[str] = f"{known.vendor} {known.product}"
    elif port.description and port.description != "n/a":
        product = port.description
    else:
        product = None
    return {
        "device": clean_text(port.device, MAX_ITEM_TEXT),
        "usb_id": port.usb_id,
        "product": None if product is None else clean_text(product, MAX_ITEM_TEXT),
    }


def _listed(facts: Dict[str, Any], key: str, rows: List[Dict[str, Any]]) -> None:
    facts[key] = rows[:MAX_LISTED]
    if len(rows) > MAX_LISTED:
        facts[key + "_omitted"] = len(rows) - MAX_LISTED


def summarise(
    system: Mapping[str, Any],
    *,
    printers: Sequence[PrinterConfig] = (),
    ports: Optional[Sequence[SerialPort]] = None,
    profile: Optional[PosProfile] = None,
    profile_name: str = "",
) -> Dict[str, Any]:
    """The facts to send, within the protocol's bounds (docs/protocol.md#device-facts).

    Args:
        system: :func:`system_facts` (or a captured copy); empty values are left out.
        printers: the printers configured in settings.json.
        ports: the serial ports pyserial lists, or None when they could not be listed (then
            ``serial_ports`` is left out rather than claimed empty).
        profile: the loaded POS profile, if any.
        profile_name: the profile settings.json names (shown when it failed to load).

    Returns:
        A map fit for ``DeviceFacts.facts``.
    """
    facts: Dict[str, Any] = {}
    for key in ("hostname", "os", "os_release", "os_version", "distribution", "machine", "python"):
        value = system.get(key)
        if value:
            facts[key] = clean_text(value, MAX_TEXT)
    facts["agent_version"] = clean_text(__version__, MAX_TEXT)
    name = profile.name if profile is not None else profile_name
    if name:
        facts["pos_profile"] = clean_text(name, MAX_TEXT)
    if profile is not None and profile.display_name:
        facts["pos_name"] = clean_text(profile.display_name, MAX_TEXT)
    _listed(facts, "printers", [_printer_row(p, ports or ()) for p in printers])
    if ports is not None:
        _listed(facts, "serial_ports", [_port_row(p) for p in ports])
    return facts


def system_facts() -> Dict[str, str]:
    """Host name, OS, machine and Python, as the system collector reports them (blocking: on
    Windows the platform module may read the registry or run ``ver``)."""
    from posassist.agent.collectors.system import parse_os_release

    facts = {
        "hostname": platform.node(),
        "os": platform.system(),
        "os_release": platform.release(),
        "os_version": platform.version(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    if sys.platform.startswith("linux"):
        try:
            with open("/etc/os-release", encoding="utf-8") as f:
                facts["distribution"] = parse_os_release(f.read()).get("PRETTY_NAME", "")
        except OSError:
            pass
    return facts


def gather(ctx: Optional[DiagContext]) -> Dict[str, Any]:
    """Read and summarise the facts; blocking, so run it in a worker. Ports are only listed
    (pyserial's enumeration), never opened; a part that fails is left out."""
    from posassist.agent.collectors.serialports import list_serial_ports

    ports: Optional[List[SerialPort]]
    try:
        ports = list_serial_ports()
    except Exception as exc:  # no pyserial, or the OS refused the enumeration
        log.debug("serial ports left out of the facts: %s", type(exc).__name__)
        ports = None
    if ctx is None:
        return summarise(system_facts(), ports=ports)
    return summarise(
        system_facts(),
        printers=ctx.settings.printers,
        ports=ports,
        profile=ctx.profile,
        profile_name=ctx.settings.pos_profile,
    )
