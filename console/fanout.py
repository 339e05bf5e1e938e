"""One request to every device of a store: `posassist diag --store S`, `run --store S SCRIPT`.

The devices come from ``GET /v1/devices`` (the caller's scope; the relay checks it again).
``diag --store`` is one ``POST /v1/stores/{id}/diag``: the relay asks every device and answers
once (:func:`store_results`). ``run --store`` sends one request per device over one console
connection, paced below the relay's per-user limit (a burst of 50, then 20 a second;
relay/config.py ``console_burst``/``console_rate``) and at most :data:`MAX_IN_FLIGHT` at once.
One line per device says how it went; a device that is offline or refuses gets its line.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from posassist.protocol import (
    DiagnosticsReport,
    DiagnosticsRequest,
    ErrorReply,
    ScriptFinished,
    ScriptRunRequest,
)

from .render import count, printable

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from posassist.protocol import Message

    from .connection import ConsoleConnection

#: Requests in flight on the one connection (the relay allows 64 per console).
MAX_IN_FLIGHT = 48
#: The relay's default per-user limit: a burst, then so many a second.
BURST = 40
RATE = 18.0
#: A request refused as ``rate_limited`` is sent again this many times at most.
MAX_RETRIES = 5


@dataclass
class DeviceResult:
    """How one device answered: ``status`` is its report's verdict (``ok``, ``info``, ``warning``,
    ``unreadable``, ``fault``, ``critical``), a script's final status, or an error code."""

    device: str
    status: str
    seconds: float
    summary: str = ""
    report: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "info", "succeeded")


class Pacer:
    """The client's side of the relay's token bucket, so a big store is not refused."""

    def __init__(self, burst: float = BURST, rate: float = RATE) -> None:
        self.tokens, self.burst, self.rate = burst, burst, rate
        self.updated = time.monotonic()

    async def wait_turn(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


def store_devices(devices: Sequence[dict[str, Any]], store: str) -> list[str]:
    """The ids of ``store``'s active devices, in the relay's order."""
    return [
        str(d["id"]) for d in devices if d.get("store_id") == store and d.get("status") == "active"
    ]


#: A section's verdict (docs/findings.md), mildest first; a report's is its worst section's.
VERDICTS = ("ok", "info", "warning", "unreadable", "fault", "critical")


def _verdict(section: object) -> str:
    """A section's status from its findings; one without (an older agent) by whether it ran."""
    if isinstance(section, dict):
        status = section.get("status")
        if status in VERDICTS:
            return str(status)
        return "ok" if section.get("ok") is True else "unreadable"
    return "unreadable"


def diag_verdict(report: DiagnosticsReport) -> str:
    """The worst section's verdict: what the device's line says (``ok`` only when nothing is
    wrong: a probe that ran is not ok when it found a fault)."""
    return sections_verdict(report.sections)


def sections_verdict(sections: Mapping[str, Any]) -> str:
    """:func:`diag_verdict` of a report's sections."""
    return max((_verdict(s) for s in sections.values()), key=VERDICTS.index, default="ok")


def diag_summary(report: DiagnosticsReport) -> str:
    """``5/5 sections ok, 2 findings (fault)``: one line of what a report says."""
    return sections_summary(report.sections)


def sections_summary(sections: Mapping[str, Any]) -> str:
    """:func:`diag_summary` of a report's sections; a section is ok when its findings are (none,
    or information only)."""
    ok = sum(1 for s in sections.values() if _verdict(s) in ("ok", "info"))
    findings = [
        f
        for s in sections.values()
        if isinstance(s, dict)
        for f in (s.get("findings") or [])
        if isinstance(f, dict)
    ]
    order = ("info", "warning", "fault", "critical")
    worst = max(
        (str(f.get("severity")) for f in findings if f.get("severity") in order),
        key=order.index,
        default="",
    )
    text = f"{ok}/{len(sections)} sections ok, {len(findings)} findings"
    return text + (f" ({worst})" if worst else "")


async def fan_out(
    conn: ConsoleConnection,
    devices: Sequence[str],
    make: Callable[[int, str], Message],
    timeout: float,
    on_result: Callable[[DeviceResult], None] | None = None,
) -> list[DeviceResult]:
    """Send ``make(id, device)`` to every device; each one's result, in ``devices`` order."""
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    pacer = Pacer()

    async def one(device: str) -> DeviceResult:
        async with gate:
            result = DeviceResult(device, "no answer", 0.0)
            for _ in range(MAX_RETRIES + 1):
                await pacer.wait_turn()
                start = time.perf_counter()
                result = await _ask(conn, make(conn.session.next_id(), device), timeout)
                result.device, result.seconds = device, time.perf_counter() - start
                if result.status != "rate_limited":
                    break
                await asyncio.sleep(1.0)  # the relay's bucket refills; then once more
        if on_result is not None:
            on_result(result)
        return result

    return list(await asyncio.gather(*(one(d) for d in devices)))


async def _ask(conn: ConsoleConnection, request: Message, timeout: float) -> DeviceResult:
    device = str(getattr(request, "device_id"))  # noqa: B009
    try:
        async for reply in conn.request(request, timeout=timeout):
            if isinstance(reply, ErrorReply):
                return DeviceResult(device, reply.code, 0.0, reply.message)
            if isinstance(reply, DiagnosticsReport):
                verdict = diag_verdict(reply)
                return DeviceResult(device, verdict, 0.0, diag_summary(reply), reply.sections)
            if isinstance(reply, ScriptFinished):
                return DeviceResult(device, reply.status, 0.0, reply.detail)
    except TimeoutError:
        return DeviceResult(device, "timeout", 0.0, f"no answer in {timeout:g} s")
    return DeviceResult(device, "no answer", 0.0)


#: The largest answer ``POST /v1/stores/{id}/diag`` gives (its 16 MB of reports, and the rest).
MAX_STORE_ANSWER = 17 * 1024 * 1024


def store_results(answer: Mapping[str, Any]) -> list[DeviceResult]:
    """Each device's :class:`DeviceResult` from the relay's answer to ``POST
    /v1/stores/{id}/diag`` (docs/api.md); the agents' strings are made printable when shown."""
    results = []
    for row in answer.get("results") or []:
        if not isinstance(row, dict):
            continue
        status = str(row.get("status", "no answer"))
        sections = row.get("sections")
        seconds = row.get("elapsed_ms")
        result = DeviceResult(
            str(row.get("device_id", "?")),
            status,
            float(seconds) / 1000 if isinstance(seconds, int | float) else 0.0,
        )
        if status == "ok" and isinstance(sections, dict):
            result.summary, result.report = sections_summary(sections), sections
            result.status = sections_verdict(sections)  # a till with a fault is not "ok"
        elif status == "ok":
            result.summary = "report not included (answer too large) / 报告过大未附带"
        else:
            result.summary = str(row.get("message", ""))
        results.append(result)
    return results


def result_line(result: DeviceResult) -> str:
    """``dev_…  ok  12 ms  5/5 sections ok, 0 findings``: the device's strings made printable."""
    mark = "✓" if result.ok else "✗"
    line = (
        f"{mark} {result.device:<28} {result.status:<14} {result.seconds * 1000:7.0f} ms  "
        f"{result.summary}"
    )
    return printable(line, multiline=False).rstrip()


def totals_line(results: Sequence[DeviceResult], seconds: float) -> str:
    good = sum(1 for r in results if r.ok)
    return (
        f"{good}/{count(len(results), 'device')} ok in {seconds:.2f} s / "
        f"{len(results)} 台设备中 {good} 台成功"
    )


def diag_request(collectors: tuple[str, ...], timeout: float) -> Callable[[int, str], Message]:
    def make(request_id: int, device: str) -> Message:
        return DiagnosticsRequest(
            id=request_id, device_id=device, collectors=collectors, timeout=timeout
        )

    return make


def run_request(
    script: str, version: str, params: dict[str, Any], unattended: bool
) -> Callable[[int, str], Message]:
    def make(request_id: int, device: str) -> Message:
        return ScriptRunRequest(
            id=request_id,
            device_id=device,
            script=script,
            version=version,
            params=params,
            unattended=unattended,
        )

    return make
