"""Standard grading of reasoning benchmarks: GSM8K by number, MATH-style answers by
math-verify (in the grading workers), the self-test over the reference solutions of
GSM8K and MATH-500, a table of known-equivalent and known-different answer pairs, and
votes that group answers by the same equivalence."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ttc import grading
from ttc.answers import (
    DEFAULT_EQUIVALENCE,
    Equivalence,
    extract_answer,
    extract_hashes,
    grade_latex,
    grade_number,
    grader,
    group_answers,
    normalize,
)
from ttc.bench.specs import load_benchmark

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
GSM8K = DATA / "gsm8k_test.jsonl"
MATH500 = DATA / "math500_test.jsonl"

EQUIVALENT = [
    (r"\frac{14}{3}", "14/3"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\pi/2)"),
    (r"\text{Evelyn}", "Evelyn"),
    (r"90^\circ", "90"),
    ("0.5", r"\frac12"),
    (r"3\sqrt{13}", r"\sqrt{117}"),
    (r"\dfrac{17}{50}", "0.34"),
    (r"\$18.90", "18.9"),
    (r"5.4 \text{ cents}", "5.4"),
    (r"10,\!080", "10080"),
    (r"\text{(C)}", "C"),
    (r"(-\infty, 0]", r"(-\infty,0]"),
    (r"\{1\pm\sqrt{5},-2\}", r"\{-2, 1+\sqrt{5}, 1-\sqrt{5}\}"),
    (r"\begin{pmatrix} -1/3 \\ 2/3 \end{pmatrix}", r"\begin{pmatrix} -\frac13 \\ \frac23 \end{pmatrix}"),
    (r"x^2+2x+1", r"(x+1)^2"),
]

DIFFERENT = [
    (r"\frac{14}{3}", "14/5"),
    ("2", "3"),
    (r"\frac{1}{3}", "0.33"),
    ("(1,2)", "(2,1)"),
    ("[1,2)", "(1,2]"),
    ("x^2", "x^3"),
    (r"\text{Evelyn}", "Navin"),
    (r"\sqrt{2}", "1.414"),
    (r"90^\circ", "45"),
    (r"\{1,2\}", r"\{1,3\}"),
    (r"\pi", "3.14"),
    ("-1", "1"),
    (r"3\sqrt{13}", r"\sqrt{118}"),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}"),
    ("x=1", "x=2"),
]


@pytest.mark.parametrize(("a", "b"), EQUIVALENT)
def test_known_equivalent_pairs(a: str, b: str) -> None:
    assert grade_latex(a, b), f"{a!r} and {b!r} should grade equal"
    assert grade_latex(b, a), f"{b!r} and {a!r} should grade equal (symmetric)"


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_known_different_pairs(a: str, b: str) -> None:
    assert not grade_latex(a, b), f"{a!r} and {b!r} should grade different"
    assert not grade_latex(b, a)


def test_math_normalisation_follows_math_conventions() -> None:
    assert normalize(r"864 \mbox{ inches}^2") == "864"
    assert normalize(r"\frac{270}7\text{ degrees}") == r"\frac{270}7"
    assert normalize(r"30^{\circ}") == "30"
    assert normalize(r"\$32,\!348") == "32348"
    assert normalize(r"3\text{ and }5") == "3 and 5"  # text inside an answer is kept
    assert normalize(r"\text{(B)}") == "b"
    assert normalize("(12)") == "(12)"  # only a single letter in parentheses is a choice


def test_grade_number_is_gsm8k_grading() -> None:
    assert grade_number("18", "18")
    assert grade_number("$18.00", "18")
    assert grade_number("1,234", "1234")
    assert grade_number("18 apples", "18")
    assert grade_number("so 4 then 18", "18")  # the last number of a phrase
    assert grade_number("-4", "-4")
    assert grade_number("50%", "50")
    assert not grade_number("4", "-4")
    assert not grade_number("18.5", "18")
    assert not grade_number(None, "18")
    assert not grade_number("no number", "18")
    assert not grade_number("18", "eighteen")  # a reference that is not a number: never right
    assert grader("number") is grade_number and grader("latex") is grade_latex
    with pytest.raises(ValueError, match="unknown 'nope'; known"):
        grader("nope")


def test_gsm8k_final_answer_marker_is_extracted() -> None:
    assert extract_hashes("work = 174.\nThey need 26 more.\n#### 26") == "26"
    assert extract_hashes("#### -1,200") == "-1,200"
    assert extract_hashes("no marker 5") is None
    assert extract_answer("so 3 = 174 then 26\n#### 26") == "26"


@pytest.mark.skipif(not GSM8K.exists(), reason="no ../shared/data/gsm8k_test.jsonl")
def test_self_test_gsm8k_reference_solutions_all_grade_right() -> None:
    """Every GSM8K reference solution, read as a model output would be (the default
    extractor on the worked solution), graded against its own final answer."""
    b = load_benchmark(f"gsm8k:{GSM8K}")
    assert len(b.examples) == 1319 and b.grader == "number"
    t0 = time.monotonic()
    wrong = [(e.id, extract_answer(e.meta["solution"]), e.answer) for e in b.examples
             if not b.grade(extract_answer(e.meta["solution"]), e.answer)]
    seconds = time.monotonic() - t0
    print(f"\nGSM8K self-test: {len(b.examples) - len(wrong)}/{len(b.examples)} in {seconds:.2f} s; failures: {wrong}")
    assert wrong == []


@pytest.mark.skipif(not MATH500.exists(), reason="no ../shared/data/math500_test.jsonl")
def test_self_test_math500_reference_solutions_grade_right() -> None:
    """Every MATH-500 reference solution: its answer extracted as from a model output
    (the last \\boxed{} of the solution) and graded against the row's ``answer`` by the
    MATH grader; then every reference answer through the symbolic path alone (the
    whitelist parser or math-verify's LaTeX grammar in a grading worker, then
    math-verify's ``verify`` against itself), which shows what math-verify can parse."""
    b = load_benchmark(f"math500:{MATH500}")
    assert len(b.examples) == 500 and b.grader == "latex"
    rows = [json.loads(line) for line in MATH500.read_text().splitlines() if line.strip()]
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as ex:
        ok = list(ex.map(lambda r: b.grade(extract_answer(r["solution"]), r["answer"]), rows))
    graded = time.monotonic() - t0
    wrong = [(r["answer"], extract_answer(r["solution"])) for r, good in zip(rows, ok) if not good]
    print(f"\nMATH-500 self-test: {sum(ok)}/500 ({sum(ok) / 5:.1f}%) in {graded:.2f} s; failures: {wrong}")
    assert sum(ok) >= 495

    pool = grading.default_pool()
    pool.warm_up()
    t0 = time.monotonic()
    with ThreadPoolExecutor(pool.max_workers) as ex:
        checks = list(ex.map(lambda r: pool.check(normalize(r["answer"]), normalize(r["answer"]), timeout=5.0), rows))
    symbolic = time.monotonic() - t0
    refused = [(r["answer"], c.reason) for r, c in zip(rows, checks) if not c.equal]
    print(f"MATH-500 symbolic path: {500 - len(refused)}/500 references parse and verify equal to themselves "
          f"in {symbolic:.2f} s; not parsed: {refused}")
    assert not any(c.timed_out for c in checks)
    assert len(refused) <= 25  # prose answers ("\text{Evelyn}") are compared as text by design
    assert all("prose" in why or "not a math expression" in why for _, why in refused)


def test_votes_group_answers_by_the_grading_equivalence() -> None:
    classes = group_answers([r"\frac12", "0.5", "3", r"\dfrac{1}{2}", r"\left( 1, 2 \right)", "(1,2)"])
    sizes = sorted(len(c.members) for c in classes)
    assert sizes == [1, 2, 3]
    plain = group_answers([r"\frac12", "0.5", "3"], Equivalence(symbolic=False))
    assert len(plain) == 3  # without the symbolic check \frac12 and 0.5 stay apart


async def test_self_consistency_on_math_counts_frac12_and_half_as_one_answer() -> None:
    from ttc.engines import ScriptedEngine
    from ttc.strategies import SelfConsistency
    from ttc.strategies.stopping import FixedN
    from ttc.types import Prompt

    texts = [r"So it is \boxed{3}.", r"Again \boxed{3}.", r"Thus \boxed{\frac12}.", r"Hence \boxed{0.5}.",
             r"Or \boxed{2^{-1}}."]
    r = await SelfConsistency(FixedN(5)).run(Prompt.of("q"), ScriptedEngine(texts))
    assert DEFAULT_EQUIVALENCE(r.answer, "0.5"), r.answer
    assert r.confidence == pytest.approx(3 / 5)
    # The same votes without the symbolic check: 3 has two votes, each form of one half one.
    r2 = await SelfConsistency(FixedN(5), eq=Equivalence(symbolic=False)).run(Prompt.of("q"), ScriptedEngine(texts))
    assert r2.answer == "3"
