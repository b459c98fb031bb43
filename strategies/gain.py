"""Expected-gain estimates for adaptive compute allocation: what one more unit of
compute (a batch of samples for one question) is expected to buy in accuracy.

Three families, all pure functions (the allocator in :mod:`ttc.strategies.allocator`
turns them into a priority = expected accuracy gain per token):

* **Vote posterior** (Adaptive-Consistency, Aggarwal et al. 2023, Beta rule; Dirichlet
  variant). With v1, v2 the counts of the two most common answers and a uniform prior,
  the share theta = p1 / (p1 + p2) has posterior Beta(v1 + 1, v2 + 1) and the current
  leader is the mode of the sampling distribution with probability
  ``P(theta > 1/2) = 1 - I_0.5(v1 + 1, v2 + 1)``. Drawing m more top-two votes gives
  j ~ BetaBinomial(m, v1 + 1, v2 + 1) of them to the leader; the majority decision
  afterwards is right (picks the mode) with probability ``max(P_j, 1 - P_j)``. The
  expected gain is ``E_j[max(P_j, 1 - P_j)] - max(P, 1 - P)`` (the value of
  information; >= 0). Self-consistency's accuracy is the probability that the mode is
  correct times the probability that the vote finds the mode, so this is the accuracy
  gain under the assumption "the mode is correct" (scale it by a calibrated
  P(mode correct) when one is known).
* **Coverage curves** (Large Language Monkeys, Brown et al. 2024): coverage grows as
  ``log(coverage(k)) = a * k**b`` (a < 0, b < 0); fitted offline per difficulty bin from
  unbiased pass@k estimates ``1 - C(n - c, k) / C(n, k)``.
* **Majority-vote curves** (Snell et al. 2024, per-bin compute-optimal allocation with
  majority voting as the strategy): per difficulty bin (e.g. the agreement of the first
  round), the accuracy of the majority of the first n samples, measured offline on
  labelled questions; the gain of m more samples is ``acc(n + m) - acc(n)``. Unlike the
  vote posterior it knows that a flat vote rarely ends correct, and that a unanimous
  first round rarely changes.
* **Imperfect verifiers** ("Inference Scaling fLaws"): with c = P(correct and passes)
  and f = P(wrong and passes), resample-until-pass with K tries returns a correct
  answer with probability ``c * (1 - (1 - c - f)**K) / (c + f)``, capped at c / (c + f).
  For one (c, f) the expected utility is monotone in K (the optimum is 0 or infinity);
  over a *population* of questions with different (c, f) the posterior after t failed
  tries shifts toward questions that rarely pass, the marginal try is worth less and
  less, and the optimal K is finite (below 10 when false positives are costly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .stats import Equiv, beta_posterior

# -- Beta / vote posterior -----------------------------------------------------------------


def prob_leader_is_mode(v1: int, v2: int, prior: float = 1.0) -> float:
    """P(p1 > p2 | v1 votes for the leader, v2 for the runner-up):
    :func:`ttc.strategies.stats.beta_posterior` (the Beta rule's posterior)."""
    return beta_posterior(v1, v2, prior)


def beta_binomial_pmf(j: int, m: int, a: float, b: float) -> float:
    """P(j successes in m trials) when the success rate is Beta(a, b)."""
    if not 0 <= j <= m:
        return 0.0
    lb = math.lgamma(j + a) + math.lgamma(m - j + b) - math.lgamma(m + a + b)
    lb -= math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return math.comb(m, j) * math.exp(lb)


def decision_value(v1: int, v2: int, prior: float = 1.0) -> float:
    """P(the majority decision on counts (v1, v2) is the mode): ``max(P, 1 - P)``."""
    p = prob_leader_is_mode(v1, v2, prior)
    return max(p, 1.0 - p)


def vote_gain_beta(v1: int, v2: int, m: int, prior: float = 1.0) -> float:
    """Expected increase in P(majority vote = mode) from ``m`` more top-two votes.

    Exact: enumerates j ~ BetaBinomial(m, v1 + prior, v2 + prior) (see module doc).
    """
    if m < 0:
        raise ValueError(f"vote_gain_beta: m must be >= 0, got {m}")
    if m == 0:
        return 0.0
    a, b = v1 + prior, v2 + prior
    after = sum(
        beta_binomial_pmf(j, m, a, b) * decision_value(v1 + j, v2 + m - j, prior) for j in range(m + 1)
    )
    return max(0.0, after - decision_value(v1, v2, prior))


def settle_probability(v1: int, v2: int, m: int, threshold: float = 0.95, prior: float = 1.0) -> float:
    """Probability that after ``m`` more top-two votes the Beta rule fires
    (``max(P, 1 - P) >= threshold``)."""
    a, b = v1 + prior, v2 + prior
    return sum(
        beta_binomial_pmf(j, m, a, b)
        for j in range(m + 1)
        if decision_value(v1 + j, v2 + m - j, prior) >= threshold
    )


def dirichlet_vote_gain(
    counts: Sequence[int],
    m: int,
    rng: np.random.Generator,
    *,
    alpha: float = 1.0,
    unseen_alpha: float = 0.0,
    draws: int = 4000,
) -> float:
    """Monte Carlo version of :func:`vote_gain_beta` over all answer classes.

    p ~ Dirichlet(counts + alpha) (plus one "unseen answer" class with weight
    ``unseen_alpha`` if > 0); the truth is argmax p; the decision now is the majority
    of ``counts``, after ``m`` more draws the majority of the new counts (ties split
    evenly). Returns E[right after] - E[right now].
    """
    c = np.asarray(list(counts), dtype=float)
    if c.size == 0:
        c = np.zeros(1)
    if unseen_alpha > 0:
        c = np.append(c, 0.0)
        conc = c + alpha
        conc[-1] = unseen_alpha
    else:
        conc = c + alpha
    p = rng.dirichlet(conc, size=draws)
    truth = p.argmax(axis=1)

    def right(cnt: np.ndarray) -> np.ndarray:
        best = cnt == cnt.max(axis=-1, keepdims=True)
        return best[np.arange(len(truth)), truth] / best.sum(axis=-1)

    now = right(np.broadcast_to(c, p.shape).copy())
    new = c + np.array([rng.multinomial(m, pi) for pi in p]) if m > 0 else np.broadcast_to(c, p.shape)
    return float(max(0.0, right(np.asarray(new, dtype=float)).mean() - now.mean()))


# -- coverage curves -------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: ``1 - C(n - c, k) / C(n, k)``."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def coverage_curve(k: float | np.ndarray, a: float, b: float) -> float | np.ndarray:
    """Coverage at k samples: ``exp(a * k**b)`` (Large Language Monkeys)."""
    return np.exp(a * np.power(k, b))


def fit_coverage_curve(
    ks: Sequence[float], coverage: Sequence[float], saturation: float = 1e-3
) -> tuple[float, float]:
    """Fit ``log(coverage) = a * k**b`` by least squares on
    ``log(-log coverage) = log(-a) + b log k`` over the points with coverage in
    (0, 1 - saturation) (saturated points would dominate the log-log fit).

    Returns (a, b). Raises ValueError with fewer than two usable points.
    """
    k = np.asarray(ks, dtype=float)
    cov = np.asarray(coverage, dtype=float)
    ok = (cov > 0) & (cov < 1 - saturation) & (k > 0)
    if ok.sum() < 2:
        raise ValueError("fit_coverage_curve: need >= 2 points with coverage strictly between 0 and 1 - saturation")
    x, y = np.log(k[ok]), np.log(-np.log(cov[ok]))
    b, log_neg_a = np.polyfit(x, y, 1)
    return -float(np.exp(log_neg_a)), float(b)


@dataclass
class CoverageCurves:
    """Per-difficulty-bin coverage curves fitted offline (Snell et al. bins +
    Large Language Monkeys curve shape). ``params[bin] = (a, b)``; a bin whose
    questions were never (or always) solved gets a flat curve at its rate."""

    params: dict[int, tuple[float, float]] = field(default_factory=dict)
    flat: dict[int, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, counts_by_bin: dict[int, Sequence[tuple[int, int]]]) -> CoverageCurves:
        """``counts_by_bin[bin] = [(n, c), ...]``: n samples per question, c correct."""
        out = cls()
        for bin_, rows in counts_by_bin.items():
            n_min = min(n for n, _ in rows)
            ks = list(range(1, n_min + 1))
            cov = [float(np.mean([pass_at_k(n, c, k) for n, c in rows])) for k in ks]
            try:
                out.params[bin_] = fit_coverage_curve(ks, cov)
            except ValueError:
                out.flat[bin_] = cov[-1]
        return out

    def __call__(self, bin_: int, k: float) -> float:
        if bin_ in self.params:
            return float(coverage_curve(max(k, 1e-9), *self.params[bin_]))
        return self.flat.get(bin_, 0.0)

    def gain(self, bin_: int, k: int, m: int) -> float:
        """Coverage gained by going from k to k + m samples in this bin."""
        return max(0.0, self(bin_, k + m) - (self(bin_, k) if k > 0 else 0.0))


@dataclass
class MajorityCurves:
    """Per-bin accuracy of the majority vote after n samples, fitted offline.

    ``acc[bin][n - 1]`` for n = 1..K, made non-decreasing (running maximum) so a gain is
    never negative; beyond K the curve is flat. Plugs into the allocator's
    :class:`~ttc.strategies.allocator.CurveGain` (``gain(bin, n, m)``).
    """

    acc: dict[int, list[float]] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)  # questions per bin in the fit

    @classmethod
    def fit(
        cls,
        questions: Sequence[tuple[int, Sequence[str | None], str]],
        *,
        keep_first: int = 0,
        orders: int = 16,
        seed: int = 0,
        eq: Equiv | None = None,
    ) -> MajorityCurves:
        """``questions``: (bin, answers in draw order, reference). The accuracy at n is the
        mean over the bin's questions and over ``orders`` random orders of the samples
        after the first ``keep_first`` (the bin was read off those, so they stay first);
        ties in the vote count half for each tied class (their expected value under a
        random tie break)."""
        from ttc.answers import DEFAULT_EQUIVALENCE, group_answers

        eq = eq or DEFAULT_EQUIVALENCE
        if not questions:
            raise ValueError("questions: empty")
        k = min(len(a) for _, a, _ in questions)
        if k < 1:
            raise ValueError("questions: every question needs at least one sample")
        rng = np.random.default_rng(seed)
        sums: dict[int, np.ndarray] = {}
        out = cls()
        for b, answers, ref in questions:
            answers = list(answers[:k])
            classes = group_answers(answers, eq)
            label = [-1] * k
            for ci, c in enumerate(classes):
                for i in c.members:
                    label[i] = ci
            right = {ci for ci, c in enumerate(classes) if eq(c.answer, ref)}
            curve = np.zeros(k)
            for o in range(orders):
                order = list(range(k))
                if o:
                    tail = order[keep_first:]
                    rng.shuffle(tail)
                    order = order[:keep_first] + tail
                votes: dict[int, int] = {}
                for n, i in enumerate(order, start=1):
                    if label[i] >= 0:
                        votes[label[i]] = votes.get(label[i], 0) + 1
                    if votes:
                        top = max(votes.values())
                        lead = [c for c, v in votes.items() if v == top]
                        curve[n - 1] += sum(c in right for c in lead) / len(lead)
            sums[b] = sums.get(b, np.zeros(k)) + curve / orders
            out.counts[b] = out.counts.get(b, 0) + 1
        for b, total in sums.items():
            out.acc[b] = np.maximum.accumulate(total / out.counts[b]).tolist()
        return out

    def __call__(self, bin_: int, n: int) -> float:
        curve = self.acc.get(bin_)
        if not curve or n < 1:
            return 0.0
        return curve[min(n, len(curve)) - 1]

    def gain(self, bin_: int, n: int, m: int) -> float:
        """Accuracy gained by going from n to n + m samples in this bin (0 beyond K)."""
        return max(0.0, self(bin_, n + m) - self(bin_, n))


def agreement_bin(view_or_share: Any, edges: Sequence[float] = (0.99, 0.74, 0.49)) -> int:
    """Difficulty bin from the leader's vote share (a QuestionView's ``agreement`` or a
    number): 0 = unanimous, then one bin per edge passed downward; the last bin holds
    flat votes. A label-free signal (self-consistency's agreement tracks accuracy)."""
    share = float(getattr(view_or_share, "agreement", view_or_share))
    for i, e in enumerate(edges):
        if share >= e:
            return i
    return len(edges)


# -- imperfect verifiers (fLaws) -------------------------------------------------------------


def flaws_success(c: float, f: float, k: int) -> float:
    """P(correct answer returned) by resample-until-pass with k tries:
    ``c * (1 - (1 - c - f)**k) / (c + f)``."""
    _check_cf(c, f)
    if c + f == 0:
        return 0.0
    return c * (1.0 - (1.0 - c - f) ** k) / (c + f)


def flaws_cap(c: float, f: float) -> float:
    """The most resampling can reach: c / (c + f)."""
    _check_cf(c, f)
    return c / (c + f) if c + f > 0 else 0.0


def _check_cf(c: float, f: float) -> None:
    if c < 0 or f < 0 or c + f > 1 + 1e-12:
        raise ValueError(f"fLaws: need c >= 0, f >= 0, c + f <= 1; got c={c}, f={f}")


Population = Sequence[tuple[float, float, float]]  # (c, f, weight)


def _as_pop(pop: Population | tuple[float, float]) -> list[tuple[float, float, float]]:
    if isinstance(pop, tuple) and len(pop) == 2 and not isinstance(pop[0], (tuple, list)):
        return [(float(pop[0]), float(pop[1]), 1.0)]  # type: ignore[arg-type]
    rows = [(float(c), float(f), float(w)) for c, f, w in pop]  # type: ignore[misc]
    for c, f, _ in rows:
        _check_cf(c, f)
    return rows


def flaws_utility(
    pop: Population | tuple[float, float],
    k: int,
    *,
    fp_cost: float,
    abstain_cost: float = 0.0,
    cost_per_try: float = 0.0,
) -> float:
    """Expected utility of resample-until-pass with at most k tries (then abstain),
    averaged over a population of questions ``[(c, f, weight), ...]`` (or one (c, f)):
    +1 for a correct answer, -fp_cost for a wrong one that passed, -abstain_cost for
    abstaining, -cost_per_try per sample drawn."""
    rows = _as_pop(pop)
    tot_w = sum(w for *_, w in rows)
    u = 0.0
    for c, f, w in rows:
        s, q = c + f, 1.0 - c - f
        passed = 1.0 - q**k
        tries = passed / s if s > 0 else float(k)
        val = (c - fp_cost * f) / s * passed if s > 0 else 0.0
        u += w * (val - abstain_cost * q**k - cost_per_try * tries)
    return u / tot_w


def flaws_next_try_gain(
    pop: Population | tuple[float, float],
    failures: int,
    *,
    fp_cost: float,
    abstain_cost: float = 0.0,
    cost_per_try: float = 0.0,
) -> float:
    """Expected utility of one more try for a question that failed ``failures`` tries,
    versus abstaining now: the population posterior weights each (c, f) by
    ``w * (1 - c - f)**failures``; the try is worth ``c - fp_cost*f + abstain_cost*(c+f)
    - cost_per_try``."""
    rows = _as_pop(pop)
    post = [(c, f, w * (1.0 - c - f) ** failures) for c, f, w in rows]
    z = sum(w for *_, w in post)
    if z <= 0:
        return -cost_per_try
    return sum(w * (c - fp_cost * f + abstain_cost * (c + f)) for c, f, w in post) / z - cost_per_try


def flaws_optimal_k(
    pop: Population | tuple[float, float],
    *,
    fp_cost: float,
    abstain_cost: float = 0.0,
    cost_per_try: float = 0.0,
    k_max: int = 100,
) -> int:
    """The K in [0, k_max] that maximises :func:`flaws_utility` (smallest on ties)."""
    best_k, best_u = 0, flaws_utility(pop, 0, fp_cost=fp_cost, abstain_cost=abstain_cost, cost_per_try=cost_per_try)
    for k in range(1, k_max + 1):
        u = flaws_utility(pop, k, fp_cost=fp_cost, abstain_cost=abstain_cost, cost_per_try=cost_per_try)
        if u > best_u + 1e-12:
            best_k, best_u = k, u
    return best_k


def estimate_cf(passed_correct: int, passed_wrong: int, total: int, prior: float = 0.5) -> tuple[float, float]:
    """(c, f) from labelled verifier outcomes, with a small symmetric prior."""
    if total < 0 or passed_correct + passed_wrong > total:
        raise ValueError("estimate_cf: counts do not add up")
    z = total + 3 * prior
    return (passed_correct + prior) / z, (passed_wrong + prior) / z
