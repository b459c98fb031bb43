"""Math from untrusted text, without running it: a whitelist parser and size bounds.

Model answers, pool files and datasets are data. Nothing here hands text to ``eval``,
``exec``, ``sympify`` or ``parse_expr``: :func:`parse_plain` is a tokenizer and a
recursive-descent parser of its own that builds sympy objects directly
(``Integer``/``Rational``/``Symbol``/``Add``/``Mul``/``Pow`` with ``evaluate=False``),
and :func:`check_bounds` walks any sympy tree (ours, or one that math-verify's LaTeX
grammar built) and refuses it before anything is evaluated when it could be huge.

The plain grammar (precedence low to high)::

    expr    := term (("+" | "-") term)*
    term    := signed (("*" | "/" | \\cdot | \\times | \\div) signed | implicit)*
    signed  := ("+" | "-") signed | power
    power   := postfix ("^" | "**") signed          (right-associative: 2^3^2 = 2^9)
    postfix := atom "!"*
    atom    := number | name | "(" expr ")" | "{" expr "}" | function "(" expr ")"
             | \\frac{expr}{expr} | \\sqrt[expr]{expr} | \\pi | \\left( ... \\right)

Implicit multiplication covers ``2x``, ``3\\pi``, ``2(x+1)``, ``(x+1)(x-1)``, ``x y``.
Names: ``pi``, ``e`` (Euler's number), functions ``sqrt sin cos tan log ln exp``, and
runs of up to three letters read as single-letter symbols (``xy`` = x*y); a longer run
is prose and refused. Everything else (sets, intervals, ``=``, ``\\infty``, Greek
letters, ...) is refused with :class:`Refused`, so the caller can try math-verify's
LaTeX grammar instead.

Bounds (:class:`MathLimits`): input length, nesting depth, digits per literal, tree
size, and an upper bound on the decimal digits of every numeric subterm computed
bottom-up (``log10`` sizes: a product adds, a power multiplies by the exponent's
bound), so ``9^9^9``, ``2^(2^40)``, ``10^10^10``, ``(10^8)!`` are refused from their
shape, in microseconds, instead of being computed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import sympy

from .prose import looks_like_prose

__all__ = ["MathLimits", "Refused", "TooBig", "parse_plain", "check_bounds", "looks_like_prose", "prescreen"]


class Refused(ValueError):
    """The text is not in the accepted language (the message names what is wrong)."""


class TooBig(Refused):
    """The text is in the language but too large to evaluate safely."""


@dataclass(frozen=True)
class MathLimits:
    """Size bounds checked before anything is evaluated.

    ``max_result_digits`` bounds the decimal digits of any numeric subterm (e.g. a
    power ``b^n`` has about ``n * log10(b)`` digits); ``max_symbolic_exponent`` bounds an
    integer exponent on a symbolic base (``(x+1)^n`` expands to ``n + 1`` terms)."""

    max_chars: int = 1000
    max_depth: int = 40
    max_digits: int = 300
    max_nodes: int = 2000
    max_result_digits: int = 10_000
    max_symbolic_exponent: int = 1000
    max_factorial: int = 2000
    max_matrix_entries: int = 400


DEFAULT_LIMITS = MathLimits()

def prescreen(text: str, limits: MathLimits = DEFAULT_LIMITS) -> None:
    """Cheap bounds on raw text before any parser sees it: length, digits in one
    literal, bracket nesting. Raises :class:`TooBig` naming the bound."""
    if len(text) > limits.max_chars:
        raise TooBig(f"answer has {len(text)} characters (limit {limits.max_chars})")
    run = best = depth = deepest = 0
    for ch in text:
        if "0" <= ch <= "9":
            run += 1
            best = max(best, run)
        else:
            run = 0
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    if best > limits.max_digits:
        raise TooBig(f"a number with {best} digits (limit {limits.max_digits})")
    if deepest > limits.max_depth:
        raise TooBig(f"brackets nested {deepest} deep (limit {limits.max_depth})")


# -- tokenizer -------------------------------------------------------------------------
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\\[,;:!\ ]|\\quad|\\qquad)
  | (?P<num>\d+(?:\.\d*)?|\.\d+)
  | (?P<cmd>\\[A-Za-z]+)
  | (?P<name>[A-Za-z]+)
  | (?P<op>\*\*|[-+*/^()!{}\[\]])
    """,
    re.VERBOSE,
)
_UNICODE_OPS = {"\u2212": "-", "\u00d7": "*", "\u22c5": "*", "\u00b7": "*", "\u2013": "-"}

_FUNCS = {
    "sqrt": lambda a: sympy.Pow(a, sympy.Rational(1, 2), evaluate=False),
    "sin": lambda a: sympy.sin(a, evaluate=False),
    "cos": lambda a: sympy.cos(a, evaluate=False),
    "tan": lambda a: sympy.tan(a, evaluate=False),
    "log": lambda a: sympy.log(a, evaluate=False),
    "ln": lambda a: sympy.log(a, evaluate=False),
    "exp": lambda a: sympy.exp(a, evaluate=False),
}
_MUL_CMDS = {"\\cdot", "\\times"}
_SKIP_CMDS = {"\\left", "\\right", "\\displaystyle", "\\mathrm", "\\mathit"}


def _tokens(text: str) -> list[tuple[str, str]]:
    for u, a in _UNICODE_OPS.items():
        text = text.replace(u, a)
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise Refused(f"character {text[pos]!r} at {pos} is not part of a plain expression")
        kind = m.lastgroup or ""
        val = m.group(0)
        pos = m.end()
        if kind == "ws" or (kind == "cmd" and val in _SKIP_CMDS):
            continue
        if kind == "op" and val == "**":
            val = "^"
        if kind == "cmd":
            if val in ("\\dfrac", "\\tfrac"):
                val = "\\frac"
            if val in _MUL_CMDS:
                kind, val = "op", "*"
            elif val == "\\div":
                kind, val = "op", "/"
        out.append((kind, val))
    return out


# -- parser ----------------------------------------------------------------------------
_E = sympy.E
_PI = sympy.pi


class _Parser:
    def __init__(self, toks: list[tuple[str, str]], limits: MathLimits):
        self.toks = toks
        self.i = 0
        self.depth = 0
        self.limits = limits

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, val: str | None = None) -> tuple[str, str]:
        t = self.peek()
        if t is None:
            raise Refused(f"expression ends early (expected {val or 'more'})")
        if val is not None and t[1] != val:
            raise Refused(f"expected {val!r}, got {t[1]!r}")
        self.i += 1
        return t

    def nest(self) -> None:
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise TooBig(f"expression nested deeper than {self.limits.max_depth}")

    def parse(self) -> sympy.Basic:
        if not self.toks:
            raise Refused("empty expression")
        e = self.expr()
        if self.peek() is not None:
            raise Refused(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return e

    def expr(self) -> sympy.Basic:
        terms = [self.term()]
        while (t := self.peek()) is not None and t[1] in ("+", "-"):
            self.i += 1
            rhs = self.term()
            terms.append(rhs if t[1] == "+" else sympy.Mul(sympy.S.NegativeOne, rhs, evaluate=False))
        return terms[0] if len(terms) == 1 else sympy.Add(*terms, evaluate=False)

    def _starts_atom(self, t: tuple[str, str] | None) -> bool:
        if t is None:
            return False
        kind, val = t
        return kind in ("name", "cmd") or val in ("(", "{")

    def term(self) -> sympy.Basic:
        factors = [self.signed()]
        while True:
            t = self.peek()
            if t is not None and t[1] in ("*", "/"):
                self.i += 1
                rhs = self.signed()
                factors.append(rhs if t[1] == "*" else sympy.Pow(rhs, sympy.S.NegativeOne, evaluate=False))
            elif self._starts_atom(t):
                factors.append(self.power())
            else:
                break
        return factors[0] if len(factors) == 1 else sympy.Mul(*factors, evaluate=False)

    def signed(self) -> sympy.Basic:
        t = self.peek()
        if t is not None and t[1] in ("+", "-"):
            self.i += 1
            self.nest()
            inner = self.signed()
            self.depth -= 1
            return inner if t[1] == "+" else sympy.Mul(sympy.S.NegativeOne, inner, evaluate=False)
        return self.power()

    def power(self) -> sympy.Basic:
        base = self.postfix()
        t = self.peek()
        if t is not None and t[1] == "^":
            self.i += 1
            self.nest()
            exp = self.signed()
            self.depth -= 1
            return sympy.Pow(base, exp, evaluate=False)
        return base

    def postfix(self) -> sympy.Basic:
        a = self.atom()
        while (t := self.peek()) is not None and t[1] == "!":
            self.i += 1
            a = sympy.factorial(a, evaluate=False)
        return a

    def group(self) -> sympy.Basic:
        """A braced argument ``{expr}`` (LaTeX), or a parenthesised one."""
        t = self.peek()
        if t is None or t[1] not in ("{", "("):
            raise Refused("expected a braced argument")
        close = "}" if t[1] == "{" else ")"
        self.i += 1
        self.nest()
        e = self.expr()
        self.take(close)
        self.depth -= 1
        return e

    def atom(self) -> sympy.Basic:
        kind, val = self.take()
        if kind == "num":
            return self.number(val)
        if val in ("(", "{"):
            self.i -= 1
            return self.group()
        if kind == "cmd":
            return self.command(val)
        if kind == "name":
            return self.name(val)
        raise Refused(f"unexpected {val!r}")

    def number(self, s: str) -> sympy.Basic:
        digits = len(s) - ("." in s)
        if digits > self.limits.max_digits:
            raise TooBig(f"a number with {digits} digits (limit {self.limits.max_digits})")
        if "." in s:
            whole, frac = s.split(".")
            return sympy.Rational(int(whole or "0") * 10 ** len(frac) + int(frac or "0"), 10 ** len(frac))
        return sympy.Integer(int(s))

    def command(self, val: str) -> sympy.Basic:
        if val == "\\frac":
            num = self.group()
            den = self.group()
            return sympy.Mul(num, sympy.Pow(den, sympy.S.NegativeOne, evaluate=False), evaluate=False)
        if val == "\\sqrt":
            root: sympy.Basic | None = None
            t = self.peek()
            if t is not None and t[1] == "[":
                self.i += 1
                self.nest()
                root = self.expr()
                self.take("]")
                self.depth -= 1
            arg = self.group()
            if root is None:
                return sympy.Pow(arg, sympy.Rational(1, 2), evaluate=False)
            return sympy.Pow(arg, sympy.Pow(root, sympy.S.NegativeOne, evaluate=False), evaluate=False)
        if val == "\\pi":
            return _PI
        name = val[1:]
        if name in _FUNCS:
            return _FUNCS[name](self.group())
        raise Refused(f"LaTeX command {val} is not part of a plain expression")

    def name(self, val: str) -> sympy.Basic:
        if val in _FUNCS:
            return _FUNCS[val](self.group())
        if val == "pi":
            return _PI
        if len(val) > 3:
            raise Refused(f"word {val!r} is prose, not a plain expression")
        syms = [_E if ch == "e" else sympy.Symbol(ch, real=True) for ch in val]
        return syms[0] if len(syms) == 1 else sympy.Mul(*syms, evaluate=False)


def parse_plain(text: str, limits: MathLimits = DEFAULT_LIMITS) -> sympy.Basic:
    """Parse a plain or simple-LaTeX expression into an unevaluated sympy tree.

    Raises :class:`Refused` for text outside the grammar (naming the first offending
    token) and :class:`TooBig` for text over ``limits``; the result has also passed
    :func:`check_bounds`."""
    prescreen(text, limits)
    expr = _Parser(_tokens(text), limits).parse()
    check_bounds(expr, limits)
    return expr


# -- bounds ----------------------------------------------------------------------------
_LOG10_2 = math.log10(2)


def _int_digits(n: int) -> float:
    n = abs(n)
    if n < 2**53:
        return math.log10(n) if n > 1 else 0.0
    return n.bit_length() * _LOG10_2


_CONTAINERS: tuple[type, ...] = (
    sympy.Tuple, sympy.FiniteSet, sympy.Interval, sympy.Union, sympy.Intersection, sympy.Complement,
    sympy.ProductSet, sympy.core.relational.Relational, sympy.And, sympy.Or, sympy.Not,
    sympy.UnevaluatedExpr,
)
_ATOMS: tuple[type, ...] = (
    sympy.NumberSymbol, sympy.core.numbers.ImaginaryUnit, sympy.core.numbers.Infinity,
    sympy.core.numbers.NegativeInfinity, sympy.core.numbers.ComplexInfinity, sympy.core.numbers.NaN,
    sympy.sets.sets.EmptySet, sympy.sets.fancysets.Reals, sympy.sets.fancysets.Integers,
    sympy.sets.fancysets.Naturals, sympy.sets.fancysets.Naturals0, sympy.sets.fancysets.Rationals,
    sympy.sets.fancysets.Complexes, sympy.logic.boolalg.BooleanAtom,
)
_PLAIN_FUNCS: tuple[type, ...] = (
    sympy.functions.elementary.trigonometric.TrigonometricFunction,
    sympy.functions.elementary.trigonometric.InverseTrigonometricFunction,
    sympy.functions.elementary.hyperbolic.HyperbolicFunction,
    sympy.log, sympy.Abs, sympy.sign, sympy.floor, sympy.ceiling, sympy.re, sympy.im, sympy.arg,
    sympy.conjugate, sympy.Min, sympy.Max, sympy.core.function.AppliedUndef,
)


def check_bounds(expr: Any, limits: MathLimits = DEFAULT_LIMITS) -> None:
    """Refuse (:class:`TooBig`/:class:`Refused`) a sympy tree that is too deep, too
    large, holds an unsupported construct (integrals, sums, limits, ...), or whose
    numeric subterms could exceed ``limits.max_result_digits`` digits. Nothing in the
    tree is evaluated: sizes are bounded from its shape."""
    count = [0]
    _digits(expr, limits, 0, count)


def _digits(e: Any, lim: MathLimits, depth: int, count: list[int]) -> float:
    """Upper bound on log10 of the size of ``e`` (symbols count as size 10)."""
    count[0] += 1
    if count[0] > lim.max_nodes:
        raise TooBig(f"expression has more than {lim.max_nodes} parts")
    if depth > lim.max_depth:
        raise TooBig(f"expression nested deeper than {lim.max_depth}")
    leaf = _leaf_digits(e, lim)
    if leaf is not None:
        return leaf
    return _compound_digits(e, lim, depth + 1, count)


def _leaf_digits(e: Any, lim: MathLimits) -> float | None:
    """The bound for a number, symbol or constant; None for anything with parts."""
    if isinstance(e, sympy.Integer):
        n = _int_digits(int(e))
        if n > lim.max_digits:
            raise TooBig(f"an integer of about {n:.0f} digits (limit {lim.max_digits})")
        return n
    if isinstance(e, sympy.Rational):
        n = max(_int_digits(int(e.p)), _int_digits(int(e.q)))
        if n > lim.max_digits:
            raise TooBig(f"a fraction of about {n:.0f} digits (limit {lim.max_digits})")
        return n
    if isinstance(e, sympy.Float):
        m = e._mpf_  # (sign, mantissa, exponent, bitcount)
        return abs(m[2] + m[3]) * _LOG10_2 if m[1] else 0.0
    if isinstance(e, (sympy.Symbol, sympy.MatrixSymbol) + _ATOMS):
        return 1.0
    return None


def _compound_digits(e: Any, lim: MathLimits, d: int, count: list[int]) -> float:
    """The bound for an expression with parts, from the bounds of its parts."""
    if isinstance(e, sympy.MatrixBase):
        if e.rows * e.cols > lim.max_matrix_entries:
            raise TooBig(f"matrix of {e.rows}x{e.cols} (limit {lim.max_matrix_entries} entries)")
        return max((_digits(x, lim, d, count) for x in e), default=0.0)
    if isinstance(e, sympy.Add):
        return max(_digits(a, lim, d, count) for a in e.args) + math.log10(len(e.args))
    if isinstance(e, sympy.Mul):
        return _checked(sum(_digits(a, lim, d, count) for a in e.args), lim)
    if isinstance(e, sympy.Pow):
        return _pow_digits(_digits(e.base, lim, d, count), e.base, e.exp, lim, d, count)
    if isinstance(e, sympy.exp):
        return _pow_digits(1.0, sympy.E, e.args[0], lim, d, count)
    if isinstance(e, (sympy.factorial, sympy.gamma)):
        return _factorial_digits(e.args[0], lim, d, count, type(e).__name__)
    if isinstance(e, sympy.binomial):
        top = _factorial_digits(e.args[0], lim, d, count, "binomial")
        _digits(e.args[1], lim, d, count)
        return top
    if isinstance(e, _PLAIN_FUNCS + _CONTAINERS) or isinstance(e, sympy.sets.sets.Set):
        if isinstance(e, sympy.sets.sets.Set) and not isinstance(e, _CONTAINERS + _ATOMS):
            raise Refused(f"unsupported set construct {type(e).__name__}")
        return max((_digits(a, lim, d, count) for a in e.args), default=1.0)
    raise Refused(f"unsupported construct {type(e).__name__}")


def _checked(n: float, lim: MathLimits) -> float:
    if n > lim.max_result_digits:
        raise TooBig(f"a value of about {n:.3g} digits (limit {lim.max_result_digits})")
    return n


def _is_numeric(e: Any) -> bool:
    return not getattr(e, "free_symbols", set())


def _pow_digits(base_digits: float, base: Any, exp: Any, lim: MathLimits, d: int, count: list[int]) -> float:
    exp_digits = _digits(exp, lim, d, count)
    if not _is_numeric(exp):
        return _checked(base_digits * 10.0, lim)
    if exp_digits > 7:
        raise TooBig(f"an exponent of about {exp_digits:.3g} digits")
    bound = 10.0**exp_digits  # |exponent| <= bound
    if not _is_numeric(base) and bound > lim.max_symbolic_exponent:
        raise TooBig(f"a symbolic power with exponent up to {bound:.3g} (limit {lim.max_symbolic_exponent})")
    if base_digits <= 0:  # 0, 1, -1: every power stays small
        return 1.0
    return _checked(max(base_digits, _LOG10_2) * bound, lim)


def _factorial_digits(arg: Any, lim: MathLimits, d: int, count: list[int], what: str) -> float:
    n_digits = _digits(arg, lim, d, count)
    if not _is_numeric(arg):
        return _checked(n_digits * 10.0, lim)
    bound = 10.0**n_digits
    if bound > lim.max_factorial:
        raise TooBig(f"{what} of a number up to {bound:.3g} (limit {lim.max_factorial})")
    return _checked(bound * math.log10(max(bound, 2.0)), lim)
