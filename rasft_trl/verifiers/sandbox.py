"""Run an untrusted Python program against trusted tests, in a separate, limited process.

Threat model
============

The programs come from a policy model during training (and from models under evaluation). We assume
they can be *wrong*, *destructive by accident* (`rm`-like code, fork loops, huge allocations, infinite
loops) and *reward-hacking* (exit early with status 0, redefine `AssertionError`, patch builtins,
`print` or `math.isclose`, install a trace function that skips the failing line, return an object
whose `__eq__` is always true). We do **not** defend against a program written against this harness
by someone who has read it: it runs in the same process as the harness, and a process cannot keep
secrets from code running inside it. The kernel-enforced layers still bound what such a program can
do to the host.

What is covered (each item has adversarial tests in `tests/verifiers/test_sandbox.py` and
`tests/verifiers/test_sandbox_round2.py`, run with and without the kernel layers, and as root also as
`user="nobody"`):

- **Separate process.** Every run is a fresh `python -I -S -B` interpreter started with `subprocess`
  (never a fork of the trainer, which has torch and CUDA state). It leads its own session and process
  group; the whole group is killed with `SIGKILL` when the run ends, whatever the outcome.
- **Time.** A wall-clock limit enforced by the parent (`timeout_s`) and a CPU-time limit
  (`RLIMIT_CPU`, `cpu_time_s`): infinite loops, sleeps and busy threads end as `"timeout"`.
- **Memory.** `RLIMIT_AS` (`memory_mb`): a 10 GB allocation fails inside the sandbox with
  `MemoryError` (`"memory"`); unbounded recursion ends the child only.
- **Processes.** Process creation (`os.fork`, `subprocess`, `os.system`, `os.exec*`, `posix_spawn`,
  `pty`, multiprocessing, `_posixsubprocess`, `ctypes`' `fork`) is refused by an audit hook (PEP 578;
  it cannot be removed from Python code), by the kernel's system-call filter (seccomp, `seccomp=True`:
  `fork`, `vfork`, `clone` without `CLONE_THREAD`, `execve`; threads stay allowed), Landlock (where
  available) denies `execve`, and the process group is killed at the end. `RLIMIT_NPROC` (`max_processes`
  more tasks than the user already has; exactly `max_processes` more inside a user namespace) is a further
  layer for non-root users only: **as root the kernel does not enforce `RLIMIT_NPROC`**, so there the
  guarantee rests on the audit hook, the filter and the group kill (threads are not limited), unless the
  sandbox drops to another user (`user="nobody"`).
- **Signals.** `os.kill`, `os.killpg`, `signal.pthread_kill` and pidfd signalling are refused by the
  hook; the filter lets `kill`/`tgkill`/`rt_*sigqueueinfo` reach the program's own pid only and refuses
  `tkill` and pidfds, and with Landlock ABI >= 6 the kernel also refuses signals to any process outside
  the sandbox: the program cannot kill the trainer.
- **Network and other sockets.** Socket creation (except `AF_UNIX`, for the socket pairs asyncio needs),
  `connect`, `bind`, `sendto` and name resolution are refused by the audit hook. The filter refuses, for
  every family, `socket()`, `connect`, `bind`, `listen`, `accept`, `sendmsg`/`sendmmsg` and `sendto` with an
  address: the only sockets are `socketpair()`s, which reach nothing but each other (a Unix socket file or
  an abstract socket outside cannot be reached, nor netlink, packet or any other family, even with the
  audit hook switched off); io_uring, whose operations bypass the filter, is refused. Where the kernel
  allows it, the child also enters a new, empty network namespace (`unshare(CLONE_NEWNET)`, inside an
  unprivileged user namespace when not root) and Landlock ABI >= 4 denies TCP `bind`/`connect`
  (ABI >= 6: abstract Unix sockets outside the sandbox).
- **Privileges.** A run as root (the default `user=None` when training as root) drops every capability
  (effective, permitted, inheritable, ambient and the bounding set) before the program starts: it is
  uid 0 in name only. It cannot make device nodes (`CAP_MKNOD`), immutable or append-only files
  (`CAP_LINUX_IMMUTABLE`), mounts, raw sockets, nor bypass file permissions (files of other users
  are judged by their mode bits) or signal other users' processes (`details["isolation"]
  ["capabilities_dropped"]`). The filter also refuses `mknod`/`mknodat` of character and block devices,
  the `ioctl`s that set inode flags (`FS_IOC_SETFLAGS`, `FS_IOC_FSSETXATTR`), `ptrace`,
  `process_vm_readv/writev`, `unshare`, `setns`, mounts, keyrings, `bpf`, `perf_event_open`, `userfaultfd`
  and `memfd_create`.
- **Filesystem writes.** The child runs in a fresh temporary directory, removed afterwards. Writes,
  deletions, renames, `chmod`, links and `mkdir` outside it (except `/dev/null`) are refused by the
  audit hook and, where Landlock is available (Linux >= 5.13), by the kernel, which also covers
  `dir_fd`, symlinks and any other route; Landlock refuses device nodes even inside it (`MAKE_CHAR`,
  `MAKE_BLOCK` are handled and granted nowhere). `RLIMIT_FSIZE` (`max_file_mb`) caps file sizes; `RLIMIT_CORE`
  is 0. Opening `/proc/self/*` (the harness's memory and descriptors) is refused.
- **Disk quota** (`max_disk_mb`, `"disk_quota"`). Where the kernel lets the child make a mount namespace
  (as root, or in an unprivileged user namespace; `tmpfs=True`), its folder is a tmpfs of `max_disk_mb`
  (+ 4 KiB) and one inode per 4 KiB, mounted `nodev,nosuid,noexec` (`details["isolation"]["disk_tmpfs"]`):
  the kernel counts every byte, files deleted but held open included, and refuses more (`ENOSPC`); the
  harness reports `"disk_quota"` when the tmpfs is over `max_disk_mb` at the end, and the parent, which
  reads the tmpfs's usage every 0.1 s through `/proc/<pid>/root`, kills a program that sits over it.
  Elsewhere the parent measures, every 0.1 s, the folder (each entry at least 4 KiB) plus the regular
  files that the program keeps open after deleting them (`/proc/<pid>/fd`), and kills it above the quota:
  there a program can overshoot by what it writes in 0.1 s.
- **Filesystem reads** (`confine_reads=True`, the default). The program can read only its temporary
  directory, the interpreter's own files (every directory on the child's `sys.path`: the standard library,
  `lib-dynload`, site-packages), the system's shared libraries and loader cache, time zones, `/dev/null`,
  `/dev/zero`, `/dev/urandom` (`SYSTEM_READ_PATHS`) and the caller's `read_paths`. Where Landlock is
  available, the kernel enforces this for every route (`openat` with a `dir_fd`, symlinks, C code, `ctypes`):
  the files of other users of the machine, the trainer's checkpoints and datasets, credentials in `$HOME` or
  `/tmp`, other sandbox runs' folders and `/proc` are unreadable (`PermissionError`). In every case the audit
  hook also refuses `open`, `os.listdir` and `os.scandir` outside those places (`"sandbox_violation"`, even if
  the program catches the error); `O_PATH` opens, which read nothing, are allowed.
- **Environment and I/O.** A scrubbed environment (`PATH`, `HOME`/`TMPDIR` = the temporary directory,
  locale, one BLAS thread), stdin is `/dev/null`, stdout/stderr are captured up to
  `max_output_bytes` each (the rest is drained and dropped), and the only other inherited file
  descriptor is the result channel.
- **Proof of completion.** A run passes only if the harness writes a per-run random nonce, followed by
  its verdict, to the result channel *after the last test ran*. The exit status is never trusted:
  `sys.exit(0)`, `os._exit(0)`, `raise SystemExit`, `atexit` hooks or a thread calling `os._exit`
  before the end are `"early_exit"`, and fake reports without the nonce are ignored. After its report
  the harness calls `os._exit`, so threads that outlive the tests neither keep the sandbox alive nor
  change the verdict.
- **Tampering.** Tests run in their own namespace with a copy of the builtins taken before the
  program ran; `assert` raises the interpreter's own `AssertionError` whatever the program rebinds.
  `sys.settrace`/`sys.setprofile` (also from threads), `gc` object walks, `sys._current_frames`, new
  audit hooks, `resource.setrlimit`, `ctypes` symbol look-ups and `from_address`, and loading a
  library the program wrote are refused. Changes the program made to the `builtins` module or to the
  modules the tests import (`math.isclose = ...`, a fake `sys.modules["math"]`) are detected before
  the tests run. With `strict_asserts=True`, a comparison or truth test in an `assert` between an
  object whose `__eq__`/`__lt__`/`__contains__`/`__bool__`/... is defined by the program and a
  built-in value (the "always-equal object" hack, also nested in lists) fails. Tampering ends as
  `"tampered"`; any refused operation as `"sandbox_violation"`, even if the program caught the error.

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

What is **not** covered:

- A program that introspects the harness (walks `sys._getframe().f_back`, or the frames of a caught
  exception's traceback, up to the harness and reads or changes its locals) can read the nonce and
  forge a pass. Frames cannot be hidden without breaking `collections.namedtuple`, `enum`, `logging`
  and `traceback`, which read them. `ctypes` stays importable (sympy needs it) and its pointers can
  read and write the process's memory; crafted bytecode (`types.CodeType`, `marshal`; asyncio needs
  `code.replace`) can corrupt the interpreter. Either can switch the in-process guards off (so can
  replacing the handlers in the harness's frame, `sys._getframe(1).f_locals["handlers"]`: the tests use
  this to show what the kernel layers hold on their own). The in-process guards are a tripwire against
  reward hacking, not a security boundary; the OS limits, the capabilities dropped, the system-call
  filter, the group kill, the namespaces, the tmpfs and Landlock are.
- Without Landlock: writes through `os.open(..., dir_fd=...)` or a `PathLike` that changes its value
  between calls are not seen by the audit hook, and `execve` is only stopped by the hook and the filter.
  Without Landlock ABI >= 6 and without the filter (an architecture other than x86-64 and arm64, or a kernel
  without seccomp: `details["isolation"]["seccomp"]`), signals are only stopped by the hook.
- A grandchild that calls `setsid()` leaves the process group and survives the group kill; it first
  needs a way around the process-creation guards (the hook and the filter; as non-root, `RLIMIT_NPROC`).
- Without the tmpfs (no mount namespace allowed, or `tmpfs=False`), the quota is measured, not enforced:
  a program overshoots by what it writes in 0.1 s; deleted files kept only as memory mappings (no open
  descriptor) are not seen (bounded by `memory_mb`), nor are folders nested deeper than `PATH_MAX` or, when
  the trainer is not root, made unreadable by the program (`chmod 000`).
- Reads without Landlock (Linux < 5.13, Landlock not in the kernel's `lsm=` list, or a container whose
  seccomp profile blocks its system calls; `details["isolation"]["landlock_reads"]` is then False): only the
  audit hook confines reads, and a program that gets past the in-process guards (`ctypes` memory tricks, see
  above) can read every file the trainer's user can read and print it into the captured output. No mount
  namespace fallback for reads is built. On such machines run the sandbox as a user that cannot read your secrets
  (`user="nobody"` when training as root). With or without Landlock, metadata is not hidden: `os.stat`,
  `os.path.exists` and `os.readlink` work on any path (names, sizes and times of files outside can be probed,
  not their contents); and everything under the allowed directories is readable (a site-packages directory
  holding a secret, or a `read_paths` entry that is too broad).
- Without the filter, a network namespace and Landlock ABI >= 4, a packet sent through a route the audit
  hook does not see (e.g. via `ctypes` memory tricks) can leave; without the filter, a Unix socket outside
  the folder can be reached that way (Landlock of this kernel generation has no right for connecting to a
  socket file). CPU and memory are limited per process, not per cgroup: bound the machine's load with
  `num_workers`.
- Comparisons laundered through arithmetic (`abs(x - y) < eps` with a program-defined `__sub__`),
  module attributes patched *while* the tests run, and the tests' own (trusted) code are not checked.
- No protection against kernel exploits, side channels, or timing-dependent flakiness (a correct but
  slow program on an overloaded machine times out).
"""

from __future__ import annotations

import ast
import inspect
import logging
import marshal
import math
import os
import secrets
import selectors
import signal
import site
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["SANDBOX_STATUSES", "SYSTEM_READ_PATHS", "Sandbox", "SandboxResult"]

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


class Sandbox:
    """Runs `program` followed by trusted `tests` in a fresh, limited Python process.

    See the module docstring for the threat model. All limits are per run.

    Args:
        timeout_s: wall-clock limit of a run, interpreter start-up included (seconds).
        cpu_time_s: CPU-time limit (`RLIMIT_CPU`, whole seconds); `None` means `ceil(timeout_s)`.
        memory_mb: address-space limit (`RLIMIT_AS`) in MiB.
        max_processes: how many more tasks (threads or processes) the run may create (`RLIMIT_NPROC`;
            the kernel counts all tasks of the user, or of the user namespace when the network namespace
            needed one; not enforced for root).
        max_file_mb: largest file the program may write (`RLIMIT_FSIZE`), MiB.
        max_disk_mb: total size of everything the program stores in its folder, files deleted but still open
            included, MiB (status `"disk_quota"`): the size of its tmpfs where one can be mounted (`tmpfs`), else
            measured every 0.1 s.
        max_open_files: `RLIMIT_NOFILE`.
        max_output_bytes: bytes of stdout and of stderr kept (each); the rest is read and dropped.
        strict_asserts: reject comparisons in `assert` statements between a program-defined object
            (one whose class defines `__eq__`, `__bool__`, ... in the program) and a built-in value.
        network_namespace: try to enter a new network namespace (best effort; falls back silently to
            the audit hook, the run's `details["isolation"]` says what was in effect).
        landlock: try to apply a Landlock policy (kernel-enforced: writes only in the temporary
            directory, reads only where `confine_reads` allows, no `execve`, no TCP, no signals outside);
            best effort like `network_namespace`.
        confine_reads: deny reads outside the temporary directory, the interpreter's own files (every
            directory on the child's `sys.path`), the system's shared libraries (`SYSTEM_READ_PATHS`) and
            `read_paths`: by Landlock where the kernel has it, and by the audit hook (a tripwire: status
            `"sandbox_violation"`) in any case. `False` lets the program read what the trainer's user can read.
        read_paths: further files or directories the program may read (e.g. data files its tests open).
        python_executable: interpreter for the child. `None` uses the trainer's interpreter started
            with `-S` (fast start-up) and its site-packages directories on `sys.path`; another
            interpreter is started without `-S` so that its own site-packages are found.
        module_name: name under which the program is importable by the tests (`from solution import f`).
        tmp_root: directory in which per-run temporary directories are created (default: the system's).
        env: extra environment variables for the child (after scrubbing).
        user: run the child as this user (name or uid), with that user's group and no supplementary
            groups; requires the trainer to run as root, and the interpreter to be readable by that user.
            Recommended when training as root: the program then has no root privileges at all, and
            `RLIMIT_NPROC` is enforced. `None` runs it as the trainer's user (as root: with every capability
            dropped, see the module docstring).
        seccomp: install a kernel system-call filter in the child (Linux x86-64 and arm64): no sockets but socket
            pairs, no process creation, signals only to itself, no device nodes, no immutable files, no
            namespaces or mounts, no `ptrace`, no io_uring (`_SECCOMP_REFUSED`, `_seccomp_filter`); best effort
            like `landlock`, reported in `details["isolation"]["seccomp"]`.
        tmpfs: mount a size-limited tmpfs (`max_disk_mb`, `nodev,nosuid,noexec`) on the run's folder, in a private
            mount namespace of the child (inside a user namespace when not root): the kernel then counts every
            byte the program stores, deleted-but-open files included, and the folder vanishes with the child.
            Best effort: where mounting is refused, the folder scan (plus open deleted files) measures the quota.
            The tmpfs lives in memory (or swap): up to `max_disk_mb` per running program, so with a large
            `max_disk_mb` and many workers prefer `tmpfs=False`.
    """

    def __init__(
        self,
        timeout_s: float = 10.0,
        cpu_time_s: int | None = None,
        memory_mb: int = 1024,
        max_processes: int = 32,
        max_file_mb: int = 16,
        max_disk_mb: int = 64,
        max_open_files: int = 256,
        max_output_bytes: int = 16384,
        strict_asserts: bool = True,
        network_namespace: bool = True,
        landlock: bool = True,
        confine_reads: bool = True,
        read_paths: Sequence[str] = (),
        python_executable: str | None = None,
        module_name: str = "solution",
        tmp_root: str | None = None,
        env: Mapping[str, str] | None = None,
        user: int | str | None = None,
        seccomp: bool = True,
        tmpfs: bool = True,
    ):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}.")
        if cpu_time_s is not None and cpu_time_s < 1:
            raise ValueError(f"cpu_time_s must be >= 1 second, got {cpu_time_s}.")
        for name, value, low in (
            ("memory_mb", memory_mb, 64),
            ("max_processes", max_processes, 0),
            ("max_file_mb", max_file_mb, 1),
            ("max_disk_mb", max_disk_mb, 1),
            ("max_open_files", max_open_files, 16),
            ("max_output_bytes", max_output_bytes, 0),
        ):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}.")
        if not module_name.isidentifier():
            raise ValueError(f"module_name must be an identifier, got {module_name!r}.")
        self.timeout_s = float(timeout_s)
        self.cpu_time_s = int(cpu_time_s) if cpu_time_s is not None else max(1, math.ceil(timeout_s))
        self.memory_mb = int(memory_mb)
        self.max_processes = int(max_processes)
        self.max_file_mb = int(max_file_mb)
        self.max_disk_mb = int(max_disk_mb)
        self.max_open_files = int(max_open_files)
        self.max_output_bytes = int(max_output_bytes)
        self.strict_asserts = bool(strict_asserts)
        self.network_namespace = bool(network_namespace)
        self.landlock = bool(landlock)
        self.confine_reads = bool(confine_reads)
        self.seccomp = bool(seccomp)
        self.tmpfs = bool(tmpfs)
        #: a run as root drops every capability (set to False only by tests that show the other layers alone)
        self._drop_capabilities = True
        self.read_paths = [os.path.abspath(os.fspath(path)) for path in read_paths]
        self.module_name = module_name
        self.tmp_root = tmp_root
        self.extra_env = dict(env or {})
        self.user: tuple[int, int] | None = None
        if user is not None:
            import pwd

            try:
                entry = pwd.getpwnam(user) if isinstance(user, str) else pwd.getpwuid(int(user))
            except KeyError as exc:
                raise ValueError(f"Unknown user {user!r} for the sandbox.") from exc
            if os.geteuid() != 0:
                raise ValueError(f"user={user!r} needs the trainer to run as root (euid {os.geteuid()}).")
            self.user = (entry.pw_uid, entry.pw_gid)
        #: temporary directories that could not be removed (each one is also logged as a warning)
        self.cleanup_failures = 0
        self._live: set[subprocess.Popen] = set()
        self._live_lock = threading.Lock()
        if python_executable is None:
            self.python_executable = sys.executable
            self._argv_flags = ["-I", "-S", "-B"]
            self._site_dirs = _site_packages_dirs()
            self._same_interpreter = True
        else:
            self.python_executable = python_executable
            self._argv_flags = ["-I", "-B"]
            self._site_dirs = []
            self._same_interpreter = False
        if not self.python_executable:
            raise ValueError("No Python interpreter: sys.executable is empty; pass python_executable.")

    # ------------------------------------------------------------------ public API

    def run(self, program: str, tests: str = "", *, entry_point: str | None = None) -> SandboxResult:
        """Run `program`, then `tests` (with `check(<entry_point>)` if the tests define `check`).

        Args:
            program: untrusted Python source.
            tests: trusted Python source: top-level asserts, pytest-style `test_*` functions / `Test*`
                classes (called in order; `@pytest.mark.parametrize` is expanded, other fixtures are a
                `"test_error"`), and/or a HumanEval `check(candidate)` function.
            entry_point: name of the program's function passed to `check`, if any.

        Returns:
            A [`SandboxResult`]; never raises for anything the program does.
        """
        start = time.monotonic()
        if entry_point is not None and not entry_point.isidentifier():
            return SandboxResult("test_error", details={"message": f"invalid entry_point {entry_point!r}"})
        try:
            prepared = self._prepare_tests(tests)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            return SandboxResult("test_error", details={"message": f"the tests do not parse: {exc}"})
        tmpdir = tempfile.mkdtemp(prefix="run-", dir=_reaper(self.tmp_root, self.user is not None).root)
        if self.user is not None:
            os.chown(tmpdir, *self.user)
        try:
            return self._run_in(os.path.realpath(tmpdir), program, prepared, entry_point, start)
        finally:
            self._cleanup(tmpdir)

    def _prepare_tests(self, tests: str) -> dict:
        """Analyse and compile the trusted tests here, so that the child need not import `ast`."""
        tree = ast.parse(tests, "<tests>")
        meta = {"functions": [], "classes": [], "modules": [], "defines_check": False, "calls_check": False}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                if node.name.startswith("test"):
                    meta["functions"].append(node.name)
                meta["defines_check"] = meta["defines_check"] or node.name == "check"
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                meta["classes"].append(node.name)
            elif (
                isinstance(node, ast.Expr)
                and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name)
            ):
                meta["calls_check"] = meta["calls_check"] or node.value.func.id == "check"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                meta["modules"] += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                meta["modules"].append(node.module)
        code = None
        if self._same_interpreter:  # code objects are specific to one Python version; else the child compiles
            tree = _rewrite_asserts(tree) if self.strict_asserts else tree
            code = marshal.dumps(compile(tree, "<tests>", "exec", dont_inherit=True))
        return {"tests_meta": meta, "tests_code": code, "tests_source": tests}

    # ------------------------------------------------------------------ internals

    def _env(self, tmpdir: str) -> dict:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": tmpdir,
            "TMPDIR": tmpdir,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "MALLOC_ARENA_MAX": "2",  # each thread's malloc arena reserves 64 MiB of the RLIMIT_AS budget
        }
        env.update(self.extra_env)
        return env

    def _run_in(
        self, tmpdir: str, program: str, prepared: dict, entry_point: str | None, start: float
    ) -> SandboxResult:
        nonce = secrets.token_hex(16)
        job = {
            **prepared,
            "nonce": nonce,
            "program": program,
            "entry_point": entry_point,
            "module_name": self.module_name,
            "tmpdir": tmpdir,
            "site_dirs": self._site_dirs,
            "cpu_time_s": self.cpu_time_s,
            "memory_bytes": self.memory_mb * 2**20,
            "max_processes": self.max_processes,
            "max_file_bytes": self.max_file_mb * 2**20,
            "max_disk_bytes": self.max_disk_mb * 2**20,
            "max_open_files": self.max_open_files,
            "strict_asserts": self.strict_asserts,
            "network_namespace": self.network_namespace,
            "landlock": self.landlock,
            "confine_reads": self.confine_reads,
            "read_paths": [*self.read_paths, *SYSTEM_READ_PATHS],
            "tmpfs": self.tmpfs,
            "drop_capabilities": self._drop_capabilities,
        }
        chan_r, chan_w = os.pipe()
        job["channel_fd"] = chan_w
        job["harness"] = _harness_code() if self._same_interpreter else _harness_source()
        argv = [self.python_executable, *self._argv_flags, "-c", _BOOTSTRAP]
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=tmpdir,
                env=self._env(tmpdir),
                close_fds=True,
                pass_fds=(chan_w,),
                start_new_session=True,
                **({"user": self.user[0], "group": self.user[1], "extra_groups": []} if self.user else {}),
            )
        except OSError as exc:
            os.close(chan_r)
            os.close(chan_w)
            logger.warning("Sandbox could not start %s: %s", self.python_executable, exc)
            return SandboxResult("sandbox_error", duration_s=time.monotonic() - start, details={"message": str(exc)})
        os.close(chan_w)
        # Built for this child's pid (signals are allowed to itself only); the child reads it with the job.
        linux = sys.platform.startswith("linux")
        job["seccomp_filter"] = _seccomp_filter(proc.pid) if self.seccomp and linux else None
        reaper = _reaper(self.tmp_root, self.user is not None)
        reaper.watch(proc.pid)
        with self._live_lock:
            self._live.add(proc)
        try:
            out = self._collect(proc, chan_r, nonce.encode("ascii"), marshal.dumps(job, 4), start, tmpdir)
        finally:
            os.close(chan_r)
            self._kill_group(proc)
            reaper.forget(proc.pid)
            with self._live_lock:
                self._live.discard(proc)
        out["returncode"] = proc.returncode
        out["pid"] = proc.pid
        return self._interpret(out, start)

    def _collect(
        self, proc: subprocess.Popen, chan_r: int, nonce: bytes, job: bytes, start: float, tmpdir: str
    ) -> dict:
        """Send the job; read stdout/stderr/channel until the report arrives, the child exits, or the deadline.

        Everything goes through one selector, so that a child that never reads its job (or never stops
        writing) cannot block the parent past the deadline.
        """
        deadline = start + self.timeout_s
        cap = self.max_output_bytes
        streams = {"stdout": bytearray(), "stderr": bytearray(), "chan": bytearray()}
        seen = {"stdout": 0, "stderr": 0, "chan": 0}
        chan_cap = 1 << 16
        record = None
        started = False
        timed_out = False
        over_quota = False
        quota, next_disk_check = self.max_disk_mb * 2**20, 0.0
        host_dev = os.stat(tmpdir).st_dev  # the folder's filesystem; the child's tmpfs, once mounted, is another
        sel = selectors.DefaultSelector()
        for fd, name in ((proc.stdout.fileno(), "stdout"), (proc.stderr.fileno(), "stderr"), (chan_r, "chan")):
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ, name)
        stdin_fd = proc.stdin.fileno()
        os.set_blocking(stdin_fd, False)
        sel.register(stdin_fd, selectors.EVENT_WRITE, "stdin")
        job_view, sent = memoryview(job), 0

        def write_ready() -> bool:
            """Send more of the job; returns False once it is all sent (or the child is gone)."""
            nonlocal sent
            try:
                sent += os.write(stdin_fd, job_view[sent : sent + (1 << 16)])
            except BlockingIOError:
                return True
            except BrokenPipeError:
                return False  # the child died before reading its job: reported as sandbox_error
            return sent < len(job)

        def read_ready(fd: int, name: str) -> bool:
            """Read what is available; returns False at end of file."""
            nonlocal record, started
            for _ in range(64):  # bounded, so that a chatty program cannot starve the deadline check
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    return True
                if not chunk:
                    return False
                seen[name] += len(chunk)
                buf = streams[name]
                if name == "chan":
                    started = started or (seen["chan"] == len(chunk) and chunk[:1] == b"S")
                    buf += chunk
                    if record is None:
                        record = _find_record(buf, nonce)
                    if len(buf) > chan_cap and record is None:  # flood: keep only a tail that may hold a record
                        del buf[: len(buf) - 8192]
                elif len(buf) < cap:
                    buf += chunk[: cap - len(buf)]
            return True

        try:
            while sel.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                now = time.monotonic()
                if now >= next_disk_check:
                    next_disk_check = now + _DISK_CHECK_INTERVAL_S
                    if _over_disk_quota(proc.pid, tmpdir, host_dev, quota):
                        over_quota = True
                        break
                for key, _ in sel.select(timeout=min(remaining, _DISK_CHECK_INTERVAL_S)):
                    if key.data == "stdin":
                        if not write_ready():
                            sel.unregister(stdin_fd)
                            proc.stdin.close()
                    elif not read_ready(key.fd, key.data):
                        sel.unregister(key.fd)
                if record is not None:
                    break  # the harness os._exit()s right after writing it
            if not timed_out and not over_quota:
                # All pipes closed (or record received): wait for the exit without reaping, so that the
                # process group id cannot be reused before _kill_group runs.
                while not _has_exited(proc.pid):
                    if time.monotonic() >= deadline:
                        timed_out = record is None
                        break
                    time.sleep(0.002)
            self._kill_group(proc)
            for key in list(sel.get_map().values()):  # drain what the child wrote before dying
                if key.data != "stdin":
                    read_ready(key.fd, key.data)
        finally:
            sel.close()
            if not proc.stdin.closed:
                proc.stdin.close()
        return {
            "record": record,
            "started": started,
            "timed_out": timed_out and record is None,
            "over_quota": over_quota and record is None,
            "stdout": bytes(streams["stdout"]),
            "stderr": bytes(streams["stderr"]),
            "truncated": {k: seen[k] > cap for k in ("stdout", "stderr")},
        }

    def _interpret(self, out: dict, start: float) -> SandboxResult:
        details: dict[str, Any] = {"pid": out["pid"]}
        if any(out["truncated"].values()):
            details["output_truncated"] = out["truncated"]
        returncode = out["returncode"]
        record = out["record"]
        if record is not None:
            status, info = record
            details.update(info)
            if status not in SANDBOX_STATUSES:
                status, details["message"] = "sandbox_error", f"unknown status {status!r}"
        elif out["over_quota"]:
            status = "disk_quota"
            details["limit_mb"] = self.max_disk_mb
        elif out["timed_out"]:
            status = "timeout"
            details["limit"] = "wall_clock"
        elif not out["started"]:
            status = "sandbox_error"
            details["message"] = "the harness did not start; see stderr"
        elif returncode is not None and returncode < 0 and -returncode in (signal.SIGXCPU, signal.SIGKILL):
            status = "timeout"
            details["limit"] = "cpu_time"
        elif b"MemoryError" in out["stderr"]:
            status = "memory"
        elif returncode is not None and returncode < 0:
            status = "runtime_error"
            details["signal"] = signal.Signals(-returncode).name if -returncode in _SIGNALS else -returncode
        else:
            # The interpreter ended without the harness's report: sys.exit/os._exit/atexit tricks.
            status = "early_exit"
        if status == "sandbox_error":
            logger.warning("Sandbox error: %s; stderr: %s", details.get("message"), out["stderr"][-2000:])
        return SandboxResult(
            status=status,
            stdout=out["stdout"].decode("utf-8", "replace"),
            stderr=out["stderr"].decode("utf-8", "replace"),
            returncode=returncode,
            duration_s=time.monotonic() - start,
            details=details,
        )

    def kill_running(self) -> int:
        """Kill every program this sandbox is running now (their process groups); returns how many. Used when the
        caller is interrupted (Ctrl-C), so that it need not wait for the programs' timeouts."""
        with self._live_lock:
            running = list(self._live)
        for proc in running:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # already gone
        return len(running)

    @staticmethod
    def _kill_group(proc: subprocess.Popen) -> None:
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # the group is already empty
            except PermissionError as exc:  # cannot happen for our own child; make it visible if it does
                logger.warning("Sandbox could not kill process group %d: %s", proc.pid, exc)
            proc.wait()

    def _cleanup(self, tmpdir: str) -> None:
        """Remove a run's folder; never raises (a failure is counted in `cleanup_failures` and logged)."""
        try:
            errors = _remove_tree(tmpdir)
        except Exception as exc:  # a bug in the remover must not end the training run
            errors = [f"{type(exc).__name__}: {exc}"]
        if errors:
            with self._live_lock:
                self.cleanup_failures += 1
            logger.warning("Sandbox could not remove its temporary directory %s: %s", tmpdir, "; ".join(errors[:3]))


_DISK_CHECK_INTERVAL_S = 0.1


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


_SIGNALS = {s.value for s in signal.Signals}


# System calls the child's seccomp filter looks at, per architecture: (AUDIT_ARCH_*, {name: number}).
_SECCOMP_SYSCALLS = {
    "x86_64": (0xC000003E, {
        "ioctl": 16, "socket": 41, "connect": 42, "accept": 43, "sendto": 44, "sendmsg": 46, "bind": 49, "listen": 50,
        "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "kill": 62, "ptrace": 101, "rt_sigqueueinfo": 129,
        "mknod": 133, "pivot_root": 155, "chroot": 161, "mount": 165, "umount2": 166, "tkill": 200, "tgkill": 234,
        "add_key": 248, "request_key": 249, "keyctl": 250, "mknodat": 259, "unshare": 272, "accept4": 288,
        "rt_tgsigqueueinfo": 297, "perf_event_open": 298, "sendmmsg": 307, "setns": 308, "process_vm_readv": 310,
        "process_vm_writev": 311, "memfd_create": 319, "bpf": 321, "execveat": 322, "userfaultfd": 323,
        "pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "pidfd_open": 434, "clone3": 435, "pidfd_getfd": 438, "mount_setattr": 442,
    }),
    "aarch64": (0xC00000B7, {
        "ioctl": 29, "mknodat": 33, "umount2": 39, "mount": 40, "pivot_root": 41, "chroot": 51, "unshare": 97,
        "ptrace": 117, "kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138, "socket": 198, "bind": 200,
        "listen": 201, "accept": 202, "connect": 203, "sendto": 206, "sendmsg": 211, "add_key": 217,
        "request_key": 218, "keyctl": 219, "clone": 220, "execve": 221, "rt_tgsigqueueinfo": 240,
        "perf_event_open": 241, "accept4": 242, "setns": 268, "sendmmsg": 269, "process_vm_readv": 270,
        "process_vm_writev": 271, "memfd_create": 279, "bpf": 280, "execveat": 281, "userfaultfd": 282,
        "pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "pidfd_open": 434, "clone3": 435, "pidfd_getfd": 438, "mount_setattr": 442,
    }),
}

#: Refused outright (`EPERM`): sockets (`socket`, `connect`, `bind`, ...: `socketpair`, which asyncio needs, stays),
#: process creation and `execve`, access to other processes (`ptrace`, `process_vm_*`, pidfds), namespaces and mounts,
#: kernel keyrings, io_uring (whose operations bypass this filter), `memfd_create` (memory outside the disk quota),
#: `bpf`, `perf_event_open`, `userfaultfd`.
_SECCOMP_REFUSED = (
    "socket", "connect", "bind", "listen", "accept", "accept4", "sendmsg", "sendmmsg", "fork", "vfork", "execve",
    "execveat", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_getfd", "pidfd_send_signal",
    "tkill", "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree", "move_mount", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "add_key", "request_key", "keyctl", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "memfd_create", "bpf", "perf_event_open", "userfaultfd",
)  # fmt: skip


_SECCOMP_TEMPLATES: dict[str, tuple[bytes, list[int]] | None] = {}


def _seccomp_filter(pid: int, machine: str | None = None) -> bytes | None:
    """The seccomp program (classic BPF, `struct sock_filter[]`) that the child `pid` installs on itself, or None on
    an architecture without a table above. Built once per architecture; each run only writes its pid in.

    Besides `_SECCOMP_REFUSED`: `clone` only for threads (`CLONE_THREAD`, no new namespace; `clone3` answers `ENOSYS`,
    so that the C library falls back to `clone`, whose flags a filter can read); signals (`kill`, `tgkill`,
    `rt_*sigqueueinfo`) only to the program itself; `sendto` only without an address (on a connected socket pair);
    `mknod`/`mknodat` not for character or block devices; `ioctl` not to set inode flags (`FS_IOC_SETFLAGS`,
    `FS_IOC_FSSETXATTR`: immutable, append-only). Another architecture's system calls (x32, i386) are refused.
    """
    import struct

    machine = machine or os.uname().machine
    if machine not in _SECCOMP_TEMPLATES:
        _SECCOMP_TEMPLATES[machine] = _seccomp_template(machine)
    template = _SECCOMP_TEMPLATES[machine]
    if template is None:
        return None
    code, pid_offsets = template
    program = bytearray(code)
    for offset in pid_offsets:
        struct.pack_into("=I", program, offset, pid & 0xFFFFFFFF)
    return bytes(program)


def _seccomp_template(machine: str) -> tuple[bytes, list[int]] | None:
    """`_seccomp_filter`'s program for `machine`, and the byte offsets where the pid goes."""
    import struct

    arch, numbers = _SECCOMP_SYSCALLS.get(machine, (None, None))
    if arch is None:
        return None
    pid = None  # a placeholder, replaced by 0 here and by the child's pid in _seccomp_filter
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38  # SECCOMP_RET_ALLOW / _ERRNO | errno
    ld, jeq, jge, jset, and_, ret = 0x20, 0x15, 0x35, 0x45, 0x54, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, ..., ALU|AND, RET

    def arg(i, high=False):  # offset of args[i] in struct seccomp_data (little-endian halves)
        return 16 + 8 * i + (4 if high else 0)

    def one_of(i, values):  # refuse when the low 32 bits of args[i] are one of `values`
        return [(ld, 0, 0, arg(i))] + [(jeq, len(values) - k, 0, v) for k, v in enumerate(values)] + [
            (ret, 0, 0, allow), (ret, 0, 0, eperm)]

    own = [(ld, 0, 0, arg(0)), (jeq, 0, 1, pid), (ret, 0, 0, allow), (ret, 0, 0, eperm)]
    device = [(ld, 0, 0, 0), (and_, 0, 0, 0o170000), (jeq, 1, 0, 0o020000), (jeq, 0, 1, 0o060000),
              (ret, 0, 0, eperm), (ret, 0, 0, allow)]
    clone_new = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
    bodies = {name: [(ret, 0, 0, eperm)] for name in _SECCOMP_REFUSED}
    bodies.update({
        "clone3": [(ret, 0, 0, enosys)],
        "clone": [(ld, 0, 0, arg(0)), (jset, 2, 0, clone_new), (jset, 0, 1, 0x10000), (ret, 0, 0, allow),
                  (ret, 0, 0, eperm)],
        "kill": own, "tgkill": own, "rt_sigqueueinfo": own, "rt_tgsigqueueinfo": own,
        "sendto": [(ld, 0, 0, arg(4)), (jeq, 0, 3, 0), (ld, 0, 0, arg(4, True)), (jeq, 0, 1, 0), (ret, 0, 0, allow),
                   (ret, 0, 0, eperm)],
        "mknod": [(ld, 0, 0, arg(1))] + device[1:],
        "mknodat": [(ld, 0, 0, arg(2))] + device[1:],
        "ioctl": one_of(1, (0x40086602, 0x40046602, 0x401C5820)),  # FS_IOC_SETFLAGS, FS_IOC32_SETFLAGS, FSSETXATTR
    })  # fmt: skip
    program = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, eperm), (ld, 0, 0, 0)]
    if arch == 0xC000003E:  # x32 system calls (number | 0x40000000) share x86-64's arch value
        program += [(jge, 0, 1, 0x40000000), (ret, 0, 0, eperm)]
    for name, body in bodies.items():
        if name in numbers:  # each body ends in a return, so the number stays loaded for the next test
            program += [(jeq, 0, len(body), numbers[name]), *body]
    program.append((ret, 0, 0, allow))
    pid_offsets = [8 * i + 4 for i, instruction in enumerate(program) if instruction[3] is None]
    code = b"".join(struct.pack("=HBBI", *instruction[:3], instruction[3] or 0) for instruction in program)
    return code, pid_offsets



def _rewrite_asserts(tree):
    """`assert t` -> `assert __rasft_truth__(t')`, where t' has `a <op> b` -> `__rasft_cmp__("<Op>", a, b)`.

    The helpers (defined by the harness) refuse comparisons between a program-defined object and a
    built-in value. Chained comparisons and `is` / `is not` (which cannot be overloaded) are left alone.
    Self-contained: it is also shipped to the child when the child runs another interpreter.
    """
    import ast

    class WrapCompares(ast.NodeTransformer):
        def visit_Compare(self, node):
            self.generic_visit(node)
            if len(node.ops) != 1 or isinstance(node.ops[0], (ast.Is, ast.IsNot)):
                return node
            op = ast.Constant(type(node.ops[0]).__name__)
            return ast.Call(ast.Name("__rasft_cmp__", ast.Load()), [op, node.left, node.comparators[0]], [])

    class StrictAsserts(ast.NodeTransformer):
        def visit_Assert(self, node):
            node.test = ast.Call(ast.Name("__rasft_truth__", ast.Load()), [WrapCompares().visit(node.test)], [])
            return node

    return ast.fix_missing_locations(StrictAsserts().visit(tree))


def _has_exited(pid: int) -> bool:
    """True once `pid` has exited; does not reap it (the zombie keeps its process-group id reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _find_record(buf: bytearray, nonce: bytes):
    """Parse `nonce + b" " + repr((status, info)) + b"\\n"` out of the channel, or None if incomplete."""
    at = buf.find(nonce + b" ")
    if at < 0:
        return None
    end = buf.find(b"\n", at)
    if end < 0:
        return None
    try:
        value = ast.literal_eval(buf[at + len(nonce) + 1 : end].decode("utf-8", "replace"))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return ("sandbox_error", {"message": "malformed report"})
    if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], dict)):
        return ("sandbox_error", {"message": "malformed report"})
    return value


def _site_packages_dirs() -> list[str]:
    dirs = []
    for d in [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]:
        if d not in dirs and os.path.isdir(d):
            dirs.append(d)
    return dirs


# The child runs `_BOOTSTRAP`: it reads the job (marshalled data) from stdin, then runs the harness, which
# comes as a marshalled code object (same interpreter; compiling the harness would cost ~15 ms per run) or
# as source. The harness gets a private copy of the builtins, so that a program patching the `builtins`
# module cannot change what the harness calls. Nothing stays in `__main__`'s globals but `_b`.
_BOOTSTRAP = """\
def _b():
    import builtins, marshal, os, sys
    if sys.platform.startswith("linux"):  # die with the trainer (PR_SET_PDEATHSIG = 1, SIGKILL = 9)
        import ctypes
        ctypes.CDLL(None).prctl(1, 9)
        if os.getppid() == 1:  # the trainer died before prctl
            os._exit(1)
    chunks = []
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    job = marshal.loads(b"".join(chunks))
    del chunks
    harness = job.pop("harness")
    code = marshal.loads(harness) if isinstance(harness, bytes) else compile(harness, "<rasft-harness>", "exec")
    namespace = {"__builtins__": dict(builtins.__dict__), "__name__": "__rasft_harness__"}
    exec(code, namespace)
    namespace.pop("_harness_main")(job)
_b()
"""

_HARNESS_SOURCE: str | None = None
_HARNESS_CODE: bytes | None = None


def _harness_source() -> str:
    global _HARNESS_SOURCE
    if _HARNESS_SOURCE is None:
        _HARNESS_SOURCE = inspect.getsource(_rewrite_asserts) + "\n\n" + inspect.getsource(_harness_main)
    return _HARNESS_SOURCE


def _harness_code() -> bytes:
    global _HARNESS_CODE
    if _HARNESS_CODE is None:
        _HARNESS_CODE = marshal.dumps(compile(_harness_source(), "<rasft-harness>", "exec", dont_inherit=True))
    return _HARNESS_CODE


# --------------------------------------------------------------------------------------------------
# Everything below runs in the child, before and around the untrusted program. It must be
# self-contained (it is shipped as source) and must not call anything the program can patch after the
# program started: module functions are bound to locals first, builtins come from a private copy.
# --------------------------------------------------------------------------------------------------


def _harness_main(job):  # pragma: no cover - executed in the sandboxed child
    import _functools
    import builtins
    import marshal
    import os
    import resource
    import sys

    # ---- 0. stdin (from which the bootstrap read the job) becomes /dev/null
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.close(null_fd)
    sys.argv = [""]
    nonce = job.pop("nonce").encode("ascii")
    chan = job["channel_fd"]
    tmpdir = job["tmpdir"]
    module_name = job["module_name"]
    entry_point = job["entry_point"]
    sys.path.extend(job["site_dirs"])

    # Everything used after the program starts is bound here.
    write, exit_now, fstat, getcwd, readlink, fspath = os.write, os._exit, os.fstat, os.getcwd, os.readlink, os.fspath
    statvfs = os.statvfs
    gettrace, getprofile, settrace, setprofile = sys.gettrace, sys.getprofile, sys.settrace, sys.setprofile
    exact_str = str.__str__
    OrigAssertionError = AssertionError
    stdout, stderr = sys.stdout, sys.stderr
    chan_stat = fstat(chan)
    chan_id = (chan_stat.st_dev, chan_stat.st_ino)
    violations = []
    tamper_notes = []
    isolation = {
        "landlock_abi": 0,
        "landlock_reads": False,
        "network_namespace": False,
        "disk_tmpfs": False,
        "capabilities_dropped": False,
        "seccomp": False,
        "nproc_limit": None,
    }

    def text(value, limit=1500):
        if not isinstance(value, str):
            return "<not a string>"
        value = exact_str(value)
        return value if len(value) <= limit else value[:limit] + "...[truncated]"

    def report(status, info):
        """Write nonce + verdict to the channel and end the process at once (threads die with it)."""
        for stream in (stdout, stderr):
            try:
                stream.flush()
            except BaseException:  # a closed or broken pipe must not prevent the report
                write(2, b"rasft-harness: could not flush an output stream\n")
        info["isolation"] = isolation
        if violations:
            info["violations"] = violations[:20]
        if tamper_notes:
            info["tampering"] = tamper_notes[:20]
        body = repr((status, info)).encode("utf-8", "backslashreplace")
        if len(body) > 3500:  # pipe writes up to PIPE_BUF (4096) bytes are atomic
            body = repr((status, {"isolation": isolation, "message": "report truncated"})).encode()
        try:
            st = fstat(chan)
            if (st.st_dev, st.st_ino) == chan_id:  # the program may have closed and reused the fd
                write(chan, nonce + b" " + body + b"\n")
        finally:
            exit_now(0)

    # ---- 1. resource limits
    def limit(res, soft, hard=None):
        hard = soft if hard is None else hard
        cur_hard = resource.getrlimit(res)[1]
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        resource.setrlimit(res, (soft, hard))

    limit(resource.RLIMIT_CPU, job["cpu_time_s"], job["cpu_time_s"] + 1)
    limit(resource.RLIMIT_AS, job["memory_bytes"])
    limit(resource.RLIMIT_FSIZE, job["max_file_bytes"])
    limit(resource.RLIMIT_CORE, 0)
    limit(resource.RLIMIT_NOFILE, job["max_open_files"])
    linux = sys.platform.startswith("linux")
    if linux and os.getuid() != 0:  # RLIMIT_NPROC counts every task of the user; not enforced for root
        uid, tasks = os.getuid(), 0
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    if os.stat("/proc/" + name).st_uid == uid:
                        tasks += len(os.listdir("/proc/" + name + "/task"))
                except (FileNotFoundError, PermissionError, ProcessLookupError):
                    continue  # the process ended while we counted, or is hidden from us
        isolation["nproc_limit"] = tasks + job["max_processes"]
        limit(resource.RLIMIT_NPROC, isolation["nproc_limit"])

    # ---- 2. kernel isolation, best effort: namespaces, tmpfs, Landlock, no capabilities, system-call filter
    # What the program may read (None: anything): its folder, the interpreter's own files (every directory
    # on sys.path: the standard library, lib-dynload, site-packages), the system's shared libraries, and the
    # caller's read_paths. Both spellings of a symlinked root count for the audit hook; Landlock resolves.
    read_roots = None
    if job["confine_reads"]:
        read_roots = []
        for path in [*sys.path, *job["read_paths"]]:
            if isinstance(path, str) and path.startswith("/") and os.path.exists(path):
                for spelling in (os.path.normpath(path), os.path.realpath(path)):
                    if spelling != "/" and spelling not in read_roots:
                        read_roots.append(spelling)
    if linux:
        import ctypes
        import struct

        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        # 2a. A new network namespace (no interface but a loopback that is down) and a private mount namespace; as
        # root directly, otherwise inside a new user namespace (which gives this process capabilities there only).
        clone_newnet, clone_newns, clone_newuser = 0x40000000, 0x00020000, 0x10000000
        wanted = (clone_newnet if job["network_namespace"] else 0) | (clone_newns if job["tmpfs"] else 0)
        missing = 0
        for flag in (clone_newnet, clone_newns):
            if wanted & flag and libc.unshare(flag) != 0:
                missing |= flag
        if missing:
            uid, gid = os.getuid(), os.getgid()
            if libc.unshare(clone_newuser | missing) == 0:
                # Map our own ids into the new user namespace, or files cannot be created (EOVERFLOW).
                for path, line in (
                    ("/proc/self/setgroups", "deny"),
                    ("/proc/self/uid_map", f"{uid} {uid} 1"),
                    ("/proc/self/gid_map", f"{gid} {gid} 1"),
                ):
                    with open(path, "w") as fh:
                        fh.write(line)
                if isolation["nproc_limit"] is not None:
                    # Tasks are now counted per user namespace: our own count starts at 1, so the limit
                    # becomes exact for this run (the outer limit still applies to the outer count).
                    isolation["nproc_limit"] = 1 + job["max_processes"]
                    limit(resource.RLIMIT_NPROC, isolation["nproc_limit"])
            else:
                wanted &= ~missing
        isolation["network_namespace"] = bool(wanted & clone_newnet)
        # 2b. The folder becomes a tmpfs of max_disk_mb (+ 4 KiB, so that "full" means "over the quota") and one inode
        # per 4 KiB, without devices, set-uid or executables; mounts stay private to this namespace.
        if wanted & clone_newns:
            quota = job["max_disk_bytes"]
            options = f"size={quota + 4096},nr_inodes={quota // 4096 + 2},mode=0700"
            options += f",uid={os.getuid()},gid={os.getgid()}"
            ms_nosuid, ms_nodev, ms_noexec, ms_rec, ms_private = 2, 4, 8, 0x4000, 0x40000
            if libc.mount(b"none", b"/", None, ms_rec | ms_private, None) == 0 and libc.mount(
                b"tmpfs", os.fsencode(tmpdir), b"tmpfs", ms_nosuid | ms_nodev | ms_noexec, options.encode()
            ) == 0:
                os.chdir(tmpdir)  # the old working directory is the folder under the mount
                isolation["disk_tmpfs"] = True
        # 2c. Landlock: writes only in the folder (no device nodes even there), reads where read_roots allow, no
        # execve, no TCP, no abstract Unix sockets or signals outside the sandbox (by ABI).
        if job["landlock"]:
            abi = libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, VERSION)
            if abi >= 1:
                write_bits = 0
                for bit in (
                    (1, 4, 5, 6, 7, 8, 9, 10, 11, 12) + ((13,) if abi >= 2 else ()) + ((14,) if abi >= 3 else ())
                ):
                    write_bits |= 1 << bit  # WRITE_FILE, REMOVE_*, MAKE_*, REFER, TRUNCATE
                make_devices = (1 << 6) | (1 << 11)  # MAKE_CHAR, MAKE_BLOCK: handled, granted nowhere
                read_file, read_dir = 1 << 2, 1 << 3
                read_bits = (read_file | read_dir) if read_roots is not None else 0
                handled_fs = write_bits | read_bits | 1  # | EXECUTE, allowed nowhere: no execve
                if abi >= 6:
                    attr = struct.pack("=QQQ", handled_fs, 3, 3)  # deny TCP bind+connect; scope unix+signals
                elif abi >= 4:
                    attr = struct.pack("=QQ", handled_fs, 3)
                else:
                    attr = struct.pack("=Q", handled_fs)
                ruleset = libc.syscall(444, ctypes.c_char_p(attr), len(attr), 0)
                ok = ruleset >= 0
                rules = [
                    (tmpdir, (write_bits & ~make_devices) | read_bits),
                    (os.devnull, (1 << 1) | ((1 << 14) if abi >= 3 else 0)),
                ]
                for path in read_roots or ():
                    rules.append((path, read_bits if os.path.isdir(path) else read_file))
                for path, bits in rules:
                    if not ok:
                        break
                    try:
                        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                    except OSError:
                        continue  # a read root that vanished: one place less to read
                    rule = struct.pack("=Qi", bits, pfd)
                    ok = libc.syscall(445, ruleset, 1, ctypes.c_char_p(rule), 0) == 0  # add_rule(PATH_BENEATH)
                    os.close(pfd)
                if ok and libc.prctl(38, 1, 0, 0, 0) == 0:  # PR_SET_NO_NEW_PRIVS
                    ok = libc.syscall(446, ruleset, 0) == 0  # landlock_restrict_self
                    if ok:
                        isolation["landlock_abi"] = int(abi)
                        isolation["landlock_reads"] = read_roots is not None
                if ruleset >= 0:
                    os.close(ruleset)
        # 2d. No capabilities: as root (or in the user namespace) the program cannot make device nodes (CAP_MKNOD),
        # immutable files (CAP_LINUX_IMMUTABLE), mounts, raw sockets, nor bypass file permissions or signal others.
        if job["drop_capabilities"]:
            for cap in range(64):  # PR_CAPBSET_DROP, up to the last capability the kernel knows (EINVAL), or
                if libc.prctl(24, cap, 0, 0, 0) != 0:  # at once (EPERM) without CAP_SETPCAP: then nothing to drop
                    break
            libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
            header = ctypes.create_string_buffer(struct.pack("=Ii", 0x20080522, 0), 8)  # _LINUX_CAPABILITY_VERSION_3
            sets = ctypes.create_string_buffer(24)  # effective, permitted, inheritable (x2 words): all empty
            if libc.capset(header, sets) == 0 and libc.capget(header, sets) == 0:
                isolation["capabilities_dropped"] = not any(sets.raw)
        # 2e. The system-call filter (built by the parent for this pid), last: it refuses unshare, mount, capset...
        if job["seccomp_filter"]:
            code = ctypes.create_string_buffer(job["seccomp_filter"], len(job["seccomp_filter"]))
            fprog = ctypes.create_string_buffer(struct.pack("HP", len(code.raw) // 8, ctypes.addressof(code)))
            if libc.prctl(38, 1, 0, 0, 0) == 0:  # PR_SET_NO_NEW_PRIVS (Landlock may have set it already)
                isolation["seccomp"] = libc.prctl(22, 2, fprog, 0, 0) == 0  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        libc = None

    # ---- 3. the trusted tests, analysed and compiled by the parent; pre-import their modules
    def fail_tests(message):
        report("test_error", {"message": text(message)})

    meta = job["tests_meta"]
    test_functions, test_classes, test_modules = meta["functions"], meta["classes"], meta["modules"]
    defines_check, calls_check = meta["defines_check"], meta["calls_check"]
    if job["tests_code"] is not None:  # same interpreter as the parent: a marshalled code object
        tests_code = marshal.loads(job["tests_code"])
    else:  # another interpreter: rewrite and compile here
        import ast

        tests_tree = ast.parse(job["tests_source"], "<tests>")
        if job["strict_asserts"]:
            tests_tree = _rewrite_asserts(tests_tree)
        tests_code = compile(tests_tree, "<tests>", "exec", dont_inherit=True)
    tests_lines = job["tests_source"].splitlines()

    guarded = {}
    for name in test_modules:
        if name == module_name or name.startswith(module_name + "."):
            continue
        try:
            __import__(name)
        except ImportError as exc:
            fail_tests(f"the tests import {name!r}, which is not available in the sandbox: {exc}")
        guarded[name] = sys.modules[name]
    guarded.pop("sys", None)  # programs legitimately touch sys (setrecursionlimit, stdout wrappers)
    if "exit" not in builtins.__dict__:  # -S skips site, which defines exit()/quit()
        import _sitebuiltins

        builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
        builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")
    pristine_builtins = dict(builtins.__dict__)
    real_builtins_dict = builtins.__dict__

    # ---- 4. the audit hook (irremovable): processes, signals, network, writes outside tmpdir, introspection
    import _posixsubprocess
    import _signal  # `signal` copies its functions from `_signal` when it is imported

    def refuse(event, detail=""):
        violations.append(text(f"{event} {detail}".strip(), 300))
        raise PermissionError(f"sandbox: {event} is not allowed")

    settrace(None)
    setprofile(None)
    preloaded = frozenset(sys.modules)
    root = tmpdir.rstrip("/") or "/"
    o_path = getattr(os, "O_PATH", 0)
    # (exact paths, prefixes) the audit hook lets the program read; None: reads are not confined
    read_prefixes = None
    if read_roots is not None:
        readable = [root, *read_roots]
        read_prefixes = (frozenset(readable), tuple(path.rstrip("/") + "/" for path in readable))
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    af_unix = 1
    writable_devices = ("/dev/null", "/dev/stdout", "/dev/stderr")

    def absolute(path, dir_fd=None):
        """Lexically normalised absolute path (no symlinks can exist in tmpdir: links are refused)."""
        if isinstance(path, int):
            try:
                return readlink(f"/proc/self/fd/{path:d}")
            except OSError:
                return ""
        if isinstance(path, bytes):
            path = bytes.decode(path, "utf-8", "surrogateescape")
        elif not isinstance(path, str):
            path = fspath(path)
            if isinstance(path, bytes):
                path = bytes.decode(path, "utf-8", "surrogateescape")
        path = exact_str(path)
        if not path.startswith("/"):
            if dir_fd is not None and dir_fd >= 0:
                base = absolute(dir_fd)
            else:
                base = getcwd()
            path = base + "/" + path
        parts = []
        for part in path.split("/"):
            if part == "" or part == ".":
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(part)
        return "/" + "/".join(parts)

    def inside(path, dir_fd=None):
        p = absolute(path, dir_fd)
        return p == root or p.startswith(root + "/")

    def check_write(event, path, dir_fd=None):
        if not inside(path, dir_fd):
            refuse(event, absolute(path, dir_fd))

    def on_open(args):
        path, mode, flags = args[0], args[1], args[2]
        if isinstance(path, int):
            return  # wrapping an already-open descriptor
        writing = (isinstance(mode, str) and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)) or (
            isinstance(flags, int) and flags & write_flags
        )
        p = absolute(path)
        if writing:
            if p not in writable_devices and not (p == root or p.startswith(root + "/")):
                refuse("open for writing", p)
        elif p.startswith("/proc/"):
            owner = p.split("/")[2]
            if owner in ("self", "thread-self") or owner.isdigit():
                refuse("open", p)  # /proc/self/mem, /proc/<pid>/... : the harness's memory and fds
            check_read("open for reading", p)
        elif not (isinstance(flags, int) and flags & o_path):  # O_PATH opens give no access to the contents
            check_read("open for reading", p)

    def check_read(event, p):
        if read_prefixes is not None and p not in read_prefixes[0] and not p.startswith(read_prefixes[1]):
            refuse(event, p)

    def on_list(args):
        path = args[0] if args else None
        check_read("list", absolute("." if path is None else path))

    def on_path(event, dir_fd_at):
        def handler(args):
            dir_fd = args[dir_fd_at] if dir_fd_at is not None and len(args) > dir_fd_at else None
            check_write(event, args[0], dir_fd if isinstance(dir_fd, int) else None)

        return handler

    def on_two_paths(event):
        def handler(args):
            src_fd = args[2] if len(args) > 2 else None
            dst_fd = args[3] if len(args) > 3 else None
            check_write(event, args[0], src_fd)
            check_write(event, args[1], dst_fd)

        return handler

    def on_refuse(event):
        def handler(args):
            refuse(event)

        return handler

    def on_socket_new(args):
        if args[1] != af_unix:
            refuse("socket", f"family {args[1]!r}")

    def on_import(args):
        if args[0] in preloaded:  # a module that was loaded before is being re-imported: sys.modules tampering
            refuse("re-import", args[0])

    def on_dlopen(args):
        # ctypes stays importable (sympy needs it); a library the program wrote itself would run native code.
        name = args[0]
        if isinstance(name, bytes):
            name = bytes.decode(name, "utf-8", "surrogateescape")
        if isinstance(name, str) and "/" in name and inside(name):
            refuse("ctypes.dlopen", name)

    handlers = {"open": on_open, "import": on_import, "socket.__new__": on_socket_new, "ctypes.dlopen": on_dlopen,
                "os.listdir": on_list, "os.scandir": on_list}
    # (event, position of its dir_fd argument) as raised by CPython 3.10-3.13
    for event, dir_fd_at in (
        ("os.remove", 1),
        ("os.rmdir", 1),
        ("os.mkdir", 2),
        ("os.chmod", 2),
        ("os.chown", 3),
        ("os.utime", 3),
        ("os.truncate", None),
        ("os.setxattr", None),
        ("os.removexattr", None),
        ("os.mkfifo", 2),
        ("os.mknod", 3),
        ("os.chdir", None),
        ("os.chflags", None),
        ("os.lchflags", None),
        ("shutil.rmtree", 1),
    ):
        handlers[event] = on_path(event, dir_fd_at)
    for event in ("os.rename", "os.link"):
        handlers[event] = on_two_paths(event)
    for event in (
        "os.symlink",
        "os.fork",
        "os.forkpty",
        "os.posix_spawn",
        "os.exec",
        "os.system",
        "os.spawn",
        "os.kill",
        "os.killpg",
        "os.chroot",
        "os.setns",
        "os.unshare",
        "signal.pthread_kill",
        "subprocess.Popen",
        "pty.spawn",
        "sys.settrace",
        "sys.setprofile",
        "sys._current_frames",
        "sys.addaudithook",
        "sys.monitoring.register_callback",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "resource.setrlimit",
        "resource.prlimit",
        "ctypes.dlsym",
        "ctypes.dlsym/handle",
        "ctypes.call_function",
        "ctypes.cdata",
        "ctypes.string_at",
        "ctypes.wstring_at",
    ):
        handlers[event] = on_refuse(event)
    handlers_get = handlers.get

    def audit_hook(event, args):
        handler = handlers_get(event)
        if handler is not None:
            handler(args)
        elif event.startswith("socket."):
            refuse(event)  # connect, bind, sendto, sendmsg, name resolution

    def refuse_stub(name):
        # A C-level callable that raises the audit event `name` (refused below). Not a Python function:
        # its __globals__ would hand the program the harness's private builtins.
        handlers[name] = on_refuse(name)
        return _functools.partial(sys.audit, name)

    # Process creation and signalling that do not raise audit events of their own.
    _posixsubprocess.fork_exec = refuse_stub("_posixsubprocess.fork_exec")
    holders = [(os, "pidfd_open"), (_signal, "pidfd_send_signal")]
    if "signal" in sys.modules:
        holders.append((sys.modules["signal"], "pidfd_send_signal"))
    for holder, attr in holders:
        if hasattr(holder, attr):
            setattr(holder, attr, refuse_stub(f"{holder.__name__}.{attr}"))
    # Taken after the stubs replaced os.pidfd_open & co., or tests that import os or signal would find them "changed".
    guarded_snapshot = {name: dict(mod.__dict__) for name, mod in guarded.items()}
    sys.addaudithook(audit_hook)

    # ---- 5. strict-assert helpers
    plain_scalars = (int, float, complex, str, bytes, bool, type(None))
    compare_dunders = (
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__contains__",
        "__bool__",
        "__len__",
    )
    compare_ops = {
        "Eq": lambda a, b: a == b,
        "NotEq": lambda a, b: a != b,
        "Lt": lambda a, b: a < b,
        "LtE": lambda a, b: a <= b,
        "Gt": lambda a, b: a > b,
        "GtE": lambda a, b: a >= b,
        "In": lambda a, b: a in b,
        "NotIn": lambda a, b: a not in b,
    }
    program_globals = [None]

    def program_defined(obj):
        for klass in type(obj).__mro__:
            namespace = klass.__dict__
            for dunder in compare_dunders:
                fn = namespace.get(dunder)
                if fn is None:
                    continue
                fn = getattr(fn, "__func__", fn)  # staticmethod / classmethod
                if getattr(fn, "__globals__", None) is program_globals[0]:
                    return True
        return False

    def tainted(obj):
        stack, seen = [obj], 0
        while stack and seen < 10000:
            x = stack.pop()
            seen += 1
            if type(x) in plain_scalars:
                continue
            if program_defined(x):
                return True
            if isinstance(x, dict):
                stack.extend(dict.keys(x))
                stack.extend(dict.values(x))
            elif isinstance(x, list):
                stack.extend(list.__iter__(x))
            elif isinstance(x, tuple):
                stack.extend(tuple.__iter__(x))
            elif isinstance(x, frozenset):
                stack.extend(frozenset.__iter__(x))
            elif isinstance(x, set):
                stack.extend(set.__iter__(x))
        return False

    def strict_compare(op, a, b):
        if tainted(a) != tainted(b):
            note = (
                "assert compares a value of a class whose comparison is defined by the program with a built-in value"
            )
            tamper_notes.append(note)
            raise OrigAssertionError("sandbox: " + note)
        return compare_ops[op](a, b)

    def strict_truth(value):
        if type(value) is not bool and program_defined(value):
            note = "assert tests the truth of an object whose __bool__/__len__ is defined by the program"
            tamper_notes.append(note)
            raise OrigAssertionError("sandbox: " + note)
        return value

    # ---- 6. run the program as module `solution`
    def where(exc, filename):
        """Line of `filename` where `exc` was raised (innermost), with its source when known."""
        tb, line = exc.__traceback__, None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == filename:
                line = tb.tb_lineno
            tb = tb.tb_next
        info = {}
        if line is not None:
            info["line"] = line
            if filename == "<tests>" and 0 < line <= len(tests_lines):
                info["test"] = text(tests_lines[line - 1].strip(), 300)
        return info

    def describe(exc, filename):
        info = where(exc, filename)
        info["exception"] = text(type(exc).__name__, 100)
        try:
            if isinstance(exc, SyntaxError):
                info["message"] = text(f"{exc.msg} (line {exc.lineno})", 500)
            else:
                info["message"] = text(BaseException.__str__(exc), 500)
        except BaseException:  # a program-defined __str__ may raise anything; the verdict is already known
            info["message"] = "<unprintable>"
        return info

    def classify(exc, phase):
        if isinstance(exc, SystemExit):
            return "early_exit"
        if isinstance(exc, MemoryError):
            return "memory"
        if phase == "tests" and isinstance(exc, OrigAssertionError):
            return "assertion_failed"
        return "runtime_error"

    def over_disk_quota():
        """The folder's tmpfs holds more than max_disk_mb: it is sized to just exceed it, so this also catches a
        program that failed on ENOSPC, or keeps deleted files open."""
        try:
            fs = statvfs(tmpdir)
        except OSError:
            return False
        return (fs.f_blocks - fs.f_bfree) * fs.f_frsize > job["max_disk_bytes"] or fs.f_ffree == 0

    def finish(status, info):
        if violations:
            status = "sandbox_violation"
        elif tamper_notes:
            status = "tampered"
        elif isolation["disk_tmpfs"] and over_disk_quota():
            status = "disk_quota"
            info["limit_mb"] = job["max_disk_bytes"] // 2**20
        report(status, info)

    def check_untampered():
        for key, value in pristine_builtins.items():
            if real_builtins_dict.get(key, pristine_builtins) is not value:
                tamper_notes.append(text(f"builtins.{key} was changed by the program", 200))
        for name, snapshot in guarded_snapshot.items():
            mod = guarded[name]
            if sys.modules.get(name) is not mod:
                tamper_notes.append(text(f"sys.modules[{name!r}] was replaced by the program", 200))
                continue
            current = mod.__dict__
            for key, value in snapshot.items():
                if current.get(key, snapshot) is not value:
                    tamper_notes.append(text(f"{name}.{key} was changed by the program", 200))
        if gettrace() is not None or getprofile() is not None:
            tamper_notes.append("a trace or profile function is installed")

    module = type(sys)(module_name)
    module.__dict__["__builtins__"] = builtins
    sys.modules[module_name] = module
    program_globals[0] = module.__dict__
    write(chan, b"S")  # the program starts now (a harness that dies before this is a sandbox error)
    try:
        program_code = compile(job.pop("program"), "<solution>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        finish("syntax_error", describe(exc, "<solution>"))
    except BaseException as exc:  # MemoryError / RecursionError in the compiler
        finish(classify(exc, "program"), describe(exc, "<solution>"))
    try:
        exec(program_code, module.__dict__)
    except BaseException as exc:
        info = describe(exc, "<solution>")
        info["phase"] = "program"
        finish(classify(exc, "program"), info)
    check_untampered()
    if tamper_notes or violations:
        finish("tampered", {"phase": "program"})
    if entry_point is not None and entry_point not in module.__dict__:
        finish("missing_entry_point", {"message": text(f"the program does not define {entry_point!r}")})

    # ---- 7. the tests, in their own namespace with pristine builtins
    namespace = dict(module.__dict__)
    namespace.update(
        {
            "__builtins__": dict(pristine_builtins),
            "__name__": "__rasft_tests__",
            "__rasft_cmp__": strict_compare,
            "__rasft_truth__": strict_truth,
        }
    )
    current = "<module>"

    def parameter_sets(fn):
        """pytest.mark.parametrize expanded to keyword-argument dicts (cartesian product)."""
        sets = [{}]
        for mark in getattr(fn, "pytestmark", ()):
            if getattr(mark, "name", None) != "parametrize":
                continue
            names, values = mark.args[0], mark.args[1]
            if isinstance(names, str):
                names = [n.strip() for n in names.split(",") if n.strip()]
            expanded = []
            for params in sets:
                for value in values:
                    if type(value).__name__ == "ParameterSet":
                        value = value.values
                    elif len(names) == 1:
                        value = (value,)
                    expanded.append({**params, **dict(zip(names, value))})
            sets = expanded
        return sets

    def call_test(target, label):
        """Call a test function or bound method once per parameter set; fixtures are not supported."""
        nonlocal current
        current = label
        fn = getattr(target, "__func__", target)
        code = fn.__code__
        skip = 1 if fn is not target else 0
        required = code.co_varnames[skip : code.co_argcount - len(fn.__defaults__ or ())]
        for kwargs in parameter_sets(fn):
            missing = [name for name in required if name not in kwargs]
            if missing:
                fail_tests(f"{label} needs pytest fixtures {missing}, which the sandbox does not provide")
            target(**kwargs)

    try:
        exec(tests_code, namespace)
        for name in test_functions:
            if callable(namespace.get(name)):
                call_test(namespace[name], name)
        for name in test_classes:
            cls = namespace.get(name)
            if isinstance(cls, type):
                for attr in list(vars(cls)):
                    if attr.startswith("test") and callable(getattr(cls, attr)):
                        instance = cls()
                        method = getattr(instance, attr)
                        if hasattr(instance, "setup_method"):
                            instance.setup_method(method)
                        call_test(method, f"{name}.{attr}")
                        if hasattr(instance, "teardown_method"):
                            instance.teardown_method(method)
        if entry_point is not None and defines_check and not calls_check and callable(namespace.get("check")):
            current = f"check({entry_point})"
            namespace["check"](namespace[entry_point])
    except BaseException as exc:
        info = describe(exc, "<tests>")
        info["phase"] = "tests"
        info["test_name"] = current
        finish(classify(exc, "tests"), info)
    if gettrace() is not None or getprofile() is not None:
        tamper_notes.append("a trace or profile function is installed")
    finish("passed", {})
