"""Find the till's receipt printers and its POS, and propose ``settings.json`` from what answered.

Python 3.8; what ``posassist-agent configure`` runs (docs/agent.md#configure). It looks and asks,
never changes anything on the till:

- serial ports (the listed ones and those the operator names) that answer DLE EOT, at the one
  baud rate given (never scanned, reference §2.1); a port another process holds (the POS) is
  named with its holder and not opened (§0.1); a USB-serial printer is proposed by its USB
  identity too, so a renumbered port is still found (§0.9);
- raw TCP (port 9100) printers on the addresses the operator allows: hosts, ``host:port`` or an
  IPv4 network of at most 256 addresses; nothing else on the network is touched;
- USB printer-class devices (Linux ``/dev/usb/lp*``) and the print queues (CUPS, Windows): named
  for the technician, they are reached through the queue;
- POS profiles: the one whose processes run, or the one named.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .collectors.escpos import ProbeOutcome, ProbeResult
from .collectors.serialports import DeviceKind, SerialPort
from .errors import ConfigError

__all__ = [
    "MAX_TCP_ADDRESSES",
    "Candidate",
    "propose",
    "queue_candidates",
    "running_profiles",
    "serial_candidates",
    "tcp_candidates",
    "tcp_targets",
    "usb_printer_devices",
]

#: The most addresses one ``--tcp`` network may name (a /24): discovery is not a network scan.
MAX_TCP_ADDRESSES = 256
#: Probe outcomes that mean an ESC/POS printer answered (paper out and the like included).
ANSWERED = (ProbeOutcome.OK, ProbeOutcome.PARTIAL)

SerialProbe = Callable[[str, int], ProbeResult]
TcpProbe = Callable[[str, int], ProbeResult]


@dataclass(frozen=True)
class Candidate:
    """One place a printer may be, what it said, and the ``printers`` entry it would be."""

    kind: str  # "serial", "tcp", "usb-printer" or "queue"
    target: str
    outcome: str  # a ProbeOutcome value, or "listed" (not probed)
    detail: str
    entry: Optional[Dict[str, Any]] = None  # the settings.json printers[] entry, if a printer

    def line(self) -> str:
        if self.entry is not None:
            return f"找到打印机 / printer found: {self.target} ({self.detail})"
        if self.outcome == ProbeOutcome.HELD.value:
            return f"未探测, 端口被占用 / not probed, in use: {self.target} ({self.detail})"
        if self.outcome == "listed":
            return f"已列出 / listed: {self.kind} {self.target} ({self.detail})"
        return f"无打印机应答 / no printer answered: {self.target} ({self.detail})"


def tcp_targets(specs: Sequence[str]) -> List[Tuple[str, int]]:
    """The (host, port) pairs the operator allows: ``host``, ``host:port`` or ``a.b.c.d/nn``.

    Raises:
        ConfigError: a spec that is none of these, a port out of range, or a network of more
            than :data:`MAX_TCP_ADDRESSES` addresses.
    """
    out: List[Tuple[str, int]] = []
    for spec in specs:
        text, port = spec.strip(), 9100
        if text.startswith("["):  # an IPv6 literal: [::1] or [::1]:9100
            host, bracket, rest = text[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ConfigError(f"--tcp {spec!r}: give [ipv6] or [ipv6]:port")
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ConfigError(f"--tcp {spec!r}: not an IPv6 address") from None
            if rest:
                port_text = rest[1:]
                if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                    raise ConfigError(f"--tcp {spec}: the port must be 1-65535")
                port = int(port_text)
            out.append((host, port))
            continue
        if text.count(":") == 1:
            text, _, port_text = text.partition(":")
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ConfigError(f"--tcp {spec}: the port must be 1-65535")
            port = int(port_text)
        if not text or any(c.isspace() for c in text):
            raise ConfigError(f"--tcp {spec!r}: give a host, host:port or a.b.c.d/nn")
        if "/" in text:
            try:
                network = ipaddress.IPv4Network(text, strict=False)
            except ValueError:
                raise ConfigError(f"--tcp {spec}: not an IPv4 network") from None
            if network.num_addresses > MAX_TCP_ADDRESSES:
                raise ConfigError(
                    f"--tcp {spec}: {network.num_addresses} addresses; at most "
                    f"{MAX_TCP_ADDRESSES} (a /24): name the printers' network, not a whole site"
                )
            hosts = list(network.hosts()) or [network.network_address]
            out.extend((str(host), port) for host in hosts)
        else:
            out.append((text, port))
    return list(dict.fromkeys(out))


def serial_candidates(
    ports: Sequence[SerialPort],
    extra: Sequence[str],
    baudrate: int,
    probe: SerialProbe,
) -> List[Candidate]:
    """Ask each port (listed, then named) for DLE EOT status; a held port is not opened."""
    by_device = {p.device: p for p in ports}
    found: List[Candidate] = []
    for device in list(dict.fromkeys([*by_device, *extra])):
        port = by_device.get(device)
        known = port.known if port is not None else None
        if (
            known is not None
            and known.kind is not DeviceKind.RECEIPT_PRINTER
            and (known.kind is not DeviceKind.USB_SERIAL_BRIDGE)
        ):
            found.append(
                Candidate(
                    "serial", device, "listed", f"{known.vendor} {known.product}: not a printer"
                )
            )
            continue  # a scanner or a scale: never written to
        result = probe(device, baudrate)
        entry: Optional[Dict[str, Any]] = None
        if result.outcome in ANSWERED:
            entry = {"serial": device, "baudrate": baudrate}
            if port is not None and port.usb_id is not None:
                usb = port.usb_id + (f":{port.serial_number}" if port.serial_number else "")
                entry["usb"] = usb
        what = f"{known.vendor} {known.product}, " if known is not None else ""
        found.append(Candidate("serial", device, result.outcome.value, what + result.detail, entry))
    return found


def tcp_candidates(targets: Sequence[Tuple[str, int]], probe: TcpProbe) -> List[Candidate]:
    """Ask each allowed address for DLE EOT status on its raw printing port."""
    found = []
    for host, port in targets:
        result = probe(host, port)
        entry = {"tcp": f"{host}:{port}"} if result.outcome in ANSWERED else None
        found.append(
            Candidate("tcp", f"tcp://{host}:{port}", result.outcome.value, result.detail, entry)
        )
    return found


def usb_printer_devices(dev: str = "/dev/usb") -> List[Candidate]:
    """Linux USB printer-class devices (``usblp``): named; printed to through their queue."""
    try:
        names = sorted(n for n in os.listdir(dev) if n.startswith("lp"))
    except OSError:
        return []
    return [
        Candidate(
            "usb-printer",
            os.path.join(dev, name),
            "listed",
            "USB printer class: reached through its print queue",
        )
        for name in names
    ]


def queue_candidates(queue: Mapping[str, Any]) -> List[Candidate]:
    """The print queues the print-queue collector saw (CUPS or Windows): named, not asked."""
    system = str(queue.get("system") or "print")
    out = []
    for row in queue.get("printers") or []:
        if isinstance(row, dict) and row.get("name"):
            out.append(Candidate("queue", str(row["name"]), "listed", f"{system} print queue"))
    return out


def running_profiles(
    profiles: Mapping[str, Iterable[str]], process_names: Iterable[str]
) -> List[str]:
    """The profiles (name → their POS process names) with a process running now."""
    running = {name.lower() for name in process_names}
    return sorted(
        name for name, names in profiles.items() if any(n.lower() in running for n in names)
    )


def _targets(entry: Any) -> List[str]:
    if not isinstance(entry, dict):
        return []
    return [f"{key}={entry[key]}" for key in ("serial", "tcp", "usb") if entry.get(key)]


def propose(
    current: Dict[str, Any],
    candidates: Sequence[Candidate],
    profile: Optional[str],
) -> Dict[str, Any]:
    """``current`` settings plus the printers that answered and are not configured yet (a
    configured printer that did not answer now, e.g. the POS holds its port, is kept), and the
    POS profile if one was chosen; every other key is kept as it was."""
    doc = dict(current)
    printers = (
        list(current.get("printers") or []) if isinstance(current.get("printers"), list) else []
    )
    known = {t for entry in printers for t in _targets(entry)}
    names = {entry.get("name") for entry in printers if isinstance(entry, dict)}
    number = 1
    for candidate in candidates:
        entry = candidate.entry
        if entry is None or set(_targets(entry)) & known:
            continue
        while f"printer{number}" in names:
            number += 1
        names.add(f"printer{number}")
        printers.append({"name": f"printer{number}", **entry})
        known.update(_targets(entry))
    if printers:
        doc["printers"] = printers
    if profile:
        doc["pos_profile"] = profile
    return doc
