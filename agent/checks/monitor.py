"""The agent's health monitor: runs each check on its interval, turns state changes into alert
events in the durable outbox, and sends them as ``alert.raised`` while a connection is open.

Runs whether or not the relay is reachable (events wait in the outbox; docs/protocol.md#health-
policy). The policy is the relay's last good ``policy.updated`` (kept on disk), or the safe
defaults on a till that has never been online. Samplers run in worker threads under a timeout,
the outbox on its own database thread: nothing blocking touches the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Tuple, TypeVar

from posassist.agent.errors import OutboxError
from posassist.protocol import AlertAcknowledged, AlertRaised, ErrorReply, PolicyUpdated
from posassist.protocol.errors import LocalProtocolError
from posassist.protocol.health_policy import (
    CHECKS,
    HealthPolicy,
    PolicyError,
    default_policy,
    parse_policy,
)

from .state import CheckState, Transition, Verdict, step, stop

if TYPE_CHECKING:
    from pathlib import Path

    from posassist.agent.diagnostics import DiagContext
    from posassist.agent.outbox import Outbox
    from posassist.client.connection import Connection
    from posassist.protocol import Session

    from .samplers import Link

__all__ = ["HealthMonitor"]

log = logging.getLogger("posassist.agent.checks")
T = TypeVar("T")

#: Samples kept per check: the newest two (what changed since the last one), and for the trend
#: rules an hour and a bit at their shortest interval (sustained CPU, restarts, memory growth).
KEEP_SAMPLES = {"cpu": 64, "pos_process": 130, "memory": 80}
KEEP_SAMPLES_S = 2 * 3600.0
#: Longest a sampler may take, whatever its interval.
MAX_SAMPLE_TIMEOUT = 15.0
#: Events sent per batch, and seconds to wait for each alert.ack.
BATCH = 16
ACK_TIMEOUT = 30.0
#: After the relay answered an alert with an error (it does not take alerts yet, it is busy):
#: seconds before the outbox is offered again. Nothing is dropped meanwhile.
RETRY_AFTER_ERROR = 60.0
#: The largest ``details`` sent (JSON characters); bigger evidence is left out, the words stay.
MAX_DETAILS = 8192
OUTBOX_FILE = "outbox.sqlite3"


class HealthMonitor:
    """Checks, policy and outbox of one agent process."""

    def __init__(
        self,
        ctx: DiagContext,
        data_dir: Path,
        relay_url: str,
        *,
        max_events: Optional[int] = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        from .samplers import Link

        self.ctx = ctx
        self.data_dir = data_dir
        self.clock = clock
        self.monotonic = monotonic
        self.link: Link = Link(relay_url, clock())
        self.policy: HealthPolicy = default_policy()
        self.hours: Dict[str, Any] = {}
        self.states: Dict[str, CheckState] = {name: CheckState(name) for name in CHECKS}
        self.samples: Dict[str, Deque[Tuple[float, Dict[str, Any]]]] = {
            name: collections.deque(maxlen=KEEP_SAMPLES.get(name, 2)) for name in CHECKS
        }
        self._max_events = max_events
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="posassist-outbox")
        self._outbox: Optional[Outbox] = None
        self._due: Dict[str, float] = {}
        #: how many policies were applied: a check that ran across a change runs again
        self._generation = 0
        self._wake = asyncio.Event()
        self._queued = asyncio.Event()
        self._saving: List[asyncio.Future[Any]] = []

    # --- the database thread --------------------------------------------------------------------

    async def _in_db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    @property
    def outbox(self) -> Outbox:
        assert self._outbox is not None, "open() first"
        return self._outbox

    async def open(self) -> None:
        """Open the outbox and load the last good policy and the firing checks' states."""
        from posassist.agent.outbox import DEFAULT_MAX_EVENTS, Outbox

        path = self.data_dir / OUTBOX_FILE
        size = self._max_events or DEFAULT_MAX_EVENTS
        self._outbox = await self._in_db(Outbox, path, size)
        saved = await self._in_db(self.outbox.get_meta, "policy")
        if saved is not None:
            try:
                doc = json.loads(saved)
                self.policy = parse_policy(doc["policy"])
                self.hours = doc.get("hours") or {}
            except (ValueError, KeyError, TypeError, PolicyError) as exc:
                log.warning("saved health policy unusable, using the defaults: %s", exc)
        states = await self._in_db(self.outbox.get_meta, "check_states")
        for doc in json.loads(states or "[]"):
            state = CheckState.from_json(doc)
            if state.name in self.states:
                self.states[state.name] = state
        self._queued.set()  # whatever a previous run left queued goes out first

    async def close(self) -> None:
        await asyncio.gather(*self._saving, return_exceptions=True)
        if self._outbox is not None:
            await self._in_db(self._outbox.close)
        self._db.shutdown(wait=True)

    # --- policy ---------------------------------------------------------------------------------

    def apply_policy(self, message: PolicyUpdated) -> bool:
        """Use the relay's policy if it is valid; else keep the last good one (and say why)."""
        try:
            policy = parse_policy(message.policy)
        except PolicyError as exc:
            log.warning(
                "服务器下发的健康检查策略无效, 继续使用上一版 (v%s) / invalid health policy v%s "
                "from the relay, keeping v%s: %s",
                self.policy.version,
                message.version,
                self.policy.version,
                exc,
            )
            return False
        self.policy, self.hours = policy, dict(message.hours)
        saved = json.dumps(
            {"version": message.version, "policy": message.policy, "hours": message.hours},
            ensure_ascii=False,
        )
        if self._outbox is not None:
            self._saving.append(
                asyncio.ensure_future(self._in_db(self.outbox.set_meta, "policy", saved))
            )
            self._saving = [f for f in self._saving if not f.done()]
        self._due.clear()  # intervals may have changed: every check runs again now
        self._generation += 1
        self._wake.set()
        log.info("health policy v%s applied", policy.version)
        used, asked = self.interval("printer"), policy.checks["printer"].interval
        if used > asked:
            log.info(
                "打印机检查间隔 %(used)g 秒 (本机 printer_min_interval), 策略要求 %(asked)g 秒 / "
                "printer checked every %(used)g s (this till's printer_min_interval), "
                "not the policy's %(asked)g s",
                {"used": used, "asked": asked},
            )
        return True

    # --- the schedule ---------------------------------------------------------------------------

    def interval(self, name: str) -> float:
        """Seconds between two runs of check ``name``: the policy's, but never more often than
        the till's own ``printer_min_interval`` for the printer (the relay cannot make a till
        query its printer more often than the till allows; a sample in between would only
        read the last answer again)."""
        seconds = self.policy.checks[name].interval
        if name == "printer":
            return max(seconds, self.ctx.settings.printer_min_interval)
        return seconds

    async def run(self, stop_event: asyncio.Event) -> None:
        """Run the checks until ``stop_event`` is set."""
        while not stop_event.is_set():
            # cleared before the round: a policy applied during it wakes the next one at once
            self._wake.clear()
            now = self.monotonic()
            for name in CHECKS:
                if self._due.get(name, 0.0) <= now:
                    generation = self._generation
                    try:
                        await self.run_check(name)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # one broken check (a full disk) never stops the rest
                        log.warning("check %s failed: %s: %s", name, type(exc).__name__, exc)
                    # a policy that came while it ran: it runs again at once, under that one
                    if generation == self._generation:
                        self._due[name] = now + self.interval(name)
            _release_memory()
            now = self.monotonic()
            due = [self._due.get(name, 0.0) for name in self.policy.checks]
            wait = max(0.0, min(due, default=now + 1.0) - now)
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop_event.wait())
            await asyncio.wait({waiter, stopper}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for task in (waiter, stopper):
                task.cancel()
            await asyncio.gather(waiter, stopper, return_exceptions=True)

    async def run_check(self, name: str) -> Optional[Transition]:
        """Sample check ``name`` once, judge it, and queue the event it gives, if any."""
        from posassist.agent.diagnostics import run_in_worker

        from .rules import evaluate
        from .samplers import SAMPLERS

        check = self.policy.checks[name]
        state = self.states[name]
        before = dataclasses.replace(state)
        if not check.enabled:
            transition = stop(state, "检查已停用 / check disabled by policy")
        else:
            try:
                data = await run_in_worker(
                    lambda: SAMPLERS[name](self.ctx, self.link),
                    min(check.interval, MAX_SAMPLE_TIMEOUT),
                )
                verdict = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken sampler is "unknown", never a crash
                log.debug("check %s: no sample (%s: %s)", name, type(exc).__name__, exc)
                data, verdict = None, Verdict("unknown")
            now = self.clock()
            samples = self.samples[name]
            if data is not None:
                samples.append((now, data))
                while samples and now - samples[0][0] > KEEP_SAMPLES_S:
                    samples.popleft()
                verdict = evaluate(name, list(samples), check, now)
            assert verdict is not None
            transition = step(state, verdict, check, now, episode=_episode(now))
        if transition is not None:
            try:
                await self._queue(name, state, transition)
            except OutboxError:
                # not on disk, so not sent: the next sample makes the same change again
                self.states[name] = before
                raise
        return transition

    async def _queue(self, name: str, state: CheckState, transition: Transition) -> None:
        now = self.clock()
        details: Dict[str, Any] = {
            "agent_time": now,
            "codes": list(transition.codes),
            "policy_version": self.policy.version,
            "episode": state.episode,
        }
        offset = _clock_offset(self.ctx)
        details["clock_offset"] = offset
        window = self.policy.silencing_window(name, now + (offset or 0.0))
        if window is not None:  # absolute windows only: weekly ones need the store's zone
            details["maintenance"] = window.reason or "maintenance"
        evidence = _bounded(transition.evidence)
        if evidence is not None:
            details["evidence"] = evidence
        event = {
            "check_name": name,
            "severity": transition.severity,
            "state": transition.state,
            "summary": transition.summary[:1024],
            "observed_at": now,
            "details": details,
        }
        key = state.next_key()
        states = json.dumps([s.to_json() for s in self.states.values() if s.firing or s.events])
        await self._in_db(self._commit, key, event, now, states)
        log.info("alert %s %s %s: %s", name, transition.state, transition.severity, key)
        self._queued.set()

    def _commit(self, key: str, event: Dict[str, Any], now: float, states: str) -> None:
        # the event first: a crash between the two re-fires at worst, never loses the event
        self.outbox.put(key, event, now)
        self.outbox.set_meta("check_states", states)

    # --- delivery -------------------------------------------------------------------------------

    async def deliver(self, connection: Connection, session: Session, device_id: str) -> None:
        """Send queued events over ``connection`` until it ends; each leaves the outbox only on
        its ``alert.ack`` (docs/protocol.md#messages), so a lost connection loses nothing."""
        while True:
            self._queued.clear()
            batch = await self._in_db(self.outbox.pending, BATCH)
            if not batch:
                await self._queued.wait()
                continue
            dropped = await self._in_db(self.outbox.dropped)
            for queued in batch:
                event = queued.event
                details = dict(event["details"], outbox_dropped=dropped)
                details["attempt"] = queued.attempts + 1
                try:
                    message = AlertRaised(
                        id=session.next_id(),
                        device_id=device_id,
                        alert_key=queued.alert_key,
                        check_name=event["check_name"],
                        severity=event["severity"],
                        state=event["state"],
                        summary=event["summary"],
                        observed_at=event["observed_at"],
                        details=details,
                    )
                except (LocalProtocolError, KeyError, TypeError) as exc:
                    # an event that can't be sent (a bug, a damaged row) must not block the
                    # ones behind it: dropped, and counted with the size limit's drops
                    log.error("alert %s can't be sent, dropped: %s", queued.alert_key, exc)
                    await self._in_db(self.outbox.discard, queued.alert_key)
                    dropped = await self._in_db(self.outbox.dropped)
                    continue
                await self._in_db(self.outbox.attempted, queued.alert_key)
                answer: Any = None
                try:
                    async for reply in connection.request(message, ACK_TIMEOUT):
                        answer = reply
                except asyncio.TimeoutError:
                    answer = None
                if isinstance(answer, AlertAcknowledged):
                    await self._in_db(self.outbox.ack, queued.alert_key)
                    continue
                code = answer.code if isinstance(answer, ErrorReply) else "no answer"
                log.warning(
                    "服务器未确认告警, 稍后重发 / the relay did not take alert %s (%s); "
                    "kept in the outbox",
                    queued.alert_key,
                    code,
                )
                await asyncio.sleep(RETRY_AFTER_ERROR)
                break

    def link_up(self) -> None:
        self.link.up(self.clock())

    def link_down(self, error: str) -> None:
        self.link.down(self.clock(), error)


_TRIM: List[Any] = []


def _release_memory() -> None:
    """Give the C heap's free pages back to the OS after a round of checks (glibc only).

    Samplers run in short-lived worker threads, each touching a malloc arena that glibc keeps
    at its high-water mark: without this the idle agent kept ~3.5 MB it no longer used
    (benchmarks/bench_agent.py). A no-op where there is no ``malloc_trim`` (Windows, musl).
    """
    if not _TRIM:
        trim = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                trim = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):
                trim = None
        _TRIM.append(trim)
    if _TRIM[0] is not None:
        _TRIM[0](0)


def _episode(now: float) -> str:
    """A new alert episode's id: its time and 4 random bytes (unique across restarts)."""
    return f"{int(now * 1000):x}-{os.urandom(4).hex()}"


def _clock_offset(ctx: DiagContext) -> Optional[float]:
    """Relay clock minus ours, from heartbeat round trips; None before any."""
    from posassist.agent.collectors.network import clock_offset

    measured = clock_offset(ctx.clock.snapshot())
    return None if measured is None else float(measured["offset_s"])


def _bounded(evidence: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    if not evidence:
        return None
    try:
        # allow_nan=False: a NaN can't travel (docs/protocol.md#limits), so no evidence then
        text = json.dumps(evidence, ensure_ascii=False, default=str, allow_nan=False)
    except (TypeError, ValueError):
        return None
    normalised: Dict[str, Any] = json.loads(text)
    return normalised if len(text) <= MAX_DETAILS else None
