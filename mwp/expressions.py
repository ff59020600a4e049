"""A safe, exact evaluator for arithmetic expressions and the Ape210K normalisation rules.

`safe_eval` parses with a hand-written tokenizer and a precedence-climbing parser over a whitelist
(ASCII decimal numbers, `+ - * / **`, unary minus/plus, parentheses) and computes with
`fractions.Fraction`. Nothing is ever passed to `eval`/`exec`/`compile`. Work is bounded: the input
length, the nesting depth (checked before every recursive call), the digits per number, the exponent
and the bit length of every intermediate numerator/denominator are capped, so every input either
returns or raises `ExpressionError` in well under a second (`9**9**9` fails at the exponent check).

Grammar (Python's precedence, `**` right-associative and binding tighter than a unary minus on its
left: `-2**2 == -4`, `2**-1 == 1/2`):

    expr  := term (("+" | "-") term)*
    term  := unary (("*" | "/") unary)*
    unary := ("+" | "-") unary | power
    power := atom ("**" unary)?
    atom  := NUMBER | "(" expr ")"

The literal rule (NUMBER): ASCII digits with an optional decimal point and fraction part, i.e. Python's
decimal literals without an exponent: `3`, `3.5`, `3.` and `.5` are accepted, and an integer with
leading zeros is rejected as Python rejects it (`05`; `0`, `00`, `05.5` are valid Python and accepted).
Rejected with an `ExpressionError` (reason "literal") that names the whole offending token: leading
zeros (`05`), exponents (`1e5`), other bases (`0x10`), underscores (`1_000`), non-ASCII digits (`٣`),
other suffixes (`1j`) and malformed numbers (`1.2.3`).  The baseline evaluates with Python's `eval`,
which would accept exponents, other bases and underscores; they never occur in word problems and are
refused for safety.  Everything that is not a number, an operator or a bracket (names, other
characters) is rejected too, and the error names that token.

Reference: the normalisation follows the Ape210K baseline of kexue.fm (2020-10-19); the rules are in
mwp/README.md, "Sources and published numbers".
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from numbers import Rational, Real
from typing import Any

MAX_LENGTH = 1_000  # characters of one expression
MAX_DEPTH = 64  # nested brackets / unary signs
MAX_NUMBER_DIGITS = 40  # characters in one numeric literal
MAX_BITS = 4_096  # bit length of any numerator / denominator
MAX_EXPONENT = 4_096  # |integer exponent|

_OPERATORS = ("**", "+", "-", "*", "/", "(", ")")


class ExpressionError(ValueError):
    """An expression that is not a valid, bounded arithmetic expression (or a problem that fails a rule).

    `reason` is a short code used to count dropped problems (e.g. "syntax", "too_long", "answer_mismatch").
    """

    def __init__(self, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.reason = reason


_LITERAL = re.compile(r"[1-9][0-9]*|0+|[0-9]+\.[0-9]*|\.[0-9]+")  # the accepted forms (ASCII)
_RUN = re.compile(r"[\w.]+")  # a maximal run of (Unicode) word characters and dots: one token to name


def _match_run(expr: str, i: int) -> re.Match[str]:
    """The `_RUN` starting at `i`, where the caller has seen a word character or a dot."""
    m = _RUN.match(expr, i)
    assert m is not None, (expr, i)
    return m


def _literal_error(run: str, position: int) -> ExpressionError:
    """The ExpressionError for a number-like token `run` that breaks the literal rule."""
    if not run.isascii():
        why = "has non-ASCII digits" if any(c.isdigit() and not c.isascii() for c in run) else \
            "has non-ASCII characters"
    elif "_" in run:
        why = "has underscores"
    elif re.match(r"0[xXoObB]", run):
        why = "is in another base"
    elif re.search(r"[0-9.][eE][+-]?[0-9]", run):
        why = "has an exponent"
    elif re.fullmatch(r"0+[0-9]+", run):
        why = "is an integer with leading zeros"
    else:
        why = "is not a decimal number"
    return ExpressionError(f"number {run!r} at position {position} {why} (the literal rule: ASCII digits with an "
                           "optional '.' and fraction part, e.g. 3, 3.5, 3., .5)", "literal")


def _tokenize(expr: str) -> list[tuple[str, Any, str, int]]:
    """Splits `expr` into (kind, value, text, position) tokens, kind "num" (value a Fraction) or "op" (value
    the operator); whitespace is skipped."""
    tokens: list[tuple[str, Any, str, int]] = []
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c in " \t":
            i += 1
        elif c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            j = _match_run(expr, i).end()
            if j < n and expr[j] in "+-" and expr[j - 1] in "eE":  # name all of "1e-5", not "1e"
                j = m.end() if (m := _RUN.match(expr, j + 1)) else j + 1
            literal = expr[i:j]
            if len(literal) > MAX_NUMBER_DIGITS:
                raise ExpressionError(f"number {literal[:20]}... has more than {MAX_NUMBER_DIGITS} "
                                      "characters", "too_large")
            if not _LITERAL.fullmatch(literal):
                raise _literal_error(literal, i)
            tokens.append(("num", Fraction(literal), literal, i))
            i = j
        elif expr.startswith("**", i):
            tokens.append(("op", "**", "**", i))
            i += 2
        elif c in "+-*/()":
            tokens.append(("op", c, c, i))
            i += 1
        elif c.isalpha() or c == "_":
            name = _match_run(expr, i).group()
            raise ExpressionError(f"name {name[:20]!r} at position {i} is not allowed (only numbers, "
                                  "+ - * / ** and parentheses)", "syntax")
        else:
            raise ExpressionError(f"character {c!r} at position {i} is not allowed (only numbers, "
                                  "+ - * / ** and parentheses)", "syntax")
    return tokens


def _check_size(value: Fraction) -> Fraction:
    if value.numerator.bit_length() > MAX_BITS or value.denominator.bit_length() > MAX_BITS:
        raise ExpressionError(f"intermediate result exceeds {MAX_BITS} bits", "too_large")
    return value


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    """base ** exponent: exact for integer exponents (bounded), float for the others."""
    if exponent.denominator == 1:
        e = exponent.numerator
        if base == 0:
            if e < 0:
                raise ExpressionError("zero raised to a negative power", "zero_division")
            return Fraction(1) if e == 0 else Fraction(0)
        if base in (1, -1):
            return base ** (e % 2) if base == -1 else Fraction(1)
        if abs(e) > MAX_EXPONENT:
            raise ExpressionError(f"exponent {e} exceeds {MAX_EXPONENT} in magnitude", "too_large")
        bits = max(base.numerator.bit_length(), base.denominator.bit_length())
        if bits * abs(e) > MAX_BITS + 64:
            raise ExpressionError(f"power result would exceed {MAX_BITS} bits", "too_large")
        return _check_size(base ** e)
    if base < 0:
        raise ExpressionError("negative base with a non-integer exponent", "domain")
    if base == 0:
        if exponent < 0:
            raise ExpressionError("zero raised to a negative power", "zero_division")
        return Fraction(0)
    try:
        log_result = float(exponent) * math.log(float(base))
        if abs(log_result) > 700:
            raise OverflowError
        result = float(base) ** float(exponent)
    except (OverflowError, ValueError) as e:
        raise ExpressionError("non-integer power overflows a float", "too_large") from e
    return _check_size(Fraction(result))


class _Parser:
    def __init__(self, tokens: list[tuple[str, Any, str, int]]):
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def peek(self) -> str | None:
        if self.pos < len(self.tokens) and self.tokens[self.pos][0] == "op":
            return self.tokens[self.pos][1]
        return None

    def descend(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"nesting deeper than {MAX_DEPTH}", "too_deep")

    def expr(self) -> Fraction:
        value = self.term()
        while (op := self.peek()) in ("+", "-"):
            self.pos += 1
            rhs = self.term()
            value = _check_size(value + rhs if op == "+" else value - rhs)
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while (op := self.peek()) in ("*", "/"):
            self.pos += 1
            rhs = self.unary()
            if op == "*":
                value = _check_size(value * rhs)
            elif rhs == 0:
                raise ExpressionError("division by zero", "zero_division")
            else:
                value = _check_size(value / rhs)
        return value

    def unary(self) -> Fraction:
        op = self.peek()
        if op in ("+", "-"):
            self.pos += 1
            self.descend()
            value = self.unary()
            self.depth -= 1
            return -value if op == "-" else value
        return self.power()

    def power(self) -> Fraction:
        base = self.atom()
        if self.peek() == "**":
            self.pos += 1
            self.descend()
            exponent = self.unary()
            self.depth -= 1
            return _power(base, exponent)
        return base

    def atom(self) -> Fraction:
        if self.pos >= len(self.tokens):
            raise ExpressionError("unexpected end of expression", "syntax")
        kind, value, text, position = self.tokens[self.pos]
        if kind == "num":
            self.pos += 1
            return value
        if value == "(":
            self.pos += 1
            self.descend()
            inner = self.expr()
            self.depth -= 1
            if self.peek() != ")":
                raise ExpressionError(f"missing ')' for the '(' at position {position}", "syntax")
            self.pos += 1
            return inner
        raise ExpressionError(f"unexpected {text!r} at position {position}", "syntax")


def safe_eval(expr: str) -> Fraction:
    """Evaluates an arithmetic expression exactly.

    Args:
      expr: a string over ASCII digits, '.', `+ - * / **`, parentheses and spaces, e.g. "6000/(1+3/5)".
    Returns:
      the value as a `Fraction` (a non-integer exponent is computed in float and converted exactly).
    Raises:
      ExpressionError (a ValueError) for anything else: literals that break the literal rule (module
      docstring), other characters or names, syntax errors, division by zero, or inputs exceeding the
      caps (length, depth, digits, exponent, result bits); the message names the offending token.
    """
    if not isinstance(expr, str):
        raise ExpressionError(f"expr must be a str, got {type(expr).__name__}", "syntax")
    if len(expr) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters ({len(expr)})", "too_long")
    tokens = _tokenize(expr)
    if not tokens:
        raise ExpressionError("empty expression", "syntax")
    parser = _Parser(tokens)
    value = parser.expr()
    if parser.pos != len(tokens):
        raise ExpressionError(f"unexpected {tokens[parser.pos][2]!r} at position {tokens[parser.pos][3]}", "syntax")
    return value


def _to_fraction(value: Any) -> Fraction:
    if isinstance(value, bool):
        raise ExpressionError("a bool is not a number", "syntax")
    if isinstance(value, str):
        return safe_eval(value)
    if isinstance(value, Rational):
        return Fraction(value)
    if isinstance(value, Real):
        if not math.isfinite(float(value)):
            raise ExpressionError(f"non-finite number {value}", "domain")
        return Fraction(float(value))
    raise ExpressionError(f"cannot compare a {type(value).__name__}", "syntax")


def answers_equal(a: Any, b: Any, decimals: int = 6) -> bool:
    """Whether two answers agree after rounding to `decimals` decimals (the baseline's rule).

    Args:
      a, b: numbers, Fractions or expression strings (strings go through `safe_eval`).
    Returns:
      True iff round(a, 6) == round(b, 6) in float (exactly equal values always compare equal);
      False when either side fails to evaluate (an invalid prediction is wrong, never an error).
    """
    try:
        x, y = _to_fraction(a), _to_fraction(b)
    except ExpressionError:
        return False
    if x == y:
        return True
    try:
        return round(float(x), decimals) == round(float(y), decimals)
    except OverflowError:
        return False


def remove_redundant_brackets(expr: str) -> str:
    """Drops every pair of brackets whose removal leaves the value unchanged to 6 decimals (the baseline).

    Pairs are tried in the order their ')' appears (inner pairs first); a removal is kept when the
    expression still parses and `answers_equal` (rounded to 6 decimals) holds between its value and the
    original expression's value, as the baseline's `is_equal` does. Spaces are removed.
    Example: "(1+2)+(3*4)" -> "1+2+3*4"; "(1+2)*3" stays; "5-(2-0.0000001)" -> "5-2-0.0000001" (3.0000001
    and 2.9999999 agree to 6 decimals).
    Raises ExpressionError if `expr` does not evaluate or its brackets are unbalanced.
    """
    target = safe_eval(expr)
    chars = list(expr.replace(" ", ""))
    stack, pairs = [], []
    for i, c in enumerate(chars):
        if c == "(":
            stack.append(i)
        elif c == ")":
            if not stack:
                raise ExpressionError(f"unbalanced ')' at position {i}", "syntax")
            pairs.append((stack.pop(), i))
    if stack:
        raise ExpressionError(f"unbalanced '(' at position {stack[-1]}", "syntax")
    for left, right in pairs:
        trial = chars.copy()
        trial[left] = trial[right] = " "  # keeps the positions of the other pairs valid
        try:
            if answers_equal(safe_eval("".join(trial)), target):
                chars = trial
        except ExpressionError:
            pass
    return "".join(chars).replace(" ", "")


_MIXED = re.compile(r"([0-9]+)\(([0-9]+/[0-9]+)\)")
_DIGIT_BRACKET = re.compile(r"([0-9])\(")
_FRACTION = re.compile(r"\(([0-9]+/[0-9]+)\)")
_PERCENT = re.compile(r"([0-9.]+)%")


def normalize_problem(record: dict) -> dict:
    """Applies the Ape210K rules (mwp/README.md, "Sources and published numbers") to one record, in order.

    1. mixed number a(b/c) -> (a+b/c) in question, equation and answer;
    2. any other digit directly before "(" gets "+" (equation and answer);
    3. (a/b) -> a/b in the question only;
    4. n% -> (n/100) in equation and answer; a remaining "%" (after a bracket, as in "(33+1/3)%")
       -> "/100" in both;
    5. ":" -> "/" in equation and answer;
    6. strip a leading "x=";
    7. keep the problem only if the equation evaluates to the answer (6-decimal rule);
    8. drop redundant brackets from the equation (`remove_redundant_brackets`, 6-decimal rule).

    Args:
      record: a dict with `original_text`, `equation`, `ans` (and optionally `id`, `segmented_text`).
    Returns:
      {"id", "question", "segmented_text", "equation", "answer", "value"} with `value` the Fraction of
      the equation.
    Raises:
      ExpressionError with `reason` in {"missing_field", "equation_invalid", "answer_invalid",
      "answer_mismatch"} when the problem is dropped.
    """
    for field in ("original_text", "equation", "ans"):
        if not isinstance(record.get(field), str):
            raise ExpressionError(f"record field {field!r} missing or not a string", "missing_field")
    question, equation, answer = record["original_text"], record["equation"], record["ans"]
    question = _MIXED.sub(r"(\1+\2)", question)
    equation = _MIXED.sub(r"(\1+\2)", equation)
    answer = _MIXED.sub(r"(\1+\2)", answer)
    equation = _DIGIT_BRACKET.sub(r"\1+(", equation)
    answer = _DIGIT_BRACKET.sub(r"\1+(", answer)
    question = _FRACTION.sub(r"\1", question)
    equation = _PERCENT.sub(r"(\1/100)", equation).replace("%", "/100")
    answer = _PERCENT.sub(r"(\1/100)", answer).replace("%", "/100")
    equation = equation.replace(":", "/")
    answer = answer.replace(":", "/")
    equation = equation.strip()
    if equation.startswith("x="):
        equation = equation[2:]
    try:
        value = safe_eval(equation)
    except ExpressionError as e:
        raise ExpressionError(f"equation {record['equation']!r}: {e}", "equation_invalid") from e
    try:
        answer_value = safe_eval(answer)
    except ExpressionError as e:
        raise ExpressionError(f"answer {record['ans']!r}: {e}", "answer_invalid") from e
    if not answers_equal(value, answer_value):
        raise ExpressionError(f"equation {record['equation']!r} = {float(value):.6g} does not equal "
                              f"answer {record['ans']!r}", "answer_mismatch")
    return {"id": record.get("id"), "question": question, "segmented_text": record.get("segmented_text"),
            "equation": remove_redundant_brackets(equation), "answer": answer, "value": value}
