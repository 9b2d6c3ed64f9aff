"""`rasft-trl` console entry: `rasft-trl train --config recipe.yaml [accelerate args via ACCELERATE_CONFIG]`.

`rasft-trl train` re-launches `python -m rasft_trl.scripts.rasft` through `accelerate launch`, so a recipe runs the
same way on one CPU, one GPU or many. `rasft-trl demo` runs the CPU demo.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rasft-trl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="accelerate launch -m rasft_trl.scripts.rasft <args>")
    train.add_argument("--accelerate_config", default=os.environ.get("ACCELERATE_CONFIG"),
                       help="accelerate config file (recipes/accelerate_configs/*.yaml)")
    train.add_argument("--num_processes", type=int, default=None)
    sub.add_parser("demo", help="python -m rasft_trl.demo <args>")
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        command = [sys.executable, "-m", "rasft_trl.demo", *rest]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch"]
        if args.accelerate_config:
            command += ["--config_file", args.accelerate_config]
        if args.num_processes:
            command += ["--num_processes", str(args.num_processes)]
        command += ["-m", "rasft_trl.scripts.rasft", *rest]
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
