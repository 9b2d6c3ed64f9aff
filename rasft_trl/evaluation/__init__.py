"""Evaluation harness: the paper's benchmarks, sampled and judged with the training verifiers (`rasft-trl eval`).

    from rasft_trl.evaluation import EvalConfig, run_eval

    results = run_eval(EvalConfig(model="outputs/Qwen2.5-Math-1.5B-RASFT", benchmarks=["math500", "aime24"]))
"""

from __future__ import annotations

from .benchmarks import BENCHMARKS, PAPER_BENCHMARKS, BenchmarkSpec, EvalProblem, load_problems, resolve_benchmark
from .harness import EvalConfig, format_results_table, run_eval
from .metrics import accuracy_interval, mean_accuracy, pass_at_k, pass_at_k_curve

__all__ = [
    "accuracy_interval",
    "BENCHMARKS",
    "PAPER_BENCHMARKS",
    "BenchmarkSpec",
    "EvalConfig",
    "EvalProblem",
    "format_results_table",
    "load_problems",
    "mean_accuracy",
    "pass_at_k",
    "pass_at_k_curve",
    "resolve_benchmark",
    "run_eval",
]
