"""Receipt-printer collector: DLE EOT 1-4 status of each printer configured in settings.json.

Polite to the till (reference §0): never while a sale is open, never on a port another process
holds (probe_serial checks), at most once per ``printer_min_interval`` per printer.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, List

from posassist.agent.collectors.escpos import ProbeResult, probe_serial, probe_tcp
from posassist.agent.collectors.pos import sale_open

if TYPE_CHECKING:
    from posassist.agent.diagnostics import DiagContext
    from posassist.agent.settings import PrinterConfig

__all__ = ["collect", "probe_summary"]

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


def _probe(printer: PrinterConfig) -> ProbeResult:
    if printer.host:
        return probe_tcp(printer.host, printer.port, timeout=PROBE_TIMEOUT)
    return probe_serial(printer.serial, printer.baudrate, timeout=PROBE_TIMEOUT)


def collect(ctx: DiagContext) -> Dict[str, Any]:
    """Status of every configured printer, or why it was not asked."""
    printers = ctx.settings.printers
    if not printers:
        return {"printers": [], "note": "no printers configured (settings.json)"}
    why_not = sale_open(ctx.profile)
    rows: List[Dict[str, Any]] = []
    for printer in printers:
        row: Dict[str, Any] = {"name": printer.name, "target": printer.target}
        if why_not:
            # DLE EOT between a sale's print jobs can delay or garble its receipt (§0.2)
            row.update(outcome="skipped", detail="sale open: " + why_not)
        else:
            recent = ctx.limiter.recent(printer.target)
            if recent is not None:
                age, summary = recent
                row.update(summary, cached=True, age_s=round(age, 1))
            else:
                summary = probe_summary(_probe(printer))
                ctx.limiter.record(printer.target, summary)
                row.update(summary, cached=False)
        rows.append(row)
    return {"printers": rows, "checked_at": time.time()}
