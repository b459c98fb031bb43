"""Voting over answer classes, shared by every parallel strategy.

Answers are grouped with :func:`ttc.answers.group_answers` (samples without a
parseable answer join no class, so they can never win). Each class's vote is the
sum of its members' weights (1 for majority voting, a verifier score for weighted
best-of-N, a confidence for DeepConf). Ties are broken at random with the run's
seeded generator, never by index.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ttc.answers import DEFAULT_EQUIVALENCE, AnswerClass, group_answers
from ttc.strategy import Decision
from ttc.types import Sample

from .stats import Equiv


def class_votes(
    samples: Sequence[Sample], weights: Sequence[float] | None = None, eq: Equiv | None = None
) -> list[tuple[AnswerClass, float]]:
    """(class, summed weight) for every answer class, in first-appearance order."""
    classes = group_answers([s.answer for s in samples], eq or DEFAULT_EQUIVALENCE)
    w = [1.0] * len(samples) if weights is None else list(weights)
    if len(w) != len(samples):
        raise ValueError(f"weights: {len(w)} weights for {len(samples)} samples")
    return [(c, math.fsum(w[i] for i in c.members)) for c in classes]


def pick_max(values: Sequence[float], rng: np.random.Generator) -> int:
    """Index of the maximum, ties broken uniformly at random."""
    vals = [float(v) for v in values]
    if any(v != v for v in vals):  # NaN: numpy's comparison semantics
        arr = np.asarray(vals)
        best = np.flatnonzero(arr == arr.max())
        return int(best[0] if len(best) == 1 else rng.choice(best))
    top = max(vals)
    ties = [i for i, v in enumerate(vals) if v == top]
    return ties[0] if len(ties) == 1 else ties[int(rng.integers(0, len(ties)))]  # = rng.choice(ties)


def vote(
    samples: Sequence[Sample],
    rng: np.random.Generator,
    weights: Sequence[float] | None = None,
    eq: Equiv | None = None,
    *,
    pick_member_by: Sequence[float] | None = None,
) -> Decision:
    """Majority (``weights=None``) or weighted vote. Confidence = the winner's vote
    share. The chosen sample is the winner's member with the highest
    ``pick_member_by`` (default: its weight), ties at random.

    The winning answer is a function of the samples as a multiset: classes are ranked by
    their answers (not by arrival) before a tie is broken, and weights are summed exactly
    (``math.fsum``), so the same draws give the same answer whatever order concurrent
    requests came back in (one engine or many replicas)."""
    votes = sorted(class_votes(samples, weights, eq), key=lambda cv: cv[0].answer)
    if not votes:
        return Decision(answer=None, confidence=None, meta={"votes": {}})
    total = sum(v for _, v in votes)
    k = pick_max([v for _, v in votes], rng)
    cls, v = votes[k]
    member_key = pick_member_by if pick_member_by is not None else (weights or [1.0] * len(samples))
    m = cls.members[pick_max([member_key[i] for i in cls.members], rng)]
    return Decision(
        answer=cls.answer,
        chosen=samples[m],
        confidence=(v / total) if total > 0 else None,
        meta={"votes": {c.answer: vv for c, vv in votes}},
    )
