"""Relay metrics: values reach a real ``/metrics`` endpoint, and each application counts alone."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from posassist.relay.metrics import (
    LATENCY_BUCKETS,
    METRICS,
    REFUSAL_REASONS,
    RelayMetrics,
    metrics_handler,
    refusal_reason,
)
from tests.relay.harness import PASSWORD, Relay, start_relay


def make_app() -> web.Application:
    app = web.Application()
    metrics = RelayMetrics()
    app[METRICS] = metrics
    app.router.add_get("/metrics", metrics_handler(metrics))
    return app


async def scrape(app: web.Application, accept: str | None = None) -> tuple[str, str]:
    headers = {"Accept": accept} if accept is not None else {}
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/metrics", headers=headers)
        assert resp.status == 200
        return resp.headers["Content-Type"], await resp.text()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, frozenset(labels.items()))]


async def test_metrics_endpoint_serves_recorded_values_as_prometheus_text() -> None:
    app = make_app()
    m = app[METRICS]
    m.agents_connected.inc(3)
    m.agents_connected.dec()
    m.consoles_connected.set(1)
    m.routed("diagnostics", "ok", seconds=0.0007)
    m.routed("diagnostics", "ok", seconds=0.3)
    m.routed("script_run", "timeout", seconds=10.0)
    m.refused("bad_signature")
    m.handshake_duration.observe(0.004)
    m.frames_received.labels(endpoint="agent").inc(5)
    m.frames_sent.labels(endpoint="console").inc(2)

    content_type, text = await scrape(app)

    assert content_type.startswith("text/plain; version=0.0.4")
    assert "charset=utf-8" in content_type
    assert value(text, "posassist_relay_agents_connected") == 2
    assert value(text, "posassist_relay_consoles_connected") == 1
    assert (
        value(text, "posassist_relay_requests_routed_total", kind="diagnostics", outcome="ok") == 2
    )
    assert (
        value(text, "posassist_relay_requests_routed_total", kind="script_run", outcome="timeout")
        == 1
    )
    assert value(text, "posassist_relay_refusals_total", reason="bad_signature") == 1
    assert value(text, "posassist_relay_refusals_total", reason="rate_limited") == 0  # pre-made
    m.refused("user.login")  # not a reason (an action, free text…): counted, under "other"
    _, text = await scrape(app)
    assert value(text, "posassist_relay_refusals_total", reason="other") == 1
    assert ("posassist_relay_refusals_total", frozenset({("reason", "user.login")})) not in samples(
        text
    )
    latency = "posassist_relay_request_latency_seconds"
    assert value(text, f"{latency}_count", kind="diagnostics") == 2
    assert value(text, f"{latency}_bucket", kind="diagnostics", le="0.0005") == 0
    assert value(text, f"{latency}_bucket", kind="diagnostics", le="0.001") == 1
    assert value(text, f"{latency}_bucket", kind="script_run", le="10.0") == 1
    assert value(text, "posassist_relay_handshake_duration_seconds_count") == 1
    assert value(text, "posassist_relay_frames_received_total", endpoint="agent") == 5
    assert value(text, "posassist_relay_frames_sent_total", endpoint="console") == 2
    assert value(text, "posassist_relay_frames_sent_total", endpoint="agent") == 0
    assert value(text, "process_resident_memory_bytes") > 0


def test_latency_buckets_span_half_a_millisecond_to_ten_seconds() -> None:
    assert LATENCY_BUCKETS[0] == 0.0005
    assert LATENCY_BUCKETS[-1] == 10.0
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


async def test_gauge_read_at_scrape_time_follows_live_state() -> None:
    app = make_app()
    agents: dict[str, object] = {}
    app[METRICS].agents_connected.set_function(lambda: len(agents))
    agents["till-1"] = object()
    agents["till-2"] = object()
    _, text = await scrape(app)
    assert value(text, "posassist_relay_agents_connected") == 2


async def test_metrics_endpoint_speaks_openmetrics_when_asked() -> None:
    app = make_app()
    app[METRICS].refused("scope")
    content_type, text = await scrape(app, accept="application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert 'posassist_relay_refusals_total{reason="scope"} 1.0' in text
    assert text.endswith("# EOF\n")


async def test_two_applications_keep_independent_counts() -> None:
    first, second = make_app(), make_app()  # a shared registry would raise "Duplicated timeseries"
    first[METRICS].refused("locked_out")
    first[METRICS].refused("locked_out")
    second[METRICS].refused("locked_out")
    first[METRICS].agents_connected.set(7)

    _, first_text = await scrape(first)
    _, second_text = await scrape(second)

    assert value(first_text, "posassist_relay_refusals_total", reason="locked_out") == 2
    assert value(second_text, "posassist_relay_refusals_total", reason="locked_out") == 1
    assert value(second_text, "posassist_relay_agents_connected") == 0
    # and nothing leaked into prometheus_client's process-wide default registry
    assert REGISTRY.get_sample_value("posassist_relay_agents_connected") is None


def test_process_metrics_can_be_left_out() -> None:
    metrics = RelayMetrics(process_metrics=False)
    body, _ = metrics.exposition()
    assert b"process_resident_memory_bytes" not in body
    assert b"posassist_relay_agents_connected" in body


async def test_audited_refusals_count_under_their_reasons_not_their_actions(tmp_path) -> None:
    relay = await start_relay(tmp_path, login_burst=1000)
    try:
        for password in ("wrong password", "also wrong"):
            status, _ = await relay.post("/v1/login", {"username": "tech", "password": password})
            assert status == 401
        status, _ = await relay.post("/v1/login", {"username": "nobody", "password": PASSWORD})
        assert status == 401
        status, _ = await relay.get("/v1/devices", token="not-a-token")
        assert status == 401
        status, _ = await relay.post(
            "/v1/enrol", {"secret": "x" * 32, "public_key": "A" * 43 + "="}
        )
        assert status == 403
        text = await scrape_relay(relay)
    finally:
        await relay.server.close()
    counts = {
        dict(labels)["reason"]: count
        for (name, labels), count in samples(text).items()
        if name == "posassist_relay_refusals_total"
    }
    assert set(counts) == set(REFUSAL_REASONS)  # no action ever became a label
    assert counts["bad_credentials"] == 3
    assert counts["token_invalid"] == 1
    assert counts["enrolment_refused"] == 1
    assert counts["other"] == 0


async def scrape_relay(relay: Relay) -> str:
    async with aiohttp.ClientSession() as client, client.get(relay.http + "/metrics") as resp:
        assert resp.status == 404  # never on the agents' port (serve() gives it its own)
    return relay.metrics_text()


def test_every_refusal_the_relay_audits_has_a_reason_label() -> None:
    cases = {
        ("agent.connect", "unknown_device"): "unknown_device",
        ("agent.connect", "bad_signature"): "bad_signature",
        ("agent.connect", "revoked"): "device_revoked",
        ("agent.message", "invalid message"): "protocol_error",
        ("console.connect", "invalid token"): "token_invalid",
        ("api.auth", "token expired"): "token_invalid",
        ("device.enrol", "enrolment token already used"): "enrolment_refused",
        ("user.login", "rate limited"): "rate_limited",
        ("user.login", "unknown user"): "bad_credentials",
        ("user.login", "bad password"): "bad_credentials",
        ("user.login", "locked out"): "locked_out",
        ("device.revoke", "role viewer"): "scope",
        ("diagnostics.request", "forbidden"): "scope",
        ("diagnostics.request", "rate_limited"): "rate_limited",
        ("diagnostics.request", "token expired"): "token_invalid",
        ("user.create", "out of scope"): "scope",
        ("script.run.refused", "precondition"): "script_refused",
        ("something.new", "anything"): "other",
    }
    for (action, reason), label in cases.items():
        assert refusal_reason(action, {"reason": reason}) == label, (action, reason)
    assert refusal_reason("agent.message", None) == "protocol_error"
