"""Verifiers shared by training and evaluation (strings in, [`VerifyResult`] out).

`MathVerifier` (sympy imported lazily, inside its workers), `CodeVerifier` and `Sandbox`, and `RoutedVerifier`
are imported on first use.

The built-in names `"math"` and `"code"` are registered here, with factories that import their verifier when called:
the interface (`base.py`) and the registry (`registry.py`) import no verifier, so no verifier module imports itself
back through them.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Verdict, Verifier, VerifyResult, completion_text
from .registry import get_verifier, register_verifier, registered_verifiers

_LAZY = {
    "MathVerifier": ".math",
    "CodeVerifier": ".code",
    "Sandbox": ".sandbox",
    "RoutedVerifier": ".routing",
}

__all__ = ["Verdict", "Verifier", "VerifyResult", "completion_text", "get_verifier", "register_verifier", *_LAZY]


def _math_verifier(**kwargs: Any):
    from .math import MathVerifier

    return MathVerifier(**kwargs)


def _code_verifier(**kwargs: Any):
    from .code import CodeVerifier

    return CodeVerifier(**kwargs)


def _register_builtins() -> None:
    # Imported lazily: the math verifier imports sympy, the code verifier spawns processes.
    for name, factory in (("math", _math_verifier), ("code", _code_verifier)):
        if name not in registered_verifiers():  # a name registered before is kept
            register_verifier(name, factory)


_register_builtins()


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'rasft_trl.verifiers' has no attribute {name!r}")
