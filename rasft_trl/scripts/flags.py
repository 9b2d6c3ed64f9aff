"""Flag spellings: every subcommand takes `--output-dir` and `--output_dir` alike (the training scripts, parsed by
transformers' `HfArgumentParser`, take both already; the argparse subcommands write dashes in `--help`)."""

from __future__ import annotations

import argparse


def either_spelling(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`argv` with each `--flag` rewritten to the spelling `parser` knows (`_` <-> `-` in the name); tokens that are
    no flag of the parser in either spelling are left as they are (argparse then reports them)."""
    known = {option for action in parser._actions for option in action.option_strings}
    out = []
    for token in argv:
        if token.startswith("--") and len(token) > 2:
            name, eq, value = token.partition("=")
            if name not in known:
                for variant in (name.replace("_", "-"), "--" + name[2:].replace("-", "_")):
                    if variant in known:
                        name = variant
                        break
            token = name + eq + value
        out.append(token)
    return out
