"""The CPU demo: train SmolLM2-135M-Instruct with RASFT on grade-school problems and measure held-out accuracy.

Phases: load the model (converted once from the GGUF in a PyPI wheel, then cached), build the data, evaluate
the untrained model, train RASFT (and, with `--compare`, SFT and DFT from a fresh copy of the same initial
model, on the same data and budget), evaluate each trained model, print a before/after table and write a
report folder (see [`~rasft_trl.demo.report`]).

    python -m rasft_trl.demo                 # RASFT only, 12-16 minutes on 2 CPU cores
    python -m rasft_trl.demo --compare       # RASFT, SFT and DFT
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from ..evaluation.generate import cpu_has_native_bf16
from ..scripts.flags import either_spelling
from .warmstart import WarmStartSettings

#: prompt + completion budget in tokens: prompts are under 110 tokens, rollouts at most `rollout_max_new_tokens`
MAX_LENGTH = 256

#: the baselines and ablations are the same trainer with switches (paper Table 1 / Table 2)
METHODS: dict[str, dict[str, Any]] = {
    "rasft": dict(use_rollouts=True, use_ratio=True, adaptive_weights=True, token_factor="dft"),
    "sft": dict(use_rollouts=False, use_ratio=False, token_factor="sft"),
    "dft": dict(use_rollouts=False, use_ratio=False, token_factor="dft"),
    # transfer variant: RASFT with the SFT token factor
    "rasft_sft": dict(use_rollouts=True, use_ratio=True, adaptive_weights=True, token_factor="sft"),
    # ablations (Table 2): expert only with the ratio; equal pool weights; rho = 1
    "no_rollouts": dict(use_rollouts=False, use_ratio=True, token_factor="dft"),
    "no_adaptivity": dict(use_rollouts=True, use_ratio=True, adaptive_weights=False, token_factor="dft"),
    "no_ratio": dict(use_rollouts=True, use_ratio=False, adaptive_weights=True, token_factor="dft"),
}

#: methods of other trainers on the same warm start, data, budget, LoRA and rollout sampling (the study's round 2;
#: not in `make demo`): SRFT with its own loss defaults (docs/srft.md), and TRL's GRPO with the math verifier as
#: reward and `num_rollouts` generations per problem
OTHER_TRAINERS: dict[str, str] = {"srft": "SRFTTrainer", "grpo": "GRPOTrainer"}


@dataclass
class DemoArgs:
    """Settings of one demo run (the CLI flags; see `python -m rasft_trl.demo --help`)."""

    output_dir: str = "demo_report"
    compare: bool = False
    max_steps: int = 18
    num_train: int | None = None
    num_eval: int = 96
    cache_dir: str | None = None
    lora: bool = True
    bf16: bool | None = None
    generation_precision: str | None = None
    batch_size: int = 8
    learning_rate: float | None = None
    num_rollouts: int = 3
    repetition_penalty: float = 1.0
    rollout_max_new_tokens: int = 64
    eval_max_new_tokens: int = 64
    eval_batch_size: int = 96
    calibration_sample_size: int = 64
    window_start: tuple[float, float] = (0.0, 0.6)
    window_end: tuple[float, float] = (0.0, 0.6)
    window_recalibration_steps: int = 6
    warm_start_steps: int = WarmStartSettings.steps
    seed: int = 42

    @property
    def train_size(self) -> int:
        """Training problems: one epoch of `max_steps` steps unless `num_train` is given."""
        return self.num_train if self.num_train is not None else self.max_steps * self.batch_size

    @property
    def use_bf16(self) -> bool:
        """bf16 autocast for the trainer's forwards: the flag, else on where the CPU has native bf16 (AMX/AVX512-BF16)."""
        return cpu_has_native_bf16() if self.bf16 is None else self.bf16

    @property
    def generation_dtype(self):
        """dtype of the generation copy (rollouts and evaluation): the flag, else bf16 where the CPU has native bf16."""
        import torch

        precision = self.generation_precision or ("bf16" if cpu_has_native_bf16() else "fp32")
        return torch.bfloat16 if precision == "bf16" else torch.float32

    @property
    def lr(self) -> float:
        """Learning rate: the flag, else 1e-4 for full fine-tuning and 5e-4 for LoRA."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 5e-4 if self.lora else 1e-4

    @property
    def warm_start(self) -> WarmStartSettings:
        """Settings of the shared SFT warm start (fixed data seed: every seed of a study starts from the same weights)."""
        return WarmStartSettings(steps=self.warm_start_steps)


def parse_args(argv: list[str] | None = None) -> DemoArgs:
    """Parse the command line into [`DemoArgs`]."""
    defaults = DemoArgs()
    parser = argparse.ArgumentParser(
        prog="python -m rasft_trl.demo",
        description="Train SmolLM2-135M-Instruct with RASFT on CPU and compare held-out accuracy before and after.",
    )
    parser.add_argument("--compare", action="store_true", help="also train SFT and DFT baselines (same data, budget)")
    parser.add_argument("--output-dir", default=defaults.output_dir, help="report folder (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps, help="optimizer steps per method")
    parser.add_argument("--num-train", type=int, default=None, help="training problems (default: max_steps * batch)")
    parser.add_argument("--num-eval", type=int, default=defaults.num_eval, help="held-out problems")
    parser.add_argument(
        "--cache-dir", default=None, help="model cache (default: $RASFT_TRL_CACHE or ~/.cache/rasft-trl)"
    )
    parser.add_argument(
        "--lora",
        action=argparse.BooleanOptionalAction,
        default=defaults.lora,
        help="train a rank-16 LoRA adapter (default); --no-lora trains all weights",
    )
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast in training (default: on where the CPU has native bf16, else fp32)",
    )
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="problems per optimizer step")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: 1e-4 (full) / 5e-4 (LoRA)")
    parser.add_argument("--num-rollouts", type=int, default=defaults.num_rollouts, help="rollouts K per problem")
    parser.add_argument(
        "--repetition-penalty", type=float, default=defaults.repetition_penalty,
        help="rollout repetition penalty (default: %(default)s; the paper's 1.1 penalizes copying the question's "
        "numbers into the equations: sampled accuracy of the warm start 0.30 vs 0.45 on level 2)",
    )
    parser.add_argument(
        "--rollout-max-new-tokens", type=int, default=defaults.rollout_max_new_tokens,
        help="rollout budget; the longest expert solution is about 45 tokens (default: %(default)s)",
    )
    parser.add_argument("--eval-max-new-tokens", type=int, default=defaults.eval_max_new_tokens)
    parser.add_argument("--eval-batch-size", type=int, default=defaults.eval_batch_size)
    parser.add_argument("--calibration-sample-size", type=int, default=defaults.calibration_sample_size)
    parser.add_argument(
        "--window-start", type=float, nargs=2, default=defaults.window_start, metavar=("LOW", "HIGH"),
        help="expert-loss window quantiles at the start (default: %(default)s, the same at the end: every problem "
        "but the hardest 40%% at calibration, so that a batch of 8 routes problems at every step; the paper's window "
        "moves from 0.2-0.45 to 0.5-0.75)",
    )
    parser.add_argument(
        "--window-end", type=float, nargs=2, default=defaults.window_end, metavar=("LOW", "HIGH"),
        help="window quantiles at the end of training (default: %(default)s)",
    )
    parser.add_argument(
        "--window-recalibration-steps", type=int, default=defaults.window_recalibration_steps,
        help="measure the window quantiles again on the current policy every N steps; 0: once, on the starting model "
        "(the paper). Training moves every expert NLL, and a window fixed at the start routes fewer problems as it "
        "goes (default: %(default)s)",
    )
    parser.add_argument(
        "--warm-start-steps", type=int, default=defaults.warm_start_steps,
        help="SFT steps of the shared, cached warm start on its own split; 0 starts from the base model "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--generation-precision", choices=("bf16", "fp32"), default=None,
        help="precision of the copy that samples rollouts and evaluates (default: bf16 where the CPU has native "
        "bf16, else fp32); training keeps its own precision",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    ns = parser.parse_args(either_spelling(parser, list(sys.argv[1:] if argv is None else argv)))  # - or _
    values = vars(ns)
    values["window_start"], values["window_end"] = tuple(values["window_start"]), tuple(values["window_end"])
    args = DemoArgs(**values)
    if args.warm_start_steps < 0:
        parser.error(f"--warm-start-steps must be >= 0, got {args.warm_start_steps}")
    for name in ("max_steps", "num_eval", "batch_size", "num_rollouts"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def shared_settings(args: DemoArgs, output_dir: str) -> dict[str, Any]:
    """Budget, schedule and logging every method shares (the trainer arguments of transformers)."""
    return dict(
        output_dir=output_dir,
        max_steps=args.max_steps,
        gradient_accumulation_steps=1,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",  # RASFTConfig's default (the paper's), for every method
        bf16=args.use_bf16,
        use_cpu=not _cuda_available(),  # transformers refuses bf16 on CPU unless told it is a CPU run
        # A step's micro-batch is 8 expert solutions plus up to 24 rollouts, ~5,600 positions: their activations
        # took 5 GB; checkpointing keeps one layer's (the gradients are the same bits; docs/benchmarks.md)
        gradient_checkpointing=True,
        logging_steps=1,
        report_to="none",
        warmup_steps=0,
        save_strategy="no",
        seed=args.seed,
        temperature=RASFT_SAMPLING["temperature"],
        top_p=RASFT_SAMPLING["top_p"],
        repetition_penalty=args.repetition_penalty,
    )


#: rollout sampling of every method: RASFTConfig's defaults (the paper's)
RASFT_SAMPLING = {"temperature": 0.9, "top_p": 0.95}


def make_config(method: str, args: DemoArgs, output_dir: str):
    """The config of one method: shared budget and sampling, the method's switches on top ([`RASFTConfig`];
    [`SRFTConfig`] for `srft`, TRL's `GRPOConfig` for `grpo`)."""
    shared = shared_settings(args, output_dir)
    if method == "grpo":
        from trl import GRPOConfig

        return GRPOConfig(
            **shared,
            per_device_train_batch_size=args.batch_size * args.num_rollouts,  # completions: 8 problems x K
            num_generations=args.num_rollouts,
            max_completion_length=args.rollout_max_new_tokens,
        )
    rollouts = dict(num_rollouts=args.num_rollouts, per_device_train_batch_size=args.batch_size,
                    max_new_tokens=args.rollout_max_new_tokens, max_length=MAX_LENGTH)
    if method == "srft":
        from rasft_trl import SRFTConfig

        return SRFTConfig(**shared, **rollouts)
    from rasft_trl import RASFTConfig

    return RASFTConfig(
        **shared,
        **rollouts,
        calibration_sample_size=args.calibration_sample_size,
        window_start_quantiles=list(args.window_start),
        window_end_quantiles=list(args.window_end),
        window_recalibration_steps=args.window_recalibration_steps,
        **METHODS[method],
    )


def lora_config():
    """LoRA on every linear layer of the attention and MLP blocks."""
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def train_method(method: str, args: DemoArgs, model_path: str, train_rows: list[dict], work_dir: str):
    """Train one method from a fresh copy of the initial model at `model_path`.

    Rollouts are sampled from a copy of the policy in `args.generation_dtype` ([`CopyGeneration`]).

    Returns:
        `(trained_model, tokenizer, log_history, generation_copy)`: the last is the rollout backend's low-precision
        copy refreshed with the final weights (`None` without rollouts), the model [`evaluation_copy`] would build,
        without loading the checkpoint again (its pages took 0.5 GB beside the policy at the final evaluation).
    """
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rasft_trl import RASFTTrainer, SRFTTrainer
    from rasft_trl.demo.generation import CopyGeneration
    from rasft_trl.generation import SamplingSettings

    model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    config = make_config(method, args, os.path.join(work_dir, method))
    if method == "grpo":
        return train_grpo(model, tokenizer, config, args, train_rows)
    backend = None
    if config.use_rollouts:
        backend = CopyGeneration(
            model_path, args.generation_dtype, SamplingSettings.from_config(config), tokenizer.eos_token_id
        )
    trainer = (SRFTTrainer if method == "srft" else RASFTTrainer)(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(train_rows),
        processing_class=tokenizer,
        peft_config=lora_config() if args.lora else None,
        verifier="math",
        generation_backend=backend,
    )
    if backend is not None:
        backend.bind(trainer)
    trainer.train()
    trained = trainer.accelerator.unwrap_model(trainer.model)
    history = list(trainer.state.log_history)
    generation_copy = None
    if backend is not None:
        backend.sync_weights()  # the copy holds the weights before the last optimizer step until now
        generation_copy = backend.copy
    del trainer, backend
    gc.collect()
    return trained, tokenizer, history, generation_copy


def train_grpo(model, tokenizer, config, args: DemoArgs, train_rows: list[dict]):
    """TRL's GRPOTrainer on the demo's problems (prompts and gold answers; the expert solutions are not used), the
    math verifier as reward; returns what [`train_method`] returns (no generation copy: GRPO samples with the
    policy itself)."""
    from datasets import Dataset
    from trl import GRPOTrainer

    from rasft_trl.rewards import resolve_reward_funcs

    rows = [{"prompt": r["prompt"], "answer": r["answer"]} for r in train_rows]
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=resolve_reward_funcs(["math"], None)[0],
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config() if args.lora else None,
    )
    trainer.train()
    trained = trainer.accelerator.unwrap_model(trainer.model)
    history = annotate_grpo_history(trainer.state.log_history, completions_per_step=(
        config.per_device_train_batch_size * config.gradient_accumulation_steps * trainer.accelerator.num_processes))
    del trainer
    gc.collect()
    return trained, tokenizer, history, None


def annotate_grpo_history(log_history: list[dict], completions_per_step: int) -> list[dict]:
    """GRPO's log with the rollout keys the RASFT-family trainers log (`rollouts/drawn`, `rollouts/accuracy`,
    `rollouts/generated_tokens`; `rasft_trl.study.mechanism.grpo_rollout_fields`), so studies compare them. Entries
    are copied, not changed."""
    from ..study.mechanism import grpo_rollout_fields

    out, previous = [], None
    for entry in log_history:
        entry = dict(entry)
        if "loss" in entry:
            entry.update(grpo_rollout_fields(entry, completions_per_step, previous))
            previous = entry
        out.append(entry)
    return out


def save_trained(trained, tokenizer, path: str) -> str | None:
    """Save a trained LoRA policy as an adapter folder (its base is the warm-started model in the cache), so that
    `rasft-trl eval --model <path>` can evaluate it. Full fine-tuning is not saved (it would be the whole model)."""
    if not hasattr(trained, "peft_config"):
        return None
    trained.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def evaluation_copy(model_path: str, args: DemoArgs, policy=None, generation_copy=None):
    """The model evaluated: the model at `model_path` in the generation precision, with `policy`'s weights if given
    (a trained LoRA policy is merged out of place); `generation_copy`, the rollout backend's copy already holding
    those weights ([`train_method`]), is that model and is returned as it is."""
    if generation_copy is not None:
        return generation_copy
    from rasft_trl.demo.generation import copy_policy, load_copy

    model = load_copy(model_path, args.generation_dtype)
    if policy is not None:
        import torch

        with torch.no_grad():
            copy_policy(policy, model)
    return model


@contextmanager
def timed(name: str, timings: dict[str, float], cpu_seconds: dict[str, float]):
    """Record the wall time and the process CPU time of a phase, and print them.

    CPU time counts every thread of this process; on an idle machine with 2 cores it is about twice the wall time
    of a compute-bound phase. On a shared machine wall time grows with the load, CPU time much less.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    timings[name] = round(time.perf_counter() - wall, 2)
    cpu_seconds[name] = round(time.process_time() - cpu, 2)
    print(f"[demo] {name}: {timings[name]:.1f} s wall, {cpu_seconds[name]:.1f} s CPU", flush=True)


def run_demo(args: DemoArgs) -> dict[str, Any]:
    """Run every phase, write the report folder and return the results dict (see [`~rasft_trl.demo.report`])."""
    from transformers import AutoTokenizer

    from rasft_trl.demo.data import build_splits
    from rasft_trl.demo.evaluate import EvalSettings, eval_command, evaluate, write_problems
    from rasft_trl.demo.model import demo_model_path
    from rasft_trl.demo.report import (
        format_accuracy_table,
        format_mechanism_table,
        mechanism_summary,
        write_report,
    )
    from rasft_trl.demo.warmstart import read_meta, warm_start_path

    from rasft_trl.host_memory import release_freed_memory

    release_freed_memory()  # freed tensors go back to the system (1 GB less after 3 steps; see host_memory)
    timings: dict[str, float] = {}
    cpu_seconds: dict[str, float] = {}
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    with timed("load_model", timings, cpu_seconds):
        base_path = demo_model_path(args.cache_dir)
    with timed("warm_start", timings, cpu_seconds):
        start_path = warm_start_path(base_path, args.warm_start, bf16=args.use_bf16)
    tokenizer = AutoTokenizer.from_pretrained(start_path, local_files_only=True)
    with timed("build_data", timings, cpu_seconds):
        splits = build_splits(args.train_size, args.num_eval, seed=args.seed, num_warmup=args.warm_start.num_problems)
    settings = EvalSettings(max_new_tokens=args.eval_max_new_tokens, batch_size=args.eval_batch_size)
    os.makedirs(args.output_dir, exist_ok=True)
    problems_file = write_problems(splits["eval"], os.path.join(args.output_dir, "eval_problems.jsonl"))
    with timed("eval/untrained", timings, cpu_seconds):
        model = evaluation_copy(start_path, args)
        untrained = evaluate(model, tokenizer, splits["eval"], settings, desc="Evaluating the starting model")
    print(f"[demo] starting model: {untrained.num_correct}/{untrained.num_problems} correct", flush=True)
    del model
    gc.collect()

    methods = ["rasft", "sft", "dft"] if args.compare else ["rasft"]
    outcomes: dict[str, Any] = {}
    eval_records: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="rasft-demo-") as work_dir:
        for method in methods:
            print(
                f"[demo] training {method} for {args.max_steps} steps on {len(splits['train'])} problems", flush=True
            )
            with timed(f"train/{method}", timings, cpu_seconds):
                trained, tok, history, generation_copy = train_method(method, args, start_path, splits["train"],
                                                                      work_dir)
            saved = save_trained(trained, tok, os.path.join(args.output_dir, "models", method))
            with timed(f"eval/{method}", timings, cpu_seconds):
                model = evaluation_copy(start_path, args, trained, generation_copy)
                del trained, generation_copy  # saved already; the fp32 policy would sit beside the copy (0.6 GB)
                gc.collect()
                result = evaluate(model, tok, splits["eval"], settings, desc=f"Evaluating {method}")
            print(f"[demo] {method}: {result.num_correct}/{result.num_problems} correct", flush=True)
            eval_records[method] = result.records
            outcomes[method] = {
                "model_dir": saved,
                "eval": result.to_dict(),
                "log_history": history,
                "train_seconds": timings[f"train/{method}"],
                "mechanism": mechanism_summary(history),
            }
            del model
            gc.collect()
    timings["total"] = round(time.perf_counter() - wall_start, 2)
    cpu_seconds["total"] = round(time.process_time() - cpu_start, 2)
    results = {
        "settings": {
            **asdict(args),
            "learning_rate": args.lr,
            "num_train": args.train_size,
            "eval": settings.describe(),
            "finetuning": "lora" if args.lora else "full",
            "precision": "bf16 autocast" if args.use_bf16 else "fp32",
            "generation_precision": str(args.generation_dtype).removeprefix("torch."),
            "warm_start": read_meta(start_path),
            "warm_start_path": start_path,
            "torch_threads": _torch_threads(),
        },
        "timings": timings,
        "cpu_seconds": cpu_seconds,
        "untrained": untrained.to_dict(),
        "methods": outcomes,
    }
    samples = {"untrained": untrained.records, **eval_records}
    write_report(args.output_dir, results, samples=samples)
    print("\n" + format_accuracy_table(results))
    mechanism = format_mechanism_table(results)
    if mechanism:
        print("\n" + mechanism)
    dtype = "bfloat16" if results["settings"]["generation_precision"] == "bfloat16" else "float32"
    for method, outcome in outcomes.items():
        if outcome["model_dir"]:
            command = eval_command(outcome["model_dir"], problems_file, settings, dtype,
                                   os.path.join(args.output_dir, "eval", method))
            print(f"[demo] {method} adapter: {outcome['model_dir']} (score it on the demo's problems with the "
                  f"evaluation harness: {command})", flush=True)
    print(
        f"\nHeld-out accuracy, {settings.describe()}; 'before' is the shared warm-started model every method starts "
        f"from. Total: {timings['total']:.0f} s wall, {cpu_seconds['total']:.0f} s CPU. "
        f"Report: {os.path.abspath(args.output_dir)}",
        flush=True,
    )
    return results


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of `python -m rasft_trl.demo`."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for the Hub: the model comes from the local cache
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("rasft_trl").setLevel(logging.INFO)
    return run_demo(parse_args(argv))
