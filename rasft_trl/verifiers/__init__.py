"""Verifiers shared by training and evaluation (strings in, [`VerifyResult`] out).

`MathVerifier` (sympy imported lazily, inside its workers), `CodeVerifier` and `Sandbox`, and `RoutedVerifier`
are imported on first use.
"""

from __future__ import annotations

import importlib

from .base import Verdict, Verifier, VerifyResult, completion_text, get_verifier, register_verifier


_LAZY = {
    "MathVerifier": ".math",
    "CodeVerifier": ".code",
    "Sandbox": ".sandbox",
    "RoutedVerifier": ".routing",
}

__all__ = ["Verdict", "Verifier", "VerifyResult", "completion_text", "get_verifier", "register_verifier", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'rasft_trl.verifiers' has no attribute {name!r}")
