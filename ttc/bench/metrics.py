"""Metrics and estimators for benchmark results.

- :func:`wilson_interval`: 95% Wilson score interval for a proportion.
- :func:`bootstrap_ci`: percentile bootstrap interval of a statistic (seeded).
- :func:`pass_at_k`: the unbiased pass@k estimator of Chen et al. 2021 ("Evaluating
  Large Language Models Trained on Code"): 1 - C(n-c, k) / C(n, k) from n samples of
  which c are correct.
- :func:`expected_best_of_k`: the exact expectation, over uniformly random k-subsets
  of n >= k scored samples, of the value of the best-scored sample (or of the best
  score itself): sort ascending, E = sum_i C(i-1, k-1) / C(n, k) * s_(i)
  (see /work/shared/reference/algorithms.md, "Evaluation facts"). Ties in score are
  broken uniformly at random, which equals averaging the values within each tie group.
- :func:`summarize_runs` / :func:`summarize_replay`: accuracy (Wilson or bootstrap
  over questions), tokens, calls, latency with 95% intervals.
- :func:`pareto_front`: the points no other point beats on both cost and accuracy.
- :func:`mcnemar_p`, :func:`discordant`: two runs on the same questions compared
  question by question (exact McNemar test on the discordant pairs).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes: {successes} not in [0, {n}]")
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    stat: Callable[[np.ndarray], float] = np.mean,
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of ``stat`` over ``values`` (resampled with replacement)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    if x.size == 1:
        v = float(stat(x))
        return (v, v)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    if stat is np.mean:
        boots = x[idx].mean(axis=1)
    else:
        boots = np.array([stat(x[i]) for i in idx])
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k: P(at least one of k samples drawn without replacement is correct)."""
    if not 0 <= c <= n:
        raise ValueError(f"c: {c} not in [0, {n}]")
    if not 1 <= k <= n:
        raise ValueError(f"k: {k} not in [1, n={n}]")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i): numerically stable form of 1 - C(n-c,k)/C(n,k)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def best_of_k_weights(n: int, k: int) -> np.ndarray:
    """w_i = C(i-1, k-1) / C(n, k), i = 1..n: P(the i-th smallest of n is the max of a random k-subset)."""
    if not 1 <= k <= n:
        raise ValueError(f"k: {k} not in [1, n={n}]")
    w = np.zeros(n)
    total = math.comb(n, k)
    for i in range(k, n + 1):
        w[i - 1] = math.comb(i - 1, k - 1) / total
    return w


def expected_best_of_k(scores: Sequence[float], k: int, values: Sequence[float] | None = None) -> float:
    """E over random k-subsets of the value of the highest-scored sample (ties at random).

    With ``values=None`` this is the expected best *score*; with ``values`` (e.g. 1 if a
    sample is correct) it is the expected accuracy of best-of-k selection by ``scores``.
    """
    s = np.asarray(scores, dtype=float)
    v = s if values is None else np.asarray(values, dtype=float)
    if v.shape != s.shape:
        raise ValueError(f"values: {v.size} values for {s.size} scores")
    n = s.size
    order = np.argsort(s, kind="stable")
    s_sorted, v_sorted = s[order], v[order].copy()
    # random tie-breaking == each member of a tie group worth the group's mean value
    i = 0
    while i < n:
        j = i
        while j + 1 < n and s_sorted[j + 1] == s_sorted[i]:
            j += 1
        if j > i:
            v_sorted[i : j + 1] = v_sorted[i : j + 1].mean()
        i = j + 1
    return float(best_of_k_weights(n, k) @ v_sorted)


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (a sign test)."""
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, k) for k in range(min(b, c) + 1)) / 2 ** m
    return min(1.0, 2 * tail)


def discordant(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int]:
    """Per-question discordant pairs of two runs on the same questions: (only ``a`` right,
    only ``b`` right)."""
    return sum(x and not y for x, y in zip(a, b)), sum(y and not x for x, y in zip(a, b))


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    x = np.asarray(seconds, dtype=float)
    if x.size == 0:
        return {"latency_mean": float("nan"), "latency_p50": float("nan"), "latency_p90": float("nan")}
    return {"latency_mean": float(x.mean()), "latency_p50": float(np.quantile(x, 0.5)),
            "latency_p90": float(np.quantile(x, 0.9))}


def summarize_runs(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy (Wilson 95%), mean tokens/calls (bootstrap 95%) and latency of ``ttc run`` rows."""
    rows = [r for r in rows if r.get("type", "result") == "result"]
    n = len(rows)
    correct = sum(bool(r.get("correct")) for r in rows)
    lo, hi = wilson_interval(correct, n)
    out: dict[str, Any] = {"n": n, "accuracy": correct / n if n else float("nan"), "accuracy_lo": lo,
                           "accuracy_hi": hi}
    for key in ("completion_tokens", "total_tokens", "calls", "generations"):
        vals = [r["usage"].get(key, 0) if key != "total_tokens" else
                r["usage"].get("prompt_tokens", 0) + r["usage"].get("completion_tokens", 0) for r in rows]
        out[key] = float(np.mean(vals)) if vals else float("nan")
        out[key + "_lo"], out[key + "_hi"] = bootstrap_ci(vals)
    out.update(latency_stats([r.get("latency_s", 0.0) for r in rows]))
    return out


def summarize_replay(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (strategy, budget): accuracy and costs averaged over questions (each
    question's value is already its mean over seeds), 95% bootstrap intervals over questions."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("type") in ("replay", "estimate"):
            groups[(r["strategy"], int(r["budget"]))].append(r)
    out = []
    for (name, budget), rs in groups.items():
        acc = [r["accuracy"] for r in rs]
        row: dict[str, Any] = {"strategy": name, "budget": budget, "questions": len(rs),
                               "kind": rs[0].get("type"), "accuracy": float(np.mean(acc))}
        row["accuracy_lo"], row["accuracy_hi"] = bootstrap_ci(acc)
        for key in ("completion_tokens", "total_tokens", "generations", "calls"):
            vals = [r.get(key, float("nan")) for r in rs]
            row[key] = float(np.mean(vals))
            row[key + "_lo"], row[key + "_hi"] = bootstrap_ci(vals)
        stops: dict[str, float] = defaultdict(float)
        for r in rs:
            for k, v in (r.get("stop_reasons") or {}).items():
                stops[k] += v
        row["stop_reasons"] = dict(stops)
        out.append(row)
    out.sort(key=lambda r: (r["strategy"], r["budget"]))
    return out


def pareto_front(costs: Sequence[float], accs: Sequence[float]) -> list[int]:
    """Indices of the points not dominated (another point at <= cost with >= accuracy,
    one strictly better), sorted by cost."""
    pts = sorted(range(len(costs)), key=lambda i: (costs[i], -accs[i]))
    front, best = [], -math.inf
    for i in pts:
        if accs[i] > best:
            front.append(i)
            best = accs[i]
    return front


#: The fields each kind of row needs to be summarised.
ROW_FIELDS = {
    "result": ("correct", "usage"),
    "replay": ("strategy", "budget", "accuracy", "completion_tokens", "total_tokens", "generations", "calls"),
    "estimate": ("strategy", "budget", "accuracy", "completion_tokens", "total_tokens", "generations", "calls"),
}


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``ttc run`` or ``ttc replay`` JSONL, headers included. A torn last line
    (a run still writing, or killed) is ignored; damage elsewhere, a row of an unknown
    type or one missing a field it needs raises ``ValueError`` naming the file and line."""
    from .pool import read_records

    rows = []
    for lineno, r in read_records(path):
        kind = r.get("type")
        if kind == "header":
            rows.append(r)
            continue
        if kind not in ROW_FIELDS:
            raise ValueError(f"{path}:{lineno}: not a ttc run or replay row (type {kind!r}); "
                             "expected the output of ttc run or ttc replay")
        missing = [k for k in ROW_FIELDS[kind] if k not in r]
        if missing:
            raise ValueError(f"{path}:{lineno}: {kind} row without {missing}")
        if kind == "result" and not isinstance(r["usage"], dict):
            raise ValueError(f"{path}:{lineno}: result row whose 'usage' is not an object")
        rows.append(r)
    if not any(r.get("type") != "header" for r in rows):
        raise ValueError(f"{path}: no results")
    return rows
