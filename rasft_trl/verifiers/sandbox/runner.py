"""`Sandbox`: starts the child, sends it the job, collects its output and report, and turns them into a verdict.

The parent's side of a run: a fresh folder under the watchdog's root (`cleanup.py`), the trusted tests analysed and
compiled here (the child need not import `ast`), the child started with `subprocess` (`python -I -S -B -c
_BOOTSTRAP`, `harness.py`) with a scrubbed environment, the job (program, tests, limits, the seccomp filter built for
its pid, `seccomp.py`) written to its stdin, stdout / stderr / the result channel read through one selector until the
report arrives, the child exits or the deadline passes, the disk quota checked every 0.1 s (`quota.py`), the process
group killed, the verdict read from the report (`policy.py`), the folder removed.

Its part of the threat model (the whole is indexed in the package docstring, `rasft_trl.verifiers.sandbox`):

- **Separate process.** Every run is a fresh `python -I -S -B` interpreter started with `subprocess`
  (never a fork of the trainer, which has torch and CUDA state). It leads its own session and process
  group; the whole group is killed with `SIGKILL` when the run ends, whatever the outcome.
- **Time.** A wall-clock limit enforced by the parent (`timeout_s`) and a CPU-time limit
  (`RLIMIT_CPU`, `cpu_time_s`): infinite loops, sleeps and busy threads end as `"timeout"`.
- **Environment and I/O.** A scrubbed environment (`PATH`, `HOME`/`TMPDIR` = the temporary directory,
  locale, one BLAS thread), stdin is `/dev/null`, stdout/stderr are captured up to
  `max_output_bytes` each (the rest is drained and dropped), and the only other inherited file
  descriptor is the result channel.

The "Proof of completion" (`harness.py`) is checked here: only a report that carries the run's nonce counts, and a
child that ends without one is `"early_exit"` (or `"timeout"`, `"memory"`, `"sandbox_error"`), never `"passed"`.

Not covered:

- A grandchild that calls `setsid()` leaves the process group and survives the group kill; it first
  needs a way around the process-creation guards (the hook and the filter; as non-root, `RLIMIT_NPROC`).
"""

from __future__ import annotations

import ast
import logging
import marshal
import math
import os
import secrets
import selectors
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .cleanup import _reaper, _remove_tree
from .harness import _BOOTSTRAP, _harness_code, _harness_source, _rewrite_asserts
from .policy import SANDBOX_STATUSES, SYSTEM_READ_PATHS, SandboxResult
from .quota import _DISK_CHECK_INTERVAL_S, _over_disk_quota
from .seccomp import _seccomp_filter

logger = logging.getLogger(__name__)

__all__ = ["Sandbox"]


class Sandbox:
    """Runs `program` followed by trusted `tests` in a fresh, limited Python process.

    See the package docstring (`rasft_trl.verifiers.sandbox`) and its modules' for the threat model. All limits
    are per run.

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
            dropped, see `isolation.py`).
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
        self._stopping = False  # set by `stop()`: no new program starts, one starting now is killed at once
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
        if self._stopping:
            os.close(chan_r)
            os.close(chan_w)
            return SandboxResult("sandbox_error", duration_s=time.monotonic() - start,
                                 details={"message": "the sandbox is stopping (interpreter exit)"})
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
            stopping = self._stopping
        if stopping:  # `stop()` ran between the start and the line above: it could not see this program
            self._kill_group(proc)
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

    def stop(self) -> int:
        """Kill every running program and refuse new ones (for interpreter exit: a program starting while this runs
        is killed as soon as it is registered, so none slips through). Returns how many were killed."""
        with self._live_lock:
            self._stopping = True
        return self.kill_running()

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


_SIGNALS = {s.value for s in signal.Signals}


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
