"""A raw-TCP receipt printer that answers exactly as reference/pos-devices.md §1.2-1.3 says, from a
table of DLE EOT reply bytes, independent of simprinter.py's state names. ``DLE ENQ n`` may move
it to another table (an error recovered once a person cleared the jam)."""

from __future__ import annotations

import socket
import threading
from typing import Dict, List, Optional

#: DLE EOT 1..4 of a healthy printer
OK = {1: 0x12, 2: 0x12, 3: 0x12, 4: 0x12}


class RefPrinter:
    """Answers ``10 04 n`` with ``replies[n]`` (nothing when n has none); one client at a time.

    Args:
        replies: DLE EOT n → reply byte.
        on_enq: DLE ENQ n → the table it answers from afterwards (others: no change, §1.3).
    """

    def __init__(
        self, replies: Dict[int, int], on_enq: Optional[Dict[int, Dict[int, int]]] = None
    ) -> None:
        self.replies = dict(replies)
        self.on_enq = dict(on_enq or {})
        self.asked: List[int] = []
        self.enq: List[int] = []
        self.other: bytearray = bytearray()  # every byte that was not DLE EOT / DLE ENQ
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5.0)
                self._converse(conn)

    def _converse(self, conn: socket.socket) -> None:
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(64)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while len(buffer) >= 3:
                if buffer[:2] == b"\x10\x04":
                    n = buffer[2]
                    self.asked.append(n)
                    if n in self.replies:
                        conn.sendall(bytes([self.replies[n]]))
                    buffer = buffer[3:]
                elif buffer[:2] == b"\x10\x05":  # DLE ENQ n: recover, never a reply
                    n = buffer[2]
                    self.enq.append(n)
                    if n in self.on_enq:
                        self.replies = dict(self.on_enq[n])
                    buffer = buffer[3:]
                else:
                    self.other.append(buffer[0])
                    buffer = buffer[1:]

    def close(self) -> None:
        self._stop.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass
        self._listener.close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> RefPrinter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
