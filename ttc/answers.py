"""Answers: extraction from free text, normalisation, equivalence, and grouping.

Extractors return ``None`` when nothing parseable is found: an unparseable answer
never joins an answer class, so it can never win a vote.

Equivalence (in order): exact match of normalised strings; numeric equality with a
relative/absolute tolerance; symbolic equality checked in a grading worker process
under a hard time limit (:mod:`ttc.grading`: a whitelist parser of our own or
math-verify's LaTeX grammar, size bounds, math-verify's ``verify``). Answer text is
data: nothing here or there passes it to ``eval``, ``exec``, ``sympify`` or
``parse_expr``. Grouping takes the connected components of the "equivalent" graph over
distinct answers, so equivalence need not be transitive in the checks and classes still
come out well defined. With an :class:`Equivalence` the graph is built without asking
every pair: each distinct answer is normalised once (normalisation is cached by text),
equal canonical forms are joined by hashing, numbers are compared as floats, and only
pairs that a symbolic check could join (both short, neither prose, not both numbers)
are handed to the equivalence, in the order the pairwise construction asks them, so the
classes (and the equivalence's memory of unusable answers) are the same as asking every
pair (:func:`group_answers_pairwise`, the reference, used for other equivalences).

Extraction and normalisation run in time linear in the text (they run on the event
loop as samples arrive); symbolic checks block their caller, so strategies await
:func:`agroup_answers` or :func:`ttc.grading.off_loop` instead of calling them on
the loop.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from .grading import GradingPool, NeedsWorker, default_pool, off_loop, workers_forbidden
from .prose import looks_like_prose

AnswerExtractor = Callable[[str], "str | None"]

_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?"
_NUM_RE = re.compile(_NUM)


# -- extraction ------------------------------------------------------------------------
_BOXED_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces allowed.

    Braces are matched right to left (a stack of unmatched ``}``), so the last closed
    box is found first and the cost is linear in the braces after it; a flood of
    unclosed ``\\boxed{`` stops at once (nothing to its left can close)."""
    head = _BOXED_OPEN.search(text)
    if head is None:
        return None
    first = head.end() - 1
    opens: set[int] | None = None  # every box's "{", found once a brace pair needs it
    closes: list[int] = []
    no = text.rfind("{", first)
    nc = text.rfind("}", first)
    while no >= 0:
        if nc > no:  # the next brace leftwards closes something
            closes.append(nc)
            nc = text.rfind("}", first, nc)
            continue
        if closes:
            end = closes.pop()
            if opens is None:
                opens = {m.end() - 1 for m in _BOXED_OPEN.finditer(text, head.start())}
            if no in opens:
                inner = text[no + 1 : end].strip()
                if inner:
                    return inner
        elif nc < 0:
            return None
        no = text.rfind("{", first, no)
    return None


# The answer ends on a non-space and the whitespace around it is possessive (after it: on
# its line): with "\s*" on both sides of a lazy group, "the answer is 5" + 3,000 spaces +
# "x" took 72 s. An answer is at most 100,000 characters: the lazy group tries the ending
# after each character, which cost 80 ms for a megabyte line.
_ANSWER_IS = re.compile(
    r"(?:final answer|the answer|answer)\s*+(?:is|:|=)\s*+:?\s*+\$?\s*+(?P<a>[^\n$]{0,100000}?[^\s$])[^\S\n]*+\$?"
    r"[^\S\n]*+(?:\.\s|\.$|\n|$)",
    re.IGNORECASE,
)


_MAX_MENTIONS = 1000


def _answer_is_matches(text: str) -> Iterable[re.Match[str]]:
    """``_ANSWER_IS.finditer(text)``, found faster: every match starts at an "answer"
    (or 4 or 6 characters before one: "the ", "final "), so on ASCII text the regex is
    only tried there (scanning the text with it costs ~40 ms per MB)."""
    if not text.isascii():
        if "answer" not in text.casefold():  # casefold: IGNORECASE also matches "ſ" as "s"
            return
        yield from _ANSWER_IS.finditer(text)
        return
    low = text.lower()
    pos = 0
    # Only the last 1,000 mentions are tried (a text repeating "answer" a million times
    # would otherwise cost ~1 us each): a match never reaches across that many on its line
    # in a real answer.
    k = len(low)
    for _ in range(_MAX_MENTIONS):
        k = low.rfind("answer", 0, k)
        if k < 0:
            break
    else:
        pos = max(0, k - 6)
    while (k := low.find("answer", pos)) >= 0:
        m = None
        for start in (k - 6, k - 4, k):
            if start >= pos and (m := _ANSWER_IS.match(text, start)) is not None:
                break
        if m is None:
            pos = k + 1
        else:
            yield m
            pos = m.end()


# A number leading the stated answer, in quotes or markdown emphasis or not, then either
# the end or a clause in words ("12, which is 6 + 6", "4, not 2", "12 apples", "7 (seven)");
# "and", "or" or an operation in words before more math ("1 or -1", "2 times 6 = 12") and
# "pi"/"sqrt" ("3 pi") keep the whole answer.
_LEADING_NUMBER = re.compile(
    r"[*_\"'`\u201c]*(?P<n>" + _NUM + r")[*_\"'`\u201d]*"
    r"(?:$|(?:[,;:]?\s+|\s*\()(?!(?:and|or|times|plus|minus|over|divided by|multiplied by)\s+[-+$\\(\d]|(?:pi|sqrt)\b)(?=[A-Za-z]{2}))"
)
_WRAPPERS = (("**", "**"), ("__", "__"), ('"', '"'), ("'", "'"), ("`", "`"), ("\u201c", "\u201d"), ("*", "*"))


def tidy_stated_answer(a: str) -> str | None:
    """The answer in what follows "the answer is": its leading number when words follow it
    (a clause, a unit: "12, which is 6 + 6" -> "12") or it stands alone in quotes or
    emphasis ('"15"', "**12**"); else the text without its trailing period and without
    quotes or emphasis around the whole of it. The words after a stated number are not part
    of the answer (samples saying one number in different words vote together); a LaTeX or
    symbolic answer ("2\\sqrt{3}", "x = 1, y = 2", "1, 2, 3") is kept whole."""
    a = a.strip().rstrip(".").strip()
    m = _LEADING_NUMBER.match(a)
    if m is not None:
        return m.group("n")
    for left, right in _WRAPPERS:
        if len(a) > len(left) + len(right) and a.startswith(left) and a.endswith(right):
            a = a[len(left) : -len(right)].strip()
            break
    return a or None


def extract_answer_is(text: str) -> str | None:
    """What follows the last "the answer is" / "Answer:" on its line, tidied by
    :func:`tidy_stated_answer`."""
    last = None
    for last in _answer_is_matches(text):  # noqa: B007
        pass
    if last is None:
        return None
    return tidy_stated_answer(last.group("a"))


def extract_after_equals(text: str) -> str | None:
    """The number right after the last "="."""
    idx = text.rfind("=")
    if idx < 0:
        return None
    tail = text[idx + 1 :]
    # The number must start right after the "=" (spaces, "$", "\\", "(" between): match
    # there instead of searching the whole tail (a search costs ~140 ms per MB).
    m = _NUM_RE.match(tail, len(tail) - len(tail.lstrip(" $\\(")))
    return m.group(0) if m else None


_DIGIT = re.compile(r"\d")
_NUM_CHARS = re.compile(r"[\d,./+-]*")


def extract_last_number(text: str) -> str | None:
    """The last number in the text. Read from the end: the last digit is found on the
    reversed text and only the run of number characters around it is parsed, so the
    cost does not grow with the text before it (``findall`` costs ~140 ms per MB)."""
    rev = text[::-1]
    d = _DIGIT.search(rev)
    if d is None:
        return None
    run = _NUM_CHARS.match(rev, d.start())
    end = len(text) - d.start()
    start = len(text) - run.end()  # type: ignore[union-attr]
    ms = _NUM_RE.findall(text, start, end)
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


_HASHES = re.compile(r"####[^\S\n]*(" + _NUM + r")")


def extract_hashes(text: str) -> str | None:
    """The number after the last ``#### `` (GSM8K's final-answer marker, Cobbe et al. 2021)."""
    k = text.rfind("####")
    if k < 0:
        return None
    m = _HASHES.match(text, k)
    return m.group(1) if m else None


def extract_answer(text: str) -> str | None:
    """Default extractor: boxed, then GSM8K's ``#### N``, then "the answer is", then after
    the last "=", then the last number. Returns the raw answer string (normalise before
    comparing)."""
    for f in (extract_boxed, extract_hashes, extract_answer_is, extract_after_equals, extract_last_number):
        a = f(text)
        if a is not None:
            return a
    return None


def extract_number(text: str) -> str | None:
    """The final answer of a task whose answers are numbers (GSM8K, arithmetic): the
    default extractor's stages in its order (boxed, ``#### N``, "the answer is", after the
    last "=", the last number), each taken when it holds a number: the stage's answer when
    it is one, else the last number in it ("N = 12" -> "12", "18 \\text{ apples}" ->
    "18"); a stage without a number (a template's placeholder echoed back, "The answer is
    N.", or words) is passed over for the next."""
    for f in (extract_boxed, extract_hashes, extract_answer_is, extract_after_equals):
        a = f(text)
        if a is None:
            continue
        if to_number(normalize(a) or "") is not None:
            return a
        inner = extract_last_number(a)
        if inner is not None:
            return inner
    return extract_last_number(text)


ExtractorName = Literal["default", "number", "boxed", "answer_is", "hashes", "last_number", "choice"]

#: Extractors by name, for configs and spec strings (``sc:extractor=number``): ``default``
#: (:func:`extract_answer`), ``number`` (:func:`extract_number`), ``boxed``, ``answer_is``,
#: ``hashes``, ``last_number``, ``choice`` (a multiple-choice letter).
EXTRACTORS: dict[str, AnswerExtractor] = {
    "default": extract_answer, "number": extract_number, "boxed": extract_boxed, "answer_is": extract_answer_is,
    "hashes": extract_hashes, "last_number": extract_last_number, "choice": extract_choice,
}


def extractor(name: str) -> AnswerExtractor:
    """The extractor called ``name`` (see :data:`EXTRACTORS`); ``ValueError`` naming the known ones."""
    if name not in EXTRACTORS:
        raise ValueError(f"extractor: unknown {name!r}; known: {sorted(EXTRACTORS)}")
    return EXTRACTORS[name]


def resolve_extractor(given: AnswerExtractor | str | None) -> AnswerExtractor | None:
    """An ``extractor`` argument as a function: a name looked up in :data:`EXTRACTORS`, a
    function as it is, None as None; anything else is a ``TypeError``."""
    if given is None or (callable(given) and not isinstance(given, str)):
        return given
    if isinstance(given, str):
        return extractor(given)
    raise TypeError(f"extractor: expected a function or an extractor name, got {type(given).__name__}")


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
def _strip_math_delimiters(a: str) -> str:
    """Drop a leading ``\\(`` or run of ``$`` and a trailing ``\\)`` or run of ``$``
    (string operations: a regex alternation here cost 64 ms per MB of answer)."""
    if a.startswith("\\("):
        a = a[2:]
    elif a.startswith("$"):
        a = a.lstrip("$")
    if a.endswith("\\)"):
        a = a[:-2]
    elif a.endswith("$"):
        a = a.rstrip("$")
    return a


# MATH's conventions (Hendrycks et al. 2021; the same steps as Minerva's
# normalize_final_answer, Lewkowycz et al. 2022): a unit is a trailing ``\text{ unit}`` or
# ``\mbox{ unit}`` whose text starts with a space ("5.4 \text{ cents}", "864 \mbox{ inches}^2");
# ``\text{X}`` and ``\mbox{X}`` are X; degrees (``^\circ``) and ``\$`` are dropped; "(C)" is C.
_UNITS = re.compile(r"(?<=\S)\s*\\(?:text|mbox)\{\s[^{}]*\}(?:\^\{?\d\}?)?$")
_TEXT = re.compile(r"\\(?:text|mbox|textbf|mathrm)\{([^{}]*)\}")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?")
_LETTER_CHOICE = re.compile(r"^\(([A-Za-z])\)$")

#: Longer answers are normalised by stripping and lower-casing only: each regex pass over
#: a megabyte holds the GIL for up to ~25 ms, which a grading thread must not do.
HUGE_CHARS = 100_000


#: Answers up to this many characters have their normal form cached (LRU of
#: ``_NORMALIZE_CACHE`` texts): a vote asks for the same few answers' forms many times.
_NORMALIZE_CACHE_CHARS = 1000
_NORMALIZE_CACHE = 16384


def normalize(answer: str | None) -> str | None:
    """Canonical string form: strip LaTeX wrappers, units-free numbers, spacing, case.
    Answers over ``HUGE_CHARS`` characters are only stripped and lower-cased. Pure; the
    forms of answers up to 1,000 characters are cached."""
    if answer is None:
        return None
    if len(answer) <= _NORMALIZE_CACHE_CHARS:
        return _normalize_cached(str(answer))
    return _normalize(answer)


_PLAIN_INT = re.compile(r"-?[0-9]{1,15}")


def _normalize(answer: str) -> str | None:
    if _PLAIN_INT.fullmatch(answer):  # the common case, as the steps below would read it
        return str(int(answer))
    if len(answer) > HUGE_CHARS:
        return answer.strip().lower() or None
    a = _strip_math_delimiters(answer.strip()).strip()
    a = _UNITS.sub("", a)
    a = _TEXT.sub(r"\1", a)
    a = re.sub(r"\\(?:left|right|,|!|;|displaystyle)", "", a)
    a = a.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\$", "")
    a = _DEGREES.sub("", a)
    a = a.rstrip(".").strip()
    a = _LETTER_CHOICE.sub(r"\1", a)
    num = to_number(a)
    if num is not None:
        if num == int(num) and abs(num) < 1e15:
            return str(int(num))
        return repr(num)
    a = re.sub(r"\s+", " ", a).lower()
    return a or None


_normalize_cached = functools.lru_cache(maxsize=_NORMALIZE_CACHE)(_normalize)

_MAX_NUMBER_CHARS = 400


def to_number(a: str) -> float | None:
    """Parse "1,234", "-3.5", "3/4", "\\frac{3}{4}", "50%" (-> 50) into a float.
    Text over 400 characters is not read as a number (it is compared as text)."""
    if len(a) > _MAX_NUMBER_CHARS:
        return None
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


_to_number_cached = functools.lru_cache(maxsize=_NORMALIZE_CACHE)(to_number)


def _form_number(form: str) -> float | None:
    """:func:`to_number` of a normal form, cached for short forms (a vote reads the
    same few forms again)."""
    return _to_number_cached(form) if len(form) <= _NORMALIZE_CACHE_CHARS else to_number(form)


# -- equivalence ---------------------------------------------------------------------------
#: Answers longer than this are never normalised inline on the event loop (see
#: :func:`ttc.grading.off_loop` with ``pure=True``).
INLINE_CHARS = 20_000


@dataclass
class Equivalence:
    """Decides whether two answers are the same. Callable: ``eq(a, b) -> bool``.

    In order: exact match of normalised strings; numeric equality with
    ``rel_tol``/``abs_tol`` (both in-process, microseconds); then, when ``symbolic``, a
    check in a grading worker process (:func:`ttc.grading.check`: a whitelist parser or
    math-verify's LaTeX grammar, size bounds, math-verify's ``verify``) under a hard
    limit of ``sympy_timeout`` seconds, past which the answer is "not equal". No answer
    text is ever evaluated as code.

    Answers longer than ``max_chars`` and prose (a word of four or more letters outside
    a LaTeX command) are compared as text only. Verdicts are kept in an LRU cache of
    ``cache_size`` pairs; an answer that could not be parsed, was refused by the size
    bounds, was being parsed when the time limit hit, or was in two comparisons that
    ran out the limit is remembered (LRU, same size) and not checked against other
    answers again: one hostile answer costs its vote at most two time limits. Thread-safe; blocking: call it off the event loop
    (:func:`agroup_answers`, :func:`ttc.grading.off_loop`)."""

    rel_tol: float = 1e-6
    abs_tol: float = 1e-9
    symbolic: bool = True
    sympy_timeout: float = 2.0
    cache_size: int = 4096
    max_chars: int = 1000
    pool: GradingPool | None = field(default=None, repr=False, compare=False)
    _cache: OrderedDict[tuple[str, str], bool] = field(default_factory=OrderedDict, repr=False, compare=False)
    _unusable: OrderedDict[str, str] = field(default_factory=OrderedDict, repr=False, compare=False)
    _strikes: OrderedDict[str, int] = field(default_factory=OrderedDict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    #: The last groupings made with this equivalence (answers -> classes): a stopping rule
    #: and the vote after it group the same answers.
    _groupings: OrderedDict[tuple[str | None, ...], tuple[tuple[str, tuple[int, ...]], ...]] = field(
        default_factory=OrderedDict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.sympy_timeout > 0:
            raise ValueError(f"sympy_timeout: must be > 0 seconds, got {self.sympy_timeout}")
        if self.cache_size < 1:
            raise ValueError(f"cache_size: must be >= 1, got {self.cache_size}")

    def __call__(self, a: str | None, b: str | None) -> bool:
        if a is None or b is None:
            return False
        if workers_forbidden() and max(len(a), len(b)) > INLINE_CHARS:
            raise NeedsWorker  # linear but long: normalise on a grading thread, not the loop
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
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        verdict = self._symbolic(*key)
        with self._lock:
            self._cache[key] = verdict
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return verdict

    def grouping(self, answers: tuple[str | None, ...]) -> list[AnswerClass] | None:
        """The classes :func:`group_answers` last made of exactly ``answers``, if kept."""
        with self._lock:
            hit = self._groupings.get(answers)
            if hit is None:
                return None
            self._groupings.move_to_end(answers)
        return [AnswerClass(answer=a, members=list(m)) for a, m in hit]

    def keep_grouping(self, answers: tuple[str | None, ...], classes: list[AnswerClass]) -> None:
        with self._lock:
            self._groupings[answers] = tuple((c.answer, tuple(c.members)) for c in classes)
            while len(self._groupings) > _GROUPINGS_KEPT:
                self._groupings.popitem(last=False)

    def unusable(self, answer: str) -> str | None:
        """Why ``answer`` (normalised) is no longer sent to symbolic checks, if it is not."""
        with self._lock:
            return self._unusable.get(answer)

    def _symbolic(self, a: str, b: str) -> bool:
        for x in (a, b):
            if len(x) > self.max_chars or looks_like_prose(x):
                return False
        with self._lock:
            if a in self._unusable or b in self._unusable:
                return False
        if workers_forbidden():
            raise NeedsWorker
        pool = self.pool or default_pool()
        res = pool.check(a, b, timeout=self.sympy_timeout)
        with self._lock:
            for side in res.unusable:
                self._unusable[a if side == "a" else b] = res.reason
            if res.timed_out and not res.unusable:  # both parsed; the comparison ran out
                for x in (a, b):
                    self._strikes[x] = self._strikes.get(x, 0) + 1
                    if self._strikes[x] >= 2:
                        self._unusable[x] = f"{res.reason}, twice in comparisons"
                while len(self._strikes) > self.cache_size:
                    self._strikes.popitem(last=False)
            while len(self._unusable) > self.cache_size:
                self._unusable.popitem(last=False)
        return res.equal


#: Groupings an :class:`Equivalence` keeps (LRU), of answer lists up to
#: ``_GROUPING_KEPT_CHARS`` characters in all.
_GROUPINGS_KEPT = 256
_GROUPING_KEPT_CHARS = 20_000

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

    With an :class:`Equivalence` (not a subclass changing its checks) only the pairs a
    symbolic check could join are asked (see the module doc); any other callable is
    asked about every pair (:func:`group_answers_pairwise`). The classes are the same.
    """
    eq = eq or DEFAULT_EQUIVALENCE
    if workers_forbidden() and any(a is not None and len(a) > INLINE_CHARS for a in answers):
        raise NeedsWorker  # long answers: normalise them on a grading thread, not the loop
    if not _is_plain_equivalence(eq):
        return group_answers_pairwise(answers, eq)
    plain: Equivalence = eq  # type: ignore[assignment]
    key = tuple(answers)
    keep = sum(len(a) for a in key if a is not None) <= _GROUPING_KEPT_CHARS
    if keep and (hit := plain.grouping(key)) is not None:
        return hit
    by_norm, keys = _distinct_forms(answers)
    comps = _components(keys, plain)
    classes = _classes(answers, by_norm, [[keys[i] for i in c] for c in comps])
    if keep:
        plain.keep_grouping(key, classes)
    return classes


def group_answers_pairwise(
    answers: Sequence[str | None], eq: Callable[[str | None, str | None], bool] | None = None
) -> list[AnswerClass]:
    """:func:`group_answers` asking ``eq`` about every pair of distinct normalised
    answers (the reference construction; any equivalence callable)."""
    import networkx as nx

    eq = eq or DEFAULT_EQUIVALENCE
    if workers_forbidden() and any(a is not None and len(a) > INLINE_CHARS for a in answers):
        raise NeedsWorker
    by_norm, keys = _distinct_forms(answers)
    g = nx.Graph()
    g.add_nodes_from(keys)
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            if eq(keys[i], keys[j]):
                g.add_edge(keys[i], keys[j])
    return _classes(answers, by_norm, [list(c) for c in nx.connected_components(g)])


def _distinct_forms(answers: Sequence[str | None]) -> tuple[dict[str, list[int]], list[str]]:
    """(normal form -> indices of the answers with it, the forms in first-appearance order)."""
    by_norm: dict[str, list[int]] = {}
    for i, a in enumerate(answers):
        n = normalize(a)
        if n is not None:
            by_norm.setdefault(n, []).append(i)
    return by_norm, list(by_norm)


def _classes(answers: Sequence[str | None], by_norm: dict[str, list[int]], comps: list[list[str]]
             ) -> list[AnswerClass]:
    classes = []
    for comp in comps:
        members = sorted(m for k in comp for m in by_norm[k])
        rep_key = normalize(answers[members[0]])
        classes.append(AnswerClass(answer=rep_key or "", members=members))
    classes.sort(key=lambda c: c.members[0])
    return classes


def _is_plain_equivalence(eq: object) -> bool:
    """An :class:`Equivalence` whose checks are :class:`Equivalence`'s own (a subclass may
    change what equal means: it is asked about every pair)."""
    t = type(eq)
    return isinstance(eq, Equivalence) and t.__call__ is Equivalence.__call__ \
        and t._symbolic is Equivalence._symbolic  # type: ignore[comparison-overlap]


def _components(keys: list[str], eq: Equivalence) -> list[list[int]]:
    """Connected components (as key indices) of the graph pairwise ``eq`` builds over
    ``keys``, asking ``eq`` only about the pairs a symbolic check could join.

    ``eq(a, b)`` compares ``normalize(a)`` and ``normalize(b)`` (forms of forms): equal
    forms join; two numbers join when close (``eq``'s tolerances) and are never checked
    symbolically; a pair with a missing, long (over ``eq.max_chars``) or prose form is
    never joined. The remaining pairs are asked in the pairwise order, so the
    equivalence's caches and its memory of unusable answers evolve as there."""
    if workers_forbidden() and any(len(k) > INLINE_CHARS for k in keys):
        raise NeedsWorker
    uf = _UnionFind(len(keys))
    forms = [normalize(k) for k in keys]
    first: dict[str, int] = {}
    for i, f in enumerate(forms):
        if f is not None:
            uf.union(i, first.setdefault(f, i))
    nums = [None if f is None else _form_number(f) for f in forms]
    numeric = [i for i, x in enumerate(nums) if x is not None]
    for a, i in enumerate(numeric):
        for j in numeric[a + 1 :]:
            if uf.find(i) != uf.find(j) and math.isclose(nums[i], nums[j],  # type: ignore[arg-type]
                                                         rel_tol=eq.rel_tol, abs_tol=eq.abs_tol):
                uf.union(i, j)
    if eq.symbolic:
        cand = [i for i, f in enumerate(forms)
                if f is not None and len(f) <= eq.max_chars and not looks_like_prose(f)]
        for a, i in enumerate(cand):
            for j in cand[a + 1 :]:
                if forms[i] == forms[j] or (nums[i] is not None and nums[j] is not None):
                    continue
                if eq(keys[i], keys[j]):
                    uf.union(i, j)
    return uf.components()


class _UnionFind:
    """Disjoint sets over ``0..n-1`` (path halving; the smaller index is the root)."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = p[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def components(self) -> list[list[int]]:
        comps: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            comps.setdefault(self.find(i), []).append(i)
        return list(comps.values())


async def agroup_answers(
    answers: Sequence[str | None], eq: Callable[[str | None, str | None], bool] | None = None
) -> list[AnswerClass]:
    """:func:`group_answers` on the grading thread pool, awaited: the event loop keeps
    running while symbolic checks take their time."""
    return await off_loop(group_answers, answers, eq, pure=True)


def same_answer(a: str | None, b: str | None, eq: Callable[[str | None, str | None], bool] | None = None) -> bool:
    return (eq or DEFAULT_EQUIVALENCE)(a, b)


def iter_numbers(text: str) -> Iterable[str]:
    return _NUM_RE.findall(text)


# -- graders ---------------------------------------------------------------------------------
Grader = Callable[["str | None", str], bool]


def grade_number(answer: str | None, reference: str) -> bool:
    """GSM8K's grading (Cobbe et al. 2021, the "#### N" final answer): the answer's number,
    the whole answer read as one ("1,234", "$18.00", "50%") or else its last number ("18
    apples"), equals the reference number (relative tolerance 1e-6). An answer with no
    number, or a reference that is not one, is wrong. In-process: no symbolic check."""
    if answer is None:
        return False
    ref = to_number(normalize(reference) or "")
    if ref is None:
        return False
    got = to_number(normalize(answer) or "")
    if got is None:
        last = extract_last_number(answer[-HUGE_CHARS:])
        got = None if last is None else to_number(last)
    return got is not None and math.isclose(got, ref, rel_tol=1e-6, abs_tol=1e-9)


def grade_latex(answer: str | None, reference: str, eq: Equivalence | None = None) -> bool:
    """MATH-style grading of a LaTeX answer against a LaTeX reference: :class:`Equivalence`
    (MATH's normalisation, numbers, then Hugging Face math-verify in a grading worker under
    a hard time limit: fractions, radicals, sets, intervals, tuples, matrices, equations).
    The answer is what the strategy extracted (the last ``\\boxed{}`` of a MATH-style
    output). Blocking: call it off the event loop (:func:`ttc.grading.off_loop`)."""
    return (eq or DEFAULT_EQUIVALENCE)(answer, reference)


def grade_default(answer: str | None, reference: str) -> bool:
    """ttc's default grading: :data:`DEFAULT_EQUIVALENCE` (the equivalence votes use)."""
    return DEFAULT_EQUIVALENCE(answer, reference)


#: Graders by name: ``number`` (GSM8K), ``latex`` (MATH, AIME, AMC), ``default``.
GRADERS: dict[str, Grader] = {"number": grade_number, "latex": grade_latex, "default": grade_default}


def grader(name: str) -> Grader:
    """The grader called ``name`` (see :data:`GRADERS`); ``ValueError`` naming the known ones."""
    if name not in GRADERS:
        raise ValueError(f"grader: unknown {name!r}; known: {sorted(GRADERS)}")
    return GRADERS[name]
