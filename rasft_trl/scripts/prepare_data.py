"""Write the paper's training sets as local dataset folders: `rasft-trl prepare-data numina|kodcode`.

    rasft-trl prepare-data numina --output-dir data/numina-10k
    rasft-trl prepare-data kodcode --output-dir data/kodcode-10k --check-solutions

Then point a recipe at the folder: `dataset_name: data/numina-10k`, `prompt_column: prompt`,
`completion_column: completion`, `answer_column: answer` (see `recipes/README.md`). Offline, pass the source split
as a local file in its Hub schema with `--data-file`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from ..prepare_data import SOURCES, STATS_FILE, TRAIN_FILE


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rasft-trl prepare-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("dataset", choices=sorted(SOURCES), help="numina (AI-MO/NuminaMath-CoT) or kodcode "
        "(KodCode/KodCode-V1-SFT-R1)")
    add("--output-dir", required=True, help=f"folder to write ({TRAIN_FILE}, {STATS_FILE})")
    add("--num-rows", type=int, default=10_000, help="training rows to keep (paper: %(default)s)")
    add("--seed", type=int, default=42, help="seed of the random draw (default: %(default)s, the paper's seed)")
    add("--data-file", default=None, help="local jsonl/json/parquet/csv file of the source split, in its Hub schema")
    add("--column-map", default=None, metavar="ROLE=COLUMN[,ROLE=COLUMN]",
        help="read a role (prompt, completion, tests, source) from another column")
    add("--revision", default=None, help="Hub revision overriding the pinned one")
    add("--check-solutions", action="store_true",
        help="kodcode: run each demonstration against its tests in the sandbox and drop the rows where it fails")
    add("--keep-duplicates", action="store_true", help="keep exact duplicate rows (default: dropped, counted as "
        "`duplicate`)")
    add("--keep-unjudgeable", action="store_true", help="kodcode: keep rows whose tests need pytest fixtures or a "
        "module other than `solution` (default: dropped, counted)")
    add("--verifier-workers", type=int, default=None, help="verifier processes / concurrent programs")
    add("--code-timeout", type=float, default=10.0, help="seconds per program in the sandbox")
    return parser


def main(argv: list[str] | None = None):
    from ..prepare_data import prepare
    from .evaluate import _pairs
    from .flags import either_spelling

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("rasft_trl").setLevel(logging.INFO)
    parser = make_parser()
    argv = either_spelling(parser, list(sys.argv[1:] if argv is None else argv))
    if any(a.split("=")[0] in ("--num-samples", "--num_samples") for a in argv):
        raise SystemExit("rasft-trl prepare-data: --num-samples is now --num-rows (rows to keep); --num-samples is "
                         "`rasft-trl eval`'s samples per problem.")
    args = parser.parse_args(argv)
    try:
        stats = prepare(
            args.dataset, args.output_dir, num_rows=args.num_rows, seed=args.seed, data_file=args.data_file,
            column_map=_pairs([args.column_map] if args.column_map else None, "--column-map"),
            revision=args.revision, check_solutions=args.check_solutions, verifier_workers=args.verifier_workers,
            code_timeout=args.code_timeout, drop_duplicates=not args.keep_duplicates,
            drop_unjudgeable=not args.keep_unjudgeable,
        )
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        raise SystemExit(f"rasft-trl prepare-data: {exc}") from exc
    print(json.dumps({k: getattr(stats, k) for k in ("source", "examined", "kept", "dropped", "flagged", "seconds")},
                     indent=2))
    print(f"Wrote {os.path.join(os.path.abspath(args.output_dir), TRAIN_FILE)}")
    return stats


if __name__ == "__main__":
    main(sys.argv[1:])
