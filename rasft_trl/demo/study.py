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
   seconds, rollout tokens trained on) and RASFT's mechanism numbers, and the paired differences by seed.

The study engine ([`~rasft_trl.study.engine`], the same as `rasft-trl study`) plans and runs the cells and writes
the report; this module is the demo's runner ([`run_spec_cell`]: one cell trained and evaluated in a fresh process)
and its command line. `rasft-trl study demo` runs the same study from its shipped spec. Every run (a "cell") writes
its own JSON file under `<output-dir>/cells/`; a rerun skips finished cells, so an interrupted study resumes where
it stopped. The report (`study.md`, `study.json`, `study.png`) is written from the cells at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..scripts.flags import either_spelling
from ..study.engine import Cell, run_study
from ..study.spec import MethodSpec, StudySpec
from ..study.stats import mean_interval  # noqa: F401 (re-exported)
from .run import METHODS, OTHER_TRAINERS, DemoArgs

#: method -> its learning-rate family (the token factor for RASFTTrainer's methods; SRFT and GRPO are their own)
FAMILIES = {"sft": "sft", "rasft_sft": "sft", "dft": "dft", "rasft": "dft", "no_rollouts": "dft",
            "no_adaptivity": "dft", "no_ratio": "dft", "srft": "srft", "grpo": "grpo"}
#: the family's member that chooses the family's learning rate (the expert-only one where there is one)
SELECTORS = {"sft": "sft", "dft": "dft", "srft": "srft", "grpo": "grpo"}
STUDY_METHODS = ("sft", "dft", "rasft", "rasft_sft", "no_rollouts", "no_adaptivity", "no_ratio")
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


def run_cell(cell: Cell, study: StudyArgs, threads: int, overrides: dict[str, Any] | None = None,
             method: str | None = None) -> dict[str, Any]:
    """Train (unless `base`) and evaluate one cell in this process; returns its JSON-ready record. `method` is the
    demo method trained (default: the cell's name for it); `overrides` are [`DemoArgs`] fields of this arm."""
    import time

    import torch

    from rasft_trl.demo.data import build_splits
    from rasft_trl.demo.evaluate import EvalSettings, evaluate
    from rasft_trl.demo.model import demo_model_path
    from rasft_trl.demo.run import evaluation_copy, train_method
    from rasft_trl.demo.warmstart import warm_start_path
    from rasft_trl.host_memory import release_freed_memory
    from rasft_trl.study.mechanism import mechanism_summary, rollout_tokens

    release_freed_memory()  # as in the demo: freed tensors go back to the system
    torch.set_num_threads(threads)
    overrides = dict(overrides or {})
    learning_rate = overrides.pop("learning_rate", cell.value if cell.parameter == "learning_rate" else None)
    if learning_rate is None and cell.method != "base":
        raise ValueError(f"{cell.name}: no learning rate (choose it, or set it in the arm's overrides)")
    args = replace(study.demo_args(cell.seed, learning_rate or 0.0), **overrides)
    method = method or cell.method
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
            policy, tokenizer, history, generation_copy = train_method(method, args, start_path,
                                                                       splits["train"], work_dir)
    record["train_wall_seconds"] = round(time.perf_counter() - wall, 1)
    record["train_cpu_seconds"] = round(time.process_time() - cpu, 1)
    record["log_history"] = history
    record["mechanism"] = mechanism_summary(history) if history else None
    record["rollout_tokens"] = rollout_tokens(history)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(start_path, local_files_only=True)
    model = evaluation_copy(start_path, args, policy, generation_copy)
    del policy, generation_copy  # the fp32 policy is not needed beside the evaluation copy (0.6 GB)
    settings = EvalSettings(max_new_tokens=args.eval_max_new_tokens, batch_size=args.eval_batch_size)
    record["eval"] = {}
    for split in cell.sets:
        result = evaluate(model, tokenizer, splits[split], settings, desc=f"{cell.name} on {split}").to_dict()
        result.pop("samples", None)
        record["eval"][split] = result
    record["eval_settings"] = settings.describe()
    return record




# ---------------------------------------------------------------------------------------------- as a study spec


def to_spec(study: StudyArgs) -> StudySpec:
    """The demo study as a [`StudySpec`] run by the study engine with [`run_spec_cell`]: one arm per method, the
    token-factor families, the learning-rate grid on `validation`, `test` and `ood` reported (the shipped
    `rasft-trl study demo` spec is the same study)."""
    methods = {m: MethodSpec(m, script=m, family=FAMILIES.get(m, m)) for m in study.methods}
    first = {}
    for m in study.methods:
        first.setdefault(FAMILIES.get(m, m), m)
    selectors = {family: SELECTORS.get(family, m) for family, m in first.items()}
    return StudySpec(
        name="demo task", output_dir=study.output_dir, methods=methods, seeds=tuple(range(study.seeds)),
        selection_grid=tuple(study.lr_grid), selection_set="validation", selection_seed=0, selectors=selectors,
        eval_sets={"validation": {"num_problems": study.num_validation}, "test": {"num_problems": study.num_test},
                   "ood": {"num_problems": study.num_ood}},
        report_sets=("test", "ood"), comparisons=default_comparisons(study.methods),
        runner="rasft_trl.demo.study:run_spec_cell",
        runner_options={"max_steps": study.max_steps, "warm_start_steps": study.demo.warm_start_steps,
                        "cache_dir": study.cache_dir},
    )


def default_comparisons(methods: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The paired differences of round 1 that the methods allow (each RASFT variant against its base)."""
    wanted = [("rasft", "dft"), ("rasft_sft", "sft"), ("sft", "dft"), ("rasft", "sft"), ("no_rollouts", "dft"),
              ("no_adaptivity", "dft"), ("no_ratio", "dft")]
    return tuple((a, b) for a, b in wanted if a in methods and b in methods)


#: `runner_options` of a demo spec: StudyArgs fields (the DemoArgs defaults of `study_demo_defaults` beneath)
RUNNER_OPTIONS = ("max_steps", "warm_start_steps", "cache_dir")


def from_spec(spec: StudySpec) -> StudyArgs:
    """The [`StudyArgs`] a demo spec describes (sizes of the evaluation sets from their `num_problems`)."""
    unknown = [k for k in spec.runner_options if k not in RUNNER_OPTIONS]
    if unknown:
        raise ValueError(f"runner_options: unknown key(s) {unknown} for the demo runner; known: "
                         f"{list(RUNNER_OPTIONS)}")
    sizes = {name: int(body.get("num_problems", 0)) for name, body in spec.eval_sets.items()}
    for name in sizes:
        if name not in ("validation", "test", "ood"):
            raise ValueError(f"evaluation set {name!r}: the demo runner evaluates on validation, test and ood only")
    options = spec.runner_options
    d = StudyArgs()
    return StudyArgs(
        output_dir=spec.output_dir, methods=tuple(spec.methods), seeds=len(spec.seeds),
        lr_grid=tuple(spec.selection_grid), max_steps=int(options.get("max_steps", d.max_steps)),
        num_test=sizes.get("test", 0), num_ood=sizes.get("ood", 0), num_validation=sizes.get("validation", 0),
        cache_dir=options.get("cache_dir"),
        demo=replace(study_demo_defaults(), warm_start_steps=int(options.get("warm_start_steps",
                                                                              d.demo.warm_start_steps))),
    )


def _cell_in_fresh_process(cell: Cell, study: StudyArgs, threads: int, overrides: dict, method: str) -> dict:
    return run_cell(cell, study, threads, overrides, method)


def run_spec_cell(cell: Cell, spec: StudySpec, work: Path, slot: int, jobs: int = 1) -> dict[str, Any]:
    """The demo runner of the study engine: one cell trained and evaluated in a fresh process (memory does not
    pile up across runs; a reused worker was once killed for memory), with cores / jobs torch threads. An arm's
    `script` names the demo method it trains (`METHODS`, `OTHER_TRAINERS`), its `overrides` are [`DemoArgs`]
    fields; a choice of another parameter than the learning rate sets that field (the learning rate then comes
    from the arm's overrides)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    study = from_spec(spec)
    overrides: dict[str, Any] = {}
    method = cell.method
    arm = spec.methods.get(cell.method)
    if arm is not None:  # else `base`, or a selector that is not an arm of this study (dft choosing for rasft)
        method = arm.script or cell.method
        if method not in METHODS and method not in OTHER_TRAINERS:
            raise ValueError(f"arm {cell.method!r}: {method!r} is not a demo method "
                             f"({sorted(METHODS) + sorted(OTHER_TRAINERS)})")
        overrides.update(arm.overrides)
    if cell.value is not None and cell.parameter != "learning_rate":
        overrides[cell.parameter] = cell.value  # the learning rate then comes from the arm's overrides
    unknown = [k for k in overrides if k not in {f.name for f in fields(DemoArgs)}]
    if unknown:
        raise ValueError(f"arm {cell.method!r}: unknown DemoArgs field(s) {unknown}")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_cell_in_fresh_process, cell, study, threads, overrides, method).result()


def plot(path: Path, rows: dict[str, Any], sets: tuple[str, ...] = ("test", "ood")) -> None:
    """Bar chart: mean accuracy with 95% intervals, test and OOD side by side, per-seed points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(rows)
    fig, ax = plt.subplots(figsize=(1.1 * len(methods) + 2, 3.6))
    width = 0.38
    for offset, split, color in zip((-width / 2, width / 2), sets, ("#4C72B0", "#DD8452")):
        xs = [i + offset for i in range(len(methods))]
        means = [100 * rows[m][split]["mean"] for m in methods]
        errs = [100 * rows[m][split]["ci95"] for m in methods]
        ax.bar(xs, means, width, yerr=errs, capsize=3, color=color, label={"test": "test (ID)", "ood": "OOD"}[split])
        for x, m in zip(xs, methods):
            values = list(rows[m][split]["per_seed"].values())
            ax.scatter([x] * len(values), [100 * v for v in values], s=8, color="black", zorder=3)
    ax.set_xticks(range(len(methods)), methods, rotation=20)
    ax.set_ylabel("greedy accuracy (%)")
    ax.legend()
    ax.set_title("Demo-task study: mean and 95% interval over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of `python -m rasft_trl.demo.study`: the demo study run by the study engine."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    study = parse_args(argv)
    spec = to_spec(study)
    if not study.report_only:  # build the shared model cache once, before any worker needs it
        from rasft_trl.demo.model import demo_model_path
        from rasft_trl.demo.warmstart import warm_start_path

        warm_start_path(demo_model_path(study.cache_dir), study.demo.warm_start, bf16=study.demo.use_bf16)
    result = run_study(spec, jobs=study.jobs, report_only=study.report_only)
    plot(Path(study.output_dir) / "study.png", result["rows"])
    if result["failures"]:
        raise SystemExit(f"{len(result['failures'])} run(s) failed: " + "; ".join(result["failures"]))
    return result["rows"]


if __name__ == "__main__":
    main()
