"""The simulated printer itself: print data is accepted and discarded, drawer kicks are recorded."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import serial

from tests.fakes.simprinter import PrinterModel, PrinterState


def test_model_answers_status_split_across_reads():
    model = PrinterModel()
    assert model.feed(b"\x10") == []
    assert model.feed(b"\x04") == []
    (reply,) = model.feed(b"\x01")
    assert reply.data == b"\x12"


def test_model_discards_print_data_and_records_init_cut_and_kicks():
    model = PrinterModel()
    job = b"\x1b@" + "小票 receipt\n".encode("gb18030") + b"\x1dVA\x10" + b"\x1bp\x00\x19\xfa"
    assert model.feed(job) == []
    assert model.inits == 1
    assert model.cuts == 1
    (kick,) = model.drawer_kicks
    assert (kick.pin, kick.on_ms, kick.off_ms, kick.realtime, kick.fired) == (
        2,
        50,
        500,
        False,
        True,
    )
    assert b"receipt" in bytes(model.print_data)


def test_queued_drawer_kick_does_not_fire_while_offline_but_dle_dc4_does():
    model = PrinterModel(PrinterState.PAPER_OUT)
    model.feed(b"\x1bp\x01\x32\x10")  # t2 < t1: OFF = ON
    model.feed(b"\x10\x14\x01\x00\x05")
    queued, realtime = model.drawer_kicks
    assert (queued.pin, queued.off_ms, queued.fired) == (5, 100, False)
    assert (realtime.realtime, realtime.on_ms, realtime.fired) == (True, 500, True)


def test_drawer_pin3_high_shows_in_printer_status():
    model = PrinterModel(drawer_pin3_high=True)
    (reply,) = model.feed(b"\x10\x04\x01")
    assert reply.data == b"\x16"


def test_pty_printer_speaks_to_pyserial_and_keeps_no_slave_open(printer):
    path = printer.start_pty()
    own = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
    assert path not in own
    with serial.Serial(path, 9600, timeout=1) as port:
        port.write(b"\x1b@hello\n\x10\x04\x04")
        assert port.read(1) == b"\x12"
    assert printer.model.inits == 1


def test_tcp_printer_reports_its_real_port_and_answers(printer):
    host, port = printer.start_tcp()
    assert host == "127.0.0.1"
    assert port != 0
    with socket.create_connection((host, port), timeout=2) as conn:
        conn.sendall(b"\x10\x04\x02")
        assert conn.recv(1) == b"\x12"


def test_cli_prints_where_it_listens_and_switches_state_from_stdin():
    with subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.simprinter", "--tcp", "--state", "paper_near_end"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdin is not None
            kind, address = proc.stdout.readline().split()
            assert kind == "tcp"
            host, port = address.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=2) as conn:
                conn.sendall(b"\x10\x04\x04")
                assert conn.recv(1) == b"\x1e"
            proc.stdin.write("paper_out\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "state paper_out"
            with socket.create_connection((host, int(port)), timeout=2) as conn:
                conn.sendall(b"\x10\x04\x04")
                assert conn.recv(1) == b"\x7e"
        finally:
            proc.terminate()
            proc.wait(timeout=5)
