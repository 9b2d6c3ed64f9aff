"""Evaluate a model on the paper's benchmarks: `rasft-trl eval` (or `python -m rasft_trl.scripts.evaluate`).

    rasft-trl eval --model outputs/Qwen2.5-Math-1.5B-RASFT --benchmarks math500,minerva,olympiadbench,aime24,aime25,amc23
    rasft-trl eval --model outputs/Qwen2.5-Coder-3B-RASFT-code --benchmarks humaneval,mbpp --backend vllm

Defaults follow the paper (16 samples per problem, temperature 1.0, up to 4096 new tokens, mean accuracy). Offline,
give each benchmark a local file in its Hub schema: `--data-file math500=MATH-500.jsonl`. Every flag may be written
with dashes or underscores (`--output-dir`, `--output_dir`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from ..evaluation.benchmarks import BENCHMARKS, PAPER_BENCHMARKS
from ..evaluation.generate import BACKENDS
from .flags import either_spelling


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """`["a=1,b=2", "c=3"]` -> `{"a": "1", "b": "2", "c": "3"}`."""
    out: dict[str, str] = {}
    for value in values or []:
        for item in value.split(","):
            if not item.strip():
                continue
            key, sep, rest = item.partition("=")
            if not sep or not key.strip() or not rest.strip():
                raise SystemExit(f"{flag}: expected NAME=VALUE, got {item!r}.")
            out[key.strip()] = rest.strip()
    return out


def _column_maps(values: list[str] | None) -> dict[str, dict[str, str]]:
    """`["mbpp:text=prompt,test_imports=test_imports"]` -> `{"mbpp": {"text": "prompt", ...}}`."""
    maps: dict[str, dict[str, str]] = {}
    for value in values or []:
        bench, sep, rest = value.partition(":")
        if not sep:
            raise SystemExit(f"--column-map: expected BENCHMARK:ROLE=COLUMN[,ROLE=COLUMN], got {value!r}.")
        maps.setdefault(bench.strip(), {}).update(_pairs([rest], "--column-map"))
    return maps


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rasft-trl eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--model", required=True, help="Hub id, local folder, or LoRA adapter folder (its base comes from "
        "adapter_config.json).")
    add("--benchmarks", default=",".join(PAPER_BENCHMARKS),
        help=f"comma list from: {', '.join(BENCHMARKS)} (default: the paper's Table 1, %(default)s)")
    add("--limit", type=int, default=None, help="evaluate only the first N problems of each benchmark")
    add("--num-samples", type=int, default=None, help="samples per problem (default: the paper's 16; 1 at "
        "--temperature 0, where more would repeat one greedy response)")
    add("--temperature", type=float, default=1.0, help="sampling temperature, 0 = greedy (paper: %(default)s)")
    add("--top-p", type=float, default=1.0, help="nucleus sampling (default: %(default)s, i.e. off)")
    add("--max-new-tokens", type=int, default=4096, help="generation budget per sample (paper: %(default)s)")
    add("--backend", choices=BACKENDS, default="auto", help="vllm, transformers, or auto (vLLM when it imports)")
    add("--output-dir", default="eval_results", help="run.json, samples.jsonl, results.json (default: %(default)s)")
    add("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    add("--recipe", default=None, help="training recipe (a YAML file, or a shipped recipe's name as `rasft-trl "
        "recipes` lists it) whose system_prompt / prompt_template to use, so the model is prompted as it was trained")
    add("--system-prompt", default=None, help="system line for every benchmark ('' = none); default: the recipes' "
        "line of each benchmark's domain (rasft_trl.prompts)")
    add("--prompt-template", default=None, help="format string with {prompt}, applied to each question first "
        "(models without a chat template)")
    add("--chat-without-system", action="store_true", help="with no system line, still send each question as a "
        "one-message (user) chat through the chat template instead of as plain text (the CPU demo's prompts)")
    add("--data-file", action="append", metavar="BENCH=PATH",
        help="local jsonl/json/parquet/csv file in the benchmark's Hub schema (repeatable)")
    add("--column-map", action="append", metavar="BENCH:ROLE=COLUMN[,ROLE=COLUMN]",
        help="read a role from a differently named column of a local file (repeatable)")
    add("--dataset-revision", action="append", metavar="BENCH=REV", help="Hub revision overriding the pinned one")
    add("--model-revision", default=None, help="Hub revision of the model")
    add("--dtype", default="auto", help="auto (bf16 on GPU and on CPUs with native bf16, else fp32), float32, "
        "bfloat16, float16")
    add("--batch-size", type=int, default=16, help="requests per generate call (transformers backend)")
    add("--chunk-size", type=int, default=256, help="requests generated, judged and written together")
    add("--vllm-kwargs", default="{}", help="JSON object of extra vllm.LLM arguments, e.g. "
        "'{\"tensor_parallel_size\": 2, \"gpu_memory_utilization\": 0.9}'")
    add("--math-timeout", type=float, default=5.0, help="seconds per math comparison")
    add("--code-timeout", type=float, default=10.0, help="seconds per program in the sandbox")
    add("--verifier-workers", type=int, default=None, help="verifier processes / concurrent programs")
    add("--cache-dir", default=None, help="where the HumanEval wheel is kept (default: ~/.cache/rasft-trl)")
    add("--trust-remote-code", action="store_true", help="passed to transformers / vLLM")
    add("--label", default=None, help="row label of the printed table (default: the model's folder name)")
    return parser


def config_from_args(args: argparse.Namespace):
    from ..evaluation.harness import EvalConfig

    system_prompt, prompt_template = args.system_prompt, args.prompt_template
    if args.recipe:
        import yaml

        from ..shipped import find_recipe

        with open(find_recipe(args.recipe)) as handle:
            recipe = yaml.safe_load(handle) or {}
        system_prompt = recipe.get("system_prompt", "") if system_prompt is None else system_prompt
        prompt_template = recipe.get("prompt_template") if prompt_template is None else prompt_template
    try:
        vllm_kwargs = json.loads(args.vllm_kwargs)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--vllm-kwargs is not a JSON object: {exc}") from exc
    if not isinstance(vllm_kwargs, dict):
        raise SystemExit("--vllm-kwargs must be a JSON object.")
    return EvalConfig(
        model=args.model, benchmarks=args.benchmarks, output_dir=args.output_dir, limit=args.limit,
        num_samples=args.num_samples, temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, backend=args.backend, seed=args.seed, system_prompt=system_prompt,
        prompt_template=prompt_template, chat_without_system=args.chat_without_system,
        data_files=_pairs(args.data_file, "--data-file"),
        column_maps=_column_maps(args.column_map), dataset_revisions=_pairs(args.dataset_revision,
                                                                            "--dataset-revision"),
        model_revision=args.model_revision, dtype=args.dtype, batch_size=args.batch_size,
        chunk_size=args.chunk_size, vllm_kwargs=vllm_kwargs, math_timeout=args.math_timeout,
        code_timeout=args.code_timeout, verifier_workers=args.verifier_workers, cache_dir=args.cache_dir,
        trust_remote_code=args.trust_remote_code,
    )


def main(argv: list[str] | None = None) -> dict:
    from ..evaluation.harness import format_results_table, run_eval

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("rasft_trl").setLevel(logging.INFO)
    parser = make_parser()
    args = parser.parse_args(either_spelling(parser, list(sys.argv[1:] if argv is None else argv)))
    try:
        config = config_from_args(args)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"rasft-trl eval: {exc}") from exc
    try:
        results = run_eval(config)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as exc:
        raise SystemExit(f"rasft-trl eval: {exc}") from exc
    run = results["run"]
    print("\n" + format_results_table(results, args.label))
    for name, bench in results["benchmarks"].items():
        curve = bench["pass@k"]
        shown = ", ".join(f"pass@{k} {100 * curve[k]:.2f}" for k in sorted(curve, key=int)
                          if int(k) in {1, 2, 4, 8, 16, 32, 64} or int(k) == len(curve))
        spread = ("" if bench["stderr"] is None else f" +/- {100 * bench['stderr']:.2f} (s.e.), 95% interval "
                  f"[{100 * bench['ci_low']:.2f}, {100 * bench['ci_high']:.2f}]")
        print(f"{name}: {100 * bench['accuracy']:.2f}{spread}; {bench['num_problems']} problems x "
              f"{bench['samples_per_problem']} samples; {shown}; unjudged {bench['num_unjudged']}, hit "
              f"max_new_tokens {bench['num_truncated']}")
    print(
        f"\n{run['generated']} samples generated ({run['backend'] or 'no model loaded'}), {run['reused']} reused from "
        f"an earlier run; generation {run['generation_seconds']:.0f} s, verification "
        f"{run['verification_seconds']:.0f} s, total {run['total_seconds']:.0f} s. "
        f"Results: {os.path.join(os.path.abspath(config.output_dir), 'results.json')}",
        flush=True,
    )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
