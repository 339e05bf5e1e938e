"""posassist catalog: reset a wedged USB-serial adapter by unbinding and rebinding it (Linux).

Finds the USB interface behind ``/sys/class/tty/<device>``, checks that its driver is a known
USB-serial driver, writes the interface name to ``/sys/bus/usb/drivers/<driver>/unbind``, waits a
second, writes it to ``.../bind`` and waits for the tty to come back. Only sysfs writes, no tools.
Exit codes: 0 the tty is back; 1 it did not come back in time; 3 no such device / not USB-serial.
"""

import argparse
import os
import re
import sys
import time

# Test-only re-rooting of /sys; unreachable from a manifest (docs/scripts.md#test-root).
ROOT = os.environ.get("POSASSIST_TEST_ROOT", "")
DRIVERS = ("ftdi_sio", "pl2303", "ch341", "cp210x", "cdc_acm", "usbserial_generic", "option")
_DEVICE = re.compile(r"\Atty(?:USB|ACM)[0-9]{1,3}\Z")
_INTERFACE = re.compile(r"\A[0-9]+-[0-9.]+:[0-9]+\.[0-9]+\Z")


def sysfs(path):
    return ROOT + path


def inside(path, folder):
    folder = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(path), folder]) == folder


def find_interface(device):
    """(interface name, driver name) for ``device``, or an error text."""
    link = sysfs("/sys/class/tty/%s/device" % device)
    if not os.path.exists(link):
        return None, "no such tty: %s" % device
    node = os.path.realpath(link)
    if not inside(node, sysfs("/sys/devices")):
        return None, "%s is not a device under /sys/devices" % device
    interface = node if _INTERFACE.match(os.path.basename(node)) else os.path.dirname(node)
    name = os.path.basename(interface)
    if not _INTERFACE.match(name):
        return None, "%s is not on a USB interface" % device
    driver_link = os.path.join(interface, "driver")
    if not os.path.exists(driver_link):
        return None, "interface %s has no driver bound" % name
    driver_dir = os.path.realpath(driver_link)
    driver = os.path.basename(driver_dir)
    if driver not in DRIVERS or not inside(driver_dir, sysfs("/sys/bus/usb/drivers")):
        return None, "driver %s is not a USB-serial driver" % driver
    return (name, driver), None


def write(path, text):
    print("write %s > %s" % (text, path))
    with open(path, "w") as f:
        f.write(text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", required=True)
    p.add_argument("--wait", type=int, default=10)
    args = p.parse_args(argv)
    if not _DEVICE.match(args.device):
        print("bad device name", file=sys.stderr)
        return 3
    found, error = find_interface(args.device)
    if found is None:
        print(error, file=sys.stderr)
        return 3
    interface, driver = found
    print("%s is on USB interface %s, driver %s" % (args.device, interface, driver))
    drivers = sysfs("/sys/bus/usb/drivers/" + driver)
    write(os.path.join(drivers, "unbind"), interface)
    time.sleep(1)
    write(os.path.join(drivers, "bind"), interface)
    deadline = time.monotonic() + max(1, min(args.wait, 60))
    tty = sysfs("/sys/class/tty/" + args.device)
    while time.monotonic() < deadline:
        if os.path.exists(tty):
            print("%s is back" % args.device)
            return 0
        time.sleep(0.5)
    print("%s did not come back; it may have a new name now" % args.device, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
