"""rasft-trl: Rollout-Adaptive Supervised Fine-Tuning (RASFT) and sibling methods for TRL.

Heavy modules (transformers, TRL, the trainers, sympy through the math verifier, vLLM) are imported lazily on
first attribute access, so `import rasft_trl` stays light. Importing it holds back bitsandbytes' notice about an
optional 4-bit CPU kernel until a run asks for a 4-bit model (`rasft_trl.notices`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .notices import hold_4bit_notice

hold_4bit_notice()

__version__ = "0.1.0.dev0"

_LAZY = {
    "RASFTConfig": "rasft_trl.rasft_config",
    "RASFTTrainer": "rasft_trl.rasft_trainer",
    "SRFTConfig": "rasft_trl.srft_config",
    "SRFTTrainer": "rasft_trl.srft_trainer",
    "get_verifier": "rasft_trl.verifiers.registry",
    "register_verifier": "rasft_trl.verifiers.registry",
    "VerifyResult": "rasft_trl.verifiers.base",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:
    from .rasft_config import RASFTConfig
    from .rasft_trainer import RASFTTrainer
    from .srft_config import SRFTConfig
    from .srft_trainer import SRFTTrainer
    from .verifiers.base import VerifyResult
    from .verifiers.registry import get_verifier, register_verifier


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rasft_trl' has no attribute {name!r}")


def __dir__():
    return __all__
