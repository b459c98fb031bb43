"""Voting variants: perplexity consistency with reasoning pruning (RPC) and
complexity-based voting.

**RPC** (Zhou et al. 2025, "Bridging Internal Probability and Self-Consistency for
Effective and Efficient LLM Reasoning"): each path's internal probability is
p_i = exp(mean token logprob). *Reasoning pruning* fits a 2-component mixture to the
p_i and drops the paths at or below the mean of the low component (the paper fits a
Weibull mixture; we fit a 1-D Gaussian mixture by EM: a deliberate simplification,
same decision rule). *Perplexity consistency* then scores each answer class by the
sum of p_i over its *distinct* completions (duplicate texts count once).

**Complexity-based voting** (Fu et al. 2023, "Complexity-Based Prompting for
Multi-Step Reasoning"): keep the ``top_k`` samples with the most reasoning steps
(non-empty lines by default) and take the majority among them.

Both are voters ``(samples, rng, eq) -> Decision`` for
:class:`~ttc.strategies.self_consistency.SelfConsistency` (``voter=``), and come
as ready strategies :class:`PerplexityConsistency` and :class:`ComplexityVoting`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ttc.answers import DEFAULT_EQUIVALENCE
from ttc.checks import check_bool, check_instance, check_int, check_optional_int
from ttc.strategy import Decision, Describable
from ttc.types import Sample, SamplingParams

from .self_consistency import SelfConsistency
from .stats import Equiv
from .stopping import FixedN, StoppingRule
from .voting import vote


def path_probability(s: Sample) -> float:
    """exp(mean token logprob) of a sample; needs ``logprobs`` (request ``logprobs=0``)."""
    if not s.logprobs:
        raise ValueError(f"sample {s.index}: no logprobs; sample with SamplingParams(logprobs=0) or more")
    return math.exp(sum(t.logprob for t in s.logprobs) / len(s.logprobs))


def two_component_mixture(x: Sequence[float], iters: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D Gaussian mixture with 2 components by EM: (means, stds, weights), means ascending."""
    a = np.asarray(x, dtype=float)
    lo, hi = np.percentile(a, 25), np.percentile(a, 75)
    mu = np.array([lo, hi]) if hi > lo else np.array([a.min(), a.max()])
    sd = np.full(2, max(a.std(), 1e-6))
    w = np.array([0.5, 0.5])
    for _ in range(iters):
        dens = w * np.exp(-0.5 * ((a[:, None] - mu) / sd) ** 2) / sd
        r = dens / np.maximum(dens.sum(axis=1, keepdims=True), 1e-300)
        nk = r.sum(axis=0) + 1e-12
        mu_new = (r * a[:, None]).sum(axis=0) / nk
        sd = np.sqrt((r * (a[:, None] - mu_new) ** 2).sum(axis=0) / nk) + 1e-6
        w = nk / nk.sum()
        if np.allclose(mu_new, mu, atol=1e-10):
            mu = mu_new
            break
        mu = mu_new
    order = np.argsort(mu)
    return mu[order], sd[order], w[order]


def prune_paths(probs: Sequence[float], min_paths: int = 4) -> list[bool]:
    """Keep-mask of reasoning pruning: paths above the mean of the mixture's low component.

    With fewer than ``min_paths`` paths, or all p_i equal, nothing is pruned."""
    p = np.asarray(probs, dtype=float)
    if len(p) < min_paths or np.ptp(p) < 1e-12:
        return [True] * len(p)
    mu, _, _ = two_component_mixture(p)
    keep = p > mu[0]
    return keep.tolist() if keep.any() else [True] * len(p)


def rpc_vote(
    samples: Sequence[Sample], rng: np.random.Generator, eq: Equiv | None = None, *, prune: bool = True
) -> Decision:
    """Perplexity consistency over the paths that survive reasoning pruning."""
    if not samples:
        return Decision(answer=None)
    probs = [path_probability(s) for s in samples]
    keep = prune_paths(probs) if prune else [True] * len(samples)
    kept = [(s, p) for s, p, k in zip(samples, probs, keep) if k]
    seen_text: set[tuple[str | None, str]] = set()
    weights = []
    for s, p in kept:
        key = (s.answer, s.text.strip())
        weights.append(0.0 if key in seen_text else p)  # distinct completions count once
        seen_text.add(key)
    d = vote([s for s, _ in kept], rng, weights=weights, eq=eq or DEFAULT_EQUIVALENCE,
             pick_member_by=[p for _, p in kept])
    d.meta.update({"kept": len(kept), "pruned": len(samples) - len(kept), "path_probs": probs})
    return d


def count_steps(text: str) -> int:
    """Reasoning steps = non-empty lines."""
    return sum(1 for line in text.splitlines() if line.strip())


def complexity_vote(
    samples: Sequence[Sample],
    rng: np.random.Generator,
    eq: Equiv | None = None,
    *,
    top_k: int | None = None,
    steps: Callable[[str], int] = count_steps,
) -> Decision:
    """Majority among the ``top_k`` samples with the most steps (default: half, at least 1).

    Only samples with a parseable answer compete for the top-k slots; ties at the
    boundary are broken at random, over the samples in the order of their texts (not of
    arrival), so the same draws give the same answer however they came back."""
    cands = sorted((s for s in samples if s.answer is not None), key=lambda s: (s.text, s.answer))
    if not cands:
        return Decision(answer=None, meta={"kept": 0})
    k = min(len(cands), top_k if top_k is not None else max(1, len(cands) // 2))
    n_steps = [steps(s.text) for s in cands]
    order = rng.permutation(len(cands))
    ranked = sorted(order, key=lambda i: -n_steps[i])[:k]
    chosen = [cands[i] for i in sorted(ranked)]
    d = vote(chosen, rng, eq=eq or DEFAULT_EQUIVALENCE)
    d.meta.update({"kept": len(chosen), "min_steps_kept": min(n_steps[i] for i in ranked)})
    return d


class RPCVoter(Describable):
    """:func:`rpc_vote` as a self-consistency voter part (``SelfConsistency(voter=RPCVoter())``)."""

    def __init__(self, prune: bool = True):
        check_bool("prune", prune)
        self.prune = prune

    def __call__(self, samples: Sequence[Sample], rng: np.random.Generator, eq: Equiv | None = None) -> Decision:
        return rpc_vote(samples, rng, eq, prune=self.prune)


class ComplexityVoter(Describable):
    """:func:`complexity_vote` as a self-consistency voter part, counting steps as
    non-empty lines (``SelfConsistency(voter=ComplexityVoter(top_k))``)."""

    def __init__(self, top_k: int | None = None):
        check_optional_int("top_k", top_k, lo=1)
        self.top_k = top_k

    def __call__(self, samples: Sequence[Sample], rng: np.random.Generator, eq: Equiv | None = None) -> Decision:
        return complexity_vote(samples, rng, eq, top_k=self.top_k)


class PerplexityConsistency(SelfConsistency):
    """RPC: ``n`` samples (or any stopping rule), reasoning pruning, perplexity
    consistency: ``SelfConsistency(rule or FixedN(n), voter=RPCVoter(prune))`` with
    logprobs requested, under its historical name (it only sets the parts)."""

    def __init__(
        self, n: int = 16, *, rule: StoppingRule | None = None, prune: bool = True,
        params: SamplingParams | None = None, **kw,  # type: ignore[no-untyped-def]
    ):
        check_int("n", n, lo=1)
        check_bool("prune", prune)
        check_instance("params", params, SamplingParams)
        p = (params or SamplingParams(temperature=0.8))
        if p.logprobs is None:
            p = p.model_copy(update={"logprobs": 0})
        super().__init__(rule or FixedN(n), params=p,
                         voter=RPCVoter(prune), **kw)
        self.name = "rpc"


class ComplexityVoting(SelfConsistency):
    """Complexity-based voting: ``n`` samples, majority among the ``top_k`` most complex:
    ``SelfConsistency(rule or FixedN(n), voter=ComplexityVoter(top_k))`` under its
    historical name (it only sets the parts)."""

    def __init__(
        self, n: int = 16, *, top_k: int | None = None, rule: StoppingRule | None = None,
        params: SamplingParams | None = None, **kw,  # type: ignore[no-untyped-def]
    ):
        check_int("n", n, lo=1)
        check_optional_int("top_k", top_k, lo=1)
        super().__init__(rule or FixedN(n), params=params,
                         voter=ComplexityVoter(top_k), **kw)
        self.name = "complexity_voting"
