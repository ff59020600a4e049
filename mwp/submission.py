"""Answer formatting for the Ape210K competition submission, as the baseline's prediction script does it.

The baseline (bert4keras `task_seq2seq_ape210k_math_word_problem.py`, `predict`) evaluates the predicted
expression in one of two ways and formats the result by the question's wording:

- **Decimal** (the expression contains "."; Python floats): times 100 if the question asks for a
  percentage ("百分之几"); rounded to 2 decimals, an integral value written as an integer; if the
  question counts things ("多少" or "几" followed by 辆 人 个 只 箱 包 本 束 头 盒 张) the value is
  rounded up ("至少"/"最少" or no hint) or down ("至多"/"最多"); "%" appended for a percentage.
- **Exact** (no "."; every integer a sympy `Integer`, so division is exact): an integer as is; a
  fraction a/b stays a fraction when the question contains one, written as the mixed number
  "q_r/b" when a > b; without a fraction in the question it is rounded as counts are (up unless
  "至多"/"最多"), whatever the question asks for.

The competition's questions write mixed numbers as "1_1/2"; the baseline rewrites them to "(1+1/2)"
before decoding, which leaves these rules unchanged (both forms contain "1/2").
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from numbers import Rational, Real

from mwp.expressions import ExpressionError, safe_eval

_PERCENT_QUESTION = "百分之几"
_COUNTABLE = re.compile(r"(?:多少|几)[辆人个只箱包本束头盒张]")
_AT_LEAST = re.compile(r"至少|最少")
_AT_MOST = re.compile(r"至多|最多")
_FRACTION = re.compile(r"[0-9]+/[0-9]+")


def _round_count(value: float | Fraction, question: str) -> int:
    """Down when the question says "at most" (至多/最多) and not "at least" (至少/最少), else up."""
    return math.floor(value) if _AT_MOST.search(question) and not _AT_LEAST.search(question) else math.ceil(value)


def format_answer(value: str | Real, question: str = "") -> str:
    """The answer string the baseline submits for a predicted expression (or value) and its question.

    Args:
      value: the predicted expression (numbers filled in, e.g. "3.14*2**2" or "7/2"), evaluated with
        `safe_eval`, decimal rules iff it contains "."; or a number: int / Fraction take the exact
        rules, float the decimal rules.
      question: the problem text; only its wording is read (see the module docstring).
    Returns:
      e.g. "12.57", "25%", "4", "3_1/2", "7/2".
    Raises:
      ExpressionError: `value` is not a valid expression (the baseline then submits a random integer
        in 1..21; the choice is left to the caller).
    """
    if isinstance(value, str):
        decimal, number = "." in value, safe_eval(value)
    elif isinstance(value, bool) or not isinstance(value, Real):
        raise ExpressionError(f"value must be an expression string or a number, got {type(value).__name__}",
                              "syntax")
    else:
        decimal, number = not isinstance(value, Rational), value  # type: ignore[assignment]  # int, Fraction or float
    if decimal:
        x = float(number)
        if not math.isfinite(x):
            raise ExpressionError(f"value {x} is not finite", "domain")
        if _PERCENT_QUESTION in question:
            x *= 100
        x = round(x, 2)
        answer: float | int = int(x) if x == int(x) else x
        if _COUNTABLE.search(question):
            answer = _round_count(answer, question)
        return f"{answer}%" if _PERCENT_QUESTION in question else str(answer)
    q = Fraction(number)
    if q.denominator == 1:
        return str(q.numerator)
    if _FRACTION.search(question):
        a, b = q.numerator, q.denominator
        return f"{a // b}_{a % b}/{b}" if a > b else f"{a}/{b}"
    return str(_round_count(q, question))
