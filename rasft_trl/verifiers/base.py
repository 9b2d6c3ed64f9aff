"""The verifier interface shared by training and evaluation.

A verifier answers one question: is this response correct for this problem? It returns a
[`VerifyResult`] with a three-way verdict (correct / incorrect / cannot judge), a reason and the parsed
forms, so that users can audit disagreements.

Every verifier is also callable in TRL's reward-function form
`(prompts, completions, completion_ids=None, **dataset_columns) -> list[float | None]` (1.0 correct,
0.0 incorrect, `None` cannot judge), so RASFT verifiers can be handed to TRL trainers and TRL reward
functions to RASFT.

Separation rule: verifiers never import torch, and every call is bounded in time.

This module is the interface only; names are resolved by the registry (`registry.py`: `get_verifier`,
`register_verifier`, `registered_verifiers`, re-exported here and from `rasft_trl.verifiers`), which the package
fills with the built-in verifiers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable

from .registry import get_verifier, register_verifier, registered_verifiers  # noqa: F401  (the older import path)


class Verdict(str, enum.Enum):
    CORRECT = "correct"
    INCORRECT = "incorrect"
    CANNOT_JUDGE = "cannot_judge"


@dataclass
class VerifyResult:
    """Outcome of one verification.

    Args:
        verdict: correct, incorrect, or cannot judge (e.g. the gold answer does not parse).
        reason: short machine-readable reason, e.g. `"string_match"`, `"sympy_equal"`, `"no_box"`, `"timeout"`.
        parsed_prediction: what was extracted / parsed from the response, for auditing.
        parsed_gold: what was parsed from the gold answer, for auditing.
        details: free-form extra information (captured output of a program, ...).
    """

    verdict: Verdict
    reason: str = ""
    parsed_prediction: Any = None
    parsed_gold: Any = None
    details: dict = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.verdict is Verdict.CORRECT

    @property
    def reward(self) -> float | None:
        """TRL reward-function value: 1.0, 0.0, or `None` for cannot judge."""
        if self.verdict is Verdict.CANNOT_JUDGE:
            return None
        return 1.0 if self.verdict is Verdict.CORRECT else 0.0


def completion_text(completion: Any) -> str:
    """Text of a completion in TRL's standard (`str`) or conversational (`[{"role", "content"}]`) form."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # multimodal content blocks
            return "".join(block.get("text", "") for block in content if isinstance(block, dict))
        return str(content)
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    raise TypeError(f"Unsupported completion type {type(completion).__name__}: {completion!r:.80}")


class Verifier:
    """Base class: subclasses implement `verify_batch` (or `verify`).

    `reference_column` names the dataset column holding the gold reference (`"answer"` for math,
    `"tests"` for code). The reward-function call maps `completions[i]` and `reference_column[i]` to
    `verify_batch`.
    """

    reference_column: str = "answer"
    #: name under which TRL logs this reward function
    __name__ = "verifier"

    def verify(self, prediction: str, reference: Any, **row: Any) -> VerifyResult:
        return self.verify_batch([prediction], [reference], rows=[row])[0]

    def verify_batch(
        self, predictions: list[str], references: list[Any], rows: list[dict] | None = None
    ) -> list[VerifyResult]:
        raise NotImplementedError

    def __call__(self, prompts=None, completions=None, completion_ids=None, **columns: Any) -> list[float | None]:
        if completions is None:
            raise ValueError("A verifier needs `completions`.")
        if self.reference_column not in columns:
            raise ValueError(
                f"{type(self).__name__} needs the dataset column {self.reference_column!r}; "
                f"got columns {sorted(columns)}."
            )
        references = columns[self.reference_column]
        rows = [{k: v[i] for k, v in columns.items() if isinstance(v, list) and len(v) == len(completions)}
                for i in range(len(completions))]
        results = self.verify_batch([completion_text(c) for c in completions], list(references), rows=rows)
        return [r.reward for r in results]


RewardFunc = Callable[..., list]
