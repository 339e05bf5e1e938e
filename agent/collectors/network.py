"""Network collector: interfaces, the relay's DNS name, TCP connect time, TLS certificate expiry,
and the clock offset against the relay measured from heartbeat acks (reference §5.3).
"""

from __future__ import annotations

import functools
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from posassist.agent.diagnostics import DiagContext

__all__ = [
    "clock_by_https",
    "clock_offset",
    "collect",
    "date_offset",
    "parse_interfaces",
    "parse_relay_url",
    "probe_host",
    "probe_relay",
]

_AF_NAMES = {socket.AF_INET: "ipv4", getattr(socket, "AF_INET6", -1): "ipv6"}


def parse_interfaces(
    addrs: Dict[str, Sequence[Any]], stats: Dict[str, Any]
) -> List[Dict[str, Any]]:
    """Summarise ``psutil.net_if_addrs()`` and ``net_if_stats()``; flag APIPA (no DHCP, §5.3 #21).

    Args:
        addrs: interface name → address records with ``family`` and ``address``.
        stats: interface name → records with ``isup``, ``speed`` (Mbps) and ``mtu``.

    Returns:
        One dict per interface, loopback last.
    """
    out = []
    for name in sorted(set(addrs) | set(stats)):
        ips = [
            {"family": _AF_NAMES[a.family], "address": a.address}
            for a in addrs.get(name, ())
            if a.family in _AF_NAMES
        ]
        stat = stats.get(name)
        loopback = any(ip["address"] in ("127.0.0.1", "::1") for ip in ips)
        out.append(
            {
                "name": name,
                "up": getattr(stat, "isup", None),
                "speed_mbps": getattr(stat, "speed", None),
                "mtu": getattr(stat, "mtu", None),
                "addresses": ips,
                "apipa": any(ip["address"].startswith("169.254.") for ip in ips),
                "loopback": loopback,
            }
        )
    out.sort(key=lambda i: (i["loopback"], i["name"]))
    return out


def clock_offset(samples: Sequence[Tuple[float, float, float]]) -> Optional[Dict[str, Any]]:
    """Estimate relay clock minus agent clock from heartbeat round trips (NTP-style).

    Each sample is (agent sent_at, relay received_at, agent ack arrival). The sample with the
    shortest round trip is the least disturbed by queuing, so it is the one used.

    Returns:
        ``{"offset_s", "rtt_s", "samples"}``, or None without samples.
    """
    if not samples:
        return None
    sent, relay_at, back = min(samples, key=lambda s: s[2] - s[0])
    rtt = max(0.0, back - sent)
    return {
        "offset_s": round(relay_at - (sent + rtt / 2.0), 3),
        "rtt_s": round(rtt, 4),
        "samples": len(samples),
    }


def parse_relay_url(url: str) -> Tuple[str, str, int]:
    """``(scheme, host, port)`` of a ``ws://`` or ``wss://`` URL; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "wss" else 80)


def _cert_expiry(der: bytes) -> float:
    """notAfter of the relay's certificate (ValueError if it cannot be read)."""
    from posassist.protocol.der import certificate_facts  # only when the relay uses TLS

    return certificate_facts(der).not_after


def probe_relay(
    url: str, timeout: float = 3.0, out: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """Resolve the relay's name, time a TCP connect and, for wss, read its certificate's expiry.

    The certificate is read without verifying it: the point is to report *why* TLS fails (expired,
    or a till clock far off), which a verifying handshake would only refuse.
    """
    scheme, host, port = parse_relay_url(url)
    out = out if out is not None else {}
    out["url"] = url
    return probe_host(host, port, tls=scheme == "wss", timeout=timeout, out=out)


def probe_host(
    host: str,
    port: int,
    tls: bool = True,
    timeout: float = 3.0,
    out: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """DNS, TCP connect time and (``tls``) the certificate's expiry of ``host:port``, unverified.

    Each step's result is put in ``out`` as soon as it is known, so a caller that stops waiting
    (:func:`probe_all`) can say which step never answered.
    """
    out = out if out is not None else {}
    out.update(host=host, port=port, tls_wanted=tls)
    started = time.monotonic()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        out["dns"] = {"ok": False, "error": str(exc.strerror or exc)}
        return out
    addresses = sorted({str(info[4][0]) for info in infos})
    out["dns"] = {
        "ok": True,
        "addresses": addresses,
        "ms": round((time.monotonic() - started) * 1000.0, 1),
    }
    started = time.monotonic()
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        out["tcp"] = {"ok": False, "error": exc.strerror or type(exc).__name__}
        return out
    try:
        out["tcp"] = {"ok": True, "connect_ms": round((time.monotonic() - started) * 1000.0, 1)}
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            try:
                sock.settimeout(timeout)
                with context.wrap_socket(sock, server_hostname=host) as conn:
                    der = conn.getpeercert(binary_form=True)
                    version = conn.version()
                expires = _cert_expiry(der) if der else None
                out["tls"] = {
                    "ok": True,
                    "version": version,
                    "not_after": expires,
                    "days_left": None
                    if expires is None
                    else round((expires - time.time()) / 86400, 1),
                }
            except (OSError, ValueError) as exc:
                out["tls"] = {"ok": False, "error": str(exc)[:200]}
    finally:
        sock.close()
    return out


def date_offset(date_header: str, sent: float, received: float) -> Optional[Dict[str, Any]]:
    """Relay clock minus ours from an HTTP ``Date`` header (1 s resolution), or None if unreadable.

    The header's second is taken as the middle of the round trip, like a heartbeat sample.
    """
    from email.utils import parsedate_to_datetime

    try:
        relay_at = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    rtt = max(0.0, received - sent)
    return {
        "offset_s": round(relay_at + 0.5 - (sent + rtt / 2.0), 1),  # +0.5: the header truncates
        "rtt_s": round(rtt, 4),
        "samples": 1,
        "source": "https-date",
    }


def clock_by_https(url: str, pin: str = "", timeout: float = 3.0) -> Dict[str, Any]:
    """The clock offset against the relay's HTTP(S) ``Date`` header, for a till that is offline
    (no heartbeat samples): one GET of ``/healthz`` through the pinned helper (client/http.py)."""
    from posassist.client.http import HttpError, http_url, request

    target = http_url(url).rstrip("/") + "/healthz"
    sent = time.time()
    try:
        answer = request("GET", target, pin=pin or None, timeout=timeout, max_bytes=4096)
    except HttpError as exc:
        return {"source": "https-date", "error": f"{type(exc).__name__}: {exc}"[:200]}
    offset = date_offset(answer.headers.get("date", ""), sent, time.time())
    return offset or {"source": "https-date", "error": "no readable Date header"}


def collect(ctx: DiagContext) -> Dict[str, Any]:
    """Interfaces, the relay link and the clock offset against the relay."""
    import psutil  # type: ignore[import-untyped]

    data: Dict[str, Any] = {
        "interfaces": parse_interfaces(psutil.net_if_addrs(), psutil.net_if_stats()),
        "relay": None,
        "clock": clock_offset(ctx.clock.snapshot()),
    }
    if data["clock"] is not None:
        data["clock"]["source"] = "heartbeat"
    jobs: List[Tuple[Dict[str, Any], Callable[[Dict[str, Any]], Any]]] = []
    relay: Dict[str, Any] = {}
    clock: Dict[str, Any] = {}
    if ctx.settings.relay_url:
        url, pin, need_clock = ctx.settings.relay_url, ctx.settings.relay_pin, data["clock"] is None

        def relay_probe(out: Dict[str, Any]) -> None:
            probe_relay(url, out=out)
            if need_clock and (out.get("tcp") or {}).get("ok"):
                clock.update(clock_by_https(url, pin))

        jobs.append((relay, relay_probe))
    gateways: List[Dict[str, Any]] = []
    if ctx.profile is not None and ctx.profile.payment_hosts:
        for host, _, port in (h.rpartition(":") for h in ctx.profile.payment_hosts):
            gateways.append({})
            jobs.append((gateways[-1], functools.partial(_probe_gateway, host, int(port))))
    results = probe_all(jobs, PROBE_BUDGET)
    if ctx.settings.relay_url:
        data["relay"] = results.pop(0)
        if clock:
            data["clock"] = dict(clock)
    if gateways:
        data["payment_gateways"] = results
    return data


def _probe_gateway(host: str, port: int, out: Dict[str, Any]) -> None:
    probe_host(host, port, out=out)


#: Seconds all network probes together may take (they run at once): within the collector's 8 s.
PROBE_BUDGET = 6.5


def probe_all(
    jobs: Sequence[Tuple[Dict[str, Any], Callable[[Dict[str, Any]], Any]]], budget: float
) -> List[Dict[str, Any]]:
    """Run each ``(out, probe)`` at once in its own thread, for at most ``budget`` seconds in all;
    each probe's readings, in ``jobs`` order.

    A probe still running then (a host that swallows packets, a resolver that never answers)
    gives a copy of what it read so far with its unanswered step marked failed (``dns``, ``tcp``
    or ``tls``: "no answer within … s"), so one silent gateway never hides the other readings
    (attack 14 F8). Its thread is a daemon and ends with its own socket timeouts.
    """
    threads = []
    for out, probe in jobs:
        thread = threading.Thread(target=_guarded, args=(probe, out), daemon=True)
        thread.start()
        threads.append((out, thread))
    deadline = time.monotonic() + budget
    results = []
    for out, thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():  # still writing into ``out``: report a copy
            copy = dict(out)
            _mark_unanswered(copy, budget)
            results.append(copy)
        else:
            results.append(out)
    return results


def _guarded(probe: Callable[[Dict[str, Any]], Any], out: Dict[str, Any]) -> None:
    try:
        probe(out)
    except Exception as exc:  # a probe's own bug is a reading that failed, never a lost section
        out.setdefault("error", f"{type(exc).__name__}: {exc}"[:200])


def _mark_unanswered(out: Dict[str, Any], budget: float) -> None:
    why = {"ok": False, "error": f"no answer within {budget:g} s"}
    for step in ("dns", "tcp", "tls"):
        if step == "tls" and not out.get("tls_wanted"):
            break
        if step not in out:
            out[step] = dict(why)
            break
