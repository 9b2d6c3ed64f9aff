"""Expert-only baselines of the RASFT paper's Table 1: SFT, SFT+KL, DFT, ASFT and ProFiT.

They are RASFT with the rollouts and the ratio switched off, a token factor and, for SFT+KL and ASFT, a
full-vocabulary `KL(pi_ref || pi_theta)` term. One shared trainer keeps a single data pipeline, reference handling
(frozen copy, or the adapter-disabled model under LoRA), loss normalization and metrics for every row of the
tables; the config pair gives each method its TRL-style name and defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..rasft_config import RASFTConfig, document_fields
from ..rasft_trainer import RASFTTrainer


#: loss_type -> (token factor, uses the KL term, ProFiT normalization)
LOSS_TYPES: dict[str, tuple[str, bool, str]] = {
    "sft": ("sft", False, "all"),
    "sft_kl": ("sft", True, "all"),
    "dft": ("dft", False, "all"),
    "asft": ("dft", True, "all"),
    "profit": ("profit", False, "kept"),
}
DEFAULT_KL_WEIGHT = 0.05


@dataclass
class SFTVariantConfig(RASFTConfig):
    r"""
    Configuration of the expert-only baselines ([`SFTVariantTrainer`]).

    `use_rollouts`, `use_ratio`, `token_factor` and `profit_normalization` are derived from `loss_type` (values set
    for them are overwritten); every other [`RASFTConfig`] field applies.

    Parameters:
        loss_type (`str`, *optional*, defaults to `"dft"`):
            `"sft"` (`-log p_t`), `"sft_kl"` (SFT + `kl_weight` * KL), `"dft"` (`-sg(p_t) log p_t`, Wu et al.
            2508.05629), `"asft"` (DFT + `kl_weight` * KL, Zhu et al. 2509.23753) or `"profit"` (SFT on the tokens
            with `p_t >= profit_threshold`, averaged over those tokens; plain SFT for a step where none passes, Liu
            et al. 2601.09195).
        kl_weight (`float`, *optional*):
            Weight of the full-vocabulary `KL(pi_ref || pi_theta)` for `"sft_kl"` and `"asft"`; defaults to `0.05`
            (the reference implementation uses 0.05-0.1). Must stay unset / 0 for the other loss types.
    """

    loss_type: str = field(default="dft", metadata={"help": "sft, sft_kl, dft, asft or profit."})
    kl_weight: float | None = field(
        default=None, metadata={"help": "KL weight for sft_kl / asft (default 0.05); 0 for the others."}
    )

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {sorted(LOSS_TYPES)}, got {self.loss_type!r}.")
        factor, uses_kl, normalization = LOSS_TYPES[self.loss_type]
        if uses_kl:
            self.kl_weight = DEFAULT_KL_WEIGHT if self.kl_weight is None else self.kl_weight
            if self.kl_weight <= 0:
                raise ValueError(f"loss_type={self.loss_type!r} needs kl_weight > 0, got {self.kl_weight}.")
        elif self.kl_weight:
            raise ValueError(f"kl_weight={self.kl_weight} only applies to 'sft_kl' and 'asft', not {self.loss_type!r}.")
        else:
            self.kl_weight = 0.0
        self.use_rollouts = False
        self.use_ratio = False
        self.token_factor = factor
        self.profit_normalization = normalization
        super().__post_init__()


document_fields(SFTVariantConfig, {"loss_type": tuple(LOSS_TYPES)})


class SFTVariantTrainer(RASFTTrainer):
    """Trainer of the expert-only baselines. Same arguments as [`RASFTTrainer`]; `verifier` defaults to `None`
    (no rollouts to verify), so the dataset needs only the prompt and completion columns."""

    _tag_names = ["trl", "sft"]
    _name = "SFT variants"

    def __init__(self, model, args: SFTVariantConfig | None = None, *pos, verifier=None, **kwargs):
        if args is None:
            args = SFTVariantConfig(f"{str(model).split('/')[-1]}-SFT")
        if not isinstance(args, SFTVariantConfig):
            raise TypeError(f"SFTVariantTrainer needs an SFTVariantConfig, got {type(args).__name__}.")
        super().__init__(model, args, *pos, verifier=verifier, **kwargs)
