"""Which policy weights are pushed to vLLM, and how adapters are merged without touching the reference.

For a LoRA policy, TRL's `VLLMGeneration` merges the adapter into the base weights in place, streams them, and
unmerges. `(W + d) - d` is not `W` in floating point: measured on a tiny Llama, one merge/unmerge changed 7,116 base
weights in fp32 (by up to 7e-9) and 8,067 in bf16 (by up to 2.4e-4). In RASFT the adapter-disabled base *is* the
frozen reference, so every sync would nudge the reference. [`iter_merged_peft_weights`] computes `W + d` as a new
tensor instead, leaving `W` bit-identical. On a 4-bit base (QLoRA) the in-place merge would also requantize the base;
quantized policies are refused by [`check_weight_sync_supported`] (use the transformers backend).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import torch
from accelerate.utils import is_peft_model

_MODULES_TO_SAVE = re.compile(r"modules_to_save\.[^.]+\.")


def is_quantized(model) -> bool:
    """Whether the (base) model was loaded quantized (bitsandbytes 4/8-bit or another transformers quantizer)."""
    return bool(
        getattr(model, "is_loaded_in_4bit", False)
        or getattr(model, "is_loaded_in_8bit", False)
        or getattr(model, "hf_quantizer", None) is not None
    )


def check_weight_sync_supported(model, is_fsdp: bool) -> None:
    """Refuse, with a clear error, policies whose weights cannot be pushed to vLLM without harm.

    Args:
        model: the trainer's (unwrapped) model, possibly a `PeftModel`.
        is_fsdp: whether the trainer shards the model with FSDP.

    Raises:
        ValueError: the model is quantized (QLoRA or 8-bit), or uses an adapter type other than plain LoRA.
        NotImplementedError: a PEFT model sharded with FSDP.
    """
    if is_quantized(model):
        raise ValueError(
            "use_vllm=True does not support a quantized policy (QLoRA / 8-bit): syncing the weights would merge the "
            "adapter into the quantized base in place and re-round the frozen base, which is RASFT's reference. "
            "Use the transformers rollout backend (use_vllm=False), or train LoRA on a non-quantized base."
        )
    if not is_peft_model(model):
        return
    if is_fsdp:
        raise NotImplementedError(
            "use_vllm=True with a PEFT adapter under FSDP is not supported (the adapter is merged out of place on "
            "gathered weights). Use DeepSpeed, a single process per model copy, or use_vllm=False."
        )
    for name, module in model.named_modules():
        _check_tuner_layer(name, module)


def _check_tuner_layer(name: str, module: torch.nn.Module) -> None:
    from peft.tuners.lora import LoraLayer
    from peft.tuners.tuners_utils import BaseTunerLayer

    if not isinstance(module, BaseTunerLayer):
        return
    if not isinstance(module, LoraLayer):
        raise ValueError(f"use_vllm=True supports LoRA adapters only; {name} is a {type(module).__name__}.")
    for adapter in module.active_adapters:
        variant = getattr(module, "lora_variant", {}).get(adapter)  # DoRA, aLoRA, ... (PEFT >= 0.16)
        if variant is not None or module.use_dora.get(adapter, False) or module.lora_bias.get(adapter, False):
            raise ValueError(
                f"use_vllm=True supports plain LoRA only; adapter {adapter!r} on {name} is a LoRA variant (e.g. DoRA) "
                "or has lora_bias, whose merged weight is not `W + delta`. Use use_vllm=False."
            )


def vllm_parameter_name(name: str) -> str:
    """Checkpoint name vLLM expects for a parameter of a (PEFT-wrapped, checkpoint-wrapped) model."""
    name = name.replace("_checkpoint_wrapped_module.", "")
    name = name.removeprefix("base_model.model.").replace(".base_layer", "")
    return _MODULES_TO_SAVE.sub("", name)


def iter_merged_peft_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield the weights of a LoRA policy with its active adapters merged, without modifying any parameter.

    Each LoRA-wrapped weight is yielded as a new tensor `W + sum of the active adapters' deltas` (added in fp32, cast
    back to `W`'s dtype); every other base weight is yielded as is. Adapter tensors and the originals of
    `modules_to_save` are skipped; names are the base model's checkpoint names.

    Args:
        model: a `PeftModel` with LoRA adapters, already checked by [`check_weight_sync_supported`].
    """
    from peft.tuners.lora import LoraLayer

    lora_layers = {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    for name, param in model.named_parameters():
        if model.prefix in name or "original_module" in name:
            continue
        owner, _, leaf = name.rpartition(".")
        layer = lora_layers.get(owner.removesuffix(".base_layer")) if owner.endswith(".base_layer") else None
        value = param.data
        if layer is not None and leaf == "weight":
            value = _merged_weight(layer, value)
        yield vllm_parameter_name(name), value


def _merged_weight(layer, weight: torch.Tensor) -> torch.Tensor:
    """`weight + delta` of the layer's active adapters, as a new tensor (the layer is left untouched)."""
    if layer.merged:
        raise RuntimeError("The adapter is merged into the base weights in place; unmerge it before syncing to vLLM.")
    if layer.disable_adapters:
        return weight
    adapters = [a for a in layer.active_adapters if a in layer.lora_A or a in getattr(layer, "lora_embedding_A", {})]
    if not adapters:
        return weight
    merged = weight.float()
    for adapter in adapters:
        merged = merged + layer.get_delta_weight(adapter).float()
    return merged.to(weight.dtype)


#: LoRA ranks vLLM's engine accepts as `max_lora_rank`
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def adapter_sync_rank(model) -> int | None:
    """The `max_lora_rank` vLLM needs to serve `model`'s LoRA adapter as an adapter, or None when the adapter must
    be merged instead: not a PEFT LoRA model, a quantized base, `modules_to_save` (vLLM loads LoRA deltas only), or a
    rank above vLLM's largest."""
    if not is_peft_model(model) or is_quantized(model):
        return None
    config = model.peft_config[model.active_adapter]
    if getattr(config, "modules_to_save", None) or getattr(config, "rank_pattern", None):
        return None
    return next((r for r in VLLM_LORA_RANKS if r >= config.r), None)
