"""posassist catalog: start the POS's stopped SQL Server Express service (Windows, 5.4 #29).

``sc.exe query <service>`` (before); when it is not running, ``sc.exe start <service>`` and
``sc.exe query`` every second until it is RUNNING or ``--wait`` seconds pass. Only SQL Server
service names are accepted (the manifest's pattern). Starting a stopped service is safe at any
time (class A); the database's size cap is a technician's job, not this script's.
Tools by absolute path with argv lists, never a shell.
Exit codes: 0 running; 1 it did not start; 3 no such service.
"""

import argparse
import os
import re
import subprocess
import sys
import time

STATE = re.compile(r"^\s*STATE\s*:\s*\d+\s+([A-Z_]+)", re.MULTILINE)


def state(text):
    """The service state word from ``sc query`` output (RUNNING, STOPPED, ...), or None."""
    m = STATE.search(text)
    return m.group(1) if m else None


def plan(system_root, service):
    sc = system_root.rstrip("\\") + "\\System32\\sc.exe"
    return {"query": [sc, "query", service], "start": [sc, "start", service]}


def run(argv, echo=True):
    if echo:
        print("$ " + " ".join(argv))
    proc = subprocess.run(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, check=False
    )
    text = proc.stdout.decode("utf-8", "replace").strip()
    if text and echo:
        print(text)
    return proc.returncode, text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--service", required=True)
    p.add_argument("--wait", type=int, default=60)
    args = p.parse_args(argv)
    steps = plan(os.environ.get("SystemRoot", "C:\\Windows"), args.service)
    _, text = run(steps["query"])
    before = state(text)
    if before is None:
        print("no service named %s" % args.service, file=sys.stderr)
        return 3
    if before == "RUNNING":
        print("%s is already running" % args.service)
        return 0
    run(steps["start"])
    deadline = time.monotonic() + max(1, min(args.wait, 300))
    now = before
    while time.monotonic() < deadline:
        now = state(run(steps["query"], echo=False)[1])
        if now == "RUNNING":
            print("%s: %s -> RUNNING" % (args.service, before))
            return 0
        time.sleep(1)
    print("%s is %s, not running" % (args.service, now), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
