"""Run a study from its spec: `rasft-trl study SPEC.yaml` (see docs/study.md, "Running a study").

    rasft-trl study my_study.yaml                 # runs what is missing, then writes study.md / study.json
    rasft-trl study my_study.yaml --report-only   # the report from the runs that have finished
    rasft-trl study demo                          # a shipped spec (rasft_trl/recipes/studies/)

A rerun skips every finished run (one JSON per run under `<output_dir>/cells/`), so a killed study resumes; a run
that fails is listed in the report and makes the command exit 1 after the other runs.
"""

from __future__ import annotations

import argparse
import os
import sys

from .flags import either_spelling


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rasft-trl study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="the study spec: a YAML file, or a shipped spec's name (demo, ...)")
    parser.add_argument("--output-dir", default=None, help="overrides the spec's output_dir")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (default: %(default)s; on one GPU "
                        "node keep 1 and let each run use every GPU)")
    parser.add_argument("--report-only", action="store_true", help="write the report from the finished runs")
    parser.add_argument("--ties", choices=("smaller", "larger"), default=None,
                        help="which grid value wins a tie on the selection set (default: the spec's, else smaller)")
    parser.add_argument("--dry-run", action="store_true", help="print the planned runs and their commands only")
    parser.add_argument("--selection-only", action="store_true",
                        help="run the selection runs and print the choices, then stop (no test run, no report)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..study.engine import StudyError, run_study, selection_cells, report_cells
    from ..study.spec import SpecError, load_spec

    parser = make_parser()
    args = parser.parse_args(either_spelling(parser, list(sys.argv[1:] if argv is None else argv)))
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        spec = load_spec(args.spec, args.output_dir)
    except SpecError as exc:
        raise SystemExit(f"rasft-trl study: {exc}") from None
    if args.dry_run:
        planned = selection_cells(spec) + report_cells(spec, {f: {"chosen": "<chosen>"} for f in spec.families
                                                               if spec.selection_of(f)[1]})
        for cell in planned:
            print(cell.name if spec.runner != "recipe" or cell.method == "base" else _dry_command(cell, spec))
        return 0
    try:
        result = run_study(spec, jobs=args.jobs, report_only=args.report_only, ties=args.ties,
                           selection_only=args.selection_only)
    except (StudyError, SpecError) as exc:
        raise SystemExit(f"rasft-trl study: {exc}") from None
    if result["failures"]:
        where = f" (listed in {result['report']})" if result["report"] else ""
        print(f"rasft-trl study: {len(result['failures'])} run(s) failed{where}.", file=sys.stderr)
        return 1
    return 0


def _dry_command(cell, spec) -> str:
    from pathlib import Path

    from ..study.runner import train_command

    model_dir = Path(spec.output_dir) / "runs" / cell.name / "model"
    return f"{cell.name}: " + " ".join(train_command(cell, spec, model_dir, 0)[1:])


if __name__ == "__main__":
    sys.exit(main())
