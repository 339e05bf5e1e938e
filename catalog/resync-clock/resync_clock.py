"""posassist catalog: resync the till's clock with its time servers (Linux and Windows).

Linux with chrony: ``chronyc tracking`` (offset), ``chronyc makestep`` only when the offset is
below ``--max-step`` seconds (a larger step changes receipts' times: that needs a person),
``chronyc tracking`` again. Linux without chrony: ``timedatectl set-ntp true`` and
``timedatectl show -p NTPSynchronized``. Windows: ``net start w32time`` (already running is
fine), ``w32tm /resync /rediscover``, ``w32tm /query /status``.
Exit codes: 0 resynced; 1 a tool failed; 3 no time tool; 4 offset too large for an automatic step.
"""

import argparse
import os
import re
import subprocess
import sys

# Test-only re-rooting of tool paths; unreachable from a manifest (docs/scripts.md#test-root).
ROOT = os.environ.get("POSASSIST_TEST_ROOT", "")
CHRONYC = ("/usr/bin/chronyc", "/bin/chronyc")
TIMEDATECTL = ("/usr/bin/timedatectl", "/bin/timedatectl")
_OFFSET = re.compile(r"System time\s*:\s*([0-9.]+) seconds (fast|slow)")


def find(candidates):
    return next((ROOT + c for c in candidates if os.path.isfile(ROOT + c)), None)


def windows_plan(system_root):
    """The Windows command lines, in order (tested as a dry run)."""
    sys32 = system_root.rstrip("\\") + "\\System32\\"
    w32tm = sys32 + "w32tm.exe"
    return [
        [sys32 + "net.exe", "start", "w32time"],
        [w32tm, "/resync", "/rediscover"],
        [w32tm, "/query", "/status"],
    ]


def run(argv):
    print("$ " + " ".join(argv))
    proc = subprocess.run(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, check=False
    )
    text = proc.stdout.decode("utf-8", "replace").strip()
    if text:
        print(text)
    return proc.returncode, text


def offset_of(tracking):
    match = _OFFSET.search(tracking)
    if match is None:
        return None
    value = float(match.group(1))
    return value if match.group(2) == "fast" else -value


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--max-step", type=int, default=3600)
    args = p.parse_args(argv)
    if sys.platform == "win32":
        plan = windows_plan(os.environ.get("SystemRoot", "C:\\Windows"))
        run(plan[0])  # exit 2 "already started" is fine
        code, _ = run(plan[1])
        run(plan[2])
        return 0 if code == 0 else 1
    chronyc = find(CHRONYC)
    if chronyc is not None:
        code, text = run([chronyc, "tracking"])
        if code != 0:
            return 1
        offset = offset_of(text)
        if offset is not None and abs(offset) > args.max_step:
            print(
                "clock is %.0f s off: larger than %d s, not stepping it automatically"
                % (offset, args.max_step),
                file=sys.stderr,
            )
            return 4
        code, _ = run([chronyc, "makestep"])
        after = run([chronyc, "tracking"])[1]
        print("offset before: %s s, after: %s s" % (offset, offset_of(after)))
        return 0 if code == 0 else 1
    timedatectl = find(TIMEDATECTL)
    if timedatectl is None:
        print("neither chronyc nor timedatectl found", file=sys.stderr)
        return 3
    code, _ = run([timedatectl, "set-ntp", "true"])
    run([timedatectl, "show", "-p", "NTPSynchronized"])
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
