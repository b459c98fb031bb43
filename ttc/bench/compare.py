"""Comparing search strategies run on the same questions.

- :func:`grade`: each run right or not, and its coverage (a right answer among its final
  candidates: what a perfect selector would get).
- :func:`selection_rules`, :func:`rule_rights`: the answer each final rule (the search's
  particle weights, the verifier's rewards, a plain count) picks among the same final
  candidates, and how many of those are right.
- :func:`interpolate`, :func:`equal_token_comparison`: accuracy at equal tokens, each
  baseline read off its accuracy-vs-tokens curve at particle filtering's tokens per question.
- :func:`paired_comparison`: particle filtering against every baseline at the same N,
  question by question (discordant pairs, exact McNemar p).

Rows and labels follow the step-wise search benchmark: a row is ``(N, method label,
accuracy, tokens per question, ...)`` and particle-filtering labels start with
``"particle"``; a baseline's curve is named by its label up to ``" ("``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ttc.answers import same_answer
from ttc.questions import Example
from ttc.types import Sample, StrategyResult

from .metrics import discordant, mcnemar_p

__all__ = [
    "equal_token_comparison", "grade", "interpolate", "paired_comparison", "rule_rights", "selection_rules",
]


def interpolate(points: Sequence[tuple[float, float]], x: float) -> tuple[float, str]:
    """Accuracy at ``x`` tokens along a curve of (tokens, accuracy) points: linear between
    the two points around ``x``; outside the curve, its nearest end (marked)."""
    pts = sorted(points)
    if x <= pts[0][0]:
        return pts[0][1], " (its fewest tokens)" if x < pts[0][0] else ""
    if x >= pts[-1][0]:
        return pts[-1][1], " (its most tokens)" if x > pts[-1][0] else ""
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return (y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else max(y0, y1)), ""
    raise AssertionError("unreachable")


def equal_token_comparison(rows: Sequence[tuple[Any, ...]]) -> list[str]:
    """For each particle-filtering row: every baseline's accuracy at PF's tokens/question."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for _n, label, acc, tok, *_ in rows:
        if not label.startswith("particle"):
            curves.setdefault(label.split(" (")[0], []).append((tok, acc))
    if not curves or not any(label.startswith("particle") for _, label, *_ in rows):
        return []
    out = ["", "Accuracy at equal tokens (baselines interpolated along their N curve at PF's tokens/q):", ""]
    for n, label, acc, tok, *_ in rows:
        if not label.startswith("particle"):
            continue
        at = {b: interpolate(p, tok) for b, p in curves.items()}
        best = max(v for v, _ in at.values())
        parts = ", ".join(f"{b} {v:.3f}{mark}" for b, (v, mark) in at.items())
        verdict = ">=" if acc >= best - 1e-9 else "<"
        variant = label[len("particle filtering"):]  # e.g. " (resample every step)"
        out.append(f"- N={n}: PF{variant} {acc:.3f} at {tok:.0f} tokens/q {verdict} best baseline {best:.3f} ({parts})")
    return out


def selection_rules(samples: Sequence[Sample], rng: np.random.Generator) -> dict[str, str | None]:
    """The answer each final rule picks among the same candidates (those ``final="vote"`` votes
    among): the run's particle weights (``final="vote"``), the verifier's rewards (weighted
    best-of-N's rule), or a plain count."""
    from ttc.strategies.particle_filter import final_candidates
    from ttc.strategies.voting import vote

    cands, _ = final_candidates(list(samples))
    if not cands:
        return {"weights": None, "rewards": None, "count": None}
    return {
        "weights": vote(cands, rng, weights=[s.weight or 0.0 for s in cands]).answer,
        "rewards": vote(cands, rng, weights=[s.score or 0.0 for s in cands]).answer,
        "count": vote(cands, rng).answer,
    }


def grade(results: Sequence[StrategyResult], examples: Sequence[Example]) -> tuple[list[bool], int]:
    """Each run's answer right or not, per question, and its coverage: the questions with a right
    answer among its final candidates (what a perfect selector would get)."""
    right = [same_answer(r.answer, e.answer) for r, e in zip(results, examples)]
    cover = sum(any(same_answer(s.answer, e.answer) for s in r.samples) for r, e in zip(results, examples))
    return right, cover


def rule_rights(results: Sequence[StrategyResult], examples: Sequence[Example], seed: int) -> dict[str, int]:
    """Right answers of each final rule of :func:`selection_rules` over the same candidates."""
    rng = np.random.default_rng(seed)
    picks = [selection_rules(r.samples, rng) for r in results]
    return {k: sum(same_answer(p[k], e.answer) for p, e in zip(picks, examples))
            for k in ("weights", "rewards", "count")}


def paired_comparison(correct: dict[tuple[int, str], list[bool]]) -> list[str]:
    """For each particle-filtering row: per-question discordant pairs against every baseline at
    the same N (questions only PF got right, only the baseline got right) and McNemar's p."""
    out: list[str] = []
    for (n, label), pf in correct.items():
        if not label.startswith("particle"):
            continue
        for (m, other), base in correct.items():
            if m != n or other.startswith("particle"):
                continue
            b, c = discordant(pf, base)
            out.append(f"- N={n}: {label} vs {other}: only PF right {b}, only {other} right {c} "
                       f"(McNemar exact p = {mcnemar_p(b, c):.2f})")
    if out:
        out = ["", "Paired by question (same questions, same N):", ""] + out
    return out
