"""The statistics of a set of answers, in one home: answer classes and their sizes,
Dynasor's certaindex, and the Beta posterior of Adaptive-Consistency. Stopping rules,
difficulty signals, the certainty budget curve and the allocator's gain models all
read them from here.

Conventions (shared by every caller):

- Answers are grouped with :func:`ttc.answers.group_answers` under an equivalence
  ``eq`` (:data:`Equiv`; default :data:`ttc.answers.DEFAULT_EQUIVALENCE`). An
  unparseable answer (``None``, or one that normalises to nothing) joins no class.
- :func:`certaindex` counts each unparseable answer as a class of its own: it can only
  add uncertainty, never agree with another.
- Items are answers (``str | None``) or :class:`~ttc.types.Sample` (their ``answer``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ttc.answers import DEFAULT_EQUIVALENCE, group_answers
from ttc.types import Sample

#: Answer equivalence: ``eq(a, b) -> bool`` (e.g. :class:`ttc.answers.Equivalence`).
Equiv = Callable[[str | None, str | None], bool]

AnswerLike = Sample | str | None


def answers_of(items: Sequence[AnswerLike]) -> list[str | None]:
    """The answers of ``items`` (a sample's ``answer``, a string as it is)."""
    return [s.answer if isinstance(s, Sample) else s for s in items]


def class_counts(items: Sequence[AnswerLike], eq: Equiv | None = None) -> list[tuple[str, int]]:
    """(answer, count) per answer class, largest first (ties in first-appearance order);
    unparseable answers join no class."""
    classes = group_answers(answers_of(items), eq or DEFAULT_EQUIVALENCE)
    out = [(c.answer, len(c.members)) for c in classes]
    out.sort(key=lambda t: -t[1])
    return out


def class_sizes(items: Sequence[AnswerLike], eq: Equiv | None = None, *, singletons: bool = False) -> list[int]:
    """Sizes of the answer classes, largest first. ``singletons``: every unparseable
    answer counts as a class of one (as :func:`certaindex` counts them); else they are
    left out."""
    sizes = [c for _, c in class_counts(items, eq)]
    if singletons:
        sizes += [1] * (len(items) - sum(sizes))
    return sizes


def certainty_from_counts(counts: Sequence[float]) -> float:
    """``(log n - H) / log n`` for class sizes ``counts`` (n = their sum, H the entropy
    of the class frequencies), in [0, 1]; 0 if n < 2 (nothing to agree on)."""
    c = np.asarray([x for x in counts if x != 0], dtype=float)
    if c.size and (c < 0).any():
        raise ValueError("counts: class sizes must be >= 0")
    n = float(c.sum())
    if n < 2:
        return 0.0
    p = c / n
    h = float(-(p * np.log(p)).sum())
    return float(min(1.0, max(0.0, round((math.log(n) - h) / math.log(n), 12))))


def certaindex(items: Sequence[AnswerLike], eq: Equiv | None = None) -> float:
    """Dynasor's Certaindex (Fu et al. 2024, "Efficiently Serving LLM Reasoning Programs
    with Certaindex"): ``(log n - H) / log n`` over the answer-class frequencies of the
    n items, each unparseable answer a class of its own; 1 = unanimous, 0 = all
    different or fewer than two items."""
    return certainty_from_counts(class_sizes(items, eq, singletons=True))


def beta_cdf_half(a: float, b: float) -> float:
    """I_0.5(a, b), the regularised incomplete beta function at 1/2.

    Exact for integer a, b >= 1 (``P(Binomial(a + b - 1, 1/2) >= a)``); other positive
    values use ``scipy.special.betainc``.
    """
    if a <= 0 or b <= 0:
        raise ValueError(f"beta_cdf_half: a and b must be > 0, got a={a}, b={b}")
    if float(a).is_integer() and float(b).is_integer():
        ia, ib = int(a), int(b)
        n = ia + ib - 1
        return sum(math.comb(n, j) for j in range(ia, n + 1)) / 2.0**n
    from scipy.special import betainc

    return float(betainc(a, b, 0.5))


def beta_posterior(v1: float, v2: float, prior: float = 1.0) -> float:
    """P(p1 > p2 | v1 votes for the leader, v2 for the runner-up) under a
    Beta(prior, prior) prior: ``1 - I_0.5(v1 + prior, v2 + prior)`` (Adaptive-Consistency,
    Aggarwal et al. 2023; ``prior=1`` is their uniform prior)."""
    if v1 < 0 or v2 < 0:
        raise ValueError(f"beta_posterior: counts must be >= 0, got {v1}, {v2}")
    return 1.0 - beta_cdf_half(v1 + prior, v2 + prior)


__all__ = ["Equiv", "answers_of", "beta_cdf_half", "beta_posterior", "certaindex", "certainty_from_counts",
           "class_counts", "class_sizes"]
