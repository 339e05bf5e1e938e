"""Prometheus metrics for one relay application, in its own registry, and the ``/metrics`` handler.

No global default registry: two applications in one process (tests, benchmarks) never share a count.

``create_app`` (relay/app.py) makes one :class:`RelayMetrics` per application and serves it at
``/metrics``; gauges that mirror in-memory state are read at scrape time, so they never drift.
Handlers time handshakes, tally frames and routed requests; every audited refusal is counted in
``RelayState.audit`` under its reason (:func:`refusal_reason`), never under the refused action.

Label values must come from small fixed sets (message tags, :data:`OUTCOMES`,
:data:`REFUSAL_REASONS`, :data:`ENDPOINTS`); a device id or user name as a label would grow the
registry without bound. ``/metrics`` carries no secrets but does reveal fleet size: keep it on
the loopback or an operator network, or put it behind the operator role once sign-in exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping

__all__ = [
    "ENDPOINTS",
    "HANDSHAKE_BUCKETS",
    "LATENCY_BUCKETS",
    "METRICS",
    "NAMESPACE",
    "OUTCOMES",
    "REFUSAL_REASONS",
    "RelayMetrics",
    "metrics_handler",
    "refusal_reason",
]

NAMESPACE: Final = "posassist_relay"

#: Routed request latency, console in to reply out: 0.5 ms (loopback) to 10 s (slow collectors).
LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Agent authentication, Hello to Accepted: signature checks take well under a millisecond; the
#: rest is round trips over a store's uplink.
HANDSHAKE_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

#: How a routed request ended (the ``outcome`` label of ``requests_routed``).
OUTCOMES: Final = ("ok", "error", "timeout", "offline", "refused", "cancelled", "unknown")
#: Why the relay refused someone (docs/protocol.md refusal codes, sign-in and scope checks).
REFUSAL_REASONS: Final = (
    "unknown_device",
    "bad_signature",
    "replayed",
    "device_revoked",
    "bad_credentials",
    "locked_out",
    "token_invalid",
    "enrolment_refused",
    "scope",
    "rate_limited",
    "protocol_error",
    "too_slow",
    "script_refused",
    "overloaded",  # sign-ins shed at load (503 + Retry-After), not abuse: never audited
    "other",
)
#: An audited refusal's ``detail["reason"]`` (or, failing that, its action) → its reason label.
_REASON_OF: Final = {
    "revoked": "device_revoked",
    "forbidden": "scope",
    "out of scope": "scope",
    "rate limited": "rate_limited",
    "no complete request by the deadline": "too_slow",  # relay/limits.py Refusal.NO_REQUEST
    "locked out": "locked_out",
    "unknown user": "bad_credentials",
    "bad password": "bad_credentials",
    "token expired": "token_invalid",
    "console.connect": "token_invalid",
    "api.auth": "token_invalid",
    "device.enrol": "enrolment_refused",
    "agent.message": "protocol_error",
    "script.run.refused": "script_refused",
}


def refusal_reason(action: str, detail: Mapping[str, Any] | None = None) -> str:
    """The :data:`REFUSAL_REASONS` label of an audited refusal: from its fixed ``reason`` code or
    its action (never free text, so the label set stays fixed); ``other`` if neither is known."""
    reason = str((detail or {}).get("reason", ""))
    if reason in REFUSAL_REASONS:
        return reason
    if reason.startswith("role "):
        return "scope"
    return _REASON_OF.get(reason) or _REASON_OF.get(action) or "other"


#: Which websocket endpoint a frame crossed.
ENDPOINTS: Final = ("agent", "console")


class RelayMetrics:
    """Every metric one relay exports, registered in ``self.registry`` (one per application)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, process_metrics: bool = True
    ) -> None:
        """Args:
        registry: where to register; a fresh ``CollectorRegistry`` by default, never the global.
        process_metrics: also export ``process_*`` (RSS, CPU, open files) for this process.
        """
        self.registry = registry if registry is not None else CollectorRegistry()
        reg, ns = self.registry, NAMESPACE
        if process_metrics:
            ProcessCollector(registry=reg)
        self.agents_connected = Gauge(
            "agents_connected", "Authenticated agents connected now.", namespace=ns, registry=reg
        )
        self.consoles_connected = Gauge(
            "consoles_connected", "Signed-in consoles connected now.", namespace=ns, registry=reg
        )
        self.agent_replacements = Counter(
            "agent_replacements",
            "Agent connections closed because the same device connected again (4002).",
            namespace=ns,
            registry=reg,
        )
        self.agents_flapping = Gauge(
            "agents_flapping",
            "Devices whose connections keep replacing each other (one identity on two tills).",
            namespace=ns,
            registry=reg,
        )
        self.requests_routed = Counter(
            "requests_routed",
            "Console requests routed to an agent, by message kind and how they ended.",
            ["kind", "outcome"],
            namespace=ns,
            registry=reg,
        )
        self.refusals = Counter(
            "refusals",
            "Connections, sign-ins and requests the relay refused, by reason.",
            ["reason"],
            namespace=ns,
            registry=reg,
        )
        self.request_latency = Histogram(
            "request_latency_seconds",
            "Routed request latency, from the console's request to the agent's final reply.",
            ["kind"],
            namespace=ns,
            registry=reg,
            buckets=LATENCY_BUCKETS,
        )
        self.handshake_duration = Histogram(
            "handshake_duration_seconds",
            "Agent authentication handshake duration, Hello to Accepted or Refused.",
            namespace=ns,
            registry=reg,
            buckets=HANDSHAKE_BUCKETS,
        )
        # Frames are counted on the forwarding hot path: plain ints (no lock per frame), read
        # by a collector when /metrics is scraped.
        self.frames_received = TallyFamily()
        self.frames_sent = TallyFamily()
        reg.register(_FrameCollector(self.frames_received, self.frames_sent))
        for reason in REFUSAL_REASONS:
            self.refusals.labels(reason=reason)

    def routed(self, kind: str, outcome: str, *, seconds: float) -> None:
        """Count one routed request of message ``kind`` and record how long it took."""
        self.requests_routed.labels(kind=kind, outcome=outcome).inc()
        self.request_latency.labels(kind=kind).observe(seconds)

    def refused(self, reason: str) -> None:
        """Count one refusal; ``reason`` is a fixed code (see :data:`REFUSAL_REASONS`); any other
        text counts as ``other``, so a label can never grow the registry."""
        self.refusals.labels(reason=reason if reason in REFUSAL_REASONS else "other").inc()

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The registry in the format ``accept`` asks for (Prometheus text by default).

        Returns:
            The body and its ``Content-Type`` header value.
        """
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class Tally:
    """A counter without a lock, for one event loop's hot path."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class TallyFamily:
    """Tallies by endpoint, with ``labels(endpoint=…)`` like a prometheus Counter."""

    def __init__(self) -> None:
        self.tallies = {endpoint: Tally() for endpoint in ENDPOINTS}

    def labels(self, *, endpoint: str) -> Tally:
        return self.tallies.setdefault(endpoint, Tally())


class _FrameCollector(Collector):
    def __init__(self, received: TallyFamily, sent: TallyFamily) -> None:
        self._families = (
            ("frames_received", "Websocket frames received, by endpoint.", received),
            ("frames_sent", "Websocket frames sent, by endpoint.", sent),
        )

    def collect(self) -> Iterator[Metric]:
        for name, text, family in self._families:
            metric = CounterMetricFamily(f"{NAMESPACE}_{name}", text, labels=["endpoint"])
            for endpoint, tally in family.tallies.items():
                metric.add_metric([endpoint], tally.value)
            yield metric


METRICS = web.AppKey("metrics", RelayMetrics)


def metrics_handler(
    metrics: RelayMetrics,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler serving ``metrics`` for ``GET /metrics`` (text or OpenMetrics)."""

    async def handle_metrics(request: web.Request) -> web.Response:
        body, content_type = metrics.exposition(request.headers.get("Accept", ""))
        # Content-Type goes in as a header: aiohttp's content_type= refuses parameters.
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handle_metrics
