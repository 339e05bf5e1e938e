"""The help window's latencies over a real relay and agent (issue 12's benchmark): from "send" in
the window to the ticket visible to a technician, and from the merchant's consent answer to the
technician seeing it. Target: ≤ 100 ms each, plus human time.

``python -m benchmarks.bench_helpwindow [--rounds N]``; prints markdown. The window side is the
link client the Tk window and ``--text`` use; the technician is the relay's API (tickets) and
the ``posassist run`` command line (consent), each a real process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{statistics.median(ordered) * 1000:.1f} | {p90 * 1000:.1f} | {max(ordered) * 1000:.1f}"


async def _until(client: Any, kind: type | str, timeout: float = 30.0) -> Any:
    """The next message of ``kind`` (a class, or a link-only tag) from the agent."""
    deadline = time.monotonic() + timeout
    while True:
        msg = await client.receive(max(0.1, deadline - time.monotonic()))
        if isinstance(kind, str):
            if isinstance(msg, dict) and msg.get("t") == kind:
                return msg
        elif isinstance(msg, kind):
            return msg


async def measure(store: Any, rounds: int) -> dict[str, list[float]]:
    from posassist.agent.helpwindow.linkclient import LinkClient
    from posassist.protocol import (
        ConsentAnswer,
        ConsentRequest,
        HelpRequested,
        TicketList,
        TicketOpened,
        TicketQuery,
        TicketReplied,
        TicketReply,
    )
    from tests.e2e.test_helpwindow import api

    client = await LinkClient.connect(store.till)
    await client.send({"t": "link.diagnose", "id": 1})  # as the window does when it opens
    await _until(client, "link.summary")
    sent_to_opened, sent_to_visible, answer_to_technician = [], [], []
    baseline, reply_to_visible = [], []
    for i in range(rounds):  # the baseline: window → agent → relay → back, nothing written
        t0 = time.perf_counter()
        await client.send(TicketQuery(id=500 + i))
        await _until(client, TicketList)
        baseline.append(time.perf_counter() - t0)
    for i in range(rounds):
        asked = HelpRequested(
            id=10 + i, device_id=store.device, category="printer", description=f"bench {i}"
        )
        t0 = time.perf_counter()
        await client.send(asked)
        opened = await _until(client, TicketOpened)
        t1 = time.perf_counter()
        shown = await asyncio.to_thread(
            api, store.url, "GET", f"/v1/tickets/{opened.support_code}", store.token
        )
        t2 = time.perf_counter()
        assert shown["description"] == f"bench {i}"
        # the technician asks; the merchant's reply → the ticket back in work, for the API
        code = opened.support_code
        await asyncio.to_thread(
            api, store.url, "POST", f"/v1/tickets/{code}/accept", store.token, {}
        )
        ask = {"text": "纸装好了吗?", "state": "waiting_merchant"}
        await asyncio.to_thread(
            api, store.url, "POST", f"/v1/tickets/{code}/note", store.token, ask
        )
        t3 = time.perf_counter()
        await client.send(TicketReply(id=900 + i, ticket_id=opened.ticket_id, text="装好了"))
        await _until(client, TicketReplied)
        back = await asyncio.to_thread(api, store.url, "GET", f"/v1/tickets/{code}", store.token)
        reply_to_visible.append(time.perf_counter() - t3)
        assert back["status"] == "in_progress"
        # a till may have 5 open tickets: each is solved before the next round
        path = f"/v1/tickets/{code}/resolve"
        await asyncio.to_thread(api, store.url, "POST", path, store.token, {"text": "ok"})
        sent_to_opened.append(t1 - t0)
        sent_to_visible.append(t2 - t0)
    env = dict(store.tech.env, PYTHONUNBUFFERED="1")
    for _ in range(rounds):
        run = await asyncio.to_thread(
            subprocess.Popen,
            [
                *(sys.executable, "-m", "posassist.console", "run", store.device),
                *("printer-status", "--version", "1.0.0"),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        seen: list[float] = []

        def watch(proc: subprocess.Popen[str] = run, into: list[float] = seen) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("[consent] denied"):
                    into.append(time.perf_counter())

        reader = threading.Thread(target=watch)
        reader.start()
        question = await _until(client, ConsentRequest)
        t0 = time.perf_counter()
        await client.send(ConsentAnswer(id=question.id, granted=False))
        await asyncio.to_thread(run.wait, 60)
        reader.join(10)
        assert seen, "the technician never saw the answer"
        answer_to_technician.append(seen[0] - t0)
    await client.close()
    return {
        "baseline: ticket.query round trip (window → agent → relay → window)": baseline,
        "send → ticket.opened in the window": sent_to_opened,
        "send → ticket visible to a technician (API)": sent_to_visible,
        "consent answer → technician's line": answer_to_technician,
        "merchant's reply → ticket back in work for a technician (API)": reply_to_visible,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    from tests.e2e.test_helpwindow import Store

    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder))
        try:
            results = asyncio.run(measure(store, args.rounds))
        finally:
            store.close()
    print(f"## Help window latencies ({args.rounds} rounds; target ≤ 100 ms each)\n")
    print("| path | median ms | p90 ms | max ms | ÷ baseline |\n|---|---|---|---|---|")
    base = statistics.median(next(iter(results.values())))
    for name, values in results.items():
        print(f"| {name} | {_ms(values)} | {statistics.median(values) / base:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
