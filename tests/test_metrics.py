"""Estimators against brute force over every k-subset; intervals; the Pareto front."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ttc.bench.metrics import (
    best_of_k_weights,
    bootstrap_ci,
    expected_best_of_k,
    pareto_front,
    pass_at_k,
    summarize_runs,
    wilson_interval,
)


def brute_pass_at_k(correct: list[int], k: int) -> float:
    subs = list(itertools.combinations(range(len(correct)), k))
    return sum(any(correct[i] for i in s) for s in subs) / len(subs)


def brute_best_of_k(scores: list[float], values: list[float], k: int) -> float:
    """Average over k-subsets; ties for the top score split the value evenly (random tie-break)."""
    total = 0.0
    subs = list(itertools.combinations(range(len(scores)), k))
    for s in subs:
        top = max(scores[i] for i in s)
        tied = [i for i in s if scores[i] == top]
        total += sum(values[i] for i in tied) / len(tied)
    return total / len(subs)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_matches_brute_force(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(5):
        correct = list(rng.integers(0, 2, size=n))
        for k in range(1, n + 1):
            assert pass_at_k(n, sum(correct), k) == pytest.approx(brute_pass_at_k(correct, k), abs=1e-12)


def test_pass_at_k_closed_form_and_errors() -> None:
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - math.comb(7, 2) / math.comb(10, 2))
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 8, 3) == 1.0
    with pytest.raises(ValueError, match="k"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="c"):
        pass_at_k(4, 5, 1)


@pytest.mark.parametrize("n", [1, 3, 6, 9])
def test_expected_best_of_k_matches_brute_force_with_ties(n: int) -> None:
    rng = np.random.default_rng(100 + n)
    for trial in range(6):
        # few distinct scores so ties are common
        scores = list(rng.integers(0, 3 if trial % 2 else 100, size=n).astype(float))
        values = list(rng.integers(0, 2, size=n).astype(float))
        for k in range(1, n + 1):
            got = expected_best_of_k(scores, k, values=values)
            assert got == pytest.approx(brute_best_of_k(scores, values, k), abs=1e-12)
            # without values: the expected maximum score
            assert expected_best_of_k(scores, k) == pytest.approx(
                np.mean([max(scores[i] for i in s) for s in itertools.combinations(range(n), k)]), abs=1e-12
            )


def test_best_of_k_weights_are_a_distribution() -> None:
    for n in range(1, 12):
        for k in range(1, n + 1):
            w = best_of_k_weights(n, k)
            assert w.sum() == pytest.approx(1.0)
            assert (w[: k - 1] == 0).all()
    with pytest.raises(ValueError):
        expected_best_of_k([1.0, 2.0], 1, values=[1.0])


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_bootstrap_ci_covers_mean_and_is_seeded() -> None:
    x = np.random.default_rng(0).normal(3.0, 1.0, size=400)
    lo, hi = bootstrap_ci(x)
    assert lo < x.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 / 20, rel=0.25)  # ~ 2 z sigma / sqrt(n)
    assert bootstrap_ci(x, seed=1) == bootstrap_ci(x, seed=1)
    assert bootstrap_ci([2.0]) == (2.0, 2.0)


def test_pareto_front() -> None:
    costs = [1, 2, 3, 4, 2.5]
    accs = [0.3, 0.5, 0.45, 0.7, 0.6]
    assert pareto_front(costs, accs) == [0, 1, 4, 3]


def test_summarize_runs() -> None:
    rows = [{"type": "result", "correct": i % 4 == 0, "latency_s": 0.1 * i,
             "usage": {"prompt_tokens": 10, "completion_tokens": 5 + i, "calls": 1, "generations": 2}}
            for i in range(8)]
    s = summarize_runs(rows)
    assert s["n"] == 8 and s["accuracy"] == 0.25
    assert (s["accuracy_lo"], s["accuracy_hi"]) == pytest.approx(wilson_interval(2, 8))
    assert s["completion_tokens"] == pytest.approx(8.5)
    assert s["total_tokens"] == pytest.approx(18.5)
    assert s["latency_p50"] == pytest.approx(0.35)
