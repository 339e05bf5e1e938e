"""The health checks' samplers: thin, blocking reads through the existing collectors.

Each ``sample_<check>(ctx, link)`` returns the plain data its rule (agent/checks/rules.py) reads.
They keep the collectors' till-safety rules: the printer is never probed while a sale is open
nor on a port another process holds (agent/collectors/printers.py), and nothing here writes to a
device. Run in a worker thread under a timeout (agent/checks/monitor.py); imports stay lazy, so
an agent with checks off pays nothing for them.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional

if TYPE_CHECKING:
    from posassist.agent.diagnostics import DiagContext

__all__ = ["SAMPLERS", "Link"]


class Link:
    """Whether the agent is connected to its relay, and since when (the ``relay`` check)."""

    def __init__(self, relay_url: str, now: float) -> None:
        self.relay_url = relay_url
        self.connected = False
        self.since = now
        self.error = "not connected yet"

    def up(self, now: float) -> None:
        self.connected, self.since, self.error = True, now, ""

    def down(self, now: float, error: str) -> None:
        if self.connected:
            self.since = now
        self.connected, self.error = False, error[:200]


def sample_printer(ctx: DiagContext, link: Link) -> Dict[str, Any]:
    from posassist.agent.collectors import printers
    from posassist.agent.diagnostics import to_tree

    data: Dict[str, Any] = to_tree(printers.collect(ctx))
    return data


def _pos_processes(ctx: DiagContext) -> Optional[List[Dict[str, Any]]]:
    from posassist.agent.collectors.pos import _process_table, find_processes

    if ctx.profile is None:
        return None
    return find_processes(_process_table(), ctx.profile.process_names)


def sample_pos_process(ctx: DiagContext, link: Link) -> Dict[str, Any]:
    from posassist.agent.collectors.pos import service_states

    profile = ctx.profile
    running = _pos_processes(ctx)
    if profile is None or running is None:
        return {"configured": False}
    return {
        "configured": True,
        "names": list(profile.process_names),
        "running": bool(running),
        "processes": [{"pid": p["pid"], "started": p.get("started")} for p in running],
        "services": service_states(list(profile.service_names)),
    }


def sample_disk(ctx: DiagContext, link: Link) -> Dict[str, Any]:
    """The POS data volume(s) from the profile; without one, the agent's own data volume."""
    paths = [(p, True) for p in (ctx.profile.data_paths if ctx.profile else ())]
    if not paths and ctx.data_dir is not None:
        paths = [(str(ctx.data_dir), False)]
    volumes = []
    for path, pos in paths:
        try:
            usage = shutil.disk_usage(path)
        except OSError as exc:
            volumes.append({"path": path, "pos": pos, "error": exc.strerror or str(exc)})
            continue
        volumes.append({"path": path, "pos": pos, "total": usage.total, "free": usage.free})
    return {"volumes": volumes}


def sample_memory(ctx: DiagContext, link: Link) -> Dict[str, Any]:
    import psutil  # type: ignore[import-untyped]

    memory = psutil.virtual_memory()
    pos = []
    for proc in _pos_processes(ctx) or []:
        try:
            rss = int(psutil.Process(proc["pid"]).memory_info().rss)
        except psutil.Error:  # gone, or refused (§6.3)
            continue
        pos.append(
            {
                "pid": proc["pid"],
                "started": proc.get("started"),
                "name": proc.get("name"),
                "rss": rss,
            }
        )
    return {"available": memory.available, "total": memory.total, "pos": pos}


def sample_cpu(ctx: DiagContext, link: Link) -> Dict[str, Any]:
    import psutil

    # non-blocking: the share of all CPUs since the previous call (the previous sample)
    return {"percent": psutil.cpu_percent(interval=None)}


def sample_clock(ctx: DiagContext, link: Link) -> Dict[str, Any]:
    from posassist.agent.collectors.network import clock_offset

    return clock_offset(ctx.clock.snapshot()) or {}


def sample_relay(ctx: DiagContext, link: Link) -> Dict[str, Any]:
    from posassist.agent.collectors.network import parse_relay_url

    try:
        _, host, port = parse_relay_url(link.relay_url)
    except ValueError:
        host, port = link.relay_url, 0
    return {
        "connected": link.connected,
        "since": link.since,
        "error": link.error,
        "host": host,
        "port": port,
    }


def sample_tls_cert(ctx: DiagContext, link: Link) -> Dict[str, Any]:
    """The relay's certificate (wss:// only) and the profile's payment gateways', unverified."""
    from posassist.agent.collectors.network import probe_host, probe_relay

    certs = []
    if link.relay_url.startswith("wss://"):
        tls = probe_relay(link.relay_url).get("tls") or {}
        certs.append({"host": probe_relay_host(link.relay_url), "kind": "relay", **tls})
    for hostport in ctx.profile.payment_hosts if ctx.profile else ():
        host, _, port = hostport.rpartition(":")
        tls = probe_host(host, int(port)).get("tls") or {}
        certs.append({"host": hostport, "kind": "gateway", **tls})
    return {"certificates": certs}


def probe_relay_host(url: str) -> str:
    from posassist.agent.collectors.network import parse_relay_url

    _, host, port = parse_relay_url(url)
    return f"{host}:{port}"


def sample_pos_log(ctx: DiagContext, link: Link) -> Dict[str, Any]:
    from posassist.agent.collectors.pos import _logs

    if ctx.profile is None:
        return {"configured": False}
    return {"configured": True, "logs": _logs(ctx.profile)}


def sample_database(ctx: DiagContext, link: Link) -> Dict[str, Any]:
    """Service, processes and file of the POS database (its 16-byte header only, never opened
    as a database), and the log lines that say it is locked."""
    from posassist.agent.collectors.pos import (
        _logs,
        _process_table,
        database_file,
        find_processes,
        service_states,
    )

    profile = ctx.profile
    if profile is None:
        return {"configured": False}
    if not (profile.database_service or profile.database_processes or profile.database_path):
        return {"configured": True, "database": None, "logs": _logs(profile)}
    service = service_states([profile.database_service]) if profile.database_service else {}
    processes = (
        find_processes(_process_table(), profile.database_processes)
        if profile.database_processes
        else []
    )
    database = {
        "service": service,
        "processes": processes,
        "up": (not service or all(s in ("running", "active") for s in service.values()))
        and (not profile.database_processes or bool(processes)),
        "file": database_file(profile.database_path) if profile.database_path else None,
    }
    return {"configured": True, "database": database, "logs": _logs(profile)}


def sample_print_queue(ctx: DiagContext, link: Link) -> Dict[str, Any]:
    from posassist.agent.collectors import printqueue
    from posassist.agent.diagnostics import to_tree

    data: Dict[str, Any] = to_tree(printqueue.collect(ctx))
    return data


Sampler = Callable[["DiagContext", Link], Dict[str, Any]]
#: The sampler of every check in protocol/health_policy.py CHECKS.
SAMPLERS: Mapping[str, Sampler] = {
    "printer": sample_printer,
    "pos_process": sample_pos_process,
    "disk": sample_disk,
    "memory": sample_memory,
    "cpu": sample_cpu,
    "clock": sample_clock,
    "relay": sample_relay,
    "tls_cert": sample_tls_cert,
    "pos_log": sample_pos_log,
    "database": sample_database,
    "print_queue": sample_print_queue,
}
