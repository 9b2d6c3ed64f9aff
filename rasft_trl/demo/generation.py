"""Faster CPU generation for the demo: a low-precision copy of the policy, LoRA merged out of place.

On the demo's 2-core CPU, rollout generation was a third of every RASFT step, and `generate` in fp32 is slow
(measured on the warm-started SmolLM2-135M, greedy, batch 48, 48 new tokens: 437 ms per decoding step in fp32,
250 ms in bf16 on a CPU with native bf16). Autocast does not speed up `generate`; a bf16 *copy* of the weights
does. [`copy_policy`] writes the policy's current weights into such a copy, merging LoRA adapters out of place
(the policy and its adapter-disabled reference are never touched), and [`CopyGeneration`] is a rollout backend
that samples from the copy and refreshes it whenever the trainer syncs weights (after every optimizer step).
The loss never sees these samples' log-probabilities: the trainer recomputes them in its own precision.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from rasft_trl.generation import SamplingSettings
from rasft_trl.generation.transformers_backend import TransformersGeneration
from rasft_trl.generation.vllm_weights import iter_merged_peft_weights


def policy_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """Current weights of a causal LM or a LoRA `PeftModel` by checkpoint name, one at a time (adapters merged into
    a new tensor per weight, so at most one merged weight exists at once)."""
    if hasattr(model, "peft_config"):
        yield from iter_merged_peft_weights(model)
    else:
        for name, param in model.named_parameters():
            yield name, param.detach()


def copy_policy(policy, target) -> None:
    """Overwrite `target`'s weights (any dtype) with `policy`'s current ones, weight by weight.

    Copying in place, one merged weight at a time, keeps the peak at one weight's size: building every merged weight
    first (a `state_dict` for `load_state_dict`) held a second fp32 copy of the model, +0.9 GB at each sync of the
    demo's policy (`benchmarks/bench_demo_memory.py`).

    Raises:
        RuntimeError: if a weight of `target` other than a tied one has no counterpart in the policy, or the policy
            has a weight `target` lacks.
    """
    slots = target.state_dict(keep_vars=True)
    copied, unexpected = set(), []
    for name, value in policy_weights(policy):
        if name not in slots:
            unexpected.append(name)
            continue
        slots[name].data.copy_(value)
        copied.add(name)
    missing = {name for name in slots if name not in copied and not _is_tied(target, name)}
    if missing or unexpected:
        raise RuntimeError(
            f"Policy and generation copy differ: missing {sorted(missing)[:5]}, unexpected {unexpected[:5]}."
        )


def _is_tied(model, name: str) -> bool:
    output = model.get_output_embeddings()
    return name == "lm_head.weight" and output is not None and output.weight is model.get_input_embeddings().weight


def load_copy(model_path: str, dtype: torch.dtype):
    """A frozen, eval-mode copy of the model at `model_path` in `dtype`, for generation only."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True, dtype=dtype)
    return model.eval().requires_grad_(False)


class CopyGeneration:
    """Rollout backend sampling from a low-precision copy of the trainer's policy, with a progress bar.

    Args:
        model_path: folder of the policy's initial model (the copy's architecture and tokenizer-independent config).
        dtype: dtype of the copy (`torch.bfloat16`; `torch.float32` gives the trainer's own numbers, slower).
        sampling: the rollout sampling settings (`SamplingSettings.from_config(trainer.args)`).
        eos_token_id: the id that ends a rollout (also the pad id of the demo's tokenizer).

    Call [`bind`] with the trainer once it exists; the copy is filled with the policy's weights then, and again at
    every `sync_weights`.
    """

    def __init__(self, model_path: str, dtype: torch.dtype, sampling: SamplingSettings, eos_token_id: int):
        self.model_path, self.dtype, self.sampling, self.eos_token_id = model_path, dtype, sampling, eos_token_id
        self.trainer = None
        self.copy = None
        self._inner = None
        self.syncs = 0

    def bind(self, trainer) -> None:
        """Attach the trainer whose policy the copy follows, and copy its weights now."""
        self.trainer = trainer
        self.copy = load_copy(self.model_path, self.dtype)
        self._inner = TransformersGeneration(
            self.copy, trainer.accelerator, self.sampling, pad_token_id=self.eos_token_id,
            eos_token_ids=[self.eos_token_id],
        )
        self.sync_weights()

    def sync_weights(self) -> None:
        """Copy the policy's current weights (LoRA merged out of place) into the generation copy."""
        policy = self.trainer.accelerator.unwrap_model(self.trainer.model)
        with torch.no_grad():
            copy_policy(policy, self.copy)
        self.syncs += 1

    def generate(self, prompt_ids: list[list[int]], num_samples: int) -> list[list[int]]:
        """Sample `num_samples` completions per prompt from the copy (see `GenerationBackend`)."""
        from tqdm.auto import tqdm

        if not prompt_ids:
            return []
        desc = f"Rollouts ({len(prompt_ids)} problems x {num_samples})"
        with tqdm(total=self.sampling.max_new_tokens + 1, desc=desc, unit="tok", leave=False) as bar:

            def tick(*_) -> None:  # a forward hook that returns a value would replace the model's output
                bar.update(1)

            handle = self.copy.register_forward_hook(tick)
            try:
                return self._inner.generate(prompt_ids, num_samples)
            finally:
                handle.remove()
