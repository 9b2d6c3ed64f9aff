"""Removing a run's folder, whatever the program did to it, and the watchdog that cleans up after a dead trainer.

Its part of the threat model (the whole is indexed in the package docstring, `rasft_trl.verifiers.sandbox`):

- **Cleanup, also when the trainer dies.** Each program runs in a folder under one per-process root
  (`<tmp>/rasft-sandbox-<pid>-*/run-*`), removed after the run (with the tmpfs, its content vanishes with the
  child's mount namespace). The removal (`_remove_tree`) handles any tree a program can build: it is iterative
  and works relative to folder descriptors (any depth or path length), gives folders back their owner's
  permissions (`chmod 000`) and clears immutable / append-only flags; it never raises (a failure is logged and
  counted in `cleanup_failures`), and neither does `Sandbox.run` for anything the program does. Programs carry
  `PR_SET_PDEATHSIG` (Linux), so they are killed with the thread that started them; a watchdog process in its own
  session, connected to the trainer by a pipe, kills the process groups still running and removes the root, with
  the same removal, when the trainer exits in any way (SIGKILL included). `kill_running()` stops the running
  programs at once; the code verifier calls it when interrupted (Ctrl-C), instead of waiting for their timeouts.

`_remove_tree` is self-contained: the watchdog runs its source (`_reaper_code`: `inspect.getsource(_remove_tree)`
followed by `_REAPER_LOOP`, started as `python -I -S -c CODE ROOT`), so it imports what it needs inside and calls
nothing else of this package.
"""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import sys
import tempfile
import threading

logger = logging.getLogger(__name__)


def _remove_tree(root: str) -> list[str]:
    """Remove the folder `root` and everything in it, whatever a program did to it; returns what could not be removed
    (empty when all is gone). Never raises.

    Iterative (no recursion limit: `shutil.rmtree` raises `RecursionError` on 1,000 nested folders), relative to folder
    descriptors (no path-length limit, at most three descriptors open; ".." leads back up), and never follows a
    symbolic link. A folder that cannot be entered or emptied (`chmod 000`) gets its owner's permissions back, and an
    entry that cannot be removed gets its immutable / append-only flags cleared (which needs root), before one more
    try. Self-contained: the watchdog runs its source.
    """
    import errno
    import os
    import stat
    import struct

    errors: list[str] = []
    dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    word = struct.calcsize("l")
    get_flags, set_flags = 0x80006601 | word << 16, 0x40006602 | word << 16  # FS_IOC_GETFLAGS / FS_IOC_SETFLAGS
    sticky = 0x10 | 0x20  # FS_IMMUTABLE_FL | FS_APPEND_FL

    def failed(name, exc):
        if len(errors) < 20:
            errors.append(f"{name}: {exc}")

    def clear_flags(name, dir_fd):
        """Clear the immutable and append-only flags of a file or folder (root only; no-op elsewhere)."""
        try:
            import fcntl

            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                return
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                flags = struct.unpack("i", fcntl.ioctl(fd, get_flags, b"\0\0\0\0"))[0]
                if flags & sticky:
                    fcntl.ioctl(fd, set_flags, struct.pack("i", flags & ~sticky))
            finally:
                os.close(fd)
        except (OSError, ImportError, ValueError):
            pass

    def chmod_dir(name, dir_fd):
        """chmod 700 a folder without following a symbolic link put in its place."""
        try:
            handle = os.open(name, getattr(os, "O_PATH", os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            return
        try:
            if stat.S_ISDIR(os.fstat(handle).st_mode):
                os.chmod(f"/proc/self/fd/{handle}" if hasattr(os, "O_PATH") else handle, 0o700)
        except OSError:
            pass
        finally:
            os.close(handle)

    def remove(name, dir_fd, is_dir):
        for attempt in (0, 1):
            try:
                if is_dir:
                    os.rmdir(name, dir_fd=dir_fd)
                else:
                    os.unlink(name, dir_fd=dir_fd)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if attempt or exc.errno not in (errno.EPERM, errno.EACCES):
                    failed(name, exc)
                    return
            if dir_fd is not None:  # the folder holding it: writable, not append-only / immutable
                try:
                    os.fchmod(dir_fd, 0o700)
                except OSError:
                    pass
                clear_flags(".", dir_fd)
            clear_flags(name, dir_fd)

    def open_dir(name, dir_fd):
        try:
            return os.open(name, dir_flags, dir_fd=dir_fd)
        except PermissionError:
            chmod_dir(name, dir_fd)
            return os.open(name, dir_flags, dir_fd=dir_fd)

    def remove_files(fd):
        """Remove every entry of the folder `fd` that is not a folder; returns the names of its subfolders."""
        for attempt in (0, 1):
            try:
                with os.scandir(fd) as it:
                    entries = list(it)
                break
            except OSError as exc:
                if attempt or not isinstance(exc, PermissionError):
                    failed("<folder>", exc)
                    return []
                try:
                    os.fchmod(fd, 0o700)
                except OSError:
                    pass
        folders = []
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                folders.append(entry.name)
            else:
                remove(entry.name, fd, False)
        return folders

    try:
        fd = open_dir(root, None)
    except FileNotFoundError:
        return errors
    except OSError as exc:
        failed(root, exc)
        return errors
    names, pending = [], [remove_files(fd)]  # path from `root` to `fd`; subfolders still to remove, per level
    try:
        while pending:
            if pending[-1]:
                name = pending[-1].pop()
                try:
                    child = open_dir(name, fd)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    failed(name, exc)
                    continue
                os.close(fd)
                fd = child
                names.append(name)
                pending.append(remove_files(fd))
                continue
            pending.pop()
            if names:
                parent = os.open("..", dir_flags, dir_fd=fd)
                os.close(fd)
                fd = parent
                remove(names.pop(), fd, True)
    except OSError as exc:
        failed("/".join(names)[-200:], exc)
    finally:
        os.close(fd)
    remove(root, None, True)
    return errors


_REAPER_LOOP = """
import os, signal, sys, time
root, groups, buffer = sys.argv[1], set(), b""
while True:
    chunk = os.read(0, 4096)
    if not chunk:
        break
    buffer += chunk
    *lines, buffer = buffer.split(b"\\n")
    for line in lines:
        if line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
for _ in range(3):
    for group in list(groups):
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            groups.discard(group)
    _remove_tree(root)
    if not groups and not os.path.exists(root):
        break
    time.sleep(0.5)
"""
_REAPER_CODE: str | None = None


def _reaper_code() -> str:
    """The watchdog's program: `_remove_tree`, then the loop above (run as `python -I -S -c CODE ROOT`)."""
    global _REAPER_CODE
    if _REAPER_CODE is None:
        _REAPER_CODE = inspect.getsource(_remove_tree) + _REAPER_LOOP
    return _REAPER_CODE


class _Reaper:
    """Cleans up after a trainer that dies without cleaning up (SIGKILL, SIGTERM, a crash).

    One per process and temporary root: the sandbox's per-run folders live in `root`
    (`<tmp>/rasft-sandbox-<pid>-*`), and a small watchdog process, in its own session, holds the read end of a pipe
    whose only write end is in this process. The sandbox tells it which process groups are running (`+pgid` /
    `-pgid`). When this process ends in any way the pipe reaches end-of-file and the watchdog kills the groups still
    registered and removes `root`. Sandboxed programs also carry `PR_SET_PDEATHSIG` (Linux), so they die with the
    thread that started them even before the watchdog acts.
    """

    def __init__(self, tmp_root: str | None, shared: bool):
        self.pid = os.getpid()
        self.root = tempfile.mkdtemp(prefix=f"rasft-sandbox-{self.pid}-", dir=tmp_root)
        if shared:  # programs run as another user need to traverse the root to reach their own folder
            os.chmod(self.root, 0o711)
        read_end, self._write_end = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _reaper_code(), self.root], stdin=read_end,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True,
            )
        finally:
            os.close(read_end)
        self._lock = threading.Lock()
        self.failures = 0

    def _send(self, message: str) -> None:
        with self._lock:
            try:
                os.write(self._write_end, message.encode("ascii"))
            except OSError as exc:  # the watchdog is gone: cleanup after a crash is no longer guaranteed
                self.failures += 1
                if self.failures == 1:
                    logger.warning("Sandbox watchdog unreachable (%s): a killed trainer may leave programs behind", exc)

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}\n")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}\n")


_REAPERS: dict[tuple[str | None, bool], _Reaper] = {}
_REAPERS_LOCK = threading.Lock()


def _reaper(tmp_root: str | None, shared: bool) -> _Reaper:
    """This process's watchdog for `tmp_root` (started on first use; a forked child starts its own)."""
    key = (tmp_root, shared)
    with _REAPERS_LOCK:
        reaper = _REAPERS.get(key)
        if reaper is None or reaper.pid != os.getpid() or not os.path.isdir(reaper.root):
            reaper = _REAPERS[key] = _Reaper(tmp_root, shared)
        return reaper
