"""Third-party notices about features the user did not ask for, held back until they matter.

bitsandbytes is imported by peft, which transformers imports for every trainer, so any run imports it. On a CPU with
AVX512-BF16, bitsandbytes then logs (logger `bitsandbytes.backends.cpu.ops`) "Failed to load CPU gemm_4bit_forward
from kernels-community: No module named 'kernels' ...": an optional kernel for 4-bit layers on the CPU. It concerns
4-bit (QLoRA) models only, so `import rasft_trl` holds it back (`hold_4bit_notice`) and a run that asks for a 4-bit
model shows it (`release_4bit_notice`, called where `load_in_4bit` / a 4-bit quantization config is seen). Where the
`kernels` package is installed (transformers >= 5.2x brings it), looking that kernel up offline also logs "Skipping
publisher trust check for 'kernels-community/quantization-bitsandbytes' ..." (logger `kernels._internals.hf_hub`):
held back the same way.
"""

from __future__ import annotations

import logging

#: the logger bitsandbytes' CPU backend writes the notice to
BITSANDBYTES_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
#: the start of the notice
NOTICE_START = "Failed to load CPU gemm_4bit_forward"
#: the logger of the `kernels` package that looks the 4-bit kernel up on the Hub, and the kernel's repository
KERNELS_HUB_LOGGER = "kernels._internals.hf_hub"
KERNEL_REPO = "kernels-community/quantization-bitsandbytes"


class _HeldNotices(logging.Filter):
    """Keeps the 4-bit kernel notices back (other records of the loggers pass)."""

    def __init__(self):
        super().__init__()
        self.held: list[tuple[str, logging.LogRecord]] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith(NOTICE_START) or KERNEL_REPO in message:
            self.held.append((record.name, record))
            return False
        return True


_FILTER = _HeldNotices()
_LOGGERS = (BITSANDBYTES_CPU_LOGGER, KERNELS_HUB_LOGGER)


def hold_4bit_notice() -> None:
    """Hold the 4-bit kernel notices back (idempotent). Effective when called before bitsandbytes is imported, as
    `import rasft_trl` does."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def release_4bit_notice() -> None:
    """A 4-bit model was asked for: show the held notices (once) and let later ones through."""
    for name in _LOGGERS:
        logging.getLogger(name).removeFilter(_FILTER)
    held, _FILTER.held = _FILTER.held, []
    for name, record in held:
        logging.getLogger(name).handle(record)


def wants_4bit(quantization_config) -> bool:
    """Whether a quantization config (a `BitsAndBytesConfig`, or its dict) asks for 4-bit weights."""
    if quantization_config is None:
        return False
    if isinstance(quantization_config, dict):
        return bool(quantization_config.get("load_in_4bit"))
    return bool(getattr(quantization_config, "load_in_4bit", False))
