"""Rollout backends behind one small protocol (see [`GenerationBackend`]).

[`make_generation_backend`] picks the backend from the trainer's config: the transformers backend (batched
`generate` on the training model) by default, the vLLM backend (TRL's `VLLMGeneration`) with `use_vllm=True`.
The trainer only ever calls `generate` and `sync_weights`.
"""

from __future__ import annotations

from .base import GenerationBackend, SamplingSettings, truncate_at_stop


def make_generation_backend(trainer) -> GenerationBackend:
    """Build the rollout backend the trainer's config asks for (imports the backend lazily)."""
    args = trainer.args
    if args.use_vllm:
        from .vllm_backend import VLLMBackend

        return VLLMBackend.from_trainer(trainer)
    from .transformers_backend import TransformersGeneration

    return TransformersGeneration(
        trainer.model_wrapped,
        trainer.accelerator,
        SamplingSettings.from_config(args),
        pad_token_id=trainer.processing_class.pad_token_id,
        eos_token_ids=[trainer.processing_class.eos_token_id],
        batch_size=args.generation_batch_size,
        gather_deepspeed3_params=args.ds3_gather_for_generation,
        is_fsdp=trainer.is_fsdp_enabled,
        fsdp_reshard_after_forward=_fsdp_reshard_after_forward(trainer),
        generation_kwargs=args.generation_kwargs,
    )


def _fsdp_reshard_after_forward(trainer) -> bool:
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    value = getattr(plugin, "reshard_after_forward", True)
    return value if isinstance(value, bool) else True


__all__ = ["GenerationBackend", "SamplingSettings", "make_generation_backend", "truncate_at_stop"]
