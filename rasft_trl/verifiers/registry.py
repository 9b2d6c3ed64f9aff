"""The verifier registry: names (`"math"`, `"code"`, ...) that configs, trainers and the evaluation resolve.

It knows no verifier: the built-in ones are registered by the package (`rasft_trl.verifiers`, which Python imports
before any of its modules), so that the verifiers' modules, which import the interface in `base.py`, are never
imported back by it.
"""

from __future__ import annotations

from typing import Any, Callable

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_verifier(name: str, factory: Callable[..., Any]) -> None:
    """Register a verifier factory under `name`, so that configs and trainers can refer to it by name."""
    _REGISTRY[name] = factory


def get_verifier(name_or_callable: str | Callable, **kwargs: Any) -> Callable:
    """Resolve a registered name (`"math"`, `"code"`, ...) or pass a callable through unchanged."""
    if callable(name_or_callable):
        return name_or_callable
    if name_or_callable not in _REGISTRY:
        raise ValueError(f"Unknown verifier {name_or_callable!r}; registered: {sorted(_REGISTRY)}.")
    return _REGISTRY[name_or_callable](**kwargs)


def registered_verifiers() -> list[str]:
    """The names `get_verifier` resolves (the built-in ones and those added with `register_verifier`)."""
    return sorted(_REGISTRY)
