"""Training-step precision on the CPU: fp32 against bf16 autocast, on the same model and batch, in one run.

Usage:
    python benchmarks/bench_cpu_precision.py [--model PATH] [--batch 8] [--seq-len 200] [--repeats 3] [--lora]

Default model: the demo model, SmolLM2-135M-Instruct (`rasft_trl.demo.model.demo_model_path()`; the first call
converts it from its PyPI wheel). One step is a forward and backward pass on random token ids, the work of one
micro-batch of the demo's training step. The fp32 and bf16-autocast steps alternate, so a change in machine load
affects both. The table prints the median seconds per step and the fp32 / bf16 ratio. The demo turns bf16 on only
where the CPU has native bf16 (AMX or AVX512-BF16), because elsewhere torch emulates it; we have not measured such
a CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the demo model)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lora", action="store_true", help="wrap the model in a rank-16 LoRA adapter (the demo's)")
    return parser.parse_args()


def step_seconds(model, input_ids, bf16: bool) -> float:
    """One forward + backward; returns its wall seconds."""
    import torch

    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=input_ids).logits
    logits.float().logsumexp(-1).mean().backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from rasft_trl.demo.run import cpu_has_native_bf16

    args = parse_args()
    if args.model is None:
        from rasft_trl.demo.model import demo_model_path

        args.model = demo_model_path()
    model = AutoModelForCausalLM.from_pretrained(args.model, local_files_only=True, dtype="float32")
    if args.lora:
        from rasft_trl.demo.run import lora_config
        from peft import get_peft_model

        model = get_peft_model(model, lora_config())
    model.train()
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq_len), generator=generator)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}")
    step_seconds(model, input_ids, bf16=False)  # warm-up of both paths
    step_seconds(model, input_ids, bf16=True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for bf16 in (False, True):
            times[bf16].append(step_seconds(model, input_ids, bf16))
    fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
    print(f"forward+backward, batch {args.batch} x {args.seq_len} tokens{' (LoRA r=16)' if args.lora else ''}")
    print(f"{'precision':<16}{'median s/step':>14}")
    print(f"{'fp32':<16}{fp32:>14.2f}")
    print(f"{'bf16 autocast':<16}{bf16:>14.2f}")
    print(f"fp32 / bf16 autocast: {fp32 / bf16:.2f}x")


if __name__ == "__main__":
    main()
