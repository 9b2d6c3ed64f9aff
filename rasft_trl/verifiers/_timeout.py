"""A small process pool whose tasks have a hard wall-clock limit.

`concurrent.futures` and `multiprocessing.Pool` cannot stop a task that runs too long: sympy spends its time in
C loops and big-integer arithmetic that ignore signals, so `signal.alarm` does not work either. This pool keeps
one pipe per worker process, hands each worker one task at a time, and SIGKILLs a worker whose task passes its
deadline (or whose resident memory passes a limit); a fresh worker is started in its place while the others
carry on. Results come back in submission order.

Start method: workers are started with `forkserver` where available (Linux), else `spawn`; never with `fork`.
The trainer process has torch loaded, with OpenMP / CUDA threads and their locks; a `fork` of a multi-threaded
process copies locks that may be held by threads that do not exist in the child, which can deadlock it. The
fork server is a fresh single-threaded process, so forking workers from it is both safe and cheap. Workers start
without the user's `__main__` module (see `_main_module_hidden`), so a training script without a main guard, `python
-c` and notebooks all work.

Dying with the trainer: the trainer enforces the deadlines, so a worker must not outlive it, even one that is busy
in a single C call (sympy evaluating `9^{9^{9^9}}` holds the GIL in one big-integer power: no Python code, no thread
of the worker runs until it returns, far past any timeout). Two kernel mechanisms, neither of which
needs the worker to run any code:

- Forkserver workers (Linux) carry `PR_SET_PDEATHSIG` = SIGKILL relative to their parent, the single-threaded fork
  server, and they close their copy of the fork server's "alive" pipe (`_release_fork_server`). The fork server exits
  when every holder of that pipe's write end is gone; CPython hands a copy to each forked process, so with the copies
  kept the fork server waited for its busy workers and they for it, for ever. Without them it exits as soon as the
  trainer does (SIGKILL, SIGTERM, Ctrl-C or a normal exit), and the kernel kills the workers.
- A task runs under a CPU-time limit (`RLIMIT_CPU`, `cpu_limit_s`): a task that the trainer did not stop in time (the
  trainer is gone, stopped, or started the workers with `spawn`, where no death signal is set) is killed by the kernel
  (SIGXCPU) once it has used that much CPU. A worker so stopped while the trainer lives is reported as a timeout.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

__all__ = ["KillablePool", "TaskOutcome", "default_start_method"]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_SIGXCPU = getattr(signal, "SIGXCPU", None)  # the signal of RLIMIT_CPU (POSIX)


def default_start_method() -> str:
    """`"forkserver"` where the platform has it, else `"spawn"` (see the module docs for why never `"fork"`)."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


@dataclass
class TaskOutcome:
    """What became of one task.

    Args:
        status: `"ok"` (value is the return value), `"error"` (value is the exception text), `"timeout"` (the
            worker was killed at the deadline), `"memory"` (killed at the memory limit) or `"died"` (the worker
            exited by itself, e.g. a segfault or an out-of-memory kill).
        value: the result or an error message.
        seconds: wall-clock time from dispatch to outcome.
    """

    status: str
    value: Any = None
    seconds: float = 0.0


def _worker_main(conn, initializer: Callable[[], None] | None, die_with_parent: bool = False,
                 cpu_limit_s: float | None = None) -> None:
    """Worker loop: announce readiness, then run `(fn, args)` tasks until the pipe closes or `None` arrives.

    `die_with_parent` (forkserver workers on Linux): the kernel SIGKILLs the worker when its parent, the fork server,
    exits, which the fork server does as soon as the trainer is gone (killed or not; see the module docs). Without it
    a worker busy in a long sympy call would outlive a killed trainer. `cpu_limit_s`: each task may use this much CPU
    time before the kernel stops the worker (`_limit_task_cpu`).
    """
    if die_with_parent:
        _release_fork_server()
        _set_parent_death_signal()
    if cpu_limit_s is not None:
        _no_core_dumps()
    if initializer is not None:
        initializer()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        fn, args = message
        if cpu_limit_s is not None:
            _limit_task_cpu(cpu_limit_s)
        try:
            reply = ("ok", fn(*args))
        except Exception as exc:  # reported to the parent, which counts it
            reply = ("error", f"{type(exc).__name__}: {exc}"[:1000])
        conn.send(reply)


_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_module_hidden():
    """Start a worker without the user's `__main__` module.

    `spawn` and `forkserver` children import the parent's `__main__` again (by path for `python script.py`, by name
    for `python -m`) before they run their target; a script without `if __name__ == "__main__":` would then train
    again inside every verifier worker. The workers run only this package's functions, so they do not need it:
    while a worker starts, `__main__` has no `__file__` and no `__spec__`, which is what multiprocessing sees for
    `python -c` or an interactive session, and it prepares the child without importing any main module.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    with _MAIN_LOCK:
        saved = {key: main.__dict__[key] for key in ("__file__", "__spec__") if key in main.__dict__}
        main.__dict__.pop("__file__", None)
        main.__dict__["__spec__"] = None
        try:
            yield
        finally:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


def _release_fork_server() -> None:
    """Close this worker's copy of the fork server's "alive" pipe (a forkserver child inherits one, so that it could
    start processes itself; the workers never do). The fork server exits when the last copy closes: without this it
    would wait for its workers, which wait for it (`PR_SET_PDEATHSIG`), and a busy worker would run for ever after
    the trainer is killed."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
        server._forkserver_alive_fd = None


def _no_core_dumps() -> None:
    """No core file when the CPU limit stops the worker (SIGXCPU's default action dumps core)."""
    import resource

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))


def _limit_task_cpu(seconds: float) -> None:
    """Let the next task use at most `seconds` of CPU time: the soft `RLIMIT_CPU` is moved to the CPU time used so
    far plus `seconds` (rounded up; the hard limit is kept, so the next task can move it again). Past it the kernel
    sends SIGXCPU, which ends the worker whatever it is doing: the trainer need not be alive to stop the task."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds)
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _set_parent_death_signal() -> None:
    """`prctl(PR_SET_PDEATHSIG, SIGKILL)` (Linux): die when the parent process exits; exit now if it already has."""
    import ctypes
    import signal

    if ctypes.CDLL(None).prctl(1, int(signal.SIGKILL)) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() == 1:
        os._exit(1)


class _Worker:
    def __init__(self, ctx, initializer, cpu_limit_s: float | None = None):
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        # Only forkserver workers: their parent is the single-threaded fork server. A spawned worker's parent would be
        # the trainer *thread* that started it, and the death signal fires when that thread ends.
        die_with_parent = sys.platform.startswith("linux") and ctx.get_start_method() == "forkserver"
        if sys.platform == "win32":
            cpu_limit_s = None  # no RLIMIT_CPU
        self.process = ctx.Process(target=_worker_main, args=(child_conn, initializer, die_with_parent, cpu_limit_s),
                                   daemon=True)
        with _main_module_hidden():
            self.process.start()
        child_conn.close()
        self.conn = parent_conn
        self.ready = False
        self.started_at = time.monotonic()
        self.task: int | None = None
        self.dispatched_at = 0.0

    def rss_bytes(self) -> int | None:
        try:
            with open(f"/proc/{self.process.pid}/statm") as handle:
                return int(handle.read().split()[1]) * _PAGE_SIZE
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        if self.process.is_alive() and self.task is None:
            try:
                self.conn.send(None)
            except OSError:  # the worker is already gone; kill() below reaps it
                self.process.join(timeout=0)
            else:
                self.process.join(timeout=1)
        self.kill()


class KillablePool:
    """Worker processes that run picklable functions with a hard per-task timeout.

    Args:
        num_workers: number of worker processes (started lazily, on the first `run`).
        initializer: called once in each worker before it takes tasks (e.g. import sympy); not timed.
        start_method: multiprocessing start method; default
            [`default_start_method`][rasft_trl.verifiers._timeout.default_start_method].
        memory_limit_mb: kill a worker whose resident memory passes this (Linux `/proc`; None: no limit).
        start_timeout: seconds a new worker may take to become ready before it counts as failed.
        cpu_limit_s: CPU seconds one task may use before the kernel stops its worker (`RLIMIT_CPU`): the deadline
            that holds when this process cannot enforce `timeout` (it was killed). Set it above the `timeout` of
            `run`; a worker so stopped gives the outcome `"timeout"`. None: no limit.
    """

    def __init__(
        self,
        num_workers: int,
        initializer: Callable[[], None] | None = None,
        start_method: str | None = None,
        memory_limit_mb: float | None = None,
        start_timeout: float = 120.0,
        cpu_limit_s: float | None = None,
    ):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}.")
        if cpu_limit_s is not None and not cpu_limit_s > 0:
            raise ValueError(f"cpu_limit_s must be > 0 or None, got {cpu_limit_s}.")
        self.cpu_limit_s = cpu_limit_s
        self.num_workers = num_workers
        self.initializer = initializer
        self.start_method = start_method or default_start_method()
        self.memory_limit_bytes = None if memory_limit_mb is None else int(memory_limit_mb * 2**20)
        self.start_timeout = start_timeout
        self.restarts = 0
        self._ctx = multiprocessing.get_context(self.start_method)
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._failed_starts = 0

    @property
    def started(self) -> bool:
        return bool(self._workers)

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self.initializer, self.cpu_limit_s)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers[self._workers.index(worker)] = self._spawn()
        self.restarts += 1

    def _ensure_started(self) -> None:
        while len(self._workers) < self.num_workers:
            self._workers.append(self._spawn())

    def run(self, fn: Callable, arg_tuples: Sequence[tuple], timeout: float) -> list[TaskOutcome]:
        """Run `fn(*args)` for every tuple in `arg_tuples`, each bounded by `timeout` seconds of wall clock.

        Returns:
            One [`TaskOutcome`][rasft_trl.verifiers._timeout.TaskOutcome] per task, in order.
        """
        with self._lock:
            self._ensure_started()
            try:
                return self._run_locked(fn, list(arg_tuples), timeout)
            except BaseException:
                # Interrupted (KeyboardInterrupt, ...): busy workers hold tasks of this run, whose late replies
                # would be mistaken for the next run's. Replace them, then let the exception propagate.
                for worker in list(self._workers):
                    if worker.task is not None:
                        self._replace(worker)
                raise

    def _run_locked(self, fn: Callable, tasks: list[tuple], timeout: float) -> list[TaskOutcome]:
        outcomes: list[TaskOutcome | None] = [None] * len(tasks)
        queue = deque(range(len(tasks)))
        while queue or any(worker.task is not None for worker in self._workers):
            now = time.monotonic()
            for worker in self._workers:
                if worker.ready and worker.task is None and queue:
                    index = queue.popleft()
                    try:
                        worker.conn.send((fn, tasks[index]))
                    except OSError:  # the worker died while idle: requeue the task, replace the worker
                        queue.appendleft(index)
                        self._on_death(worker, outcomes)
                        continue
                    worker.task = index
                    worker.dispatched_at = now
            self._wait_for_messages(outcomes, timeout)
            self._enforce_limits(outcomes, timeout)
        return outcomes  # type: ignore[return-value]

    def _wait_seconds(self, timeout: float) -> float:
        now = time.monotonic()
        deadlines = [w.dispatched_at + timeout for w in self._workers if w.task is not None]
        deadlines += [w.started_at + self.start_timeout for w in self._workers if not w.ready]
        seconds = max(0.0, min(deadlines) - now) if deadlines else 0.05
        if self.memory_limit_bytes is not None:
            seconds = min(seconds, 0.2)
        return seconds

    def _wait_for_messages(self, outcomes: list, timeout: float) -> None:
        by_conn = {worker.conn: worker for worker in self._workers}
        for conn in wait(list(by_conn), timeout=self._wait_seconds(timeout)):
            worker = by_conn[conn]
            try:
                status, value = conn.recv()
            except (EOFError, OSError):
                self._on_death(worker, outcomes)
                continue
            if status == "ready":
                worker.ready = True
                self._failed_starts = 0
                continue
            outcomes[worker.task] = TaskOutcome(status, value, time.monotonic() - worker.dispatched_at)
            worker.task = None

    def _on_death(self, worker: _Worker, outcomes: list) -> None:
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        if worker.task is not None:
            elapsed = time.monotonic() - worker.dispatched_at
            if _SIGXCPU is not None and code == -_SIGXCPU:  # the kernel stopped the task at `cpu_limit_s`
                outcomes[worker.task] = TaskOutcome("timeout", f"stopped at the CPU limit ({self.cpu_limit_s}s)",
                                                    elapsed)
            else:
                outcomes[worker.task] = TaskOutcome("died", f"worker exited with code {code}", elapsed)
        elif not worker.ready:
            self._failed_starts += 1
            if self._failed_starts >= 3:
                self.close()
                raise RuntimeError(
                    f"Verifier worker processes keep failing to start (last exit code {code}, start method "
                    f"{self.start_method!r}); see the worker's traceback above."
                )
        self._replace(worker)

    def _enforce_limits(self, outcomes: list, timeout: float) -> None:
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.task is not None:
                elapsed = now - worker.dispatched_at
                if elapsed >= timeout:
                    outcomes[worker.task] = TaskOutcome("timeout", f"killed after {elapsed:.2f}s", elapsed)
                    self._replace(worker)
                elif self.memory_limit_bytes is not None and (worker.rss_bytes() or 0) > self.memory_limit_bytes:
                    outcomes[worker.task] = TaskOutcome("memory", "killed at the memory limit", elapsed)
                    self._replace(worker)
            elif not worker.ready and now - worker.started_at > self.start_timeout:
                self._failed_starts += 1
                self._replace(worker)
                if self._failed_starts >= 3:
                    self.close()
                    raise RuntimeError(f"Verifier workers did not start within {self.start_timeout}s.")

    def close(self) -> None:
        """Stop all workers (idempotent). The pool restarts them on the next `run`."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop()

    def __del__(self):
        if getattr(self, "_workers", None):
            self.close()
