"""How large the exact numbers of an answer can get, read off its LaTeX before sympy sees it (pure Python).

sympy evaluates integer powers, factorials and rationals exactly, so `9^{9^{9^{9}}}` or `(10^{10^{10}})!` make it
build an integer with billions of digits (a worker busy until its timeout), and `\\lfloor 10^{10^6} \\pi \\rfloor`
asks for a million digits of pi. `exact_digits` estimates, in microseconds, the number of decimal digits of the
largest exact number (or the precision) the expression needs; the math verifier judges an answer whose estimate
exceeds `max_digits` without sympy (a prediction: incorrect, reason `"too_large"`; a gold: cannot judge).

The estimate works in log10 space over a small grammar (numbers, symbols, `+ - * / ^ !`, implicit products,
groups, `\\frac`, `\\sqrt`, floors and ceilings, functions, lists and relations) and is an upper bound in spirit,
not a proof: an expression it cannot read returns None (no guard; the worker's timeout and CPU limit remain).
Symbols count as magnitude 1 (a power of a symbol is not expanded by sympy, so `x^{10^{10}}` is harmless).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["exact_digits"]

_TOKEN_RE = re.compile(r"\d+(?:\.\d*)?|\.\d+|\\[a-zA-Z]+|\\.|\S")
_GROUPS = {"{": "}", "(": ")", "[": "]"}
_FLOORS = {"\\lfloor": "\\rfloor", "\\lceil": "\\rceil"}
_SEPARATORS = {",", ";", "=", "<", ">", "\\le", "\\ge", "\\leq", "\\geq", "\\ne", "\\neq", "\\approx", ":", "|"}
_PRODUCTS = {"*", "\\cdot", "\\times"}
_IGNORED = {"\\left", "\\right", "\\displaystyle", "\\,", "\\!", "\\;", "\\quad", "\\qquad", "~", "\\ "}
_MAX_TOKENS = 2000
_HUGE = 1e300


@dataclass(frozen=True)
class _Size:
    """An expression's size: `log10` of its absolute value (`mag`, 0 for symbols), its sign where known (numeric
    expressions), the decimal digits an exact evaluation needs (`digits`), and whether it is a plain number."""

    mag: float
    digits: float
    sign: int = 1
    numeric: bool = True


_SYMBOL = _Size(0.0, 0.0, 1, False)


def exact_digits(text: str) -> float | None:
    """Decimal digits of the largest exact number (or the precision) evaluating `text` needs; `math.inf` when it
    overflows any float; None when the expression is outside the grammar (or too long to read)."""
    tokens = [t for t in _TOKEN_RE.findall(text) if t not in _IGNORED]
    if len(tokens) > _MAX_TOKENS:
        return None
    parser = _Parser(tokens)
    try:
        size = parser.sequence(stop=None)
    except (_Unreadable, RecursionError, OverflowError, ValueError):
        return None
    return max(size.digits, abs(size.mag) if size.numeric else size.digits)


class _Unreadable(Exception):
    pass


def _clip(value: float) -> float:
    return math.inf if value != value or abs(value) > _HUGE else value


def _power(value_log10: float, sign: int) -> float:
    """`sign * 10 ** value_log10`, saturating at +-inf."""
    if value_log10 > 300:
        return sign * math.inf
    return sign * 10.0 ** value_log10


class _Parser:
    """Recursive descent over the tokens; each method returns a `_Size`."""

    def __init__(self, tokens: list[str]):
        self.tokens, self.pos = tokens, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise _Unreadable("end of input")
        self.pos += 1
        return token

    # sequence := sum (separator sum)*   (lists, relations: the largest part decides)
    def sequence(self, stop: str | None) -> _Size:
        parts = [self.sum(stop)]
        while self.peek() in _SEPARATORS:
            self.take()
            if self.peek() is None or self.peek() == stop:
                break
            parts.append(self.sum(stop))
        if len(parts) == 1:
            return parts[0]
        return _Size(max(p.mag for p in parts), max(p.digits for p in parts), 1, all(p.numeric for p in parts))

    # sum := product (('+' | '-') product)*
    def sum(self, stop: str | None) -> _Size:
        size = self.product(stop)
        while self.peek() in ("+", "-", "\\pm", "\\mp"):
            self.take()
            other = self.product(stop)
            size = _Size(_clip(max(size.mag, other.mag) + math.log10(2)), max(size.digits, other.digits) + 1,
                         size.sign if size.mag >= other.mag else other.sign, size.numeric and other.numeric)
        return size

    # product := unary (('*' | '/' | implicit) unary)*
    def product(self, stop: str | None) -> _Size:
        size = self.unary(stop)
        while True:
            token = self.peek()
            if token is None or token == stop or token in _SEPARATORS or token in ("+", "-", "\\pm", "\\mp") \
                    or token in _GROUPS.values() or token in _FLOORS.values():
                return size
            divide = token == "/"
            if token in _PRODUCTS or divide:
                self.take()
            other = self.unary(stop)
            mag = size.mag - other.mag if divide else size.mag + other.mag
            size = _Size(_clip(mag), size.digits + other.digits, size.sign * other.sign,
                         size.numeric and other.numeric)

    # unary := '-' unary | postfix
    def unary(self, stop: str | None) -> _Size:
        if self.peek() in ("-", "+"):
            negative = self.take() == "-"
            size = self.unary(stop)
            return _Size(size.mag, size.digits, -size.sign if negative else size.sign, size.numeric)
        return self.postfix(stop)

    # postfix := atom ('^' atom | '_' atom | '!')*
    def postfix(self, stop: str | None) -> _Size:
        size = self.atom(stop)
        while self.peek() in ("^", "_", "!"):
            token = self.take()
            if token == "_":  # a subscript names a symbol: `v_0`, `a_{n+1}`
                self.atom(stop)
                size = _SYMBOL
            elif token == "!":
                size = _factorial(size)
            else:
                size = _raise(size, self.atom(stop))
        return size

    def atom(self, stop: str | None) -> _Size:
        token = self.take()
        if token[0].isdigit() or token[0] == ".":
            return _number(token)
        if token in _GROUPS:
            inner = self.sequence(_GROUPS[token])
            if self.take() != _GROUPS[token]:
                raise _Unreadable("unbalanced group")
            return inner
        if token in _FLOORS:  # exact floor/ceil of a huge non-integer needs that many digits of precision
            inner = self.sequence(_FLOORS[token])
            if self.take() != _FLOORS[token]:
                raise _Unreadable("unbalanced floor")
            return _Size(inner.mag, max(inner.digits, abs(inner.mag)), inner.sign, inner.numeric)
        if token in ("\\frac", "\\dfrac", "\\tfrac", "\\binom"):
            top, bottom = self.atom(stop), self.atom(stop)
            if token == "\\binom":  # log10 C(n, k) <= min(n log10 2, k log10 n)
                if not (top.numeric and bottom.numeric):
                    return _Size(0.0, top.digits + bottom.digits, 1, False)
                mag = _clip(min(_power(top.mag, 1) * math.log10(2), _power(bottom.mag, 1) * max(top.mag, 0.0)))
                return _Size(mag, max(top.digits + bottom.digits, mag), 1, True)
            return _Size(_clip(top.mag - bottom.mag), top.digits + bottom.digits, top.sign * bottom.sign,
                         top.numeric and bottom.numeric)
        if token == "\\sqrt":
            if self.peek() == "[":
                self.take()
                self.sequence("]")
                self.take()
            inner = self.atom(stop)
            return _Size(inner.mag / 2, inner.digits, 1, inner.numeric)
        if token.startswith("\\") or token.isalpha():  # a symbol, a constant or a function name
            return _SYMBOL
        raise _Unreadable(f"unexpected {token!r}")


def _number(token: str) -> _Size:
    digits = sum(ch.isdigit() for ch in token)
    value = float(token) if digits < 300 else math.inf
    mag = math.log10(value) if 0 < value < math.inf else (math.inf if value else -math.inf)
    return _Size(mag if value else 0.0, float(digits), 1, True)


def _raise(base: _Size, exponent: _Size) -> _Size:
    """`base ^ exponent`: exact when both are numbers (`|e| * log10|b|` digits); a symbol's power stays symbolic."""
    if not exponent.numeric:
        return _Size(0.0, base.digits + exponent.digits, 1, False)
    value = _power(exponent.mag, exponent.sign) if exponent.mag > -math.inf else 0.0
    if not base.numeric:
        return _Size(0.0, base.digits + exponent.digits, 1, False)
    mag = _clip(value * base.mag) if base.mag not in (0.0, -math.inf) else 0.0
    return _Size(mag, max(base.digits, exponent.digits, abs(mag)), 1, True)


def _factorial(size: _Size) -> _Size:
    """`n!`: log10(n!) ~ n log10(n) (Stirling, an upper bound for n >= 1)."""
    if not size.numeric:
        return _Size(0.0, size.digits, 1, False)
    n = _power(size.mag, 1)
    mag = _clip(n * max(size.mag, 0.0)) if n > 1 else 0.0
    return _Size(mag, max(size.digits, mag), 1, True)
