"""posassist catalog: a udev rule for one USB device, by VID:PID (Linux).

``--kind mm-ignore`` (5.2 #15): ModemManager (and other probers that honour the flag) leave the
device alone: ``ENV{ID_MM_DEVICE_IGNORE}="1"``.
``--kind power-on`` (5.2 #13): the device is never autosuspended: the rule sets
``power/control`` to ``on`` at every plug-in, and the device's ``power/control`` is set to ``on``
now if it is plugged in (the value before is printed).

The rule file is fixed per kind (the manifest backs it up before the run; a failed run puts it
back byte for byte). Its other lines are kept; a line already there is not written twice. Then
``udevadm control --reload-rules`` and ``udevadm trigger`` for the device, by argv, never a
shell. Exit codes: 0 the rule is in place; 1 writing or udevadm failed; 3 no udevadm.
"""

import argparse
import os
import re
import subprocess
import sys

# Test-only re-rooting of tool paths; unreachable from a manifest (docs/scripts.md#test-root).
ROOT = os.environ.get("POSASSIST_TEST_ROOT", "")
UDEVADM = ("/usr/bin/udevadm", "/bin/udevadm", "/sbin/udevadm")
RULES = {
    "mm-ignore": "/etc/udev/rules.d/99-posassist-modemmanager.rules",
    "power-on": "/etc/udev/rules.d/99-posassist-usb-power.rules",
}
HEX4 = re.compile(r"\A[0-9a-f]{4}\Z")
HEADER = "# written by posassist (catalog); one line per device\n"


def rule_line(kind, vendor, product):
    """The udev rule for ``kind`` and the device ``vendor``:``product`` (lower-case hex)."""
    if kind == "mm-ignore":
        return 'ATTRS{idVendor}=="%s", ATTRS{idProduct}=="%s", ENV{ID_MM_DEVICE_IGNORE}="1"' % (
            vendor,
            product,
        )
    return (
        'ACTION=="add", SUBSYSTEM=="usb", ATTR{idVendor}=="%s", ATTR{idProduct}=="%s", '
        'TEST=="power/control", ATTR{power/control}="on"' % (vendor, product)
    )


def merged(old_text, line):
    """The rule file's text with ``line`` in it, or None when it is there already."""
    lines = old_text.splitlines()
    if line in lines:
        return None
    head = "" if old_text else HEADER
    body = old_text if not old_text or old_text.endswith("\n") else old_text + "\n"
    return head + body + line + "\n"


def write_rule(path, line):
    """Put ``line`` in the rule file at ``path`` (atomically); True when the file changed."""
    try:
        with open(path, encoding="utf-8") as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    text = merged(old, line)
    if text is None:
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".posassist-new"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def devices(vendor, product):
    """The sysfs folders of the plugged-in USB devices with this VID:PID."""
    base = ROOT + "/sys/bus/usb/devices"
    found = []
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return found
    for name in names:
        folder = os.path.join(base, name)
        try:
            with open(os.path.join(folder, "idVendor")) as f:
                v = f.read().strip().lower()
            with open(os.path.join(folder, "idProduct")) as f:
                p = f.read().strip().lower()
        except OSError:
            continue
        if (v, p) == (vendor, product):
            found.append(folder)
    return found


def power_on_now(vendor, product):
    """Set ``power/control`` to ``on`` on each plugged-in device; False when one refused."""
    ok = True
    folders = devices(vendor, product)
    if not folders:
        print("%s:%s is not plugged in now; the rule applies when it is" % (vendor, product))
    for folder in folders:
        control = os.path.join(folder, "power", "control")
        try:
            with open(control) as f:
                before = f.read().strip()
            with open(control, "w") as f:
                f.write("on")
            with open(control) as f:
                after = f.read().strip()
        except OSError as exc:
            print("%s: %s" % (os.path.basename(folder), exc), file=sys.stderr)
            ok = False
            continue
        print("%s power/control: %s -> %s" % (os.path.basename(folder), before, after))
        ok = ok and after == "on"
    return ok


def run(argv):
    print("$ " + " ".join(argv))
    proc = subprocess.run(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, check=False
    )
    text = proc.stdout.decode("utf-8", "replace").strip()
    if text:
        print(text)
    return proc.returncode


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--kind", choices=sorted(RULES), required=True)
    p.add_argument("--usb-vendor", required=True)
    p.add_argument("--usb-product", required=True)
    args = p.parse_args(argv)
    vendor, product = args.usb_vendor.lower(), args.usb_product.lower()
    if not HEX4.match(vendor) or not HEX4.match(product):
        print("VID and PID are four hex digits each", file=sys.stderr)
        return 3
    udevadm = next((ROOT + u for u in UDEVADM if os.path.isfile(ROOT + u)), None)
    if udevadm is None:
        print("udevadm not found: this till does not use udev", file=sys.stderr)
        return 3
    path = ROOT + RULES[args.kind]
    line = rule_line(args.kind, vendor, product)
    try:
        changed = write_rule(path, line)
    except OSError as exc:
        print("can not write %s: %s" % (RULES[args.kind], exc), file=sys.stderr)
        return 1
    print(("added to %s: %s" if changed else "already in %s: %s") % (RULES[args.kind], line))
    if run([udevadm, "control", "--reload-rules"]) != 0:
        return 1
    trigger = [udevadm, "trigger", "--action=change", "--subsystem-match=usb"]
    trigger += ["--attr-match=idVendor=" + vendor, "--attr-match=idProduct=" + product]
    if run(trigger) != 0:
        return 1
    if args.kind == "power-on" and not power_on_now(vendor, product):
        return 1
    print("done: %s for %s:%s" % (args.kind, vendor, product))
    return 0


if __name__ == "__main__":
    sys.exit(main())
