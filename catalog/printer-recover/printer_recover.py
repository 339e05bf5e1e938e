"""posassist catalog: recover a receipt printer from a recoverable error with DLE ENQ (Epson §1.3).

Run it only after a person has cleared the cause (a paper jam at the cutter): it reads DLE EOT 1-4
first and sends nothing unless the printer reports a recoverable error, an autocutter error or
"waiting for online recovery". It refuses while the cover is open or the paper is out (a person
must fix that) and on an unrecoverable error (power-cycle, service ticket). Then it sends
``DLE ENQ n`` once (``10 05 n``; n = 2 clears the receive and print buffers, so the POS must
reprint the receipt that was interrupted; n = 1 restarts from the line where the error occurred;
"waiting for online recovery" always gets n = 0, the same as pressing FEED) and reads the status
again. Raw TCP (port 9100) or a serial port; Python 3.8+, standard library (pyserial for serial).
Exit codes: 0 recovered, or nothing to recover; 1 still in error after DLE ENQ; 2 refused (a
person must act first); 3 no valid status reply; 4 cannot reach the printer; 5 bad arguments.
The last line of output is ``RESULT {json}``.
"""

import argparse
import json
import os
import socket
import sys

# Test-only re-rooting of absolute device paths; unreachable from a manifest (docs/scripts.md).
ROOT = os.environ.get("POSASSIST_TEST_ROOT", "")
READ_TIMEOUT = 2.0
CONNECT_TIMEOUT = 3.0


class TcpLink:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, data):
        self.sock.settimeout(READ_TIMEOUT)
        self.sock.sendall(data)

    def read1(self):
        self.sock.settimeout(READ_TIMEOUT)
        try:
            return self.sock.recv(1)
        except socket.timeout:
            return b""

    def close(self):
        self.sock.close()


class SerialLink:
    def __init__(self, device, baud):
        import serial  # pyserial: only needed for serial printers

        path = ROOT + device if ROOT and device.startswith("/") else device
        kwargs = {"exclusive": True} if os.name == "posix" else {}
        self.port = serial.Serial(
            path, baudrate=baud, timeout=READ_TIMEOUT, write_timeout=READ_TIMEOUT, **kwargs
        )
        self.port.reset_input_buffer()

    def write(self, data):
        self.port.write(data)
        self.port.flush()

    def read1(self):
        return self.port.read(1)

    def close(self):
        self.port.close()


def status(link):
    """DLE EOT 1-4 as ``{n: byte}``, or None when a reply is missing or not 0xx1xx10."""
    out = {}
    for n in (1, 2, 3, 4):
        link.write(b"\x10\x04" + bytes((n,)))
        reply = link.read1()
        if len(reply) != 1 or (reply[0] & 0x93) != 0x12:
            return None
        out[n] = reply[0]
    return out


def describe(s):
    return {
        "offline": bool(s[1] & 0x08),
        "waiting_recovery": bool(s[1] & 0x20),
        "cover_open": bool(s[2] & 0x04),
        "paper_out": (s[4] & 0x60) == 0x60 or bool(s[2] & 0x20),
        "recoverable": bool(s[3] & 0x04),
        "autocutter": bool(s[3] & 0x08),
        "unrecoverable": bool(s[3] & 0x20),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host")
    p.add_argument("--tcp-port", type=int, default=9100)
    p.add_argument("--serial")
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("--mode", choices=("clear-buffers", "restart-line"), default="clear-buffers")
    args = p.parse_args(argv)
    result = {"recovered": False}

    def finish(code, **extra):
        result.update(extra)
        print("RESULT " + json.dumps(result, sort_keys=True))
        return code

    if bool(args.host) == bool(args.serial):
        print("give exactly one of --host or --serial", file=sys.stderr)
        return finish(5, error="bad_arguments")
    where = args.host + ":%d" % args.tcp_port if args.host else args.serial
    result["printer"] = where
    try:
        link = (
            TcpLink(args.host, args.tcp_port) if args.host else SerialLink(args.serial, args.baud)
        )
    except Exception as exc:  # OSError, serial.SerialException, ImportError
        print("cannot open printer %s: %s" % (where, exc), file=sys.stderr)
        return finish(4, error="unreachable")
    try:
        before = status(link)
        if before is None:
            print(
                "no valid DLE EOT reply: printer off, wrong port, or not ESC/POS", file=sys.stderr
            )
            return finish(3, error="no_status")
        state = describe(before)
        result["before"] = {"raw": {str(n): "0x%02x" % b for n, b in before.items()}, **state}
        print("before: " + json.dumps(state, sort_keys=True))
        if state["unrecoverable"]:
            print("unrecoverable error: power the printer off; service ticket", file=sys.stderr)
            return finish(2, refused="unrecoverable")
        if state["cover_open"] or state["paper_out"]:
            print("cover open or paper out: a person must fix that first", file=sys.stderr)
            return finish(2, refused="needs_person")
        if not (state["recoverable"] or state["autocutter"] or state["waiting_recovery"]):
            print("no recoverable error: nothing sent")
            return finish(0, sent=None)
        if state["recoverable"] or state["autocutter"]:
            n = 2 if args.mode == "clear-buffers" else 1
        else:
            n = 0
        link.write(b"\x10\x05" + bytes((n,)))  # DLE ENQ n: no reply (§1.3)
        result["sent"] = "DLE ENQ %d" % n
        print(
            "sent DLE ENQ %d%s" % (n, " (buffers cleared: reprint the receipt)" if n == 2 else "")
        )
        after = status(link)
        if after is None:
            print("no valid status after DLE ENQ", file=sys.stderr)
            return finish(1, error="no_status_after")
        state = describe(after)
        result["after"] = {"raw": {str(n): "0x%02x" % b for n, b in after.items()}, **state}
        print("after: " + json.dumps(state, sort_keys=True))
        still = [
            k for k in ("offline", "recoverable", "autocutter", "waiting_recovery") if state[k]
        ]
        if still:
            print("still in error: %s" % ", ".join(still), file=sys.stderr)
            return finish(1, still=still)
        return finish(0, recovered=True)
    except OSError as exc:
        print("link error: %s" % exc, file=sys.stderr)
        return finish(4, error="link_error")
    finally:
        link.close()


if __name__ == "__main__":
    sys.exit(main())
