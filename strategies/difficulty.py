"""Difficulty signals for compute allocation, from cheap first steps.

* :func:`agreement` - the leading answer's share among the first k samples
  (Adaptive-Consistency, Aggarwal et al. 2023: low agreement = hard).
* :func:`certaindex` - Dynasor's certainty (Fu et al., "Efficiently Serving LLM
  Reasoning Programs with Certaindex"): ``(log n - H) / log n`` over answer-cluster
  frequencies.
* :func:`verifier_difficulty` - one minus the mean verifier score of the first samples
  (Snell et al. 2024 bin by mean verifier score when no labels exist).
* :func:`normalized_entropy` / :class:`RouterEntropy` - a router's classifier entropy
  as a hook (vLLM Semantic Router's decision signal).
* :class:`EmbeddingPredictor` - a learned predictor of P(correct) from question
  embeddings (numpy ridge or logistic regression), for when labelled data exists; it
  accepts any callable ``text -> vector`` as the encoder.
* :func:`quantile_edges` / :class:`DifficultyBins` - Snell et al.'s quantile bins
  (5 by default) over any of the above.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ttc.types import Sample

from .stats import Equiv, class_sizes

Encoder = Callable[[str], Sequence[float]]


def agreement(samples: Sequence[Sample | str | None], eq: Equiv | None = None) -> float:
    """The largest answer class's share of *all* samples (unparseable ones count
    against agreement); 0.0 for no samples."""
    if not samples:
        return 0.0
    counts = class_sizes(samples, eq)
    return (counts[0] if counts else 0) / len(samples)


def verifier_difficulty(scores: Sequence[float]) -> float:
    """``1 - mean(score)`` of the first samples' verifier scores (in [0, 1])."""
    if not scores:
        raise ValueError("verifier_difficulty: no scores")
    return 1.0 - float(np.mean(scores))


def normalized_entropy(probs: Sequence[float]) -> float:
    """Entropy of a probability vector divided by log(len): 0 = certain, 1 = uniform."""
    p = np.asarray(probs, dtype=float)
    if p.ndim != 1 or p.size == 0 or (p < 0).any():
        raise ValueError("normalized_entropy: probs must be a non-empty 1-d vector of non-negative numbers")
    p = p / p.sum()
    if p.size == 1:
        return 0.0
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / math.log(p.size))


@dataclass
class RouterEntropy:
    """Difficulty from a router: ``classify(question) -> class probabilities``;
    difficulty = their normalised entropy (an uncertain router = a hard query)."""

    classify: Callable[[str], Sequence[float]]

    def __call__(self, question: str) -> float:
        return normalized_entropy(self.classify(question))


@dataclass
class EmbeddingPredictor:
    """P(correct) from question embeddings (learned difficulty, Snell et al. use the
    oracle pass@1 bins; this predicts them from the question alone).

    ``kind="ridge"`` regresses a target in [0, 1] (e.g. pass@1 of the first samples);
    ``kind="logistic"`` fits binary labels by Newton's method with an L2 penalty.
    ``encoder`` is any callable ``text -> vector`` (e.g. the bundled all-MiniLM
    encoder in ``ttc.routers.encoders``); vectors can also be passed directly.
    """

    encoder: Encoder | None = None
    kind: str = "ridge"
    l2: float = 1.0
    w: np.ndarray | None = field(default=None, repr=False)
    b: float = 0.0

    def _x(self, items: Sequence[str] | np.ndarray) -> np.ndarray:
        if isinstance(items, np.ndarray):
            return np.atleast_2d(items).astype(float)
        if items and isinstance(items[0], str):
            if self.encoder is None:
                raise ValueError("EmbeddingPredictor.encoder: texts given but no encoder set")
            return np.asarray([list(self.encoder(t)) for t in items], dtype=float)  # type: ignore[arg-type]
        return np.atleast_2d(np.asarray(items, dtype=float))

    def fit(self, items: Sequence[str] | np.ndarray, targets: Sequence[float]) -> EmbeddingPredictor:
        if self.kind not in ("ridge", "logistic"):
            raise ValueError(f"EmbeddingPredictor.kind: 'ridge' or 'logistic', got {self.kind!r}")
        x, y = self._x(items), np.asarray(targets, dtype=float)
        if len(x) != len(y):
            raise ValueError(f"targets: {len(y)} targets for {len(x)} items")
        d = x.shape[1]
        xb = np.hstack([x, np.ones((len(x), 1))])
        reg = self.l2 * np.eye(d + 1)
        reg[-1, -1] = 0.0  # no penalty on the intercept
        if self.kind == "ridge":
            theta = np.linalg.solve(xb.T @ xb + reg, xb.T @ y)
        else:
            theta = np.zeros(d + 1)
            for _ in range(50):
                p = 1 / (1 + np.exp(-(xb @ theta)))
                grad = xb.T @ (p - y) + reg @ theta
                hess = xb.T @ (xb * (p * (1 - p))[:, None]) + reg + 1e-9 * np.eye(d + 1)
                step = np.linalg.solve(hess, grad)
                theta -= step
                if np.abs(step).max() < 1e-8:
                    break
        self.w, self.b = theta[:-1], float(theta[-1])
        return self

    def predict(self, items: Sequence[str] | np.ndarray) -> np.ndarray:
        """Predicted P(correct) per item, clipped to [0, 1]."""
        if self.w is None:
            raise ValueError("EmbeddingPredictor: call fit() first")
        z = self._x(items) @ self.w + self.b
        p = 1 / (1 + np.exp(-z)) if self.kind == "logistic" else z
        return np.clip(p, 0.0, 1.0)

    def difficulty(self, question: str) -> float:
        return 1.0 - float(self.predict([question])[0])


def quantile_edges(values: Sequence[float], n_bins: int = 5) -> list[float]:
    """Inner edges of ``n_bins`` quantile bins (Snell et al. use 5)."""
    if n_bins < 1:
        raise ValueError(f"n_bins: must be >= 1, got {n_bins}")
    if not len(values):
        raise ValueError("quantile_edges: no values")
    qs = np.quantile(np.asarray(values, dtype=float), np.linspace(0, 1, n_bins + 1)[1:-1])
    return [float(q) for q in qs]


@dataclass
class DifficultyBins:
    """Maps a difficulty value to a bin 0..len(edges) (0 = easiest)."""

    edges: list[float]

    @classmethod
    def fit(cls, values: Sequence[float], n_bins: int = 5) -> DifficultyBins:
        return cls(quantile_edges(values, n_bins))

    def __call__(self, value: float) -> int:
        return int(np.searchsorted(np.asarray(self.edges), value, side="right"))

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1
