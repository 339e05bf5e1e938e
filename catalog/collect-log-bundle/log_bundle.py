"""posassist catalog: collect a redacted, size-bounded bundle of POS logs (Linux and Windows).

Reads the newest files of the POS's log folders, those holding the log files the POS profile
names (``POSASSIST_PROFILE_LOG_DIRS``, docs/scripts.md#profile), or of CUPS's (picked by key, never
by path; top level only, regular files, no links, no archives), takes the tail of each within
``--max-kb`` in total, masks card numbers (13-19 digits in a known card range, UnionPay's 62
included, whether or not the Luhn check holds, keeping the last four; docs/findings.md#redaction)
and secrets (password=, pwd=, member_phone=, token=), and writes the bundle to standard output,
which the runner streams to the technician. Nothing is written on the till.
Exit codes: 0 bundle written; 3 the folder is missing, or no POS profile names the POS's logs.
"""

import argparse
import bisect
import json
import os
import re
import stat
import sys
import time

# Test-only re-rooting of absolute paths; unreachable from a manifest (docs/scripts.md#test-root).
ROOT = os.environ.get("POSASSIST_TEST_ROOT", "")

SOURCES = {"linux": {"cups": "/var/log/cups"}, "windows": {}}
# From the POS profile, set by the agent's runner: the folders of its [logs] paths, a JSON list.
POS_LOG_DIRS = os.environ.get("POSASSIST_PROFILE_LOG_DIRS", "")
SKIP_SUFFIXES = (
    *(".gz", ".zip", ".bz2", ".xz", ".7z", ".db", ".bak", ".db-wal", ".db-shm", "-journal"),
    *(".sqlite", ".sqlite3", ".mdf", ".ldf", ".key", ".pem", ".pfx", ".p12"),
)  # archives, databases and keys: never logs
SKIP_NAMES = ("agent.json", "settings.json", "root.json")  # the agent's own files, if beside
MAX_FILES = 20

_DIGIT_RUN = re.compile(
    "(?<![0-9\uff10-\uff19])[0-9\uff10-\uff19]+"
    "(?:[ \t\u00a0.-][0-9\uff10-\uff19]+)*(?![0-9\uff10-\uff19])"
)
_GROUP = re.compile("[0-9\uff10-\uff19]+")
_ASCII = {0xFF10 + i: 0x30 + i for i in range(10)}
# what may be left of a card number cut at the start of a tail read mid-file
_CUT_DIGITS = re.compile(rb"^(?:[0-9 \t.-]|\xef\xbc[\x90-\x99]|\xc2\xa0)+")
# The agent's SECRET_PATTERNS (agent/redact.py; a test keeps them equal), then the POS profile's
# own [logs] redact_patterns, passed by the runner as POSASSIST_PROFILE_REDACT (a JSON list).
SECRET_PATTERNS = (
    r"(?i)\b(?:password|passwd|pwd|token|secret|api[_-]?key)[\"']?\s*[=:]\s*"
    r"(?P<q>[\"'])?(?P<secret>(?(q)[^\"']*|[^\s;,&\"'<]+))",
    r"(?i)<(?P<tag>password|passwd|pwd|token|secret)>(?P<secret>[^<]*)</(?P=tag)>",
    r"(?i)\bauthorization\s*:\s*(?:bearer|basic)\s+(?P<secret>[A-Za-z0-9._~+/=-]+)",
    r"(?i)\bmember_phone\s*[=:]\s*(?P<secret>\d{11})",
)


def _profile_patterns():
    try:
        extra = json.loads(os.environ.get("POSASSIST_PROFILE_REDACT", "") or "[]")
    except ValueError:
        extra = []
    return [p for p in extra if isinstance(p, str)] if isinstance(extra, list) else []


SECRETS = [re.compile(p) for p in SECRET_PATTERNS + tuple(_profile_patterns())]


# A copy of agent/redact.py's rule (a catalog script runs on its own); a test keeps them identical.
CARD_RANGES = (
    ("4", "4"),
    ("50", "58"),
    ("2221", "2720"),
    ("34", "34"),
    ("37", "37"),
    ("300", "305"),
    ("309", "309"),
    ("36", "36"),
    ("38", "39"),
    ("3528", "3589"),
    ("6", "6"),
)


def luhn_ok(digits):
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def in_card_range(digits):
    if not 13 <= len(digits) <= 19:
        return False
    if len(digits) == 13 and digits.startswith("69") and ean13_ok(digits):
        return False
    return any(lo <= digits[: len(lo)] <= hi for lo, hi in CARD_RANGES)


def ean13_ok(digits):
    total = sum((ord(ch) - 48) * (3 if i % 2 else 1) for i, ch in enumerate(digits[:12]))
    return (10 - total % 10) % 10 == ord(digits[12]) - 48


def _mask(span):
    keep, out = 4, []
    for ch in reversed(span):
        if ch.isdigit():
            out.append(ch if keep > 0 else "*")
            keep -= 1
        else:
            out.append(ch)
    return "".join(reversed(out))


def _mask_run(run):
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(run)]
    digits = "".join(run[a:b] for a, b in groups).translate(_ASCII)
    offsets = [0]
    for a, b in groups:
        offsets.append(offsets[-1] + b - a)
    regions = []
    for i in range(len(groups)):
        j = bisect.bisect_right(offsets, offsets[i] + 19) - 2
        if j < i or not in_card_range(digits[offsets[i] : offsets[j + 1]]):
            continue
        if regions and i <= regions[-1][1]:
            regions[-1][1] = max(regions[-1][1], j)
        else:
            regions.append([i, j])
    pieces, pos = [], 0
    for first, last in regions:
        start, end = groups[first][0], groups[last][1]
        pieces.append(run[pos:start])
        pieces.append(_mask(run[start:end]))
        pos = end
    pieces.append(run[pos:])
    return "".join(pieces)


def redact(text):
    text = _DIGIT_RUN.sub(lambda m: _mask_run(m.group(0)), text)
    for pattern in SECRETS:
        text = pattern.sub(_replacer, text)
    return text


def _replacer(match):
    if "secret" in match.re.groupindex and match.group("secret") is not None:
        whole = match.group(0)
        start = match.start("secret") - match.start(0)
        end = match.end("secret") - match.start(0)
        return whole[:start] + "[REDACTED]" + whole[end:]
    return "[REDACTED]"


def decode(data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("gb18030", "replace")  # Chinese POS software often logs in GBK


def tail(path, limit):
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        start = max(0, size - limit)
        f.seek(start)
        data = f.read(limit)
    if start > 0:  # read from mid-file: the first line is cut, maybe inside a card number
        cuts = [c for c in (data.find(b"\n"), data.find(b"\r")) if c >= 0]
        data = data[min(cuts) + 1 :] if cuts else _CUT_DIGITS.sub(b"", data)
    return data, start > 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--source", required=True)
    p.add_argument("--max-kb", type=int, default=256)
    args = p.parse_args(argv)
    platform = "windows" if sys.platform == "win32" else "linux"
    if args.source == "pos":
        tops = json.loads(POS_LOG_DIRS) if POS_LOG_DIRS else []
        if not tops:
            print("the POS profile names no log files ([logs] paths)", file=sys.stderr)
            return 3
    elif args.source in SOURCES[platform]:
        top = SOURCES[platform][args.source]
        tops = [top if platform == "windows" else ROOT + top]
    else:
        print("no log source %s on %s" % (args.source, platform), file=sys.stderr)
        return 3
    entries = []
    for top in tops:
        try:
            entries += list(os.scandir(top))
        except OSError as exc:
            print("cannot read %s: %s" % (top, exc), file=sys.stderr)
            return 3
    files = []
    for entry in entries:
        st = entry.stat(follow_symlinks=False)
        if entry.is_symlink() or not stat.S_ISREG(st.st_mode):
            continue
        if entry.name.lower().endswith(SKIP_SUFFIXES) or entry.name.lower() in SKIP_NAMES:
            continue
        files.append((st.st_mtime, entry.name, entry.path, st.st_size))
    files.sort(reverse=True)
    budget = max(1, min(args.max_kb, 4096)) * 1024
    print(
        "# posassist log bundle: %s (%d files), redacted, at most %d KB"
        % (args.source, len(files), budget // 1024)
    )
    for mtime, name, path, size in files[:MAX_FILES]:
        if budget <= 0:
            print("# budget used up; %s and older files left out" % name)
            break
        data, cut = tail(path, budget)
        budget -= len(data)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime))
        print(
            "===== %s (%d bytes, modified %s%s) ====="
            % (name, size, stamp, ", tail only" if cut else "")
        )
        sys.stdout.write(redact(decode(data)))
        if data and not data.endswith(b"\n"):
            sys.stdout.write("\n")
    print("# end of bundle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
