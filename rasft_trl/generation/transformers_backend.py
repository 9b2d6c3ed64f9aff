"""Rollouts from the training model itself through batched `generate` (the fallback and debugging backend).

Rollouts are sampled exactly as configured: `generate` fills every field left `None` from the model's
`generation_config.json` and then from transformers' global defaults (`top_k=50` among them), so the backend sets
each sampling field explicitly (`top_k=0` stays "disabled") and hides the model's own generation config during the
call (a checkpoint's `min_p`, `typical_p` or `no_repeat_ngram_size` would otherwise change the distribution).
"""

from __future__ import annotations

import copy
from contextlib import ExitStack, contextmanager

import torch
from transformers import GenerationConfig
from trl.models.utils import unwrap_model_for_generation
from trl.trainer.utils import pad

from .base import SamplingSettings, global_max, truncate_at_stop


class TransformersGeneration:
    """Sample rollouts with `model.generate`: all samples of all prompts in one call (or in chunks of
    `batch_size` prompts), left-padded, K samples per prompt via `num_return_sequences`.

    Args:
        model: the trainer's (possibly wrapped) model; generation uses its current weights, adapters included.
        accelerator: the trainer's accelerator (unwrapping, device, ZeRO-3 parameter gathering).
        sampling: rollout sampling settings.
        pad_token_id: id used to left-pad prompts.
        eos_token_ids: ids that end a rollout.
        batch_size: prompts per `generate` call; `None`: all at once.
        gather_deepspeed3_params: gather ZeRO-3 parameters for generation (faster, more memory).
        is_fsdp: unshard the FSDP (1 or 2) parameters once around generation (see `fsdp_full_parameters`).
        fsdp_reshard_after_forward: the FSDP plugin's `reshard_after_forward`, restored after generation.
        generation_kwargs: extra `GenerationConfig` fields (override the sampling settings above).
    """

    def __init__(
        self,
        model,
        accelerator,
        sampling: SamplingSettings,
        pad_token_id: int,
        eos_token_ids: list[int],
        batch_size: int | None = None,
        gather_deepspeed3_params: bool = True,
        is_fsdp: bool = False,
        generation_kwargs: dict | None = None,
        fsdp_reshard_after_forward: bool = True,
    ):
        self.model = model
        self.accelerator = accelerator
        self.sampling = sampling
        self.pad_token_id = pad_token_id
        self.eos_token_ids = list(eos_token_ids)
        self.batch_size = batch_size
        self.gather_deepspeed3_params = gather_deepspeed3_params
        self.is_fsdp = is_fsdp
        self.fsdp_reshard_after_forward = fsdp_reshard_after_forward
        self.generation_config = GenerationConfig(
            do_sample=True,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,  # 0 = disabled; `None` would become transformers' default top-k of 50
            min_p=sampling.min_p or None,  # `None` = disabled once the model's own defaults are hidden
            repetition_penalty=sampling.repetition_penalty,
            max_new_tokens=sampling.max_new_tokens,
            pad_token_id=pad_token_id,
            eos_token_id=self.eos_token_ids,
            cache_implementation=None,
        )
        if generation_kwargs:
            unknown = self.generation_config.update(**generation_kwargs)
            if unknown:
                raise ValueError(f"generation_kwargs names fields GenerationConfig does not have: {sorted(unknown)}.")
            self.generation_config.validate(strict=True)

    def sync_weights(self) -> None:
        """Nothing to do: generation reads the training weights directly."""

    def generate(self, prompt_ids: list[list[int]], num_samples: int) -> list[list[int]]:
        """Sample `num_samples` completions per prompt. Called by every process: with several processes each one
        makes as many `generate` calls, on as many prompts, as the busiest (a process with fewer prompts pads with a
        one-token filler prompt whose samples are dropped). Under ZeRO-3 gathering the parameters is a collective,
        and under FSDP or ZeRO-3 without gathering every decoding step is (transformers' `synced_gpus`)."""
        own = len(prompt_ids)
        target = global_max(self.accelerator, own)
        if target == 0:
            return []
        prompt_ids = list(prompt_ids) + [[self.eos_token_ids[0]]] * (target - own)
        step = self.batch_size or target
        completions: list[list[int]] = []
        with ExitStack() as stack:
            unwrapped = stack.enter_context(
                unwrap_model_for_generation(
                    self.model, self.accelerator, gather_deepspeed3_params=self.gather_deepspeed3_params
                )
            )
            if self.is_fsdp:
                from ..distributed import fsdp_full_parameters

                stack.enter_context(fsdp_full_parameters(self.model, self.fsdp_reshard_after_forward))
            stack.enter_context(torch.no_grad())
            stack.enter_context(neutral_generation_config(unwrapped))
            stack.enter_context(contiguous_lm_head_input(unwrapped))
            was_training = unwrapped.training
            unwrapped.eval()  # no dropout while sampling
            try:
                for start in range(0, len(prompt_ids), step):
                    completions.extend(self._generate_chunk(unwrapped, prompt_ids[start : start + step], num_samples))
            finally:
                unwrapped.train(was_training)
        return completions[: own * num_samples]

    def _generate_chunk(self, unwrapped, prompt_ids: list[list[int]], num_samples: int) -> list[list[int]]:
        device = self.accelerator.device
        prompts = [torch.tensor(ids, dtype=torch.long) for ids in prompt_ids]
        input_ids = pad(prompts, padding_value=self.pad_token_id, padding_side="left").to(device)  # [P, Lp]
        attention_mask = pad([torch.ones_like(p) for p in prompts], padding_value=0, padding_side="left").to(device)
        config = copy.copy(self.generation_config)
        config.num_return_sequences = num_samples
        if (config.num_beams or 1) > 1:
            # beam search returns at most `num_beams` sequences per prompt: like GRPO, run each prompt K times
            input_ids = input_ids.repeat_interleave(num_samples, dim=0)  # [P * K, Lp]
            attention_mask = attention_mask.repeat_interleave(num_samples, dim=0)
            config.num_return_sequences = 1
        # Under ZeRO-3 and FSDP (1 or 2: torch marks `fully_shard` modules) transformers sets `synced_gpus`, so every
        # process runs as many decoding steps as the longest (tests/test_sharded.py checks the forward counts).
        extra = {}
        if getattr(unwrapped.config.get_text_config(), "output_router_logits", False):
            # MoE models configured to return router logits compute the load-balancing loss in every forward, which
            # fails on cached decoding steps (the mask covers the whole sequence, the router logits one token)
            extra["output_router_logits"] = False
        output = unwrapped.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                                    **extra)  # [P * K, Lp + new]; samples of one prompt are contiguous
        generated = output[:, input_ids.size(1) :].cpu().tolist()
        stop = set(self.eos_token_ids)
        return [truncate_at_stop(ids, stop) for ids in generated]


@contextmanager
def neutral_generation_config(model):
    """Hide the model's `generation_config` (checkpoint sampling defaults) for the duration of a `generate` call.

    `generate` fills the fields our config leaves `None` from `model.generation_config`; inside this context that
    is a plain `GenerationConfig()`, so only the backend's settings and transformers' neutral global defaults apply.
    PEFT wrappers delegate `generate` to the causal LM inside them, whose config is the one swapped.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = getattr(inner, "generation_config", None)
    inner.generation_config = GenerationConfig()
    try:
        yield
    finally:
        inner.generation_config = saved


@contextmanager
def contiguous_lm_head_input(model):
    """Give the LM head a contiguous input during a `generate` call (a forward pre-hook, removed on exit; the same
    numbers, bit for bit).

    At the prefill of `generate`, transformers feeds the LM head the last position only, `hidden[:, -1:, :]`: a
    strided view of `[batch, prompt_length, hidden]`. On the CPU, torch's bf16 `linear` on such a view does not run
    the matmul kernel; it materializes a `[batch, vocab, hidden]` product first: the prefill of a batch of 96 prompts
    at SmolLM2's vocabulary (49,152 x 576) took +5.6 GB and 13.5 s, against +0.34 GB and 7.3 s on a contiguous copy
    of the `[96, 1, 576]` input, with the same tokens (docs/benchmarks.md, "Memory of the CPU demo").
    Decoding steps, whose input is one position, are contiguous already and pass through untouched.
    """
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if get_head is not None else None
    handle = head.register_forward_pre_hook(_contiguous_first_input) if head is not None else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


def _contiguous_first_input(module, args):
    if args and isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return None
