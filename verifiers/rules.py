"""Rule verifiers: checks that need no model.

:class:`ArithmeticCheck` re-computes every arithmetic equation the model wrote
("12 + 7 = 19", "3*4=12") and checks that the final answer agrees with the last
one. It catches the most common failure of small models on arithmetic: a stated
result that does not follow from the stated operands.
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass
from typing import Sequence

from ttc.answers import normalize, to_number
from ttc.checks import check_number
from ttc.context import RunContext
from ttc.types import Prompt, Sample

from .base import OutcomeVerifier

# An equation "lhs = rhs": numbers joined by + - * / x × ÷, optionally in parentheses. A sign
# counts only right before its number ("- 5 + 3 = 8" is the list item "5 + 3 = 8").
# Every quantifier is possessive (Python >= 3.11), so a match attempt never re-splits the
# whitespace between terms: the earlier pattern, with "\s*" on both sides of each operator,
# backtracked exponentially on a chain of terms with no "=" ("1 + 1 + ... + 1" of 14
# terms took 80 s, blocking the event loop of every search that scored such a step).
_NUM = r"\d++(?:,\d{3})*+(?:\.\d++)?"  # 12,000 groups thousands; "20, then" ends at 20
_TERM = rf"(?:\(\s*+)?[-+]?+{_NUM}(?:\s*+\))?"
_EQ = re.compile(
    rf"(?P<lhs>[-+]?+(?:\(\s*+)?{_NUM}(?:\s*+[-+*/x×÷]\s*+{_TERM})++)\s*+=\s*+(?P<rhs>[-+]?{_NUM})"
)
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _eval(expr: str) -> float | None:
    expr = expr.replace(",", "").replace("×", "*").replace("x", "*").replace("÷", "/").strip()
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        return None

    def ev(n: ast.AST) -> float:
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return float(n.value)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            v = ev(n.operand)
            return -v if isinstance(n.op, ast.USub) else v
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](ev(n.left), ev(n.right))
        raise ValueError("unsupported")

    try:
        return ev(node)
    except (ValueError, ZeroDivisionError):
        return None


@dataclass(frozen=True)
class Equation:
    """One equation as written: the numbers on its left side, their value, its result."""

    operands: tuple[float, ...]
    value: float
    result: float
    correct: bool


def equations(text: str, tol: float = 1e-6) -> list[Equation]:
    """The arithmetic equations written in ``text``, in order (unparseable ones skipped)."""
    out = []
    for m in _EQ.finditer(text):
        lhs = _eval(m.group("lhs"))
        rhs = to_number(m.group("rhs"))
        if lhs is None or rhs is None:
            continue
        operands = tuple(float(x.replace(",", "")) for x in re.findall(_NUM, m.group("lhs")))
        out.append(Equation(operands, lhs, rhs, abs(lhs - rhs) <= tol * max(1.0, abs(lhs))))
    return out


def check_equations(text: str, tol: float = 1e-6) -> tuple[int, int, float | None]:
    """(equations found, equations correct, value of the last correct one's rhs)."""
    eqs = equations(text, tol)
    right = [e.result for e in eqs if e.correct]
    return len(eqs), len(right), (right[-1] if right else None)


def answer_is_value(answer: str | None, value: float | None, tol: float = 1e-6) -> bool:
    """The answer is a number equal to ``value`` (e.g. the last right equation's result)."""
    a = to_number(normalize(answer) or "") if answer is not None else None
    return value is not None and a is not None and abs(a - value) <= tol * max(1.0, abs(value))


_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "twice": 2, "double": 2, "doubles": 2, "doubled": 2,
    "triple": 3, "triples": 3, "tripled": 3, "thrice": 3, "half": 2, "halves": 2, "dozen": 12,
}
_WORD = re.compile(r"[a-z]+")


def numerals_in(text: str) -> set[float]:
    """The numbers a text writes as numerals ("12,000" -> 12000.0)."""
    return {float(x.replace(",", "")) for x in re.findall(_NUM, text)}


def numbers_in(text: str) -> set[float]:
    """The numbers a text states: numerals, and number words ("three", "doubles" -> 2)."""
    found = numerals_in(text)
    found.update(float(_NUMBER_WORDS[w]) for w in _WORD.findall(text.lower()) if w in _NUMBER_WORDS)
    return found


class ArithmeticCheck(OutcomeVerifier):
    """Score = fraction of the sample's equations that are right, times 1 if the
    final answer equals the last right equation's result (else ``mismatch``).

    A sample with no equation scores ``no_equation`` (default 0.5: unknown).
    """

    name = "arithmetic_check"

    def __init__(self, no_equation: float = 0.5, mismatch: float = 0.5):
        self.no_equation = check_number("no_equation", no_equation, lo=0, hi=1)
        self.mismatch = check_number("mismatch", mismatch, lo=0, hi=1)

    def score_text(self, text: str, answer: str | None) -> float:
        found, correct, last = check_equations(text)
        if found == 0:
            return self.no_equation
        s = correct / found
        return s if answer_is_value(answer, last) else s * self.mismatch

    async def score(self, ctx: RunContext, prompt: Prompt, samples: Sequence[Sample]) -> list[float]:
        return [self.score_text(s.text, s.answer) for s in samples]
