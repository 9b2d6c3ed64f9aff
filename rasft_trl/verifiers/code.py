"""Code verifier: extract a Python program from a response and run it against the problem's tests.

A response is correct iff its program and the tests ran to completion, in the [`Sandbox`], without an
error. Three test styles are supported, with these dataset columns (all other columns are ignored):

| style | columns | what runs |
|---|---|---|
| asserts (MBPP, KodCode-like) | `tests`: statements, or a list of assert strings | the statements |
| pytest (KodCode) | `tests` / `test`: `from solution import f`, `def test_*()` | every `test_*` / `Test*.test_*` |
| HumanEval | `test`: defines `check(candidate)`; `entry_point` | the test code, then `check(<entry_point>)` |

The tests column is `tests`; when a row has no (or an empty) `tests`, `test` (HumanEval, KodCode) and
then `test_list` (MBPP) are used. MBPP's `test_imports` (list) and `test_setup_code` (string) are put
before the tests when present. A missing or empty test set is `cannot_judge` (`None` reward), never a
zero.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import textwrap
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .base import Verdict, Verifier, VerifyResult, completion_text
from .sandbox import Sandbox, SandboxResult

logger = logging.getLogger(__name__)

__all__ = ["REASONS", "CodeVerifier", "compose_program", "extract_program"]

#: Reasons a [`VerifyResult`] of the code verifier can carry. `passed` is the only correct one;
#: `no_tests`, `invalid_tests`, `test_error` and `sandbox_error` are `cannot_judge`.
REASONS = (
    "passed",
    "no_code",
    "syntax_error",
    "assertion_failed",
    "runtime_error",
    "timeout",
    "memory",
    "disk_quota",
    "early_exit",
    "missing_entry_point",
    "sandbox_violation",
    "tampered",
    "no_tests",
    "invalid_tests",
    "test_error",
    "sandbox_error",
)
_CANNOT_JUDGE = frozenset({"no_tests", "invalid_tests", "test_error", "sandbox_error"})
_PYTHON_TAGS = frozenset({"", "python", "py", "python3", "py3"})
_FENCE = re.compile(r"^[ \t]*```[ \t]*([^\s`]*)[^\n]*\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)", re.MULTILINE | re.DOTALL)


def extract_program(response: str) -> str:
    """The program in a response: the last fenced ```` ```python ```` (or unlabelled) block, else the whole text.

    Reasoning before a closing `</think>` tag is dropped first. An unterminated last fence (a
    truncated generation) counts as a block running to the end of the text.

    Args:
        response: the model's response text.

    Returns:
        The program's source, dedented and stripped of surrounding blank lines (may be empty).
    """
    if "</think>" in response:
        response = response.rsplit("</think>", 1)[1]
    blocks = [body for tag, body in _FENCE.findall(response) if tag.lower() in _PYTHON_TAGS]
    if blocks:  # dedented: a fence inside a list item is indented with its code
        return textwrap.dedent(blocks[-1]).strip("\n")
    return textwrap.dedent(response).strip()


def compose_program(response: str, reference: dict[str, Any]) -> str:
    """The program a code response is judged by.

    MBPP-style rows: the response as is (the code verifier takes its last ```python block). HumanEval rows
    (`code_prompt` and `entry_point` in the reference): a response that defines the entry point keeps its code, with
    the prompt's `import` lines put in front (the prompt imports what its signature uses, e.g. `List`); a response
    that does not (it continued the body) is appended to the prompt, as HumanEval's own harness does.
    """
    code_prompt = reference.get("code_prompt")
    entry_point = reference.get("entry_point")
    if not code_prompt or not entry_point:
        return response
    program = extract_program(response)
    if _defines(program, entry_point):
        imports = [line for line in code_prompt.splitlines() if re.match(r"\s*(import|from)\s+\w", line)]
        return "\n".join([*imports, program])
    # a body: the raw text keeps its indentation (extract_program dedents); a dedented fenced body is re-indented
    body = program if "```" in response else response.rstrip()
    first = next((line for line in body.splitlines() if line.strip()), "")
    if first and not first[0].isspace():
        body = "\n".join("    " + line if line.strip() else line for line in body.splitlines())
    return code_prompt + body


def _defines(program: str, name: str) -> bool:
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # deep nesting exhausts the parser's stack
        return re.search(rf"^\s*def\s+{re.escape(name)}\s*\(", program, re.MULTILINE) is not None
    return any(isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name for node in tree.body)


#: verifiers with a batch running, stopped when the interpreter exits (see `_stop_batches_at_exit`)
_RUNNING: weakref.WeakSet = weakref.WeakSet()


def _stop_batches_at_exit() -> None:
    """At interpreter exit (Ctrl-C in the main thread while a batch runs in another thread, as the trainer's reward
    thread does): cancel the queued programs and kill the running ones. Without this, the exit waits for the thread
    pool's workers, which run every queued program of the batch to its timeout."""
    for verifier in list(_RUNNING):
        verifier.abort()


# Runs before concurrent.futures' own exit hook (registered when ThreadPoolExecutor was imported above), which joins
# the pools' worker threads: threading's exit hooks run in reverse order of registration.
getattr(threading, "_register_atexit", lambda fn: None)(_stop_batches_at_exit)


class CodeVerifier(Verifier):
    """Runs each response's program against its tests in a sandbox, many at a time.

    Usable as a TRL reward function: `CodeVerifier()(prompts, completions, tests=[...])` returns 1.0
    (passed), 0.0 (failed) or `None` (cannot judge). Every result's `reason` is one of `REASONS` and its
    `details` hold the captured (capped) `stdout`/`stderr`, the run's duration and the sandbox's
    facts (failing test line, exception, refused operations, isolation in effect).

    Args:
        timeout_s: wall-clock limit per program, interpreter start-up included (seconds).
        cpu_time_s: CPU-time limit per program (whole seconds); `None` means `ceil(timeout_s)`.
        memory_mb: address-space limit per program (MiB).
        max_processes: extra threads/processes a program may create (`RLIMIT_NPROC`, non-root only).
        max_file_mb: largest file a program may write (MiB).
        max_disk_mb: total size a program may write in its folder (MiB; reason `"disk_quota"`).
        max_output_bytes: bytes of stdout and of stderr kept per program.
        num_workers: programs run concurrently; `None` means `os.cpu_count()`.
        strict_asserts: reject "always-equal" objects in assert comparisons (see [`Sandbox`]).
        entry_point_column: row column naming the function that HumanEval's `check` receives.
        sandbox: a configured [`Sandbox`]; when given, the limit arguments above are ignored.

    Attributes:
        stats: counters since construction (or `reset_stats()`): `calls` (programs verified),
            `batches`, `correct`, `incorrect`, `cannot_judge`, `timeouts` (as in the math verifier),
            `sandbox_seconds`, `cleanup_failures`
            (temporary directories left behind, since the sandbox was created) and one count per
            reason (`passed`, `timeout`, `memory`, `early_exit`, ...), updated at the end of each batch.
    """

    reference_column = "tests"
    #: columns tried, in order, when a row's `tests` is missing or empty
    fallback_columns = ("test", "test_list")
    __name__ = "code_verifier"

    def __init__(
        self,
        timeout_s: float = 10.0,
        cpu_time_s: int | None = None,
        memory_mb: int = 1024,
        max_processes: int = 32,
        max_file_mb: int = 16,
        max_disk_mb: int = 64,
        max_output_bytes: int = 16384,
        num_workers: int | None = None,
        strict_asserts: bool = True,
        entry_point_column: str = "entry_point",
        sandbox: Sandbox | None = None,
    ):
        self.sandbox = sandbox or Sandbox(
            timeout_s=timeout_s,
            cpu_time_s=cpu_time_s,
            memory_mb=memory_mb,
            max_processes=max_processes,
            max_file_mb=max_file_mb,
            max_disk_mb=max_disk_mb,
            max_output_bytes=max_output_bytes,
            strict_asserts=strict_asserts,
        )
        self.num_workers = int(num_workers) if num_workers is not None else (os.cpu_count() or 1)
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}.")
        self.entry_point_column = entry_point_column
        self._lock = threading.Lock()
        self._pools: set[ThreadPoolExecutor] = set()
        self.stats: dict[str, float] = {}
        self.reset_stats()

    def reset_stats(self) -> None:
        """Zero the counters in `stats`."""
        with self._lock:
            self.stats = {
                "calls": 0,
                "batches": 0,
                "correct": 0,
                "incorrect": 0,
                "cannot_judge": 0,
                "timeouts": 0,
                "sandbox_seconds": 0.0,
                "cleanup_failures": 0,
                **{reason: 0 for reason in REASONS},
            }

    # ------------------------------------------------------------------ reward-function form

    def __call__(self, prompts=None, completions=None, completion_ids=None, **columns: Any) -> list[float | None]:
        if completions is None:
            raise ValueError("A verifier needs `completions`.")
        names = (self.reference_column, *self.fallback_columns)
        if not any(name in columns for name in names):
            raise ValueError(
                f"{type(self).__name__} needs one of the dataset columns {list(names)}; got columns {sorted(columns)}."
            )
        n = len(completions)
        rows = [{k: v[i] for k, v in columns.items() if isinstance(v, list) and len(v) == n} for i in range(n)]
        references = [row.get(self.reference_column) for row in rows]
        results = self.verify_batch([completion_text(c) for c in completions], references, rows=rows)
        return [r.reward for r in results]

    # ------------------------------------------------------------------ verification

    def verify_batch(
        self, predictions: list[str], references: list[Any] | None = None, rows: list[dict] | None = None
    ) -> list[VerifyResult]:
        """Verify `predictions[i]` against `references[i]` (the tests), concurrently.

        Args:
            predictions: response texts.
            references: tests per response (string or list of assert strings); `None` entries fall back
                to the row's `test` / `test_list` columns.
            rows: all dataset columns per response (`entry_point`, `test_imports`, `test_setup_code`, ...).

        Returns:
            One [`VerifyResult`] per prediction, in order.
        """
        n = len(predictions)
        references = list(references) if references is not None else [None] * n
        rows = list(rows) if rows is not None else [{} for _ in range(n)]
        if len(references) != n or len(rows) != n:
            raise ValueError(f"Got {n} predictions, {len(references)} references and {len(rows)} rows.")
        jobs = [self._prepare(p, r, row or {}) for p, r, row in zip(predictions, references, rows)]
        to_run = [i for i, job in enumerate(jobs) if not isinstance(job, VerifyResult)]
        results: list[VerifyResult | None] = [job if isinstance(job, VerifyResult) else None for job in jobs]
        if to_run:
            pool = ThreadPoolExecutor(max_workers=min(self.num_workers, len(to_run)))
            self._pools.add(pool)
            _RUNNING.add(self)
            try:
                runs = pool.map(lambda i: self._run(*jobs[i]), to_run)
                for i, result in zip(to_run, runs):
                    results[i] = result
            except BaseException:  # Ctrl-C: stop the running programs instead of waiting for their timeouts
                pool.shutdown(wait=False, cancel_futures=True)
                self.sandbox.kill_running()
                raise
            finally:
                self._pools.discard(pool)
            pool.shutdown(wait=True)
        with self._lock:
            self.stats["batches"] += 1
            for result in results:
                self._count(result)
            self.stats["cleanup_failures"] = self.sandbox.cleanup_failures
        return results

    def abort(self) -> None:
        """Cancel the queued programs of every running batch, kill the running ones and refuse new ones (their
        `verify_batch` calls then end at once). Called at interpreter exit; callable from any thread; final."""
        for pool in list(self._pools):
            pool.shutdown(wait=False, cancel_futures=True)
        self.sandbox.stop()

    def _prepare(self, prediction: str, reference: Any, row: dict):
        """(program, tests, entry_point), or a final VerifyResult when nothing needs to run."""
        try:
            tests = _tests_text(reference)
            for name in self.fallback_columns:
                if tests:
                    break
                tests = _tests_text(row.get(name))
            setup = [_tests_text(row.get("test_imports")), _tests_text(row.get("test_setup_code"))]
        except TypeError as exc:
            return VerifyResult(Verdict.CANNOT_JUDGE, "invalid_tests", details={"message": str(exc)})
        if not tests:
            return VerifyResult(Verdict.CANNOT_JUDGE, "no_tests", details={"message": "the row has no tests"})
        tests = "\n".join([s for s in setup if s] + [tests])
        entry_point = row.get(self.entry_point_column) or None
        if entry_point is not None and (not isinstance(entry_point, str) or not entry_point.isidentifier()):
            return VerifyResult(
                Verdict.CANNOT_JUDGE,
                "invalid_tests",
                parsed_gold=tests,
                details={"message": f"invalid entry point {entry_point!r}"},
            )
        problem = _tests_problem(tests, entry_point)
        if problem is not None:
            return VerifyResult(Verdict.CANNOT_JUDGE, "invalid_tests", parsed_gold=tests, details={"message": problem})
        program = extract_program(prediction if isinstance(prediction, str) else str(prediction))
        if not program.strip():
            return VerifyResult(Verdict.INCORRECT, "no_code", parsed_prediction=program, parsed_gold=tests)
        return program, tests, entry_point

    def _run(self, program: str, tests: str, entry_point: str | None) -> VerifyResult:
        try:
            run = self.sandbox.run(program, tests, entry_point=entry_point)
        except Exception as exc:  # no space for the temporary directory, or a sandbox bug: counted, never raised
            logger.warning("Code verifier: the sandbox failed: %s", exc, exc_info=not isinstance(exc, OSError))
            run = SandboxResult("sandbox_error", details={"message": f"{type(exc).__name__}: {exc}"})
        verdict = (
            Verdict.CORRECT
            if run.passed
            else Verdict.CANNOT_JUDGE
            if run.status in _CANNOT_JUDGE
            else Verdict.INCORRECT
        )
        details = dict(run.details)
        details.update(stdout=run.stdout, stderr=run.stderr, returncode=run.returncode, duration_s=run.duration_s)
        return VerifyResult(verdict, run.status, parsed_prediction=program, parsed_gold=tests, details=details)

    def _count(self, result: VerifyResult) -> None:
        stats = self.stats
        stats["calls"] += 1
        stats[result.verdict.value] = stats.get(result.verdict.value, 0) + 1
        stats[result.reason] = stats.get(result.reason, 0) + 1
        stats["timeouts"] += result.reason == "timeout"
        stats["sandbox_seconds"] += float(result.details.get("duration_s", 0.0))


def _tests_text(value: Any) -> str:
    """Tests as one source string: a string as is, a list/tuple of statements joined by newlines."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip("\n") if value.strip() else ""
    if isinstance(value, (list, tuple)):
        return "\n".join(str(v) for v in value if isinstance(v, str) and v.strip())
    raise TypeError(f"Tests must be a string or a list of strings, got {type(value).__name__}: {value!r:.80}")


def _tests_problem(tests: str, entry_point: str | None) -> str | None:
    """Why `tests` cannot judge anything (does not parse, checks nothing), or None if they can."""
    try:
        tree = ast.parse(tests)
    except (SyntaxError, ValueError) as exc:
        return f"the tests do not parse: {exc}"
    top_level = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    has_assert = any(isinstance(node, ast.Assert) for node in ast.walk(tree))
    if "check" in top_level and entry_point is None and not _calls(tree, "check"):
        return "the tests define check(candidate) but the row has no entry point"
    if not has_assert and not any(name.startswith(("test", "Test")) for name in top_level):
        return "the tests contain no assert and no test function"
    return None


def _calls(tree: ast.Module, name: str) -> bool:
    return any(
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id == name
        for node in tree.body
    )
