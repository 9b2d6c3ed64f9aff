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
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

#: prompt + completion budget in tokens: prompts are under 110 tokens, rollouts at most `rollout_max_new_tokens`
MAX_LENGTH = 256

#: the baselines are the same trainer with switches (paper Table 1 / Table 2)
METHODS: dict[str, dict[str, Any]] = {
    "rasft": dict(use_rollouts=True, use_ratio=True, adaptive_weights=True, token_factor="dft"),
    "sft": dict(use_rollouts=False, use_ratio=False, token_factor="sft"),
    "dft": dict(use_rollouts=False, use_ratio=False, token_factor="dft"),
}


@dataclass
class DemoArgs:
    """Settings of one demo run (the CLI flags; see `python -m rasft_trl.demo --help`)."""

    output_dir: str = "demo_report"
    compare: bool = False
    max_steps: int = 30
    num_train: int | None = None
    num_eval: int = 64
    cache_dir: str | None = None
    lora: bool = True
    bf16: bool | None = None
    batch_size: int = 8
    learning_rate: float | None = None
    num_rollouts: int = 3
    rollout_max_new_tokens: int = 80
    eval_max_new_tokens: int = 96
    eval_batch_size: int = 64
    calibration_sample_size: int = 64
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
    def lr(self) -> float:
        """Learning rate: the flag, else 1e-4 for full fine-tuning and 5e-4 for LoRA."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 5e-4 if self.lora else 1e-4


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
    parser.add_argument("--rollout-max-new-tokens", type=int, default=defaults.rollout_max_new_tokens)
    parser.add_argument("--eval-max-new-tokens", type=int, default=defaults.eval_max_new_tokens)
    parser.add_argument("--eval-batch-size", type=int, default=defaults.eval_batch_size)
    parser.add_argument("--calibration-sample-size", type=int, default=defaults.calibration_sample_size)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    ns = parser.parse_args(argv)
    args = DemoArgs(**{k: v for k, v in vars(ns).items()})
    for name in ("max_steps", "num_eval", "batch_size", "num_rollouts"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def make_config(method: str, args: DemoArgs, output_dir: str):
    """The [`RASFTConfig`] of one method: shared budget and sampling, the method's switches on top."""
    from rasft_trl import RASFTConfig

    return RASFTConfig(
        output_dir=output_dir,
        num_rollouts=args.num_rollouts,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=args.lr,
        bf16=args.use_bf16,
        use_cpu=not _cuda_available(),  # transformers refuses bf16 on CPU unless told it is a CPU run
        gradient_checkpointing=False,
        logging_steps=1,
        report_to="none",
        max_new_tokens=args.rollout_max_new_tokens,
        max_length=MAX_LENGTH,
        calibration_sample_size=args.calibration_sample_size,
        save_strategy="no",
        seed=args.seed,
        **METHODS[method],
    )


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AMX or AVX512-BF16); elsewhere bf16 is emulated and slower."""
    import torch

    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def lora_config():
    """LoRA on every linear layer of the attention and MLP blocks."""
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


class RolloutProgress:
    """Generation backend that shows a progress bar (one tick per decoding step) while rollouts are drawn.

    It delegates to the trainer's default backend (`make_generation_backend`); on CPU one batch of rollouts takes
    tens of seconds, and the default backend prints nothing meanwhile. Call [`bind`] with the trainer once it exists.
    """

    def __init__(self, max_new_tokens: int):
        self.max_new_tokens = max_new_tokens
        self.trainer = None
        self._inner = None

    def bind(self, trainer) -> None:
        """Attach the trainer whose model and accelerator the default backend uses."""
        self.trainer = trainer

    def _backend(self):
        if self._inner is None:
            from rasft_trl.generation import make_generation_backend

            self._inner = make_generation_backend(self.trainer)
        return self._inner

    def sync_weights(self) -> None:
        """Delegate to the default backend."""
        self._backend().sync_weights()

    def generate(self, prompt_ids: list[list[int]], num_samples: int) -> list[list[int]]:
        """Delegate to the default backend, counting the model's forward calls (prefill + one per new token)."""
        from tqdm.auto import tqdm

        if not prompt_ids:
            return self._backend().generate(prompt_ids, num_samples)
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: the wrapped LM
        desc = f"Rollouts ({len(prompt_ids)} problems x {num_samples})"
        with tqdm(total=self.max_new_tokens + 1, desc=desc, unit="tok", leave=False) as bar:

            def tick(*_) -> None:  # a forward hook that returns a value would replace the model's output
                bar.update(1)

            handle = base.register_forward_hook(tick)
            try:
                return self._backend().generate(prompt_ids, num_samples)
            finally:
                handle.remove()


def train_method(method: str, args: DemoArgs, model_path: str, train_rows: list[dict], work_dir: str):
    """Train one method from a fresh copy of the initial model.

    Returns:
        `(trained_model, tokenizer, log_history)`.
    """
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rasft_trl import RASFTTrainer

    model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    progress = RolloutProgress(args.rollout_max_new_tokens)
    trainer = RASFTTrainer(
        model=model,
        args=make_config(method, args, os.path.join(work_dir, method)),
        train_dataset=Dataset.from_list(train_rows),
        processing_class=tokenizer,
        peft_config=lora_config() if args.lora else None,
        verifier="math",
        generation_backend=progress,
    )
    progress.bind(trainer)
    trainer.train()
    trained = trainer.accelerator.unwrap_model(trainer.model)
    history = list(trainer.state.log_history)
    del trainer
    gc.collect()
    return trained, tokenizer, history


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
    from rasft_trl.demo.data import build_splits
    from rasft_trl.demo.evaluate import EvalSettings, evaluate
    from rasft_trl.demo.model import demo_model_path, load_demo_model
    from rasft_trl.demo.report import format_accuracy_table, write_report

    timings: dict[str, float] = {}
    cpu_seconds: dict[str, float] = {}
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    with timed("load_model", timings, cpu_seconds):
        model_path = demo_model_path(args.cache_dir)
        model, tokenizer = load_demo_model(args.cache_dir)
    with timed("build_data", timings, cpu_seconds):
        splits = build_splits(args.train_size, args.num_eval, seed=args.seed)
    settings = EvalSettings(max_new_tokens=args.eval_max_new_tokens, batch_size=args.eval_batch_size)
    with timed("eval/untrained", timings, cpu_seconds):
        untrained = evaluate(model, tokenizer, splits["eval"], settings, desc="Evaluating untrained model")
    print(f"[demo] untrained: {untrained.num_correct}/{untrained.num_problems} correct", flush=True)
    del model
    gc.collect()

    methods = ["rasft", "sft", "dft"] if args.compare else ["rasft"]
    outcomes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rasft-demo-") as work_dir:
        for method in methods:
            print(
                f"[demo] training {method} for {args.max_steps} steps on {len(splits['train'])} problems", flush=True
            )
            with timed(f"train/{method}", timings, cpu_seconds):
                trained, tok, history = train_method(method, args, model_path, splits["train"], work_dir)
            with timed(f"eval/{method}", timings, cpu_seconds):
                result = evaluate(trained, tok, splits["eval"], settings, desc=f"Evaluating {method}")
            print(f"[demo] {method}: {result.num_correct}/{result.num_problems} correct", flush=True)
            outcomes[method] = {
                "eval": result.to_dict(),
                "log_history": history,
                "train_seconds": timings[f"train/{method}"],
            }
            del trained
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
            "torch_threads": _torch_threads(),
        },
        "timings": timings,
        "cpu_seconds": cpu_seconds,
        "untrained": untrained.to_dict(),
        "methods": outcomes,
    }
    write_report(args.output_dir, results)
    print("\n" + format_accuracy_table(results))
    print(
        f"\nHeld-out accuracy, {settings.describe()}. Total: {timings['total']:.0f} s wall, "
        f"{cpu_seconds['total']:.0f} s CPU. Report: {os.path.abspath(args.output_dir)}",
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
