"""Mistyped flags and recipe keys: one line naming the first unknown one and the nearest known name, checked before
anything heavy starts (`rasft-trl train` checks the script's flags before `accelerate launch`; see
`rasft_trl.scripts.rasft.check_flags`). Light: only the standard library.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable


def known_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string `parser` accepts (both spellings where it registered both)."""
    return set(parser._option_string_actions)


def unknown_flags(args: Iterable[str], known: set[str], allow_abbrev: bool = True) -> list[str]:
    """The `--flags` in `args` that are not in `known`. A unique prefix of a known flag counts as known where
    argparse takes abbreviations (`allow_abbrev`); values (tokens without a leading `--`) are skipped, and so is
    everything after a bare `--`."""
    unknown = []
    for arg in args:
        if arg == "--":
            break
        if not arg.startswith("--"):
            continue
        name = arg.split("=", 1)[0]
        if name in known:
            continue
        if allow_abbrev and len([option for option in known if option.startswith(name)]) == 1:
            continue
        unknown.append(name)
    return unknown


def nearest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to a mistyped `name` (difflib), or None when nothing is close."""
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_flag_message(args: Iterable[str], known: set[str], help_command: str,
                         allow_abbrev: bool = True) -> str | None:
    """The first unknown flag in `args`, with the nearest known flag, as one line (for a `prog: ...` error); None
    when every flag is known."""
    unknown = unknown_flags(args, known, allow_abbrev)
    if not unknown:
        return None
    close = nearest(unknown[0], known)
    hint = f" (did you mean {close}?)" if close else ""
    return f"unknown flag {unknown[0]}{hint}; `{help_command}` lists the flags."
