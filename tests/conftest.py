import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from tiny import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory):
    from tiny import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("tiny-qwen2")), arch="qwen2")


@pytest.fixture(scope="session")
def tiny_wide_model_dir(tmp_path_factory):
    """The tiny Llama at hidden size 64: bitsandbytes' CPU 4-bit kernel for frozen weights fails on a projection with
    fewer than 32 outputs (the 32-wide model's key/value projections have 16)."""
    from tiny import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("tiny-llama-64")), hidden_size=64)
