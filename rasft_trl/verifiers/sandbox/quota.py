"""The disk quota as the parent sees it: how much a running program stores in its folder.

Its part of the threat model (the whole is indexed in the package docstring, `rasft_trl.verifiers.sandbox`):

- **Disk quota** (`max_disk_mb`, `"disk_quota"`). Where the kernel lets the child make a mount namespace
  (as root, or in an unprivileged user namespace; `tmpfs=True`), its folder is a tmpfs of `max_disk_mb`
  (+ 4 KiB) and one inode per 4 KiB, mounted `nodev,nosuid,noexec` (`details["isolation"]["disk_tmpfs"]`):
  the kernel counts every byte, files deleted but held open included, and refuses more (`ENOSPC`); the
  harness reports `"disk_quota"` when the tmpfs is over `max_disk_mb` at the end, and the parent, which
  reads the tmpfs's usage every 0.1 s through `/proc/<pid>/root`, kills a program that sits over it.
  Elsewhere the parent measures, every 0.1 s, the folder (each entry at least 4 KiB) plus the regular
  files that the program keeps open after deleting them (`/proc/<pid>/fd`), and kills it above the quota:
  there a program can overshoot by what it writes in 0.1 s.

The child mounts the tmpfs (`isolation.py`) and reports `"disk_quota"` itself when it ends over the quota
(`harness.py`); the parent (`runner.py`) calls `_over_disk_quota` every `_DISK_CHECK_INTERVAL_S` while the program
runs and kills it above the quota.

Not covered:

- Without the tmpfs (no mount namespace allowed, or `tmpfs=False`), the quota is measured, not enforced:
  a program overshoots by what it writes in 0.1 s; deleted files kept only as memory mappings (no open
  descriptor) are not seen (bounded by `memory_mb`), nor are folders nested deeper than `PATH_MAX` or, when
  the trainer is not root, made unreadable by the program (`chmod 000`).
"""

from __future__ import annotations

import os
import stat

_DISK_CHECK_INTERVAL_S = 0.1


def _disk_usage(root: str, stop_above: int) -> int:
    """Bytes used under `root` (allocated blocks, at least 4 KiB per entry so that empty files count); stops counting
    once past `stop_above`."""
    total, stack = 0, [root]
    while stack and total <= stop_above:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += max(info.st_blocks * 512, 4096)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return total


def _open_deleted_bytes(pid: int) -> int:
    """Bytes held by regular files that process `pid` keeps open after deleting them (or never linked: `O_TMPFILE`,
    `memfd_create`): invisible to a scan of the folder, still on disk until closed."""
    total, fds = 0, f"/proc/{pid}/fd"
    try:
        names = os.listdir(fds)
    except OSError:
        return 0
    for name in names:
        try:
            info = os.stat(f"{fds}/{name}")
        except OSError:
            continue
        if info.st_nlink == 0 and stat.S_ISREG(info.st_mode):
            total += info.st_blocks * 512
    return total


def _tmpfs_full(path: str, quota: int) -> bool:
    """True once the run's tmpfs at `path` (sized `quota` + 4 KiB, `quota` / 4 KiB + 2 inodes) holds more than `quota`
    bytes or its last inode: the same test as the folder scan's (more than `quota`, at least 4 KiB per entry)."""
    info = os.statvfs(path)
    return (info.f_blocks - info.f_bfree) * info.f_frsize > quota or info.f_ffree == 0


def _over_disk_quota(pid: int, tmpdir: str, host_dev: int, quota: int) -> bool:
    """Whether run `pid` has more than `quota` bytes in its folder. Where the child mounted its size-limited tmpfs
    (seen through `/proc/<pid>/root`, which enters its mount namespace), the kernel's count of the tmpfs, deleted but
    open files included; otherwise a scan of the folder plus the files the program holds open after deleting them."""
    mounted = f"/proc/{pid}/root{tmpdir}"
    try:
        if os.stat(mounted).st_dev != host_dev:
            return _tmpfs_full(mounted, quota)
    except OSError:
        pass  # the child has exited, or /proc is not readable: scan
    return _disk_usage(tmpdir, quota) + _open_deleted_bytes(pid) > quota
