"""posassist catalog: clear a stuck CUPS queue and re-enable a paused printer (Linux).

Steps, each printed with its output: ``lpstat -p Q`` and ``lpstat -o Q`` (evidence), then
``cancel -a Q`` (only with ``--cancel-jobs true``), ``cupsenable Q``, ``cupsaccept Q`` and
``lpstat -p Q`` again. Tools are run by absolute path with argv lists, never through a shell.
Exit codes: 0 queue enabled; 1 still disabled or a tool failed; 3 no such queue / no CUPS.
"""

import argparse
import os
import subprocess
import sys

# Test-only re-rooting of tool paths; unreachable from a manifest (docs/scripts.md#test-root).
ROOT = os.environ.get("POSASSIST_TEST_ROOT", "")

TOOLS = {
    "lpstat": ("/usr/bin/lpstat",),
    "cancel": ("/usr/bin/cancel",),
    "cupsenable": ("/usr/sbin/cupsenable", "/usr/bin/cupsenable"),
    "cupsaccept": ("/usr/sbin/cupsaccept", "/usr/bin/cupsaccept"),
}


def tool(name):
    for path in TOOLS[name]:
        if os.path.isfile(ROOT + path) and os.access(ROOT + path, os.X_OK):
            return ROOT + path
    return None


def run(argv):
    print("$ " + " ".join(argv))
    proc = subprocess.run(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, check=False
    )
    text = proc.stdout.decode("utf-8", "replace")
    if text:
        print(text.rstrip("\n"))
    return proc.returncode, text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--queue", required=True)
    p.add_argument("--cancel-jobs", choices=("true", "false"), default="false")
    args = p.parse_args(argv)
    if args.queue.startswith("-"):
        print("bad queue name", file=sys.stderr)
        return 3
    paths = {name: tool(name) for name in TOOLS}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        print("CUPS tools missing: " + ", ".join(missing), file=sys.stderr)
        return 3
    code, _ = run([paths["lpstat"], "-p", args.queue])
    if code != 0:
        print("no such queue: " + args.queue, file=sys.stderr)
        return 3
    run([paths["lpstat"], "-o", args.queue])
    failed = False
    if args.cancel_jobs == "true":
        failed |= run([paths["cancel"], "-a", args.queue])[0] != 0
    failed |= run([paths["cupsenable"], args.queue])[0] != 0
    failed |= run([paths["cupsaccept"], args.queue])[0] != 0
    code, text = run([paths["lpstat"], "-p", args.queue])
    if failed or code != 0 or "disabled" in text:
        print("queue %s is still not enabled" % args.queue, file=sys.stderr)
        return 1
    print("queue %s enabled" % args.queue)
    return 0


if __name__ == "__main__":
    sys.exit(main())
