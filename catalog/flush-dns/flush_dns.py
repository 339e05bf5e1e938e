"""posassist catalog: flush the DNS cache, then optionally resolve a host (Linux and Windows).

Windows: ``ipconfig /flushdns``. Linux: ``resolvectl flush-caches`` (systemd-resolved), else
``systemd-resolve --flush-caches``, else ``nscd -i hosts``; no cache at all is reported, not an
error. ``--check-host`` resolves a name afterwards (getaddrinfo) as evidence.
Exit codes: 0 flushed (or nothing to flush); 1 the flush failed; 2 the check host did not resolve.
"""

import argparse
import os
import socket
import subprocess
import sys

# Test-only re-rooting of tool paths; unreachable from a manifest (docs/scripts.md#test-root).
ROOT = os.environ.get("POSASSIST_TEST_ROOT", "")
LINUX = (
    ("/usr/bin/resolvectl", "flush-caches"),
    ("/usr/bin/systemd-resolve", "--flush-caches"),
    ("/usr/sbin/nscd", "-i", "hosts"),
)


def plan(platform, system_root="C:\\Windows"):
    """The flush command line for ``platform``, or None when the till has no DNS cache."""
    if platform == "windows":
        return [system_root.rstrip("\\") + "\\System32\\ipconfig.exe", "/flushdns"]
    for tool, *args in LINUX:
        if os.path.isfile(ROOT + tool):
            return [ROOT + tool, *args]
    return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--check-host")
    args = p.parse_args(argv)
    platform = "windows" if sys.platform == "win32" else "linux"
    cmd = plan(platform, os.environ.get("SystemRoot", "C:\\Windows"))
    if cmd is None:
        print("no local DNS cache service found: nothing to flush")
    else:
        print("$ " + " ".join(cmd))
        proc = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30, check=False
        )
        text = proc.stdout.decode("utf-8", "replace").strip()
        if text:
            print(text)
        if proc.returncode != 0:
            print("flush failed (exit %d)" % proc.returncode, file=sys.stderr)
            return 1
        print("DNS cache flushed")
    if args.check_host:
        try:
            infos = socket.getaddrinfo(args.check_host, 443, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            print("%s does not resolve: %s" % (args.check_host, exc), file=sys.stderr)
            return 2
        print("%s -> %s" % (args.check_host, ", ".join(sorted({i[4][0] for i in infos}))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
