"""Receipt-printer collector: DLE EOT 1-4 status of each printer configured in settings.json.

Polite to the till (reference §0): never while a sale is open, never on a port another process
holds (probe_serial checks), at most once per ``printer_min_interval`` per printer.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from posassist.agent.collectors.escpos import ProbeResult, probe_serial, probe_tcp
from posassist.agent.collectors.pos import sale_open

if TYPE_CHECKING:
    from posassist.agent.collectors.serialports import SerialPort
    from posassist.agent.diagnostics import DiagContext
    from posassist.agent.settings import PrinterConfig

PortLister = Callable[[], Sequence["SerialPort"]]

__all__ = ["collect", "nothing_to_probe", "probe_summary", "resolve_usb"]

#: one printer's whole probe, connect included (§2.3: 2-3 s connect, close at once)
PROBE_TIMEOUT = 2.5


def probe_summary(result: ProbeResult) -> Dict[str, Any]:
    """A probe result as a report row: outcome, problems, decoded fields, raw reply bytes."""
    row: Dict[str, Any] = {
        "target": result.target,
        "outcome": result.outcome.value,
        "detail": result.detail,
        "elapsed_ms": round(result.elapsed * 1000.0, 1),
    }
    status = result.status
    if status is not None:
        row["problems"] = list(status.problems())
        row["status"] = {
            name: getattr(status, name)
            for name in (
                "online",
                "cover_open",
                "paper_near_end",
                "paper_out",
                "cutter_error",
                "recoverable_error",
                "unrecoverable_error",
                "drawer_pin3_high",
            )
        }
        row["replies"] = {str(r.n): r.raw.hex() for r in status.replies}
    if result.held_by:
        row["held_by"] = [{"pid": h.pid, "name": h.name} for h in result.held_by]
    return row


def resolve_usb(
    printer: PrinterConfig, ports: Sequence[SerialPort]
) -> Tuple[Optional[str], Dict[str, Any]]:
    """The port a printer named by USB identity has now, and what the report says about it.

    Returns:
        ``(device or None, fields for the report row)``: ``resolved`` (the port found),
        ``configured`` and ``renumbered`` when it differs from the port in the settings, or an
        outcome ``not_found`` / ``ambiguous`` with a detail when it can't be told.
    """
    from posassist.agent.collectors.serialports import find_by_usb_identity

    matches = find_by_usb_identity(ports, printer.usb)
    if not matches:
        present = ", ".join(sorted(p.usb_id for p in ports if p.usb_id)) or "none"
        detail = f"no serial port with USB id {printer.usb} (USB ports now: {present})"
        return None, {"outcome": "not_found", "detail": detail}
    if len(matches) > 1:
        devices = ", ".join(p.device for p in matches)
        detail = f"{len(matches)} ports match USB id {printer.usb} ({devices}): add its serial"
        return None, {"outcome": "ambiguous", "detail": detail}
    found = matches[0]
    row: Dict[str, Any] = {
        "resolved": {
            "device": found.device,
            "usb_id": found.usb_id,
            "serial_number": found.serial_number,
        }
    }
    if printer.serial and printer.serial != found.device:
        row.update(configured=printer.serial, renumbered=True)
    return found.device, row


def _probe(printer: PrinterConfig, device: str = "") -> ProbeResult:
    if printer.host:
        return probe_tcp(printer.host, printer.port, timeout=PROBE_TIMEOUT)
    return probe_serial(device or printer.serial, printer.baudrate, timeout=PROBE_TIMEOUT)


NO_PRINTERS = "未配置打印机 (settings.json) / no printers configured (settings.json)"


def nothing_to_probe(ctx: DiagContext) -> Optional[Dict[str, Any]]:
    """The section when no printer is configured (no I/O: answered without a worker thread,
    agent/diagnostics.py ``Collector.at_once``), else None."""
    if ctx.settings.printers:
        return None
    return {"printers": [], "note": NO_PRINTERS}


def collect(ctx: DiagContext, list_ports: Optional[PortLister] = None) -> Dict[str, Any]:
    """Status of every configured printer, or why it was not asked.

    Args:
        ctx: settings, profile and the probe limiter.
        list_ports: the till's serial ports, for printers named by USB identity (pyserial's list
            by default).
    """
    nothing = nothing_to_probe(ctx)
    if nothing is not None:
        return nothing
    printers = ctx.settings.printers
    why_not = sale_open(ctx.profile)
    ports: Optional[Sequence[SerialPort]] = None
    rows: List[Dict[str, Any]] = []
    for printer in printers:
        row: Dict[str, Any] = {"name": printer.name, "target": printer.target}
        device = ""
        if printer.usb and not printer.host:
            if ports is None:
                from posassist.agent.collectors.serialports import list_serial_ports

                ports = (list_ports or list_serial_ports)()
            found, fields = resolve_usb(printer, ports)
            row.update(fields)
            if found is None:
                rows.append(row)
                continue
            device = found
            row["target"] = found
        if why_not:
            # DLE EOT between a sale's print jobs can delay or garble its receipt (§0.2)
            row.update(outcome="skipped", detail="sale open: " + why_not)
        else:
            target = device or printer.target
            recent = ctx.limiter.recent(target)
            if recent is not None:
                age, summary = recent
                row.update(summary, cached=True, age_s=round(age, 1))
            else:
                summary = probe_summary(_probe(printer, device))
                ctx.limiter.record(target, summary)
                row.update(summary, cached=False)
        rows.append(row)
    return {"printers": rows, "checked_at": time.time()}
