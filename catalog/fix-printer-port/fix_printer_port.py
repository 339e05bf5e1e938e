"""posassist catalog: point the POS at its receipt printer's new COM port or address.

Edits one key in the POS's INI-style config file. Which file, section and keys come from the POS
profile the agent runs with (``[config]``: ``path``, ``printer_section``, ``port_key``,
``address_key``), passed as ``POSASSIST_PROFILE_*`` variables (docs/scripts.md#profile); the
manifest backs the same file up (``${POS_CONFIG}``) before the run. ``--port COM7`` or
``/dev/ttyUSB1`` sets the port key for a serial printer, ``--address 192.168.1.50:9100`` the
address key for a network printer. Every other byte of the file stays as it was (comments, order,
line endings, encoding). The file is replaced atomically, then the new target is checked: the
serial device must exist, a network printer must answer DLE EOT 1. If the check fails the script
exits 1 *after* the change, and the runner restores the backup byte for byte.
The printer section must exist (a header may carry a comment: ``[printer] ; receipt``); a key's
inline comment stays. UTF-8 (with or without BOM), GBK bytes and UTF-16 with a BOM (Windows'
``WritePrivateProfileStringW``) are edited in their own encoding; UTF-16 without a BOM is refused.
After writing, the file is read back and must hold the new value.
Exit codes: 0 changed and verified (or already set); 1 verification failed; 3 config unusable
(unreadable, unknown encoding, no printer section) or the POS profile names no config file;
5 bad arguments.
"""

import argparse
import os
import re
import socket
import sys

# Test-only re-rooting of device paths; unreachable from a manifest (docs/scripts.md#test-root).
ROOT = os.environ.get("POSASSIST_TEST_ROOT", "")
# From the POS profile, set by the agent's runner (docs/scripts.md#profile).
CONFIG = os.environ.get("POSASSIST_PROFILE_CONFIG", "")
SECTION = os.environ.get("POSASSIST_PROFILE_PRINTER_SECTION", "printer").lower()
KEYS = {
    "port": os.environ.get("POSASSIST_PROFILE_PORT_KEY", "port"),
    "address": os.environ.get("POSASSIST_PROFILE_ADDRESS_KEY", "address"),
}
_HEADER = re.compile(r"^\s*\[([^\]]+)\]\s*(?:[;#].*)?$")


class ConfigUnusable(Exception):
    """The config file can not be edited safely; nothing was changed."""


def set_key(text, key, value):
    """``text`` with ``key`` in [printer] set to ``value``; (new text, old value or None).

    Raises ConfigUnusable when the file has no printer section: a section the POS never had is
    not one it reads, so adding it would "fix" nothing.
    """
    lines = text.splitlines(True)
    newline = "\r\n" if "\r\n" in text else "\n"
    in_section, found, section_end, old = False, False, None, None
    key_re = re.compile(
        r"^(\s*" + re.escape(key) + r"\s*[=:]\s*)([^;#]*?)(\s*(?:[;#].*)?)$", re.IGNORECASE
    )
    for i, line in enumerate(lines):
        header = _HEADER.match(line.lstrip("\ufeff"))
        if header:
            if in_section:
                section_end = i
                break
            in_section = header.group(1).strip().lower() == SECTION
            found = found or in_section
            continue
        if in_section:
            body = line.rstrip("\r\n")
            match = key_re.match(body)
            if match:
                old = match.group(2)
                lines[i] = match.group(1) + value + match.group(3) + line[len(body) :]
                return "".join(lines), old
    if not found:
        raise ConfigUnusable("no [%s] section" % SECTION)
    # section present, key missing: add it at the section's end
    at = section_end if section_end is not None else len(lines)
    while at > 0 and not lines[at - 1].strip():
        at -= 1
    if at > 0 and not lines[at - 1].endswith("\n"):
        lines[at - 1] += newline
    lines.insert(at, key + " = " + value + newline)
    return "".join(lines), None


def get_key(text, key):
    """The value of ``key`` in the printer section of ``text``, or None."""
    in_section = False
    key_re = re.compile(r"^\s*" + re.escape(key) + r"\s*[=:]\s*([^;#]*?)\s*(?:[;#].*)?$", re.I)
    for line in text.splitlines():
        header = _HEADER.match(line.lstrip("\ufeff"))
        if header:
            in_section = header.group(1).strip().lower() == SECTION
            continue
        match = key_re.match(line) if in_section else None
        if match:
            return match.group(1)
    return None


def decode(raw):
    """(text, encoding) of a config file's bytes; ConfigUnusable for an encoding we would break."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16"), "utf-16"  # with its BOM, written back with one
    if b"\x00" in raw:
        raise ConfigUnusable("NUL bytes without a UTF-16 BOM: unknown encoding")
    return raw.decode("utf-8", "surrogateescape"), "utf-8"  # keeps GBK or stray bytes as they are


def encode(text, encoding):
    if encoding == "utf-16":
        return text.encode("utf-16")  # BOM in this machine's order, as Windows writes it
    return text.encode("utf-8", "surrogateescape")


def write_atomically(path, data):
    mode = os.stat(path).st_mode & 0o7777
    tmp = path + ".posassist-new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def serial_exists(platform, port):
    if platform == "windows":
        import winreg

        try:
            key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"HARDWARE\DEVICEMAP\SERIALCOMM")
        except OSError:
            return False
        with key:
            i = 0
            while True:
                try:
                    if winreg.EnumValue(key, i)[1].upper() == port.upper():
                        return True
                except OSError:
                    return False
                i += 1
    return os.path.exists(ROOT + port)


def printer_answers(address):
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3) as sock:
            sock.settimeout(2)
            sock.sendall(b"\x10\x04\x01")
            reply = sock.recv(1)
    except OSError as exc:
        print("printer at %s does not answer: %s" % (address, exc), file=sys.stderr)
        return False
    ok = len(reply) == 1 and (reply[0] & 0x93) == 0x12
    if not ok:
        print("no valid DLE EOT reply from %s" % address, file=sys.stderr)
    return ok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port")
    p.add_argument("--address")
    args = p.parse_args(argv)
    if bool(args.port) == bool(args.address):
        print("give exactly one of --port or --address", file=sys.stderr)
        return 5
    platform = "windows" if sys.platform == "win32" else "linux"
    path = CONFIG
    if not path:
        print("the POS profile names no config file ([config] path)", file=sys.stderr)
        return 3
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        print("cannot read POS config %s: %s" % (path, exc), file=sys.stderr)
        return 3
    key, value = (KEYS["port"], args.port) if args.port else (KEYS["address"], args.address)
    try:
        text, encoding = decode(raw)
        new_text, old = set_key(text, key, value)
    except (ConfigUnusable, UnicodeDecodeError) as exc:
        print("POS config %s can not be edited: %s; nothing changed" % (path, exc), file=sys.stderr)
        return 3
    print("%s: [%s] %s: %s -> %s" % (path, SECTION, key, old, value))
    if old == value:
        print("already set; nothing changed")
        return 0
    write_atomically(path, encode(new_text, encoding))
    with open(path, "rb") as f:  # read back: the POS must now read the new value
        reread = get_key(decode(f.read())[0], key)
    if reread != value:
        print(
            "config still says %s = %s after writing: failing so the runner restores the backup"
            % (key, reread),
            file=sys.stderr,
        )
        return 1
    print("config written; checking the new printer target")
    ok = serial_exists(platform, value) if args.port else printer_answers(value)
    if not ok:
        print(
            "new target %s does not work: failing so the runner restores the backup" % value,
            file=sys.stderr,
        )
        return 1
    print("printer target verified; restart the POS application to use it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
