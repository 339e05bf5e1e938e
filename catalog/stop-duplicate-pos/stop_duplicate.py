"""posassist catalog: stop a second instance of the POS program (Linux and Windows, 5.4 #27).

Two instances of the POS fight over its database ("database is locked") and its printer port.
The instances are the processes named as the till's POS profile names them
(``POSASSIST_PROFILE_PROCESSES``, set by the agent, never by the technician). The one to stop is
named by its process id, which must be one of them, and at least one other instance must keep
running: the only instance is never stopped. It is asked to end (SIGTERM on Linux, ``taskkill
/PID`` without ``/F`` on Windows, which closes its windows as a user would) and waited for; it is
never forced. Tools by absolute path with argv lists, never a shell.
Exit codes: 0 stopped; 1 it did not end in time; 3 refused (not a POS instance, the only one,
no profile).
"""

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import time

# Test-only re-rooting of the process table; no manifest reaches it (docs/scripts.md#test-root).
ROOT = os.environ.get("POSASSIST_TEST_ROOT", "")
SIGTERM = 15
WAIT = 15.0


def linux_processes(proc=None):
    """``{pid: name}`` of every process, as psutil names them (comm, or argv[0] when cut)."""
    proc = proc or (ROOT + "/proc")
    table = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "comm"), encoding="utf-8", errors="replace") as f:
                name = f.read().strip()
            if len(name) == 15:  # the kernel cuts comm at 15 characters
                with open(os.path.join(proc, entry, "cmdline"), "rb") as f:
                    first = f.read().split(b"\0")[0].decode("utf-8", "replace")
                full = os.path.basename(first)
                if full.startswith(name):
                    name = full
        except OSError:
            continue
        table[int(entry)] = name
    return table


def linux_gone(pid, proc=None):
    """Whether ``pid`` has ended (no entry, or a zombie waiting for its parent)."""
    proc = proc or (ROOT + "/proc")
    try:
        with open(os.path.join(proc, str(pid), "stat"), encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def parse_tasklist(text):
    """``{pid: image name}`` from ``tasklist /FO CSV /NH`` output."""
    table = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 2 and row[1].strip().isdigit():
            table[int(row[1])] = row[0].strip()
    return table


def windows_plan(system_root, pid):
    """The list, stop and check command lines for ``pid`` on Windows."""
    system32 = system_root.rstrip("\\") + "\\System32\\"
    return {
        "list": [system32 + "tasklist.exe", "/FO", "CSV", "/NH"],
        "stop": [system32 + "taskkill.exe", "/PID", str(int(pid))],
    }


def run(argv):
    proc = subprocess.run(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, check=False
    )
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


def instances(table, names):
    wanted = {n.lower() for n in names}
    return sorted(pid for pid, name in table.items() if name.lower() in wanted)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--process-id", type=int, required=True)
    args = p.parse_args(argv)
    try:
        names = json.loads(os.environ.get("POSASSIST_PROFILE_PROCESSES", "[]"))
    except ValueError:
        names = []
    if not isinstance(names, list) or not names:
        print("the till's POS profile names no POS process", file=sys.stderr)
        return 3
    windows = sys.platform == "win32"
    if windows:
        plan = windows_plan(os.environ.get("SystemRoot", "C:\\Windows"), args.process_id)
        code, text = run(plan["list"])
        if code != 0:
            print("tasklist failed: " + text.strip(), file=sys.stderr)
            return 3
        table = parse_tasklist(text)
    else:
        table = linux_processes()
    pos = instances(table, names)
    print("POS instances (%s): %s" % (", ".join(names), ", ".join(map(str, pos)) or "none"))
    if args.process_id not in pos:
        print(
            "process %d is not an instance of the POS: nothing stopped" % args.process_id,
            file=sys.stderr,
        )
        return 3
    if len(pos) < 2:
        print(
            "process %d is the only POS instance: it is not stopped" % args.process_id,
            file=sys.stderr,
        )
        return 3
    print("asking process %d (%s) to end" % (args.process_id, table[args.process_id]))
    if windows:
        code, text = run(plan["stop"])
        print(text.strip())
    else:
        try:
            os.kill(args.process_id, SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if windows:
            gone = args.process_id not in parse_tasklist(run(plan["list"])[1])
        else:
            gone = linux_gone(args.process_id)
        if gone:
            left = [pid for pid in pos if pid != args.process_id]
            print("RESULT " + json.dumps({"stopped": args.process_id, "running": left}))
            print("process %d ended; %d instance(s) left" % (args.process_id, len(left)))
            return 0
        time.sleep(0.2)
    print(
        "process %d did not end within %d s (it was not forced)" % (args.process_id, WAIT),
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
