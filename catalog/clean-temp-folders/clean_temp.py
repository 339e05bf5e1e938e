"""posassist catalog: free disk space in a bounded set of temp folders (Linux and Windows).

Only the folders in FOLDERS (picked by key, never by path), only regular files not modified for
``--days`` days, never through a symbolic link, never onto
another file system. On POSIX every step goes through directory file descriptors opened with
O_NOFOLLOW, so a folder swapped for a link mid-run cannot lead outside. Directories are kept.
Reports how many files and bytes were freed (or would be, with ``--dry-run true``).
Exit codes: 0 done; 1 some files could not be removed; 3 the folder is missing or a link.
"""

import argparse
import os
import stat
import sys
import time

# Test-only re-rooting of absolute paths; unreachable from a manifest (docs/scripts.md#test-root).
ROOT = os.environ.get("POSASSIST_TEST_ROOT", "")

FOLDERS = {
    "linux": {
        "tmp": "/tmp",
        "var_tmp": "/var/tmp",
        "pos_temp": "/opt/demo-pos/temp",
    },
    "windows": {
        "windows_temp": "%SystemRoot%\\Temp",
        "pos_temp": "C:\\POS\\temp",
    },
}
MAX_DEPTH = 32
SHOW = 50


class Tally:
    def __init__(self, limit):
        self.files = 0
        self.bytes = 0
        self.errors = 0
        self.kept_young = 0
        self.limit = limit

    def full(self):
        return self.files >= self.limit


def folder_path(platform, key):
    path = FOLDERS[platform].get(key)
    if path is None:
        return None
    if platform == "windows":
        return path.replace("%SystemRoot%", os.environ.get("SystemRoot", "C:\\Windows"))
    return ROOT + path


def old(st, cutoff):
    return st.st_mtime < cutoff


def remove(tally, shown, dry_run, size, label, unlink):
    if not dry_run:
        try:
            unlink()
        except OSError as exc:
            tally.errors += 1
            print("could not remove %s: %s" % (label, exc), file=sys.stderr)
            return
    tally.files += 1
    tally.bytes += size
    if shown[0] < SHOW:
        print(("would remove " if dry_run else "removed ") + label)
        shown[0] += 1


def clean_fd(dir_fd, label, dev, cutoff, dry_run, tally, shown, depth):
    """POSIX: walk by directory descriptors; nothing here follows a link."""
    if depth > MAX_DEPTH:
        return
    with os.scandir(dir_fd) as it:
        names = [entry.name for entry in it]
    for name in names:
        if tally.full():
            return
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue
        path = label + "/" + name
        if stat.S_ISDIR(st.st_mode):
            if st.st_dev != dev:
                continue  # a mount point: another file system
            try:
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            except OSError:
                continue
            try:
                clean_fd(fd, path, dev, cutoff, dry_run, tally, shown, depth + 1)
            finally:
                os.close(fd)
        elif stat.S_ISREG(st.st_mode):
            if not old(st, cutoff):
                tally.kept_young += 1
                continue
            remove(
                tally,
                shown,
                dry_run,
                st.st_size,
                path,
                lambda n=name: os.unlink(n, dir_fd=dir_fd),
            )


def clean_paths(top, cutoff, dry_run, tally, shown):
    """Windows: no dir_fd; lstat every entry and never descend into links or junctions."""
    stack = [(top, 0)]
    while stack and not tally.full():
        folder, depth = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.is_symlink() or getattr(st, "st_reparse_tag", 0):
                continue
            if stat.S_ISDIR(st.st_mode) and depth < MAX_DEPTH:
                stack.append((entry.path, depth + 1))
            elif stat.S_ISREG(st.st_mode):
                if not old(st, cutoff):
                    tally.kept_young += 1
                    continue
                remove(
                    tally, shown, dry_run, st.st_size, entry.path, lambda p=entry.path: os.unlink(p)
                )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--folder", required=True)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--max-files", type=int, default=20000)
    p.add_argument("--dry-run", choices=("true", "false"), default="false")
    args = p.parse_args(argv)
    platform = "windows" if sys.platform == "win32" else "linux"
    top = folder_path(platform, args.folder)
    if top is None:
        print("folder %s is not cleaned on %s" % (args.folder, platform), file=sys.stderr)
        return 3
    days = max(1, args.days)
    cutoff = time.time() - days * 86400
    dry_run = args.dry_run == "true"
    tally, shown = Tally(max(1, args.max_files)), [0]
    try:
        st = os.lstat(top)
    except OSError:
        print("folder %s does not exist" % top, file=sys.stderr)
        return 3
    if not stat.S_ISDIR(st.st_mode):
        print("folder %s is a link or not a folder: not cleaned" % top, file=sys.stderr)
        return 3
    print("cleaning %s: files older than %d days%s" % (top, days, " (dry run)" if dry_run else ""))
    if os.name == "posix":
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            clean_fd(fd, top, st.st_dev, cutoff, dry_run, tally, shown, 0)
        finally:
            os.close(fd)
    else:
        clean_paths(top, cutoff, dry_run, tally, shown)
    if tally.files > SHOW:
        print("... and %d more" % (tally.files - SHOW))
    print(
        "%s %d files, %.1f MB; kept %d newer files; %d errors%s"
        % (
            "would free" if dry_run else "freed",
            tally.files,
            tally.bytes / 1048576.0,
            tally.kept_young,
            tally.errors,
            "; stopped at --max-files" if tally.full() else "",
        )
    )
    print("FREED_BYTES %d" % tally.bytes)
    return 1 if tally.errors else 0


if __name__ == "__main__":
    sys.exit(main())
