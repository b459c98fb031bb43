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
from typing import Sequence

from ttc.answers import normalize, to_number
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


def check_equations(text: str, tol: float = 1e-6) -> tuple[int, int, float | None]:
    """(equations found, equations correct, value of the last correct one's rhs)."""
    found = correct = 0
    last: float | None = None
    for m in _EQ.finditer(text):
        lhs = _eval(m.group("lhs"))
        rhs = to_number(m.group("rhs"))
        if lhs is None or rhs is None:
            continue
        found += 1
        if abs(lhs - rhs) <= tol * max(1.0, abs(lhs)):
            correct += 1
            last = rhs
    return found, correct, last


class ArithmeticCheck(OutcomeVerifier):
    """Score = fraction of the sample's equations that are right, times 1 if the
    final answer equals the last right equation's result (else ``mismatch``).

    A sample with no equation scores ``no_equation`` (default 0.5: unknown).
    """

    name = "arithmetic_check"

    def __init__(self, no_equation: float = 0.5, mismatch: float = 0.5):
        self.no_equation = no_equation
        self.mismatch = mismatch

    def score_text(self, text: str, answer: str | None) -> float:
        found, correct, last = check_equations(text)
        if found == 0:
            return self.no_equation
        s = correct / found
        a = to_number(normalize(answer) or "") if answer is not None else None
        if last is None or a is None or abs(a - last) > 1e-6 * max(1.0, abs(last)):
            s *= self.mismatch
        return s

    async def score(self, ctx: RunContext, prompt: Prompt, samples: Sequence[Sample]) -> list[float]:
        return [self.score_text(s.text, s.answer) for s in samples]
