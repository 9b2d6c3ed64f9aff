"""Answer extraction and string-level normalization for the math verifier (pure Python, no sympy).

Everything here is cheap and deterministic: it runs in the trainer process on every rollout, before
anything is handed to sympy in a worker process. Importing this module never imports sympy.

Main entry points:

- [`extract_boxed`][rasft_trl.verifiers.math_normalize.extract_boxed]: content of the LAST `\\boxed{...}` /
  `\\fbox{...}` (or `\\boxed 5`), with balanced nested braces.
- [`extract_answer`][rasft_trl.verifiers.math_normalize.extract_answer]: the answer of a model response (the
  last box, then optional evaluation fallbacks `"answer_is"` / `"last_number"`).
- [`extract_gold`][rasft_trl.verifiers.math_normalize.extract_gold]: the answer of a dataset reference: a bare
  answer, a number, a GSM8K `"... #### 72"` string, a list of answers, or a whole solution ending with a box.
- [`normalize_answer`][rasft_trl.verifiers.math_normalize.normalize_answer]: canonical LaTeX string (math
  delimiters, `\\left`/`\\right`, spacing commands, `\\dfrac`, text wrappers, units, degrees, `\\%`, `\\$`,
  thousands separators, ...).
- [`parse_structure`][rasft_trl.verifiers.math_normalize.parse_structure]: split a normalized answer into
  tuples / intervals, sets, lists of answers, unions, matrices and equations.
- [`parse_number`][rasft_trl.verifiers.math_normalize.parse_number]: exact value of a plain number (integer,
  decimal, fraction, mixed number, scientific notation, small integer power), used by the sympy-free fast path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from numbers import Integral, Real
from typing import Any

__all__ = [
    "FALLBACKS",
    "Node",
    "clock_seconds",
    "compact",
    "extract_answer",
    "extract_boxed",
    "extract_gold",
    "is_label",
    "is_text_answer",
    "mc_choice",
    "normalize_answer",
    "parse_number",
    "parse_structure",
    "text_key",
]

#: Extraction fallbacks for evaluation (all OFF by default, i.e. for training only boxed answers count).
FALLBACKS = ("answer_is", "last_number")

# --------------------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")


def _matching_brace(text: str, open_pos: int) -> int | None:
    """Index of the `}` closing the `{` at `open_pos` (escaped `\\{` / `\\}` do not count), or None."""
    depth = 0
    i = open_pos
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _box_at(text: str, match: re.Match) -> tuple[str, int] | None:
    """Content and end index of the box whose command is `match`, or None when it is malformed / unclosed."""
    start = match.end()
    i = start
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        close = _matching_brace(text, i)
        if close is None:
            return None
        return text[i + 1 : close].strip(), close + 1
    token = re.match(r"[^\s$]+", text[i:])
    if token is None or i == start and token.group(0)[0].isalpha():
        return None
    content = token.group(0).rstrip(".,;:").strip()
    return (content, i + token.end()) if content else None


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` in `text`, or None.

    Nested braces are balanced (`\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`); `\\boxed 5` (no braces) gives
    the token after the command. The box that *starts* last wins, so `\\boxed{\\boxed{5}}` gives `5`. An
    unclosed last box (a truncated generation) gives None: an earlier box was not the final answer.

    Args:
        text: a model response or a reference solution.

    Returns:
        The stripped box content (possibly the empty string for `\\boxed{}`), or None when there is no box.
    """
    if not text or "\\" not in text:
        return None
    last = None
    for last in _BOX_RE.finditer(text):
        pass
    if last is None:
        return None
    box = _box_at(text, last)
    return None if box is None else box[0]


# What may separate the boxes of one multi-part answer: `\boxed{2}, \boxed{3}`, `$x=\boxed{2}$ or $x=\boxed{3}$`.
_BOX_GAP_RE = re.compile(
    r"^(?:\s|\$|\\[()]|,|;|\\quad|\\qquad|\\text\s*\{\s*(?:and|or)\s*\}|\b(?:and|or)\b"
    r"|[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?\s*=)*$"
)
_MAX_JOINED_BOXES = 10


def _joined_boxes(text: str) -> str | None:
    """The last box, joined with the boxes right before it when only separators lie between them."""
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return None
    last = _box_at(text, matches[-1])
    if last is None:
        return None
    parts, gap_end = [(last[0], matches[-1].start())], matches[-1].start()
    for match in reversed(matches[-_MAX_JOINED_BOXES:-1]):
        box = _box_at(text, match)
        if box is None or box[1] > gap_end or not _BOX_GAP_RE.match(text[box[1] : gap_end]):
            break
        if box[0] not in [content for content, _ in parts]:
            parts.append((box[0], match.start()))
        gap_end = match.start()
    if len(parts) == 1:
        return last[0]
    return ", ".join(_with_assignment(text, content, start) for content, start in reversed(parts))


_ASSIGNMENT_BEFORE_RE = re.compile(r"(?<![\\a-zA-Z])([a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?)\s*=\s*\$?\s*$")


def _with_assignment(text: str, content: str, box_start: int) -> str:
    """`y = \\boxed{2}` -> `y=2`, so that joined boxes keep their variables (`x=1, y=2`)."""
    match = _ASSIGNMENT_BEFORE_RE.search(text[max(0, box_start - 30) : box_start])
    return f"{match.group(1)}={content}" if match and "=" not in content else content


_ANSWER_IS_RE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*:?\s*(.+?)\s*(?:\.(?:\s|$)|\n|$)", re.IGNORECASE
)
_LAST_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?")


def _answer_is(text: str) -> str | None:
    found = None
    for found in _ANSWER_IS_RE.finditer(text):
        pass
    if found is None:
        return None
    answer = found.group(1).strip().strip("$").strip()
    return answer or None


def _last_number(text: str) -> str | None:
    found = None
    for found in _LAST_NUMBER_RE.finditer(text):
        pass
    return None if found is None else found.group(0).rstrip(",")


def extract_answer(
    text: str, fallbacks: Iterable[str] = (), max_chars: int | None = 20_000
) -> tuple[str | None, str]:
    """Extract the final answer of a model response: the content of its last box.

    Boxes immediately before the last one that are separated from it only by separators (commas, "and", "or",
    `\\quad`, math delimiters, `x =`) belong to the same answer and are joined with commas, the way a reader
    takes `$x = \\boxed{2}$ or $x = \\boxed{3}$` to answer "2, 3". Boxes separated by any other text are earlier
    (superseded) answers and are ignored, so `\\boxed{3} ... so actually \\boxed{5}` answers `5`. A hedging
    response (`\\boxed{2}, \\boxed{3}` for a single-valued question) therefore gives a two-element answer,
    which does not match a single gold value.

    Args:
        text: the response.
        fallbacks: extraction methods tried, in order, when there is no box. `"answer_is"` takes the text
            after the last "the answer is" / "final answer:"; `"last_number"` takes the last number. Both are
            meant for evaluating models that were not trained to box their answers; keep them off for
            training (a reward for unboxed answers teaches the policy not to box).
        max_chars: only the last `max_chars` characters are searched (None: no cap).

    Returns:
        `(answer, method)` with method `"boxed"`, one of the fallbacks, or `(None, "no_box")`.
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    if max_chars is not None and len(text) > max_chars:
        text = text[-max_chars:]
    boxed = _joined_boxes(text) if "\\" in text else None
    if boxed is not None:
        return boxed, "boxed"
    for name in fallbacks:
        if name == "answer_is":
            answer = _answer_is(text)
        elif name == "last_number":
            answer = _last_number(text)
        else:
            raise ValueError(f"Unknown extraction fallback {name!r}; choose from {FALLBACKS}.")
        if answer is not None:
            return answer, name
    return None, "no_box"


def _gold_from_number(reference: Real) -> str | None:
    if isinstance(reference, Integral):
        return str(int(reference))
    value = float(reference)
    if math.isnan(value):  # a missing value in a pandas / datasets column
        return None
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def extract_gold(reference: Any, max_chars: int = 500) -> tuple[str | None, str]:
    """Extract the gold answer from a dataset reference.

    Accepted forms: a bare answer (`"\\frac{1}{2}"`, `"$x=3$"`), a number (`72`, `0.5`), a list of answers
    (OlympiadBench's `["$3$", "$5$"]`, joined with commas), a GSM8K answer (`"... #### 1,000"`: the text after
    the last `####`), or a whole solution whose answer is its last `\\boxed{}` (NuminaMath; boxes joined by
    separators only are read together, as in [`extract_answer`][rasft_trl.verifiers.math_normalize.extract_answer]).

    Args:
        reference: the dataset value.
        max_chars: a reference without box or `####` longer than this is taken for a solution whose answer
            cannot be located.

    Returns:
        `(answer, reason)`: reason is `"ok"`, or why there is no answer (`"empty_gold"`, `"gold_no_answer"`).
    """
    if reference is None or isinstance(reference, bool):
        return None, "empty_gold"
    if isinstance(reference, Real):
        answer = _gold_from_number(reference)
        return (answer, "ok") if answer is not None else (None, "empty_gold")
    if isinstance(reference, (list, tuple)):
        parts = [extract_gold(item, max_chars) for item in reference]
        answers = [answer for answer, _ in parts]
        if not answers or any(answer is None for answer in answers):
            return None, "empty_gold"
        return ", ".join(answers), "ok"
    text = str(reference).strip()
    if not text:
        return None, "empty_gold"
    if "####" in text:
        answer = text.rsplit("####", 1)[1].strip()
        return (answer, "ok") if answer else (None, "empty_gold")
    boxed = _joined_boxes(text)
    if boxed is not None:
        return (boxed, "ok") if boxed else (None, "empty_gold")
    if len(text) > max_chars or "\n\n" in text:
        return None, "gold_no_answer"
    return text, "ok"


# --------------------------------------------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------------------------------------------

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ", "\u221a": "\\sqrt", "\u03c0": "\\pi ",
    "\u2264": "\\le ", "\u2265": "\\ge ", "\u2260": "\\ne ", "\u221e": "\\infty ", "\u00b0": "^\\circ",
    "\u222a": "\\cup ", "\u2229": "\\cap ", "\u2208": "\\in ", "\u00a0": " ", "\u2205": "\\emptyset ",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))

_SIZING_RE = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|Bigg|middle)(?![a-zA-Z])")
_SPACING_RE = re.compile(
    r"\\(?:quad|qquad|displaystyle|textstyle|scriptstyle|thinspace|medspace|thickspace|enspace|negthinspace"
    r"|hfill|nonumber|limits)(?![a-zA-Z])|(?<!\\)\\[,;:>! ]|~"
)
_SYNONYMS = [
    (re.compile(r"(?<!\\)<="), r"\\le "),  # ASCII relations: `x <= 1`, `x >= 5`, `x != 3`
    (re.compile(r">="), r"\\ge "),
    (re.compile(r"!="), r"\\ne "),
    (re.compile(r"\\[dtc]frac(?![a-zA-Z])"), r"\\frac"),
    (re.compile(r"\\[dt]binom(?![a-zA-Z])"), r"\\binom"),
    (re.compile(r"\\(?:leq|leqslant|leqq)(?![a-zA-Z])"), r"\\le "),
    (re.compile(r"\\(?:geq|geqslant|geqq)(?![a-zA-Z])"), r"\\ge "),
    (re.compile(r"\\(?:neq)(?![a-zA-Z])"), r"\\ne "),
    (re.compile(r"\\lt(?![a-zA-Z])"), "<"),
    (re.compile(r"\\gt(?![a-zA-Z])"), ">"),
    (re.compile(r"\\(?:lbrace)(?![a-zA-Z])"), r"\\{"),
    (re.compile(r"\\(?:rbrace)(?![a-zA-Z])"), r"\\}"),
    (re.compile(r"\\(?:lbrack)(?![a-zA-Z])"), "["),
    (re.compile(r"\\(?:rbrack)(?![a-zA-Z])"), "]"),
    (re.compile(r"\\(?:langle)(?![a-zA-Z])"), "("),
    (re.compile(r"\\(?:rangle)(?![a-zA-Z])"), ")"),
    (re.compile(r"\\(?:varnothing)(?![a-zA-Z])"), r"\\emptyset "),
    (re.compile(r"\\(?:infinity|infin)(?![a-zA-Z])|(?<![\\a-zA-Z])(?:infinity|inf)(?![a-zA-Z])"), r"\\infty "),
    (re.compile(r"\\(?:varpi)(?![a-zA-Z])"), r"\\pi "),
    (re.compile(r"\\(?:colon)(?![a-zA-Z])"), ":"),
    (re.compile(r"\\(?:mid)(?![a-zA-Z])"), "|"),
]
# Degrees, percent and currency are units: 30^\circ == 30, 50\% == 50, \$5 == 5 (see module docs of math.py).
_DEGREE_RE = re.compile(
    r"\^\s*\{?\s*\\circ\s*\}?|(?<=\d)\s*\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])|(?<=\d)\^\s*\{?\s*o\s*\}?(?=\s*$)"
)
_PERCENT_RE = re.compile(r"\\?%|\\percent(?![a-zA-Z])")
_DOLLAR_RE = re.compile(r"\\\$|\$|\\(?:textdollar|dollar)(?![a-zA-Z])")
_TEXT_CMD_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|textsf|texttt|textnormal|textup|mathrm|mathbf|mathit|mathsf|mathtt|mathnormal"
    r"|mbox|hbox|boldsymbol|bm|operatorname|emph|boxed|fbox|underline)\s*\{"
)
_UNIT_WORDS = (
    "cm|mm|km|m|in|inch|inches|ft|foot|feet|yd|yard|yards|mile|miles|meter|meters|metre|metres|centimeter|"
    "centimeters|millimeter|millimeters|kilometer|kilometers|g|kg|mg|gram|grams|kilogram|kilograms|lb|lbs|pound|"
    "pounds|ounce|ounces|oz|s|sec|secs|second|seconds|min|mins|minute|minutes|h|hr|hrs|hour|hours|day|days|week|"
    "weeks|month|months|year|years|dollar|dollars|cent|cents|unit|units|degree|degrees|deg|mph|kph|liter|liters|"
    "litre|litres|l|ml|mL|L|gallon|gallons|cup|cups|people|persons|students|student|times|ways|percent|"
    "square units|sq units|cubic units|square feet|square inches|square meters|square centimeters|"
    "cubic feet|cubic inches|cubic meters|cubic centimeters|sq ft|sq in|sq m|sq cm|radians|rad|"
    "points|point|tiles|marbles|coins|books|apples|pages|miles per hour|km/h|m/s|rpm|W|V|J|N|Pa|K|Hz"
)
_TRAILING_TEXT_UNIT_RE = re.compile(
    r"(?<=[\d}).\s])\s*\\(?:text|mbox|mathrm|textrm|textnormal|mathit|textit|textbf|mathbf|textsf|mathsf|emph)\s*"
    r"\{\s*(?![ie]\s*\})[a-zA-Z][a-zA-Z .\-/]*\}"
    r"(?:\s*\^\s*\{?\s*\d\s*\}?)?\s*$"
)
_TRAILING_WORD_UNIT_RE = re.compile(r"(?<=[\d}).])\s+(?:" + _UNIT_WORDS + r")(?:\s*\^\s*\{?\s*\d\s*\}?)?\s*$")
# A unit glued to its number (`10weeks`, `5cm^2`): only the listed words of two letters or more (not `in`), so
# that products of variables (`4abc`, `2m`) stay expressions.
_GLUED_UNIT_RE = re.compile(
    r"(?<=\d)(?:"
    + "|".join(sorted((w for w in _UNIT_WORDS.split("|") if len(w) >= 2 and " " not in w and w != "in"),
                      key=len, reverse=True))
    + r")(?:\s*\^\s*\{?\s*\d\s*\}?)?\s*$"
)
# "and" / "or" between answers, also written in a text command (`2\text{or}3`) or as a logical or (`\vee`).
_AND_OR_CMD_RE = re.compile(
    r"\s*(?:\\(?:text|mbox|textrm|mathrm|textit|textbf|textnormal)\s*\{\s*(?:and|or)\s*\}|\\(?:vee|lor)(?![a-zA-Z]))\s*"
)
_AND_OR_RE = re.compile(r"\s+(?:and|or)\s+|\s*,\s*(?:and|or)\s+|(?<=[)\]])\s*(?:and|or)\s*(?=[(\[])")
# A mixed number written with a slash (`1 1/2`, `2\ 3/4`): a whole part, a space, a proper fraction.
_MIXED_SLASH_RE = re.compile(r"(?<![\w.}\\^_])(\d+)\s+(\d+)\s*/\s*(\d+)(?![\w.])")
# Degrees inside a trigonometric function's argument are converted to radians (`\sin 30^\circ` = 1/2);
# anywhere else a degree sign is a unit and dropped (`30^\circ` == `30`).
_TRIG_RE = re.compile(r"\\(?:sin|cos|tan|cot|sec|csc)(?![a-zA-Z])")
_TRIG_DEGREE_RE = re.compile(
    r"(\d+(?:\.\d+)?|[a-zA-Z]|\{[^{}]*\})\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z]))"
)
# A thousands separator that cannot be a list comma: `1{,}000`, `1,\\!000` (MATH), `1,\\! 000`, `1\\!,\\!000`,
# `1,\\,000`, or a thin space alone (`1\\,000`). A plain `1,000` is handled for whole answers only.
_THIN_THOUSANDS_RE = re.compile(
    r"(?<=\d)(?:(?:\\!\s*)?(?:\{,\}|,\s*\\[!,])\s*(?:\\!\s*)?|\\[,; !]\s*)(?=\d{3}(?!\d))"
)
_THOUSANDS_RE = re.compile(r"^[+-]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")  # `0,111` is no thousands grouping
_REAL_WORDS_RE = re.compile(
    r"^(?:\\mathbb\s*\{?\s*R\s*\}?|\\R|\\text\{all real numbers\}|all real numbers|\\text\{all reals\}|all reals)$"
)
_WS_RE = re.compile(r"\s+")
_SCRIPT_CHAR_RE = re.compile(r"([_^])\s*([A-Za-z0-9])")


_TRAILING_WORDS_RE = re.compile(r"(?<=\d)\s+([a-zA-Z]{3,}(?:\s+[a-zA-Z]{2,})*)\s*$")


def _strip_trailing_words(text: str) -> str:
    """`2 solutions` -> `2`: plain words after a number are a unit or a noun (not `5 and 6`, not `3 sin`)."""
    match = _TRAILING_WORDS_RE.search(text)
    if match is None:
        return text
    words = match.group(1).lower().split()
    if any(word in ("and", "or") or word in _MATH_WORDS for word in words):
        return text
    return text[: match.start()].rstrip()


def _unwrap_commands(text: str, pattern: re.Pattern) -> str:
    """Replace every `\\cmd{X}` matched by `pattern` (ending at the opening brace) with `X`."""
    for _ in range(50):
        match = pattern.search(text)
        if match is None:
            return text
        open_pos = match.end() - 1
        close = _matching_brace(text, open_pos)
        if close is None:
            return text[: match.start()] + text[open_pos + 1 :]
        text = text[: match.start()] + text[open_pos + 1 : close] + text[close + 1 :]
    return text


def _read_arg(text: str, i: int) -> tuple[str, int] | None:
    """Read one TeX argument at `i`: a braced group or a single character / command. Returns (arg, end)."""
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return None
    if text[i] == "{":
        close = _matching_brace(text, i)
        if close is None:
            return None
        return text[i + 1 : close], close + 1
    if text[i] == "\\":
        match = re.match(r"\\[a-zA-Z]+", text[i:])
        if match is None:
            return None
        return match.group(0), i + match.end()
    if text[i] in "}^_":
        return None
    return text[i], i + 1


def _brace_command_args(text: str, command: str, nargs: int) -> str:
    """Rewrite `\\frac12` / `\\frac1{2}` / `\\sqrt2` as `\\frac{1}{2}` / `\\sqrt{2}`."""
    out = []
    pos = 0
    pattern = re.compile(re.escape(command) + r"(?![a-zA-Z])")
    for _ in range(1000):
        match = pattern.search(text, pos)
        if match is None:
            break
        out.append(text[pos : match.end()])
        i = match.end()
        if command == "\\sqrt" and i < len(text) and text[i] == "[":
            close = text.find("]", i)
            if close < 0:
                break
            out.append(text[i : close + 1])
            i = close + 1
        args = []
        for _ in range(nargs):
            arg = _read_arg(text, i)
            if arg is None:
                break
            args.append(arg[0])
            i = arg[1]
        if len(args) == nargs:
            out.append("".join("{" + a + "}" for a in args))
            pos = i
        else:
            pos = match.end()
    out.append(text[pos:])
    return "".join(out)


def _strip_outer(text: str) -> str:
    """Drop `\\(...\\)` / `\\[...\\]` delimiters, braces wrapping the whole answer and trailing punctuation."""
    for _ in range(10):
        before = text
        text = text.strip()
        for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
            if text.startswith(left) and text.endswith(right) and len(text) >= 4:
                text = text[2:-2].strip()
        if text.startswith("{") and _matching_brace(text, 0) == len(text) - 1:
            text = text[1:-1]
        text = text.rstrip(".;:, ").lstrip(":").strip()
        text = text.rstrip("\\").rstrip()  # a stray backslash or a LaTeX line break after the answer
        if text == before:
            break
    return text


def _mixed_slash(match: re.Match) -> str:
    whole, num, den = match.groups()
    if int(den) == 0 or int(num) >= int(den):  # `3 4/2` is not a mixed number: leave it
        return match.group(0)
    return f"{whole}\\frac{{{num}}}{{{den}}}"


_TWELVE_HOUR_RE = re.compile(
    r"(?<![\d:])(\d{1,2}):([0-5]\d)(:[0-5]\d)?\s*(?:\\(?:text|mathrm|textrm|rm)\s*\{)?\s*([AaPp])\.?\s*[Mm]\.?\s*\}?"
    r"(?![A-Za-z])"
)


def _twenty_four_hour(match: re.Match) -> str:
    """`8:34 \\text{P.M.}` -> `20:34`, `12:05 am` -> `0:05`; an hour above 12 is left as written."""
    hours, minutes, seconds, half = int(match.group(1)), match.group(2), match.group(3) or "", match.group(4)
    if not 1 <= hours <= 12:
        return match.group(0)
    hours = hours % 12 + (12 if half in "Pp" else 0)
    return f"{hours}:{minutes}{seconds}"


def normalize_answer(answer: str) -> str:
    """Canonical LaTeX form of an extracted answer (pure string rewriting, no sympy).

    Removes math delimiters, `\\left`/`\\right`, spacing commands (`\\,` `\\!` `\\;` `\\quad`),
    `\\displaystyle`, thousands separators (`1{,}000`, `1\\,000`, and `1,000` when the whole answer is such a
    number), units (`\\text{ cm}`, ` dollars`), degrees (`^\\circ`), `\\%`, `\\$` and text wrappers
    (`\\text{}`, `\\textbf{}`, `\\mathrm{}`, ...); maps synonyms (`\\dfrac` -> `\\frac`, `\\leq` -> `\\le`,
    `\\mathbb{R}` -> `(-\\infty,\\infty)`, "and"/"or" between answers -> `,`) and adds braces to `\\frac12`
    and `\\sqrt2`. Whitespace is kept (collapsed) so that sympy still sees token boundaries; use
    [`compact`][rasft_trl.verifiers.math_normalize.compact] for string comparison.
    """
    text = _UNICODE_RE.sub(lambda m: _UNICODE[m.group(0)], answer).replace("\n", " ").replace("\t", " ")
    if ":" in text:  # 12-hour clock times, before A.M./P.M. would be dropped as a unit
        text = _TWELVE_HOUR_RE.sub(_twenty_four_hour, text)
    text = _DOLLAR_RE.sub("", text)
    text = _THIN_THOUSANDS_RE.sub("", text)
    text = text.replace("\\left.", "").replace("\\right.", "")
    text = _SIZING_RE.sub("", text)
    for pattern, repl in _SYNONYMS:
        text = pattern.sub(repl, text)
    if ("\\circ" in text or "\\degree" in text) and _TRIG_RE.search(text):
        text = _TRIG_DEGREE_RE.sub(r"\\frac{\1\\pi}{180}", text)
    text = _DEGREE_RE.sub("", text)
    text = _PERCENT_RE.sub("", text)
    text = _SPACING_RE.sub(" ", text)
    text = _strip_outer(text)
    for _ in range(2):
        text = _TRAILING_TEXT_UNIT_RE.sub("", text).rstrip()
        text = _TRAILING_WORD_UNIT_RE.sub("", text).rstrip()
        if text[-1:].isalpha() or "^" in text:  # (a cheap test first: this runs on every rollout)
            text = _GLUED_UNIT_RE.sub("", text).rstrip()
    text = _strip_trailing_words(text)
    if "or" in text or "and" in text or "\\vee" in text:
        text = _AND_OR_CMD_RE.sub(", ", text)
    text = _unwrap_commands(text, _TEXT_CMD_RE)
    text = _AND_OR_RE.sub(", ", text)
    if "/" in text:
        text = _MIXED_SLASH_RE.sub(_mixed_slash, text)
    text = _brace_command_args(text, "\\frac", 2)
    text = _brace_command_args(text, "\\sqrt", 1)
    text = _SCRIPT_CHAR_RE.sub(r"\1{\2}", text)
    text = _WS_RE.sub(" ", text)
    text = _strip_outer(text)
    if text.startswith("+") and not text.startswith("+-"):
        text = text[1:].lstrip()
    if _THOUSANDS_RE.match(text):
        text = text.replace(",", "")
    if _REAL_WORDS_RE.match(text):
        text = "(-\\infty,\\infty)"
    return text


def compact(text: str) -> str:
    """Whitespace-free form of a normalized answer, for string comparison."""
    return _WS_RE.sub("", text).replace("{}", "").replace("+\\infty", "\\infty")


# --------------------------------------------------------------------------------------------------------------
# Plain numbers (the sympy-free fast path)
# --------------------------------------------------------------------------------------------------------------

_NUM = r"(?:\d+\.?\d*|\.\d+)"
_INT_RE = re.compile(r"^[+-]?\d+$")
_DEC_RE = re.compile(r"^[+-]?(?:\d+\.\d*|\.\d+)$")
_SCI_RE = re.compile(
    rf"^([+-]?{_NUM})\s*(?:[eE]|(?:\\times|\\cdot|\*)\s*10\s*\^)\s*\{{?\s*([+-]?\d+)\s*\}}?$"
)
_POW10_RE = re.compile(r"^([+-]?)10\s*\^\s*\{?\s*([+-]?\d+)\s*\}?$")
_POW_RE = re.compile(r"^([+-]?)(\d+)\s*\^\s*\{?\s*(\d+)\s*\}?$")
_FRAC_RE = re.compile(rf"^([+-]?)\\frac\{{\s*([+-]?{_NUM})\s*\}}\{{\s*([+-]?{_NUM})\s*\}}$")
_SLASH_RE = re.compile(rf"^([+-]?{_NUM})\s*/\s*([+-]?{_NUM})$")
_REPEATING_RE = re.compile(r"^([+-]?)(\d*)\.(\d*)\\overline\{(\d+)\}$")
_MIXED_RE = re.compile(r"^([+-]?)(\d+)\s*\\frac\{\s*(\d+)\s*\}\{\s*(\d+)\s*\}$")
_MAX_DIGITS = 400
_MAX_EXPONENT = 400


@dataclass(frozen=True)
class Number:
    """An exactly parsed number. `approximate` is True for decimal notation (`0.333`, `1.5e3`)."""

    value: Fraction
    approximate: bool


def parse_number(text: str) -> Number | None:
    """Exact value of a plain number in normalized form, or None.

    Understands integers (`-12`, `033`), decimals (`0.5`, `.5`), repeating decimals (`0.\\overline{3}` = 1/3),
    fractions (`\\frac{1}{2}`, `-\\frac{3}{4}`,
    `1/2`), mixed numbers (`2\\frac{1}{2}` = 5/2), scientific notation (`1.5\\times10^{3}`, `1.5 \\cdot 10^3`,
    `1e3`, `10^{-3}`) and small integer powers (`2^{10}`). Huge literals and exponents return None (they are left
    to the bounded sympy path) so that this function stays fast on any input.
    """
    text = text.strip()
    if not text or len(text) > _MAX_DIGITS or not any(c.isdigit() for c in text):
        return None
    if _INT_RE.match(text):
        return Number(Fraction(int(text)), False)
    if _DEC_RE.match(text):
        return Number(Fraction(text), True)
    match = _SCI_RE.match(text)
    if match:
        exponent = int(match.group(2))
        if abs(exponent) > _MAX_EXPONENT:
            return None
        return Number(Fraction(match.group(1)) * Fraction(10) ** exponent, "." in match.group(1))
    match = _POW10_RE.match(text)
    if match:
        exponent = int(match.group(2))
        if abs(exponent) > _MAX_EXPONENT:
            return None
        return Number((-1 if match.group(1) == "-" else 1) * Fraction(10) ** exponent, False)
    match = _POW_RE.match(text)
    if match:
        base, exponent = int(match.group(2)), int(match.group(3))
        if base > 10**6 or exponent * max(1, len(str(base))) > _MAX_EXPONENT:
            return None
        return Number(Fraction((-1 if match.group(1) == "-" else 1) * base**exponent), False)
    match = _REPEATING_RE.match(text)
    if match:
        sign, whole, fixed, period = match.groups()
        value = Fraction(int(whole or "0")) + Fraction(int(fixed or "0"), 10 ** len(fixed))
        value += Fraction(int(period), 10 ** len(fixed) * (10 ** len(period) - 1))
        return Number(-value if sign == "-" else value, False)
    match = _MIXED_RE.match(text)
    if match:
        sign, whole, num, den = match.groups()
        if int(den) == 0:
            return None
        value = int(whole) + Fraction(int(num), int(den))
        return Number(-value if sign == "-" else value, False)
    match = _FRAC_RE.match(text) or _SLASH_RE.match(text)
    if match:
        groups = match.groups()
        sign, num, den = ("", *groups) if len(groups) == 2 else groups
        den_value = Fraction(den)
        if den_value == 0:
            return None
        value = Fraction(num) / den_value
        return Number(-value if sign == "-" else value, "." in num or "." in den)
    return None


def _terminates(value: Fraction) -> bool:
    """True when `value` has a finite decimal expansion (denominator of the form 2^a 5^b)."""
    den = value.denominator
    for prime in (2, 5):
        while den % prime == 0:
            den //= prime
    return den == 1


def numbers_equal(gold: Number, pred: Number, rel_tol: float) -> tuple[bool, str]:
    """Compare two parsed numbers: exact, except that a decimal may approximate a non-terminating value.

    `1/3` vs `0.3333333333` is equal at `rel_tol=1e-6`; `0.333` vs `1/3` is not. Two integers, two fractions or
    two decimals are compared exactly (`1234567` vs `1234568` differ even though they agree to 1e-6), and so is a
    decimal against a value with a finite decimal expansion (`0.125` must be exactly `1/8`).
    """
    if gold.value == pred.value:
        return True, "numeric_equal"
    exact_side = None
    if gold.approximate and not pred.approximate:
        exact_side = pred.value
    elif pred.approximate and not gold.approximate:
        exact_side = gold.value
    if exact_side is None or _terminates(exact_side):
        return False, "numeric_unequal"
    diff = abs(gold.value - pred.value)
    if diff <= rel_tol * max(abs(gold.value), abs(pred.value)):
        return True, "numeric_close"
    return False, "numeric_unequal"


# --------------------------------------------------------------------------------------------------------------
# Multiple choice and text answers
# --------------------------------------------------------------------------------------------------------------

_MC_GOLD_RE = re.compile(r"^(?:\(\s*([A-E])\s*\)\s*[.:]?\s*(.*)|([A-E]))$")
_MC_PREFIX_RE = re.compile(r"^(?:option|choice|answer)\s*:?\s*", re.IGNORECASE)
_MC_PRED_RE = re.compile(r"^(?:\(\s*([A-Ea-e])\s*\)|([A-Ea-e])(?=$|[.:)\s]))\s*[.:]?\s*(.*)$")


def mc_choice(text: str, gold: bool) -> tuple[str, str] | None:
    """Multiple-choice letter of a normalized answer: `(C)`, `C`, `(C) 12` -> `("C", value)`, else None.

    For a gold answer only an upper-case A-E counts, alone or in parentheses followed by the option's value;
    for a prediction lower case is accepted too.
    """
    text = text.strip()
    if gold:
        match = _MC_GOLD_RE.match(text)
        if match is None:
            return None
        return (match.group(1) or match.group(3)), (match.group(2) or "").strip()
    match = _MC_PRED_RE.match(_MC_PREFIX_RE.sub("", text))
    if match is None:
        return None
    letter = (match.group(1) or match.group(2)).upper()
    value = match.group(3).strip()
    if match.group(2) and value:  # "C 12" without parentheses is not a choice
        return None
    return letter, value


_WORD_RE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}")
_SHORT_WORDS = frozenset({"no"})
_MATH_WORDS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln lg exp max min gcd lcm det mod deg dim "
    "lim sqrt frac infty pmod bmod arg inf sup ker cis sgn sign abs floor ceil".split()
)


def is_text_answer(text: str) -> bool:
    """True when a normalized answer contains a word (3+ letters, not a LaTeX command or a math function)."""
    if compact(text).lower() in _SHORT_WORDS:
        return True
    return any(word.lower() not in _MATH_WORDS for word in _WORD_RE.findall(text))


def text_key(text: str) -> str:
    """Case- and space-insensitive key of a text answer (`\\text{Monday}` == `monday`)."""
    return compact(text).casefold()


# --------------------------------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """A parsed answer structure.

    `kind` is one of `"scalar"` (`text` holds the expression), `"seq"` (a tuple or an interval; `left` and
    `right` hold the brackets), `"set"` (`\\{...\\}`: order does not matter), `"list"` (bare comma-separated
    answers: order does not matter), `"union"` (`A \\cup B`), `"matrix"` (`rows`), `"eq"` (`lhs = rhs`),
    `"rel"` (an inequality that is not a plain bound on one variable, `text` holds it).
    """

    kind: str
    text: str = ""
    items: tuple = ()
    left: str = ""
    right: str = ""
    rows: tuple = ()
    lhs: str = ""
    rhs: str = ""


_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = set(_OPENERS.values())


def _split_top(text: str, separators: tuple[str, ...]) -> list[str]:
    """Split at separators outside all brackets (`()[]{}`, `\\{\\}`), honouring `\\begin`/`\\end`."""
    parts = []
    depth = 0
    start = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            if text.startswith("\\begin", i):
                depth += 1
            elif text.startswith("\\end", i):
                depth -= 1
            elif i + 1 < n and text[i + 1] in "{}":
                depth += 1 if text[i + 1] == "{" else -1
                i += 2
                continue
            match = re.match(r"\\[a-zA-Z]+", text[i:])
            if depth == 0 and match is not None and match.group(0) in separators:
                parts.append(text[start:i])
                i += match.end()
                start = i
                continue
            i += len(match.group(0)) if match else 2
            continue
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth -= 1
        elif depth == 0 and ch in separators:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return [part.strip() for part in parts]


def _wraps_whole(text: str) -> bool:
    """True when the bracket opening at 0 closes at the last character (either bracket kind)."""
    depth = 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth == 0:
                return i == len(text) - 1
        elif ch == "\\" and text.startswith(("\\{", "\\}"), i):
            continue
    return False


_MATRIX_RE = re.compile(r"^\\begin\{([pbvBV]?matrix|smallmatrix|array)\}(?:\{[^}]*\})?(.*)\\end\{\1\}$", re.DOTALL)
_SIMPLE_LHS_RE = re.compile(
    r"^(?:[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?'*|[a-zA-Z](?:\^\{?-1\}?|'+)?\s*\(\s*[a-zA-Z0-9]+\s*\)|\\[a-zA-Z]+(?:_\{?[a-zA-Z0-9]+\}?)?|[a-zA-Z]\s*\(\s*[a-zA-Z0-9]+\s*\)"
    r"|[A-Z]{2,3}|[A-Za-z][a-z]{2,19}(?: [a-z]{2,19}){0,2}|(?:m\s*)?\\angle\s*[A-Z]{1,3}|\\overline\{[A-Z]{2}\}"
    r"|P\(.*\)"
    r"|\(\s*[a-zA-Z](?:_\{?\w+\}?)?(?:\s*,\s*[a-zA-Z](?:_\{?\w+\}?)?)+\s*\))$"
)
_IN_PREFIX_RE = re.compile(r"^[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?\s*\\in\s*(.+)$")
_VAR = r"[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?"
# What an inequality bounds: a variable, a function value (`0<f(x)<1` is the range (0,1)) or a Greek letter.
_REL_VAR = (
    _VAR + r"|[a-zA-Z](?:_\{?\w+\}?)?\s*\(\s*[a-zA-Z]\w*\s*\)"
    r"|\\(?:alpha|beta|gamma|theta|phi|varphi|omega|lambda|mu|sigma|rho|tau)(?![a-zA-Z])"
)
_REL_SPLIT_RE = re.compile(r"(\\le(?![a-zA-Z])|\\ge(?![a-zA-Z])|<|>)")
_FLIP = {"<": ">", ">": "<", "\\le": "\\ge", "\\ge": "\\le"}


_LABEL_COMMANDS_RE = re.compile(
    r"m?\s*\\(?:frac|angle|measuredangle|overline|overrightarrow|vec|triangle|widehat|cdot|times|left|right)(?![a-zA-Z])"
)
_LABEL_SCRIPT_RE = re.compile(r"[_^]\s*(?:\{[a-z0-9]+\}|[a-z0-9])")


def is_label(text: str) -> bool:
    """True for the left side of a labelled value: geometry names and ratios of them (`|AB|`, `\\frac{NO}{BO}`,
    `S_1:S_2`, `AB+BC`, `\\angle ABC`), i.e. only capital letters once commands, scripts and operators are gone.
    Lower-case variables are not labels: `x+y = 5` is an equation, not the value 5."""
    rest = _LABEL_SCRIPT_RE.sub("", _LABEL_COMMANDS_RE.sub("", text))
    rest = re.sub(r"[\s{}()|:+\-*/_^]", "", rest)
    return bool(rest) and rest.isascii() and rest.isalpha() and rest.isupper()


_CLOCK_RE = re.compile(r"^(\d{1,2}):([0-5]\d)(?::([0-5]\d))?$")
_DECIMAL_COMMA_RE = re.compile(r"^-?\d+,\d+$")
_THOUSANDS_GROUPING_RE = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+$")
_DECIMAL_POINT_RE = re.compile(r"^-?\d*\.\d+$")


def decimal_comma(text: str, other: str) -> str:
    """`text` with a European decimal comma read as a point, when `other` is a number written with a decimal point
    and `text` is two digit runs joined by one comma (no space) that is not a thousands grouping: `1,22` -> `1.22`,
    `0,111` -> `0.111`, `1000,99` -> `1000.99` (against `1.22`, ...). `1,000` stays a thousand, `1, 22` a list, and
    against anything but a decimal-point number `1,22` stays the list it was."""
    text, other = text.strip(), other.strip()
    if _DECIMAL_COMMA_RE.match(text) and not _THOUSANDS_GROUPING_RE.match(text) and _DECIMAL_POINT_RE.match(other):
        return text.replace(",", ".")
    return text


def clock_seconds(text: str) -> int | None:
    """Seconds since midnight of a clock time (`9:05`, `09:05`, `2:30:00`), or None when `text` is not one."""
    match = _CLOCK_RE.match(compact(text))
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds or 0)


def is_simple_lhs(text: str) -> bool:
    """True for the left side of an answer given as an assignment: `x`, `y_1`, `f(x)`, `AB`, `\\theta`."""
    return bool(_SIMPLE_LHS_RE.match(text.strip()))


def _inequality_to_interval(text: str) -> str | None:
    """`x > 3` -> `(3,\\infty)`, `1 \\le x < 2` -> `[1,2)`, `x \\le -1` -> `(-\\infty,-1]`; else None."""
    parts = _REL_SPLIT_RE.split(text)
    if len(parts) not in (3, 5) or not all(p.strip() for p in parts[::2]):
        return None
    terms = [p.strip() for p in parts[::2]]
    ops = [p.strip() for p in parts[1::2]]
    if len(terms) == 2:  # `-x > -1` is `x < 1`
        for i, term in enumerate(terms):
            if term.startswith("-") and re.fullmatch(_REL_VAR, term[1:].strip()):
                terms = [term[1:].strip() if j == i else _negated(t) for j, t in enumerate(terms)]
                ops = [_FLIP[ops[0]]]
                break
    var_positions = [i for i, term in enumerate(terms) if re.fullmatch(_REL_VAR, term)]
    if len(var_positions) != 1:
        return None
    if len(terms) == 3:
        if var_positions != [1] or ops[0] != ops[1] and {ops[0], ops[1]} not in ({"<", "\\le"}, {">", "\\ge"}):
            return None
        if ops[0] in (">", "\\ge"):
            terms, ops = terms[::-1], [{">": "<", "\\ge": "\\le"}[o] for o in ops[::-1]]
        if ops[0] not in ("<", "\\le") or ops[1] not in ("<", "\\le"):
            return None
        left = "(" if ops[0] == "<" else "["
        right = ")" if ops[1] == "<" else "]"
        return f"{left}{terms[0]},{terms[2]}{right}"
    var_left = var_positions == [0]
    op = ops[0] if var_left else {"<": ">", ">": "<", "\\le": "\\ge", "\\ge": "\\le"}[ops[0]]
    bound = terms[1] if var_left else terms[0]
    return {
        ">": f"({bound},\\infty)",
        "\\ge": f"[{bound},\\infty)",
        "<": f"(-\\infty,{bound})",
        "\\le": f"(-\\infty,{bound}]",
    }[op]


def _negated(term: str) -> str:
    """`-1` -> `1`, `2` -> `-2`, `a+b` -> `-(a+b)` (string level, for flipping an inequality)."""
    if term.startswith("-") and not _has_top_sign(term[1:]):
        return term[1:].strip()
    return f"-({term})" if _has_top_sign(term) else f"-{term}"


def _has_top_sign(text: str) -> bool:
    """True when `text` has a `+` or `-` outside all brackets, after its first character."""
    depth = 0
    for i, ch in enumerate(text):
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        elif ch in "+-" and depth == 0 and i > 0:
            return True
    return False


def _expand_pm(text: str) -> list[str] | None:
    """`a \\pm b` -> [`a+b`, `a-b`] (one top-level `\\pm` / `\\mp`), else None."""
    parts = _split_top(text, ("\\pm", "\\mp"))
    if len(parts) != 2:
        return None
    head, tail = parts
    if not tail:
        return None
    if not head:
        return [tail, f"-{tail}" if not tail.startswith("-") else tail[1:]]
    return [f"{head}+{tail}", f"{head}-{tail}"]


def _parse_matrix(body: str) -> Node:
    rows = []
    for row in re.split(r"\\\\(?:\[[^\]]*\])?", body):
        if row.strip() or not rows:
            rows.append(tuple(cell.strip() for cell in row.split("&")))
    while rows and rows[-1] == ("",):
        rows.pop()
    return Node("matrix", rows=tuple(rows))


def parse_structure(text: str, depth: int = 0) -> Node:
    """Parse a normalized answer into a [`Node`][rasft_trl.verifiers.math_normalize.Node] tree.

    Recognizes (outermost first): `x \\in S` (-> `S`), simple inequalities (-> intervals), unions, matrices,
    sets `\\{...\\}`, tuples / intervals `(a, b]`, bare comma-separated answers, `\\pm`, equations
    (`lhs = rhs`, and chains `a = b = c` keep the first and last parts) and `\\approx` (the exact part is kept).
    """
    text = text.strip()
    if depth > 8:
        return Node("scalar", text=text)
    match = _IN_PREFIX_RE.match(text)
    if match:
        text = match.group(1).strip()
    approx = _split_top(text, ("\\approx",))
    if len(approx) > 1:
        kept = [part for part in approx if part and not is_simple_lhs(part)]
        text = kept[0] if kept else approx[-1]
    if text in ("\\emptyset", "\\{\\}", "\\{ \\}", "\\varnothing"):
        return Node("set", items=())
    union = _split_top(text, ("\\cup",))
    if len(union) > 1:
        return Node("union", items=tuple(parse_structure(part, depth + 1) for part in union))
    match = _MATRIX_RE.match(text)
    if match is None and len(text) >= 2 and text[0] in "([" and text[-1] in ")]":
        match = _MATRIX_RE.match(text[1:-1].strip())  # `(\\begin{pmatrix}...\\end{pmatrix})`, `\\left[\\begin{array}...]`
    if match:
        return _parse_matrix(match.group(2))
    if text.startswith("\\{") and text.endswith("\\}"):
        inner = text[2:-2].strip()
        items = [item for item in _split_top(inner, (",", ";")) if item] if inner else []
        return Node("set", items=tuple(parse_structure(item, depth + 1) for item in items))
    if len(text) >= 2 and text[0] in "([" and text[-1] in ")]" and _wraps_whole(text):
        items = _split_top(text[1:-1], (",",))
        if len(items) == 1:  # `(1; 2)`: a semicolon separates the coordinates when there is no comma
            items = _split_top(text[1:-1], (";",))
        if len(items) >= 2:
            return Node("seq", left=text[0], right=text[-1],
                        items=tuple(parse_structure(item, depth + 1) for item in items))
    items = [item for item in _split_top(text, (",", ";")) if item]
    if len(items) >= 2:
        return Node("list", items=tuple(parse_structure(item, depth + 1) for item in items))
    interval = _inequality_to_interval(text)
    if interval is not None:
        return parse_structure(interval, depth + 1)
    if len(_REL_SPLIT_RE.split(text)) > 1 and "=" not in text:
        return Node("rel", text=text)  # another inequality (`2x < 2`, `x^2 \le 1`): compared as sets by sympy
    sides = _split_top(text, ("=",))
    if len(sides) >= 2 and all(sides):
        return Node("eq", lhs=sides[0], rhs=sides[-1])
    expanded = _expand_pm(text)
    if expanded is not None:
        return Node("list", items=tuple(Node("scalar", text=item) for item in expanded))
    return Node("scalar", text=text)
