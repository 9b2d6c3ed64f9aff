"""Train the GRPO baseline from a recipe: TRL's `GRPOTrainer` with the project's verifier as its reward function.

    accelerate launch --config_file recipes/accelerate_configs/zero2.yaml -m rasft_trl.scripts.grpo \
        --config recipes/Qwen2.5-Math-1.5B/grpo/config_numina.yaml

Data loading, prompts and model options are those of `rasft_trl.scripts.rasft`; the training keys are TRL's
`GRPOConfig` (`num_generations`, `max_completion_length`, `beta`, `loss_type`, ...). The verifier named by `verifier`
(`math`, `code`) is the reward: 1.0 for a verified answer, 0.0 otherwise, `None` (ignored by TRL) when a row cannot
be judged, so GRPO's reward and the evaluation's accuracy are the same function. `reward_funcs` names other reward
functions as TRL's `trl grpo` script does (TRL's by name, or a dotted import path).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from transformers import TrainerCallback
from trl import GRPOConfig, ModelConfig, TrlParser
from trl.trainer.utils import get_peft_config

from .rasft import (
    DataScriptArguments,
    RecipeError,
    card_dataset,
    load_train_dataset,
    prepare_model_settings,
    resume_argument,
    reward_names,
    run,
    saved_line,
    usage,
)


@dataclass
class GRPOScriptArguments(DataScriptArguments):
    """Script arguments of `rasft_trl.scripts.grpo`: the data arguments of the RASFT script, plus the prompt column
    (`GRPOConfig` has none; `GRPOTrainer` reads `prompt`). `trust_remote_code` is `GRPOConfig`'s own field.

    Args:
        prompt_column: dataset column with the prompt, renamed to `prompt`.
    """

    prompt_column: str = field(default="prompt", metadata={"help": "Dataset column with the prompt (renamed to "
                                                                     "`prompt` for GRPOTrainer)."})


class RolloutLogCallback(TrainerCallback):
    """Adds the rollout keys the RASFT-family trainers log (`rollouts/drawn`, `rollouts/accuracy`, the running total
    `rollouts/generated_tokens`) to each GRPO training log entry, so `rasft-trl study` shows GRPO's rollout compute
    beside theirs (`rasft_trl.study.mechanism.grpo_rollout_fields`).

    Args:
        completions_per_step: completions of one optimizer step (per-device batch x accumulation x processes).
    """

    def __init__(self, completions_per_step: int):
        self.completions_per_step = completions_per_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        from ..study.mechanism import grpo_rollout_fields

        entry = state.log_history[-1] if state.log_history else {}
        if "loss" not in entry:
            return
        previous = next((h for h in reversed(state.log_history[:-1]) if "loss" in h), None)
        fields = grpo_rollout_fields(entry, self.completions_per_step, previous)
        entry.update(fields)  # the entry saved in trainer_state.json
        if logs is not None:
            logs.update(fields)


def grpo_trainer_class():
    """TRL's `GRPOTrainer`, whose model card names the base model and the dataset as they are
    (`rasft_trl.model_card`)."""
    from trl import GRPOTrainer

    from ..model_card import CardSourcesMixin

    return type("GRPOTrainer", (CardSourcesMixin, GRPOTrainer), {"__doc__": grpo_trainer_class.__doc__})


def main(script_args: GRPOScriptArguments, training_args: GRPOConfig, model_args: ModelConfig):
    """Load model, tokenizer and data as the recipe says, train GRPO with the verifier as reward, save. A problem
    found before training is a `RecipeError` (see `rasft_trl.scripts.rasft.build_trainer`)."""
    from ..distributed import enable_cpu_fsdp, sharding_engine
    from ..rewards import resolve_reward_funcs

    enable_cpu_fsdp()  # an FSDP launch on CPU processes runs FSDP2 over gloo (see `rasft_trl.distributed`)

    resume = resume_argument(training_args.resume_from_checkpoint)
    dataset = load_train_dataset(script_args, training_args.seed, script_args.prompt_column)
    if script_args.prompt_column != "prompt":
        dataset = dataset.rename_column(script_args.prompt_column, "prompt")
    model_path, tokenizer = prepare_model_settings(script_args, training_args, model_args)
    try:
        trainer = grpo_trainer_class()(
            model=model_path,
            reward_funcs=resolve_reward_funcs(reward_names(script_args), None)[0],
            args=training_args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=get_peft_config(model_args),
        )
    except (ValueError, ImportError) as exc:
        raise RecipeError(str(exc)) from exc
    trainer.add_callback(RolloutLogCallback(training_args.per_device_train_batch_size
                                            * training_args.gradient_accumulation_steps
                                            * trainer.accelerator.num_processes))
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json (log history) beside the model, as transformers' example scripts do
    if trainer.is_world_process_zero():
        engine = sharding_engine(trainer)
        where = "" if engine == "single" else f" ({engine}, {trainer.accelerator.num_processes} processes)"
        print(f"GRPO finished {trainer.state.global_step} steps{where}.")
        trainer.create_model_card(model_name=os.path.basename(os.path.normpath(training_args.output_dir)),
                                  dataset_name=card_dataset(script_args))
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=card_dataset(script_args))
    if trainer.is_world_process_zero():  # last: after the save and the push
        print(saved_line(trainer, training_args.output_dir, pushed=training_args.push_to_hub))
    return trainer


def make_parser() -> TrlParser:
    return TrlParser((GRPOScriptArguments, GRPOConfig, ModelConfig), prog="rasft-trl train", usage=usage("grpo"))


if __name__ == "__main__":
    run(make_parser, main, "grpo")
