"""The study engine: plan the runs ("cells"), run the missing ones (resumable), choose on validation, summarize,
and write the report. What one cell does is the runner's business (see [`~rasft_trl.study.runner`]).

Order of work: (1) selection cells, one per family and grid value, seed `selection.seed`, evaluated on the selection
set only; (2) the chosen value per family; (3) test cells, seed by seed (an interrupted study has every method at
the same number of seeds), evaluated on the report sets; (4) the report: mean and 95% Student-t interval over seeds
per set, compute, mechanism numbers, per-seed values, and the paired differences of `comparisons`.

Every finished cell is one JSON file `<output_dir>/cells/<cell>.json`, written last; a rerun skips those cells.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, Callable

from .mechanism import generated_tokens, mechanism_summary
from .spec import StudySpec
from .stats import mean_interval, paired_difference

#: a runner: (cell, spec, work folder of the cell, slot of the job running it, jobs) -> the cell's JSON-ready record
Runner = Callable[["Cell", StudySpec, Path, int, int], dict]


class StudyError(RuntimeError):
    """A cell failed (its log is named) or the spec cannot be run."""


@dataclass(frozen=True)
class Cell:
    """One run: `method` (or `base`, the starting model untrained) trained with `seed` and the selected `value`
    (`None` when nothing is selected), evaluated on `sets`; `phase` is `select` or `test`."""

    method: str
    seed: int
    value: Any
    sets: tuple[str, ...]
    phase: str
    parameter: str = "learning_rate"

    @property
    def name(self) -> str:
        tag = "lr" if self.parameter == "learning_rate" else self.parameter
        suffix = "" if self.value is None else f"-{tag}{self.value:g}" if isinstance(self.value, (int, float)) \
            else f"-{tag}{self.value}"
        return f"{self.phase}-{self.method}-seed{self.seed}{suffix}"

    @property
    def learning_rate(self) -> Any:  # the demo's name for the selected value
        return self.value


# ---------------------------------------------------------------------------------------------- plan


def selection_cells(spec: StudySpec) -> list[Cell]:
    """One cell per family and grid value of its parameter (the family's selector trains), evaluated on the
    selection set only."""
    cells = []
    for family in spec.families:
        parameter, grid, _ = spec.selection_of(family)
        cells += [Cell(spec.selector(family), spec.selection_seed, value, (spec.selection_set,), "select", parameter)
                  for value in grid]
    return cells


def choose(spec: StudySpec, records: dict[str, dict], ties: str | None = None) -> dict[str, dict]:
    """Per family with a grid: the selection set's accuracy of each value and the chosen one (ties: the family's
    `ties`, else `ties`, else the spec's: the smaller value by default). Families without a grid are left out."""
    out = {}
    for family in spec.families:
        parameter, grid, family_ties = spec.selection_of(family)
        if not grid:
            continue
        if family not in spec.family_selection or "ties" not in spec.family_selection[family]:
            family_ties = ties or family_ties
        scores = {}
        for value in grid:
            cell = Cell(spec.selector(family), spec.selection_seed, value, (spec.selection_set,), "select", parameter)
            if cell.name not in records:
                raise StudyError(f"selection run {cell.name} has not finished; run the study (without --report-only)")
            scores[value] = records[cell.name]["eval"][spec.selection_set]["accuracy"]
        order = sorted(scores, reverse=(family_ties == "larger"))
        best = max(order, key=lambda v: scores[v])  # max keeps the first of equal scores
        out[family] = {"selector": spec.selector(family), "parameter": parameter, "validation_accuracy": scores,
                       "chosen": best}
    return out


def report_cells(spec: StudySpec, chosen: dict[str, dict]) -> list[Cell]:
    """The `base` cell (when the spec has a baseline) and every method x seed, seed-major, each with its family's
    chosen value (none for a family without a grid)."""
    def cell(method: str, seed: int) -> Cell:
        family = spec.methods[method].family
        parameter = spec.selection_of(family)[0]
        value = chosen[family]["chosen"] if family in chosen else None
        return Cell(method, seed, value, spec.report_sets, "test", parameter)

    cells = []
    if spec.baseline_model or spec.runner != "recipe":
        cells.append(Cell("base", spec.seeds[0], 0.0 if spec.selection_grid else None, spec.report_sets, "test",
                          spec.selection_parameter))
    for seed in spec.seeds:
        cells += [cell(m, seed) for m in spec.methods]
    return cells


# ---------------------------------------------------------------------------------------------- run


def resolve_runner(spec: StudySpec) -> Runner:
    """`recipe` (the default: `rasft-trl train` + `rasft-trl eval` per cell) or a `module:function` path."""
    if spec.runner == "recipe":
        from .runner import run_recipe_cell

        return run_recipe_cell
    module, sep, name = spec.runner.partition(":")
    if not sep:
        raise StudyError(f"runner {spec.runner!r}: use 'recipe' or 'package.module:function'.")
    try:
        return getattr(import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise StudyError(f"runner {spec.runner!r} cannot be imported: {exc}") from exc


def cells_folder(spec: StudySpec) -> Path:
    return Path(spec.output_dir) / "cells"


def load_records(spec: StudySpec) -> dict[str, dict]:
    """Every finished cell's record, by cell name."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(cells_folder(spec).glob("*.json"))}


def run_cells(cells: list[Cell], spec: StudySpec, runner: Runner, jobs: int = 1) -> list[str]:
    """Run the cells without a record, `jobs` at a time; returns the failures (`cell: message`), after every cell
    that can run has run. A finished cell's record is written atomically, so a killed study loses only the cells
    in flight (their runners resume them where they can)."""
    folder = cells_folder(spec)
    folder.mkdir(parents=True, exist_ok=True)
    todo = [c for c in cells if not (folder / f"{c.name}.json").is_file()]
    print(f"[study] {len(cells) - len(todo)} of {len(cells)} runs already done; {len(todo)} to go", flush=True)
    failures: list[str] = []

    def one(cell: Cell, slot: int) -> None:
        work = Path(spec.output_dir) / "runs" / cell.name  # made by the runners that keep files there
        start = time.perf_counter()
        record = runner(cell, spec, work, slot, jobs)
        record.setdefault("cell", asdict(cell))
        record.setdefault("cell_wall_seconds", round(time.perf_counter() - start, 1))
        tmp = folder / f"{cell.name}.json.tmp"
        tmp.write_text(json.dumps(record, indent=1, default=str))
        os.replace(tmp, folder / f"{cell.name}.json")

    if jobs <= 1:
        for i, cell in enumerate(todo, 1):
            print(f"[study] ({i}/{len(todo)}) {cell.name}", flush=True)
            try:
                one(cell, 0)
            except Exception as exc:  # noqa: BLE001 - a failed cell is reported, the others still run
                failures.append(f"{cell.name}: {exc}")
                print(f"[study] FAILED {cell.name}: {exc}", flush=True)
        return failures
    from concurrent.futures import ThreadPoolExecutor, as_completed

    slots = threading.local()
    counter = iter(range(jobs))
    lock = threading.Lock()

    def slot() -> int:
        if not hasattr(slots, "value"):
            with lock:
                slots.value = next(counter)
        return slots.value

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="rasft-study") as pool:
        futures = {pool.submit(lambda c: one(c, slot()), cell): cell for cell in todo}
        for i, future in enumerate(as_completed(futures), 1):
            cell = futures[future]
            try:
                future.result()
                print(f"[study] ({i}/{len(todo)}) finished {cell.name}", flush=True)
            except Exception as exc:  # noqa: BLE001
                failures.append(f"{cell.name}: {exc}")
                print(f"[study] FAILED {cell.name}: {exc}", flush=True)
    return failures


# ---------------------------------------------------------------------------------------------- summary


def _mean_of(values: list) -> Any:
    values = [v for v in values if v is not None]
    if not values:
        return None
    if isinstance(values[0], (list, tuple)):
        return [sum(v[i] for v in values) / len(values) for i in range(len(values[0]))]
    return sum(values) / len(values)


MECHANISM_KEYS = ("rollout_accuracy_first_last", "expert_coef_first_last", "solvability_first_last",
                  "rollout_accuracy_mean", "min_problems_routed", "rollout_targets", "rollouts_drawn",
                  "rollouts_truncated")


def summarize(spec: StudySpec, chosen: dict[str, dict], records: dict[str, dict]) -> dict[str, Any]:
    """Per method (and `base`): per report set the mean, 95% interval and per-seed values; compute; mechanism.
    An unfinished study reports the seeds it has."""
    rows = {}
    cells = report_cells(spec, chosen)
    for method in ("base",) + tuple(spec.methods):
        mine = [c for c in cells if c.method == method]
        recs = [(c, records[c.name]) for c in mine if c.name in records]
        if not recs:
            continue
        value = mine[0].value
        if method == "base":
            value = None
        elif value is None:  # no choice for this arm: the value its overrides pin, if any
            value = spec.methods[method].overrides.get(mine[0].parameter or spec.selection_parameter)
        row: dict[str, Any] = {"seeds": len(recs), "value": value,
                               "parameter": mine[0].parameter}
        for split in spec.report_sets:
            per_seed = {c.seed: r["eval"][split]["accuracy"] for c, r in recs}
            mean, half = mean_interval(list(per_seed.values()))
            row[split] = {"mean": mean, "ci95": half, "per_seed": per_seed,
                          "correct_per_seed": {c.seed: r["eval"][split].get("num_correct") for c, r in recs}}
        for key in ("train_wall_seconds", "train_cpu_seconds", "rollout_tokens"):
            row[key] = _mean_of([r.get(key) for _, r in recs])
        row["generated_tokens"] = _mean_of([generated_tokens(r.get("log_history") or []) for _, r in recs])
        # read again from the log where the record keeps it (the summary's definition may be newer than the run)
        mechanisms = [mechanism_summary(r["log_history"]) if r.get("log_history") else r.get("mechanism")
                      for _, r in recs]
        mechanisms = [m for m in mechanisms if m]
        if mechanisms:
            row["mechanism"] = {key: _mean_of([m.get(key) for m in mechanisms]) for key in MECHANISM_KEYS}
        rows[method] = row
    return rows


def differences(spec: StudySpec, rows: dict[str, Any]) -> list[dict[str, Any]]:
    """The paired differences `a - b` of every comparison and report set (seeds both arms finished)."""
    out = []
    for a, b in spec.comparisons:
        if a not in rows or b not in rows:
            continue
        entry: dict[str, Any] = {"a": a, "b": b}
        for split in spec.report_sets:
            if "base" in (a, b):  # one base value: compare every seed of the other arm against it
                base = rows["base"][split]["per_seed"]
                only = next(iter(base.values()))
                left = rows[a][split]["per_seed"] if a != "base" else {s: only for s in rows[b][split]["per_seed"]}
                right = rows[b][split]["per_seed"] if b != "base" else {s: only for s in rows[a][split]["per_seed"]}
            else:
                left, right = rows[a][split]["per_seed"], rows[b][split]["per_seed"]
            entry[split] = paired_difference(left, right)
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------- report


def _pct(mean: float, half: float, seeds: int) -> str:
    return f"{100 * mean:.1f}" + (f" ± {100 * half:.1f}" if seeds > 1 else " (1 seed)")


def format_results(spec: StudySpec, rows: dict[str, Any]) -> str:
    """Markdown table: accuracy mean ± 95% interval per report set, compute, mechanism."""
    sets = list(spec.report_sets)
    head = (["method", "seeds", spec.selection_parameter] + sets
            + ["train wall s", "train CPU s", "rollout tokens generated", "RASFT target tokens",
               "rollout acc first→last", "expert coef first→last"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, r in rows.items():
        mech = r.get("mechanism") or {}

        def pair(key: str, fmt: str) -> str:
            v = mech.get(key)
            return "–" if v is None else f"{v[0]:{fmt}} → {v[1]:{fmt}}"

        def num(key: str) -> str:
            return "–" if r.get(key) is None else f"{r[key]:.0f}"

        value = r["value"]
        value = "–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        if r["value"] is not None and r.get("parameter", spec.selection_parameter) != spec.selection_parameter:
            value = f"{r['parameter']}={value}"
        cells = [method, str(r["seeds"]), value] + [_pct(r[s]["mean"], r[s]["ci95"], r["seeds"]) for s in sets]
        cells += [num("train_wall_seconds"), num("train_cpu_seconds"), num("generated_tokens"), num("rollout_tokens"),
                  pair("rollout_accuracy_first_last", ".2f"), pair("expert_coef_first_last", ".3f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_differences(spec: StudySpec, diffs: list[dict[str, Any]]) -> str:
    """Markdown table of the paired differences, in points, with the seeds paired."""
    head = ["comparison"] + list(spec.report_sets) + ["seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in diffs:
        cells = [f"{d['a']} − {d['b']}"]
        seeds = "–"
        for split in spec.report_sets:
            p = d[split]
            if p is None:
                cells.append("–")
                continue
            seeds = str(len(p["seeds"]))
            mark = " *" if p["excludes_zero"] else ""
            spread = f" ± {100 * p['ci95']:.1f}" if len(p["seeds"]) > 1 else " (1 seed, no interval)"
            cells.append(f"{100 * p['mean']:+.1f}{spread}{mark}")
        lines.append("| " + " | ".join(cells + [seeds]) + " |")
    return "\n".join(lines)


def format_per_seed(spec: StudySpec, rows: dict[str, Any]) -> str:
    """Markdown table: every seed's accuracy (%) per report set (correct answers in brackets where known)."""
    seeds = sorted({s for r in rows.values() for s in r[spec.report_sets[0]]["per_seed"]})
    lines = ["| method | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for method, r in rows.items():
        cells = []
        for s in seeds:
            parts = []
            for split in spec.report_sets:
                if s not in r[split]["per_seed"]:
                    continue
                correct = r[split]["correct_per_seed"].get(s)
                parts.append(f"{100 * r[split]['per_seed'][s]:.1f}" + (f" ({correct})" if correct is not None else ""))
            cells.append(", ".join(parts))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(spec: StudySpec, chosen: dict, rows: dict, diffs: list, failures: list[str],
                 seconds: float) -> Path:
    """`study.md` (tables) and `study.json` (every number, per seed) in the output folder."""
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the spec as run, less `base_dir` (where its file lay on the machine that ran it: not part of the study)
    as_run = {k: v for k, v in asdict(spec).items() if k != "base_dir"}
    summary = {"spec": {**as_run, "methods": {k: asdict(v) for k, v in spec.methods.items()}},
               "chosen": chosen, "methods": rows, "differences": diffs, "failures": failures,
               "wall_seconds": seconds}
    (out / "study.json").write_text(json.dumps(summary, indent=2, default=str))
    sets = ", ".join(spec.report_sets)
    parts = [f"# Study: {spec.name}", "",
             f"Accuracy in %, mean over seeds ± 95% Student-t interval ({sets}); per run (mean over seeds): training "
             "wall and CPU seconds (CPU: user + system time of the training process where the runner records it, as "
             "the demo's does; – otherwise), rollout tokens generated (the log's running total "
             "`rollouts/generated_tokens`, or for older logs `completions/mean_length` x `rollouts/drawn` over the "
             "steps; – where no rollout was drawn or logged) and RASFT target tokens (rollout tokens trained on as pool "
             "members, `tokens/rollout`); mechanism numbers averaged over seeds (first → last fifth of the steps).",
             "",
             format_results(spec, rows), ""]
    if chosen:
        if all(c["parameter"] == spec.selection_parameter for c in chosen.values()):
            parts.append(f"Selection of `{spec.selection_parameter}` on `{spec.selection_set}` (seed "
                         f"{spec.selection_seed}):")
        else:  # a family chose its own parameter: name the default once, the others on their lines
            parts.append(f"Selection on `{spec.selection_set}` (seed {spec.selection_seed}; "
                         f"`{spec.selection_parameter}` unless a line names another parameter):")
        for family, c in chosen.items():
            scores = ", ".join(f"{v:g} → {100 * a:.1f}%" if isinstance(v, float) else f"{v} → {100 * a:.1f}%"
                               for v, a in c["validation_accuracy"].items())
            what = "" if c["parameter"] == spec.selection_parameter else f" `{c['parameter']}`"
            parts.append(f"- `{family}`{what} (chosen by {c['selector']}): {scores}; chosen **{c['chosen']}**")
        parts.append("")
    parts += ["Per seed (accuracy %, correct answers in brackets where known; sets in the order " + sets + "):", "",
              format_per_seed(spec, rows), ""]
    if diffs:
        parts += ["Paired by seed (same seed = same initialization, data order and sampling), a − b in points, mean "
                  "± 95% interval; * marks an interval that excludes zero:", "", format_differences(spec, diffs), ""]
    if failures:
        parts += ["Runs that failed (not in the tables):", ""] + [f"- {f}" for f in failures] + [""]
    (out / "study.md").write_text("\n".join(parts))
    return out / "study.md"


def run_study(spec: StudySpec, jobs: int = 1, report_only: bool = False, ties: str | None = None,
              runner: Runner | None = None, selection_only: bool = False) -> dict[str, Any]:
    """Plan, run what is missing, and report. Returns `{"chosen", "rows", "differences", "failures", "report"}`;
    failed cells are listed (and raise at the end) after the report of everything else is written. With
    `selection_only`, stop after the choices (no test run, no report: `rows` is empty)."""
    start = time.perf_counter()
    runner = runner or resolve_runner(spec)
    failures: list[str] = []
    if spec.selects and not report_only:
        cells = selection_cells(spec)
        print(f"[study] phase 1: choose on {spec.selection_set} ({len(cells)} runs)", flush=True)
        failures += run_cells(cells, spec, runner, jobs)
        if failures:
            raise StudyError("selection runs failed, nothing to choose from:\n" + "\n".join(failures))
    chosen = choose(spec, load_records(spec), ties) if spec.selects else {}
    for family, c in chosen.items():
        print(f"[study] {family}: {c['parameter']} {c['chosen']} ({c['validation_accuracy']})", flush=True)
    if selection_only:
        return {"chosen": chosen, "rows": {}, "differences": [], "failures": failures, "report": None}
    if not report_only:
        cells = report_cells(spec, chosen)
        print(f"[study] phase 2: {len(cells)} runs evaluated on {', '.join(spec.report_sets)}", flush=True)
        failures += run_cells(cells, spec, runner, jobs)
    rows = summarize(spec, chosen, load_records(spec))
    diffs = differences(spec, rows)
    report = write_report(spec, chosen, rows, diffs, failures, time.perf_counter() - start)
    print("\n" + report.read_text(), flush=True)
    return {"chosen": chosen, "rows": rows, "differences": diffs, "failures": failures, "report": str(report)}
