"""Certaindex: how settled a set of answers is, and how much more budget it deserves.

Follows Dynasor's Certaindex (Fu et al., "Efficiently Serving LLM Reasoning Programs
with Certaindex"): cluster the n answers into equivalence classes, take the entropy
``H = -sum(p_i log p_i)`` over the class frequencies, and report the certainty
``(log n - H) / log n`` in [0, 1] (1 = every answer agrees, 0 = every answer differs).

:func:`certaindex` and :func:`certainty_from_counts` live in :mod:`ttc.strategies.stats`
(one formula for this curve, the ``certaindex`` stopping rule and the difficulty
signals): an unparseable answer is a class of its own; fewer than two answers give 0.

The second half maps certainty to *remaining* budget with a profiled curve: fit on
recorded runs the expected benefit of more samples (did more samples change the
answer, or improve accuracy?) as a function of the certainty after k samples.
The fit is isotonic (pool-adjacent-violators, numpy only) and non-increasing in
certainty, so more certainty never earns more budget. The allocator reads
:meth:`CertaintyBudgetCurve.remaining_budget`; the curve saves to and loads from JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ttc.answers import DEFAULT_EQUIVALENCE

from .stats import Equiv, certaindex


# -- isotonic fit ----------------------------------------------------------------------
def isotonic_decreasing(x: Sequence[float], y: Sequence[float], w: Sequence[float] | None = None) -> tuple[
    np.ndarray, np.ndarray
]:
    """Weighted least-squares non-increasing fit of ``y`` on ``x`` (pool adjacent
    violators). Returns the knots (distinct x, fitted y), sorted by x."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    wa = np.ones_like(xa) if w is None else np.asarray(w, dtype=float)
    if xa.shape != ya.shape or xa.shape != wa.shape or xa.ndim != 1:
        raise ValueError("isotonic_decreasing: x, y and w must be 1-D and of equal length")
    if xa.size == 0:
        raise ValueError("isotonic_decreasing: no points to fit")
    # Collapse ties in x into their weighted mean.
    ux, inv = np.unique(xa, return_inverse=True)
    sw = np.bincount(inv, weights=wa)
    sy = np.bincount(inv, weights=wa * ya) / sw
    # PAV for a non-increasing sequence: blocks of (mean, weight, size).
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for yi, wi in zip(sy, sw):
        means.append(float(yi))
        weights.append(float(wi))
        sizes.append(1)
        while len(means) > 1 and means[-2] < means[-1]:
            m2, w2, s2 = means.pop(), weights.pop(), sizes.pop()
            m1, w1, s1 = means.pop(), weights.pop(), sizes.pop()
            wt = w1 + w2
            means.append((m1 * w1 + m2 * w2) / wt)
            weights.append(wt)
            sizes.append(s1 + s2)
    fit = np.repeat(means, sizes)
    return ux, fit


Target = Literal["changed", "gain"]


@dataclass
class CertaintyBudgetCurve:
    """Profiled map from certainty (after ``k`` samples) to the expected benefit of
    spending more, and from there to a remaining budget.

    ``xs``/``ys`` are the knots of a monotone (non-increasing) piecewise-linear curve:
    ``benefit(c)`` interpolates them (flat beyond the ends). ``remaining_budget(c,
    max_extra)`` scales ``max_extra`` by ``benefit(c) / max benefit`` and returns 0
    where the benefit is at most ``min_benefit``.
    """

    xs: list[float]
    ys: list[float]
    k: int = 0
    target: str = "changed"
    min_benefit: float = 0.0
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.xs) != len(self.ys) or not self.xs:
            raise ValueError("xs/ys: need the same, non-zero number of knots")
        if any(b < a for a, b in zip(self.xs, self.xs[1:])):
            raise ValueError("xs: knots must be sorted by certainty")
        if any(b > a + 1e-12 for a, b in zip(self.ys, self.ys[1:])):
            raise ValueError("ys: the curve must be non-increasing in certainty")

    # -- fitting -----------------------------------------------------------------------
    @classmethod
    def fit(
        cls, certainty: Sequence[float], benefit: Sequence[float], *, k: int = 0, target: str = "changed",
        min_benefit: float = 0.0,
    ) -> CertaintyBudgetCurve:
        """Fit the curve on (certainty after k samples, observed benefit of more samples)."""
        if len(certainty) != len(benefit):
            raise ValueError(f"benefit: {len(benefit)} values for {len(certainty)} certainties")
        c = np.asarray(certainty, dtype=float)
        if ((c < 0) | (c > 1)).any():
            raise ValueError("certainty: values must lie in [0, 1]")
        xs, ys = isotonic_decreasing(c, benefit)
        return cls(xs=[float(v) for v in xs], ys=[float(v) for v in ys], k=k, target=target,
                   min_benefit=min_benefit, meta={"n_points": len(c)})

    @classmethod
    def profile(
        cls,
        runs: Sequence[Sequence[str | None]],
        *,
        k: int,
        gold: Sequence[str | None] | None = None,
        target: Target = "changed",
        eq: Equiv | None = None,
        rng: np.random.Generator | None = None,
        min_benefit: float = 0.0,
    ) -> CertaintyBudgetCurve:
        """Fit from recorded runs: ``runs[q]`` are the answers of question q's samples
        in draw order (at least ``k + 1`` of them).

        For each question: certainty of the first ``k`` answers; benefit =
        ``"changed"``: 1 if the majority answer over all samples differs from the one
        over the first k (needs no labels), or ``"gain"``: correct(all) - correct(first
        k) against ``gold`` (can be negative). Majority ties break at random (``rng``).
        """
        from ttc.types import Sample

        from .voting import vote

        eq = eq or DEFAULT_EQUIVALENCE
        rng = rng or np.random.default_rng(0)
        if target == "gain" and gold is None:
            raise ValueError("gold: target='gain' needs the reference answers")
        if gold is not None and len(gold) != len(runs):
            raise ValueError(f"gold: {len(gold)} answers for {len(runs)} runs")
        xs, ys = [], []
        for q, answers in enumerate(runs):
            if len(answers) <= k:
                raise ValueError(f"runs[{q}]: {len(answers)} answers, need more than k={k}")
            samples = [Sample(index=i, text="", num_tokens=0, answer=a) for i, a in enumerate(answers)]
            early = vote(samples[:k], rng, eq=eq).answer
            full = vote(samples, rng, eq=eq).answer
            xs.append(certaindex(answers[:k], eq))
            if target == "changed":
                ys.append(0.0 if (early is not None and eq(early, full)) or (early is None and full is None) else 1.0)
            else:
                g = gold[q]  # type: ignore[index]
                ys.append(float(eq(full, g)) - float(eq(early, g)))
        return cls.fit(xs, ys, k=k, target=target, min_benefit=min_benefit)

    # -- use -----------------------------------------------------------------------------
    def benefit(self, certainty: float) -> float:
        return float(np.interp(certainty, self.xs, self.ys))

    def remaining_fraction(self, certainty: float) -> float:
        """benefit(c) / the curve's maximum, clipped to [0, 1]; 0 at or below ``min_benefit``."""
        b = self.benefit(certainty)
        top = max(self.ys)
        if b <= self.min_benefit or top <= 0:
            return 0.0
        return float(min(1.0, b / top))

    def remaining_budget(self, certainty: float, max_extra: int) -> int:
        """How many more units (samples or tokens) of ``max_extra`` to spend at this certainty."""
        if max_extra < 0:
            raise ValueError(f"max_extra: must be >= 0, got {max_extra}")
        return round(max_extra * self.remaining_fraction(certainty))

    # -- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"xs": self.xs, "ys": self.ys, "k": self.k, "target": self.target,
                "min_benefit": self.min_benefit, "meta": self.meta}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> CertaintyBudgetCurve:
        d = json.loads(Path(path).read_text())
        missing = {"xs", "ys"} - set(d)
        if missing:
            raise ValueError(f"{path}: missing field(s) {sorted(missing)}")
        return cls(xs=list(d["xs"]), ys=list(d["ys"]), k=int(d.get("k", 0)), target=d.get("target", "changed"),
                   min_benefit=float(d.get("min_benefit", 0.0)), meta=d.get("meta", {}))
