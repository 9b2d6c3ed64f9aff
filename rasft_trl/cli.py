"""`rasft-trl` console entry.

- `rasft-trl train [--method rasft|sft] --config recipe.yaml` re-launches `python -m rasft_trl.scripts.<method>`
  through `accelerate launch`, so a recipe runs the same way on one CPU, one GPU or many.
- `rasft-trl eval --model M [--benchmarks ...]` evaluates a model on the paper's benchmarks
  (`rasft_trl.scripts.evaluate`; `rasft-trl eval --help`).
- `rasft-trl prepare-data numina|kodcode --output-dir D` writes the paper's training sets as local dataset folders
  (`rasft_trl.scripts.prepare_data`; `rasft-trl prepare-data --help`).
- `rasft-trl demo` runs the CPU demo.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rasft-trl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="accelerate launch -m rasft_trl.scripts.rasft <args>")
    train.add_argument("--accelerate_config", default=os.environ.get("ACCELERATE_CONFIG"),
                       help="accelerate config file (recipes/accelerate_configs/*.yaml)")
    train.add_argument("--num_processes", type=int, default=None)
    train.add_argument("--method", choices=["rasft", "sft"], default="rasft",
                       help="rasft (RASFT and its ablations) or sft (SFT, SFT+KL, DFT, ASFT, ProFiT via loss_type)")
    sub.add_parser("demo", help="python -m rasft_trl.demo <args>")
    sub.add_parser("eval", help="evaluate a model on the paper's benchmarks (rasft-trl eval --help)", add_help=False)
    sub.add_parser("prepare-data", help="write NuminaMath-CoT / KodCode training sets (rasft-trl prepare-data "
                   "--help)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "eval":
        from .scripts import evaluate

        evaluate.main(rest)
        return 0
    if args.command == "prepare-data":
        from .scripts import prepare_data

        prepare_data.main(rest)
        return 0
    if args.command == "demo":
        command = [sys.executable, "-m", "rasft_trl.demo", *rest]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch"]
        if args.accelerate_config:
            command += ["--config_file", args.accelerate_config]
        if args.num_processes:
            command += ["--num_processes", str(args.num_processes)]
        command += ["-m", f"rasft_trl.scripts.{args.method}", *rest]
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
