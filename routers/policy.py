"""The routing decision policy: entropy bands, a confidence threshold with a default
route, and a complexity signal. Follows "When to Reason: Semantic Router for vLLM"
(Wang et al. 2025); formulas in ``shared/reference/algorithms.md`` (Routing).

With class probabilities ``p`` over ``K`` categories and normalised entropy
``H = -sum p log p / log K``:

- ``H >= 0.8``: reason;
- ``0.6 <= H < 0.8``: probability-weighted vote of the top-2 categories' reasoning flags;
- ``0.4 <= H < 0.6``: the top-1 flag if ``p_top1 >= 0.6`` (``top1_threshold``), else a
  weighted vote of the top-3 flags;
- ``H < 0.4``: the top-1 flag.

A weighted vote reasons when the probability mass of the voters whose flag is on is at
least half of theirs (a tie reasons: under doubt, the safer side).

The category's route is the top-1 category's, unless ``p_top1 < confidence_threshold``
and a default route is set: then the default route. The complexity signal
``s = sim(query, hard prototypes) - sim(query, easy prototypes)`` (max cosine to each
set) overrides the band when ``|s| >= complexity_margin``: ``s >= margin`` turns reasoning
on, ``s <= -margin`` off (except in the ``H >= 0.8`` band, which always reasons).

Every decision is a :class:`RoutingDecision` record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ttc.strategy import Describable

from .routes import CategoryRoute, Route

BANDS = (0.4, 0.6, 0.8)
_EPS = 1e-9


def normalised_entropy(probs: Sequence[float]) -> float:
    """``-sum p log p / log K`` in [0, 1] (0 for K = 1)."""
    p = np.asarray(list(probs), dtype=np.float64)
    if p.ndim != 1 or len(p) == 0:
        raise ValueError("probs: expected a non-empty 1-d sequence")
    if len(p) == 1:
        return 0.0
    s = p.sum()
    if s <= 0:
        raise ValueError("probs: sum to 0")
    p = p / s
    nz = p[p > 0]
    h = float(-(nz * np.log(nz)).sum() / math.log(len(p)))
    return min(max(h, 0.0), 1.0)


def entropy_band(h: float, bands: Sequence[float] = BANDS) -> str:
    """``"high"`` (H >= 0.8), ``"medium_high"`` (0.6 <= H < 0.8), ``"medium"``
    (0.4 <= H < 0.6) or ``"low"`` (H < 0.4). Boundaries belong to the band above;
    ``h`` is compared with a 1e-9 tolerance so a float a hair under a boundary counts."""
    lo, mid, hi = bands
    if h >= hi - _EPS:
        return "high"
    if h >= mid - _EPS:
        return "medium_high"
    if h >= lo - _EPS:
        return "medium"
    return "low"


def weighted_flag_vote(ranked: Sequence[tuple[str, float]], flags: Mapping[str, bool]) -> tuple[bool, float]:
    """(reason?, share of the voters' mass whose flag is on). Ties reason."""
    mass = sum(p for _, p in ranked)
    on = sum(p for c, p in ranked if flags[c])
    share = on / mass if mass > 0 else 0.5
    return share >= 0.5 - _EPS, share


class RoutingDecision(BaseModel):
    """One routing decision, as recorded in the router's result meta and trace."""

    model_config = ConfigDict(extra="forbid")

    category: str = Field(description="the category whose route was taken ('default' for the default route)")
    top_category: str
    probabilities: dict[str, float]
    entropy: float
    band: str
    reasoning: bool
    reason: str
    route: str
    route_detail: dict[str, Any] = Field(default_factory=dict)
    complexity: float | None = None
    used_default: bool = False
    vote_share: float | None = None


class ComplexitySignal:
    """``s = max cos(q, hard) - max cos(q, easy)`` over two prototype sets of
    embeddings (rows L2-normalised here). ``from_texts`` encodes example questions."""

    def __init__(self, hard: np.ndarray, easy: np.ndarray, encoder: Any = None):
        self.hard = self._unit(hard, "hard")
        self.easy = self._unit(easy, "easy")
        if self.hard.shape[1] != self.easy.shape[1]:
            raise ValueError(f"easy: dimension {self.easy.shape[1]} != hard dimension {self.hard.shape[1]}")
        self.encoder = encoder

    @staticmethod
    def _unit(a: np.ndarray, who: str) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] == 0:
            raise ValueError(f"{who}: expected a non-empty (n, dim) array of prototypes, got shape {a.shape}")
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    @classmethod
    def from_texts(cls, encoder: Any, hard: Sequence[str], easy: Sequence[str]) -> ComplexitySignal:
        return cls(encoder.encode(list(hard)), encoder.encode(list(easy)), encoder)

    def score_embeddings(self, emb: np.ndarray) -> np.ndarray:
        q = self._unit(np.atleast_2d(emb), "query")
        return (q @ self.hard.T).max(axis=1) - (q @ self.easy.T).max(axis=1)

    def score(self, text: str) -> float:
        if self.encoder is None:
            raise RuntimeError("ComplexitySignal: no encoder; build it with from_texts or pass encoder=")
        return float(self.score_embeddings(self.encoder.encode([text]))[0])

    async def ascore(self, text: str) -> float:
        if self.encoder is None:
            raise RuntimeError("ComplexitySignal: no encoder; build it with from_texts or pass encoder=")
        return float(self.score_embeddings(await self.encoder.aencode([text]))[0])


class EntropyBandPolicy(Describable):
    """Maps class probabilities (and optionally a complexity score) to a route.

    ``routes``: category -> :class:`CategoryRoute` (or a :class:`Route`, whose own
    reasoning flag is the category's). ``default``: the route for categories without one
    and for low-confidence queries (``p_top1 < confidence_threshold``).
    """

    def __init__(
        self,
        routes: Mapping[str, Route | CategoryRoute],
        *,
        default: Route | CategoryRoute | None = None,
        confidence_threshold: float | None = None,
        top1_threshold: float = 0.6,
        bands: Sequence[float] = BANDS,
        complexity_margin: float | None = None,
    ):
        if not routes and default is None:
            raise ValueError("routes: no category routes and no default route")
        if len(bands) != 3 or not (0 <= bands[0] < bands[1] < bands[2] <= 1):
            raise ValueError(f"bands: expected three increasing thresholds in [0, 1], got {list(bands)}")
        if confidence_threshold is not None:
            if not 0 <= confidence_threshold <= 1:
                raise ValueError(f"confidence_threshold: must be in [0, 1], got {confidence_threshold}")
            if default is None:
                raise ValueError("confidence_threshold: needs a default route to fall back to")
        if not 0 <= top1_threshold <= 1:
            raise ValueError(f"top1_threshold: must be in [0, 1], got {top1_threshold}")
        if complexity_margin is not None and complexity_margin < 0:
            raise ValueError(f"complexity_margin: must be >= 0, got {complexity_margin}")
        self.routes = {c: CategoryRoute.of(r) for c, r in routes.items()}
        self.default = CategoryRoute.of(default) if default is not None else None
        self.confidence_threshold = confidence_threshold
        self.top1_threshold = top1_threshold
        self.bands = tuple(bands)
        self.complexity_margin = complexity_margin

    def flags(self, categories: Sequence[str]) -> dict[str, bool]:
        return {c: self._route_of(c).reasoning for c in categories}

    def _route_of(self, category: str) -> CategoryRoute:
        if category in self.routes:
            return self.routes[category]
        if self.default is not None:
            return self.default
        raise KeyError(f"category {category!r}: no route and no default route (routes for {sorted(self.routes)})")

    def check_classes(self, classes: Sequence[str]) -> None:
        """Raise if a class the classifier can output has no route and there is no default."""
        missing = [c for c in classes if c not in self.routes]
        if missing and self.default is None:
            raise ValueError(f"routes: no route for categories {missing} and no default route")

    def decide(
        self,
        probabilities: Mapping[str, float],
        *,
        complexity: float | None = None,
        entropy: float | None = None,
    ) -> tuple[RoutingDecision, Route]:
        """(decision record, route to take). ``entropy`` overrides the computed one (tests)."""
        if not probabilities:
            raise ValueError("probabilities: empty")
        probs = {str(c): float(p) for c, p in probabilities.items()}
        if any(p < 0 or not math.isfinite(p) for p in probs.values()):
            raise ValueError(f"probabilities: must be finite and >= 0, got {probs}")
        ranked = sorted(probs.items(), key=lambda kv: (-kv[1], kv[0]))
        h = normalised_entropy([p for _, p in ranked]) if entropy is None else float(entropy)
        band = entropy_band(h, self.bands)
        top, p_top = ranked[0]
        flags = self.flags([c for c, _ in ranked[:3]])
        share: float | None = None

        if band == "high":
            reasoning, why = True, f"H={h:.3f} >= {self.bands[2]}: high uncertainty, reason"
        elif band == "medium_high":
            reasoning, share = weighted_flag_vote(ranked[:2], flags)
            why = f"H={h:.3f} in [{self.bands[1]}, {self.bands[2]}): top-2 weighted vote, on-share {share:.3f}"
        elif band == "medium":
            if p_top >= self.top1_threshold - _EPS:
                reasoning = flags[top]
                why = (f"H={h:.3f} in [{self.bands[0]}, {self.bands[1]}) and p({top})={p_top:.3f} >= "
                       f"{self.top1_threshold}: trust top-1")
            else:
                reasoning, share = weighted_flag_vote(ranked[:3], flags)
                why = (f"H={h:.3f} in [{self.bands[0]}, {self.bands[1]}) and p({top})={p_top:.3f} < "
                       f"{self.top1_threshold}: top-3 weighted vote, on-share {share:.3f}")
        else:
            reasoning = flags[top]
            why = f"H={h:.3f} < {self.bands[0]}: trust top-1"

        if complexity is not None and self.complexity_margin is not None:
            m = self.complexity_margin
            if complexity >= m and not reasoning:
                reasoning, why = True, why + f"; complexity s={complexity:.3f} >= {m}: reason"
            elif complexity <= -m and reasoning and band != "high":
                reasoning, why = False, why + f"; complexity s={complexity:.3f} <= -{m}: answer directly"

        used_default = False
        category = top
        if top not in self.routes:
            used_default, category = True, "default"
            why += f"; no route for {top!r}: default route"
        elif self.confidence_threshold is not None and p_top < self.confidence_threshold:
            used_default, category = True, "default"
            why += f"; p({top})={p_top:.3f} < confidence threshold {self.confidence_threshold}: default route"
        cat_route = self.default if used_default else self.routes[top]
        assert cat_route is not None
        route = cat_route.pick(reasoning)
        decision = RoutingDecision(
            category=category, top_category=top, probabilities=probs, entropy=h, band=band,
            reasoning=reasoning, reason=why, route=route.name, route_detail=route.describe(),
            complexity=complexity, used_default=used_default, vote_share=share,
        )
        return decision, route
