"""The recipes and accelerate configs that ship inside the package (`rasft-trl recipes` lists them), found by file
path or by shipped name, the same way in every subcommand (`train --config`, `eval --recipe`)."""

from __future__ import annotations

import os
from pathlib import Path

RECIPES = Path(__file__).resolve().parent / "recipes"
ACCELERATE_CONFIGS = RECIPES / "accelerate_configs"
#: study specs (`rasft-trl study NAME`), not training recipes
STUDIES = RECIPES / "studies"


def find_recipe(value: str) -> str:
    """An existing file, or a shipped recipe named relative to the recipes folder (with or without `recipes/`, as
    the docs write it from a checkout).

    Raises:
        FileNotFoundError: neither exists (the message names `rasft-trl recipes`).
    """
    if os.path.isfile(value):
        return value
    relative = value[len("recipes/"):] if value.startswith("recipes/") else value
    candidate = RECIPES / relative
    if candidate.is_file():
        return str(candidate)
    raise FileNotFoundError(f"recipe {value!r} is neither a file nor a shipped recipe (see `rasft-trl recipes`).")


def shipped_recipes() -> list[str]:
    """Names of the shipped recipes (`Qwen2.5-Math-1.5B/rasft/config_numina.yaml`, ...)."""
    return sorted(str(p.relative_to(RECIPES)) for p in RECIPES.rglob("*.yaml")
                  if ACCELERATE_CONFIGS not in p.parents and STUDIES not in p.parents)
