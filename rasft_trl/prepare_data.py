"""The paper's training sets as local dataset folders (`rasft-trl prepare-data`).

- **NuminaMath-CoT** (math recipes): a seeded random sample of `num_rows` problems (paper: 10k). The gold answer
  is the last `\\boxed{}` of the solution. A row is dropped, and counted by reason, when its problem or solution is
  empty (`empty_problem`, `empty_solution`), its gold cannot be extracted (`gold_no_answer`), or the math verifier
  cannot judge answers against it (`gold_unparseable`: a probe answer gets "cannot judge"). Rows are drawn in a
  seeded random order until `num_rows` are kept.
- **KodCode-V1-SFT-R1** (code recipes): the same seeded sampling; prompt = `question`, expert demonstration =
  `r1_solution`, tests = `test` (pytest code, `from solution import ...`). Dropped: empty fields, tests the code
  verifier cannot use (`invalid_tests`), tests that cannot judge any program although they parse, found without
  running anything (`tests_need_fixtures`: a test function takes pytest fixtures, which the sandbox does not provide;
  `tests_missing_module`: the tests import a module other than `solution` that is not installed, `from main import`,
  or a relative import), and with `check_solutions=True` rows whose demonstration fails its own tests in the sandbox
  (`reference_failed`; `reference_unjudged` when the sandbox could not judge).

For both: an exact duplicate of a row examined before (same prompt, demonstration and tests) is dropped
(`duplicate`), and a row whose check raises (a pathological row: a 3,000-deep expression exhausts Python's parser) is
dropped (`check_error`, logged) instead of stopping the run. `drop_duplicates=False` / `drop_unjudgeable=False` keep
duplicates / rows with `tests_need_fixtures` or `tests_missing_module` (they then go on to the other checks), counted
in `flagged`.

Both write `<output_dir>/train.jsonl` with the columns the trainer checks (`prompt`, `completion`, and `answer` or
`tests`) plus `source_index` (row of the source split), and `<output_dir>/prepare_data.json` with the counts and
settings. A recipe points to the folder with `dataset_name: <output_dir>` (`datasets.load_dataset` reads the
`train.jsonl` inside it as the train split) and `prompt_column: prompt`, `completion_column: completion`,
`answer_column: answer`.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.machinery
import json
import logging
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

TRAIN_FILE = "train.jsonl"
STATS_FILE = "prepare_data.json"
#: an answer no gold equals; a gold the verifier cannot judge it against cannot judge rollouts either
PROBE_ANSWER = "\\boxed{0.123456789012345}"


@dataclass(frozen=True)
class SourceSpec:
    """A training set on the Hub: id, split, revision, and the columns read."""

    name: str
    hub_id: str
    split: str
    revision: str
    columns: dict[str, str]


SOURCES = {
    "numina": SourceSpec(
        "numina", "AI-MO/NuminaMath-CoT", "train", "9d8d210c9f6a36c8f3cd84045668c9b7800ef517",
        {"prompt": "problem", "completion": "solution", "source": "source"},
    ),
    "kodcode": SourceSpec(
        "kodcode", "KodCode/KodCode-V1-SFT-R1", "train", "main",
        {"prompt": "question", "completion": "r1_solution", "tests": "test", "source": "subset"},
    ),
}


@dataclass
class PrepareStats:
    """What `prepare` did: rows examined in the seeded order, kept, and dropped per reason."""

    dataset: str
    source: str
    num_requested: int
    num_source_rows: int
    examined: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    #: rows found duplicate / unjudgeable but not dropped for it (`drop_duplicates` / `drop_unjudgeable` off)
    flagged: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)


def seeded_order(num_rows: int, seed: int) -> list[int]:
    """A seeded random permutation of `range(num_rows)` (Python's `random.Random(seed).shuffle`)."""
    order = list(range(num_rows))
    random.Random(seed).shuffle(order)
    return order


def load_source(spec: SourceSpec, data_file: str | None = None, revision: str | None = None):
    """The source split: a local jsonl / json / parquet / csv file in the Hub schema, else the Hub dataset."""
    from datasets import load_dataset

    if data_file is not None:
        from .evaluation.benchmarks import read_local_rows

        return read_local_rows(data_file), os.path.abspath(data_file)
    try:
        dataset = load_dataset(spec.hub_id, split=spec.split, revision=revision or spec.revision)
    except Exception as exc:  # the Hub is unreachable, ...: say how to run offline
        raise RuntimeError(
            f"Could not load {spec.hub_id} ({spec.split}, revision {revision or spec.revision}): "
            f"{type(exc).__name__}: {exc}. Offline, pass a local file in the same schema (--data-file)."
        ) from exc
    return dataset, f"hub:{spec.hub_id}@{revision or spec.revision}"


def prepare(
    dataset: str,
    output_dir: str,
    num_rows: int = 10_000,
    seed: int = 42,
    data_file: str | None = None,
    column_map: dict[str, str] | None = None,
    revision: str | None = None,
    check_solutions: bool = False,
    batch_size: int = 256,
    verifier_workers: int | None = None,
    code_timeout: float = 10.0,
    drop_duplicates: bool = True,
    drop_unjudgeable: bool = True,
) -> PrepareStats:
    """Write a training set folder; return its counts (also written to `prepare_data.json`).

    Args:
        dataset: `"numina"` or `"kodcode"`.
        output_dir: folder to write (`train.jsonl`, `prepare_data.json`).
        num_rows: rows to keep (paper: 10,000); fewer when the source runs out.
        seed: seed of the random order rows are drawn in.
        data_file: local file in the Hub schema (offline).
        column_map: role (`prompt`, `completion`, `tests`, `source`) -> column, overriding the Hub names.
        revision: Hub revision overriding the pinned one.
        check_solutions: KodCode only: run each demonstration against its tests and drop failures.
        batch_size: rows checked together.
        verifier_workers: verifier processes / concurrent programs (`None`: the verifiers' defaults).
        code_timeout: seconds per program in the sandbox.
        drop_duplicates: drop exact duplicates of an examined row (else keep them, counted in `flagged`).
        drop_unjudgeable: KodCode: drop rows whose tests cannot judge any program (`tests_need_fixtures`,
            `tests_missing_module`; else keep them for the other checks, counted in `flagged`).
    """
    if dataset not in SOURCES:
        raise ValueError(f"Unknown dataset {dataset!r}; choose from {sorted(SOURCES)}.")
    if num_rows < 1:
        raise ValueError(f"num_rows must be >= 1, got {num_rows}.")
    spec = SOURCES[dataset]
    columns = {**spec.columns, **(column_map or {})}
    unknown = sorted(set(column_map or {}) - set(spec.columns))
    if unknown:
        raise ValueError(f"Unknown role(s) {unknown} in the column map; roles: {sorted(spec.columns)}.")
    start = time.perf_counter()
    rows, source = load_source(spec, data_file, revision)
    names = set(rows.column_names) if hasattr(rows, "column_names") else set(rows[0]) if len(rows) else set()
    missing = [f"{role} (column {col!r})" for role, col in columns.items() if col not in names and role != "source"]
    if missing:
        raise ValueError(f"{source} lacks {', '.join(missing)}; it has {sorted(names)}. Use a column map.")
    stats = PrepareStats(dataset, source, num_rows, len(rows), settings=dict(
        seed=seed, revision=revision or spec.revision, columns=columns, check_solutions=check_solutions,
        drop_duplicates=drop_duplicates, drop_unjudgeable=drop_unjudgeable,
    ))
    checker = _numina_checker(verifier_workers) if dataset == "numina" else _kodcode_checker(
        check_solutions, verifier_workers, code_timeout
    )
    screen = _Screen(drop_duplicates, drop_unjudgeable, _kodcode_static_reason if dataset == "kodcode" else None)
    dropped: Counter = Counter()
    flagged: Counter = Counter()
    kept: list[dict] = []
    order = seeded_order(len(rows), seed)
    with tqdm(total=num_rows, desc=f"Preparing {spec.hub_id}", unit="row") as bar:
        for batch in _batches(order, batch_size):
            if len(kept) >= num_rows:
                break
            records = [_record(rows[i], i, columns) for i in batch]
            screened = [screen(record) for record in records]  # (drop reason, flag): the cheap checks first
            todo = [i for i, (reason, _) in enumerate(screened) if reason is None]
            checked = dict(zip(todo, _check_rows(checker, [records[i] for i in todo])))
            for i, record in enumerate(records):
                if len(kept) >= num_rows:
                    break
                stats.examined += 1
                reason, flag = screened[i]
                reason = reason or checked[i]
                if flag is not None:
                    flagged[flag] += 1
                if reason is None:
                    kept.append(record)
                    bar.update(1)
                else:
                    dropped[reason] += 1
    stats.kept, stats.dropped, stats.flagged = len(kept), dict(sorted(dropped.items())), dict(sorted(flagged.items()))
    stats.seconds = round(time.perf_counter() - start, 2)
    write_folder(output_dir, kept, stats)
    logger.info("%s: kept %d of %d examined rows (dropped %s)", dataset, stats.kept, stats.examined, stats.dropped)
    return stats


def _batches(order: list[int], size: int) -> Iterator[list[int]]:
    position = 0
    while position < len(order):
        yield order[position : position + size]
        position += size


def _record(row: dict, index: int, columns: dict[str, str]) -> dict[str, Any]:
    record = {role: row.get(col) for role, col in columns.items() if role != "source"}
    record["source"] = str(row.get(columns["source"], "")) if "source" in columns else ""
    record["source_index"] = index
    return record


def _empty(value: Any) -> bool:
    return value is None or not isinstance(value, str) or not value.strip()


class _Screen:
    """The checks made before a row reaches the verifiers, cheapest first: an exact duplicate of an examined row
    (`duplicate`), then the dataset's static check (`static_reason`, see `_kodcode_static_reason`).

    Called once per row in the seeded order; returns (drop reason, flag): a reason the row is dropped for (the
    verifiers are then skipped), and a reason it would have been dropped for with the `drop_*` option on."""

    def __init__(self, drop_duplicates: bool, drop_unjudgeable: bool,
                 static_reason: Callable[[dict], tuple[str | None, bool]] | None):
        self.drop_duplicates = drop_duplicates
        self.drop_unjudgeable = drop_unjudgeable
        self.static_reason = static_reason
        self.seen: set[bytes] = set()

    def __call__(self, record: dict) -> tuple[str | None, str | None]:
        key = _content_key(record)
        if key in self.seen:
            return ("duplicate", None) if self.drop_duplicates else (None, "duplicate")
        self.seen.add(key)
        if self.static_reason is None:
            return None, None
        reason, always = self.static_reason(record)
        if reason is None or always or self.drop_unjudgeable:
            return reason, None
        return None, reason


def _content_key(record: dict) -> bytes:
    """What makes two rows the same training row: every role but the source (prompt, demonstration, tests)."""
    content = {role: value for role, value in record.items() if role not in ("source", "source_index")}
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _check_rows(checker: Callable[[list[dict]], list[str | None]], records: list[dict]) -> list[str | None]:
    """The checker's drop reasons for `records`; when it raises, each row is checked alone, and a row whose check
    raises is dropped as `check_error` (logged): a pathological row never stops the run."""
    if not records:
        return []
    try:
        return checker(records)
    except Exception:
        reasons: list[str | None] = []
        for record in records:
            try:
                reasons.append(checker([record])[0])
            except Exception as exc:
                logger.warning("Row %s could not be checked (%s: %.200s); dropped as check_error",
                               record.get("source_index"), type(exc).__name__, exc)
                reasons.append("check_error")
        return reasons


def _kodcode_static_reason(record: dict) -> tuple[str | None, bool]:
    """(why the row's tests cannot judge any program, whether that reason drops the row whatever the options), found
    without running anything: `invalid_tests` (always) when the tests do not parse (a 3,000-deep expression makes
    Python's parser raise RecursionError), `tests_need_fixtures` or `tests_missing_module` (see the module docs).
    Rows with an empty field are left to the checker, which names the field."""
    if any(_empty(record.get(role)) for role in ("prompt", "completion", "tests")):
        return None, False
    try:
        tree = ast.parse(record["tests"])
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "invalid_tests", True
    if _imports_missing_module(tree):
        return "tests_missing_module", False
    if _needs_fixtures(tree):
        return "tests_need_fixtures", False
    return None, False


#: the module the sandbox makes of the program (`from solution import f`)
SOLUTION_MODULE = "solution"


def _imports_missing_module(tree: ast.Module) -> bool:
    """The tests import a module the sandbox will not find: a relative import, or a top-level module other than
    `solution` that this interpreter (the one the sandbox runs) does not have (`from main import f`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level or not node.module:
                return True
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        if any(not _installed(name.partition(".")[0]) for name in names):
            return True
    return False


@functools.lru_cache(maxsize=4096)
def _installed(top_level: str) -> bool:
    """`top_level` is `solution`, a built-in module, or found on `sys.path` (without the current folder, which the
    sandbox's isolated interpreter does not search)."""
    if top_level == SOLUTION_MODULE or top_level in sys.builtin_module_names:
        return True
    path = [entry for entry in sys.path if entry and os.path.abspath(entry) != os.getcwd()]
    return importlib.machinery.PathFinder.find_spec(top_level, path) is not None


def _needs_fixtures(tree: ast.Module) -> bool:
    """A test the sandbox calls (`test*` functions, `test*` methods of `Test*` classes) has an argument without a
    default that no `@pytest.mark.parametrize` provides: a pytest fixture."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            if _missing_arguments(node, bound=False):
                return True
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in item.decorator_list)
                    if _missing_arguments(item, bound=not static):
                        return True
    return False


def _missing_arguments(function: ast.FunctionDef, bound: bool) -> bool:
    arguments = function.args
    positional = [a.arg for a in arguments.posonlyargs + arguments.args]
    required = positional[int(bound) : len(positional) - len(arguments.defaults)]
    required += [a.arg for a, default in zip(arguments.kwonlyargs, arguments.kw_defaults) if default is None]
    provided: set[str] = set()
    for decorator in function.decorator_list:
        names = _parametrized_names(decorator)
        if names is None:
            return False  # parameters the analysis cannot read: give the row the benefit of the doubt
        provided |= names
    return any(name not in provided for name in required)


def _parametrized_names(decorator: ast.expr) -> set[str] | None:
    """The argument names a `@pytest.mark.parametrize(...)` decorator provides (empty for other decorators), None
    when they are not literal."""
    if not isinstance(decorator, ast.Call):
        return set()
    func = decorator.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name != "parametrize":
        return set()
    first = decorator.args[0] if decorator.args else None
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return {part.strip() for part in first.value.split(",") if part.strip()}
    if isinstance(first, (ast.List, ast.Tuple)) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in first.elts):
        return {e.value for e in first.elts}
    return None


def _numina_checker(workers: int | None) -> Callable[[list[dict]], list[str | None]]:
    """Drop reasons for NuminaMath rows (None = keep); sets each kept row's `answer` to its extracted gold."""
    from .verifiers import get_verifier
    from .verifiers.math_normalize import extract_gold

    verifier = get_verifier("math", **({"num_workers": workers} if workers else {}))

    def check(records: list[dict]) -> list[str | None]:
        reasons: list[str | None] = [None] * len(records)
        probe = []
        for i, record in enumerate(records):
            if _empty(record["prompt"]):
                reasons[i] = "empty_problem"
            elif _empty(record["completion"]):
                reasons[i] = "empty_solution"
            else:
                gold, _ = extract_gold(record["completion"])
                if gold is None or "\\boxed" not in record["completion"]:
                    reasons[i] = "gold_no_answer"
                else:
                    record["answer"] = gold
                    probe.append(i)
        if probe:
            results = verifier.verify_batch([PROBE_ANSWER] * len(probe), [records[i]["answer"] for i in probe])
            for i, result in zip(probe, results):
                if result.verdict.value == "cannot_judge":
                    reasons[i] = "gold_unparseable"
        return reasons

    return check


def _kodcode_checker(check_solutions: bool, workers: int | None, timeout: float):
    """Drop reasons for KodCode rows (None = keep); with `check_solutions`, the demonstration must pass its tests."""
    from .verifiers import get_verifier

    verifier = get_verifier("code", timeout_s=timeout, **({"num_workers": workers} if workers else {}))

    def check(records: list[dict]) -> list[str | None]:
        reasons: list[str | None] = [None] * len(records)
        for i, record in enumerate(records):
            if _empty(record["prompt"]):
                reasons[i] = "empty_question"
            elif _empty(record["completion"]):
                reasons[i] = "empty_solution"
            elif _empty(record["tests"]):
                reasons[i] = "empty_tests"
        todo = [i for i, reason in enumerate(reasons) if reason is None]
        if todo:
            if check_solutions:
                results = verifier.verify_batch([records[i]["completion"] for i in todo],
                                                [records[i]["tests"] for i in todo])
            else:  # tests only: an empty program is "no_code" when the tests are usable, else why they are not
                results = verifier.verify_batch([""] * len(todo), [records[i]["tests"] for i in todo])
            for i, result in zip(todo, results):
                if result.reason in ("no_tests", "invalid_tests"):
                    reasons[i] = "invalid_tests"
                elif check_solutions and result.verdict.value == "cannot_judge":
                    reasons[i] = "reference_unjudged"
                elif check_solutions and not result.correct:
                    reasons[i] = "reference_failed"
        return reasons

    return check


def write_folder(output_dir: str, rows: list[dict], stats: PrepareStats) -> None:
    """Write `train.jsonl` (atomically) and `prepare_data.json`."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, TRAIN_FILE)
    partial = f"{path}.{os.getpid()}.part"
    with open(partial, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(partial, path)
    with open(os.path.join(output_dir, STATS_FILE), "w") as handle:
        json.dump(asdict(stats), handle, indent=2)
