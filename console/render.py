"""Turn replies into text for a technician: English with Chinese headings where cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from posassist.protocol.text import printable

__all__ = [
    "facts_summary",
    "local_time",
    "named_zone",
    "printable",
    "printable_data",
    "render_facts",
    "render_report",
    "table",
]

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from datetime import tzinfo

    from posassist.protocol import DiagnosticsReport


def render_report(report: DiagnosticsReport, tz: tzinfo | None = None) -> str:
    """A diagnostics report as text through the agent's own renderer (client/render.py), so the
    till's offline report and the console read alike: the findings first, then each section's
    verdict and readings in words and human units (``--json`` has every raw field).

    Every string from the device passes through :func:`printable`; times show in ``tz`` (the
    store's time zone when the caller knows it, else this console's).
    """
    from posassist.client.render import render_report as render

    body = render({"sections": report.sections}, now=report.collected_at, tz=tz)
    return printable(f"diagnostics of {report.device_id} / 设备诊断\n\n{body}")


# --- tables and times: the one way every listing is printed ------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "") -> str:
    """Rows under their headers, columns aligned by display width (Chinese counts double;
    ``tabulate`` with ``wcwidth``, imported only here). Every cell is made :func:`printable` on
    one line first: a name or detail from the relay can't move the cursor or break the grid.
    ``None`` shows as ``-``. With no rows: ``empty`` alone (a sentence), if given."""
    from tabulate import tabulate

    cells = [[_cell(value) for value in row] for row in rows]
    if not cells and empty:
        return empty
    return str(
        tabulate(
            cells, headers=[_cell(h) for h in headers], tablefmt="simple", disable_numparse=True
        )
    )


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    text = printable(str(value), multiline=False)
    return " ".join(text.split()) or "-"


def local_time(epoch: Any, zone: str | None = None) -> str:
    """An epoch as ``2026-12-06 17:20:05 CST`` in the IANA ``zone`` (a store's), or in this
    console's own zone without one (or with one this machine does not know), through the one
    time renderer (client/render.py ``when``); ``-`` for None, ``?`` for a bad value."""
    if epoch is None:
        return "-"
    from posassist.client.render import when

    return when(epoch, named_zone(zone))


def named_zone(name: Any) -> tzinfo | None:
    """The IANA time zone called ``name`` (a store's), or None for anything this machine does
    not know."""
    if not isinstance(name, str):
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


# --- text from a device: never raw to the terminal ---------------------------------------------

# ``printable`` lives in posassist.protocol.text (the agent and error lines use it too).


def printable_data(value: Any) -> Any:
    """``value`` (JSON-like data from a device) with :func:`printable` applied to every string,
    keys included: for ``--json`` output, which a tool like ``jq -r`` may print raw."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): printable_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable_data(item) for item in value]
    return value


# --- device facts (docs/protocol.md#device-facts): the device's own word, shown as it is ---------
#: Facts shown on their own line, with their English / Chinese label, in this order.
_LABELS = {
    "hostname": "hostname / 主机名",
    "os": "OS / 操作系统",
    "python": "Python",
    "agent_version": "agent / 代理程序",
    "pos_profile": "POS profile / 收银软件",
    "printers": "printers / 打印机",
    "serial_ports": "serial ports / 串口",
}
#: Folded into another line (the OS line, the POS line, a list's count).
_FOLDED = {
    "os_release",
    "os_version",
    "distribution",
    "machine",
    "pos_name",
    "printers_omitted",
    "serial_ports_omitted",
}


def _text(value: Any) -> str:
    """A value from a device as one printable line: no terminal escapes get through."""
    return " ".join(printable(str(value), multiline=False).split())


def _os(facts: Mapping[str, Any]) -> str:
    name = " ".join(_text(facts[k]) for k in ("os", "os_release") if facts.get(k))
    detail = ", ".join(_text(facts[k]) for k in ("distribution", "machine") if facts.get(k))
    return f"{name} ({detail})" if name and detail else name or detail


def _rows(facts: Mapping[str, Any], key: str, fields: tuple[str, ...]) -> list[str]:
    rows = facts.get(key)
    out = []
    for row in rows if isinstance(rows, list | tuple) else ():
        if isinstance(row, dict):
            parts = [_text(row[f]) for f in fields if row.get(f)]
            if parts:
                first, *rest = parts
                out.append(f"{first} ({', '.join(rest)})" if rest else first)
        else:
            out.append(_text(row))
    omitted = facts.get(f"{key}_omitted")
    if isinstance(omitted, int) and not isinstance(omitted, bool) and omitted > 0:
        out.append(f"+{omitted} more / 另有 {omitted} 个")
    return out


def _pos(facts: Mapping[str, Any]) -> str:
    name, profile = facts.get("pos_name"), facts.get("pos_profile")
    if name and profile:
        return f"{_text(name)} ({_text(profile)})"
    return _text(profile or name or "")


def facts_summary(facts: Mapping[str, Any]) -> str:
    """One short line: host, OS, agent version and printers, or "-" when nothing is known."""
    parts = [_text(facts["hostname"])] if facts.get("hostname") else []
    os_name = " ".join(_text(facts[k]) for k in ("os", "os_release") if facts.get(k))
    if os_name:
        parts.append(os_name)
    if facts.get("agent_version"):
        parts.append(f"agent {_text(facts['agent_version'])}")
    printers = facts.get("printers")
    if isinstance(printers, list | tuple) and printers:
        omitted = facts.get("printers_omitted")  # the device's word: counted only if a count
        extra = omitted if isinstance(omitted, int) and not isinstance(omitted, bool) else 0
        count = len(printers) + max(extra, 0)
        parts.append(f"{count} printer{'s' if count != 1 else ''}")
    return " · ".join(parts) or "-"


def render_facts(facts: Mapping[str, Any]) -> list[str]:
    """A device's facts, one indented line each, labelled in English and Chinese."""
    if not facts:
        return ["  (no facts reported yet / 设备尚未上报信息)"]
    lines = []
    for key, label in _LABELS.items():
        if key == "os":
            value = _os(facts)
        elif key == "pos_profile":
            value = _pos(facts)
        elif key == "printers":
            value = "; ".join(_rows(facts, key, ("name", "target", "model")))
        elif key == "serial_ports":
            value = "; ".join(_rows(facts, key, ("device", "usb_id", "product")))
        else:
            value = _text(facts.get(key) or "")
        if value:
            lines.append(f"  {label}: {value}")
    for key in sorted(set(facts) - set(_LABELS) - _FOLDED):  # facts this console has no label for
        lines.append(f"  {_text(key)}: {_text(facts[key])}")
    return lines


def count(number: object, noun: str) -> str:
    """``1 device``, ``3 devices`` (readme-walk 15 L10: "1 devices")."""
    return f"{number} {noun}" + ("" if number == 1 else "s")
