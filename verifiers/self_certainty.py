"""Verifier-free scores read from the sample's own logprobs (no model calls).

- :class:`SelfCertainty` (Kang et al. 2025, "Scalable Best-of-N Selection for Large
  Language Models via Self-Certainty"): per token, KL(U || p) between the uniform
  distribution and the model's next-token distribution, averaged over the answer.
  With only the top-k logprobs we use the top-k approximation (V := k, the k
  returned alternatives): KL_i = -(1/k) sum_j log p_ij - log k. It is >= 0 (by
  Jensen, since the top-k mass is <= 1) and unbounded above: higher = more certain.
  (Its first term is DeepConf's token confidence.)
- :class:`MeanLogprob`: exp(mean token logprob), the geometric-mean token probability
  in [0, 1] (``raw=True``: the mean logprob itself).

Samples must carry logprobs: sample with ``SamplingParams(logprobs=k)``
(``k >= 2`` for self-certainty, ``0`` suffices for mean-logprob).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ttc.checks import check_bool, check_int
from ttc.context import RunContext
from ttc.types import Prompt, Sample, TokenLogprob

from .base import OutcomeVerifier


def self_certainty(logprobs: Sequence[TokenLogprob], k: int = 20) -> float:
    """Mean over tokens of the top-k approximation of KL(uniform || p)."""
    vals = []
    for t in logprobs:
        top = t.top[:k]
        if len(top) < 2:
            raise ValueError("logprobs: self-certainty needs top-k alternatives (k >= 2) per token")
        kk = len(top)
        vals.append(-sum(x.logprob for x in top) / kk - math.log(kk))
    return sum(vals) / len(vals) if vals else 0.0


def _need(s: Sample) -> list[TokenLogprob]:
    if s.logprobs is None:
        raise ValueError(f"sample {s.index}: no logprobs; sample with SamplingParams(logprobs=...)")
    return s.logprobs


class SelfCertainty(OutcomeVerifier):
    """Score = mean token self-certainty (>= 0, unbounded; higher is better)."""

    name = "self_certainty"

    def __init__(self, k: int = 20):
        self.k = check_int("k", k, lo=1, hi=20)

    async def score(self, ctx: RunContext, prompt: Prompt, samples: Sequence[Sample]) -> list[float]:
        return [self_certainty(_need(s), self.k) for s in samples]


class MeanLogprob(OutcomeVerifier):
    """Score = exp(mean token logprob) in [0, 1], or the mean logprob with ``raw=True``."""

    name = "mean_logprob"

    def __init__(self, raw: bool = False):
        self.raw = check_bool("raw", raw)

    async def score(self, ctx: RunContext, prompt: Prompt, samples: Sequence[Sample]) -> list[float]:
        out = []
        for s in samples:
            lps = _need(s)
            m = sum(t.logprob for t in lps) / len(lps) if lps else float("-inf")
            out.append(m if self.raw else math.exp(m))
        return out
