"""Fixtures for agent tests: the simulated ESC/POS printer on a pty and on loopback TCP."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.fakes.simprinter import SimPrinter

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def printer() -> Iterator[SimPrinter]:
    """A simulated Epson printer, stopped after the test; start the transport you need."""
    sim = SimPrinter(reply_delay=0.05)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def unused_port() -> int:
    """A loopback port nobody listens on (connects are refused at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
