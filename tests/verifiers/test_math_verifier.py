"""Tests of the math verifier: table-driven equivalence cases, extraction, time bounds, the worker pool."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import time

import pytest

from rasft_trl.verifiers import Verdict, get_verifier
from rasft_trl.verifiers.math import MathVerifier, answers_equivalent, extract_boxed, extract_gold
from rasft_trl.verifiers.math_normalize import extract_answer, normalize_answer, parse_number

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
C, I, J = Verdict.CORRECT, Verdict.INCORRECT, Verdict.CANNOT_JUDGE  # noqa: E741

GSM8K_72 = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)
NUMINA_34 = (
    "Let the probability be $p$. Since the events are independent, $p = \\frac{1}{2} \\cdot \\frac{3}{2}$, "
    "which we first guess is $\\boxed{1}$; but then we note the correction, and\n\n"
    "$$p = \\dfrac{3}{4}.$$\n\nTherefore, the answer is $\\boxed{\\dfrac{3}{4}}$."
)
NUMINA_CHOICE = "Checking each option, only (B) satisfies both conditions. The answer is $\\boxed{\\text{B}}$."
LONG_SOLUTION = "We compute the sum step by step. " * 40 + "\n\nHence the result follows."

PM2 = "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"

# (gold as the dataset writes it, predicted answer as boxed by the model, expected verdict)
# A prediction starting with "RAW:" is used verbatim as the whole response (no box added).
CASES = [
    # ---- integers, AIME, signs ----------------------------------------------------------------------------
    ("42", "42", C),
    ("42", "43", I),
    ("033", "33", C),
    ("33", "033", C),
    ("0", "0", C),
    ("0", "-0", C),
    ("-5", "-5", C),
    ("-5", "5", I),
    ("5", "+5", C),
    ("100", "10", I),
    ("7", "7.", C),
    # ---- thousands separators ------------------------------------------------------------------------------
    ("1000", "1,000", C),
    ("1000", "1{,}000", C),
    ("1000", "1\\,000", C),
    ("1,000", "1000", C),
    ("1000000", "1,000,000", C),
    ("1000000", "1{,}000{,}000", C),
    ("12345", "12,345", C),
    ("12345", "12,346", I),
    ("1,000", "100", I),
    # ---- decimals and the tolerance rule ----------------------------------------------------------------------
    ("10", "10.0", C),
    ("10", "10.00", C),
    ("2.5", "2.50", C),
    ("0.5", ".5", C),
    ("0.33", "0.333", I),
    ("1234567", "1234568", I),
    ("1000000", "1000000.4", I),
    ("3.14", "\\pi", I),
    ("\\pi", "3.14", I),
    ("\\pi", "3.14159265", C),
    ("\\frac{1}{3}", "0.3333333333", C),
    ("1/3", "0.3333333333", C),
    ("\\frac13", "0.333", I),
    ("\\frac{2}{3}", "0.6666667", C),
    ("\\frac{2}{3}", "0.67", I),
    ("\\frac{1}{8}", "0.125", C),
    ("0.125", "\\frac{1}{8}", C),
    ("\\frac{1}{8}", "0.12", I),
    ("e", "2.718281828", C),
    ("\\frac{\\sqrt{3}}{2}", "0.8660254", C),
    ("\\frac{\\sqrt{3}}{2}", "0.866", I),
    ("\\sqrt{2}", "1.414214", C),
    ("\\sqrt{2}", "1.41", I),
    ("9\\pi", "28.27", I),
    # ---- fractions ------------------------------------------------------------------------------------------
    ("\\frac{1}{2}", "0.5", C),
    ("\\frac{1}{2}", "2", I),
    ("\\frac{1}{2}", "\\frac12", C),
    ("\\frac{1}{2}", "\\dfrac{1}{2}", C),
    ("\\frac{1}{2}", "\\tfrac12", C),
    ("\\frac{1}{2}", "1/2", C),
    ("\\frac{1}{2}", "\\frac{2}{4}", C),
    ("\\frac{1}{2}", "\\frac{1}{3}", I),
    ("-\\frac{1}{2}", "\\frac{-1}{2}", C),
    ("-\\frac{1}{2}", "-0.5", C),
    ("-\\frac{1}{2}", "\\frac{1}{2}", I),
    ("\\frac{3}{4}", "\\frac{4}{3}", I),
    ("\\frac{5}{2}", "2\\frac{1}{2}", C),
    ("\\frac{7}{2}", "3.5", C),
    ("\\dfrac{14}{3}", "\\frac{14}{3}", C),
    ("\\frac{14}{3}", "4\\frac{2}{3}", C),
    ("\\frac{1}{\\sqrt{3}}", "\\frac{\\sqrt{3}}{3}", C),
    ("\\frac{9}{4}\\pi", "2.25\\pi", C),
    # ---- scientific notation and powers ----------------------------------------------------------------------
    ("1.5\\times10^{3}", "1500", C),
    ("1500", "1.5 \\times 10^3", C),
    ("1500", "1.5e3", C),
    ("1500", "1.5E+3", C),
    ("1000", "10^3", C),
    ("0.001", "10^{-3}", C),
    ("6.02\\times 10^{23}", "6.02 \\cdot 10^{23}", C),
    ("1.5\\times10^{3}", "1.5\\times10^{4}", I),
    ("1024", "2^{10}", C),
    ("2^{10}", "1024", C),
    ("2^{10}", "1000", I),
    ("3^{4}", "81", C),
    # ---- percent, degrees, currency, units ---------------------------------------------------------------------
    ("50\\%", "50", C),
    ("50", "50\\%", C),
    ("50\\%", "50 \\%", C),
    ("50\\%", "50\\text{ percent}", C),
    ("50\\%", "0.5", I),
    ("0.5", "50\\%", I),
    # policy (docs/verifiers.md): a percent is not converted to a fraction, both ways
    ("10\\%", "0.1", I),
    ("0.1", "10\\%", I),
    ("10\\%", "10", C),
    # policy: a European decimal comma (two digit runs, one comma, no space, not a thousands grouping) reads as a
    # point against a number written with a point; `1,000` stays a thousand and `1, 22` a list
    ("1,22", "1.22", C),
    ("1.22", "1,22", C),
    ("0,111", "0.111", C),
    ("1000,99", "1000.99", C),
    ("1,22", "1.23", I),
    ("1,000", "1.000", I),
    ("1,000", "1000", C),
    ("1, 22", "1.22", I),
    ("1,22", "22, 1", C),
    ("12.5\\%", "12.5", C),
    ("25\\%", "20\\%", I),
    ("30^\\circ", "30", C),
    ("30", "30^{\\circ}", C),
    ("30^\\circ", "30\u00b0", C),
    ("30^\\circ", "30 degrees", C),
    ("30^\\circ", "30^\\circ", C),
    ("30^\\circ", "\\frac{\\pi}{6}", I),
    ("30^\\circ", "60^\\circ", I),
    ("120^{\\circ}", "120", C),
    ("\\$18.90", "18.90", C),
    ("18.90", "\\$18.90", C),
    ("18.9", "\\$ 18.90", C),
    ("\\$1,200", "1200", C),
    ("5", "5\\text{ cm}", C),
    ("5\\text{ cm}", "5", C),
    ("5\\text{ cm}^2", "5", C),
    ("12", "12 \\text{ inches}", C),
    ("12", "12 inches", C),
    ("20", "20\\mbox{ dollars}", C),
    ("8", "8 \\mathrm{m}", C),
    ("5", "6 \\text{ cm}", I),
    ("90", "90 \\text{ square units}", C),
    ("4", "4\\text{ hours}", C),
    ("3", "3 \\text{ days}", C),
    # ---- wrappers and spacing ------------------------------------------------------------------------------------
    ("10", "\\textbf{10}", C),
    ("10", "\\mathrm{10}", C),
    ("10", "\\text{10}", C),
    ("10", "{10}", C),
    ("10", "$10$", C),
    ("\\frac{1}{2}", "\\left(\\frac{1}{2}\\right)", C),
    ("3\\sqrt{2}", "3 \\sqrt{2}", C),
    ("3\\sqrt{2}", "3\\,\\sqrt{2}", C),
    ("3\\sqrt{2}", "3\\!\\sqrt{2}", C),
    ("3\\sqrt{2}", "3\\sqrt2", C),
    ("3\\sqrt{2}", "3 \\quad \\sqrt{2}", C),
    ("3\\sqrt{2}", "\\displaystyle 3\\sqrt{2}", C),
    ("3\\sqrt{2}", "3\\;\\sqrt{2}", C),
    # ---- radicals, pi, symbolic ----------------------------------------------------------------------------------
    ("2\\sqrt{3}", "\\sqrt{12}", C),
    ("2\\sqrt{3}", "3\\sqrt{2}", I),
    ("2\\sqrt{2}", "\\sqrt{8}", C),
    ("\\sqrt{8}", "2.828", I),
    ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", C),
    ("\\frac{\\sqrt{2}}{2}", "1/\\sqrt{2}", C),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", C),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{\\sqrt2}{2}", C),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}", C),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{\\sqrt{3}}{2}", I),
    ("\\frac{\\sqrt{6}}{3}", "\\sqrt{\\frac{2}{3}}", C),
    ("\\sqrt{3+2\\sqrt{2}}", "1+\\sqrt{2}", C),
    ("\\frac{1+\\sqrt{5}}{2}", "\\frac{\\sqrt{5}+1}{2}", C),
    ("\\frac{1+\\sqrt{5}}{2}", "\\frac{1-\\sqrt{5}}{2}", I),
    ("2\\pi", "2 \\pi", C),
    ("\\frac{2\\pi}{3}", "\\frac{2}{3}\\pi", C),
    ("4\\pi", "\\pi \\cdot 4", C),
    ("\\frac{\\pi}{2}", "\\pi/2", C),
    ("\\frac{\\pi}{2}", "\\pi", I),
    ("\\pi r^2", "r^2\\pi", C),
    ("8\\pi - 16", "-16+8\\pi", C),
    ("3+4i", "4i+3", C),
    ("3+4i", "3-4i", I),
    ("\\log_2 8", "3", C),
    ("e^2", "e^{2}", C),
    ("\\binom{5}{2}", "10", C),
    ("5!", "120", C),
    ("x^2+2x+1", "(x+1)^2", C),
    ("x^2-1", "(x-1)(x+1)", C),
    ("x^2-1", "(x-1)^2", I),
    ("\\frac{x}{2}", "0.5x", C),
    ("2x+1", "1+2x", C),
    ("2x+1", "2x-1", I),
    ("a+b", "b+a", C),
    ("\\frac{a}{b}", "\\frac{b}{a}", I),
    ("|x|", "x", I),
    ("\\frac{n(n+1)}{2}", "\\frac{n^2+n}{2}", C),
    # ---- tuples and intervals (ordered; brackets matter) -------------------------------------------------------
    ("(1,2)", "(1,2)", C),
    ("(1,2)", "(2,1)", I),
    ("(1,2]", "(1,2)", I),
    ("(1,2]", "(1, 2]", C),
    ("[1,2]", "[1,2)", I),
    ("[1,2]", "(1,2)", I),
    ("(0, 1)", "(0,1]", I),
    ("(-\\infty, 3]", "(-\\infty,3]", C),
    ("(-\\infty, 3]", "(-\\infty,3)", I),
    ("(-\\infty, 3]", "\\left(-\\infty, 3\\right]", C),
    ("(-\\infty,\\infty)", "\\mathbb{R}", C),
    ("(-\\infty, 0) \\cup (0, \\infty)", "(0,\\infty)\\cup(-\\infty,0)", C),
    ("(-\\infty, 0) \\cup (0, \\infty)", "(-\\infty,0]\\cup(0,\\infty)", I),
    ("[1,2] \\cup [3,4]", "[1,2]\\cup[3,4)", I),
    ("[2, 5)", "x \\in [2,5)", C),
    ("x \\in [1,2]", "[1,2]", C),
    ("[1,2]", "1 \\le x \\le 2", C),
    ("(3, \\infty)", "x > 3", C),
    ("(3, \\infty)", "x \\geq 3", I),
    ("(-\\infty, 5)", "x<5", C),
    ("\\left( \\frac{1}{2}, 3 \\right)", "(0.5, 3)", C),
    ("(2, -1)", "(2,-1)", C),
    ("(2,-1)", "(-1,2)", I),
    ("(1, 2, 3)", "(1,2,3)", C),
    ("(1,2,3)", "(1,2)", I),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", C),
    ("(3, \\frac{\\pi}{2})", "(3, \\frac{\\pi}{3})", I),
    ("(2,3)", "2, 3", C),
    ("(\\sqrt{2}, 1)", "(\\sqrt2,1)", C),
    ("(1, \\sqrt{2})", "(1, 1.414)", I),
    ("[0, \\pi]", "[0,\\pi]", C),
    ("(1, -2, 3)", "(1,-2,-3)", I),
    ("\\left(\\frac{1}{4}, \\frac{1}{2}\\right)", "(0.25, 0.5)", C),
    ("(-2, 7)", "(-2, 7.0)", C),
    ("(4, 0)", "\\langle 4, 0 \\rangle", C),
    # ---- sets and multiple answers (unordered) ------------------------------------------------------------------
    ("\\{1,2\\}", "\\{2,1\\}", C),
    ("\\{1,2\\}", "\\{1,2,3\\}", I),
    ("\\{1,2\\}", "1, 2", C),
    ("\\{1, 2\\}", "(1, 2)", I),
    ("\\{1,2\\}", "\\left\\{ 2, 1 \\right\\}", C),
    ("\\{-1, 1\\}", "\\{1,-1\\}", C),
    ("1, 2", "2, 1", C),
    ("1,2", "2,1", C),
    ("1, 2", "1, 3", I),
    ("-2, 3", "3, -2", C),
    ("3, -2", "x=3, x=-2", C),
    ("2, 3", "x = 2 \\text{ or } x = 3", C),
    ("2, 3", "2 \\text{ and } 3", C),
    ("2, 3", "2 and 3", C),
    ("1 \\pm \\sqrt{2}", "1+\\sqrt{2}, 1-\\sqrt{2}", C),
    ("1+\\sqrt{2}, 1-\\sqrt{2}", "1 \\pm \\sqrt{2}", C),
    ("\\pm 3", "3, -3", C),
    ("\\pm 3", "3", I),
    ("\\frac{1}{2}, -3", "-3, 0.5", C),
    ("1, 2, 3", "1, 2", I),
    ("1, 2, 3", "3, 2, 1", C),
    ("\\emptyset", "\\varnothing", C),
    ("\\emptyset", "\\{\\}", C),
    ("\\{3\\}", "3", C),
    ("3", "\\{3\\}", C),
    ("x=1, y=2", "y=2, x=1", C),
    ("x=1, y=2", "x=2, y=1", I),
    ("\\frac{-1 + \\sqrt{5}}{2}, \\frac{-1 - \\sqrt{5}}{2}", "\\frac{-1-\\sqrt5}{2}, \\frac{-1+\\sqrt5}{2}", C),
    ("1, 2, 4, 8", "1,2,4,8", C),
    ("1, 2, 4, 8", "1, 2, 4, 16", I),
    # ---- equations -----------------------------------------------------------------------------------------------
    ("x=3", "3", C),
    ("3", "x=3", C),
    ("x=3", "x=-3", I),
    ("x=3", "x = 3", C),
    ("y=2x+1", "2x+1", C),
    ("2x+1", "y = 2x + 1", C),
    ("y=2x+1", "y=1+2x", C),
    ("y=2x+1", "y=2x-1", I),
    ("y = -\\frac{1}{2}x + 3", "y=-0.5x+3", C),
    ("x^2+y^2=1", "y^2+x^2=1", C),
    ("x^2+y^2=4", "x^2+y^2-4=0", C),
    ("x+y=1", "2x+2y=2", C),
    ("x+y=1", "x-y=1", I),
    ("k=5", "5", C),
    ("f(x)=x^2", "x^2", C),
    ("a = 2", "b = 2", I),
    ("AB = 5", "5", C),
    ("5", "x = 2 + 3 = 5", C),
    ("10", "2 \\cdot 5 = 10", C),
    ("x = \\frac{1}{2}", "x=0.5", C),
    ("y = x^2", "y = x^3", I),
    # ---- multiple choice ----------------------------------------------------------------------------------------
    ("C", "C", C),
    ("C", "(C)", C),
    ("(C)", "C", C),
    ("C", "\\text{(C)}", C),
    ("C", "\\textbf{(C)}", C),
    ("\\textbf{(C)}", "C", C),
    ("\\text{(C)}", "(C)", C),
    ("C", "D", I),
    ("(C)", "(D)", I),
    ("\\text{(C)}", "\\textbf{(B)}", I),
    ("C", "\\textbf{(C) } 12", C),
    ("\\textbf{(C)}\\ 12", "C", C),
    ("\\textbf{(C)}\\ 12", "12", C),
    ("\\textbf{(C)}\\ 12", "13", I),
    ("C", "12", I),
    ("B", "\\mathrm{(B)}", C),
    ("E", "(e)", C),
    ("A", "\\text{A}", C),
    ("\\textbf{(A)}", "\\textbf{(A) }\\frac{1}{2}", C),
    # ---- infinity ------------------------------------------------------------------------------------------------
    ("\\infty", "\\infty", C),
    ("\\infty", "+\\infty", C),
    ("\\infty", "-\\infty", I),
    ("-\\infty", "-\\infty", C),
    ("\\infty", "\u221e", C),
    ("\\infty", "\\text{infinity}", C),
    ("\\infty", "1000000", I),
    # ---- text answers ---------------------------------------------------------------------------------------------
    ("\\text{Monday}", "Monday", C),
    ("\\text{Monday}", "monday", C),
    ("\\text{Monday}", "\\text{MONDAY}", C),
    ("Monday", "\\text{Tuesday}", I),
    ("\\text{even}", "\\text{Even}", C),
    ("\\text{odd}", "\\text{even}", I),
    ("\\text{no solution}", "\\text{No solution}", C),
    ("\\text{Evelyn}", "Evelyn", C),
    ("\\text{Evelyn}", "\\text{Lynvee}", I),
    ("\\text{yes}", "\\text{no}", I),
    ("\\text{yes}", "\\textbf{Yes}", C),
    ("\\text{(A), (C)}", "\\text{(A), (C)}", C),
    # ---- matrices ------------------------------------------------------------------------------------------------
    (PM2, "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", C),
    (PM2, "\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}", C),
    (PM2, "\\begin{pmatrix} 1 & 2 \\\\ 3 & 5 \\end{pmatrix}", I),
    (PM2, "\\begin{pmatrix} 1 & 3 \\\\ 2 & 4 \\end{pmatrix}", I),
    (PM2, "\\begin{pmatrix} 1 & 2 & 3 \\\\ 4 & 5 & 6 \\end{pmatrix}", I),
    ("\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\-2\\end{pmatrix}", C),
    ("\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", "(1, -2)", C),
    ("\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", "(-2, 1)", I),
    ("\\begin{pmatrix} \\frac{1}{2} & 0 \\\\ 0 & 1 \\end{pmatrix}",
     "\\begin{pmatrix} 0.5 & 0 \\\\ 0 & 1 \\end{pmatrix}", C),
    ("\\begin{pmatrix} \\sqrt{2} \\\\ 1 \\end{pmatrix}",
     "\\begin{pmatrix} \\frac{2}{\\sqrt{2}} \\\\ 1 \\end{pmatrix}", C),
    # ---- dataset-style golds ----------------------------------------------------------------------------------------
    (GSM8K_72, "72", C),
    (GSM8K_72, "72.00", C),
    (GSM8K_72, "\\$72", C),
    (GSM8K_72, "27", I),
    ("Total is 500+500 = <<500+500=1000>>1000.\n#### 1,000", "1000", C),
    ("#### 1000", "1,000", C),
    (NUMINA_34, "0.75", C),
    (NUMINA_34, "\\frac{3}{4}", C),
    (NUMINA_34, "1", I),
    (NUMINA_CHOICE, "B", C),
    (NUMINA_CHOICE, "\\textbf{(B)}", C),
    (NUMINA_CHOICE, "C", I),
    (72, "72", C),
    (72, "72.5", I),
    (0.5, "\\frac{1}{2}", C),
    (2.0, "2", C),
    (-3, "-3", C),
    (["$3$"], "3", C),
    (["3", "5"], "5, 3", C),
    ("$x=2$", "2", C),
    ("025", "25", C),
    ("\\boxed{10}", "10", C),
    # ---- cannot judge: missing / unusable gold -------------------------------------------------------------------
    ("", "5", J),
    (None, "5", J),
    ("   ", "5", J),
    (float("nan"), "5", J),
    (LONG_SOLUTION, "5", J),
    ("The answer is in the box: \\boxed{}", "5", J),
    ("#### ", "5", J),
    ("\\frac{", "5", J),
    ([], "5", J),
    # ---- extraction ------------------------------------------------------------------------------------------------
    ("42", "RAW:The answer is 42.", I),
    ("42", "RAW:so the answer is $\\boxed 42$.", C),
    ("42", "RAW:Thus \\fbox{42}.", C),
    ("5", "RAW:First $\\boxed{3}$, then correcting: $\\boxed{5}$.", C),
    ("3", "RAW:First $\\boxed{3}$, then correcting: $\\boxed{5}$.", I),
    ("\\frac{1}{\\sqrt{2}}", "RAW:We get $\\boxed{\\frac{1}{\\sqrt{2}}}$", C),
    ("12", "RAW:The answer is \\boxed{12", I),
    ("12", "RAW:The answer is \\boxed{}", I),
    ("18.90", "RAW:It costs $\\boxed{\\$18.90}$.", C),
    ("5", "RAW:\\boxed{\\boxed{5}}", C),
    ("\\{1,2\\}", "RAW:so $S = \\boxed{\\{1, 2\\}}$.", C),
    ("2, 3", "RAW:so $x = \\boxed{2}$ or $x = \\boxed{3}$.", C),
    ("2, 3", "RAW:The roots are $\\boxed{3}$ and $\\boxed{2}$.", C),
    ("3", "RAW:It is either $\\boxed{2}$, $\\boxed{3}$.", I),
    ("x=1, y=2", "RAW:$x=\\boxed{2}$, $y=\\boxed{1}$", I),
    ("x=1, y=2", "RAW:$x=\\boxed{1}$, $y=\\boxed{2}$", C),
    ("(1,2)", "RAW:Hence $x=\\boxed{1}$ and $y=\\boxed{2}$.", C),
    ("Hence the roots are $\\boxed{-1}$ and $\\boxed{4}$.", "4, -1", C),
    # ---- more MATH-500 / Minerva / OlympiadBench / GSM8K style pairs ------------------------------------------------
    ("\\$32,\\!000", "32000", C),
    ("32{,}000", "32,000", C),
    ("(x,y)=(1,2)", "(1,2)", C),
    ("(1,2)", "(x, y) = (1, 2)", C),
    ("(1,2)", "(x,y)=(2,1)", I),
    ("C", "\\text{Option C}", C),
    ("C", "Answer: C", C),
    ("(-\\infty,2)\\cup(3,\\infty)", "x<2 \\text{ or } x>3", C),
    ("(-\\infty,2)\\cup(3,\\infty)", "x \\in (-\\infty, 2) \\cup (3, \\infty)", C),
    ("7.5e-7", "7.5 \\times 10^{-7} \\text{ m}", C),
    ("4.5\\times10^{33}", "4.5e33", C),
    ("1.3 \\times 10^{-6}", "1.30 \\times 10^{-6} \\mathrm{~m}", C),
    ("4.5e33", "4.5 \\times 10^{33} \\text{ erg/s}", C),
    ("\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}",
     "\\begin{pmatrix} -\\frac{1}{3} \\\\ \\frac{2}{3} \\end{pmatrix}", C),
    ("-2 + 7i", "7i-2", C),
    ("6 - 5i", "6+5i", I),
    ("x^2+7x+10", "(x+2)(x+5)", C),
    ("\\text{June 20}", "June 20", C),
    ("\\text{June 20}", "June 21", I),
    ("\\frac{1}{2}\\sin 2x", "\\sin x \\cos x", C),
    ("\\sin^2 x", "1 - \\cos^2 x", C),
    ("p - q", "-q+p", C),
    ("3\\sqrt{13}", "\\sqrt{117}", C),
    ("12\\sqrt{3}", "20.78", I),
    ("\\frac{243}{625}", "0.3888", C),
    ("\\frac{19}{21}", "0.905", I),
    ("\\left[ -\\frac{1}{2}, \\frac{1}{2} \\right]", "[-0.5, 0.5]", C),
    ("\\left(0, \\frac{9}{4}\\right]", "(0, 2.25]", C),
    ("3\\frac{1}{5}", "\\frac{16}{5}", C),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{\\sqrt{2}}{2} \\approx 0.707", C),
    ("\\approx 3.14", "3.14", C),
    ("0.75", "\\frac{3}{4} \\text{ or } 0.75", I),
    ("\\sqrt{2}", "2^{1/2}", C),
    ("\\sqrt[3]{2}", "2^{1/3}", C),
    ("\\sqrt[3]{2}", "\\sqrt{2}", I),
    ("\\angle ABC = 30^\\circ", "30", C),
    ("\\frac{3}{5}, \\frac{4}{5}", "(0.6, 0.8)", C),
    ("\\frac{1}{3}", "0.\\overline{3}", C),
    ("\\frac{5}{9}", "0.\\overline{5}", C),
    ("\\frac{1}{6}", "0.1\\overline{6}", C),
    ("\\frac{1}{6}", "0.\\overline{16}", I),
    ("1011_2", "1011_{2}", C),
    ("5", "\\text{Area} = 5", C),
    ("10:30", "10:30 \\text{ a.m.}", C),
    ("10", "ten", I),
    ("x", "X", I),
    ("\\frac{7}{3}", "2.333", I),
    ("\\frac{7}{3}", "2.333333333", C),
    ("2^{2017}", "2^{2017}", C),
    ("2^{2017}", "2^{2016}", I),
    ("2^{2017}-1", "2^{2017}", I),
    ("a^2b", "ba^2", C),
    ("\\{(1,2), (3,4)\\}", "\\{(3,4), (1,2)\\}", C),
    ("(1,2), (3,4)", "(2,1), (3,4)", I),
    ("0", "\\emptyset", I),
    ("x=5", "5 = x", C),
    ("\\frac{1}{2}", "\\frac{1}{2} = 0.5", C),
    ("[-2, \\infty)", "x \\geq -2", C),
    ("[-2, \\infty)", "x > -2", I),
    ("\\$4.50", "4.5", C),
    ("#### 1080", "\\$1,080", C),
    ("1, -1, 2", "\\{-1, 1, 2\\}", C),
    ("\\{1,2,3\\}", "\\{1,2,2,3\\}", C),
    ("1, 2, 2", "1, 2", I),
    ("2", "2 \\text{ solutions}", C),
    ("2", "2 solutions", C),
    ("\\sqrt{2}", "\\sqrt{2.0}", C),
    ("2i", "2\\mathrm{i}", C),
    ("1+i", "i+1", C),
    ("\\frac{10}{3}", "3.33", I),
    ("\\text{no}", "No", C),
    ("\\text{no}", "\\text{yes}", I),
    ("\\frac{\\pi}{4}", "45^\\circ", I),
    ("y = \\frac{1}{2}x - 3", "y = 0.5x - 3", C),
    ("f(x) = 2x + 3", "2x+3", C),
    ("f^{-1}(x) = \\frac{x-3}{2}", "\\frac{x-3}{2}", C),
    ("-2", "y=-2", C),
    ("13", "13\\text{th}", C),
    ("(2, \\frac{3}{2})", "(2, 1.5)", C),
    ("12 \\sqrt{2} \\text{ cm}", "12\\sqrt{2}", C),
    ("(-\\infty, \\infty)", "\\text{all real numbers}", C),
    ("(-\\infty, \\infty)", "(-\\infty,+\\infty)", C),
    ("x = 2, y = 3", "(2, 3)", C),
    ("5", "5 \\sin x", I),
    ("3", "3 and 4", I),
    ("2\\pi r", "2 r \\pi", C),
    ("\\frac{1}{2}", "\\frac{1}{2}x", I),
    ("\\dfrac{\\sqrt{10}}{5}", "\\frac{\\sqrt{2}}{\\sqrt{5}}", C),
    ("\\text{(E)}\\ 5", "E", C),
    ("\\text{(E)}\\ 5", "(D)", I),
    ("\\frac{1}{2}", "0.5000", C),
    ("2.4", "\\frac{12}{5}", C),
    ("150", "150^{\\circ}\\text{C}", C),
    # ---- more tricky negatives ------------------------------------------------------------------------------------
    ("\\frac{1}{2}", "\\frac{1}{2}\\pi", I),
    ("2\\sqrt{2}", "2\\sqrt{3}", I),
    ("(1,2)", "[1,2]", I),
    ("[1,2)", "[1,2]", I),
    ("(0, \\infty)", "[0, \\infty)", I),
    ("(-1, 1)", "(-1, 1) \\cup (2, 3)", I),
    ("\\{1,2\\}", "\\{1\\}", I),
    ("1, 2", "1", I),
    ("x = 1", "x = 1, x = 2", I),
    ("\\text{Monday}", "\\text{Mon}", I),
    ("\\text{(B)}", "\\text{(A)}", I),
    ("12", "\\textbf{(C) } 13", I),
    ("E", "\\text{(E) } 7", C),
    ("x^2", "x^3", I),
    ("\\frac{x+1}{x-1}", "\\frac{x-1}{x+1}", I),
    ("3\\pi", "3", I),
    ("e^{2}", "2e", I),
    ("100", "100.5", I),
    ("0.05", "5", I),
    ("5\\%", "0.05", I),
    ("1/2", "2/1", I),
    ("\\sqrt{3}", "3", I),
    ("-2", "2", I),
    ("24", "24.1", I),
    ("6", "\\$6.50", I),
    ("\\frac{4}{3}\\pi r^3", "\\frac{4}{3}\\pi r^2", I),
    ("y = 2x + 1", "y = 2x", I),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{\\sqrt{2}}{2}", I),
    ("\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}", "\\begin{pmatrix} 0 & 1 \\\\ 1 & 0 \\end{pmatrix}", I),
    # ==== issue 16: answer classes other graders' suites accept (each with equal and not-equal cases) ====
    # ---- clock times: `12:00` is a time, not the ratio 12/0 (both were "undefined" and compared equal) --------
    ("12:00", "1:00", I),
    ("12:00", "12:00", C),
    ("9:05", "09:05", C),
    ("9:05", "9:50", I),
    ("2:30", "2:30:00", C),
    # 12-hour times with A.M. / P.M. against 24-hour times
    ("20:34", "08:34 \\text{P.M.}", C),
    ("20:34", "8:34 pm", C),
    ("8:34", "8:34 \\text{P.M.}", I),
    ("0:05", "12:05 A.M.", C),
    ("12:30", "12:30 PM", C),
    ("08:34 \\text{A.M.}", "8:34", C),
    ("08:34 \\text{A.M.}", "20:34", I),
    # subscripted symbols written with and without braces, wherever sympy sees them
    ("v_{0} t + \\frac{1}{2} a t^{2}", "v_0 t+\\frac{a t^2}{2}", C),
    ("\\frac{r_{0}}{2}", "r_0/2", C),
    ("\\sqrt{v_{0}^{2}+2 g h}", "\\sqrt{2gh+v_0^2}", C),
    ("\\frac{\\mu_{0} I}{2\\pi r}", "\\frac{I\\mu_0}{2 \\pi r}", C),
    ("x = v_{0} t + 1", "x=1+v_0 t", C),
    ("v_{0} t", "v_1 t", I),
    ("r_0^2", "r_{0}^{3}", I),
    ("2:30:00", "2:30", C),
    ("2:30", "2:30:15", I),
    ("10:30 \\text{ a.m.}", "10:30", C),
    ("3:4", "6:8", C),
    ("3:4", "4:3", I),
    ("\\frac{1}{0}", "\\frac{2}{0}", I),
    # ---- MATH thousands separators `,\!` in every spelling, never a list ---------------------------------------
    ("10,\\!080", "10080", C),
    ("10,\\!080", "10081", I),
    ("1,\\! 000", "1000", C),
    ("1\\!,\\!000", "1000", C),
    ("1,\\,000", "1000", C),
    ("1,\\! 000", "1, 000", I),
    ("(1,\\!000, 2)", "(1000, 2)", C),
    ("(1,\\!000, 2)", "(1, 000, 2)", I),
    ("\\$1,\\!234.50", "1234.5", C),
    # ---- degrees inside trigonometric functions are converted; elsewhere they are a unit ------------------------
    ("\\cos x", "\\sin(90^\\circ - x)", C),
    ("\\cos x", "\\sin(90^\\circ + x)", C),
    ("\\sin x", "\\sin(90^\\circ - x)", I),
    ("\\frac{1}{2}", "\\sin 30^\\circ", C),
    ("\\sin 30^\\circ", "\\frac{\\sqrt3}{2}", I),
    ("0.5", "\\cos 60^{\\circ}", C),
    ("\\tan 45^\\circ", "1", C),
    ("\\tan 45^\\circ", "2", I),
    ("30^\\circ", "30", C),
    # ---- complex numbers: a free `i` is the imaginary unit ------------------------------------------------------
    ("1+2i", "i(2-i)", C),
    ("1+2i", "i(2+i)", I),
    ("2-i", "\\frac{5}{2+i}", C),
    ("2+i", "\\frac{5}{2+i}", I),
    ("3i", "\\sqrt{-9}", C),
    ("-1", "i^2", C),
    ("1", "i^2", I),
    ("1+i", "1-i", I),
    # ---- inequalities: the same set of reals, however written ----------------------------------------------
    ("x<1", "-x>-1", C),
    ("x<1", "-x<-1", I),
    ("x<1", "2x<2", C),
    ("x<1", "2x<4", I),
    ("(-1,1)", "x^2<1", C),
    ("x^2<1", "(-1,1]", I),
    ("x^2 \\ge 1", "(-\\infty,-1] \\cup [1,\\infty)", C),
    ("x^2 \\ge 1", "(-\\infty,-1) \\cup (1,\\infty)", I),
    ("0<f(x)<1", "(0,1)", C),
    ("(0,1)", "0<f(x)<1", C),
    ("0<f(x)<1", "(0,1]", I),
    ("0 \\le \\theta < \\pi", "[0,\\pi)", C),
    ("0 \\le \\theta < \\pi", "[0,\\pi]", I),
    ("x <= 1", "-x >= -1", C),  # ASCII relations
    ("x <= 1", "x < 1", I),
    ("x != 3", "x \\neq 3", C),
    ("x >= 5", "x \\ge 6", I),
    # ---- a matrix wrapped in brackets, or written as an array ----------------------------------------------------
    ("(\\begin{pmatrix}\\frac{1}{3}\\\\ \\frac{1}{5} \\end{pmatrix})", "\\begin{pmatrix}\\frac13\\\\0.2 \\end{pmatrix}", C),
    ("\\begin{pmatrix}1 & 2 \\\\3 & 4\\end{pmatrix}", "\\left[\\begin{array}{cc}1 & 2 \\\\3 & 4\\end{array}\\right]", C),
    ("\\begin{pmatrix}1 & 2 \\\\3 & 4\\end{pmatrix}", "\\left[\\begin{array}{cc}1 & 2 \\\\3 & 5\\end{array}\\right]", I),
    # ---- labelled answers: a named quantity equal to a constant is that constant --------------------------------
    ("\\frac{1}{\\sqrt6}", "\\frac{NO}{BO}=\\frac{1}{\\sqrt6}", C),
    ("\\frac{NO}{BO}=\\frac{1}{\\sqrt6}", "\\frac{\\sqrt6}{6}", C),
    ("\\frac{NO}{BO}=\\frac{1}{\\sqrt6}", "\\frac{1}{6}", I),
    ("|AB|=1", "1", C),
    ("1", "|AB|=1", C),
    ("|AB|=1", "2", I),
    ("S_1:S_2=7:32", "7:32", C),
    ("7:32", "S_1:S_2=7:32", C),
    ("S_1:S_2=7:32", "32:7", I),
    ("AB+BC=10", "10", C),
    ("S_{MBCN}:S=7:32", "7:32", C),
    ("S_{MBCN}:S=7:32", "32:7", I),
    ("5", "x+y=5", I),
    ("x+y=5", "5", I),
    # ---- units in bold or glued to the number ------------------------------------------------------------------
    ("10", "10\\textbf{ weeks}", C),
    ("10", "10weeks", C),
    ("10", "11weeks", I),
    ("5", "5\\textbf{cm}", C),
    ("5", "5cm^2", C),
    ("6", "5cm^2", I),
    ("4abc", "4", I),
    ("2m", "2", I),
    # ---- mixed numbers written with a slash ---------------------------------------------------------------------
    ("1 1/2", "\\frac32", C),
    ("\\frac32", "1 1/2", C),
    ("1 1/2", "1.5", C),
    ("1 1/2", "\\frac12", I),
    ("2\\ 3/4", "2.75", C),
    ("3 1/3", "\\frac{10}{3}", C),
    ("3 1/3", "\\frac{31}{3}", I),
    ("-1 1/2", "-1.5", C),
    # ---- sets of tuples with repeats --------------------------------------------------------------------------
    ("\\{(1,2),(1,2),(2,1)\\}", "\\{(1,2),(2,1)\\}", C),
    ("\\{(1,2),(2,1)\\}", "(2,1),(1,2),(2,1)", C),
    ("(1,2),(2,1),(2,1)", "(2,1),(1,2),(2,1)", C),
    ("(1,2),(2,1),(2,1)", "(2,1),(1,2),(1,2)", C),  # a list of solutions: naming one twice is no error
    ("(37,3,3,13),(17,3,3,7),(3,37,3,13),(3,17,3,7),(3,3,2,3)",
     "(3, 37, 3, 13), (3, 17, 3, 7), (3, 3, 2, 3), (3,17,3,7), (17,3,3,7), (37,3,3,13)", C),
    ("(1,2),(3,4)", "(1,2),(1,2)", I),
    ("1, 1, 2", "1, 2", I),  # plain values keep their multiplicity (double roots)
    ("\\{(\\sqrt2,1),(-\\sqrt2,1)\\}", "(-\\sqrt{2},1),(\\sqrt{2},1),(\\sqrt2,1)", C),
    ("\\{(\\sqrt2,1),(-\\sqrt2,1)\\}", "(\\sqrt{2},1)", I),
    # ---- `;` between a tuple's coordinates ---------------------------------------------------------------------
    ("(1;2)", "(1,2)", C),
    ("(1,2)", "(1;2)", C),
    ("(1;2)", "(2,1)", I),
    ("(1;2;3)", "(1,2,3)", C),
    ("(1;2;3)", "(1,2)", I),
    # ---- answers joined by "or" in any spelling ----------------------------------------------------------------
    ("2,3", "2\\text{or}3", C),
    ("2,3", "2 \\mbox{ or } 3", C),
    ("-1, 5", "x=-1 \\vee x=5", C),
    ("2,3", "2\\text{or}4", I),
    ("2 \\text{ or } 3", "2", I),
    ("(11,7)or(7,11)", "(7,11),\\ (11,7)", C),
    ("(11,7)or(7,11)", "(7,11)", I),
    # ---- nested radicals: reordered terms and denestings sympy cannot simplify are checked numerically -----------
    ("\\frac{\\sqrt{5+\\sqrt{21}}+\\sqrt{7-\\sqrt{13}}}{3+\\sqrt{11-\\sqrt{7}}}",
     "\\frac{\\sqrt{7-\\sqrt{13}}+\\sqrt{5+\\sqrt{21}}}{\\sqrt{11-\\sqrt{7}}+3}", C),
    ("\\frac{\\sqrt{5+\\sqrt{21}}+\\sqrt{7-\\sqrt{13}}}{3+\\sqrt{11-\\sqrt{7}}}",
     "\\frac{\\sqrt{7+\\sqrt{13}}+\\sqrt{5+\\sqrt{21}}}{\\sqrt{11-\\sqrt{7}}+3}", I),
    ("\\frac{\\sqrt{3+2\\sqrt2}}{\\sqrt{5-\\sqrt{21}}}", "\\frac{1+\\sqrt2}{\\sqrt{5-\\sqrt{21}}}", C),
    ("\\frac{\\sqrt{3+2\\sqrt2}}{\\sqrt{5-\\sqrt{21}}}", "\\frac{1+\\sqrt3}{\\sqrt{5-\\sqrt{21}}}", I),
    # ---- a gold answer ending in a stray backslash ------------------------------------------------------------
    ("5\\", "5", C),
    ("5\\", "6", I),
    ("\\frac{1}{2}\\", "0.5", C),
    ("\\frac{1}{2}\\", "\\frac{1}{3}", I),
    ("x+1\\\\", "1+x", C),
]


def _response(prediction: str) -> str:
    if prediction.startswith("RAW:"):
        return prediction[4:]
    return f"Let me work through this carefully.\n...\nso the answer is $\\boxed{{{prediction}}}$."


def _case_id(case) -> str:
    gold, prediction, expected = case
    return f"{str(gold)[:30]!s}|{prediction[:30]}|{expected.value}"


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(timeout=10.0, num_workers=2) as v:
        yield v


@pytest.fixture(scope="module")
def table_results(verifier):
    """All table cases in one batch, through the worker pool (the way the trainer calls the verifier)."""
    started = time.perf_counter()
    results = verifier.verify_batch([_response(p) for _, p, _ in CASES], [g for g, _, _ in CASES])
    return results, time.perf_counter() - started


def test_table_is_broad():
    assert len(CASES) >= 250


@pytest.mark.parametrize("index", range(len(CASES)), ids=[_case_id(c) for c in CASES])
def test_table(table_results, index):
    gold, prediction, expected = CASES[index]
    result = table_results[0][index]
    assert result.verdict is expected, (gold, prediction, result)
    assert result.reason


def test_table_in_process_agrees_with_pool(table_results):
    """`answers_equivalent` (in-process) agrees with the verifier on every case with a box and a gold."""
    for (gold, prediction, _), result in zip(CASES, table_results[0]):
        gold_answer, _ = extract_gold(gold)
        answer, _ = extract_answer(_response(prediction))
        if gold_answer is None or answer is None:
            continue
        assert answers_equivalent(gold_answer, answer).verdict is result.verdict, (gold, prediction)


# ---- extraction -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so $\\boxed{42}$.", "42"),
        ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\fbox{7}", "7"),
        ("\\boxed 5.", "5"),
        ("\\boxed {3}", "3"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("\\boxed{\\boxed{5}}", "5"),
        ("\\boxed{}", ""),
        ("no box here", None),
        ("\\boxed{12", None),
        ("\\boxedfoo{3}", None),
        ("", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "reference, expected",
    [
        ("72", ("72", "ok")),
        (72, ("72", "ok")),
        (2.0, ("2", "ok")),
        (0.25, ("0.25", "ok")),
        ("... so 3 + 4 = 7.\n#### 7", ("7", "ok")),
        ("Solution ... $\\boxed{1}$ ... finally $\\boxed{\\frac{3}{4}}$", ("\\frac{3}{4}", "ok")),
        (["$3$", "$5$"], ("$3$, $5$", "ok")),
        (None, (None, "empty_gold")),
        ("", (None, "empty_gold")),
        (float("nan"), (None, "empty_gold")),
        (True, (None, "empty_gold")),
        ("\\boxed{}", (None, "empty_gold")),
        (LONG_SOLUTION, (None, "gold_no_answer")),
    ],
)
def test_extract_gold(reference, expected):
    assert extract_gold(reference) == expected


def test_fallbacks_off_by_default_and_documented_for_evaluation():
    response = "Adding them up, the answer is 42."
    with MathVerifier(num_workers=1) as v:
        result = v.verify(response, "42")
        assert (result.verdict, result.reason) == (I, "no_box")
        assert v.stats["no_box"] == 1
    with MathVerifier(num_workers=1, fallbacks=("answer_is",)) as v:
        result = v.verify(response, "42")
        assert result.verdict is C and result.details["extraction"] == "answer_is"
    with MathVerifier(num_workers=1, fallbacks=("last_number",)) as v:
        assert v.verify("we get 40, then 41, and finally 42", "42").verdict is C
        assert v.verify("no numbers at all", "42").reason == "no_box"
    assert extract_answer("Final answer: $\\frac{1}{2}$", fallbacks=("answer_is",)) == ("\\frac{1}{2}", "answer_is")
    with pytest.raises(ValueError):
        MathVerifier(fallbacks=("guess",))


def test_box_beats_fallbacks():
    assert extract_answer("the answer is 3. \\boxed{4}", fallbacks=("answer_is", "last_number")) == ("4", "boxed")


# ---- fast path, stats, result type --------------------------------------------------------------------------------


def test_numeric_fast_path_never_spawns_or_imports_sympy():
    code = textwrap.dedent(
        """
        import sys
        import rasft_trl.verifiers
        from rasft_trl.verifiers.math import MathVerifier
        assert "sympy" not in sys.modules
        v = MathVerifier()
        preds = ["so $\\\\boxed{%d}$" % i for i in range(200)] + ["$\\\\boxed{\\\\frac{1}{2}}$", "\\\\boxed{1,000}"]
        golds = [str(i) for i in range(200)] + ["0.5", "1000"]
        results = v.verify_batch(preds, golds)
        assert all(r.correct for r in results), [r for r in results if not r.correct]
        assert v._pool is None, "numeric answers must not start the worker pool"
        assert v.stats["fast_path"] == 202 and v.stats["sympy"] == 0
        assert "sympy" not in sys.modules, "the fast path imported sympy"
        print("OK")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr


def test_stats_and_cache(verifier):
    verifier.reset_stats()
    responses = ["\\boxed{4}", "\\boxed{4}", "\\boxed{5}", "no box", "\\boxed{\\sqrt{16}}", "\\boxed{\\sqrt{16}}"]
    results = verifier.verify_batch(responses, ["4", "4", "4", "4", "4", None])
    assert [r.verdict for r in results] == [C, C, I, I, C, J]
    stats = verifier.stats
    assert stats["calls"] == 6 and stats["correct"] == 3 and stats["incorrect"] == 2 and stats["cannot_judge"] == 1
    assert stats["no_box"] == 1 and stats["cache_hits"] == 1 and stats["sympy"] == 1
    again = verifier.verify("\\boxed{\\sqrt{16}}", "4")
    assert again.verdict is C and verifier.stats["cache_hits"] == 2 and verifier.stats["sympy"] == 1


def test_result_type_and_reward_values(verifier):
    results = verifier.verify_batch(["\\boxed{\\frac{1}{2}}", "\\boxed{2}", "\\boxed{2}"], ["0.5", "\\frac12", ""])
    assert [r.reward for r in results] == [1.0, 0.0, None]
    assert results[0].parsed_prediction == "\\frac{1}{2}" and results[0].parsed_gold == "0.5"
    assert results[1].reason == "numeric_unequal"
    assert results[2].reason == "empty_gold"


def test_sympy_result_records_parsed_forms(verifier):
    result = verifier.verify("\\boxed{\\frac{\\sqrt2}{2}}", "\\frac{1}{\\sqrt{2}}")
    assert result.verdict is C and result.reason == "sympy_equal"
    assert result.details["stage"] == "sympy" and "sqrt(2)" in result.details["prediction_sympy"]


def test_trl_reward_function_form(verifier):
    completions = [[{"role": "assistant", "content": "so \\boxed{4}"}], [{"role": "assistant", "content": "5"}]]
    rewards = verifier(prompts=["p1", "p2"], completions=completions, answer=["4", "4"])
    assert rewards == [1.0, 0.0]
    assert verifier(prompts=["p"], completions=["\\boxed{1}"], answer=[None]) == [None]
    with pytest.raises(ValueError):
        verifier(prompts=["p"], completions=["\\boxed{1}"], solution=["1"])


def test_registry_and_defaults():
    v = get_verifier("math")
    assert isinstance(v, MathVerifier)
    assert v.num_workers == min(4, os.cpu_count() or 1) and v.rel_tol == 1e-6 and v.fallbacks == ()
    assert v.reference_column == "answer" and v.__name__ == "math"
    copy = pickle.loads(pickle.dumps(v))
    assert copy._pool is None and copy.verify("\\boxed{3}", "3").correct


def test_rel_tol_is_configurable():
    with MathVerifier(num_workers=1, rel_tol=1e-2) as loose:
        assert loose.verify("\\boxed{0.333}", "\\frac{1}{3}").verdict is C
    with MathVerifier(num_workers=1) as default:
        assert default.verify("\\boxed{0.333}", "\\frac{1}{3}").verdict is I
        assert default.verify("\\boxed{0.3333333333}", "\\frac{1}{3}").verdict is C


def test_mismatched_lengths_raise(verifier):
    with pytest.raises(ValueError):
        verifier.verify_batch(["\\boxed{1}"], ["1", "2"])


# ---- normalization and numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("$\\dfrac{1}{2}$", "\\frac{1}{2}"),
        ("\\left( 1, 2 \\right]", "( 1, 2 ]"),
        ("1{,}000", "1000"),
        ("1\\,000\\,000", "1000000"),
        ("12,345", "12345"),
        ("50\\%", "50"),
        ("30^{\\circ}", "30"),
        ("\\$5.00", "5.00"),
        ("5\\text{ cm}^2", "5"),
        ("\\text{Monday}", "Monday"),
        ("\\frac12", "\\frac{1}{2}"),
        ("\\sqrt2", "\\sqrt{2}"),
        ("2 \\text{ and } 3", "2, 3"),
        ("\\mathbb{R}", "(-\\infty,\\infty)"),
        ("x \\leq 3", "x \\le 3"),
    ],
)
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_parse_number_is_exact_and_bounded():
    assert parse_number("1.5e3").value == 1500
    assert parse_number("\\frac{3}{4}").value == parse_number("0.75").value
    assert parse_number("2\\frac{1}{2}").value == parse_number("2.5").value
    assert parse_number("10^{-3}").value * 1000 == 1
    assert parse_number("1/0") is None
    started = time.perf_counter()
    for huge in ("1e999999999", "10^{999999999}", "9^{99999999}", "1" * 5000):
        assert parse_number(huge) is None
    assert time.perf_counter() - started < 0.1


ADVERSARIAL = [
    "(" * 1000, "{" * 1000, "\\frac" * 200, "1," * 500, "\\text{" * 300, "x=" * 500, "\\sqrt" * 250,
    "[" + "1," * 400 + "]", "\\{" * 400, "2^" * 500, "\\left(" * 150, "a" * 1000, "1" * 1000, "\\pm" * 300,
]


@pytest.mark.parametrize("answer", ADVERSARIAL, ids=[a[:12] for a in ADVERSARIAL])
def test_fast_path_is_bounded_on_adversarial_answers(answer):
    """The in-process stage (extraction, normalization, structure, numbers) stays fast on junk."""
    started = time.perf_counter()
    answers_equivalent("5", answer, use_sympy=False)
    answers_equivalent(answer, "5", use_sympy=False)
    assert time.perf_counter() - started < 0.5


# ---- hostile answers: judged without sympy, in microseconds (issue 31) ------------------------------------------

HOSTILE = [
    "9^{9^{9^{9}}} - 1",  # a tower: an integer with about 10^{3.7 * 10^8} digits
    "10^{-10^{10}}",  # a tiny power
    "\\frac{1}{10^{10^{10}}}",  # a tiny reciprocal
    "(10^{10^{10}})!",  # a huge factorial
    "\\left(10^{6}\\right)! + 1",
    "\\lfloor 10^{10^{6}} \\pi \\rfloor",  # the floor of a huge multiple of pi: a million digits of pi
    "\\sin(10^{10^{10}})",
    "2^{2^{2^{2^{2^{2}}}}} + 1",
]


@pytest.mark.parametrize("answer", HOSTILE)
def test_hostile_answers_are_rejected_in_milliseconds_without_a_worker(answer):
    with MathVerifier(timeout=5.0, num_workers=1) as verifier:
        for response in (f"\\boxed{{{answer}}}", f"We computed carefully. The answer is $\\boxed{{{answer}}}$."):
            started = time.perf_counter()
            result = verifier.verify(response, "7")
            assert time.perf_counter() - started < 0.05
            assert (result.verdict, result.reason) == (I, "too_large")
        assert verifier.stats["timeouts"] == 0 and verifier.stats["sympy"] == 0 and verifier._pool is None
        gold = verifier.verify("\\boxed{7}", answer)  # the same shape as a gold answer cannot be judged
        assert (gold.verdict, gold.reason) == (J, "gold_too_large")
    started = time.perf_counter()
    assert answers_equivalent("7", answer).reason == "too_large"  # in-process too (no time bound there)
    assert time.perf_counter() - started < 0.05


@pytest.mark.parametrize("gold, prediction", [
    ("2^{2017}-1", "2^{2017}-1+0"), ("\\binom{100}{50}", "100891344545564193334812497256"), ("1000!", "1000!+0"),
    ("10^{100}", "10^{100}+0"), ("x^{10^{10}}", "x^{10000000000}"),
])
def test_large_but_reasonable_answers_still_reach_sympy(gold, prediction):
    from rasft_trl.verifiers.math import too_large

    assert too_large(gold, prediction, 10_000) is None


def test_exact_digits_estimates():
    from rasft_trl.verifiers.math_magnitude import exact_digits

    assert exact_digits("9^{9^{9^{9}}}") == float("inf")
    assert exact_digits("2^{2017}") == pytest.approx(2017 * 0.30103, rel=1e-3)
    assert exact_digits("10^{-10^{10}}") == pytest.approx(1e10)
    assert exact_digits("100000!") == pytest.approx(5e5)
    assert exact_digits("\\lfloor 10^{10^{6}} \\pi \\rfloor") == pytest.approx(1e6)
    assert exact_digits("x^{10^{10}} + y_{1}") < 100  # powers of symbols stay symbolic
    assert exact_digits("\\frac{1}{2}") < 5 and exact_digits("(1, 2)") < 5
    assert exact_digits("\\frac{") is None  # outside the grammar: no guard
