"""Stopping rules against hand-computed posteriors, plus hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from ttc.strategies.stopping import (
    BetaRule,
    CertaindexEntropy,
    DeepConfConsensus,
    DirichletRule,
    ESCWindow,
    FixedN,
    beta_posterior,
    certaindex,
    dirichlet_posterior,
)
from ttc.types import Sample


def S(*answers: str | None, weights: list[float] | None = None) -> list[Sample]:
    return [
        Sample(index=i, text=str(a), num_tokens=5, answer=a, weight=None if weights is None else weights[i])
        for i, a in enumerate(answers)
    ]


def direct_integral(v1: int, v2: int) -> float:
    """P(p1 > p2) for p1 ~ Beta(v1+1, v2+1): the integral of x^v1 (1-x)^v2 over [0.5, 1] / [0, 1]."""
    f = lambda x: x**v1 * (1 - x) ** v2
    return integrate.quad(f, 0.5, 1)[0] / integrate.quad(f, 0, 1)[0]


@pytest.mark.parametrize("v1,v2", [(5, 1), (4, 0), (3, 0), (7, 3), (10, 2), (2, 2)])
def test_beta_posterior_matches_direct_integral(v1: int, v2: int) -> None:
    assert beta_posterior(v1, v2) == pytest.approx(direct_integral(v1, v2), abs=1e-9)


def test_beta_hand_values() -> None:
    # v1=5, v2=1: 1 - I_0.5(6, 2) = 1 - 7/128 (I_0.5(6,2) = sum_{j>=6} C(7,j)/2^7 = (7+1)/128 = 8/128)
    assert beta_posterior(5, 1) == pytest.approx(1 - 8 / 128)
    assert beta_posterior(4, 0) == pytest.approx(1 - 0.5**5)  # 0.96875: unanimous 4 stops
    assert beta_posterior(3, 0) == pytest.approx(1 - 0.5**4)  # 0.9375: 3 don't


def test_beta_rule_unanimous_stops_at_four() -> None:
    rule = BetaRule()
    assert not rule.check(S("7", "7", "7")).stop
    c = rule.check(S("7", "7", "7", "7"))
    assert c.stop and c.reason == "beta" and c.confidence == pytest.approx(0.96875)
    assert c.detail["v1"] == 4 and c.detail["v2"] == 0


def test_beta_rule_split_does_not_stop() -> None:
    c = BetaRule().check(S("1", "2", "1", "2", "1", "2"))
    assert not c.stop and c.confidence == pytest.approx(0.5)


def test_unparseable_never_wins_beta() -> None:
    rule = BetaRule(max_samples=None)
    c = rule.check(S(None, None, None, None, None, None, "3"))
    assert not c.stop
    assert c.detail["v1"] == 1 and c.detail["top"] == "3"
    assert rule.check(S(*([None] * 12))).stop is False


def test_max_samples_cap() -> None:
    c = BetaRule(max_samples=6).check(S("1", "2", "1", "2", "1", "2"))
    assert c.stop and c.reason == "max_samples"


def test_min_samples_validation() -> None:
    with pytest.raises(ValueError, match="max_samples"):
        BetaRule(min_samples=5, max_samples=3)
    with pytest.raises(ValueError, match="threshold"):
        BetaRule(threshold=1.5)


def test_dirichlet_falls_back_to_beta_with_two_classes() -> None:
    s = S("1", "1", "1", "1", "1", "2")
    c = DirichletRule().check(s)
    assert c.detail["fallback"] == "beta"
    assert c.confidence == pytest.approx(beta_posterior(5, 1)) == pytest.approx(0.9375)
    assert not c.stop  # 0.9375 < 0.95
    c = DirichletRule().check(S("1", "1", "1", "1", "1", "1", "2"))
    assert c.stop and c.confidence == pytest.approx(1 - 9 / 256)  # 1 - I_0.5(7, 2)


def test_dirichlet_monte_carlo_three_classes() -> None:
    s = S("1", "1", "1", "1", "1", "1", "2", "3")
    c = DirichletRule(draws=50000).check(s)
    assert c.detail["fallback"] is None
    # Reference by an independent Monte Carlo with a different seed.
    rng = np.random.default_rng(123)
    p = rng.dirichlet([7, 2, 2], size=200000)
    ref = float(np.mean(p[:, 0] > p[:, 1:].max(axis=1)))
    assert c.confidence == pytest.approx(ref, abs=0.01)
    # Deterministic per seed.
    assert DirichletRule(draws=50000).check(s).confidence == c.confidence
    # Symmetric case: 3 equal classes -> 1/3.
    assert dirichlet_posterior([3, 3, 3], draws=60000) == pytest.approx(1 / 3, abs=0.01)


def test_esc_window_unanimous() -> None:
    rule = ESCWindow(w=3, L=9)
    assert not rule.check(S("1", "2", "1")).stop
    assert not rule.check(S("1", "2", "1", "4", "4")).stop  # second window incomplete
    c = rule.check(S("1", "2", "1", "4", "4", "4"))
    assert c.stop and c.detail["window"] == 1 and c.detail["answer"] == "4"
    # An unparseable answer breaks unanimity.
    assert not rule.check(S("4", "4", None, "4", "5", "4")).stop
    # Windows are aligned: a unanimous run straddling two windows does not count.
    assert not rule.check(S("1", "4", "4", "4", "2", "3")).stop
    # Cap at L.
    c = rule.check(S("1", "2", "3") * 3)
    assert c.stop and c.reason == "max_samples"


def test_certaindex_values() -> None:
    assert certaindex(S("1")) == 0.0  # n = 1: no evidence of agreement
    assert certaindex(S("1", "1", "1", "1")) == pytest.approx(1.0)
    assert certaindex(S("1", "2", "3", "4")) == pytest.approx(0.0)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert certaindex(S("1", "1", "1", "2")) == pytest.approx((math.log(4) - h) / math.log(4))
    # Unparseable answers are singleton clusters: same as distinct answers.
    assert certaindex(S("1", "1", None, None)) == pytest.approx(certaindex(S("1", "1", "2", "3")))
    rule = CertaindexEntropy(threshold=0.8)
    assert not rule.check(S("1", "1", "1", "2")).stop
    assert rule.check(S("1", "1", "1", "1", "1", "1", "1", "2")).stop  # 0.819


def test_deepconf_consensus_weights() -> None:
    rule = DeepConfConsensus(tau=0.9, min_samples=3)
    c = rule.check(S("1", "1", "2", weights=[5.0, 5.0, 0.5]))
    assert c.confidence == pytest.approx(10 / 10.5) and c.stop and c.detail["top"] == "1"
    c = rule.check(S("1", "1", "2", weights=[1.0, 1.0, 1.0]))
    assert c.confidence == pytest.approx(2 / 3) and not c.stop
    # Unparseable weight dilutes the consensus, never wins.
    c = rule.check(S("1", None, None, weights=[1.0, 9.0, 9.0]))
    assert c.detail["top"] == "1" and c.confidence == pytest.approx(1 / 19)


def test_fixed_n() -> None:
    rule = FixedN(3)
    assert not rule.check(S("1", "2")).stop
    c = rule.check(S("1", "2", "1"))
    assert c.stop and c.reason == "fixed_n" and c.confidence == pytest.approx(2 / 3)


def test_equivalence_used_for_classes() -> None:
    c = BetaRule().check(S("12", "12.0", "12.00", "$12"))
    assert c.stop and c.detail["v1"] == 4


# -- properties -----------------------------------------------------------------------------
answers = st.lists(st.sampled_from(["1", "2", "3", None]), min_size=1, max_size=30)


@given(answers, st.integers(1, 8))
@settings(max_examples=150, deadline=None)
def test_never_stops_before_min_samples(ans: list, m: int) -> None:
    for rule in (BetaRule(min_samples=m, max_samples=None), CertaindexEntropy(min_samples=m, max_samples=None),
                 DirichletRule(min_samples=m, max_samples=None, draws=2000),
                 DeepConfConsensus(min_samples=m, max_samples=None)):
        if len(ans) < m:
            assert not rule.check(S(*ans)).stop


@given(st.integers(1, 20), st.integers(1, 30))
def test_fixed_n_stops_exactly_at_n(n: int, k: int) -> None:
    assert FixedN(n).check(S(*(["5"] * k))).stop == (k >= n)


@given(st.integers(0, 25), st.integers(0, 25))
@settings(max_examples=200)
def test_beta_monotone_in_leader_count(v1: int, v2: int) -> None:
    v2 = min(v2, v1)
    assert beta_posterior(v1 + 1, v2) >= beta_posterior(v1, v2) - 1e-12
    assert beta_posterior(v1, v2 + 1) <= beta_posterior(v1, v2) + 1e-12
    # Through the rule: adding a vote for the leader never lowers its confidence.
    base = ["1"] * v1 + ["2"] * v2
    if v1 > v2:
        rule = BetaRule(min_samples=1, max_samples=None)
        assert rule.check(S(*base, "1")).confidence >= rule.check(S(*base)).confidence - 1e-12


@given(answers, st.integers(1, 30))
def test_cap_always_respected(ans: list, cap: int) -> None:
    rule = BetaRule(min_samples=1, max_samples=cap)
    if len(ans) >= cap:
        assert rule.check(S(*ans)).stop


@given(answers)
def test_certaindex_in_unit_interval(ans: list) -> None:
    c = certaindex(S(*ans))
    assert 0.0 <= c <= 1.0


@given(answers)
@settings(max_examples=100)
def test_unparseable_never_reported_as_top(ans: list) -> None:
    c = BetaRule(min_samples=1, max_samples=None).check(S(*ans))
    assert c.detail.get("top") is not None or all(a is None for a in ans)
    if all(a is None for a in ans):
        assert not c.stop
