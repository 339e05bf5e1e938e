"""posassist catalog: ESC/POS printer status, test receipt and drawer test (docs/scripts.md).

Runs on the till under the agent's runner: Python 3.8+, standard library (pyserial only for a
serial port). Talks to the printer over raw TCP (port 9100 style) or a serial port:

* ``status``  - DLE EOT 1-4, decoded (reference/pos-devices.md section 1.2); nothing is printed.
* ``receipt`` - status first; only if the printer is ready: a short ASCII test receipt and a cut.
* ``drawer``  - status first; only if the printer is online (ESC p is queued, an offline printer
  would open the drawer later, unattended): one ESC p pulse, then the drawer sensor again.

Exit codes: 0 done; 2 printer not ready (nothing sent but status requests); 3 no valid status
reply; 4 cannot reach the printer; 5 bad arguments.
The last line of output is ``RESULT {json}`` for the console and the tests.
"""

import argparse
import json
import os
import socket
import sys
import time

# Test-only re-rooting of absolute device paths. The agent's runner builds the script
# environment from scratch (agent/scripts/process.py minimal_env) and parameters only ever reach
# it as POSASSIST_PARAM_*, so no manifest or technician can set this (docs/scripts.md#test-root).
ROOT = os.environ.get("POSASSIST_TEST_ROOT", "")

READ_TIMEOUT = 2.0
CONNECT_TIMEOUT = 3.0


def rt_valid(b):
    """Every DLE EOT reply matches 0xx1xx10."""
    return (b & 0x93) == 0x12


def decode(n, b):
    if n == 1:
        return {
            "drawer_pin3_high": bool(b & 0x04),
            "offline": bool(b & 0x08),
            "waiting_recovery": bool(b & 0x20),
            "feed_button": bool(b & 0x40),
        }
    if n == 2:
        return {
            "cover_open": bool(b & 0x04),
            "feeding": bool(b & 0x08),
            "paper_end_stop": bool(b & 0x20),
            "error": bool(b & 0x40),
        }
    if n == 3:
        return {
            "recoverable": bool(b & 0x04),
            "autocutter": bool(b & 0x08),
            "unrecoverable": bool(b & 0x20),
            "auto_recoverable": bool(b & 0x40),
        }
    return {"near_end": (b & 0x0C) == 0x0C, "paper_end": (b & 0x60) == 0x60}


class TcpLink:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write(self, data):
        self.sock.settimeout(READ_TIMEOUT)
        self.sock.sendall(data)

    def read1(self, timeout):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1)
        except socket.timeout:
            return b""

    def drain(self):
        self.sock.setblocking(False)
        try:
            while self.sock.recv(64):
                pass
        except (BlockingIOError, OSError):
            pass
        self.sock.setblocking(True)

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

    def write(self, data):
        self.port.write(data)
        self.port.flush()

    def read1(self, timeout):
        self.port.timeout = timeout
        return self.port.read(1)

    def drain(self):
        self.port.reset_input_buffer()

    def close(self):
        self.port.close()


def query(link, n):
    """One DLE EOT n; the reply byte, or None (no reply, or not a DLE EOT reply)."""
    link.drain()  # a stale byte would be taken for the reply
    link.write(b"\x10\x04" + bytes((n,)))
    reply = link.read1(READ_TIMEOUT)
    if len(reply) != 1 or not rt_valid(reply[0]):
        return None
    return reply[0]


def read_status(link):
    status, raw = {}, {}
    for n in (1, 2, 3, 4):
        b = query(link, n)
        if b is None:
            return None, raw
        raw[n] = "0x%02x" % b
        status.update(decode(n, b))
        print("DLE EOT %d -> 0x%02x %s" % (n, b, json.dumps(decode(n, b), sort_keys=True)))
    return status, raw


def problems(status):
    found = []
    for key in ("offline", "cover_open", "paper_end", "paper_end_stop", "error"):
        if status.get(key):
            found.append(key)
    for key in ("recoverable", "autocutter", "unrecoverable"):
        if status.get(key):
            found.append(key + "_error")
    return found


def receipt_bytes(now):
    lines = [
        "posassist test receipt",
        "------------------------------",
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)),
        "printer status: OK",
        "If you can read this, printing works.",
        "",
        "",
        "",
    ]
    body = "\n".join(lines).encode("ascii")
    return b"\x1b@" + body + b"\n" + b"\x1dVB\x00"  # ESC @, text, GS V 66 0: feed and cut


def drawer_bytes(pin, pulse_ms):
    m = 0 if pin == "2" else 1
    t1 = max(1, min(255, pulse_ms // 2))
    return b"\x1bp" + bytes((m, t1, max(t1, 250)))  # ESC p m t1 t2 (OFF >= 500 ms)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--action", choices=("status", "receipt", "drawer"), required=True)
    p.add_argument("--host")
    p.add_argument("--tcp-port", type=int, default=9100)
    p.add_argument("--serial")
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("--pin", choices=("2", "5"), default="2")
    p.add_argument("--pulse-ms", type=int, default=100)
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    result = {"action": args.action, "done": False}

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
        status, raw = read_status(link)
        result["raw"] = raw
        if status is None:
            print(
                "no valid DLE EOT reply: printer off, wrong port, or not ESC/POS", file=sys.stderr
            )
            return finish(3, error="no_status")
        result["status"] = status
        found = problems(status)
        result["problems"] = found
        if status.get("near_end"):
            print("warning: paper near end")
        if args.action == "status":
            result["done"] = True
            return finish(0 if not found else 2)
        if found:
            print("printer not ready (%s): nothing sent" % ", ".join(found), file=sys.stderr)
            return finish(2)
        if args.action == "receipt":
            link.write(receipt_bytes(time.time()))
            print("test receipt sent, cut requested")
        else:
            before = status["drawer_pin3_high"]
            print("CASH EVENT: drawer kick on pin %s, %d ms" % (args.pin, args.pulse_ms))
            link.write(drawer_bytes(args.pin, args.pulse_ms))
            time.sleep(0.6)
            after = query(link, 1)
            result["drawer_pin3_before"] = before
            result["drawer_pin3_after"] = None if after is None else bool(after & 0x04)
            changed = after is not None and bool(after & 0x04) != before
            print("drawer sensor (pin 3) %s" % ("changed" if changed else "unchanged"))
        after_status = query(link, 1)
        if after_status is None or decode(1, after_status)["offline"]:
            print("printer went offline after the job", file=sys.stderr)
            return finish(2, problems=["offline_after_job"])
        result["done"] = True
        return finish(0)
    except OSError as exc:
        print("link error: %s" % exc, file=sys.stderr)
        return finish(4, error="link_error")
    finally:
        link.close()


if __name__ == "__main__":
    sys.exit(main())
