"""Train an expert-only baseline (SFT, SFT+KL, DFT, ASFT, ProFiT) from a recipe.

    accelerate launch --config_file recipes/accelerate_configs/zero2.yaml -m rasft_trl.scripts.sft \
        --config recipes/Qwen2.5-Math-1.5B/dft/config_numina.yaml
"""

from __future__ import annotations

from ..baselines.sft_variants import SFTVariantConfig
from .rasft import main as run_recipe
from .rasft import make_parser as make_rasft_parser
from .rasft import run


def make_parser():
    return make_rasft_parser(SFTVariantConfig, "sft")


def main(script_args, training_args, model_args):
    from ..baselines.sft_variants import SFTVariantTrainer

    return run_recipe(script_args, training_args, model_args, trainer_cls=SFTVariantTrainer)


if __name__ == "__main__":
    run(make_parser, main, "sft")
