"""posassist catalog: reset a WinHTTP proxy that keeps the POS from its gateway (Windows, 5.3 #24).

``netsh winhttp show proxy`` (before); when a proxy is set, the registry key that holds it is
exported first (``reg export``, to ProgramData\\posassist\\backups) and the old proxy is printed,
then ``netsh winhttp reset proxy`` and ``show proxy`` again, which must say "Direct access".
To put the old proxy back: ``reg import`` of the exported file, or ``netsh winhttp set proxy``
with the printed server and bypass list. Tools by absolute path with argv lists, never a shell.
Exit codes: 0 direct access (or it already was); 1 the reset failed; 3 the backup failed (nothing
changed).
"""

import argparse
import json
import os
import subprocess
import sys
import time

KEY = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Internet Settings\\Connections"


def parse_winhttp_proxy(text):
    """``netsh winhttp show proxy``: ``{"direct": bool, "server", "bypass"}`` (the agent's rule)."""
    out = {"direct": "Direct access" in text, "server": None, "bypass": None}
    for line in text.splitlines():
        key, sep, value = line.partition(" :")
        if not sep:
            continue
        if key.strip().startswith("Proxy Server"):
            out["server"] = value.strip()
        elif key.strip().startswith("Bypass List"):
            out["bypass"] = value.strip()
    return out


def plan(system_root, backup_file):
    system32 = system_root.rstrip("\\") + "\\System32\\"
    return {
        "show": [system32 + "netsh.exe", "winhttp", "show", "proxy"],
        "export": [system32 + "reg.exe", "export", KEY, backup_file, "/y"],
        "reset": [system32 + "netsh.exe", "winhttp", "reset", "proxy"],
    }


def backup_path(program_data, stamp):
    return program_data.rstrip("\\") + "\\posassist\\backups\\winhttp-proxy-%s.reg" % stamp


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
    program_data = os.environ.get("ProgramData", "C:\\ProgramData")
    target = backup_path(program_data, time.strftime("%Y%m%d-%H%M%S"))
    steps = plan(os.environ.get("SystemRoot", "C:\\Windows"), target)
    code, text = run(steps["show"])
    before = parse_winhttp_proxy(text)
    if code == 0 and before["direct"]:
        print("WinHTTP already uses direct access: nothing to reset")
        return 0
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
    except OSError as exc:
        print("can not make the backup folder: %s" % exc, file=sys.stderr)
        return 3
    if run(steps["export"])[0] != 0:
        print("the proxy setting could not be backed up: nothing changed", file=sys.stderr)
        return 3
    print("RESULT " + json.dumps({"previous": before, "backup": target}))
    code, _ = run(steps["reset"])
    after = parse_winhttp_proxy(run(steps["show"])[1])
    if code != 0 or not after["direct"]:
        print("WinHTTP still uses a proxy: %s" % after["server"], file=sys.stderr)
        return 1
    print("WinHTTP proxy %s removed: direct access" % before["server"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
