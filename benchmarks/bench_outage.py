"""Relay down for ten minutes while checks fire and resolve: afterwards every event the agent
produced is in the relay's alert data exactly once, and the agent's outbox is empty.

Run from the repository root: ``python -m benchmarks.bench_outage [--outage S] [--every S]``.
Real processes, as tests/e2e/test_alerts_agent.py (its short version): ``posassist-relay serve``
on SQLite and an enrolled ``posassist-agent run`` with the demo POS profile. A device policy makes
the ``pos_log`` check run every 5 s and resolve on the first clean sample (``clear_after`` 1,
``clear_hold`` 0), so each ERROR line appended to the demo POS log is one firing and one resolved
event; it also makes the ``relay`` check fire after 30 s unreachable (not the default 600 s, which
would race the end of a 600 s outage), so that alert is produced offline and resolved once back.

Flow: relay up, agent connected, policy applied, a few events delivered; the relay is SIGKILLed;
for ``--outage`` seconds a line goes into the POS log every ``--every`` seconds (the check goes
firing → resolved each time) while the outbox depth and the agent's RSS are sampled each second;
the relay restarts on the same port and data; the agent reconnects by itself (its own backoff,
capped at 60 s) and drains its outbox. Then the agent and relay stop and the keys the agent logged
(``alert <check> firing|resolved <severity>: <key>``) are compared with the relay's
``alert_events`` rows, and each alert's ``events`` count with its rows there. Prints a markdown
table; exits 1 if an event was lost, duplicated or left queued. Never a test; bounded in time
(the outage, plus at most ``DRAIN_LIMIT`` s to drain and settle).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil  # type: ignore[import-untyped]

from tests.e2e.cli import ROOT, admin_token, api, invite, ok, provision, py, start_relay, stop
from tests.e2e.test_alerts_agent import _queued, _wait

if TYPE_CHECKING:
    from collections.abc import Sequence

#: pos_log every 5 s (the minimum) clearing at the first clean sample; the relay check fires
#: after 30 s offline (the minimum) and clears at its first connected sample
POLICY = {
    "version": 1,
    "checks": {
        "pos_log": {"interval": 5, "clear_after": 1, "clear_hold": 0},
        "pos_process": {"enabled": False},
        "relay": {
            "interval": 10,
            "clear_after": 1,
            "clear_hold": 0,
            "thresholds": {"unreachable_s": 30},
        },
    },
}
#: after the relay is back: seconds to drain the outbox and settle, at most
DRAIN_LIMIT = 120.0
#: settled: the outbox empty and no new alert event for this long (> the longest interval above)
QUIET = 15.0
MB = 1024 * 1024
ALERT_LINE = re.compile(r" alert (\S+) (firing|resolved) (\S+): (\S+)$")


class Till:
    """The enrolled agent's process, its files, and what we measure of it."""

    def __init__(self, till: Path, out: Path, err: Path) -> None:
        self.dir, self.out, self.err = till, out, err
        self.pos_log = till / "pos" / "logs" / "pos.log"
        self.lines = 0
        self.max_depth = 0
        self.max_rss = 0
        self.proc: psutil.Process | None = None

    def connections(self) -> int:
        return self.out.read_text(encoding="utf-8").count("connected to relay")

    def events(self) -> list[tuple[str, str, str]]:
        """(check, state, key) of each event the agent logged as queued, in order."""
        out = []
        for line in self.err.read_text(encoding="utf-8", errors="replace").splitlines():
            found = ALERT_LINE.search(line)
            if found:
                out.append((found[1], found[2], found[4]))
        return out

    def depth(self) -> int:
        return len(_queued(self.dir))

    def rss(self) -> int:
        assert self.proc is not None
        return int(self.proc.memory_info().rss)

    def error_line(self) -> None:
        """One new POS log line the demo profile's ``ERROR`` pattern matches (each unique: the
        rule counts lines it did not see in the previous sample)."""
        self.lines += 1
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with self.pos_log.open("a", encoding="utf-8") as f:
            f.write(f"{stamp} ERROR bench line {self.lines}: 打印机 timeout\n")

    def drive(self, seconds: float, every: float) -> None:
        """For ``seconds``: an error line every ``every`` s, the outbox and RSS sampled each s."""
        end = time.monotonic() + seconds
        next_line = time.monotonic()
        while time.monotonic() < end:
            if time.monotonic() >= next_line:
                self.error_line()
                next_line += every
            self.max_depth = max(self.max_depth, self.depth())
            self.max_rss = max(self.max_rss, self.rss())
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))


def _settled(till: Till, deadline: float) -> bool:
    """Wait until the outbox is empty and no event came for QUIET s; False at ``deadline``."""
    seen, quiet_since = len(till.events()), time.monotonic()
    while time.monotonic() < deadline:
        now_seen = len(till.events())
        if now_seen != seen:
            seen, quiet_since = now_seen, time.monotonic()
        if till.depth() == 0 and time.monotonic() - quiet_since >= QUIET:
            return True
        time.sleep(0.5)
    return False


def _relay_counts(data: Path) -> dict[str, float]:
    """The relay's ``alert_events_total`` by result, since it (re)started (its /metrics, on the
    listener named in DATA/metrics.url)."""
    from urllib.request import urlopen

    with urlopen((data / "metrics.url").read_text(), timeout=10) as answer:
        text = answer.read().decode()
    found = re.findall(r'alert_events_total\{result="(\w+)"\} (\S+)', text)
    return {result: float(n) for result, n in found}


def _relay_data(db_path: Path, device: str) -> dict[str, Any]:
    """What the relay's database holds for ``device``: its event rows and its alerts."""
    db = sqlite3.connect(str(db_path))
    try:
        rows = db.execute(
            "SELECT alert_key, alert_id, handling FROM alert_events WHERE device_id = ?", (device,)
        ).fetchall()
        alerts = db.execute(
            "SELECT id, check_name, status, events, reopened FROM alerts WHERE device_id = ?",
            (device,),
        ).fetchall()
    finally:
        db.close()
    return {"rows": rows, "alerts": alerts}


def run(outage: float, every: float) -> dict[str, Any]:
    r: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-outage-") as tmp:
        data, till_dir = Path(tmp) / "relay", Path(tmp) / "till"
        store = provision(data)
        relay_log = (Path(tmp) / "relay.log").open("a", encoding="utf-8")
        relay, url = start_relay(data, log=relay_log)
        agent = None
        till = Till(till_dir, Path(tmp) / "agent.out", Path(tmp) / "agent.err")
        try:
            ok(py("agent", "enroll", invite(data, store, url), "--data", str(till_dir)))
            (till_dir / "settings.json").write_text('{"pos_profile": "demo"}')
            till.pos_log.parent.mkdir(parents=True)
            till.pos_log.write_text("2026-12-05 11:00:00 INFO open\n", encoding="utf-8")
            device = json.loads((till_dir / "agent.json").read_text())["device_id"]
            token = asyncio.run(admin_token(url))
            asyncio.run(
                api(url, token, "POST", "/v1/policies",
                     {"scope_kind": "device", "scope_id": device, "policy": POLICY})
            )  # fmt: skip

            with till.out.open("w") as out, till.err.open("w") as err:
                agent = subprocess.Popen(
                    [sys.executable, "-m", "posassist.agent", "run", "--data", str(till_dir)],
                    cwd=ROOT,
                    stdout=out,
                    stderr=err,
                    text=True,
                )
            till.proc = psutil.Process(agent.pid)
            _wait(lambda: till.connections() >= 1, 30, "the agent did not connect")
            _wait(lambda: "health policy v" in till.err.read_text(), 30, "no policy applied")

            # relay up: two rounds of firing → resolved, delivered
            till.drive(2 * every, every)
            _settled(till, time.monotonic() + DRAIN_LIMIT)
            r["before"] = len(till.events())
            r["rss_before"] = till.rss()

            stop(relay)  # SIGKILL: the relay is gone, the agent finds out from its socket
            till.max_depth = till.max_rss = 0
            till.drive(outage, every)
            r["lines_offline"] = till.lines - 2
            r["during"] = len(till.events()) - r["before"]
            r["rss_end_outage"], r["rss_max"] = till.rss(), till.max_rss
            r["max_depth"], r["depth_end_outage"] = till.max_depth, till.depth()

            port = url.rsplit(":", 1)[1]
            relay, url = start_relay(data, "--port", port, log=relay_log)
            restarted = time.monotonic()
            deadline = restarted + DRAIN_LIMIT
            r["reconnect_s"] = r["drain_s"] = None
            while time.monotonic() < deadline and r["drain_s"] is None:
                if r["reconnect_s"] is None and till.connections() >= 2:
                    r["reconnect_s"] = time.monotonic() - restarted
                if r["reconnect_s"] is not None and till.depth() == 0:
                    r["drain_s"] = time.monotonic() - restarted
                time.sleep(0.1)
            r["settled"] = _settled(till, deadline)
            r["rss_after"] = till.rss()
            r["relay_counts"] = _relay_counts(data)
        finally:
            if agent is not None:
                agent.terminate()  # SIGTERM: it closes its outbox
                agent.wait(timeout=30)
            stop(relay)
            relay_log.close()
        r["events"] = till.events()
        r["final_depth"] = till.depth()
        r["dropped"] = int(_meta(till_dir, "dropped") or 0)
        r["agent_errors"] = [
            line for line in till.err.read_text().splitlines() if " ERROR " in line
        ]
        r.update(_relay_data(data / "relay.db", device))
    return r


def _meta(till: Path, name: str) -> str | None:
    db = sqlite3.connect(str(till / "outbox.sqlite3"))
    try:
        row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    finally:
        db.close()
    return None if row is None else str(row[0])


def judge(r: dict[str, Any]) -> dict[str, Any]:
    """The comparisons: each a count that must be 0 (or a flag that must hold)."""
    logged = [key for _, _, key in r["events"]]
    at_relay = [key for key, _, _ in r["rows"]]
    rows_per_alert = collections.Counter(alert for _, alert, _ in r["rows"] if alert)
    counted = sum(events for _, _, _, events, _ in r["alerts"])
    not_silenced = sum(1 for _, _, handling in r["rows"] if handling != "silenced")
    last_state = {check: state for check, state, _ in r["events"]}
    unresolved = {check for _, check, status, _, _ in r["alerts"] if status != "resolved"}
    return {
        "missing": len(set(logged) - set(at_relay)),
        "extra": len(set(at_relay) - set(logged)),
        "logged_twice": len(logged) - len(set(logged)),
        "alerts_miscounted": sum(
            1 for alert, _, _, events, _ in r["alerts"] if events != rows_per_alert[alert]
        ),
        "sum_events": counted,
        "not_silenced": not_silenced,
        "status_disagrees": sum(
            1 for check, state in last_state.items() if (state == "firing") != (check in unresolved)
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_outage")
    parser.add_argument("--outage", type=float, default=600.0, help="seconds the relay is down")
    parser.add_argument("--every", type=float, default=15.0, help="seconds between error lines")
    args = parser.parse_args(argv)
    if not 30 <= args.outage <= 3600:
        parser.error("--outage must be 30..3600 seconds")
    if not 12 <= args.every <= 300:
        parser.error("--every must be 12..300 seconds (a line fires, the next sample resolves)")
    r = run(args.outage, args.every)
    j = judge(r)
    by_check = collections.Counter(f"{check} {state}" for check, state, _ in r["events"])
    ok_run = (
        j["missing"] == j["extra"] == j["logged_twice"] == 0
        and j["alerts_miscounted"] == j["status_disagrees"] == 0
        and j["sum_events"] == j["not_silenced"] == len(r["events"])
        and r["final_depth"] == 0
        and r["dropped"] == 0
        and r["drain_s"] is not None
        and r["settled"]
    )

    def s(v: float | None) -> str:
        return "never" if v is None else f"{v:.1f} s"

    print(
        f"\n### Relay down {args.outage:g} s, real agent + relay (SQLite), an ERROR line every "
        f"{args.every:g} s, pos_log checked every 5 s\n"
    )
    print("| measure | value |\n|---|---|")
    for name, value in (
        ("error lines written while the relay was down", r["lines_offline"]),
        ("events the agent logged: before / during / after the outage",
         f"{r['before']} / {r['during']} / {len(r['events']) - r['before'] - r['during']}"),
        ("… by check and state", ", ".join(f"{k}: {n}" for k, n in sorted(by_check.items()))),
        ("outbox depth: max during the outage / at its end",
         f"{r['max_depth']} / {r['depth_end_outage']}"),
        ("relay restart → agent reconnected (agent backoff ≤ 60 s)", s(r["reconnect_s"])),
        ("relay restart → outbox empty", s(r["drain_s"])),
        ("settled (outbox empty, no new event for 15 s) within 120 s", r["settled"]),
        ("agent RSS: before / end of outage / max during / after drain",
         " / ".join(f"{r[k] / MB:.1f} MB"
                    for k in ("rss_before", "rss_end_outage", "rss_max", "rss_after"))),
        ("events in the relay's alert_events (this device)", len(r["rows"])),
        ("missing: logged by the agent, not at the relay", j["missing"]),
        ("extra: at the relay, never logged by the agent", j["extra"]),
        ("keys logged twice by the agent", j["logged_twice"]),
        ("relay after restart: stored / duplicate (redelivered) / unavailable",
         " / ".join(f"{r['relay_counts'].get(k, 0):g}"
                    for k in ("stored", "duplicate", "unavailable"))),
        ("sum of alerts.events / events not silenced",
         f"{j['sum_events']} / {j['not_silenced']}"),
        ("alerts (check status events reopened)",
         "; ".join(f"{c} {st} {e} {ro}" for _, c, st, e, ro in sorted(r["alerts"], key=str))),
        ("alerts whose events ≠ their alert_events rows", j["alerts_miscounted"]),
        ("checks whose relay status ≠ the agent's last event", j["status_disagrees"]),
        ("outbox rows after the agent stopped", r["final_depth"]),
        ("events the outbox dropped (size limit, unsendable)", r["dropped"]),
        ("ERROR lines in the agent's log", len(r["agent_errors"])),
    ):  # fmt: skip
        print(f"| {name} | {value} |")
    for line in r["agent_errors"][:5]:
        print(f"\nagent: {line}")
    print(f"\n{'OK: every event exactly once, outbox empty' if ok_run else 'FAILED'}")
    return 0 if ok_run else 1


if __name__ == "__main__":
    sys.exit(main())
