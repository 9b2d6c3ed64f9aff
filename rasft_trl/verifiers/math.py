"""Math answer verifier: the last `\\boxed{}` of a response against a dataset's gold answer.

Public API:

- [`MathVerifier`][rasft_trl.verifiers.math.MathVerifier]: the verifier used by training and evaluation
  (registered as `"math"`); bounded in time, parallel, with counters in `stats`.
- [`answers_equivalent`][rasft_trl.verifiers.math.answers_equivalent]`(gold, prediction, rel_tol=1e-6)`:
  compare two already-extracted answers in-process (no time bound: for tests and interactive use).
- [`extract_boxed`][rasft_trl.verifiers.math_normalize.extract_boxed],
  [`extract_answer`][rasft_trl.verifiers.math_normalize.extract_answer] and
  [`extract_gold`][rasft_trl.verifiers.math_normalize.extract_gold] (re-exported from `math_normalize`).

How a pair is judged, cheapest first (the first three steps never import sympy and run in the calling process):

1. Extraction. Prediction: the content of the LAST `\\boxed{...}` / `\\fbox{...}` (or `\\boxed 5`); no box is
   INCORRECT with reason `"no_box"` unless evaluation fallbacks are enabled (`fallbacks=("answer_is",
   "last_number")`). Gold: a bare answer, a number, a GSM8K `#### 72` string, a list of answers, or a solution
   whose last box holds the answer; an empty / missing gold is CANNOT_JUDGE.
2. Normalization and string match (see `math_normalize.normalize_answer`).
3. Structure and fast comparisons: tuples and intervals are ordered and their brackets must match
   (`(1,2]` != `(1,2)`); sets `\\{...\\}` and comma-separated answers are unordered; unions are unordered;
   matrices compare element-wise; `x = 3` compares as `3` when the left side is a plain variable (`y = 2x+1` vs
   `2x+1`), `x \\in [1,2]` as `[1,2]`, simple inequalities as intervals (`x > 3` is `(3,\\infty)`).
   Multiple-choice letters (`(C)`, `C`, `\\text{(C)}`, `\\textbf{(C)}`) compare as letters; text answers
   (`\\text{Monday}`) compare case-insensitively; plain numbers compare exactly with Python fractions.
4. Otherwise, in a worker process: LaTeX -> sympy with `latex2sympy2_extended`; a 30-digit numeric evaluation
   (at three pseudo-random points when there are free symbols) rejects; constants equal to 30 digits are
   accepted when they still agree at 60 digits (no `simplify`, which can run for minutes on nested radicals it
   cannot denest) unless sympy knows their difference is a non-zero rational (`2^{2017}-1` vs `2^{2017}`);
   expressions with free symbols are accepted by `simplify(a - b) == 0`, or when equal at the three points and
   sympy cannot prove them different. A gold answer that
   sympy cannot parse (and that is not matched by the earlier steps) is CANNOT_JUDGE; such a prediction is
   INCORRECT.

Decisions (what a careful MATH grader does):

- Units are dropped: `30^\\circ` == `30`, `\\$5` == `5`, `5\\text{ cm}` == `5`, `10\\textbf{ weeks}` == `10`,
  `10weeks` == `10` (a unit glued to its number only when it is a listed unit word: `4abc` stays a product), and
  `50\\%` == `50` (the MATH convention for "what percent" questions). A percentage is NOT converted to a
  fraction: `50\\%` vs `0.5` is INCORRECT. Degrees are not converted to radians: `30^\\circ` vs
  `\\frac{\\pi}{6}` is INCORRECT; but inside a trigonometric function they are (`\\sin 30^\\circ` == `\\frac12`,
  `\\sin(90^\\circ - x)` == `\\cos x`).
- Thousands separators in any MATH spelling (`1,\\!000`, `1{,}000`, `1\\,000`, `1,\\! 000`) are never list commas.
- `h:mm` and `h:mm:ss` are clock times when both sides are (`2:30` == `2:30:00`, `12:00` != `1:00`); otherwise
  `a:b` is a ratio (`3:4` == `6:8`, `7:32` == `\\frac{7}{32}`). An undefined value (`\\frac10`) equals nothing.
- A free `i` is the imaginary unit (`1+2i` == `i(2-i)`, `3i` == `\\sqrt{-9}`).
- Inequalities compare as sets of reals: `x<1` == `-x>-1` == `2x<2` == `(-\\infty,1)`, `x^2\\ge1` ==
  `(-\\infty,-1]\\cup[1,\\infty)`; a bounded function value is its range (`0<f(x)<1` == `(0,1)`).
- A labelled value (a left side made of capital-letter names: `|AB|=1`, `\\frac{NO}{BO}=\\frac{1}{\\sqrt6}`,
  `S_1:S_2=7:32`, `AB+BC=10`) compares as its right side; an equation in lower-case variables does not
  (`x+y=5` vs `5` is INCORRECT).
- Coordinates may be separated by `;` (`(1;2)` == `(1,2)`); answers joined by "or"/"and" in any spelling
  (`2\\text{or}3`, `x=-1 \\vee x=5`) are a list; a gold answer's stray trailing backslash is ignored.
- Exact answers are compared exactly: integers, fractions and radicals must be equal (`1234567` vs `1234568` is
  INCORRECT although they agree to 1e-6). The relative tolerance `rel_tol` (default 1e-6) applies only when one
  side is written as a decimal and the other side is a value without a finite decimal expansion (a repeating
  fraction or an irrational): `\\frac13` vs `0.3333333333` is CORRECT, `\\frac13` vs `0.333` is INCORRECT, and
  `\\sqrt2` vs `1.414214` is CORRECT. Two decimals must be equal (`0.5` == `0.50`, `0.33` != `0.333`).
- Mixed numbers are read as sums (`2\\frac{1}{2}` == `\\frac52`, `1 1/2` == `1.5`; `3 4/2`, whose fraction is not
  proper, is not a mixed number).
- A bare list `1, 2` against a tuple `(1, 2)` compares in order; against a set it compares unordered.
- The last box is the answer, as in the RASFT paper; an earlier box counts only when nothing but separators
  lies between it and the last one (`$x=\\boxed{2}$ or $x=\\boxed{3}$` answers `x=2, x=3`), so a corrected
  answer (`\\boxed{3} ... no, \\boxed{5}`) is `5` and a hedge (`\\boxed{2}, \\boxed{3}`) is a two-part answer.

Time bounds: every non-trivial comparison runs in a worker process that is killed at `timeout` seconds (and at
`memory_limit_mb`); a killed comparison is INCORRECT with reason `"timeout"` (`"memory_limit"`) and counted
in `stats["timeouts"]`; a worker that crashes gives CANNOT_JUDGE (`"worker_error"`, `stats["worker_errors"]`). Workers
are started with `forkserver` (never `fork`, which is unsafe once torch has started threads in the trainer). They die
with the process that uses them, even in the middle of a comparison (killed by the kernel when the fork server exits,
which it does when that process ends in any way), and a comparison that nobody stops is stopped by the kernel after
`cpu_limit_s` seconds of CPU (see `rasft_trl.verifiers._timeout`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ._timeout import KillablePool, TaskOutcome
from .math_magnitude import exact_digits
from .base import Verdict, Verifier, VerifyResult
from .math_normalize import (
    FALLBACKS,
    Node,
    clock_seconds,
    compact,
    decimal_comma,
    extract_answer,
    extract_boxed,
    extract_gold,
    is_label,
    is_simple_lhs,
    is_text_answer,
    mc_choice,
    normalize_answer,
    numbers_equal,
    parse_number,
    parse_structure,
    text_key,
)

__all__ = [
    "MathVerifier",
    "answers_equivalent",
    "extract_answer",
    "extract_boxed",
    "extract_gold",
    "normalize_answer",
]

#: Outcome of one comparison step: (verdict, reason); verdict None means "undecided without sympy".
Outcome = tuple  # tuple[Verdict | None, str]

_CORRECT, _INCORRECT, _CANNOT = Verdict.CORRECT, Verdict.INCORRECT, Verdict.CANNOT_JUDGE
_EXACT_TOL = 1e-12
_CONFIRM_TOL = 1e-40  # two constants equal at 60 digits to this relative tolerance are taken as equal
_MAX_ITEMS = 64


# --------------------------------------------------------------------------------------------------------------
# Structural comparison (pure Python; sympy only through `_Comparer.sympy`)
# --------------------------------------------------------------------------------------------------------------


class _Comparer:
    """Compares parsed answers. With `use_sympy=False` it returns verdict None where sympy would be needed."""

    def __init__(self, rel_tol: float, use_sympy: bool):
        self.rel_tol = rel_tol
        self.use_sympy = use_sympy
        self.details: dict[str, Any] = {}

    # ---- nodes ------------------------------------------------------------------------------------------------
    def nodes(self, gold: Node, pred: Node) -> Outcome:
        if gold.kind == "eq" or pred.kind == "eq":
            return self.equations(gold, pred)
        if gold.kind == "rel" or pred.kind == "rel":
            return self.relations(gold, pred)
        if gold.kind == "scalar" and pred.kind == "scalar":
            return self.scalars(gold.text, pred.text)
        if gold.kind == "set" and len(gold.items) == 1 and pred.kind == "scalar":
            return self.nodes(gold.items[0], pred)
        if pred.kind == "set" and len(pred.items) == 1 and gold.kind == "scalar":
            return self.nodes(gold, pred.items[0])
        handler = getattr(self, f"_{gold.kind}", None)
        if handler is None:
            return _INCORRECT, "structure_mismatch"
        return handler(gold, pred)

    def _seq(self, gold: Node, pred: Node) -> Outcome:
        if pred.kind == "seq":
            if (gold.left, gold.right) != (pred.left, pred.right):
                return _INCORRECT, "bracket_mismatch"
            return self.ordered(gold.items, pred.items)
        if pred.kind == "list" and (gold.left, gold.right) == ("(", ")"):
            return self.ordered(gold.items, pred.items)
        if pred.kind == "matrix" and _is_vector(pred):
            return self.ordered(gold.items, _matrix_items(pred))
        return _INCORRECT, "structure_mismatch"

    def _set(self, gold: Node, pred: Node) -> Outcome:
        if pred.kind in ("set", "list"):
            return self.unordered(gold.items, pred.items, dedupe=True)
        return _INCORRECT, "structure_mismatch"

    def _list(self, gold: Node, pred: Node) -> Outcome:
        if pred.kind in ("set", "list"):
            # A list of tuples is a list of solutions: naming one twice is no error (`(1,2),(1,2),(3,4)`).
            solutions = all(item.kind == "seq" for item in (*gold.items, *pred.items))
            return self.unordered(gold.items, pred.items, dedupe=pred.kind == "set" or solutions)
        if pred.kind == "seq" and (pred.left, pred.right) == ("(", ")"):
            return self.unordered(gold.items, pred.items, dedupe=False)
        return _INCORRECT, "structure_mismatch"

    def _union(self, gold: Node, pred: Node) -> Outcome:
        if pred.kind == "union" or pred.kind == "list" and all(item.kind == "seq" for item in pred.items):
            return self.unordered(gold.items, pred.items, dedupe=False)
        return _INCORRECT, "structure_mismatch"

    def _matrix(self, gold: Node, pred: Node) -> Outcome:
        if pred.kind == "matrix":
            if [len(row) for row in gold.rows] != [len(row) for row in pred.rows]:
                return _INCORRECT, "shape_mismatch"
            return self.ordered(_matrix_items(gold), _matrix_items(pred))
        if pred.kind in ("seq", "list") and _is_vector(gold):
            return self.ordered(_matrix_items(gold), pred.items)
        return _INCORRECT, "structure_mismatch"

    # ---- collections ------------------------------------------------------------------------------------------
    def ordered(self, gold_items: Sequence, pred_items: Sequence) -> Outcome:
        if len(gold_items) != len(pred_items):
            return _INCORRECT, "length_mismatch"
        return _combine([self.nodes(_as_node(g), _as_node(p)) for g, p in zip(gold_items, pred_items)])

    def unordered(self, gold_items: Sequence, pred_items: Sequence, dedupe: bool) -> Outcome:
        gold_items = [_as_node(item) for item in gold_items]
        pred_items = [_as_node(item) for item in pred_items]
        if dedupe:
            gold_items, pred_items = _dedupe(gold_items), _dedupe(pred_items)
        if len(gold_items) != len(pred_items):
            return _INCORRECT, "count_mismatch"
        if len(gold_items) > _MAX_ITEMS:
            return _INCORRECT, "too_many_items"
        table = [[self.nodes(g, p) for p in pred_items] for g in gold_items]
        if _perfect_matching([[o[0] is _CORRECT for o in row] for row in table]):
            return _CORRECT, "unordered_match"
        if any(outcome[0] is None for row in table for outcome in row):
            return None, "needs_sympy"
        for row in table:  # a gold element that cannot be judged against any prediction element
            if all(outcome[0] is _CANNOT for outcome in row):
                return row[0]
        return _INCORRECT, "unordered_mismatch"

    # ---- equations --------------------------------------------------------------------------------------------
    def equations(self, gold: Node, pred: Node) -> Outcome:
        if gold.kind == "eq" and pred.kind == "eq":
            if is_simple_lhs(gold.lhs) and is_simple_lhs(pred.lhs):
                if _plain_variable(gold.lhs) and _plain_variable(pred.lhs) and compact(gold.lhs) != compact(pred.lhs):
                    return _INCORRECT, "variable_mismatch"
                return self.nodes(parse_structure(gold.rhs), parse_structure(pred.rhs))
            if compact(gold.lhs) == compact(pred.lhs):
                return self.nodes(parse_structure(gold.rhs), parse_structure(pred.rhs))
            return self.sympy_equation(gold, pred)
        if gold.kind == "eq":
            if is_simple_lhs(gold.lhs) or _labelled_value(gold):
                return self.nodes(parse_structure(gold.rhs), pred)
            return _INCORRECT, "structure_mismatch"
        if (
            is_simple_lhs(pred.lhs)
            or _labelled_value(pred)
            or not any(ch.isalpha() for ch in re.sub(r"\\[a-zA-Z]+", "", pred.lhs))
        ):
            return self.nodes(gold, parse_structure(pred.rhs))
        return _INCORRECT, "structure_mismatch"

    # ---- inequalities -----------------------------------------------------------------------------------------
    def relations(self, gold: Node, pred: Node) -> Outcome:
        """An inequality against an inequality or an interval: equal when they describe the same set of reals."""
        if not self.use_sympy:
            return None, "needs_sympy"
        return _sympy_compare_sets(gold, pred, self.rel_tol, self.details)

    # ---- scalars ----------------------------------------------------------------------------------------------
    def scalars(self, gold: str, pred: str) -> Outcome:
        gold_key, pred_key = compact(gold), compact(pred)
        if gold_key == pred_key:
            return _CORRECT, "string_match"
        if not gold_key:
            return _CANNOT, "empty_gold"
        if not pred_key:
            return _INCORRECT, "empty_prediction"
        choice = mc_choice(gold, gold=True)
        if choice is not None:
            return self.choice(choice, pred)
        pred_choice = mc_choice(pred, gold=False)
        if pred_choice is not None and pred_choice[1]:
            return self.nodes(parse_structure(gold), parse_structure(pred_choice[1]))
        gold_time, pred_time = clock_seconds(gold_key), clock_seconds(pred_key)
        if gold_time is not None and pred_time is not None:  # `12:00` is a time, not the ratio 12/0
            return (_CORRECT, "time_equal") if gold_time == pred_time else (_INCORRECT, "time_unequal")
        gold_number, pred_number = parse_number(gold_key), parse_number(pred_key)
        if gold_number is not None and pred_number is not None:
            equal, reason = numbers_equal(gold_number, pred_number, self.rel_tol)
            return (_CORRECT if equal else _INCORRECT), reason
        if is_text_answer(gold) or is_text_answer(pred):
            return (_CORRECT, "text_match") if text_key(gold) == text_key(pred) else (_INCORRECT, "text_mismatch")
        if not self.use_sympy:
            return None, "needs_sympy"
        return self.sympy(gold, pred)

    def choice(self, gold_choice: tuple[str, str], pred: str) -> Outcome:
        letter, value = gold_choice
        pred_choice = mc_choice(pred, gold=False)
        if pred_choice is not None:
            return (_CORRECT, "choice_match") if pred_choice[0] == letter else (_INCORRECT, "choice_mismatch")
        if value:
            return self.nodes(parse_structure(value), parse_structure(pred))
        return _INCORRECT, "choice_mismatch"

    # ---- sympy (worker processes only) --------------------------------------------------------------------------
    def sympy(self, gold: str, pred: str) -> Outcome:
        if not self.use_sympy:
            return None, "needs_sympy"
        return _sympy_compare(gold, pred, self.rel_tol, self.details)

    def sympy_equation(self, gold: Node, pred: Node) -> Outcome:
        if not self.use_sympy:
            return None, "needs_sympy"
        return _sympy_compare_equations(gold, pred, self.rel_tol, self.details)


def _as_node(item: Any) -> Node:
    return item if isinstance(item, Node) else parse_structure(str(item))


def _is_vector(node: Node) -> bool:
    return len(node.rows) == 1 or all(len(row) == 1 for row in node.rows)


def _matrix_items(node: Node) -> list[str]:
    return [cell for row in node.rows for cell in row]


def _labelled_value(node: Node) -> bool:
    """`|AB| = 1`, `\\frac{NO}{BO} = \\frac{1}{\\sqrt6}`, `S_1:S_2 = 7:32`: a named quantity equal to a constant."""
    return is_label(node.lhs) and not any(ch.isalpha() for ch in re.sub(r"\\[a-zA-Z]+", "", node.rhs))


def _plain_variable(text: str) -> bool:
    return len(compact(text)) == 1 and text.strip().isalpha()


def _dedupe(items: list[Node]) -> list[Node]:
    seen, out = set(), []
    for item in items:
        key = (item.kind, compact(item.text), item.items, item.left, item.right, item.rows, item.lhs, item.rhs)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _combine(outcomes: list[Outcome]) -> Outcome:
    """All-of: the first INCORRECT decides; then CANNOT_JUDGE; then undecided; else CORRECT."""
    for verdict in (_INCORRECT, _CANNOT, None):
        for outcome in outcomes:
            if outcome[0] is verdict:
                return outcome
    if len(outcomes) == 1:
        return outcomes[0]
    return _CORRECT, "ordered_match"


def _perfect_matching(adjacency: list[list[bool]]) -> bool:
    """Is there a perfect matching in the bipartite graph (Kuhn's augmenting paths; n is small)?"""
    match_of_pred: dict[int, int] = {}

    def augment(g: int, seen: set) -> bool:
        for p, ok in enumerate(adjacency[g]):
            if ok and p not in seen:
                seen.add(p)
                if p not in match_of_pred or augment(match_of_pred[p], seen):
                    match_of_pred[p] = g
                    return True
        return False

    return all(augment(g, set()) for g in range(len(adjacency)))


# --------------------------------------------------------------------------------------------------------------
# sympy (imported lazily: only worker processes and `answers_equivalent` ever load it)
# --------------------------------------------------------------------------------------------------------------

_PARSE_CACHE: OrderedDict = OrderedDict()
_PARSE_CACHE_SIZE = 2048


def _latex_to_sympy(text: str):
    """Parse normalized LaTeX with latex2sympy2_extended (cached; exceptions propagate and are not cached)."""
    if text in _PARSE_CACHE:
        _PARSE_CACHE.move_to_end(text)
        return _PARSE_CACHE[text]
    from latex2sympy2_extended import NormalizationConfig, latex2sympy
    from latex2sympy2_extended.latex2sympy2 import ConversionConfig

    expr = latex2sympy(
        text,
        normalization_config=NormalizationConfig(
            basic_latex=True, units=False, malformed_operators=True, nits=False, boxed="none", equations=False
        ),
        conversion_config=ConversionConfig(
            interpret_as_mixed_fractions=True, interpret_simple_eq_as_assignment=False, lowercase_symbols=False
        ),
    )
    _PARSE_CACHE[text] = expr
    if len(_PARSE_CACHE) > _PARSE_CACHE_SIZE:
        _PARSE_CACHE.popitem(last=False)
    return expr


def _safe_str(obj: Any, limit: int = 200) -> str:
    try:
        text = str(obj)
    except ValueError as exc:  # e.g. an integer with more than 4300 digits
        return f"<unprintable: {exc}>"[:limit]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_pair(gold: str, pred: str, details: dict) -> tuple[Any, Any, Outcome | None]:
    try:
        gold_expr = _latex_to_sympy(gold)
    except Exception as exc:  # latex2sympy raises bare Exception on syntax errors
        details["gold_error"] = _safe_str(f"{type(exc).__name__}: {exc}")
        return None, None, (_CANNOT, "gold_unparseable")
    try:
        pred_expr = _latex_to_sympy(pred)
    except Exception as exc:
        details["prediction_error"] = _safe_str(f"{type(exc).__name__}: {exc}")
        return None, None, (_INCORRECT, "prediction_unparseable")
    details["gold_sympy"], details["prediction_sympy"] = _safe_str(gold_expr), _safe_str(pred_expr)
    return gold_expr, pred_expr, None


def _sympy_compare(gold: str, pred: str, rel_tol: float, details: dict) -> Outcome:
    gold_expr, pred_expr, failure = _parse_pair(gold, pred, details)
    if failure is not None:
        return failure
    try:
        gold_expr, pred_expr = _imaginary_unit(gold_expr), _imaginary_unit(pred_expr)
        equal = _sympy_equal(gold_expr, pred_expr, rel_tol)
    except Exception as exc:  # sympy raises many types (TypeError, NotImplementedError, ...) on odd input
        details["sympy_error"] = _safe_str(f"{type(exc).__name__}: {exc}")
        return _CANNOT, "sympy_error"
    if equal is None:
        return _CANNOT, "not_comparable"
    return (_CORRECT, "sympy_equal") if equal else (_INCORRECT, "sympy_unequal")


def _imaginary_unit(expr: Any) -> Any:
    """A free symbol `i` is the imaginary unit (`1+2i` == `i(2-i)`): answers use `i` for nothing else."""
    import sympy

    if isinstance(expr, sympy.Basic):
        unit = [symbol for symbol in expr.free_symbols if getattr(symbol, "name", None) == "i"]
        if unit:
            return expr.xreplace({unit[0]: sympy.I})
    return expr


def _sympy_compare_equations(gold: Node, pred: Node, rel_tol: float, details: dict) -> Outcome:
    """Equations with non-trivial sides: `l1 - r1` must be a non-zero constant multiple of `l2 - r2`."""
    import sympy

    parsed = []
    for text in (gold.lhs, gold.rhs, pred.lhs, pred.rhs):
        try:
            parsed.append(_latex_to_sympy(text))
        except Exception as exc:
            details["equation_error"] = _safe_str(f"{type(exc).__name__}: {exc}")
            return (_CANNOT, "gold_unparseable") if len(parsed) < 2 else (_INCORRECT, "prediction_unparseable")
    try:
        gold_diff, pred_diff = parsed[0] - parsed[1], parsed[2] - parsed[3]
        if _sympy_equal(gold_diff, pred_diff, rel_tol) or _sympy_equal(gold_diff, -pred_diff, rel_tol):
            return _CORRECT, "equation_equal"
        ratio = sympy.simplify(gold_diff / pred_diff)
    except Exception as exc:
        details["sympy_error"] = _safe_str(f"{type(exc).__name__}: {exc}")
        return _CANNOT, "sympy_error"
    if ratio.is_number and ratio != 0 and ratio.is_finite:
        return _CORRECT, "equation_proportional"
    return _INCORRECT, "equation_unequal"


def _real_set(node: Node) -> tuple[Any, Any] | None:
    """(set of reals, its variable or None) described by an inequality, an interval or a union of them."""
    import sympy

    if node.kind == "rel":
        relation = _latex_to_sympy(node.text)
        symbols = relation.free_symbols if isinstance(relation, sympy.Basic) else set()
        if len(symbols) != 1 or not isinstance(relation, (sympy.core.relational.Relational, sympy.And, sympy.Or)):
            return None
        (symbol,) = symbols
        return relation.as_set(), symbol
    if node.kind == "seq" and len(node.items) == 2 and node.left in "([" and node.right in ")]":
        low, high = (_latex_to_sympy(item.text) for item in node.items if item.kind == "scalar")
        if not all(end.is_number and end.is_extended_real is not False for end in (low, high)):
            return None
        return sympy.Interval(low, high, node.left == "(", node.right == ")"), None
    if node.kind == "union":
        parts = [_real_set(item) for item in node.items]
        if any(part is None for part in parts):
            return None
        return sympy.Union(*(part[0] for part in parts)), None
    return None


def _sympy_compare_sets(gold: Node, pred: Node, rel_tol: float, details: dict) -> Outcome:
    """An inequality in one variable against an inequality, an interval or a union: the same set of reals?"""
    import sympy

    try:
        gold_set, pred_set = _real_set(gold), _real_set(pred)
    except Exception as exc:  # latex2sympy / as_set on odd input
        details["sympy_error"] = _safe_str(f"{type(exc).__name__}: {exc}")
        gold_set = pred_set = None
    if gold_set is None or pred_set is None:
        if gold.kind in ("rel", "scalar") and pred.kind in ("rel", "scalar"):
            return _sympy_compare(gold.text, pred.text, rel_tol, details)
        return _INCORRECT, "structure_mismatch"
    if gold_set[1] is not None and pred_set[1] is not None and gold_set[1] != pred_set[1]:
        return _INCORRECT, "variable_mismatch"
    try:
        equal = gold_set[0] == pred_set[0] or sympy.simplify(gold_set[0].symmetric_difference(pred_set[0])) == sympy.S.EmptySet
    except Exception as exc:
        details["sympy_error"] = _safe_str(f"{type(exc).__name__}: {exc}")
        return _CANNOT, "sympy_error"
    return (_CORRECT, "set_equal") if equal else (_INCORRECT, "set_unequal")


def _sympy_equal(a: Any, b: Any, rel_tol: float) -> bool | None:
    """Equality of two parsed sympy objects (expressions, sets, matrices, relations); None: not comparable."""
    import sympy
    from sympy.matrices import MatrixBase

    if isinstance(a, MatrixBase) or isinstance(b, MatrixBase):
        if not (isinstance(a, MatrixBase) and isinstance(b, MatrixBase)) or a.shape != b.shape:
            return False
        return all(_expr_equal(x, y, rel_tol) for x, y in zip(a, b))
    if isinstance(a, sympy.Set) or isinstance(b, sympy.Set):
        if not (isinstance(a, sympy.Set) and isinstance(b, sympy.Set)):
            return False
        if a == b:
            return True
        if isinstance(a, sympy.FiniteSet) and isinstance(b, sympy.FiniteSet):
            if len(a) != len(b):
                return False
            return _perfect_matching([[bool(_expr_equal(x, y, rel_tol)) for y in b] for x in a])
        return sympy.simplify(a.symmetric_difference(b)) == sympy.S.EmptySet
    if isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr):
        return _expr_equal(a, b, rel_tol)
    if isinstance(a, sympy.Basic) and isinstance(b, sympy.Basic):
        return a == b or bool(getattr(a, "canonical", a) == getattr(b, "canonical", b))
    return None


def _expr_equal(a: Any, b: Any, rel_tol: float) -> bool:
    """Exact expressions: a 30-digit numeric check rejects; `simplify(a - b) == 0` (or numbers sympy cannot
    separate) accepts.

    Expressions containing a decimal (a sympy Float) are compared numerically at `rel_tol`.
    """
    import sympy

    undefined = (sympy.nan, sympy.zoo)
    if isinstance(a, sympy.Basic) and a.has(*undefined) or isinstance(b, sympy.Basic) and b.has(*undefined):
        return False  # an undefined value (`1:0`, `0/0`) equals nothing, not even another undefined value
    if a == b:
        return True
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return False
    if a.has(sympy.Float) or b.has(sympy.Float):
        return _numerically_equal(a, b, rel_tol)
    if a - b == 0:
        return True
    if not _numerically_equal(a, b, _EXACT_TOL):  # cheap rejection before anything expensive
        return False
    a, b = a.doit(), b.doit()  # the parser builds unevaluated products and sums: `(x+1)/y` vs `(1+x)/y`
    difference = a - b
    if difference == 0:
        return True
    if _provably_nonzero(difference):
        return False
    if difference.is_number:
        # Two constants equal to 30 digits: confirm at 60 before (instead of) simplify, which can run for minutes
        # on nested radicals that sympy cannot denest.
        return _numerically_equal(a, b, _CONFIRM_TOL, digits=60)
    difference = sympy.simplify(difference)
    # Equal at three random points but not provably: trust the numbers unless sympy knows better.
    return difference == 0 or not _provably_nonzero(difference)


def _provably_nonzero(difference: Any) -> bool:
    """sympy knows that `difference` is not zero (`(2^2017 - 1) - 2^2017` is the rational -1)."""
    return difference.is_zero is False or (difference.is_zero is not True and difference.is_number
                                           and difference.is_rational is True)


def _numerically_equal(a: Any, b: Any, tol: float, digits: int = 30) -> bool:
    """Evaluate both at `digits` digits (at three pseudo-random points when there are free symbols) and compare.

    The comparison is done in mpmath numbers, so huge values (`2^{2017}`) do not overflow to infinity.
    """
    import sympy

    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    rng = random.Random(1234)
    points = [{}] if not symbols else [{s: sympy.Float(rng.uniform(-2.5, 2.5), 30) for s in symbols}
                                       for _ in range(3)]
    for point in points:
        va, vb = a.evalf(digits, subs=point), b.evalf(digits, subs=point)
        if not (va.is_number and vb.is_number) or va.has(sympy.nan, sympy.zoo) or vb.has(sympy.nan, sympy.zoo):
            return False
        if va.is_infinite or vb.is_infinite:
            if va != vb:
                return False
            continue
        if not _close(va, vb, tol, digits):
            return False
    return True


def _close(va: Any, vb: Any, tol: float, digits: int) -> bool:
    """|va - vb| <= tol * max(|va|, |vb|), or below 10^-(digits - 10), computed in mpmath at `digits` digits
    (arbitrary exponent range: huge values do not overflow, tiny ones are not "not comparable" zeros)."""
    import mpmath
    import sympy

    with mpmath.workdps(digits + 5):
        values = []
        for value in (va, vb):
            real, imag = value.as_real_imag()
            values.append(mpmath.mpc(mpmath.mpf(sympy.Float(real, digits)._mpf_),
                                     mpmath.mpf(sympy.Float(imag, digits)._mpf_)))
        gap = abs(values[0] - values[1])
        return bool(gap <= tol * max(abs(values[0]), abs(values[1])) or gap < mpmath.mpf(10) ** (10 - digits))


# --------------------------------------------------------------------------------------------------------------
# Judging two extracted answers
# --------------------------------------------------------------------------------------------------------------


def _judge(gold: str, pred: str, rel_tol: float, use_sympy: bool) -> VerifyResult | None:
    """Judge two extracted answers; None when the fast path cannot decide (`use_sympy=False`)."""
    gold_norm, pred_norm = normalize_answer(gold), normalize_answer(pred)
    details: dict[str, Any] = {"extracted_gold": gold, "extracted_prediction": pred,
                               "stage": "sympy" if use_sympy else "fast"}
    if not compact(gold_norm):
        return VerifyResult(_CANNOT, "empty_gold", pred_norm, gold_norm, details)
    if not compact(pred_norm):
        return VerifyResult(_INCORRECT, "empty_prediction", pred_norm, gold_norm, details)
    if compact(gold_norm) == compact(pred_norm):
        return VerifyResult(_CORRECT, "string_match", pred_norm, gold_norm, details)
    gold_norm, pred_norm = decimal_comma(gold_norm, pred_norm), decimal_comma(pred_norm, gold_norm)
    comparer = _Comparer(rel_tol, use_sympy)
    verdict, reason = comparer.nodes(parse_structure(gold_norm), parse_structure(pred_norm))
    if verdict is None:
        return None
    details.update(comparer.details)
    return VerifyResult(verdict, reason, pred_norm, gold_norm, details)


def too_large(gold: str, pred: str, max_digits: int) -> VerifyResult | None:
    """A verdict without sympy when either answer needs more than `max_digits` exact digits (see
    `math_magnitude.exact_digits`): the prediction INCORRECT (`"too_large"`), else a gold CANNOT_JUDGE
    (`"gold_too_large"`); None when both are of a size sympy handles."""
    gold_norm, pred_norm = normalize_answer(gold), normalize_answer(pred)
    for text, verdict, reason in ((pred_norm, _INCORRECT, "too_large"), (gold_norm, _CANNOT, "gold_too_large")):
        digits = exact_digits(text)
        if digits is not None and digits > max_digits:
            return VerifyResult(verdict, reason, pred_norm, gold_norm,
                                {"extracted_gold": gold, "extracted_prediction": pred, "stage": "magnitude",
                                 "digits": "inf" if math.isinf(digits) else int(digits), "max_digits": max_digits})
    return None


def answers_equivalent(gold: str, prediction: str, rel_tol: float = 1e-6, use_sympy: bool = True,
                       max_digits: int = 10_000) -> VerifyResult:
    """Compare an extracted gold answer with an extracted predicted answer, in this process.

    Unlike [`MathVerifier`][rasft_trl.verifiers.math.MathVerifier] there is no time limit: use it for tests,
    notebooks and trusted input. Both arguments are answers (box contents), not whole responses; see
    [`extract_answer`][rasft_trl.verifiers.math_normalize.extract_answer] and
    [`extract_gold`][rasft_trl.verifiers.math_normalize.extract_gold].

    Args:
        gold: the gold answer, e.g. `"\\frac{1}{2}"`.
        prediction: the predicted answer, e.g. `"0.5"`.
        rel_tol: relative tolerance for a decimal against a non-terminating value (see the module docs).
        use_sympy: False restricts the comparison to the sympy-free fast path; undecidable pairs then come back
            as CANNOT_JUDGE with reason `"needs_sympy"`.
        max_digits: answers needing more exact digits are judged without sympy (see `MathVerifier`).
    """
    result = _judge(str(gold), str(prediction), rel_tol, use_sympy=False)
    if result is None and use_sympy:
        result = too_large(str(gold), str(prediction), max_digits) or _judge(str(gold), str(prediction), rel_tol, True)
    if result is None:
        return VerifyResult(_CANNOT, "needs_sympy", normalize_answer(str(prediction)), normalize_answer(str(gold)))
    return result


def _judge_task(gold: str, pred: str, rel_tol: float) -> VerifyResult:
    """Worker-side task: the full comparison, sympy included."""
    return _judge(gold, pred, rel_tol, use_sympy=True)


def _warm_up_worker() -> None:
    """Worker initializer: import sympy and the LaTeX parser before the first (timed) task."""
    _latex_to_sympy("\\frac{1}{2}+x")


# --------------------------------------------------------------------------------------------------------------
# The verifier
# --------------------------------------------------------------------------------------------------------------

_STAT_KEYS = ("calls", "correct", "incorrect", "cannot_judge", "fast_path", "sympy", "cache_hits", "timeouts",
              "worker_errors", "no_box", "worker_restarts", "too_large")


class MathVerifier(Verifier):
    """Verifier for math answers: the LAST `\\boxed{}` of the response against the gold answer.

    Constructible without arguments (`get_verifier("math")`). Calls are bounded in time: comparisons that need
    sympy run in a pool of worker processes and a worker that passes `timeout` is killed and replaced (verdict
    INCORRECT, reason `"timeout"`). Plain answers (string match, numbers, choices, text, tuples of numbers, ...)
    are decided in the calling process without sympy and without starting the pool.

    Args:
        timeout: wall-clock seconds allowed for one comparison in a worker.
        num_workers: worker processes (default `min(4, cpu count)`).
        rel_tol: relative tolerance for a decimal against a non-terminating exact value (see the module docs).
        fallbacks: extraction fallbacks when there is no box, for evaluation only: `"answer_is"`, `"last_number"`.
        max_prediction_chars: only the last this-many characters of a response are searched for the answer.
        max_answer_chars: an extracted answer longer than this is INCORRECT (`"answer_too_long"`) unparsed.
        start_method: multiprocessing start method of the workers (default `forkserver`, else `spawn`).
        memory_limit_mb: a worker whose resident memory passes this is killed (Linux; None: no limit).
        cache_size: number of (gold, answer) verdicts remembered (rollouts of one prompt often agree).
        cpu_limit_s: CPU seconds one comparison may use before the kernel itself stops its worker (`RLIMIT_CPU`),
            the deadline that still holds when the trainer is gone (default `2 * timeout + 5`; must be above
            `timeout`; `math.inf`: none). Such a stop counts as a timeout.
        max_digits: an answer whose exact evaluation needs more decimal digits than this (a power tower, a huge
            factorial, the floor of a huge multiple of pi, `\\frac{1}{10^{10^{10}}}`; estimated from its LaTeX in
            microseconds, `math_magnitude.exact_digits`) is judged without sympy: a prediction INCORRECT
            (`"too_large"`), a gold CANNOT_JUDGE (`"gold_too_large"`). Counted in `stats["too_large"]`. `None`
            turns the guard off (the worker's `timeout` and `cpu_limit_s` remain).

    Attributes:
        stats: counters since construction or `reset_stats()`: `calls`, `correct`, `incorrect`, `cannot_judge`,
            `fast_path` (decided without sympy), `sympy` (sent to workers), `cache_hits`, `timeouts`,
            `worker_errors`, `no_box`, `worker_restarts`, `too_large`.
    """

    reference_column = "answer"
    __name__ = "math"

    def __init__(
        self,
        timeout: float = 5.0,
        num_workers: int | None = None,
        rel_tol: float = 1e-6,
        fallbacks: Sequence[str] = (),
        max_prediction_chars: int = 20_000,
        max_answer_chars: int = 1_000,
        start_method: str | None = None,
        memory_limit_mb: float | None = 4096,
        cache_size: int = 10_000,
        cpu_limit_s: float | None = None,
        max_digits: int | None = 10_000,
    ):
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}.")
        if cpu_limit_s is not None and not cpu_limit_s > timeout:
            raise ValueError(f"cpu_limit_s must be above timeout={timeout} (the trainer's deadline comes first), "
                             f"got {cpu_limit_s}.")
        if rel_tol < 0:
            raise ValueError(f"rel_tol must be >= 0, got {rel_tol}.")
        unknown = [name for name in fallbacks if name not in FALLBACKS]
        if unknown:
            raise ValueError(f"Unknown fallbacks {unknown}; choose from {FALLBACKS}.")
        self.timeout = float(timeout)
        self.num_workers = num_workers if num_workers is not None else min(4, os.cpu_count() or 1)
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}.")
        self.rel_tol = float(rel_tol)
        self.fallbacks = tuple(fallbacks)
        self.max_prediction_chars = max_prediction_chars
        self.max_answer_chars = max_answer_chars
        self.start_method = start_method
        self.memory_limit_mb = memory_limit_mb
        self.cache_size = cache_size
        self.cpu_limit_s = float(cpu_limit_s) if cpu_limit_s is not None else 2 * self.timeout + 5
        if max_digits is not None and max_digits < 1:
            raise ValueError(f"max_digits must be None or >= 1, got {max_digits}.")
        self.max_digits = None if max_digits is None else int(max_digits)
        self.stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        self._cache: OrderedDict = OrderedDict()
        self._pool: KillablePool | None = None
        self._lock = threading.Lock()

    # ---- public -------------------------------------------------------------------------------------------------
    def verify_batch(
        self, predictions: list[str], references: list[Any], rows: list[dict] | None = None
    ) -> list[VerifyResult]:
        """Verify `predictions[i]` (whole responses) against `references[i]` (gold answers); results in order."""
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references.")
        with self._lock:
            results: list[VerifyResult | None] = [None] * len(predictions)
            pending: dict[tuple[str, str], list[tuple[int, str]]] = {}
            for index, (prediction, reference) in enumerate(zip(predictions, references)):
                decided = self._prepare(prediction, reference)
                if isinstance(decided, VerifyResult):
                    results[index] = decided
                else:
                    key, method = decided
                    pending.setdefault(key, []).append((index, method))
            if pending:
                self._run_pool(pending, results)
            for result in results:
                self._count(result)
            return results  # type: ignore[return-value]

    def reset_stats(self) -> None:
        """Zero all counters in `stats`."""
        self.stats = dict.fromkeys(_STAT_KEYS, 0)

    def close(self) -> None:
        """Stop the worker processes (they restart on the next call that needs them)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_pool", None) is not None:
            self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pool"], state["_lock"], state["_cache"] = None, None, OrderedDict()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ---- internals ----------------------------------------------------------------------------------------------
    def _prepare(self, prediction: Any, reference: Any) -> VerifyResult | tuple[tuple[str, str], str]:
        """Extract both answers and try the fast path; returns a result, or ((gold, answer), method) for a worker."""
        gold, gold_reason = extract_gold(reference)
        if gold is None:
            return VerifyResult(_CANNOT, gold_reason, None, None, {"reference": _safe_str(reference)})
        answer, method = extract_answer(prediction, self.fallbacks, self.max_prediction_chars)
        if answer is None:
            self.stats["no_box"] += 1
            return VerifyResult(_INCORRECT, "no_box", None, gold, {})
        if len(answer) > self.max_answer_chars:
            return VerifyResult(_INCORRECT, "answer_too_long", answer[:100] + "...", gold, {"length": len(answer)})
        key = (gold, answer)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.stats["cache_hits"] += 1
            return _copy(cached, method)
        result = _judge(gold, answer, self.rel_tol, use_sympy=False)
        if result is None:
            result = None if self.max_digits is None else too_large(gold, answer, self.max_digits)
            if result is None:
                return key, method
            self.stats["too_large"] += 1
        self.stats["fast_path"] += 1
        self._remember(key, result)
        return _copy(result, method)

    def _run_pool(self, pending: dict[tuple[str, str], list[tuple[int, str]]], results: list) -> None:
        if self._pool is None:
            cpu_limit = self.cpu_limit_s if math.isfinite(self.cpu_limit_s) else None
            self._pool = KillablePool(self.num_workers, _warm_up_worker, self.start_method, self.memory_limit_mb,
                                      cpu_limit_s=cpu_limit)
        keys = list(pending)
        self.stats["sympy"] += len(keys)
        restarts_before = self._pool.restarts
        outcomes = self._pool.run(_judge_task, [(g, p, self.rel_tol) for g, p in keys], self.timeout)
        self.stats["worker_restarts"] += self._pool.restarts - restarts_before
        for key, outcome in zip(keys, outcomes):
            result = self._result_from_outcome(key, outcome)
            for index, method in pending[key]:
                results[index] = _copy(result, method)

    def _result_from_outcome(self, key: tuple[str, str], outcome: TaskOutcome) -> VerifyResult:
        gold, answer = key
        details = {"extracted_gold": gold, "extracted_prediction": answer, "seconds": round(outcome.seconds, 3)}
        if outcome.status == "ok":
            self._remember(key, outcome.value)
            return outcome.value
        if outcome.status in ("timeout", "memory"):
            self.stats["timeouts"] += 1
            reason = "timeout" if outcome.status == "timeout" else "memory_limit"
            return VerifyResult(_INCORRECT, reason, answer, gold, details)
        self.stats["worker_errors"] += 1
        details["error"] = outcome.value
        return VerifyResult(_CANNOT, "worker_error", answer, gold, details)

    def _remember(self, key: tuple[str, str], result: VerifyResult) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = result
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _count(self, result: VerifyResult) -> None:
        self.stats["calls"] += 1
        self.stats[result.verdict.value] += 1


def _copy(result: VerifyResult, method: str) -> VerifyResult:
    details = dict(result.details)
    if method != "boxed":
        details["extraction"] = method
    return dataclasses.replace(result, details=details)

