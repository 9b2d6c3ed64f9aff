"""The recipe runner: one study cell = `rasft-trl train` (through `accelerate launch`, on whatever the spec's
`train` section names) then `rasft-trl eval` per evaluation set, each in its own process, logs kept in the cell's
folder (`runs/<cell>/train.log`, `eval-<set>.log`).

Resuming: a cell whose training finished (`trained.json`) is not trained again; a killed training resumes from the
last checkpoint in `runs/<cell>/model` when the recipe saves checkpoints (`--resume_from_checkpoint true`); an
evaluation reuses the samples an earlier, interrupted evaluation wrote (`rasft-trl eval` does that itself).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .mechanism import mechanism_summary, rollout_tokens
from .spec import StudySpec

#: keys of the spec's `train` section (flags of `rasft-trl train` itself)
TRAIN_KEYS = ("accelerate_config", "num_processes", "main_process_port", "env")
#: first port of the process groups of cells that run side by side (one per job slot)
BASE_PORT = 29600


class CellFailed(RuntimeError):
    """A training or evaluation process of a cell exited non-zero; the message names its log."""


def flags(values: dict[str, Any], spec: StudySpec | None = None) -> list[str]:
    """`{"max_steps": 10, "bf16": False, "data_file": ["a=x", "b=y"]}` -> `--max_steps 10 --bf16 false
    --data_file a=x --data_file b=y`: booleans spelled out (the scripts parse `true`/`false`), lists repeated.
    `data_file` and `recipe` values are read from the spec's folder when they are relative paths that exist there."""
    out: list[str] = []
    for key, value in values.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if item is None:
                continue
            if isinstance(item, bool):
                item = "true" if item else "false"
            item = str(item)
            if spec is not None and key in ("data_file", "data-file") and "=" in item:
                bench, _, path = item.partition("=")
                item = f"{bench}={spec.path(path)}"
            elif spec is not None and key == "recipe":
                item = spec.path(item)
            out += [f"--{key}", item]
    return out


def eval_flags(values: dict[str, Any], spec: StudySpec) -> list[str]:
    """`rasft-trl eval` flags: like [`flags`], but a `True` switch is the bare flag and `False` omits it (the eval
    command's switches take no value)."""
    switches = {k: v for k, v in values.items() if isinstance(v, bool)}
    out = flags({k: v for k, v in values.items() if k not in switches}, spec)
    return out + [f"--{k}" for k, v in switches.items() if v]


def train_command(cell, spec: StudySpec, model_dir: Path, slot: int) -> list[str]:
    """The `rasft-trl train` command of a cell: the method's recipe and script, the spec's launch settings, the
    cell's seed and selected value, the spec's then the method's overrides."""
    method = spec.methods[cell.method]
    unknown = [k for k in spec.train if k not in TRAIN_KEYS]
    if unknown:
        raise CellFailed(f"train: unknown key(s) {unknown}; known: {list(TRAIN_KEYS)}.")
    command = [sys.executable, "-m", "rasft_trl.cli", "train", "--method", method.script or "rasft",
               "--config", recipe_path(spec, method.recipe)]
    if spec.train.get("accelerate_config"):
        command += ["--accelerate_config", spec.path(str(spec.train["accelerate_config"]))]
    if spec.train.get("num_processes"):
        command += ["--num_processes", str(spec.train["num_processes"])]
    command += ["--main_process_port", str(int(spec.train.get("main_process_port", BASE_PORT)) + slot)]
    overrides = {**spec.overrides, **method.overrides, "output_dir": str(model_dir), "seed": cell.seed}
    if cell.value is not None:
        overrides[cell.parameter] = cell.value
    if any(model_dir.glob("checkpoint-*")):
        overrides["resume_from_checkpoint"] = "true"
    return command + flags(overrides, spec)


def recipe_path(spec: StudySpec, recipe: str) -> str:
    """A recipe file (relative to the spec's folder when it is there), or a shipped recipe's file; else as given
    (`rasft-trl train` then names what is missing)."""
    from ..shipped import find_recipe

    value = spec.path(recipe)
    try:
        return find_recipe(value)
    except FileNotFoundError:
        return value


def eval_command(spec: StudySpec, model: str, eval_set: str, out_dir: Path) -> list[str]:
    """The `rasft-trl eval` command of one evaluation set: the spec's common flags, then the set's own."""
    values = {**spec.eval_args, **spec.eval_sets[eval_set]}
    return [sys.executable, "-m", "rasft_trl.cli", "eval", "--model", model, "--output-dir", str(out_dir),
            *eval_flags(values, spec)]


def _run(command: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Run `command` with its output appended to `log`; returns wall seconds, raises [`CellFailed`] on failure."""
    start = time.perf_counter()
    with open(log, "a") as handle:
        handle.write(f"\n$ {' '.join(command)}\n")
        handle.flush()
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        raise CellFailed(f"exit code {code}; see {log}: " + " | ".join(tail))
    return time.perf_counter() - start


def run_recipe_cell(cell, spec: StudySpec, work: Path, slot: int, jobs: int = 1) -> dict[str, Any]:
    """Train (unless `base`) and evaluate one cell; returns its record (accuracy per set, compute, mechanism)."""
    env = dict(os.environ, **{str(k): str(v) for k, v in (spec.train.get("env") or {}).items()})
    work.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {}
    model = spec.baseline_model
    if cell.method != "base":
        model_dir = work / "model"
        done = work / "trained.json"
        if not done.is_file():
            wall = _run(train_command(cell, spec, model_dir, slot), work / "train.log", env)
            done.write_text(json.dumps({"wall_seconds": round(wall, 1)}))  # of the attempt that finished
        wall = json.loads(done.read_text())["wall_seconds"]
        state_file = model_dir / "trainer_state.json"
        history = json.loads(state_file.read_text())["log_history"] if state_file.is_file() else []
        summary = next((h for h in reversed(history) if "train_runtime" in h), {})
        record.update(
            train_wall_seconds=wall, train_runtime_seconds=summary.get("train_runtime"),
            train_steps=max((h.get("step", 0) for h in history), default=0), log_history=history,
            mechanism=mechanism_summary(history), rollout_tokens=rollout_tokens(history),
        )
        model = str(model_dir)
    record["eval"] = {}
    for eval_set in cell.sets:
        out_dir = work / f"eval-{eval_set}"
        _run(eval_command(spec, model, eval_set, out_dir), work / f"eval-{eval_set}.log", env)
        results = json.loads((out_dir / "results.json").read_text())
        benchmarks = {name: {"accuracy": b["accuracy"], "num_problems": b["num_problems"],
                             "num_samples": b["num_samples"]} for name, b in results["benchmarks"].items()}
        only = next(iter(benchmarks.values())) if len(benchmarks) == 1 else None
        record["eval"][eval_set] = {
            "accuracy": results["averages"]["all"],  # the mean over the set's benchmarks, as the paper averages
            "benchmarks": benchmarks,
            "num_correct": round(only["accuracy"] * only["num_samples"]) if only else None,
        }
    return record
