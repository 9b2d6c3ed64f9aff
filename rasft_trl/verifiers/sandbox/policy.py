"""What a sandboxed program may read, the statuses a run ends with, and the result of a run.

Its part of the threat model (the whole is indexed in the package docstring, `rasft_trl.verifiers.sandbox`):

- **Filesystem reads** (`confine_reads=True`, the default). The program can read only its temporary
  directory, the interpreter's own files (every directory on the child's `sys.path`: the standard library,
  `lib-dynload`, site-packages), the system's shared libraries and loader cache, time zones, `/dev/null`,
  `/dev/zero`, `/dev/urandom` (`SYSTEM_READ_PATHS`) and the caller's `read_paths`. Where Landlock is
  available, the kernel enforces this for every route (`openat` with a `dir_fd`, symlinks, C code, `ctypes`):
  the files of other users of the machine, the trainer's checkpoints and datasets, credentials in `$HOME` or
  `/tmp`, other sandbox runs' folders and `/proc` are unreadable (`PermissionError`). In every case the audit
  hook also refuses `open`, `os.listdir` and `os.scandir` outside those places (`"sandbox_violation"`, even if
  the program catches the error); `O_PATH` opens, which read nothing, are allowed.

The kernel enforces this read policy in `isolation.py` (Landlock), the audit hook in `harness.py`.

Not covered:

- Reads without Landlock (Linux < 5.13, Landlock not in the kernel's `lsm=` list, or a container whose
  seccomp profile blocks its system calls; `details["isolation"]["landlock_reads"]` is then False): only the
  audit hook confines reads, and a program that gets past the in-process guards (`ctypes` memory tricks, see
  `harness.py`) can read every file the trainer's user can read and print it into the captured output. No mount
  namespace fallback for reads is built. On such machines run the sandbox as a user that cannot read your secrets
  (`user="nobody"` when training as root). With or without Landlock, metadata is not hidden: `os.stat`,
  `os.path.exists` and `os.readlink` work on any path (names, sizes and times of files outside can be probed,
  not their contents); and everything under the allowed directories is readable (a site-packages directory
  holding a secret, or a `read_paths` entry that is too broad).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SANDBOX_STATUSES", "SYSTEM_READ_PATHS", "SandboxResult"]

#: What a program may read besides its temporary directory and the directories on its `sys.path` (when
#: `confine_reads` is on): shared libraries and the loader's cache (extension modules load them), time
#: zones, and the harmless devices. Paths that do not exist on a machine are skipped.
SYSTEM_READ_PATHS = (
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
)

#: Every status a run can end with; all but `"passed"` are failures, `"test_error"` and
#: `"sandbox_error"` mean the run could not judge the program (bad tests / broken sandbox).
SANDBOX_STATUSES = (
    "passed",
    "assertion_failed",
    "runtime_error",
    "syntax_error",
    "timeout",
    "memory",
    "disk_quota",
    "early_exit",
    "missing_entry_point",
    "sandbox_violation",
    "tampered",
    "test_error",
    "sandbox_error",
)


@dataclass
class SandboxResult:
    """Outcome of one sandboxed run.

    Args:
        status: one of `SANDBOX_STATUSES`.
        stdout: captured standard output, at most `max_output_bytes` (decoded, invalid bytes replaced).
        stderr: captured standard error, same cap.
        returncode: exit status of the child (negative: killed by that signal), `None` if unknown.
        duration_s: wall-clock seconds from start to the end of collection.
        details: extra facts for auditing: failing test line, exception type and message, refused
            operations, tampering notes, isolation layers in effect, truncation flags.
    """

    status: str
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None
    duration_s: float = 0.0
    details: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "passed"
