"""Token and group confidence metrics of DeepConf (Fu et al. 2025, "Deep Think with Confidence").

- Token confidence: C_i = -(1/k) * sum_{j=1..k} log P_i(j) over the top-k logprobs at
  position i (k = 20 in the paper; here: however many alternatives the engine
  returned, at most ``k``). Higher = more confident (a peaked distribution puts
  very low logprobs on the alternatives). If the engine returned no alternatives the
  sampled token's own -logprob is used.
- Group confidence: the mean C over a sliding window of ``window`` tokens (the paper
  uses W = 2048 on traces of tens of thousands of tokens; scale it to your traces).
  A trace shorter than the window has a single group: its mean.
- Trace metrics: ``mean`` (average token confidence), ``lowest_group``,
  ``bottom_10`` (mean of the lowest 10% of groups), ``tail`` (mean of the last
  ``window`` tokens).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Literal

import numpy as np

from ttc.types import TokenLogprob

Metric = Literal["mean", "lowest_group", "bottom_10", "tail"]
METRICS: tuple[str, ...] = ("mean", "lowest_group", "bottom_10", "tail")


def token_confidence(t: TokenLogprob, k: int = 20) -> float:
    """C_i = -mean of the top-k logprobs at this position."""
    top = t.top[:k]
    if not top:
        return -float(t.logprob)
    return -float(np.mean([x.logprob for x in top]))


def token_confidences(logprobs: Sequence[TokenLogprob] | None, k: int = 20) -> np.ndarray:
    if not logprobs:
        return np.zeros(0)
    return np.asarray([token_confidence(t, k) for t in logprobs], dtype=float)


def group_confidences(conf: np.ndarray, window: int) -> np.ndarray:
    """Sliding-window means (length ``len(conf) - window + 1``; one group if shorter)."""
    if window < 1:
        raise ValueError(f"window: must be >= 1, got {window}")
    n = len(conf)
    if n == 0:
        return np.zeros(0)
    if n <= window:
        return np.asarray([conf.mean()])
    c = np.concatenate([[0.0], np.cumsum(conf)])
    return (c[window:] - c[:-window]) / window


def trace_confidence(conf: np.ndarray, metric: Metric = "lowest_group", window: int = 64) -> float:
    """One number per trace; ``nan`` for an empty trace."""
    if len(conf) == 0:
        return float("nan")
    if metric == "mean":
        return float(conf.mean())
    if metric == "tail":
        return float(conf[-window:].mean())
    groups = group_confidences(conf, window)
    if metric == "lowest_group":
        return float(groups.min())
    if metric == "bottom_10":
        k = max(1, int(np.ceil(0.1 * len(groups))))
        return float(np.sort(groups)[:k].mean())
    raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")


def trace_metrics(logprobs: Sequence[TokenLogprob] | None, window: int = 64, k: int = 20) -> dict[str, float]:
    conf = token_confidences(logprobs, k)
    return {m: trace_confidence(conf, m, window) for m in METRICS}  # type: ignore[arg-type]


class WindowConfidence:
    """Streaming group confidence: push token confidences, read the current window's mean.

    ``full`` is True once ``window`` tokens have been seen; DeepConf's online kill
    compares the *window* confidence of a full window to a threshold computed from
    the warm-up traces' lowest *window* confidences (the same metric on both sides).
    """

    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"window: must be >= 1, got {window}")
        self.window = window
        self._buf: deque[float] = deque(maxlen=window)
        self._sum = 0.0
        self.count = 0
        self.lowest = float("inf")

    def push(self, c: float) -> float:
        if len(self._buf) == self.window:
            self._sum -= self._buf[0]
        self._buf.append(c)
        self._sum += c
        self.count += 1
        cur = self.current
        if self.full:
            self.lowest = min(self.lowest, cur)
        return cur

    @property
    def full(self) -> bool:
        return len(self._buf) == self.window

    @property
    def current(self) -> float:
        return self._sum / len(self._buf) if self._buf else float("nan")
