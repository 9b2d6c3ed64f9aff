"""Agreement of our math verifier and of math-verify with the expected verdicts of our equivalence table.

Usage:
    python benchmarks/compare_math_verify.py

The table is `CASES` in `tests/verifiers/test_math_verifier.py` (gold, boxed prediction, expected verdict), with
its sections (`# ---- name ----` comments). math-verify (`pip install math-verify`, in the dev extra) gets the
same pair as `verify(parse(gold), parse(prediction))`, both wrapped in `$...$` so that its LaTeX extraction runs,
with its own 5-second timeout; anything but True counts as "not correct". Cases we expect to be CANNOT_JUDGE are
left out (math-verify has no such verdict). Prints one line per section and the totals.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from collections import OrderedDict

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from rasft_trl.verifiers.base import Verdict  # noqa: E402
from rasft_trl.verifiers.math import MathVerifier  # noqa: E402


def table_with_sections() -> list[tuple[str, str, str, str]]:
    """(section, gold, prediction, expected verdict) for every case of the test table, in order."""
    import importlib.util

    path = os.path.join(ROOT, "tests", "verifiers", "test_math_verifier.py")
    spec = importlib.util.spec_from_file_location("math_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = open(path, encoding="utf-8").read().splitlines()
    headers = [(number, match.group(1)) for number, line in enumerate(lines, 1)
               if (match := re.match(r"\s*# -+ (.+?) -*$", line))]
    tree = ast.parse("\n".join(lines))
    cases = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                 and getattr(node.targets[0], "id", None) == "CASES")
    table = []
    for element, (gold, prediction, expected) in zip(cases.elts, module.CASES):
        section = next((name for number, name in reversed(headers) if number < element.lineno), "(start)")
        table.append((section, gold, prediction, expected.name))
    return table


def main() -> None:
    from math_verify import parse, verify

    table = [row for row in table_with_sections() if row[3] != "CANNOT_JUDGE" and not row[2].startswith("RAW:")]
    with MathVerifier(timeout=10.0, num_workers=2) as verifier:
        ours = verifier.verify_batch([f"\\boxed{{{p}}}" for _, _, p, _ in table], [g for _, g, _, _ in table])
    per_section: OrderedDict = OrderedDict()
    for (section, gold, prediction, expected), result in zip(table, ours):
        try:
            theirs = verify(parse(f"${gold}$"), parse(f"${prediction}$"), timeout_seconds=5) is True
        except Exception:  # noqa: BLE001 - any failure of the other grader is "not correct"
            theirs = False
        want = expected == "CORRECT"
        counts = per_section.setdefault(section, [0, 0, 0])
        counts[0] += 1
        counts[1] += (result.verdict is Verdict.CORRECT) == want
        counts[2] += theirs == want
    print(f"{'section':<70} {'cases':>5} {'ours':>6} {'math-verify':>11}")
    totals = [0, 0, 0]
    for section, (n, a, b) in per_section.items():
        print(f"{section[:70]:<70} {n:>5} {a:>6} {b:>11}")
        totals = [t + v for t, v in zip(totals, (n, a, b))]
    n, a, b = totals
    print(f"{'total':<70} {n:>5} {a:>6} {b:>11}")
    print(f"agreement with the table: ours {a / n:.1%}, math-verify {b / n:.1%}")


if __name__ == "__main__":
    main()
