"""posassist catalog: restart a systemd service and wait until it is active (Linux).

``systemctl is-active U`` (before), ``systemctl restart U``, then ``systemctl is-active U`` every
second until it reports ``active`` or ``--wait`` seconds pass; on failure the unit's status is
printed. The unit name is restricted by each manifest's pattern (POS units; cups.service).
Exit codes: 0 active again; 1 restart failed or not active in time; 3 systemctl missing.
"""

import argparse
import os
import subprocess
import sys
import time

# Test-only re-rooting of tool paths; unreachable from a manifest (docs/scripts.md#test-root).
ROOT = os.environ.get("POSASSIST_TEST_ROOT", "")
SYSTEMCTL = ("/usr/bin/systemctl", "/bin/systemctl")


def run(argv, timeout=120, quiet=False):
    if not quiet:
        print("$ " + " ".join(argv))
    proc = subprocess.run(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False
    )
    text = proc.stdout.decode("utf-8", "replace").strip()
    if text and not quiet:
        print(text)
    return proc.returncode, text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--unit", required=True)
    p.add_argument("--wait", type=int, default=30)
    args = p.parse_args(argv)
    systemctl = next((ROOT + s for s in SYSTEMCTL if os.path.isfile(ROOT + s)), None)
    if systemctl is None or args.unit.startswith("-"):
        print("systemctl not found (or bad unit name)", file=sys.stderr)
        return 3
    run([systemctl, "is-active", args.unit])
    code, _ = run([systemctl, "restart", args.unit])
    if code != 0:
        run([systemctl, "status", "--no-pager", "--lines=20", args.unit])
        return 1
    deadline = time.monotonic() + max(1, min(args.wait, 300))
    state = ""
    while time.monotonic() < deadline:
        _, state = run([systemctl, "is-active", args.unit], quiet=True)
        if state == "active":
            print("%s is active" % args.unit)
            return 0
        time.sleep(1)
    print("%s is %s after restart" % (args.unit, state or "unknown"), file=sys.stderr)
    run([systemctl, "status", "--no-pager", "--lines=20", args.unit])
    return 1


if __name__ == "__main__":
    sys.exit(main())
