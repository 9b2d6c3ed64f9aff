"""The small protocol every rollout backend implements.

A backend turns prompts (token ids) into `num_samples` completions each, sampled from the *current* policy with
the configured sampling settings. The trainer never looks inside: the transformers backend (batched
`generate`) and the vLLM backend (TRL's `VLLMGeneration`) are interchangeable. Log-probabilities used by the
loss are never taken from the sampler; the trainer recomputes them at temperature 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class SamplingSettings:
    """Rollout sampling settings (paper Appendix A defaults)."""

    temperature: float = 0.9
    top_p: float = 0.95
    top_k: int = 0
    repetition_penalty: float = 1.1
    max_new_tokens: int = 1024
    min_p: float | None = None

    @classmethod
    def from_config(cls, args) -> SamplingSettings:
        return cls(
            args.temperature, args.top_p, args.top_k, args.repetition_penalty, args.max_new_tokens,
            getattr(args, "min_p", None),
        )


@runtime_checkable
class GenerationBackend(Protocol):
    """Rollout generation behind one call.

    `generate(prompt_ids, num_samples)` returns `len(prompt_ids) * num_samples` completions (token ids, ending
    with the EOS token when the model stopped by itself), the `num_samples` samples of each prompt contiguous:
    `[p0s0, p0s1, ..., p1s0, ...]`. Every process calls it, possibly with zero prompts, so that backends built on
    collectives stay in step.

    `sync_weights()` is called after every optimizer step that changed the weights; backends that sample from the
    training model itself (transformers) do nothing.
    """

    def generate(self, prompt_ids: list[list[int]], num_samples: int) -> list[list[int]]: ...

    def sync_weights(self) -> None: ...


def truncate_at_stop(token_ids: list[int], stop_ids: set[int]) -> list[int]:
    """Cut a generated sequence right after its first stop token (kept), dropping what follows (padding)."""
    for position, token in enumerate(token_ids):
        if token in stop_ids:
            return token_ids[: position + 1]
    return token_ids


def global_max(accelerator, count: int) -> int:
    """The largest `count` over all processes (a collective; `count` itself with one process)."""
    if accelerator.num_processes == 1:
        return count
    import torch

    return int(accelerator.gather(torch.tensor([count], device=accelerator.device)).max())
