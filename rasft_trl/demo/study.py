"""A small, rerunnable study on the demo task: RASFT against its baselines and ablations, several seeds.

    python -m rasft_trl.demo.study                   # the committed protocol (see docs/study.md)
    python -m rasft_trl.demo.study --jobs 2          # two training processes side by side, one thread each

Protocol, fixed before any test number is looked at:

1. Every method starts from the demo's shared SFT warm start (see [`~rasft_trl.demo.warmstart`]), trains a fresh
   LoRA adapter for the same number of optimizer steps on the same training problems, and is evaluated greedily on
   the same held-out problems: `test` (in distribution, levels 1-3) and `ood` (a problem family the training never
   shows). `base` is the warm-started model itself.
2. One learning rate per method *family* (the token factor: `sft` for SFT and RASFT-with-SFT-factor, `dft` for DFT,
   RASFT and its ablations), chosen on the `validation` split from `--lr-grid` by the family's expert-only member
   (SFT, DFT), seed 0. The test splits play no part in the choice.
3. Each method runs with `--seeds` seeds (LoRA initialization, data order and rollout sampling change; the data
   does not). The report gives the mean and a 95% Student-t interval over seeds, the compute (training wall and CPU
   seconds, rollout tokens generated) and RASFT's mechanism numbers.

Every run (a "cell") writes its own JSON file under `<output-dir>/cells/`; a rerun skips finished cells, so an
interrupted study resumes where it stopped. The report (`study.md`, `study.json`, `study.png`) is written from the
cells at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..scripts.flags import either_spelling
from .run import METHODS, DemoArgs

#: method -> token-factor family (the unit of learning-rate selection)
FAMILIES = {"sft": "sft", "rasft_sft": "sft", "dft": "dft", "rasft": "dft", "no_rollouts": "dft",
            "no_adaptivity": "dft", "no_ratio": "dft"}
#: the family's expert-only member, which chooses the family's learning rate
SELECTORS = {"sft": "sft", "dft": "dft"}
STUDY_METHODS = ("sft", "dft", "rasft", "rasft_sft", "no_rollouts", "no_adaptivity", "no_ratio")
#: two-sided 95% Student-t quantiles by degrees of freedom
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def study_demo_defaults() -> DemoArgs:
    """The training and evaluation settings of every study run, pinned here so that a later change of the demo's
    defaults does not change what the committed study command measures (steps, seed and learning rate are set per
    run)."""
    return DemoArgs(
        lora=True, batch_size=8, num_rollouts=3, repetition_penalty=1.0, rollout_max_new_tokens=64,
        eval_max_new_tokens=64, eval_batch_size=96, calibration_sample_size=64, window_start=(0.0, 0.6),
        window_end=(0.0, 0.6), window_recalibration_steps=0, warm_start_steps=24,
    )


@dataclass
class StudyArgs:
    """Settings of the study (the CLI flags)."""

    output_dir: str = "study_report"
    methods: tuple[str, ...] = STUDY_METHODS
    seeds: int = 3
    lr_grid: tuple[float, ...] = (2.5e-4, 5e-4, 1e-3)
    max_steps: int = 12
    num_test: int = 256
    num_ood: int = 96
    num_validation: int = 96
    jobs: int = 1
    cache_dir: str | None = None
    report_only: bool = False
    demo: DemoArgs = field(default_factory=study_demo_defaults)

    def demo_args(self, seed: int, learning_rate: float) -> DemoArgs:
        """The demo settings of one training run."""
        return replace(self.demo, max_steps=self.max_steps, seed=seed, learning_rate=learning_rate,
                       cache_dir=self.cache_dir)


@dataclass(frozen=True)
class Cell:
    """One training run (or the `base` evaluation): what to train, with which seed and learning rate, evaluated on
    which splits."""

    method: str
    seed: int
    learning_rate: float
    splits: tuple[str, ...]
    phase: str  # "select" (learning-rate choice, validation only) or "test"

    @property
    def name(self) -> str:
        return f"{self.phase}-{self.method}-seed{self.seed}-lr{self.learning_rate:g}"


def mean_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its two-sided 95% Student-t interval (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, T95.get(n - 1, 1.96) * sd / math.sqrt(n)


def parse_args(argv: list[str] | None = None) -> StudyArgs:
    """Parse the command line into [`StudyArgs`]."""
    d = StudyArgs()
    parser = argparse.ArgumentParser(prog="python -m rasft_trl.demo.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=d.output_dir, help="study folder (default: %(default)s)")
    parser.add_argument("--methods", default=",".join(d.methods), help="comma list (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=d.seeds, help="seeds per method (default: %(default)s)")
    parser.add_argument("--lr-grid", default=",".join(f"{x:g}" for x in d.lr_grid),
                        help="learning rates tried per family on the validation split (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=d.max_steps, help="optimizer steps per run")
    parser.add_argument("--num-test", type=int, default=d.num_test, help="in-distribution test problems")
    parser.add_argument("--num-ood", type=int, default=d.num_ood, help="out-of-distribution test problems")
    parser.add_argument("--num-validation", type=int, default=d.num_validation, help="validation problems")
    parser.add_argument("--jobs", type=int, default=d.jobs,
                        help="runs side by side, each with cores/jobs torch threads (default: %(default)s)")
    parser.add_argument("--cache-dir", default=None, help="model cache (default: $RASFT_TRL_CACHE or ~/.cache)")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from the finished runs without running the missing ones")
    parser.add_argument("--warm-start-steps", type=int, default=d.demo.warm_start_steps,
                        help="SFT steps of the shared warm start (default: the demo's, %(default)s)")
    ns = parser.parse_args(either_spelling(parser, list(sys.argv[1:] if argv is None else argv)))  # - or _
    methods = tuple(m for m in ns.methods.split(",") if m)
    unknown = [m for m in methods if m not in FAMILIES]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {sorted(FAMILIES)}")
    for name in ("seeds", "max_steps", "num_test", "num_validation", "jobs"):
        if getattr(ns, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return StudyArgs(
        output_dir=ns.output_dir, methods=methods, seeds=ns.seeds,
        lr_grid=tuple(float(x) for x in ns.lr_grid.split(",") if x), max_steps=ns.max_steps,
        num_test=ns.num_test, num_ood=ns.num_ood, num_validation=ns.num_validation, jobs=ns.jobs,
        cache_dir=ns.cache_dir, demo=replace(study_demo_defaults(), warm_start_steps=ns.warm_start_steps),
        report_only=ns.report_only,
    )


# ---------------------------------------------------------------------------------------------- one cell


def run_cell(cell: Cell, study: StudyArgs, threads: int) -> dict[str, Any]:
    """Train (unless `base`) and evaluate one cell in this process; returns its JSON-ready record."""
    import torch

    from rasft_trl.demo.data import build_splits
    from rasft_trl.demo.evaluate import EvalSettings, evaluate
    from rasft_trl.demo.model import demo_model_path
    from rasft_trl.demo.report import mechanism_summary
    from rasft_trl.demo.run import evaluation_copy, train_method
    from rasft_trl.demo.warmstart import warm_start_path
    from rasft_trl.host_memory import release_freed_memory

    release_freed_memory()  # as in the demo: freed tensors go back to the system
    torch.set_num_threads(threads)
    args = study.demo_args(cell.seed, cell.learning_rate)
    start_path = warm_start_path(demo_model_path(study.cache_dir), args.warm_start, bf16=args.use_bf16)
    splits = build_splits(
        args.train_size, study.num_test, seed=study.demo.seed, num_warmup=args.warm_start.num_problems,
        num_validation=study.num_validation, num_ood=study.num_ood,
    )
    splits["test"] = splits.pop("eval")
    record: dict[str, Any] = {"cell": asdict(cell), "threads": threads}
    wall, cpu = time.perf_counter(), time.process_time()
    policy, history, generation_copy = None, [], None
    if cell.method != "base":
        import tempfile

        with tempfile.TemporaryDirectory(prefix="rasft-study-") as work_dir:
            policy, tokenizer, history, generation_copy = train_method(cell.method, args, start_path,
                                                                       splits["train"], work_dir)
    record["train_wall_seconds"] = round(time.perf_counter() - wall, 1)
    record["train_cpu_seconds"] = round(time.process_time() - cpu, 1)
    record["log_history"] = history
    record["mechanism"] = mechanism_summary(history) if history else None
    record["rollout_tokens"] = sum(h.get("tokens/rollout", 0) for h in history if "loss" in h)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(start_path, local_files_only=True)
    model = evaluation_copy(start_path, args, policy, generation_copy)
    del policy, generation_copy  # the fp32 policy is not needed beside the evaluation copy (0.6 GB)
    settings = EvalSettings(max_new_tokens=args.eval_max_new_tokens, batch_size=args.eval_batch_size)
    record["eval"] = {}
    for split in cell.splits:
        result = evaluate(model, tokenizer, splits[split], settings, desc=f"{cell.name} on {split}").to_dict()
        result.pop("samples", None)
        record["eval"][split] = result
    record["eval_settings"] = settings.describe()
    return record


def _run_cell_to_file(cell: Cell, study: StudyArgs, threads: int) -> str:
    path = Path(study.output_dir) / "cells" / f"{cell.name}.json"
    record = run_cell(cell, study, threads)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, path)
    return cell.name


def run_cells(cells: list[Cell], study: StudyArgs) -> None:
    """Run the cells that have no result file yet, `study.jobs` at a time in worker processes."""
    folder = Path(study.output_dir) / "cells"
    folder.mkdir(parents=True, exist_ok=True)
    todo = [c for c in cells if not (folder / f"{c.name}.json").is_file()]
    print(f"[study] {len(cells) - len(todo)} of {len(cells)} runs already done; {len(todo)} to go", flush=True)
    if not todo:
        return
    threads = max(1, (os.cpu_count() or 1) // study.jobs)
    if study.jobs == 1:
        for i, cell in enumerate(todo, 1):
            print(f"[study] ({i}/{len(todo)}) {cell.name}", flush=True)
            _run_cell_to_file(cell, study, threads)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    # a fresh process per run: memory does not pile up across runs (a reused worker was killed for memory once)
    with ProcessPoolExecutor(max_workers=study.jobs, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {pool.submit(_run_cell_to_file, cell, study, threads): cell for cell in todo}
        for i, future in enumerate(as_completed(futures), 1):
            print(f"[study] ({i}/{len(todo)}) finished {future.result()}", flush=True)


def load_cells(study: StudyArgs) -> dict[str, dict]:
    folder = Path(study.output_dir) / "cells"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


# ---------------------------------------------------------------------------------------------- protocol


def selection_cells(study: StudyArgs) -> list[Cell]:
    families = sorted({FAMILIES[m] for m in study.methods})
    return [Cell(SELECTORS[f], 0, lr, ("validation",), "select") for f in families for lr in study.lr_grid]


def choose_learning_rates(study: StudyArgs, records: dict[str, dict]) -> dict[str, dict]:
    """Per family: validation accuracy of each learning rate, and the chosen one (ties: the smaller rate)."""
    out = {}
    for family in sorted({FAMILIES[m] for m in study.methods}):
        scores = {}
        for lr in study.lr_grid:
            cell = Cell(SELECTORS[family], 0, lr, ("validation",), "select")
            scores[lr] = records[cell.name]["eval"]["validation"]["accuracy"]
        best = max(sorted(scores), key=lambda lr: scores[lr])
        out[family] = {"selector": SELECTORS[family], "validation_accuracy": scores, "chosen": best}
    return out


def test_cells(study: StudyArgs, chosen: dict[str, dict]) -> list[Cell]:
    # seed-major: an interrupted study has every method at the same number of seeds
    cells = [Cell("base", 0, 0.0, ("test", "ood"), "test")]
    for seed in range(study.seeds):
        cells += [Cell(m, seed, chosen[FAMILIES[m]]["chosen"], ("test", "ood"), "test") for m in study.methods]
    return cells


def summarize(study: StudyArgs, chosen: dict[str, dict], records: dict[str, dict]) -> dict[str, Any]:
    """Per method: mean and 95% interval per split, compute, mechanism numbers, and the per-seed values."""
    rows = {}
    for method in ("base",) + tuple(study.methods):
        cells = [c for c in test_cells(study, chosen) if c.method == method]
        recs = [records[c.name] for c in cells if c.name in records]  # an unfinished study reports what it has
        if not recs:
            continue
        row: dict[str, Any] = {"seeds": len(recs), "learning_rate": cells[0].learning_rate or None}
        for split in ("test", "ood"):
            values = [r["eval"][split]["accuracy"] for r in recs]
            mean, half = mean_interval(values)
            row[split] = {"mean": mean, "ci95": half, "per_seed": values}
            levels = sorted(recs[0]["eval"][split]["accuracy_by_level"])
            row[split]["by_level"] = {
                lvl: sum(r["eval"][split]["accuracy_by_level"][lvl] for r in recs) / len(recs) for lvl in levels
            }
        for key in ("train_wall_seconds", "train_cpu_seconds", "rollout_tokens"):
            row[key] = sum(r[key] for r in recs) / len(recs)
        mechanisms = [r["mechanism"] for r in recs if r.get("mechanism")]
        if mechanisms:
            row["mechanism"] = {
                key: _mean_of([m[key] for m in mechanisms])
                for key in ("rollout_accuracy_first_last", "expert_coef_first_last", "solvability_first_last",
                            "rollout_accuracy_mean", "min_problems_routed", "rollout_targets", "rollouts_drawn",
                            "rollouts_truncated")
            }
        rows[method] = row
    return rows


def _mean_of(values: list) -> Any:
    values = [v for v in values if v is not None]
    if not values:
        return None
    if isinstance(values[0], (list, tuple)):
        return [sum(v[i] for v in values) / len(values) for i in range(len(values[0]))]
    return sum(values) / len(values)


# ---------------------------------------------------------------------------------------------- report


def format_table(rows: dict[str, Any]) -> str:
    """Markdown table: accuracy mean ± 95% interval per split, compute, mechanism."""
    lines = [
        "| method | seeds | lr | test (ID) | OOD | train wall s | train CPU s | rollout tokens | rollout acc first→last | "
        "expert coef first→last | rollout targets |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, r in rows.items():
        mech = r.get("mechanism") or {}

        def pair(key: str, fmt: str) -> str:
            v = mech.get(key)
            return "–" if v is None else f"{v[0]:{fmt}} → {v[1]:{fmt}}"

        def acc(split: str) -> str:  # no interval from a single seed
            cell = r[split]
            return f"{100 * cell['mean']:.1f}" + (f" ± {100 * cell['ci95']:.1f}" if r["seeds"] > 1 else " (1 seed)")

        lines.append(
            f"| {method} | {r['seeds']} | {r['learning_rate'] or '–'} | {acc('test')} | {acc('ood')} | {r['train_wall_seconds']:.0f} "
            f"| {r['train_cpu_seconds']:.0f} | {r['rollout_tokens']:.0f} | {pair('rollout_accuracy_first_last', '.2f')} "
            f"| {pair('expert_coef_first_last', '.3f')} | "
            f"{'–' if mech.get('rollout_targets') is None else format(mech['rollout_targets'], '.0f')} |"
        )
    return "\n".join(lines)


def plot(path: Path, rows: dict[str, Any]) -> None:
    """Bar chart: mean accuracy with 95% intervals, test and OOD side by side, per-seed points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(rows)
    fig, ax = plt.subplots(figsize=(1.1 * len(methods) + 2, 3.6))
    width = 0.38
    for offset, split, color in ((-width / 2, "test", "#4C72B0"), (width / 2, "ood", "#DD8452")):
        xs = [i + offset for i in range(len(methods))]
        means = [100 * rows[m][split]["mean"] for m in methods]
        errs = [100 * rows[m][split]["ci95"] for m in methods]
        ax.bar(xs, means, width, yerr=errs, capsize=3, color=color, label={"test": "test (ID)", "ood": "OOD"}[split])
        for x, m in zip(xs, methods):
            ax.scatter([x] * len(rows[m][split]["per_seed"]), [100 * v for v in rows[m][split]["per_seed"]],
                       s=8, color="black", zorder=3)
    ax.set_xticks(range(len(methods)), methods, rotation=20)
    ax.set_ylabel("greedy accuracy (%)")
    ax.legend()
    ax.set_title("Demo-task study: mean and 95% interval over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(study: StudyArgs, chosen: dict, rows: dict, seconds: float) -> Path:
    out = Path(study.output_dir)
    summary = {"settings": {**asdict(study), "demo": asdict(study.demo)}, "learning_rates": chosen, "methods": rows,
               "wall_seconds": seconds}
    (out / "study.json").write_text(json.dumps(summary, indent=2, default=str))
    plot(out / "study.png", rows)
    selection = "\n".join(
        f"- `{family}` family (chosen by {c['selector']}): "
        + ", ".join(f"{lr:g} → {100 * acc:.1f}%" for lr, acc in c["validation_accuracy"].items())
        + f"; chosen **{c['chosen']:g}**"
        for family, c in chosen.items()
    )
    text = (
        f"{format_table(rows)}\n\nLearning rates (validation accuracy, {study.num_validation} problems, seed 0):\n"
        f"{selection}\n"
    )
    (out / "study.md").write_text(text)
    return out / "study.md"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of `python -m rasft_trl.demo.study`."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    study = parse_args(argv)
    start = time.perf_counter()
    # build the shared model cache once, before any worker needs it
    from rasft_trl.demo.model import demo_model_path
    from rasft_trl.demo.warmstart import warm_start_path

    selection = selection_cells(study)
    if not study.report_only:
        warm_start_path(demo_model_path(study.cache_dir), study.demo.warm_start, bf16=study.demo.use_bf16)
        print(f"[study] phase 1: learning-rate selection on validation ({len(selection)} runs)", flush=True)
        run_cells(selection, study)
    chosen = choose_learning_rates(study, load_cells(study))
    for family, c in chosen.items():
        print(f"[study] {family} family: learning rate {c['chosen']:g} (validation {c['validation_accuracy']})")
    cells = test_cells(study, chosen)
    if not study.report_only:
        print(f"[study] phase 2: {len(cells)} runs evaluated on test and OOD", flush=True)
        run_cells(cells, study)
    rows = summarize(study, chosen, load_cells(study))
    path = write_report(study, chosen, rows, time.perf_counter() - start)
    print("\n" + path.read_text())
    return rows


if __name__ == "__main__":
    main()
