"""Run the collectors concurrently, each with its own timeout, into DiagnosticsReport sections.

A section is ``{"ok": True, "data": …, "elapsed_ms": …}`` or ``{"ok": False, "error": {"type",
"message"}, "elapsed_ms": …}``: one broken or hung collector never spoils the report.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import math
import queue
import threading
import time
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Deque,
    Dict,
    Iterable,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
)

from posassist.agent.errors import CollectorError, CollectorTimeout, ConfigError

if TYPE_CHECKING:
    from posassist.agent.profile import PosProfile
    from posassist.agent.settings import Settings

__all__ = [
    "ClockSamples",
    "Collector",
    "DiagContext",
    "MemoryHistory",
    "ProbeLimiter",
    "collect_at_once",
    "collect_report",
    "default_collectors",
    "run_in_worker",
    "section_error",
    "to_tree",
]

T = TypeVar("T")

#: Depth a section's data may use: the frame's map (1) + sections (2) + section (3) + data (4).
MAX_DATA_DEPTH = 32 - 4
MAX_STR = 4096


class ClockSamples:
    """Heartbeat round trips (agent send, relay receive, agent receive), the newest few kept."""

    def __init__(self, keep: int = 8) -> None:
        self._samples: Deque[Tuple[float, float, float]] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, sent_at: float, relay_at: float, received_at: float) -> None:
        with self._lock:
            self._samples.append((sent_at, relay_at, received_at))

    def snapshot(self) -> List[Tuple[float, float, float]]:
        with self._lock:
            return list(self._samples)


#: A probe due by a schedule of the same interval may come this much early (the round's other
#: checks, a worker thread starting): it is not refused for that, or it would wait a whole
#: interval more.
PROBE_JITTER = 0.5


class ProbeLimiter:
    """At most one probe per target in ``min_interval`` seconds (less :data:`PROBE_JITTER`); the
    last result is reused."""

    def __init__(self, min_interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval = min_interval
        self._clock = clock
        self._last: Dict[str, Tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def recent(self, target: str) -> Optional[Tuple[float, Any]]:
        """``(age_seconds, result)`` of a probe younger than the interval, else None."""
        with self._lock:
            entry = self._last.get(target)
        if entry is None:
            return None
        age = self._clock() - entry[0]
        return (age, entry[1]) if age < self.min_interval - PROBE_JITTER else None

    def record(self, target: str, result: Any) -> None:
        with self._lock:
            self._last[target] = (self._clock(), result)


class MemoryHistory:
    """Resident memory of the POS's processes over successive reports, the newest few per process
    (a leak shows as growth across samples, reference §5 #30). Kept while the agent runs."""

    def __init__(self, keep: int = 12) -> None:
        self.keep = keep
        self._samples: Dict[Tuple[int, float], Deque[Tuple[float, int]]] = {}
        self._lock = threading.Lock()

    def add(self, pid: int, started: float, at: float, rss: int) -> List[Tuple[float, int]]:
        """Record one sample of the process ``(pid, started)``; return its samples, oldest first."""
        with self._lock:
            key = (pid, started)
            samples = self._samples.setdefault(key, collections.deque(maxlen=self.keep))
            samples.append((at, rss))
            if len(self._samples) > 64:  # processes that are gone: forget the oldest
                for old in list(self._samples)[: len(self._samples) - 64]:
                    del self._samples[old]
            return list(samples)


@dataclasses.dataclass
class DiagContext:
    """What collectors may read: settings, POS profile, heartbeat samples, probe limiter."""

    settings: Settings
    data_dir: Optional[Path] = None
    profile: Optional[PosProfile] = None
    profile_error: str = ""
    clock: ClockSamples = dataclasses.field(default_factory=ClockSamples)
    limiter: ProbeLimiter = dataclasses.field(default_factory=lambda: ProbeLimiter(30.0))
    memory: MemoryHistory = dataclasses.field(default_factory=MemoryHistory)

    @classmethod
    def load(cls, data_dir: Path) -> DiagContext:
        """Settings and profile from ``data_dir``; a bad profile is reported, not fatal."""
        from posassist.agent.profile import load_profile
        from posassist.agent.settings import load_settings

        settings = load_settings(data_dir)
        ctx = cls(settings, data_dir, limiter=ProbeLimiter(settings.printer_min_interval))
        if settings.pos_profile:
            try:
                ctx.profile = load_profile(settings.pos_profile, data_dir)
            except ConfigError as exc:
                ctx.profile_error = str(exc)
        return ctx


class Collector(NamedTuple):
    """A named collector: a blocking function run in a worker thread under its own timeout.

    An ``opt_in`` collector runs only when asked for by name (a listening window on a scale).
    ``at_once``, if given, answers on the event loop when there is nothing to do, without any
    I/O (no printer configured): its data, or None to run ``run`` in a worker as usual. Handing
    a call to a worker and back wakes two threads, most of a cheap request's time on a busy till
    (docs/notes/16perf-status.md).
    """

    name: str
    run: Callable[[DiagContext], Any]
    timeout: float = 5.0
    opt_in: bool = False
    at_once: Optional[Callable[[DiagContext], Any]] = None


#: :func:`default_collectors`' list, built once (a request asks for it every time).
_DEFAULT_COLLECTORS: Tuple[Collector, ...] = ()


def default_collectors() -> List[Collector]:
    """Every collector the agent has, in report order (imports are light: I/O loads lazily)."""
    global _DEFAULT_COLLECTORS
    if not _DEFAULT_COLLECTORS:
        _DEFAULT_COLLECTORS = tuple(_load_collectors())
    return list(_DEFAULT_COLLECTORS)


def _load_collectors() -> List[Collector]:
    from posassist.agent.collectors import (
        hostconfig,
        network,
        peripherals,
        pos,
        printers,
        printqueue,
        serialports,
        system,
    )

    return [
        Collector("system", system.collect, 5.0),
        Collector("network", network.collect, 8.0),
        Collector("serial", serialports.collect, 5.0),
        Collector("printers", printers.collect, 8.0, at_once=printers.nothing_to_probe),
        Collector("pos", pos.collect, 5.0),
        Collector("print_queue", printqueue.collect, 5.0),
        Collector("host", hostconfig.collect, 5.0),
        # listen-only windows on devices the POS uses: only when a technician asks (§3.2, §3.3)
        Collector("scale", peripherals.collect_scales, 35.0, opt_in=True),
        Collector("scanner", peripherals.collect_scanners, 35.0, opt_in=True),
    ]


# --- msgpack-safe trees --------------------------------------------------------------------------


def to_tree(value: Any, depth: int = MAX_DATA_DEPTH) -> Any:
    """Turn collector output into msgpack types with str keys, bounded depth and string length.

    Dataclasses and NamedTuples become maps, enums their values, tuples and sets lists, paths
    strings; NaN and infinity become None, ints msgpack can't carry become strings, and anything
    else its ``str()``. Deeper than ``depth`` is cut to the string ``"…"``.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return to_tree(value.value, depth)
    if isinstance(value, int):
        return value if -(2**63) <= value <= 2**64 - 1 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value if len(value) <= MAX_STR else value[: MAX_STR - 1] + "…"
    if isinstance(value, bytes):
        return value.hex()[:MAX_STR]
    if isinstance(value, Path):
        return str(value)
    if depth <= 0:
        return "…"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif isinstance(value, tuple) and hasattr(value, "_asdict"):
        value = value._asdict()
    if isinstance(value, dict):
        return {str(k): to_tree(v, depth - 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_tree(v, depth - 1) for v in value]
    return str(value)[:MAX_STR]


def section_error(exc: BaseException) -> Dict[str, str]:
    """The ``error`` part of a failed section: the typed error's class and a short message."""
    message = str(exc) or getattr(exc, "public_reason", "") or type(exc).__name__
    return {"type": type(exc).__name__, "message": message[:1024]}


# --- workers a watchdog can abandon --------------------------------------------------------------

#: Idle worker threads kept for the next call (each report runs a few collectors at once).
MAX_IDLE_WORKERS = 8
#: Seconds an idle worker waits for work before its thread ends.
WORKER_IDLE_TIMEOUT = 60.0


class _Worker:
    """A daemon thread that runs one call at a time and then waits, idle, for the next.

    Starting a thread for every collector of every report cost more than the collector itself
    (0.1-0.6 ms on a busy 2-core till, most of a cheap diagnostic's round trip). A worker stuck
    in a driver never comes back to the idle list: it is abandoned, as before.
    """

    _idle: ClassVar[List[_Worker]] = []
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[Callable[[], Callable[[], None]]] = queue.SimpleQueue()
        thread = threading.Thread(target=self._loop, name="posassist-collector", daemon=True)
        thread.start()

    @classmethod
    def submit(cls, job: Callable[[], Callable[[], None]]) -> None:
        """Run ``job`` on an idle worker, or on a new one. ``job`` returns its delivery, which
        runs once the worker is idle again: a caller that hears the result and submits at once
        finds this worker free, not a new thread."""
        with cls._lock:
            worker = cls._idle.pop() if cls._idle else None
        if worker is None:
            worker = cls()
        worker.jobs.put(job)

    def _loop(self) -> None:
        while True:
            try:
                job = self.jobs.get(timeout=WORKER_IDLE_TIMEOUT)
            except queue.Empty:
                with self._lock:
                    if self in self._idle:  # nobody took it meanwhile: the thread ends
                        self._idle.remove(self)
                        return
                continue  # handed a job as the wait ended: it is in the queue
            deliver = job()
            with self._lock:
                keep = len(self._idle) < MAX_IDLE_WORKERS
                if keep:
                    self._idle.append(self)
            deliver()
            if not keep:
                return


async def run_in_worker(fn: Callable[[], T], timeout: float) -> T:
    """Run blocking ``fn`` in a daemon thread; CollectorTimeout after ``timeout`` seconds.

    A daemon thread rather than the loop's executor: a call stuck in a driver (serial close on
    Windows, reference §0.8) is abandoned, never joined, so it can't hold up the agent or its exit.
    Idle threads are reused (:class:`_Worker`).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def work() -> Callable[[], None]:
        ok = True
        value: Any = None
        try:
            value = fn()
        except BaseException as exc:  # delivered to the awaiting task
            ok, value = False, exc

        def hand_over() -> None:
            try:
                loop.call_soon_threadsafe(deliver, ok, value)
            except RuntimeError:  # the loop closed meanwhile: nobody is waiting any more
                pass

        return hand_over

    _Worker.submit(work)
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout)
    except asyncio.TimeoutError:
        raise CollectorTimeout(f"no result within {timeout:.1f} s") from None


def _section_at_once(collector: Collector, ctx: DiagContext) -> Optional[Dict[str, Any]]:
    """The collector's section if it answers at once (``Collector.at_once``), else None."""
    if collector.at_once is None:
        return None
    started = time.monotonic()
    try:
        data = to_tree(collector.at_once(ctx))
        if data is None:
            return None
        section: Dict[str, Any] = {"ok": True, "data": data}
    except Exception as exc:  # one broken collector never spoils the report
        section = {"ok": False, "error": section_error(exc)}
    section["elapsed_ms"] = round((time.monotonic() - started) * 1000.0, 1)
    return section


async def _section(collector: Collector, ctx: DiagContext, timeout: float) -> Dict[str, Any]:
    started = time.monotonic()
    try:
        if timeout <= 0:
            raise CollectorTimeout("no time left before the report's deadline")
        answered = _section_at_once(collector, ctx)
        if answered is not None:
            return answered
        data = await run_in_worker(lambda: to_tree(collector.run(ctx)), timeout)
        section: Dict[str, Any] = {"ok": True, "data": data}
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # one broken collector never spoils the report
        section = {"ok": False, "error": section_error(exc)}
    section["elapsed_ms"] = round((time.monotonic() - started) * 1000.0, 1)
    return section


def _chosen(collectors: Sequence[Collector], wanted: Sequence[str]) -> List[Collector]:
    return [c for c in collectors if (c.name in wanted if wanted else not c.opt_in)]


def _add_unknown(
    sections: Dict[str, Any], collectors: Sequence[Collector], wanted: Sequence[str]
) -> Dict[str, Any]:
    """A failed section for each name in ``wanted`` that no collector has."""
    known = {c.name for c in collectors}
    for name in wanted:
        if name not in known:
            error = CollectorError(f"no collector named {name!r}")
            sections[name[:128]] = {"ok": False, "error": section_error(error), "elapsed_ms": 0.0}
    return sections


def collect_at_once(
    ctx: DiagContext, collectors: Sequence[Collector], only: Iterable[str] = ()
) -> Optional[Dict[str, Any]]:
    """:func:`collect_report`'s sections without waiting, when every collector it would run
    answers at once (``Collector.at_once``: nothing to probe); else None, and the caller awaits
    :func:`collect_report`. The agent then answers as it reads the request, without a task and
    an event-loop turn of its own (docs/notes/16fan-status.md)."""
    wanted = list(only)
    sections: Dict[str, Any] = {}
    for collector in _chosen(collectors, wanted):
        section = _section_at_once(collector, ctx)
        if section is None:
            return None
        sections[collector.name] = section
    return _add_unknown(sections, collectors, wanted)


async def collect_report(
    ctx: DiagContext,
    collectors: Sequence[Collector],
    deadline: float,
    only: Iterable[str] = (),
) -> Dict[str, Any]:
    """Run ``collectors`` concurrently and gather their sections.

    Args:
        ctx: settings and state the collectors read.
        collectors: the collectors to run.
        deadline: absolute ``time.monotonic()`` by which every section must be in.
        only: names to run (all but the opt-in ones when empty); a name no collector has gets a
            failed section.

    Returns:
        ``{name: section}`` in the collectors' order, fit for ``DiagnosticsReport.sections``.
    """
    wanted = list(only)
    chosen = _chosen(collectors, wanted)
    overrides = dict(ctx.settings.timeouts)
    now = time.monotonic()
    sections_due = [
        _section(c, ctx, min(overrides.get(c.name, c.timeout), deadline - now)) for c in chosen
    ]
    if len(sections_due) == 1:  # one collector (the usual request): no task to wait for
        results = [await sections_due[0]]
    else:
        results = await asyncio.gather(*sections_due)
    sections: Dict[str, Any] = {c.name: s for c, s in zip(chosen, results)}
    return _add_unknown(sections, collectors, wanted)
