"""Third-party notices about features the user did not ask for, held back until they matter.

bitsandbytes is imported by peft, which transformers imports for every trainer, so any run imports it. On a CPU with
AVX512-BF16, bitsandbytes then logs (logger `bitsandbytes.backends.cpu.ops`) "Failed to load CPU gemm_4bit_forward
from kernels-community: No module named 'kernels' ...": an optional kernel for 4-bit layers on the CPU. It concerns
4-bit (QLoRA) models only, so `import rasft_trl` holds it back (`hold_4bit_notice`) and a run that asks for a 4-bit
model shows it (`release_4bit_notice`, called where `load_in_4bit` / a 4-bit quantization config is seen).
"""

from __future__ import annotations

import logging

#: the logger bitsandbytes' CPU backend writes the notice to
BITSANDBYTES_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
#: the start of the notice
NOTICE_START = "Failed to load CPU gemm_4bit_forward"


class _HeldNotices(logging.Filter):
    """Keeps bitsandbytes' 4-bit kernel notice back (other records of the logger pass)."""

    def __init__(self):
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(NOTICE_START):
            self.held.append(record)
            return False
        return True


_FILTER = _HeldNotices()


def hold_4bit_notice() -> None:
    """Hold bitsandbytes' 4-bit kernel notice back (idempotent). Effective when called before bitsandbytes is
    imported, as `import rasft_trl` does."""
    logger = logging.getLogger(BITSANDBYTES_CPU_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def release_4bit_notice() -> None:
    """A 4-bit model was asked for: show the held notice (once) and let later ones through."""
    logger = logging.getLogger(BITSANDBYTES_CPU_LOGGER)
    logger.removeFilter(_FILTER)
    held, _FILTER.held = _FILTER.held, []
    for record in held:
        logger.handle(record)


def wants_4bit(quantization_config) -> bool:
    """Whether a quantization config (a `BitsAndBytesConfig`, or its dict) asks for 4-bit weights."""
    if quantization_config is None:
        return False
    if isinstance(quantization_config, dict):
        return bool(quantization_config.get("load_in_4bit"))
    return bool(getattr(quantization_config, "load_in_4bit", False))
