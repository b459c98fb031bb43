"""Comparing step-wise searches on the same questions (:mod:`ttc.bench.compare`): the
equal-token and paired comparisons that benchmarks/stepwise_search.py prints."""

from __future__ import annotations

import pytest

from ttc.bench import compare as bench
from ttc.bench.metrics import mcnemar_p


def test_interpolation_is_linear_inside_and_clamped_outside() -> None:
    pts = [(300.0, 0.4), (150.0, 0.2)]
    assert bench.interpolate(pts, 200.0) == (pytest.approx(0.2 + 0.2 * 50 / 150), "")
    assert bench.interpolate(pts, 150.0) == (0.2, "")
    assert bench.interpolate(pts, 100.0) == (0.2, " (its fewest tokens)")
    assert bench.interpolate(pts, 900.0) == (0.4, " (its most tokens)")


def test_pf_is_compared_with_the_best_baseline_at_its_tokens() -> None:
    rows = [
        (4, "particle filtering", 0.3, 200.0, 0, 0, 0),
        (4, "beam search (M=2)", 0.2, 150.0, 0, 0, 0),
        (8, "beam search (M=4)", 0.4, 300.0, 0, 0, 0),
        (4, "weighted best-of-N", 0.1, 100.0, 0, 0, 0),
        (8, "weighted best-of-N", 0.5, 250.0, 0, 0, 0),
        (8, "particle filtering", 0.5, 400.0, 0, 0, 0),
        (8, "particle filtering (resample when ESS < N/2)", 0.1, 300.0, 0, 0, 0),
    ]
    lines = [x for x in bench.equal_token_comparison(rows) if x.startswith("- ")]
    assert len(lines) == 3
    # at 200 tokens: beam 0.267, best-of-N 0.1 + 0.4 * 100/150 = 0.367 > PF 0.3
    assert lines[0].startswith("- N=4: PF 0.300 at 200 tokens/q < best baseline 0.367")
    # at 400 tokens both baselines are past their curve: their largest-N points
    assert lines[1].startswith("- N=8: PF 0.500 at 400 tokens/q >= best baseline 0.500")
    assert "(its most tokens)" in lines[1]
    # each PF variant is named: at 300 tokens beam 0.4, best-of-N 0.5 (its most tokens)
    assert lines[2].startswith("- N=8: PF (resample when ESS < N/2) 0.100 at 300 tokens/q < best baseline 0.500")


def test_mcnemar_exact_p() -> None:
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(3, 3) == 1.0
    assert mcnemar_p(0, 5) == pytest.approx(2 / 32)  # all 5 discordant pairs one way
    assert mcnemar_p(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_p(9, 1) == mcnemar_p(1, 9)


def test_paired_comparison_counts_discordant_questions_at_the_same_n() -> None:
    correct = {
        (8, "particle filtering"): [True, True, False, False, True],
        (8, "weighted best-of-N"): [True, False, True, False, False],
        (4, "weighted best-of-N"): [False] * 5,  # another N: not paired with N=8
    }
    lines = [x for x in bench.paired_comparison(correct) if x.startswith("- ")]
    assert lines == ["- N=8: particle filtering vs weighted best-of-N: only PF right 2, "
                     "only weighted best-of-N right 1 (McNemar exact p = 1.00)"]


def test_selection_rules_vote_among_finished_candidates() -> None:
    import numpy as np

    from ttc.types import Sample

    def s(answer, score, weight, finished=True):  # type: ignore[no-untyped-def]
        return Sample(index=0, text="", num_tokens=1, answer=answer, score=score, weight=weight,
                      meta={"finished": finished})

    samples = [s("7", 0.9, 0.70), s("5", 0.6, 0.10), s("5", 0.6, 0.10), s("5", 0.6, 0.10),
               s("9", 0.99, 0.9, finished=False)]  # unfinished: not a candidate while others finished
    picks = bench.selection_rules(samples, np.random.default_rng(0))
    assert picks == {"weights": "7", "rewards": "5", "count": "5"}  # 0.7 > 0.3; 1.8 > 0.9; 3 > 1
    # nothing finished: the partial ones are the candidates
    assert bench.selection_rules([s("9", 0.5, 1.0, finished=False)], np.random.default_rng(0))["count"] == "9"


def test_grade_and_rule_rights_count_per_question() -> None:
    from ttc.questions import Example
    from ttc.types import Sample, StrategyResult

    def s(answer, weight, score):  # type: ignore[no-untyped-def]
        return Sample(index=0, text="", num_tokens=1, answer=answer, score=score, weight=weight,
                      meta={"finished": True})

    examples = [Example(id="a", question="?", answer="5"), Example(id="b", question="?", answer="8")]
    results = [
        # right answer "5" (written 5.0), chosen by weights; rewards and count pick "7"
        StrategyResult(strategy="pf", answer="5.0", samples=[s("5", 0.8, 0.1), s("7", 0.1, 0.6), s("7", 0.1, 0.6)]),
        # wrong, and "8" is not among the candidates either
        StrategyResult(strategy="pf", answer="3", samples=[s("3", 1.0, 1.0)]),
    ]
    right, covered = bench.grade(results, examples)
    assert right == [True, False]
    assert covered == 1
    assert bench.rule_rights(results, examples, seed=0) == {"weights": 1, "rewards": 0, "count": 0}
