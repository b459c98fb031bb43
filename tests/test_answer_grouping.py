"""Answer grouping: the fast construction (each answer normalised once, forms hashed,
numbers compared as floats, only symbolic candidates asked) gives the classes of the
reference that asks the equivalence about every pair, and asks the grading pool the same
questions in the same order."""

from __future__ import annotations

import hashlib
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttc import answers as A
from ttc.answers import Equivalence, group_answers, group_answers_pairwise, normalize
from ttc.grading import CheckResult, NeedsWorker, in_process_only


class RecordingPool:
    """A grading pool whose verdicts are a fixed function of the pair (not transitive, so
    the components matter), with some checks timing out or refusing a side; it records
    every check asked of it."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def check(self, a: str, b: str, *, timeout: float = 2.0, limits: object = None) -> CheckResult:
        self.asked.append((a, b))
        h = hashlib.sha256(f"{a}\x00{b}".encode()).digest()[0]
        if h < 20:
            return CheckResult(False, timed_out=True, reason="time limit")
        if h < 35:
            return CheckResult(False, unusable=("a",), reason="a: refused")
        return CheckResult(h % 3 == 0)


_numbers = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.integers(-50, 50).map(lambda n: f"{n}.0"),
    st.integers(1, 30).map(lambda n: f"{n * 1000:,}"),
    st.tuples(st.integers(-20, 20), st.integers(1, 9)).map(lambda t: f"{t[0]}/{t[1]}"),
    st.tuples(st.integers(-20, 20), st.integers(1, 9)).map(lambda t: f"\\frac{{{t[0]}}}{{{t[1]}}}"),
    st.floats(-1e6, 1e6, allow_nan=False).map(repr),
    st.sampled_from(["0.1", "0.10000000001", "1e-10", "0", "-0", "50%", "$18.00", "18 apples", "1,000"]),
)
_latex = st.sampled_from([
    "x+1", "1+x", "\\sqrt{2}", "\\sqrt{4}", "2", "\\frac{\\pi}{2}", "\\{1,2\\}", "\\{2,1\\}", "(0,1]",
    "x^{2}", "x^2", "\\dfrac{1}{2}", "\\text{(B)}", "(B)", "B", "\\boxed{3}", "$x$", "\\left(1,2\\right)",
    "a=b", "\\infty", "10^\\circ", "5 \\text{ cm}", "\\mbox{ inches}", "$", "\\(", "",
])
_prose = st.sampled_from(["the capital city", "Paris", "paris", "cannot be determined", "twelve", "Twelve."])
_hostile = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["x" * 1200, "(" * 500 + ")" * 500, "9" * 450, "\\frac{" * 100, "İ" * 30, "1" * 2000]),
)
_answer = st.one_of(st.none(), _numbers, _latex, _prose, _hostile)


def _as_tuples(classes):
    return [(c.answer, c.members) for c in classes]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_answer, max_size=12), st.booleans())
def test_fast_grouping_equals_pairwise(answers, symbolic):
    fast_pool, ref_pool = RecordingPool(), RecordingPool()
    fast = group_answers(answers, Equivalence(symbolic=symbolic, pool=fast_pool))  # type: ignore[arg-type]
    ref = group_answers_pairwise(answers, Equivalence(symbolic=symbolic, pool=ref_pool))  # type: ignore[arg-type]
    assert _as_tuples(fast) == _as_tuples(ref)
    assert fast_pool.asked == ref_pool.asked  # same checks, same order: same memory of unusable answers


@settings(max_examples=150, deadline=None)
@given(st.lists(_numbers, max_size=16), st.sampled_from([(1e-6, 1e-9), (0.01, 0.0), (0.0, 0.5), (0.3, 2.0)]))
def test_fast_grouping_of_numbers_equals_pairwise_at_any_tolerance(answers, tol):
    eq = Equivalence(rel_tol=tol[0], abs_tol=tol[1], symbolic=False)
    assert _as_tuples(group_answers(answers, eq)) == _as_tuples(group_answers_pairwise(answers, eq))


def test_non_transitive_numbers_chain_into_one_class():
    """0, 0.6, 1.2 with abs_tol 0.7: 0 ~ 0.6 ~ 1.2 but not 0 ~ 1.2: one class, as pairwise."""
    eq = Equivalence(abs_tol=0.7, rel_tol=0.0, symbolic=False)
    got = group_answers(["0", "1.2", "0.6", "5"], eq)
    assert _as_tuples(got) == [("0", [0, 1, 2]), ("5", [3])]
    assert _as_tuples(got) == _as_tuples(group_answers_pairwise(["0", "1.2", "0.6", "5"], eq))


def test_real_symbolic_checks_join_the_same_classes():
    """With the grading worker: \\sqrt{4} joins 2, x+1 joins 1+x, prose stays apart."""
    answers = ["2", "\\sqrt{4}", "x+1", "1+x", "the answer", "2.0", None, "\\frac{4}{2}"]
    fast = group_answers(answers, Equivalence())
    ref = group_answers_pairwise(answers, Equivalence())
    assert _as_tuples(fast) == _as_tuples(ref)
    assert sorted(c.members for c in fast) == [[0, 1, 5, 7], [2, 3], [4]]


class CountingEquivalence(Equivalence):
    """A subclass redefining equality: asked about every pair."""

    def __call__(self, a, b):  # type: ignore[no-untyped-def]
        self.calls = getattr(self, "calls", 0) + 1
        return a is not None and b is not None and len(a) == len(b)


def test_subclass_or_callable_is_asked_every_pair():
    eq = CountingEquivalence(symbolic=False)
    classes = group_answers(["1", "2", "33", "44", "555"], eq)
    assert eq.calls == 10  # 5 distinct forms: every pair
    assert [c.members for c in classes] == [[0, 1], [2, 3], [4]]
    assert [c.members for c in group_answers(["ab", "cd", "x"], lambda a, b: {a[0], b[0]} == {"a", "c"})] \
        == [[0, 1], [2]]


def test_a_symbolic_candidate_needs_a_worker_on_the_loop_but_numbers_do_not():
    eq = Equivalence(pool=RecordingPool())  # type: ignore[arg-type]
    with in_process_only():
        assert [c.members for c in group_answers(["1", "1.0", "2", "$2$", "Paris"], eq)] == [[0, 1], [2, 3], [4]]
        try:
            group_answers(["2", "\\sqrt{4}"], eq)
        except NeedsWorker:
            pass
        else:
            raise AssertionError("a symbolic check ran on the event loop")


def test_normal_forms_are_cached_and_long_answers_are_not():
    A._normalize_cached.cache_clear()
    assert normalize("\\boxed{x}") == normalize("\\boxed{x}")
    assert A._normalize_cached.cache_info().hits >= 1
    long = "y" * (A._NORMALIZE_CACHE_CHARS + 1)
    before = A._normalize_cached.cache_info().currsize
    assert normalize(long) == long
    assert A._normalize_cached.cache_info().currsize == before


def test_grouping_many_distinct_answers_is_not_quadratic_in_normalisation():
    """256 samples over 64 distinct numbers and 64 prose answers: no symbolic check, and the
    fast construction costs a fraction of the pairwise one (which normalises each pair)."""
    answers = [str(i % 64) for i in range(128)] + [f"word number {i}" for i in range(128)]
    eq = Equivalence()
    t0 = time.process_time()
    fast = group_answers(answers, eq)
    t_fast = time.process_time() - t0
    t0 = time.process_time()
    ref = group_answers_pairwise(answers, eq)
    t_ref = time.process_time() - t0
    assert _as_tuples(fast) == _as_tuples(ref) and len(fast) == 64 + 128
    assert t_fast < t_ref / 3, (t_fast, t_ref)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_answer, max_size=10), st.booleans())
def test_a_kept_grouping_is_the_grouping_and_asks_nothing_again(answers, symbolic):
    """A stopping rule and the vote after it group the same answers: the second grouping
    is the first one's classes (fresh objects) without a check asked again."""
    pool = RecordingPool()
    eq = Equivalence(symbolic=symbolic, pool=pool)  # type: ignore[arg-type]
    first = group_answers(answers, eq)
    asked = len(pool.asked)
    if first:
        first[0].members.append(99)  # the caller's copy: not the kept one
    again = group_answers(answers, eq)
    assert len(pool.asked) == asked
    ref = group_answers_pairwise(answers, Equivalence(symbolic=symbolic, pool=RecordingPool()))  # type: ignore[arg-type]
    assert _as_tuples(again) == _as_tuples(ref)


def test_groupings_kept_are_bounded():
    eq = Equivalence(symbolic=False)
    for i in range(A._GROUPINGS_KEPT + 50):
        group_answers([str(i), str(i + 1)], eq)
    assert len(eq._groupings) == A._GROUPINGS_KEPT
    group_answers(["y" * 15_000, "z" * 15_000], eq)  # over the characters kept: not kept
    assert ("y" * 15_000, "z" * 15_000) not in eq._groupings


@settings(max_examples=300, deadline=None)
@given(st.integers(-(10**15) + 1, 10**15 - 1), st.integers(0, 3))
def test_plain_integers_normalise_as_the_general_path_reads_them(n, zeros):
    text = "-" * (n < 0) + "0" * zeros + str(abs(n))
    if len(text.lstrip("-")) > 15:
        text = str(n)
    assert A._normalize(text) == A._normalize(f" {text} ")  # spaces: the general path
