"""Alert notifications to webhooks: the signature, the payload, the retry schedule (pure), and the
sender that drains the durable delivery queue (docs/webhooks.md).

A notification is queued (a ``webhook_deliveries`` row per webhook) in the same transaction as
the alert change it reports, so ingest never waits for a receiver and a relay killed at any
moment loses none. :class:`WebhookSender` takes due rows under a lease, POSTs them, and marks
each ``delivered`` (2xx) or, after :data:`MAX_ATTEMPTS`, ``failed``; a row whose sender died
is taken again when its lease ends (delivered at least once; receivers de-duplicate by the
``X-Posassist-Delivery`` id).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import BadRequest, StorageError

if TYPE_CHECKING:
    from collections.abc import Callable

    import aiohttp

    from .storage.health import HealthStore

__all__ = [
    "BACKOFF",
    "MAX_ATTEMPTS",
    "Delivery",
    "WebhookSender",
    "check_webhook_url",
    "new_secret",
    "retry_delay",
    "sign",
    "verify",
]

log = logging.getLogger("posassist.relay")

#: Tries before a delivery is marked ``failed``.
MAX_ATTEMPTS = 6
#: Seconds before each retry (the n-th retry waits ``BACKOFF[n-1]``, the last value after that).
BACKOFF = (1.0, 5.0, 30.0, 120.0, 600.0)
#: Seconds a receiver has to answer one POST.
SEND_TIMEOUT = 10.0
#: Deliveries sent at once by one relay.
MAX_CONCURRENT = 16
#: A delivery taken by a sender is not taken by another for twice the send timeout plus this
#: many seconds (its sender died, or the database was slow to hear how it went).
LEASE_MARGIN = 1.0
#: The signature's header names (docs/webhooks.md#signature).
SIGNATURE_HEADER = "X-Posassist-Signature"
TIMESTAMP_HEADER = "X-Posassist-Timestamp"
DELIVERY_HEADER = "X-Posassist-Delivery"
EVENT_HEADER = "X-Posassist-Event"
#: Receivers should refuse a signature whose timestamp is further than this from their clock.
TOLERANCE = 300


def new_secret() -> str:
    """A fresh signing secret (shown once, when the webhook is made)."""
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 of ``"<timestamp>." + body`` under ``secret``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float) -> bool:
    """What a receiver does (docs/webhooks.md#signature): the signature matches, in constant
    time, and the timestamp is within :data:`TOLERANCE` seconds of ``now``."""
    try:
        stamp = int(timestamp)
    except ValueError:
        return False
    if abs(now - stamp) > TOLERANCE:
        return False
    return hmac.compare_digest(sign(secret, stamp, body), signature)


def retry_delay(attempts: int, scale: float = 1.0) -> float | None:
    """Seconds to wait after ``attempts`` failed tries (times ``scale``); None once they are
    used up (:data:`MAX_ATTEMPTS`)."""
    if attempts >= MAX_ATTEMPTS:
        return None
    return BACKOFF[min(attempts, len(BACKOFF)) - 1] * scale


def public_address(address: str) -> bool:
    """Whether a webhook may reach ``address``: not loopback, private, link-local (cloud
    metadata), multicast, reserved or unspecified; a relay's own network is off limits unless
    the operator allows it (``--webhook-allow-private``)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        # an IPv4 address carried in IPv6 (mapped, 6to4, NAT64, IPv4-compatible) is judged as
        # the IPv4 address it reaches (outside attack F6: NAT64 reached internal addresses)
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and (ip in _NAT64 or ip in _IPV4_COMPATIBLE):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not public_address(str(embedded)):
            return False
    return ip.is_global and not ip.is_multicast


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


class PublicOnlyResolver:
    """An aiohttp resolver that drops every address :func:`public_address` refuses (checked at
    each connection, so a name that later resolves inside the network is refused too)."""

    def __init__(self) -> None:
        from aiohttp.resolver import ThreadedResolver

        self._resolver = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[Any]:
        import socket

        found = await self._resolver.resolve(host, port, socket.AddressFamily(family))
        allowed = [entry for entry in found if public_address(entry["host"])]
        if not allowed:
            raise OSError(f"{host} resolves only to addresses webhooks may not reach")
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


def check_webhook_url(url: str, *, allow_private: bool = False) -> str:
    """An http(s) URL with a host, at most 2048 characters, whose host, if an address, is one a
    webhook may reach (:func:`public_address`, unless ``allow_private``); BadRequest
    otherwise."""
    if len(url) > 2048:
        raise BadRequest("webhook url longer than 2048 characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise BadRequest("webhook url is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("webhook url must be http(s)://host…")
    if not allow_private and _literal(parts.hostname) and not public_address(parts.hostname):
        raise BadRequest("webhook url may not name a loopback, private or link-local address")
    return url


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One queued notification for one webhook."""

    id: str
    webhook_id: str
    url: str
    secret: str
    event: str
    payload: str
    attempts: int


class WebhookSender:
    """Drains the delivery queue: wakes when an alert change queued something (:meth:`wake`)
    and every ``poll_interval`` seconds (retries come due; another relay queued something)."""

    def __init__(
        self,
        store: HealthStore,
        clock: Callable[[], float],
        *,
        poll_interval: float = 1.0,
        send_timeout: float = SEND_TIMEOUT,
        retry_scale: float = 1.0,
        max_concurrent: int = MAX_CONCURRENT,
        allow_private: bool = False,
    ) -> None:
        self.store = store
        self.clock = clock
        self.poll_interval = poll_interval
        self.send_timeout = send_timeout
        self.retry_scale = retry_scale
        self.allow_private = allow_private
        self.max_concurrent = max_concurrent
        self._wakeup = asyncio.Event()
        #: ``posassist_relay_webhook_tries_total{outcome}`` once the relay registers it
        self.outcomes: Any = None

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(
            resolver=None if self.allow_private else PublicOnlyResolver()  # type: ignore[arg-type]
        )
        async with aiohttp.ClientSession(connector=connector) as http:
            while True:
                self._wakeup.clear()
                wait = self.poll_interval
                try:
                    if await self.send_due(http) >= self.max_concurrent:
                        continue  # a full batch: more may be due at once
                    due = await self.store.next_delivery_due()
                    if due is not None:  # a retry comes due before the next poll
                        wait = min(wait, max(0.0, due - self.clock()))
                except StorageError as exc:
                    log.warning("webhook deliveries not read, will retry: %s", exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wakeup.wait()

    async def send_due(self, http: aiohttp.ClientSession) -> int:
        """Take the due deliveries (at most ``max_concurrent``) and send them; how many."""
        lease = 2 * self.send_timeout + LEASE_MARGIN
        batch = await self.store.claim_deliveries(
            now=self.clock(), lease=lease, limit=self.max_concurrent
        )
        if batch:
            async with asyncio.TaskGroup() as group:
                for delivery in batch:
                    group.create_task(self._send(http, delivery))
        return len(batch)

    async def _send(self, http: aiohttp.ClientSession, delivery: Delivery) -> None:
        import aiohttp

        body = delivery.payload.encode()
        stamp = int(self.clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "posassist-relay webhooks",
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: sign(delivery.secret, stamp, body),
            DELIVERY_HEADER: delivery.id,
            EVENT_HEADER: delivery.event,
        }
        error: str | None
        try:
            host = urlsplit(delivery.url).hostname or ""
            if not self.allow_private and _literal(host) and not public_address(host):
                raise OSError(f"{host} is an address webhooks may not reach")
            async with http.post(
                delivery.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.send_timeout),
            ) as answer:
                await answer.read()
                error = None if 200 <= answer.status < 300 else f"HTTP {answer.status}"
        except TimeoutError:
            error = f"no answer within {self.send_timeout:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        attempts = delivery.attempts + 1
        now = self.clock()
        delay = None if error is None else retry_delay(attempts, self.retry_scale)
        # counted before it is recorded (a test polling the record then sees the count)
        if self.outcomes is not None:
            outcome = "delivered" if error is None else "retried" if delay is not None else "failed"
            self.outcomes.labels(outcome=outcome).inc()
        try:
            await self.store.finish_delivery(
                delivery.id,
                attempts=attempts,
                error=error,
                now=now,
                retry_at=None if delay is None else now + delay,
            )
        except StorageError as exc:  # sent again when its lease ends
            log.warning("webhook delivery %s outcome not recorded: %s", delivery.id, exc)
        if error is not None and delay is None:
            log.warning(
                "webhook delivery %s failed after %d tries: %s", delivery.id, attempts, error
            )
        elif error is not None:
            log.debug("webhook delivery %s try %d failed: %s", delivery.id, attempts, error)
