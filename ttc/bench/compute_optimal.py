"""Fitting and held-out evaluation of a compute-optimal policy on recorded pools.

Fitting (:func:`fit_policy`), after Snell et al. 2024 ("Scaling LLM Test-Time Compute
Optimally...", sec. 3.2: per difficulty bin, the test-time method and budget that do
best on held-out labelled questions):

1. Every candidate method (:func:`candidates`: the probe alone, which with one probe
   sample is a single sample; self-consistency with the Beta stop at caps 2..K; the
   verified-answer stop at caps 2..K when the policy has a verifier) is *replayed* on the
   calibration questions of a pool, ``seeds`` draw orders each, through the same
   :class:`~ttc.strategies.compute_optimal.ComputeOptimal` / allocator machinery that runs
   the policy later (every bin given that candidate, no budget). A (question, draw
   order) falls in a bin by its probe samples, which every candidate shares (the probe
   is the first samples of the draw order), so each candidate's accuracy and completion
   tokens are measured per bin: the bin's accuracy-vs-tokens curve.
2. The choice per bin maximises the expected accuracy of the batch under the budget
   (:func:`choose`): a multiple-choice knapsack, solved greedily on each bin's upper
   convex hull of (tokens, accuracy): start every bin at its cheapest candidate, then
   repeatedly take the upgrade with the largest accuracy gain per token (weighted by the
   bin's share of questions) that the budget per question still holds. On convex hulls
   this greedy is the LP-relaxation optimum but for the last upgrade.

Held-out evaluation: :func:`split_keys` puts each distinct question text on the fit or
the eval side by a hash of the text, the same for every pool, so a policy fitted on one
pool's fit side and evaluated on another pool's eval side (e.g. another generator seed)
never sees an evaluated question, not even as a repeated text.

Probes and continuations that a pool did not record (early-exit probes, particle
filtering's step continuations) cannot be replayed and are not candidates.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttc.answers import DEFAULT_EQUIVALENCE
from ttc.budget import Budget
from ttc.questions import Example
from ttc.strategies.compute_optimal import BIN_NAMES, BinChoice, ComputeOptimal, CurvePoint, Policy
from ttc.strategy import Strategy
from ttc.types import Generation, Prompt, SamplingParams

from .metrics import bootstrap_ci
from .pool import Pool
from .replay import ReplayEngine


# -- questions of a pool --------------------------------------------------------------------------
@dataclass
class Item:
    """A distinct question text of a pool with all its recorded samples (ids that share
    the text share them, as the replay engine serves them)."""

    key: str
    id: str
    prompt: Prompt
    answer: str
    samples: list[Generation]
    prompt_tokens: int

    def example(self) -> Example:
        return Example(id=self.id, question=self.key, answer=self.answer)


def items_of(pool: Pool) -> list[Item]:
    out: dict[str, Item] = {}
    for q in pool.questions:
        if q.key in out:
            out[q.key].samples = out[q.key].samples + list(q.samples)
        else:
            out[q.key] = Item(q.key, q.id, q.prompt, q.answer, list(q.samples), q.prompt_tokens)
    return list(out.values())


def side(key: str, salt: str = "compute-optimal") -> str:
    """``"fit"`` or ``"eval"``: the half a question text belongs to (a hash of the text)."""
    h = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return "fit" if h[0] % 2 == 0 else "eval"


def split_keys(fit_from: Sequence[Item], eval_from: Sequence[Item], salt: str = "compute-optimal"
               ) -> tuple[list[Item], list[Item]]:
    """The fit side of ``fit_from`` and the eval side of ``eval_from`` (see :func:`side`):
    no question text is in both."""
    fit = [i for i in fit_from if side(i.key, salt) == "fit"]
    ev = [i for i in eval_from if side(i.key, salt) == "eval"]
    shared = {i.key for i in fit} & {i.key for i in ev}
    if shared:  # cannot happen by construction; a guard against a changed side()
        raise AssertionError(f"split: {len(shared)} question texts on both sides")
    if not fit or not ev:
        raise ValueError(f"split: {len(fit)} fit and {len(ev)} eval questions; both sides need questions")
    return fit, ev


def engine_for(items: Sequence[Item], seed: int) -> ReplayEngine:
    return ReplayEngine({i.key: i.samples for i in items}, seed=seed,
                        prompt_tokens={i.key: i.prompt_tokens for i in items})


# -- runs ------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """Per (draw order, question): right or not, completion tokens, bin name (policies)."""

    correct: np.ndarray  # [seeds, questions]
    tokens: np.ndarray  # [seeds, questions]
    bins: list[list[str]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    @property
    def tokens_per_question(self) -> float:
        return float(self.tokens.mean())

    def per_question(self) -> np.ndarray:
        return self.correct.mean(axis=0)


async def run_policy(policy: Policy, items: Sequence[Item], seeds: Sequence[int], params: SamplingParams,
                     budget_tokens: int | None = None) -> Outcome:
    """The policy on ``items`` once per draw order, under one completion-token budget for
    the batch (``None``: unlimited)."""
    prompts = {i.id: i.prompt for i in items}
    strat = ComputeOptimal(policy, params=params, prompt_fn=lambda e: prompts[e.id])
    exs = [i.example() for i in items]
    correct, tokens, bins = [], [], []
    for s in seeds:
        budget = Budget(completion_tokens=budget_tokens) if budget_tokens is not None else Budget()
        res = await strat.run(exs, engine_for(items, s), budget, seed=s)
        correct.append([bool(q.correct) for q in res.questions])
        tokens.append([q.tokens for q in res.questions])
        bins.append([BIN_NAMES[q.bin] if q.bin is not None else "none" for q in res.questions])
    return Outcome(np.array(correct, float), np.array(tokens, float), bins)


async def run_fixed(make: Callable[[], Strategy], items: Sequence[Item], seeds: Sequence[int]) -> Outcome:
    """A per-question strategy on every item once per draw order (no budget)."""
    correct, tokens = [], []
    for s in seeds:
        eng = engine_for(items, s)
        rs = await asyncio.gather(*(make().run(i.prompt, eng, seed=s) for i in items))
        correct.append([r.answer is not None and bool(DEFAULT_EQUIVALENCE(r.answer, i.answer))
                        for r, i in zip(rs, items)])
        tokens.append([r.usage.completion_tokens for r in rs])
    return Outcome(np.array(correct, float), np.array(tokens, float))


def fixed_strategies(params: SamplingParams, caps: Sequence[int], verifier: bool = True
                     ) -> dict[str, Callable[[], Strategy]]:
    """The fixed (same for every question) strategies: majority vote of N (fixed-N
    self-consistency), self-consistency with the Beta stop (cap N), the verified-answer
    stop (cap N) and verifier-weighted best-of-N with :class:`ArithmeticCheck`."""
    from ttc.strategies import BestOfN, BetaRule, FixedN, SelfConsistency, VerifiedAnswer
    from ttc.verifiers import ArithmeticCheck

    out: dict[str, Callable[[], Strategy]] = {}
    for n in caps:
        out[f"fixed-{n} self-consistency"] = lambda n=n: SelfConsistency(FixedN(n), params=params, batch_sizes=(n,))
    for n in caps:
        if n > 1:
            out[f"sc beta 0.95 max {n}"] = lambda n=n: SelfConsistency(
                BetaRule(0.95, min_samples=min(4, n), max_samples=n), params=params)
    if verifier:
        for n in caps:
            if n > 1:
                out[f"verified stop max {n}"] = lambda n=n: SelfConsistency(
                    VerifiedAnswer(max_samples=n, pass_threshold=1.0), params=params, weighting=ArithmeticCheck())
                out[f"weighted best-of-{n} arith"] = lambda n=n: BestOfN(n, ArithmeticCheck(), weighted=True,
                                                                          params=params)
    return out


# -- fitting ---------------------------------------------------------------------------------------
def candidates(probe: int, caps: Sequence[int], verifier: bool, threshold: float = 0.95) -> list[BinChoice]:
    out = [BinChoice(method="probe", max_samples=probe)]
    for c in caps:
        if c > probe:
            out.append(BinChoice(method="vote", max_samples=c, threshold=threshold))
            if verifier:
                out.append(BinChoice(method="verified", max_samples=c))
    return out


def _uniform(probe: int, verifier: bool, c: BinChoice) -> Policy:
    return Policy(probe=probe, verifier="arithmetic_check" if verifier else None,
                  bins={b: c for b in BIN_NAMES})


@dataclass
class Measured:
    """Every candidate's outcome on the calibration questions, and each (seed, question)'s bin."""

    probe: int
    verifier: bool
    choices: list[BinChoice]
    outcomes: list[Outcome]
    bins: list[list[str]]  # [seeds][questions]

    def curve(self, bin_: str) -> tuple[float, list[CurvePoint]]:
        """The bin's share of (seed, question) pairs and each candidate's accuracy and
        tokens per question on them."""
        mask = np.array([[b == bin_ for b in row] for row in self.bins])
        share = float(mask.mean())
        if not mask.any():
            return 0.0, []
        pts = [CurvePoint(method=c.method, max_samples=c.max_samples, accuracy=float(o.correct[mask].mean()),
                          tokens=float(o.tokens[mask].mean())) for c, o in zip(self.choices, self.outcomes)]
        return share, pts


async def measure(items: Sequence[Item], params: SamplingParams, *, probe: int, caps: Sequence[int],
                  verifier: bool, seeds: Sequence[int], threshold: float = 0.95) -> Measured:
    """Replay every candidate on ``items`` (step 1 of the module doc)."""
    choices = candidates(probe, caps, verifier, threshold)
    outs = [await run_policy(_uniform(probe, verifier, c), items, seeds, params) for c in choices]
    bins = outs[0].bins
    for c, o in zip(choices, outs):  # the probe decides the bin: the same for every candidate
        if o.bins != bins:
            raise AssertionError(f"candidate {c.method} max {c.max_samples}: bins differ from the probe's")
    return Measured(probe, verifier, choices, outs, bins)


def _hull(pts: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """The upper-left convex hull of (tokens, accuracy, index): the points no mix of
    cheaper and dearer candidates beats."""
    pts = sorted(pts, key=lambda p: (p[0], -p[1]))
    best: list[tuple[float, float, int]] = []
    for p in pts:
        if best and p[1] <= best[-1][1]:
            continue  # dearer and no better
        while len(best) >= 2:
            (x1, y1, _), (x2, y2, _) = best[-2], best[-1]
            if (y2 - y1) * (p[0] - x1) <= (p[1] - y1) * (x2 - x1):
                best.pop()  # the middle point lies under the chord
            else:
                break
        best.append(p)
    return best


def choose(curves: dict[str, tuple[float, list[CurvePoint]]], budget_per_question: float) -> dict[str, int]:
    """Per bin, the index of the chosen curve point (step 2 of the module doc)."""
    hulls = {b: _hull([(p.tokens, p.accuracy, i) for i, p in enumerate(pts)]) for b, (_, pts) in curves.items()
             if pts}
    at = {b: 0 for b in hulls}
    spent = sum(curves[b][0] * h[0][0] for b, h in hulls.items())
    while True:
        best, best_rate = None, 0.0
        for b, h in hulls.items():
            if at[b] + 1 >= len(h):
                continue
            share = curves[b][0]
            (x0, y0, _), (x1, y1, _) = h[at[b]], h[at[b] + 1]
            cost = share * (x1 - x0)
            if spent + cost > budget_per_question + 1e-9:
                continue
            rate = share * (y1 - y0) / max(cost, 1e-12)
            if rate > best_rate:
                best, best_rate = b, rate
        if best is None:
            break
        h = hulls[best]
        spent += curves[best][0] * (h[at[best] + 1][0] - h[at[best]][0])
        at[best] += 1
    return {b: h[at[b]][2] for b, h in hulls.items()}


def fit_from(measured: Measured, budget_per_question: float, fit_info: dict[str, Any] | None = None) -> Policy:
    """The policy for ``budget_per_question`` completion tokens from measured curves."""
    curves = {b: measured.curve(b) for b in BIN_NAMES}
    pick = choose(curves, budget_per_question)
    cheapest = measured.choices[0]  # the probe alone: for a bin no calibration question fell in
    bins = {}
    for b in BIN_NAMES:
        share, pts = curves[b]
        if b in pick:
            c, p = measured.choices[pick[b]], pts[pick[b]]
            bins[b] = c.model_copy(update={"share": share, "accuracy": p.accuracy, "tokens": p.tokens, "curve": pts})
        else:
            bins[b] = cheapest.model_copy(update={"share": 0.0})
    return Policy(probe=measured.probe, verifier="arithmetic_check" if measured.verifier else None,
                  budget_per_question=budget_per_question, bins=bins, fit=dict(fit_info or {}))


def expected(policy: Policy) -> tuple[float, float]:
    """(accuracy, tokens per question) the fit expects of ``policy``."""
    acc = sum((c.share or 0.0) * (c.accuracy or 0.0) for c in policy.bins.values())
    tok = sum((c.share or 0.0) * (c.tokens or 0.0) for c in policy.bins.values())
    return acc, tok


def _rank(policy: Policy, budget_per_question: float) -> tuple[bool, float, float]:
    """Policies within the budget first, then by expected accuracy, then the cheaper."""
    acc, tok = expected(policy)
    return tok <= budget_per_question + 1e-9, round(acc, 12), -tok


async def fit_policy(items: Sequence[Item], params: SamplingParams, budget_per_question: float, *,
                     probes: Sequence[int] = (1, 2), caps: Sequence[int] = (2, 4, 8, 16, 32), verifier: bool = True,
                     seeds: Sequence[int] = (0, 1, 2, 3), measured: dict[int, Measured] | None = None,
                     fit_info: dict[str, Any] | None = None) -> Policy:
    """The policy with the highest expected calibration accuracy at ``budget_per_question``
    over the probe sizes ``probes`` (one whose probe alone costs more than the budget only
    if every probe size does). ``measured``: a cache of :func:`measure` per probe size."""
    measured = {} if measured is None else measured
    best: Policy | None = None
    for probe in probes:
        if probe not in measured:
            measured[probe] = await measure(items, params, probe=probe, caps=caps, verifier=verifier, seeds=seeds)
        info = {**(fit_info or {}), "questions": len(items), "seeds": len(seeds), "caps": list(caps),
                "objective": "max expected accuracy s.t. expected completion tokens/question <= budget "
                             "(greedy marginal gain per token over each bin's convex hull)"}
        pol = fit_from(measured[probe], budget_per_question, info)
        if best is None or _rank(pol, budget_per_question) > _rank(best, budget_per_question):
            best = pol
    assert best is not None
    return best


# -- difficulty signals -----------------------------------------------------------------------------
def difficulty_signals(fit: Sequence[Item], ev: Sequence[Item]) -> dict[str, float]:
    """How well two difficulty signals track a question's pass@1 (share of right samples)
    on the eval side: Pearson r of a ridge predictor on the bundled MiniLM embeddings of
    the question (fitted on the fit side), and of the question's rate of samples that
    pass :class:`~ttc.verifiers.rules.ArithmeticCheck` (what the probe estimates from its
    samples)."""
    from ttc.answers import extract_answer
    from ttc.routers.encoders import SentenceTransformerEncoder
    from ttc.strategies.difficulty import EmbeddingPredictor
    from ttc.verifiers import ArithmeticCheck

    def p1(i: Item) -> float:
        return float(np.mean([(a := extract_answer(g.text)) is not None and bool(DEFAULT_EQUIVALENCE(a, i.answer))
                              for g in i.samples]))

    check = ArithmeticCheck()
    enc = SentenceTransformerEncoder()
    pred = EmbeddingPredictor(kind="ridge", l2=1.0).fit(np.asarray(enc.encode([i.key for i in fit])),
                                                         [p1(i) for i in fit])
    y = np.array([p1(i) for i in ev])
    emb = np.asarray(pred.predict(np.asarray(enc.encode([i.key for i in ev]))), dtype=float)
    ver = np.array([np.mean([check.score_text(g.text, extract_answer(g.text)) >= 1.0 for g in i.samples])
                    for i in ev])
    return {"embedding_r": float(np.corrcoef(emb, y)[0, 1]), "verified_rate_r": float(np.corrcoef(ver, y)[0, 1])}


# -- intervals -------------------------------------------------------------------------------------
def mean_ci(per_question: np.ndarray) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean over questions."""
    return bootstrap_ci(per_question)


def diff_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """95% paired bootstrap interval of mean(a) - mean(b) over the same questions."""
    return bootstrap_ci(np.asarray(a, float) - np.asarray(b, float))


__all__ = [
    "Item", "Measured", "Outcome", "candidates", "choose", "diff_ci", "difficulty_signals", "engine_for", "expected", "fit_from",
    "fit_policy", "fixed_strategies", "items_of", "mean_ci", "measure", "run_fixed", "run_policy", "side",
    "split_keys",
]
