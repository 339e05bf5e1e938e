"""The floor under issue 16's fan-out and paced targets: what waking N peer *processes* costs here.

Run from the repository root: ``python -m benchmarks.bench_wakeup_floor [--peers 20]``. Not a
test: no assertion on timing. benchmarks/bench_real_agents.py compares the real relay and agents
with the bare forwarder, whose peers all live in the benchmark's one process; this measures the
same fan-out and round trips with each peer in its **own** process, doing nearly nothing:

- ``tcp``: a peer is a blocking socket loop (no asyncio, no websocket): it reads one byte and
  writes it back. Here the middle is this process (uvloop), writing one byte to each peer. The
  cost of waking a Python process per request, and nothing else.
- ``ws echo``: a peer is an asyncio websocket client on the agent's library (websockets, the
  standard event loop, no compression, TCP_NODELAY) that sends each frame back as it came,
  through the bare forwarder (benchmarks/bench_relay.py ``--serve-baseline``, aiohttp + uvloop,
  its own process); the consoles are this process.
- ``ws codec``: as ``ws echo``, but the peer decodes the ``diag.request`` and answers an encoded
  ``diag.report`` with a ``printers`` section, as the fleet's peers and a real agent do.

For each: one request to every peer at once until every reply is in (median, min–max of
``--repeats``), a round trip to one peer every 250 ms (paced) and back-to-back (p50), and the CPU
per request of the peers and the middle (Linux schedstat, all threads). Bounded: at most
:data:`MAX_PEERS` peers, every wait with a deadline, every process stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.bench_real_agents import spent, thread_times
from benchmarks.bench_relay import start_baseline
from benchmarks.harness import ROOT, calibrate, fmt, percentile

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

MAX_PEERS = 200
#: Seconds any one reply may take before the run is abandoned.
REPLY_TIMEOUT = 15.0
PACE = 0.25


# --- the peers (each its own process) ---------------------------------------------------------


def tcp_peer(port: int) -> None:
    """Echo each byte back on a blocking socket: a Python process woken per request."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := sock.recv(64):
            sock.sendall(data)


async def ws_peer(url: str, codec: bool) -> None:
    """Answer each binary frame on the agent's websocket library: the same bytes (echo), or an
    encoded report for the decoded request (codec)."""
    from websockets.asyncio.client import connect

    from posassist.protocol import Codec, DiagnosticsReport

    coder = Codec()
    section = {"printers": {"ok": True, "data": {"printers": []}, "elapsed_ms": 0.0}}
    async with connect(url, compression=None, max_size=1 << 20, ping_interval=None) as ws:
        sock = ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        async for frame in ws:
            if not codec:
                await ws.send(frame)
                continue
            assert isinstance(frame, bytes)
            request = coder.decode(frame)
            report = DiagnosticsReport(
                id=getattr(request, "id"),  # noqa: B009
                device_id=getattr(request, "device_id"),  # noqa: B009
                collected_at=time.time(),
                sections=section,
            )
            await ws.send(coder.encode(report))


def start_peer(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_wakeup_floor", *argv],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


# --- the middle (this process) ----------------------------------------------------------------


@dataclass
class Figures:
    name: str
    fanout: list[float] = field(default_factory=list)
    paced: list[float] = field(default_factory=list)
    b2b: list[float] = field(default_factory=list)
    #: phase → CPU ms per request of the peers, of the middle, of this process
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)


class Measure:
    """CPU seconds of the peers, the middle and this process over one phase, per request."""

    def __init__(self, peers: Sequence[int], middle: int | None, figures: Figures) -> None:
        self.pids = [*peers, middle or os.getpid(), os.getpid()]
        self.figures = figures

    @contextlib.contextmanager
    def phase(self, name: str, requests: int) -> Any:
        before = [thread_times(p) for p in self.pids]
        yield
        after = [thread_times(p) for p in self.pids]
        used = [spent(b, a)[0] for b, a in zip(before, after, strict=True)]
        self.figures.cpu[name] = {
            "peers": sum(used[:-2]) * 1000 / requests,
            "middle": used[-2] * 1000 / requests,
            "here": used[-1] * 1000 / requests,
        }


async def measure(
    figures: Figures,
    measure: Measure,
    ask: Sequence[Callable[[int], Awaitable[None]]],
    rtt: int,
    repeats: int,
) -> None:
    """Fan-out to every peer ``repeats`` times (the first, cold, left out), then ``rtt`` paced
    and back-to-back round trips to the first."""
    number = 2
    await asyncio.gather(*(one(number) for one in ask))  # cold: every peer woken once
    with measure.phase("fan-out", len(ask) * repeats):
        for _ in range(repeats):
            number += 1
            await asyncio.sleep(PACE)  # idle peers, as a store's tills are between requests
            start = time.perf_counter()
            await asyncio.gather(*(one(number) for one in ask))
            figures.fanout.append(time.perf_counter() - start)
    with measure.phase("paced", rtt):
        for _ in range(rtt):
            number += 1
            start = time.perf_counter()
            await ask[0](number)
            figures.paced.append(time.perf_counter() - start)
            await asyncio.sleep(PACE)  # the pacing is the measurement's, not a wait
    with measure.phase("back-to-back", rtt):
        for _ in range(rtt):
            number += 1
            start = time.perf_counter()
            await ask[0](number)
            figures.b2b.append(time.perf_counter() - start)


async def run_tcp(n: int, rtt: int, repeats: int) -> Figures:
    figures = Figures("tcp: blocking-socket peers, 1 byte each way")
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    port = server.getsockname()[1]
    procs = [start_peer(["--peer-tcp", str(port)]) for _ in range(n)]
    loop = asyncio.get_running_loop()
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        async with asyncio.timeout(60):
            for _ in range(n):
                conn, _ = await loop.sock_accept(server)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                streams.append(await asyncio.open_connection(sock=conn))

        def asker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
            async def one(number: int) -> None:
                writer.write(bytes((number % 256,)))
                async with asyncio.timeout(REPLY_TIMEOUT):
                    await reader.readexactly(1)

            return one

        meter = Measure([p.pid for p in procs], None, figures)
        await measure(figures, meter, [asker(r, w) for r, w in streams], rtt, repeats)
    finally:
        for _, writer in streams:
            writer.close()
        server.close()
        _stop(procs)
    return figures


async def run_ws(url: str, middle: int, n: int, rtt: int, repeats: int, codec: bool) -> Figures:
    from aiohttp import ClientSession, TCPConnector

    from posassist.protocol import Codec, DiagnosticsRequest

    kind = "codec" if codec else "echo"
    figures = Figures(f"ws {kind}: websockets peers through the forwarder")
    argv = ["--peer-ws", url + "/pair/floor-{i}", *(["--codec"] if codec else [])]
    procs = [start_peer([*argv[:1], argv[1].format(i=i), *argv[2:]]) for i in range(n)]
    coder = Codec()
    try:
        async with ClientSession(connector=TCPConnector(limit=0)) as http:
            consoles = [
                await http.ws_connect(f"{url}/pair/floor-{i}", max_msg_size=1 << 20)
                for i in range(n)
            ]

            def asker(console: Any) -> Any:
                async def one(number: int) -> None:
                    request = DiagnosticsRequest(id=number, device_id="dev_floor", timeout=10.0)
                    await console.send_bytes(coder.encode(request))
                    async with asyncio.timeout(REPLY_TIMEOUT):
                        await console.receive_bytes()

                return one

            # the peers connect in their own time: a request answered means the pair is made
            async with asyncio.timeout(120):
                for console in consoles:
                    while True:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(asker(console)(1), 1.0)
                            break
            meter = Measure([p.pid for p in procs], middle, figures)
            await measure(figures, meter, [asker(c) for c in consoles], rtt, repeats)
            for console in consoles:
                await console.close()
    finally:
        _stop(procs)
    return figures


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def markdown(results: Sequence[Figures], settings: dict[str, Any], load: list[str]) -> str:
    out = [
        "# Wake-up floor: fan-out and round trips to peers in their own processes",
        "",
        "`python -m benchmarks.bench_wakeup_floor` (benchmarks/bench_wakeup_floor.py). "
        f"Settings: {settings}. Load average: {' → '.join(load)}.",
        "",
        f"| peers: what each does | fan-out to {settings['peers']} ms, median (min–max) "
        "| paced p50 ms | back-to-back p50 ms | peers CPU ms per request (fan-out / paced / "
        "back-to-back) | middle CPU ms per request (fan-out / paced / back-to-back) |",
        "|---|---|---|---|---|---|",
    ]
    for f in results:
        cpu = f.cpu

        def three(who: str, cpu: dict[str, dict[str, float]] = cpu) -> str:
            return " / ".join(f"{cpu[p][who]:.3f}" for p in ("fan-out", "paced", "back-to-back"))

        out.append(
            f"| {f.name} | {fmt([v * 1000 for v in f.fanout])} "
            f"| {percentile(f.paced, 0.5) * 1000:.2f} | {percentile(f.b2b, 0.5) * 1000:.2f} "
            f"| {three('peers')} | {three('middle')} |"
        )
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=20, help=f"1..{MAX_PEERS}")
    parser.add_argument("--rtt", type=int, default=100, help="round trips per mode")
    parser.add_argument("--repeats", type=int, default=9, help="fan-outs")
    parser.add_argument("--output", type=Path, help="markdown file (default: print only)")
    parser.add_argument("--peer-tcp", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--peer-ws", help=argparse.SUPPRESS)
    parser.add_argument("--codec", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer_tcp is not None:
        tcp_peer(args.peer_tcp)
        return 0
    if args.peer_ws is not None:
        with contextlib.suppress(Exception):  # the middle closing ends the peer
            asyncio.run(ws_peer(args.peer_ws, args.codec))
        return 0
    if not (1 <= args.peers <= MAX_PEERS and 1 <= args.rtt <= 10_000 and 1 <= args.repeats <= 100):
        parser.error("--peers, --rtt or --repeats out of bounds")
    import uvloop

    load = [" ".join(f"{x:.1f}" for x in os.getloadavg())]
    calibration = [calibrate()]
    results = [uvloop.run(run_tcp(args.peers, args.rtt, args.repeats))]
    work = Path(tempfile.mkdtemp(prefix="posassist-floor-"))
    baseline = start_baseline(work)
    try:
        for codec in (False, True):
            results.append(
                uvloop.run(
                    run_ws(
                        baseline.url, baseline.proc.pid, args.peers, args.rtt, args.repeats, codec
                    )
                )
            )
    finally:
        baseline.proc.terminate()
        baseline.proc.wait(timeout=30)
    calibration.append(calibrate())
    load.append(" ".join(f"{x:.1f}" for x in os.getloadavg()))
    settings = {
        **{k: v for k, v in vars(args).items() if k in ("peers", "rtt", "repeats")},
        "calibration s": [round(c, 3) for c in calibration],
        "fan-outs": statistics.median(len(r.fanout) for r in results),
    }
    text = markdown(results, settings, load)
    print(text)
    if args.output is not None:
        args.output.write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
