"""Answers: extraction from free text, normalisation, equivalence, and grouping.

Extractors return ``None`` when nothing parseable is found: an unparseable answer
never joins an answer class, so it can never win a vote.

Equivalence (in order): exact match of normalised strings; numeric equality with a
relative/absolute tolerance; symbolic equality via sympy (``simplify(a - b) == 0``)
under a time limit. Grouping builds the "equivalent" graph over distinct answers
and takes its connected components (networkx), so equivalence need not be
transitive in the checks and classes still come out well defined.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import networkx as nx

AnswerExtractor = Callable[[str], "str | None"]

_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?"
_NUM_RE = re.compile(_NUM)


# -- extraction ------------------------------------------------------------------------
def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces allowed."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        if depth == 0:
            inner = text[start : i - 1].strip()
            if inner:
                return inner
    return None


# The answer ends on a non-space and the whitespace around it is possessive (after it: on
# its line): with "\s*" on both sides of a lazy group, "the answer is 5" + 3,000 spaces +
# "x" took 72 s.
_ANSWER_IS = re.compile(
    r"(?:final answer|the answer|answer)\s*+(?:is|:|=)\s*+:?\s*+\$?\s*+(?P<a>[^\n$]*?[^\s$])[^\S\n]*+\$?"
    r"[^\S\n]*+(?:\.\s|\.$|\n|$)",
    re.IGNORECASE,
)


def extract_answer_is(text: str) -> str | None:
    """What follows the last "the answer is" / "Answer:"."""
    ms = list(_ANSWER_IS.finditer(text))
    if not ms:
        return None
    a = ms[-1].group("a").strip().rstrip(".").strip()
    return a or None


def extract_after_equals(text: str) -> str | None:
    """The number right after the last "="."""
    idx = text.rfind("=")
    if idx < 0:
        return None
    m = _NUM_RE.search(text, idx + 1)
    if m is None or text[idx + 1 : m.start()].strip(" $\\(") not in ("",):
        return None
    return m.group(0)


def extract_last_number(text: str) -> str | None:
    ms = _NUM_RE.findall(text)
    return ms[-1] if ms else None


_CHOICE_RE = re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-J])\)?(?![A-Za-z])", re.IGNORECASE)


def extract_choice(text: str) -> str | None:
    """A multiple-choice letter A-J: "answer is (B)", "(C)", or a lone letter."""
    ms = list(_CHOICE_RE.finditer(text))
    if ms:
        return ms[-1].group(1).upper()
    ms2 = re.findall(r"\(([A-J])\)", text)
    if ms2:
        return ms2[-1]
    t = text.strip().rstrip(".").strip()
    if re.fullmatch(r"[A-J]", t):
        return t
    return None


def extract_answer(text: str) -> str | None:
    """Default extractor: boxed, then "the answer is", then after the last "=", then
    the last number. Returns the raw answer string (normalise before comparing)."""
    for f in (extract_boxed, extract_answer_is, extract_after_equals, extract_last_number):
        a = f(text)
        if a is not None:
            return a
    return None


def chain(*extractors: AnswerExtractor) -> AnswerExtractor:
    """An extractor trying each of ``extractors`` in turn."""

    def _f(text: str) -> str | None:
        for f in extractors:
            a = f(text)
            if a is not None:
                return a
        return None

    return _f


# -- normalisation -----------------------------------------------------------------------
def normalize(answer: str | None) -> str | None:
    """Canonical string form: strip LaTeX wrappers, units-free numbers, spacing, case."""
    if answer is None:
        return None
    a = answer.strip()
    a = re.sub(r"^\\\(|\\\)$|^\$+|\$+$", "", a).strip()
    a = re.sub(r"\\text\{([^}]*)\}", r"\1", a)
    a = re.sub(r"\\(?:left|right|,|!|;|displaystyle)", "", a)
    a = a.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    a = a.rstrip(".").strip()
    num = to_number(a)
    if num is not None:
        if num == int(num) and abs(num) < 1e15:
            return str(int(num))
        return repr(num)
    a = re.sub(r"\s+", " ", a).lower()
    return a or None


def to_number(a: str) -> float | None:
    """Parse "1,234", "-3.5", "3/4", "\\frac{3}{4}", "50%" (-> 50) into a float."""
    s = a.strip().replace("$", "").replace("\\%", "").rstrip("%").strip()
    s = re.sub(r"^\\frac\{(-?\d+)\}\{(\d+)\}$", r"\1/\2", s)
    if not re.fullmatch(_NUM, s):
        return None
    s = s.replace(",", "")
    try:
        v = float(Fraction(s)) if "/" in s else float(s)
    except (ValueError, ZeroDivisionError):
        return None
    return v if math.isfinite(v) else None


# -- equivalence ---------------------------------------------------------------------------
def _sympy_equal(a: str, b: str) -> bool:
    import sympy
    from sympy.parsing.sympy_parser import (
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    def parse(s: str):  # type: ignore[no-untyped-def]
        s = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", s)
        s = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", s)
        s = s.replace("\\cdot", "*").replace("\\times", "*").replace("^", "**").replace("\\pi", "pi")
        s = s.replace("{", "(").replace("}", ")")
        return parse_expr(s, transformations=standard_transformations + (implicit_multiplication_application,))

    ea, eb = parse(a), parse(b)
    return bool(sympy.simplify(ea - eb) == 0)


@dataclass
class Equivalence:
    """Decides whether two answers are the same. Callable: ``eq(a, b) -> bool``."""

    rel_tol: float = 1e-6
    abs_tol: float = 1e-9
    symbolic: bool = True
    sympy_timeout: float = 2.0
    _cache: dict[tuple[str, str], bool] = field(default_factory=dict, repr=False)

    def __call__(self, a: str | None, b: str | None) -> bool:
        if a is None or b is None:
            return False
        na, nb = normalize(a), normalize(b)
        if na is None or nb is None:
            return False
        if na == nb:
            return True
        xa, xb = to_number(na), to_number(nb)
        if xa is not None and xb is not None:
            return math.isclose(xa, xb, rel_tol=self.rel_tol, abs_tol=self.abs_tol)
        if not self.symbolic:
            return False
        key = (na, nb) if na < nb else (nb, na)
        if key not in self._cache:
            self._cache[key] = self._symbolic(*key)
        return self._cache[key]

    def _symbolic(self, a: str, b: str) -> bool:
        # Only worth trying on things that look like math, not prose.
        if re.search(r"[a-z]{4,}", re.sub(r"\\[a-z]+", "", a + " " + b)):
            return False
        # One daemon thread per check: a runaway simplification cannot be killed, but
        # it cannot hold up later checks either; past the limit the answer is "not equal".
        box: list[bool] = []

        def work() -> None:
            try:
                box.append(_sympy_equal(a, b))
            except Exception:
                box.append(False)

        t = threading.Thread(target=work, name="ttc-sympy", daemon=True)
        t.start()
        t.join(self.sympy_timeout)
        return bool(box and box[0])


DEFAULT_EQUIVALENCE = Equivalence()


@dataclass
class AnswerClass:
    """Equivalent answers: a representative and the indices of their samples."""

    answer: str
    members: list[int]


def group_answers(
    answers: Sequence[str | None], eq: Callable[[str | None, str | None], bool] | None = None
) -> list[AnswerClass]:
    """Group answers into equivalence classes (connected components of the
    equivalence graph over distinct normalised answers). ``None`` joins no class.
    Classes are ordered by first appearance; the representative is the first member.
    """
    eq = eq or DEFAULT_EQUIVALENCE
    by_norm: dict[str, list[int]] = {}
    first_raw: dict[str, str] = {}
    for i, a in enumerate(answers):
        n = normalize(a)
        if n is None:
            continue
        by_norm.setdefault(n, []).append(i)
        first_raw.setdefault(n, a)  # type: ignore[arg-type]
    keys = list(by_norm)
    g = nx.Graph()
    g.add_nodes_from(keys)
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            if eq(keys[i], keys[j]):
                g.add_edge(keys[i], keys[j])
    classes = []
    for comp in nx.connected_components(g):
        members = sorted(m for k in comp for m in by_norm[k])
        rep_key = normalize(answers[members[0]])
        classes.append(AnswerClass(answer=rep_key or "", members=members))
    classes.sort(key=lambda c: c.members[0])
    return classes


def same_answer(a: str | None, b: str | None, eq: Callable[[str | None, str | None], bool] | None = None) -> bool:
    return (eq or DEFAULT_EQUIVALENCE)(a, b)


def iter_numbers(text: str) -> Iterable[str]:
    return _NUM_RE.findall(text)
