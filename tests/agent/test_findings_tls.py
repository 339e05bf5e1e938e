"""TLS expiry of the payment gateways a POS profile names (§5 #18): a real TLS server on 127.0.0.1
whose certificate expires in days, one that has expired, and one that refuses connections."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING

import pytest

from posassist.agent.collectors import network
from posassist.agent.diagnostics import DiagContext
from posassist.agent.errors import ConfigError
from posassist.agent.findings import Severity, evaluate
from posassist.agent.profile import parse_profile
from posassist.agent.settings import Settings
from tests.relay.certs import make_certificate

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


class TlsServer:
    """Accepts TLS handshakes on 127.0.0.1 with the given certificate, then closes."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.handshakes = 0
        #: set after each handshake is counted: the client may finish its side first
        self.counted = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                conn.settimeout(5.0)
                with self.context.wrap_socket(conn, server_side=True):
                    self.handshakes += 1
                    self.counted.set()
            except OSError:
                conn.close()

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.thread.join(timeout=5.0)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[object]:
    servers: list[TlsServer] = []

    def start(days: float, stem: str) -> TlsServer:
        now = dt.datetime.now(dt.UTC)
        cert = make_certificate(
            not_before=now - dt.timedelta(days=400), not_after=now + dt.timedelta(days=days)
        )
        server = TlsServer(*cert.write(tmp_path, stem))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _profile(hosts: list[str]) -> object:
    listed = ", ".join(f'"{h}"' for h in hosts)
    return parse_profile(f'name = "t"\n[payment]\nhosts = [{listed}]\n')


def test_gateway_certificates_expiring_expired_and_a_refused_gateway(
    tls_server, unused_port
) -> None:
    soon = tls_server(3.0, "soon")
    gone = tls_server(-2.0, "gone")
    fine = tls_server(200.0, "fine")
    hosts = [f"127.0.0.1:{s.port}" for s in (soon, gone, fine)] + [f"127.0.0.1:{unused_port}"]
    profile = _profile(hosts)
    ctx = DiagContext(Settings(), profile=profile)  # type: ignore[arg-type]
    data = network.collect(ctx)
    assert [g["port"] for g in data["payment_gateways"]] == [int(h[10:]) for h in hosts]
    report = {"sections": {"network": {"ok": True, "data": data}}}
    found = {f.subject: f for f in evaluate(report, profile, time.time())}  # type: ignore[arg-type]
    assert found[hosts[0]].code == "gateway.tls_expiring"
    assert found[hosts[0]].severity is Severity.WARNING
    assert "in 3 days" in found[hosts[0]].detail["en"]
    assert found[hosts[1]].code == "gateway.tls_expired"
    assert found[hosts[1]].severity is Severity.CRITICAL
    assert "2 days ago" in found[hosts[1]].detail["en"]
    assert hosts[2] not in found  # 200 days left
    assert found[hosts[3]].code == "gateway.unreachable"
    assert soon.counted.wait(10.0)  # the server's side of the handshake ends after the client's
    assert soon.handshakes == 1


@pytest.mark.parametrize(
    "bad", ["pay.example.cn", "pay.example.cn:0", "pay.example.cn:99999", "-x:443", "a b:443"]
)
def test_a_profile_gateway_that_is_not_host_port_is_refused(bad) -> None:
    with pytest.raises(ConfigError, match=r"\[payment\] hosts"):
        _profile([bad])


def test_a_relay_that_refuses_or_does_not_speak_tls(unused_port) -> None:
    refused = network.collect(DiagContext(Settings(relay_url=f"wss://127.0.0.1:{unused_port}/")))
    report = {"sections": {"network": {"ok": True, "data": refused}}}
    (finding,) = evaluate(report, None, time.time())
    assert finding.code == "network.relay_unreachable"
    plain = socket.create_server(("127.0.0.1", 0))  # accepts, then closes: no TLS
    port = plain.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = plain.accept()
            conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        data = network.collect(DiagContext(Settings(relay_url=f"wss://127.0.0.1:{port}/")))
    finally:
        plain.close()
        thread.join(timeout=5)
    report = {"sections": {"network": {"ok": True, "data": data}}}
    codes = [f.code for f in evaluate(report, None, time.time())]
    assert "tls.handshake_failed" in codes


def test_silent_gateways_are_each_unreachable_and_the_section_still_reads() -> None:
    """attack 14 F8: gateways that accept and never speak were probed one after another (3 s of
    TLS wait each) until the network section timed out whole as "unreadable" — link, DNS,
    relay and gateway findings all lost when they matter most. Now they are probed at once."""
    from posassist.agent.diagnostics import Collector, collect_report

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts; nobody ever answers the TLS hello
    try:
        hosts = [f"127.0.0.1:{silent.getsockname()[1]}"] * 3
        profile = _profile(hosts)
        ctx = DiagContext(Settings(), profile=profile)  # type: ignore[arg-type]
        import asyncio

        sections = asyncio.run(
            collect_report(ctx, [Collector("network", network.collect, 8.0)], time.monotonic() + 9)
        )
    finally:
        silent.close()
    assert sections["network"]["ok"] is True, sections["network"]
    report = {"sections": sections}
    codes = [f.code for f in evaluate(report, profile, time.time())]  # type: ignore[arg-type]
    assert codes.count("gateway.unreachable") == 3, codes


def test_a_probe_that_never_answers_is_cut_at_the_budget_and_named_by_its_step() -> None:
    release = threading.Event()

    def hangs_after_dns(out: dict[str, object]) -> None:
        out.update(host="pay.example.cn", port=443, tls_wanted=True, dns={"ok": True})
        release.wait(30)  # a connect that never completes
        out["tcp"] = {"ok": True}

    def answers(out: dict[str, object]) -> None:
        out.update(host="ok.example.cn", port=443, dns={"ok": True}, tcp={"ok": True})

    try:
        hung, fine = network.probe_all([({}, hangs_after_dns), ({}, answers)], 0.2)
    finally:
        release.set()
    assert hung["tcp"] == {"ok": False, "error": "no answer within 0.2 s"}
    assert "tls" not in hung
    assert fine["tcp"] == {"ok": True}
