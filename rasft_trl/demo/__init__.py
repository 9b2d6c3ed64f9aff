"""A real, CPU-sized RASFT demo: SmolLM2-135M-Instruct learns grade-school arithmetic (`python -m rasft_trl.demo`).

Modules: `model` (offline model from a PyPI wheel, cached), `data` (problem generator, pure python),
`evaluate` (held-out accuracy with the math verifier), `report` (JSON / CSV / PNG), `run` (the CLI).
Importing this package imports no torch or transformers.
"""

from .model import demo_model_path, load_demo_model

__all__ = ["demo_model_path", "load_demo_model"]
