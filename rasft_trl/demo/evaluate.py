"""Held-out accuracy of a model on the demo problems, scored by the project's math verifier.

Generation is batched, left-padded, through the tokenizer's chat template with a generation prompt, and
greedy by default (deterministic, so "before" and "after" differ only by the weights). The score is the
training reward: the math verifier compares the last `\\boxed{}` of the response with the gold answer.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ..verifiers import get_verifier


@dataclass
class EvalSettings:
    """Generation settings of the evaluation (identical before and after training).

    Args:
        max_new_tokens: generation budget per problem.
        batch_size: problems per `generate` call.
        do_sample: `False` = greedy decoding (default); `True` samples with `temperature` / `top_p`.
        temperature: sampling temperature (only with `do_sample=True`).
        top_p: nucleus sampling (only with `do_sample=True`).
        seed: torch seed set before sampling (only with `do_sample=True`).
        correct_threshold: a reward at or above it counts as correct (the trainer's `correct_threshold`).
    """

    max_new_tokens: int = 128
    batch_size: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    correct_threshold: float = 1.0

    def describe(self) -> str:
        """One-line description for reports, e.g. `"greedy, max_new_tokens=128"`."""
        mode = f"sampling (T={self.temperature}, top_p={self.top_p})" if self.do_sample else "greedy"
        return f"{mode}, max_new_tokens={self.max_new_tokens}"


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        out = asdict(self)
        out["accuracy_by_level"] = {str(k): v for k, v in self.accuracy_by_level.items()}
        return out


@torch.no_grad()
def generate_responses(
    model, tokenizer, prompts: list[list[dict]], settings: EvalSettings, desc: str = "Evaluating"
) -> list[str]:
    """Generate one response per conversational prompt, in batches, with a tqdm progress bar.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer (must have a chat template and a pad token).
        prompts: conversational prompts (`[{"role": "user", "content": ...}]`).
        settings: generation settings.
        desc: label of the progress bar.

    Returns:
        The decoded responses, special tokens removed.
    """
    was_training, padding_side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # decoder-only generation needs the prompts right-aligned
    if settings.do_sample:
        torch.manual_seed(settings.seed)
    sampling = (
        dict(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
        if settings.do_sample
        else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    )
    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    # Batches of similar prompt length: less padding, and a batch of short problems stops early instead of waiting
    # for the longest answer in a mixed batch. Responses are returned in the input order.
    order = sorted(range(len(texts)), key=lambda i: len(tokenizer(texts[i], add_special_tokens=False)["input_ids"]))
    responses: list[str] = [""] * len(texts)
    try:
        with tqdm(total=len(prompts), desc=desc, unit="problem") as bar:
            for start in range(0, len(order), settings.batch_size):
                chunk = order[start : start + settings.batch_size]
                enc = tokenizer([texts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
                out = model.generate(
                    **enc.to(model.device), max_new_tokens=settings.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                    **sampling,
                )
                decoded = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                for i, text in zip(chunk, decoded):
                    responses[i] = text
                bar.update(len(chunk))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return responses


def evaluate(
    model,
    tokenizer,
    rows: list[dict],
    settings: EvalSettings | None = None,
    desc: str = "Evaluating",
    num_samples: int = 4,
) -> EvalResult:
    """Accuracy of `model` on held-out rows (columns `prompt`, `answer`, `level`), scored by the math verifier.

    Args:
        model: a causal LM (a PEFT model works too).
        tokenizer: its tokenizer.
        rows: held-out rows from [`~rasft_trl.demo.data.build_splits`].
        settings: generation settings; defaults to greedy with 128 new tokens.
        desc: label of the progress bar.
        num_samples: number of example responses kept in the result.
    """
    settings = settings or EvalSettings()
    start = time.perf_counter()
    responses = generate_responses(model, tokenizer, [r["prompt"] for r in rows], settings, desc=desc)
    verifier = get_verifier("math")
    rewards = verifier(completions=responses, answer=[r["answer"] for r in rows])
    correct = [reward is not None and reward >= settings.correct_threshold for reward in rewards]
    by_level: dict[int, list[bool]] = defaultdict(list)
    for row, ok in zip(rows, correct):
        by_level[int(row["level"])].append(ok)
    samples = [
        {"prompt": r["prompt"][-1]["content"], "response": text, "answer": r["answer"], "reward": reward}
        for r, text, reward in list(zip(rows, responses, rewards))[:num_samples]
    ]
    return EvalResult(
        accuracy=sum(correct) / max(len(rows), 1),
        num_correct=sum(correct),
        num_problems=len(rows),
        num_unjudged=sum(reward is None for reward in rewards),
        num_boxed=sum("\\boxed" in text for text in responses),
        accuracy_by_level={level: sum(v) / len(v) for level, v in sorted(by_level.items())},
        seconds=time.perf_counter() - start,
        settings=asdict(settings),
        samples=samples,
    )
