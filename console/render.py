"""Turn replies into text for a technician: English with Chinese headings where cheap."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protocol import DiagnosticsReport


def render_report(report: DiagnosticsReport) -> str:
    """A diagnostics report as indented text, one section per collector."""
    lines = [f"diagnostics of {report.device_id} / 设备诊断"]
    for name in sorted(report.sections):
        section = report.sections[name]
        ok = section.get("ok") if isinstance(section, dict) else None
        mark = "ok" if ok else ("FAILED" if ok is False else "")
        lines.append(f"\n[{name}] {mark}")
        lines.extend(
            _walk(section.get("data", section) if isinstance(section, dict) else section, 1)
        )
        if isinstance(section, dict) and section.get("error"):
            lines.append(f"  error: {section['error']}")
    return "\n".join(lines)


def _when(epoch: float) -> str:
    """An epoch time in this console's local time zone, to the second."""
    return datetime.fromtimestamp(epoch).astimezone().isoformat(sep=" ", timespec="seconds")


def _walk(value: Any, depth: int) -> list[str]:
    pad = "  " * depth
    if isinstance(value, dict):
        out: list[str] = []
        for key, item in value.items():
            if isinstance(item, dict | list | tuple):
                out.append(f"{pad}{key}:")
                out.extend(_walk(item, depth + 1))
            elif key.endswith("_at") and isinstance(item, int | float) and item > 1e9:
                out.append(f"{pad}{key}: {_when(item)}")
            else:
                out.append(f"{pad}{key}: {item}")
        return out
    if isinstance(value, list | tuple):
        out = []
        for item in value[:20]:
            out.extend(
                _walk(item, depth) if isinstance(item, dict | list | tuple) else [f"{pad}- {item}"]
            )
        if len(value) > 20:
            out.append(f"{pad}… {len(value) - 20} more")
        return out
    return [f"{pad}{value}"]
