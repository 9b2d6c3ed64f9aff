"""Train with SRFT from a recipe.

    accelerate launch --config_file recipes/accelerate_configs/zero3.yaml -m rasft_trl.scripts.srft \
        --config recipes/Qwen2.5-Math-7B/srft/config_openr1.yaml

The recipe keys are those of `rasft_trl.scripts.rasft` with an `SRFTConfig` (YAML values become defaults, flags
override them, unknown keys fail).
"""

from __future__ import annotations

from ..srft_config import SRFTConfig
from .rasft import main as run_recipe
from .rasft import make_parser as make_rasft_parser
from .rasft import run


def make_parser():
    return make_rasft_parser(SRFTConfig, "srft")


def main(script_args, training_args, model_args):
    from ..srft_trainer import SRFTTrainer

    return run_recipe(script_args, training_args, model_args, trainer_cls=SRFTTrainer)


if __name__ == "__main__":
    run(make_parser, main, "srft")
