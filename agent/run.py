"""The agent's service loop: connect, serve, and on loss reconnect with capped, jittered backoff.

A relay that falls silent (PeerSilentError, docs/protocol.md#liveness) is a lost connection too.

Nothing grows across attempts: each attempt is one :func:`connect_once` whose objects are dropped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterator, Optional

from websockets.exceptions import InvalidStatus, WebSocketException

from posassist.protocol import PosAssistError

from .backoff import after_going_away, backoff, retry_after_delay
from .connection import Opened, connect_once
from .errors import GoingAwayError, RelayRefusedError, ReplacedError

if TYPE_CHECKING:
    from .checks.monitor import HealthMonitor
    from .config import Identity
    from .diagnostics import DiagContext
    from .helpwindow.service import HelpService
    from .scripts.service import ScriptService

__all__ = ["run_agent"]

log = logging.getLogger("posassist.agent")


async def run_agent(
    identity: Identity,
    stop: asyncio.Event,
    *,
    once: bool = False,
    delays: Callable[[], Iterator[float]] = backoff,
    going_away: Callable[[Iterator[float]], Iterator[float]] = after_going_away,
    diagnostics: Optional[DiagContext] = None,
    scripts: Optional[ScriptService] = None,
    on_open: Optional[Callable[[Opened], Awaitable[Any]]] = None,
    on_failure: Optional[Callable[[BaseException], None]] = None,
    help_service: Optional[HelpService] = None,
    health: Optional[HealthMonitor] = None,
) -> int:
    """Keep a connection to the relay until ``stop`` is set.

    Args:
        identity: who we are and where the relay is.
        stop: set it to end the loop (SIGTERM, service stop).
        once: return after the first handshake (0), or the first failure (2, refused 3).
        delays: a fresh backoff iterator factory; a successful connection starts a new one.
        going_away: the schedule after the relay closed with 1001 (it restarts), given the
            normal one to go on with (agent/backoff.py ``after_going_away``).
        diagnostics: what DiagnosticsRequests are answered from; None answers "unsupported".
        scripts: what runs ScriptRunRequests (after verifying them); None answers "unsupported".
        on_open: awaited after each successful handshake.
        on_failure: called with each failed attempt's error.
        help_service: the help window's service; each connection carries its requests.
        health: the health monitor whose outbox is sent on each connection, and which applies
            the relay's ``policy.updated``; None: no health checks.

    Returns:
        The process exit status.
    """
    pending = delays()
    while not stop.is_set():
        attempt = asyncio.ensure_future(
            connect_once(
                identity,
                on_open=on_open,
                serve=not once,
                diagnostics=diagnostics,
                scripts=scripts,
                help_service=help_service,
                health=health,
            )
        )
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({attempt, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        await asyncio.gather(stopper, return_exceptions=True)
        if attempt not in done:
            attempt.cancel()
            await asyncio.gather(attempt, return_exceptions=True)
            break
        retry_after = None  # a relay shedding load says when to come back
        try:
            attempt.result()
            if once:
                return 0
            pending = delays()  # a connection that worked resets the backoff
        except GoingAwayError:
            # The relay restarts (1001): back within seconds, spread at random, not after the
            # minute a doubling backoff reaches while it is down (docs/protocol.md#reconnecting).
            pending = going_away(delays())
        except RelayRefusedError as exc:
            if on_failure is not None:
                on_failure(exc)
            if once:
                return 3
        except ReplacedError as exc:
            # The connection worked, then the same identity connected again elsewhere (or we
            # did, after a silent loss): the backoff goes on growing, it is not reset, so two
            # tills sharing an identity can't replace each other in a tight loop.
            if on_failure is not None:
                on_failure(exc)
            log.warning("relay replaced this connection with another of the same device")
            if once:
                return 0
        except (OSError, asyncio.TimeoutError, WebSocketException, PosAssistError) as exc:
            if on_failure is not None:
                on_failure(exc)
            if isinstance(exc, InvalidStatus) and exc.response.status_code in (429, 503):
                retry_after = exc.response.headers.get("Retry-After")
            if health is not None:
                health.link_down(type(exc).__name__)
            log.warning(
                "无法连接服务器 %s, 稍后自动重试 / cannot reach the relay %s (%s); retrying",
                identity.relay_url,
                identity.relay_url,
                type(exc).__name__,
            )
            if once:
                return 2
        del attempt  # nothing of a failed attempt is kept (memory stays flat offline)
        try:
            await asyncio.wait_for(stop.wait(), retry_after_delay(retry_after, next(pending)))
        except asyncio.TimeoutError:
            pass
    return 0
