"""posassist catalog: turn off USB selective suspend on a Windows till (5.2 #13).

A USB printer or USB-serial adapter that Windows suspends to save power drops off and comes back,
and the POS loses it. The setting "USB selective suspend" of the active power scheme is read
(``powercfg /query``, printed as the value before), set to Disabled for mains and battery
(``/SETACVALUEINDEX`` and ``/SETDCVALUEINDEX ... 0``) and the scheme applied again
(``/SETACTIVE SCHEME_CURRENT``), then read back. The per-device "Allow the computer to turn off
this device" box is a manual step this script names. Tools by absolute path with argv lists.
Exit codes: 0 disabled; 1 powercfg failed or the value did not read back.
"""

import argparse
import json
import os
import re
import subprocess
import sys

USB_GROUP = "2a737441-1930-4402-8d77-b2bebba308a3"
SELECTIVE_SUSPEND = "48e6b7a6-50f5-4782-a5d4-53bb8f07e226"
VALUE = re.compile(r"Current (AC|DC) Power Setting Index:\s*0x([0-9a-fA-F]+)")


def parse_query(text):
    """``{"AC": int, "DC": int}`` from ``powercfg /query`` output (either may be missing)."""
    return {m.group(1): int(m.group(2), 16) for m in VALUE.finditer(text)}


def plan(system_root):
    powercfg = system_root.rstrip("\\") + "\\System32\\powercfg.exe"
    setting = ["SCHEME_CURRENT", USB_GROUP, SELECTIVE_SUSPEND]
    return {
        "query": [powercfg, "/QUERY", *setting],
        "set": [
            [powercfg, "/SETACVALUEINDEX", *setting, "0"],
            [powercfg, "/SETDCVALUEINDEX", *setting, "0"],
            [powercfg, "/SETACTIVE", "SCHEME_CURRENT"],
        ],
    }


def run(argv):
    print("$ " + " ".join(argv))
    proc = subprocess.run(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, check=False
    )
    text = proc.stdout.decode("utf-8", "replace").strip()
    if text:
        print(text)
    return proc.returncode, text


def main(argv=None):
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    steps = plan(os.environ.get("SystemRoot", "C:\\Windows"))
    before = parse_query(run(steps["query"])[1])
    print("RESULT " + json.dumps({"previous": before}))
    for argv in steps["set"]:
        if run(argv)[0] != 0:
            return 1
    after = parse_query(run(steps["query"])[1])
    if after.get("AC") != 0:
        print("USB selective suspend still reads %r" % after, file=sys.stderr)
        return 1
    print("USB selective suspend disabled (was %r)" % before)
    print(
        "also untick 'Allow the computer to turn off this device' on the printer's USB hub "
        "in Device Manager (manual)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
