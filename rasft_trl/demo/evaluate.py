"""Held-out accuracy of a model on the demo problems, through the evaluation harness's own sampler and judge.

The demo builds [`EvalProblem`]s from its rows and hands its in-memory model to the harness's
[`TransformersSampler`] and [`sample_and_judge`], the path `rasft-trl eval` takes: the same prompt ids (the chat
template with a generation prompt; the demo's prompts are one user message), batches of similar prompt length, stop
tokens, and the same math verifier (the last `\\boxed{}` against the gold answer). Greedy by default, so "before"
and "after" differ only by the weights; `rasft-trl eval --temperature 0 --system-prompt '' --chat-without-system` on
the saved model and the demo's problems gives the same responses and the same accuracy (`tests/test_demo_eval.py`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from ..evaluation.benchmarks import EvalProblem
from ..evaluation.generate import TransformersSampler, stop_token_ids
from ..evaluation.harness import EvalConfig, sample_and_judge

#: benchmark name of the demo's problems in evaluation records
DEMO_BENCHMARK = "demo"


@dataclass
class EvalSettings:
    """Generation settings of the evaluation (identical before and after training).

    Args:
        max_new_tokens: generation budget per problem.
        batch_size: problems per `generate` call.
        do_sample: `False` = greedy decoding (default); `True` samples with `temperature` / `top_p`.
        temperature: sampling temperature (only with `do_sample=True`).
        top_p: nucleus sampling (only with `do_sample=True`).
        seed: sampling seed (only with `do_sample=True`; the harness seeds each batch from its first request).
    """

    max_new_tokens: int = 128
    batch_size: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def describe(self) -> str:
        """One-line description for reports, e.g. `"greedy, max_new_tokens=128"`."""
        mode = f"sampling (T={self.temperature}, top_p={self.top_p})" if self.do_sample else "greedy"
        return f"{mode}, max_new_tokens={self.max_new_tokens}"

    def eval_config(self, model_name: str) -> EvalConfig:
        """These settings as the harness's config (no benchmark: the demo passes its problems itself)."""
        return EvalConfig(
            model=model_name, benchmarks=[], num_samples=1, temperature=self.temperature if self.do_sample else 0.0,
            top_p=self.top_p if self.do_sample else 1.0, max_new_tokens=self.max_new_tokens, backend="transformers",
            seed=self.seed, system_prompt="", chat_without_system=True, batch_size=self.batch_size,
        )


@dataclass
class EvalResult:
    """Accuracy on a held-out split.

    Args:
        accuracy: fraction of problems judged correct (`None` = cannot judge counts as wrong).
        num_correct: number of correct responses.
        num_problems: number of problems.
        num_unjudged: responses the verifier could not judge.
        num_boxed: responses containing `\\boxed`, a proxy for format following.
        accuracy_by_level: accuracy per difficulty level.
        seconds: wall time of generation and scoring.
        settings: the generation settings.
        samples: a few `(prompt, response, answer, reward)` records for eyeballing.
        records: every sample's record, as `rasft-trl eval` writes them to `samples.jsonl` (not in `to_dict`).
    """

    accuracy: float
    num_correct: int
    num_problems: int
    num_unjudged: int
    num_boxed: int
    accuracy_by_level: dict[int, float]
    seconds: float
    settings: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (without `records`)."""
        out = asdict(self)
        out.pop("records")
        out["accuracy_by_level"] = {str(k): v for k, v in self.accuracy_by_level.items()}
        return out


def demo_problems(rows: list[dict]) -> list[EvalProblem]:
    """The harness's problems for demo rows: the question is the row's one user message (instruction included), the
    reference its gold answer, judged by the math verifier; ids are the row positions."""
    problems = []
    for index, row in enumerate(rows):
        prompt = row["prompt"]
        if not (isinstance(prompt, list) and len(prompt) == 1 and prompt[0].get("role") == "user"):
            raise ValueError(f"Row {index}: the demo evaluates prompts of one user message, got {str(prompt)[:120]}.")
        problems.append(EvalProblem(DEMO_BENCHMARK, str(index), prompt[0]["content"], {"answer": str(row["answer"])},
                                    domain="math"))
    return problems


def write_problems(rows: list[dict], path: str) -> str:
    """Write demo rows as a benchmark file in MATH-500's schema (`unique_id`, `problem`, `answer`), so that
    `rasft-trl eval --benchmarks math500 --data-file math500=<path> --chat-without-system --system-prompt ''`
    prompts and judges exactly the problems [`evaluate`] does (see [`eval_command`]). Returns `path`."""
    import json

    with open(path, "w", encoding="utf-8") as handle:
        for problem in demo_problems(rows):
            record = {"unique_id": problem.problem_id, "problem": problem.question,
                      "answer": problem.reference["answer"]}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def eval_command(model: str, problems_file: str, settings: EvalSettings, dtype: str, output_dir: str) -> str:
    """The `rasft-trl eval` command that scores `model` on the demo's problems as [`evaluate`] does (greedy settings;
    `dtype` is the demo's generation precision, `"bfloat16"` or `"float32"`)."""
    if settings.do_sample:
        raise ValueError("eval_command reproduces greedy evaluations only (sampling seeds differ per benchmark name).")
    return (
        f"rasft-trl eval --model {model} --benchmarks math500 --data-file math500={problems_file} --temperature 0 "
        f"--max-new-tokens {settings.max_new_tokens} --batch-size {settings.batch_size} --system-prompt '' "
        f"--chat-without-system --backend transformers --dtype {dtype} --output-dir {output_dir}"
    )


def evaluate(
    model,
    tokenizer,
    rows: list[dict],
    settings: EvalSettings | None = None,
    desc: str = "Evaluating",
    num_samples: int = 4,
) -> EvalResult:
    """Accuracy of `model` on held-out rows (columns `prompt`, `answer`, `level`), through the evaluation harness.

    Args:
        model: a causal LM held in memory (its `name_or_path` folder supplies the stop tokens of its generation
            config, as `rasft-trl eval` reads them).
        tokenizer: its tokenizer (pad token set).
        rows: held-out rows from [`~rasft_trl.demo.data.build_splits`].
        settings: generation settings; defaults to greedy with 128 new tokens.
        desc: label of the progress bars.
        num_samples: number of example responses kept in `samples`.
    """
    settings = settings or EvalSettings()
    config = settings.eval_config(getattr(model, "name_or_path", "") or "in-memory model")
    start = time.perf_counter()
    was_training = model.training
    sampler = TransformersSampler(model.eval(), tokenizer, config.temperature, config.top_p, config.max_new_tokens,
                                  stop_token_ids(tokenizer, config.model), config.batch_size)
    try:
        records, _ = sample_and_judge(sampler, tokenizer, [(p, 0) for p in demo_problems(rows)], config, label=desc)
    finally:
        model.train(was_training)
    correct = [bool(record["correct"]) for record in records]
    by_level: dict[int, list[bool]] = defaultdict(list)
    for row, ok in zip(rows, correct):
        by_level[int(row["level"])].append(ok)
    samples = [
        {"prompt": row["prompt"][-1]["content"], "response": record["response"], "answer": row["answer"],
         "reward": 1.0 if record["correct"] else None if record["verdict"] == "cannot_judge" else 0.0}
        for row, record in list(zip(rows, records))[:num_samples]
    ]
    return EvalResult(
        accuracy=sum(correct) / max(len(rows), 1),
        num_correct=sum(correct),
        num_problems=len(rows),
        num_unjudged=sum(record["verdict"] == "cannot_judge" for record in records),
        num_boxed=sum("\\boxed" in record["response"] for record in records),
        accuracy_by_level={level: sum(v) / len(v) for level, v in sorted(by_level.items())},
        seconds=time.perf_counter() - start,
        settings=asdict(settings),
        samples=samples,
        records=records,
    )
