"""Baselines sharing RASFT's data pipeline, reference handling, loss module and metrics."""

from .sft_variants import LOSS_TYPES, SFTVariantConfig, SFTVariantTrainer

__all__ = ["LOSS_TYPES", "SFTVariantConfig", "SFTVariantTrainer"]
