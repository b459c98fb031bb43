"""Gain estimates, coverage curves, fLaws and difficulty signals against hand-computed
values and brute-force enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from ttc.strategies.difficulty import (
    DifficultyBins,
    EmbeddingPredictor,
    RouterEntropy,
    agreement,
    normalized_entropy,
    quantile_edges,
    verifier_difficulty,
)
from ttc.strategies.gain import (
    CoverageCurves,
    coverage_curve,
    dirichlet_vote_gain,
    estimate_cf,
    fit_coverage_curve,
    flaws_cap,
    flaws_next_try_gain,
    flaws_optimal_k,
    flaws_success,
    flaws_utility,
    pass_at_k,
    prob_leader_is_mode,
    settle_probability,
    vote_gain_beta,
)
from ttc.strategies.stats import beta_cdf_half, certaindex, class_sizes
from ttc.types import Sample

# -- Beta posterior ---------------------------------------------------------------------------


@pytest.mark.parametrize("a,b", [(1, 1), (5, 1), (4, 2), (7, 3), (2.5, 1.5), (10, 10)])
def test_beta_cdf_half_matches_scipy(a, b):
    assert beta_cdf_half(a, b) == pytest.approx(stats.beta.cdf(0.5, a, b), abs=1e-12)


def test_prob_leader_is_mode_hand_values():
    assert prob_leader_is_mode(0, 0) == 0.5
    assert prob_leader_is_mode(4, 0) == pytest.approx(1 - 1 / 32)  # Beta rule: unanimous 4 stops at 0.95
    assert prob_leader_is_mode(3, 0) == pytest.approx(1 - 1 / 16)
    assert prob_leader_is_mode(3, 1) == pytest.approx(1 - 6 / 32)  # I_.5(4,2) = P(Bin(5,.5) >= 4)
    with pytest.raises(ValueError, match="counts"):
        prob_leader_is_mode(-1, 0)


def test_vote_gain_hand_value():
    # counts (0,0): now 1/2; one vote -> (1,0) or (0,1), each worth P(theta>1/2 | Beta(2,1)) = 3/4.
    assert vote_gain_beta(0, 0, 1) == pytest.approx(0.25)
    assert vote_gain_beta(3, 1, 0) == 0.0


def _brute_gain(v1: int, v2: int, m: int, grid: int = 200_000) -> float:
    theta = (np.arange(grid) + 0.5) / grid
    dens = stats.beta.pdf(theta, v1 + 1, v2 + 1) / grid
    truth = theta > 0.5
    now = np.sign(v1 - v2)
    right_now = np.where(now == 0, 0.5, np.where(now > 0, truth, ~truth))
    right_after = np.zeros_like(theta)
    for j in range(m + 1):
        pj = stats.binom.pmf(j, m, theta)
        d = np.sign((v1 + j) - (v2 + m - j))
        right_after += pj * np.where(d == 0, 0.5, np.where(d > 0, truth, ~truth))
    return float((dens * right_after).sum() - (dens * right_now).sum())


@pytest.mark.parametrize("v1,v2,m", [(0, 0, 1), (1, 0, 2), (2, 1, 1), (3, 1, 2), (2, 2, 3), (5, 2, 4), (4, 0, 2)])
def test_vote_gain_matches_numerical_integration(v1, v2, m):
    assert vote_gain_beta(v1, v2, m) == pytest.approx(_brute_gain(v1, v2, m), abs=2e-4)


def test_vote_gain_is_larger_for_contested_questions():
    assert vote_gain_beta(2, 2, 2) > vote_gain_beta(4, 1, 2) > vote_gain_beta(8, 0, 2)
    assert vote_gain_beta(2, 2, 4) >= vote_gain_beta(2, 2, 2)  # more samples never hurt


def test_settle_probability():
    # From (3, 0), one more vote for the leader gives (4, 0): 0.969 >= 0.95. P(j=1) = 4/5.
    assert settle_probability(3, 0, 1) == pytest.approx(4 / 5)
    assert settle_probability(4, 0, 0) == 1.0


def test_dirichlet_gain_agrees_with_beta_on_two_classes():
    rng = np.random.default_rng(0)
    for counts, m in [((3, 1), 2), ((2, 2), 1), ((1, 0), 2)]:
        mc = dirichlet_vote_gain(counts, m, rng, draws=40_000)
        assert mc == pytest.approx(vote_gain_beta(*counts, m), abs=0.012)


def test_dirichlet_gain_three_classes_is_positive_and_bounded():
    rng = np.random.default_rng(1)
    g = dirichlet_vote_gain((2, 2, 1), 3, rng, draws=5000, unseen_alpha=0.5)
    assert 0.0 < g < 0.5


# -- coverage -------------------------------------------------------------------------------


def _brute_pass_at_k(n: int, c: int, k: int) -> float:
    items = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(items[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(5, 0, 2), (5, 1, 1), (6, 2, 3), (7, 3, 5), (8, 1, 7), (4, 4, 2), (6, 1, 6)])
def test_pass_at_k_matches_brute_force(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k))


def test_pass_at_k_rejects_bad_input():
    with pytest.raises(ValueError, match="pass_at_k"):
        pass_at_k(3, 4, 1)


@pytest.mark.parametrize("a,b", [(-2.0, -0.5), (-0.7, -0.3), (-5.0, -1.0)])
def test_coverage_fit_recovers_parameters(a, b):
    ks = np.arange(1, 65)
    cov = coverage_curve(ks, a, b)
    a2, b2 = fit_coverage_curve(ks, cov)
    assert a2 == pytest.approx(a, rel=1e-6)
    assert b2 == pytest.approx(b, rel=1e-6)


def test_coverage_fit_with_noise_is_close():
    rng = np.random.default_rng(0)
    ks = np.arange(1, 33)
    cov = np.clip(coverage_curve(ks, -1.5, -0.6) * (1 + rng.normal(0, 0.003, ks.size)), 1e-6, 1 - 1e-6)
    a, b = fit_coverage_curve(ks, cov)
    assert a == pytest.approx(-1.5, rel=0.1) and b == pytest.approx(-0.6, rel=0.1)


def test_coverage_curves_per_bin_from_counts():
    curves = CoverageCurves.fit({0: [(16, 12), (16, 9)], 1: [(16, 2), (16, 1), (16, 0)], 2: [(16, 0)] * 3})
    assert 0 in curves.params and 1 in curves.params
    assert curves(2, 8) == 0.0 and curves.gain(2, 4, 4) == 0.0  # never solved: no gain
    # pass@1 of bin 0 is 21/32, of bin 1 3/48; the fits are in the neighbourhood and gains shrink with k.
    assert curves(0, 1) == pytest.approx(21 / 32, abs=0.15)
    assert curves(1, 1) == pytest.approx(3 / 48, abs=0.05)
    assert curves.gain(1, 2, 2) > curves.gain(1, 8, 2) > 0
    with pytest.raises(ValueError, match="coverage"):
        fit_coverage_curve([1, 2], [1.0, 1.0])


# -- fLaws --------------------------------------------------------------------------------------


def _enumerate_resample(c: float, f: float, k: int, fp_cost: float, abstain_cost: float, cost_per_try: float):
    """All 3^k outcome sequences; resample until the first pass."""
    p_correct = util = 0.0
    for seq in itertools.product("cfx", repeat=k):
        p = math.prod({"c": c, "f": f, "x": 1 - c - f}[o] for o in seq)
        tries, outcome = k, "abstain"
        for i, o in enumerate(seq):
            if o != "x":
                tries, outcome = i + 1, o
                break
        value = {"c": 1.0, "f": -fp_cost, "abstain": -abstain_cost}[outcome] - cost_per_try * tries
        p_correct += p * (outcome == "c")
        util += p * value
    return p_correct, util


@pytest.mark.parametrize("c,f,k", [(0.3, 0.1, 1), (0.3, 0.1, 4), (0.05, 0.2, 6), (0.6, 0.0, 3), (0.0, 0.3, 5)])
def test_flaws_success_and_utility_match_enumeration(c, f, k):
    p, u = _enumerate_resample(c, f, k, fp_cost=2.0, abstain_cost=0.3, cost_per_try=0.01)
    assert flaws_success(c, f, k) == pytest.approx(p)
    assert flaws_utility((c, f), k, fp_cost=2.0, abstain_cost=0.3, cost_per_try=0.01) == pytest.approx(u)


def test_flaws_cap_is_the_limit():
    assert flaws_cap(0.3, 0.1) == pytest.approx(0.75)
    assert flaws_success(0.3, 0.1, 500) == pytest.approx(0.75)
    assert flaws_success(0.3, 0.1, 3) < 0.75
    with pytest.raises(ValueError, match="fLaws"):
        flaws_cap(0.8, 0.5)


POP = [(0.6, 0.02, 1.0), (0.2, 0.05, 1.0), (0.02, 0.15, 1.0), (0.0, 0.1, 1.0)]


def test_flaws_optimal_k_matches_brute_force_over_population():
    for fp_cost in (0.5, 1.0, 3.0):
        utils = []
        for k in range(9):
            u = np.mean([_enumerate_resample(c, f, k, fp_cost, 0.0, 0.0)[1] for c, f, _ in POP])
            utils.append(u)
        assert flaws_optimal_k(POP, fp_cost=fp_cost, k_max=8) == int(np.argmax(utils))


def test_flaws_optimal_k_is_finite_and_small_with_costly_false_positives():
    k = flaws_optimal_k(POP, fp_cost=0.5, k_max=100)
    assert 0 < k < 10
    # Costlier false positives: fewer tries.
    assert flaws_optimal_k(POP, fp_cost=2.0) < flaws_optimal_k(POP, fp_cost=1.0) < k
    # A single question with c > fp_cost * f: resampling always pays (the optimum is k_max).
    assert flaws_optimal_k((0.3, 0.05), fp_cost=1.0, k_max=50) == 50
    assert flaws_optimal_k((0.05, 0.3), fp_cost=1.0, k_max=50) == 0
    # The marginal try's value falls with each failure and is negative from the optimum on.
    gains = [flaws_next_try_gain(POP, t, fp_cost=0.5) for t in range(12)]
    assert all(a >= b for a, b in itertools.pairwise(gains))
    assert gains[k - 1] > 0 >= gains[k]


def test_estimate_cf():
    c, f = estimate_cf(30, 10, 100, prior=0.0)
    assert (c, f) == (0.3, 0.1)
    with pytest.raises(ValueError):
        estimate_cf(60, 50, 100)


# -- difficulty signals ---------------------------------------------------------------------------


def _s(answers):
    return [Sample(index=i, text=str(a), num_tokens=1, answer=a) for i, a in enumerate(answers)]


def test_agreement_and_certaindex():
    assert agreement(_s(["4", "4", "4.0", "5"])) == 0.75
    assert agreement(_s([None, None])) == 0.0 and agreement([]) == 0.0
    assert class_sizes(["1", "2", "2", None]) == [2, 1]
    assert certaindex(["7"] * 5) == pytest.approx(1.0)
    assert certaindex(["1", "2", "3", "4"]) == pytest.approx(0.0)
    mixed = ["1", "1", "1", "2"]
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert certaindex(mixed) == pytest.approx((math.log(4) - h) / math.log(4))
    assert certaindex(["1", "1", None, None]) < certaindex(["1", "1"])  # unparseable = singletons


def test_certaindex_agrees_with_stopping_module():
    from ttc.strategies.stopping import certaindex as other

    s = _s(["1", "1", "2", "3", "1", None])
    assert certaindex(s) == pytest.approx(other(s), abs=1e-9)


def test_verifier_and_router_entropy():
    assert verifier_difficulty([0.9, 0.7]) == pytest.approx(0.2)
    assert normalized_entropy([0.25] * 4) == pytest.approx(1.0)
    assert normalized_entropy([1.0, 0.0]) == pytest.approx(0.0)
    assert RouterEntropy(lambda q: [0.5, 0.5] if "hard" in q else [0.99, 0.01])("hard one") > 0.9
    with pytest.raises(ValueError):
        verifier_difficulty([])


def test_embedding_predictor_ridge_and_logistic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    w = np.array([0.3, -0.2, 0.0, 0.1, 0.0, 0.05])
    y = 0.5 + 0.3 * (x @ w) + rng.normal(0, 0.01, 300)
    ridge = EmbeddingPredictor(kind="ridge", l2=1e-3).fit(x, y)
    assert np.abs(ridge.predict(x) - np.clip(y, 0, 1)).mean() < 0.02
    labels = (rng.random(300) < 1 / (1 + np.exp(-(x @ (4 * w))))).astype(float)
    logit = EmbeddingPredictor(kind="logistic", l2=1e-2).fit(x, labels)
    assert np.corrcoef(logit.w, w)[0, 1] > 0.9
    # any callable text -> vector is an encoder
    enc = {"easy": [1.0, 0.0], "hard": [0.0, 1.0], "mid": [0.5, 0.5]}
    p = EmbeddingPredictor(encoder=enc.__getitem__, l2=1e-6).fit(["easy", "hard"], [0.9, 0.1])
    assert p.difficulty("hard") > p.difficulty("mid") > p.difficulty("easy")
    with pytest.raises(ValueError, match="encoder"):
        EmbeddingPredictor().fit(["a"], [1.0])


def test_difficulty_bins():
    edges = quantile_edges(list(range(100)), 5)
    assert len(edges) == 4
    bins = DifficultyBins.fit(list(range(100)), 5)
    assert [bins(v) for v in (0, 30, 99)] == [0, 1, 4] and bins.n_bins == 5


def test_majority_curves_hand_computed():
    from ttc.strategies.gain import MajorityCurves

    # q1: right, right, wrong -> correct at n = 1, 2, 3
    # q2: wrong, right, right -> 0 at n=1; a 1:1 tie at n=2 counts 1/2; correct at n=3
    c = MajorityCurves.fit([(0, ["1", "1", "2"], "1"), (0, ["2", "1", "1"], "1")], orders=1)
    assert c.acc[0] == pytest.approx([0.5, 0.75, 1.0])
    assert c.counts == {0: 2}
    assert c(0, 2) == pytest.approx(0.75)
    assert c(0, 10) == pytest.approx(1.0)  # flat beyond the fitted K
    assert c.gain(0, 1, 2) == pytest.approx(0.5)
    assert c.gain(0, 3, 5) == 0.0
    assert c(7, 3) == 0.0 and c.gain(7, 1, 1) == 0.0  # unknown bin


def test_majority_curves_are_non_decreasing_and_keep_the_first_samples():
    from ttc.strategies.gain import MajorityCurves

    # unparseable answers vote for nothing; the running max keeps gains >= 0
    qs = [(1, [None, "5", "6", "6", "5", "5"], "5"), (1, ["6", "6", "5", "5", "5", None], "5")]
    c = MajorityCurves.fit(qs, keep_first=2, orders=32, seed=3)
    assert all(b >= a for a, b in zip(c.acc[1], c.acc[1][1:]))
    assert c.acc[1][0] == pytest.approx(0.0)  # n=1: q1 has no vote, q2 votes "6" in every order (kept first)
    with pytest.raises(ValueError, match="empty"):
        MajorityCurves.fit([])


def test_agreement_bin_edges():
    from ttc.strategies.gain import agreement_bin

    assert [agreement_bin(x) for x in (1.0, 0.75, 0.5, 0.25, 0.0)] == [0, 1, 2, 3, 3]
    assert agreement_bin(0.8, edges=(0.9, 0.5)) == 1
