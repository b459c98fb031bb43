"""Pluggable stopping rules for parallel / sequential sampling.

A rule looks only at the *finished* samples it is handed (in arrival order) and says
whether to stop drawing more: ``rule.check(samples, eq) -> StopCheck``. Every sampling
strategy (self-consistency, DeepConf, early exit, the allocator) shares them.

Conventions shared by every rule:

- Samples without a parseable answer (``answer is None``) count as samples (toward
  ``min_samples`` and ``max_samples``) but never as an answer class, so they can
  never be the "winner" a rule is confident about.
- ``max_samples`` caps every rule: at the cap ``check`` stops with
  ``reason="max_samples"`` whatever the rule says.
- ``StopCheck.confidence`` is the rule's own certainty measure (posterior
  probability, certainty, vote share), in [0, 1].

Rules and their sources (formulas in ``shared/reference/algorithms.md``):

- :class:`FixedN`: plain self-consistency (Wang et al. 2023) with N samples.
- :class:`BetaRule`: Adaptive-Consistency (Aggarwal et al. 2023), Beta posterior on
  the top-two answers: P(p1 > p2) = 1 - I_0.5(v1 + 1, v2 + 1).
- :class:`DirichletRule`: Adaptive-Consistency's Dirichlet variant (Monte Carlo over
  all observed classes; falls back to Beta with fewer than 3 distinct answers).
- :class:`ESCWindow`: Early-Stopping Self-Consistency (Li et al. 2024): windows of
  ``w`` samples up to ``L``; stop when a window is unanimous.
- :class:`CertaindexEntropy`: Dynasor's Certaindex (Fu et al. 2024):
  certainty = (log n - H) / log n over answer-cluster frequencies.
- :class:`DeepConfConsensus`: DeepConf's online consensus (Fu et al. 2025):
  beta = V(top) / sum V with confidence weights (``Sample.weight``).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttc.answers import DEFAULT_EQUIVALENCE, group_answers
from ttc.checks import check_int, check_number, check_optional_int
from ttc.strategy import Describable
from ttc.types import Sample

from .stats import Equiv, beta_posterior, certaindex, class_counts


@dataclass
class StopCheck:
    """A rule's verdict. ``reason`` is the rule's name, or ``"max_samples"`` at the cap."""

    stop: bool
    confidence: float = 0.0
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def posterior(self) -> float:
        """Alias of :attr:`confidence` (a posterior probability for Beta / Dirichlet)."""
        return self.confidence


def dirichlet_posterior(counts: Sequence[float], draws: int = 20000, seed: int = 0) -> float:
    """P(p_top > every other p_j) under Dirichlet(counts + 1), by Monte Carlo (seeded)."""
    alpha = np.asarray(sorted(counts, reverse=True), dtype=float) + 1.0
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(alpha, size=draws)
    return float(np.mean(p[:, 0] > p[:, 1:].max(axis=1)))


class StoppingRule(Describable, abc.ABC):
    """Base class. Subclasses implement :meth:`_check` on at least ``min_samples`` samples.

    ``batch_hint`` is the batch schedule the rule was designed for (e.g. ESC's window
    size); strategies use it when no schedule is given.
    """

    name: str = "rule"
    batch_hint: tuple[int, ...] | None = None
    needs_scores: bool = False  # True: samples carry verifier scores (Sample.score) when checked

    def __init__(self, *, min_samples: int = 1, max_samples: int | None = None):
        check_int("min_samples", min_samples, lo=1)
        check_optional_int("max_samples", max_samples, lo=1)
        if max_samples is not None and max_samples < min_samples:
            raise ValueError(f"max_samples: {max_samples} < min_samples {min_samples}")
        self.min_samples = min_samples
        self.max_samples = max_samples

    def check(self, samples: Sequence[Sample], eq: Equiv | None = None) -> StopCheck:
        """Stop or go on, looking only at ``samples`` (finished, in arrival order)."""
        n = len(samples)
        if n >= self.min_samples:
            res = self._check(samples, eq or DEFAULT_EQUIVALENCE)
        else:
            res = StopCheck(False, 0.0, self.name, {"n": n, "below_min_samples": True})
        res.reason = res.reason or self.name
        if not res.stop and self.max_samples is not None and n >= self.max_samples:
            res.stop, res.reason = True, "max_samples"
        res.detail.setdefault("n", n)
        return res

    @abc.abstractmethod
    def _check(self, samples: Sequence[Sample], eq: Equiv) -> StopCheck: ...

    def __repr__(self) -> str:
        keys = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in keys.items())})"


def _share(counts: list[tuple[str, float]], n: int) -> float:
    return counts[0][1] / n if counts and n else 0.0


class FixedN(StoppingRule):
    """Stop after exactly ``n`` samples (plain self-consistency)."""

    name = "fixed_n"

    def __init__(self, n: int):
        check_int("n", n, lo=1)
        super().__init__(min_samples=n, max_samples=n)
        self.n = n
        self.batch_hint = (n,)

    def _check(self, samples: Sequence[Sample], eq: Equiv) -> StopCheck:
        counts = class_counts(samples, eq)
        return StopCheck(True, _share(counts, len(samples)), self.name, {"top": counts[:1]})


class BetaRule(StoppingRule):
    """Adaptive-Consistency's Beta rule (Aggarwal et al. 2023).

    With v1, v2 the sizes of the two largest answer classes, stop when
    P(p1 > p2) = 1 - I_0.5(v1 + 1, v2 + 1) >= ``threshold``. With the default 0.95 a
    unanimous run stops after 4 samples (1 - 0.5**5 = 0.969); ``min_samples=4``
    keeps a lower threshold from stopping earlier than that.
    """

    name = "beta"
    batch_hint = (4, 2, 2, 4, 4, 8)

    def __init__(self, threshold: float = 0.95, *, min_samples: int = 4, max_samples: int | None = 40):
        check_number("threshold", threshold, lo=0, hi=1, lo_open=True, hi_open=True)
        super().__init__(min_samples=min_samples, max_samples=max_samples)
        self.threshold = threshold

    def _check(self, samples: Sequence[Sample], eq: Equiv) -> StopCheck:
        counts = class_counts(samples, eq)
        if not counts:
            return StopCheck(False, 0.0, self.name, {"v1": 0, "v2": 0})
        v1 = counts[0][1]
        v2 = counts[1][1] if len(counts) > 1 else 0.0
        p = beta_posterior(v1, v2)
        return StopCheck(p >= self.threshold, p, self.name, {"v1": v1, "v2": v2, "top": counts[0][0]})


class DirichletRule(StoppingRule):
    """Adaptive-Consistency's Dirichlet rule (Aggarwal et al. 2023).

    Posterior Dirichlet(v_1 + 1, ..., v_K + 1) over the K observed answer classes;
    stop when P(p_top > max_j p_j) >= ``threshold`` (Monte Carlo with ``draws`` draws,
    seeded, so a check is deterministic). With fewer than 3 distinct answers it falls
    back to the Beta rule, as the paper does.
    """

    name = "dirichlet"
    batch_hint = (4, 2, 2, 4, 4, 8)

    def __init__(
        self,
        threshold: float = 0.95,
        *,
        min_samples: int = 4,
        max_samples: int | None = 40,
        draws: int = 20000,
        seed: int = 0,
    ):
        check_number("threshold", threshold, lo=0, hi=1, lo_open=True, hi_open=True)
        check_int("draws", draws, lo=1, hi=1_000_000)
        check_int("seed", seed)
        super().__init__(min_samples=min_samples, max_samples=max_samples)
        self.threshold = threshold
        self.draws = draws
        self.seed = seed

    def _check(self, samples: Sequence[Sample], eq: Equiv) -> StopCheck:
        counts = class_counts(samples, eq)
        if len(counts) < 3:
            v1 = counts[0][1] if counts else 0.0
            v2 = counts[1][1] if len(counts) > 1 else 0.0
            p = beta_posterior(v1, v2) if counts else 0.0
            return StopCheck(p >= self.threshold, p, self.name, {"fallback": "beta", "v1": v1, "v2": v2})
        p = dirichlet_posterior([c for _, c in counts], self.draws, self.seed)
        return StopCheck(
            p >= self.threshold, p, self.name, {"fallback": None, "counts": [c for _, c in counts]}
        )


class ESCWindow(StoppingRule):
    """Early-Stopping Self-Consistency (Li et al. 2024).

    Samples are taken in consecutive windows of ``w`` (arrival order); stop as soon
    as one complete window is unanimous (all ``w`` answers parseable and
    equivalent), else at ``L`` samples (``max_samples``). Confidence: the top share
    of the latest complete window.
    """

    name = "esc"

    def __init__(self, w: int = 5, L: int = 40):
        check_int("w", w, lo=1)
        check_int("L", L, lo=1)
        if L < w:
            raise ValueError(f"L: must be >= w ({w}), got {L}")
        super().__init__(min_samples=w, max_samples=L)
        self.w = w
        self.L = L
        self.batch_hint = (w,)

    def _check(self, samples: Sequence[Sample], eq: Equiv) -> StopCheck:
        share = 0.0
        for k in range(len(samples) // self.w):
            window = samples[k * self.w : (k + 1) * self.w]
            counts = class_counts(window, eq)
            share = _share(counts, self.w)
            if len(counts) == 1 and counts[0][1] == self.w:
                return StopCheck(True, 1.0, self.name, {"window": k, "answer": counts[0][0]})
        return StopCheck(False, share, self.name, {"windows": len(samples) // self.w})


class CertaindexEntropy(StoppingRule):
    """Dynasor's Certaindex (Fu et al. 2024): stop when :func:`certaindex` >= ``threshold``."""

    name = "certaindex"
    batch_hint = (4, 2, 2, 4, 4, 8)

    def __init__(self, threshold: float = 0.8, *, min_samples: int = 4, max_samples: int | None = 40):
        check_number("threshold", threshold, lo=0, hi=1, lo_open=True)
        super().__init__(min_samples=min_samples, max_samples=max_samples)
        self.threshold = threshold

    def _check(self, samples: Sequence[Sample], eq: Equiv) -> StopCheck:
        c = certaindex(samples, eq)
        return StopCheck(c >= self.threshold, c, self.name, {})


class DeepConfConsensus(StoppingRule):
    """DeepConf's consensus stop (Fu et al. 2025): beta = V(top) / sum V >= ``tau``.

    V(a) sums the confidence weights (``Sample.weight``, 1 when unset) of the samples
    answering a. Unparseable samples add their weight to the denominator only.
    """

    name = "deepconf_consensus"
    batch_hint = (4, 2, 2, 4, 4, 8)

    def __init__(self, tau: float = 0.95, *, min_samples: int = 4, max_samples: int | None = 64):
        check_number("tau", tau, lo=0, hi=1, lo_open=True)
        super().__init__(min_samples=min_samples, max_samples=max_samples)
        self.tau = tau

    def _check(self, samples: Sequence[Sample], eq: Equiv) -> StopCheck:
        b, top = consensus_beta(samples, eq)
        return StopCheck(b >= self.tau, b, self.name, {"top": top})


class VerifiedAnswer(StoppingRule):
    """Stop once ``k`` samples that pass an outcome verifier (``Sample.score >=
    pass_threshold``) agree on one answer: the answer is settled by verification rather
    than by vote margin (resample-until-pass, "Inference Scaling fLaws", whose caveat
    applies: with a verifier that passes wrong answers, more tries can only add false
    positives, so keep ``max_samples`` small). Needs ``SelfConsistency(verifier=...)``,
    which scores each batch before the check; pair it with ``weighting="score"`` so the
    vote counts only what passed.
    """

    name = "verified"
    batch_hint = (2,)
    needs_scores = True

    def __init__(self, k: int = 1, *, pass_threshold: float = 0.5, min_samples: int = 1,
                 max_samples: int | None = 16):
        check_int("k", k, lo=1)
        check_number("pass_threshold", pass_threshold)
        super().__init__(min_samples=min_samples, max_samples=max_samples)
        self.k = k
        self.pass_threshold = pass_threshold

    def _check(self, samples: Sequence[Sample], eq: Equiv) -> StopCheck:
        passing = [s for s in samples if s.answer is not None and (s.score or 0.0) >= self.pass_threshold]
        counts = class_counts(passing, eq)
        top = counts[0][1] if counts else 0.0
        return StopCheck(top >= self.k, top / len(samples) if samples else 0.0, self.name,
                         {"passing": len(passing), "top": counts[0][0] if counts else None})


def consensus_beta(samples: Sequence[Sample], eq: Equiv | None = None) -> tuple[float, str | None]:
    """(V(top) / sum V, top answer) with weights ``Sample.weight`` (default 1)."""
    w = [1.0 if s.weight is None else float(s.weight) for s in samples]
    total = sum(w)
    classes = group_answers([s.answer for s in samples], eq or DEFAULT_EQUIVALENCE)
    if not classes or total <= 0:
        return 0.0, None
    votes = [(c.answer, sum(w[i] for i in c.members)) for c in classes]
    top = max(votes, key=lambda t: t[1])
    return top[1] / total, top[0]
