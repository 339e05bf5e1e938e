"""posassist catalog: set the till's time zone to the store's (Linux and Windows, 5.3 #20).

Linux: the zone must exist in the zone database (``/usr/share/zoneinfo/<zone>``); ``timedatectl
show -p Timezone --value`` (before), ``timedatectl set-timezone <zone>``, then read back. Windows:
an IANA name of the stores' zones is turned into its Windows id (a Windows id is taken as it
is); ``tzutil /g`` (before), ``tzutil /s <id>``, then ``tzutil /g`` again.
The zone before is printed (``RESULT {"previous": ...}``) and put back if the new one does not
read back; the clock itself is not touched. Tools by absolute path with argv lists, never a shell.
Exit codes: 0 set; 1 a tool failed or the zone did not read back (the old one restored);
3 unknown zone or no tool.
"""

import argparse
import json
import os
import re
import subprocess
import sys

# Test-only re-rooting of tool paths; unreachable from a manifest (docs/scripts.md#test-root).
ROOT = os.environ.get("POSASSIST_TEST_ROOT", "")
TIMEDATECTL = ("/usr/bin/timedatectl", "/bin/timedatectl")
IANA = re.compile(r"\A[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+){0,2}\Z")
#: The stores' zones as Windows ids (CLDR windowsZones), the same table as agent/findings.py.
WINDOWS_IDS = {
    "Asia/Shanghai": "China Standard Time",
    "Asia/Chongqing": "China Standard Time",
    "Asia/Harbin": "China Standard Time",
    "PRC": "China Standard Time",
    "Asia/Taipei": "Taipei Standard Time",
    "Asia/Singapore": "Singapore Standard Time",
    "Asia/Tokyo": "Tokyo Standard Time",
    "Asia/Seoul": "Korea Standard Time",
    "Etc/UTC": "UTC",
    "UTC": "UTC",
}


def windows_id(zone):
    """The Windows time zone id for ``zone`` (an IANA name or a Windows id), or None."""
    if zone in WINDOWS_IDS:
        return WINDOWS_IDS[zone]
    if zone in WINDOWS_IDS.values() or zone.endswith(" Standard Time"):
        return zone
    return None


def windows_plan(system_root, zone_id):
    """Read, set, read again: the tzutil command lines for ``zone_id``."""
    tzutil = system_root.rstrip("\\") + "\\System32\\tzutil.exe"
    return [[tzutil, "/g"], [tzutil, "/s", zone_id], [tzutil, "/g"]]


def linux_plan(timedatectl, zone):
    show = [timedatectl, "show", "-p", "Timezone", "--value"]
    return [show, [timedatectl, "set-timezone", zone], show]


def run(argv, echo=True):
    if echo:
        print("$ " + " ".join(argv))
    proc = subprocess.run(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30, check=False
    )
    text = proc.stdout.decode("utf-8", "replace").strip()
    if text and echo:
        print(text)
    return proc.returncode, text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--zone", required=True)
    args = p.parse_args(argv)
    if sys.platform == "win32":
        target = windows_id(args.zone)
        if target is None:
            print("no Windows time zone id known for %s" % args.zone, file=sys.stderr)
            return 3
        plan = windows_plan(os.environ.get("SystemRoot", "C:\\Windows"), target)
    else:
        target = args.zone
        tool = next((ROOT + t for t in TIMEDATECTL if os.path.isfile(ROOT + t)), None)
        zoneinfo = ROOT + "/usr/share/zoneinfo/" + args.zone
        if not IANA.match(args.zone) or not os.path.isfile(zoneinfo):
            print("unknown time zone: %s" % args.zone, file=sys.stderr)
            return 3
        if tool is None:
            print("timedatectl not found", file=sys.stderr)
            return 3
        plan = linux_plan(tool, target)
    read, change, _ = plan
    code, previous = run(read)
    if code != 0:
        return 1
    print("RESULT " + json.dumps({"previous": previous, "zone": target}))
    if previous == target:
        print("the time zone is already %s" % target)
        return 0
    code, _ = run(change)
    _, now = run(read)
    if code == 0 and now == target:
        print("time zone: %s -> %s" % (previous, target))
        return 0
    print(
        "the time zone reads %r, not %s: putting %s back" % (now, target, previous), file=sys.stderr
    )
    run([*change[:-1], previous])
    return 1


if __name__ == "__main__":
    sys.exit(main())
