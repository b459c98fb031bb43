"""Generative self-evaluation gate (Manvi et al., "Adaptive Inference-Time Compute:
LLMs Can Predict if They Can Do Better, Even Mid-Generation").

After a (complete or partial) sample, append a fixed question ("Would you do better
if you started over?") and read the model's next-token distribution from one
forward pass (``max_tokens=1``, ``logprobs=20``): the probability mass of no-like
tokens against yes-like tokens in the top-k gives ``P(No)`` = "I would not do
better" (confidence in the sample) and ``P(better) = 1 - P(No)``. Calls are metered
with ``kind="self_eval"``.

Uses:

* :class:`SelfEvalGate`: sample more only while the best sample's ``P(better)``
  exceeds ``threshold``, in exponentially growing batches 1, 2, 4, ... (the paper's
  adaptive sampling); the answer is the majority vote (``select="vote"``) or the
  highest-``P(No)`` sample (``select="best"``).
* :class:`SelfEvalPruning`: draw ``n`` partial samples of ``prefix_tokens``, score the
  partials, keep the top ``keep_fraction`` (25-50% in the paper) and continue only
  those via continuation.
* :func:`calibrate_threshold`: pick the threshold maximising accuracy minus a token
  price on labelled held-out questions, by replaying the gate on recorded samples.

**The signal is weak on an un-tuned model.** Manvi et al. *fine-tune* the model to
predict its own success (Llama 3.1 8B; GSM8K 84% -> 91%); an off-the-shelf instruct
model, and certainly the bundled SmolLM2-135M, answers the question with little
relation to whether it was right (measured AUROC on the bundled model: see
``benchmarks/early_exit.py --self-eval``). Calibrate before trusting it; with a weak
signal the calibrated threshold tends to "always sample" or "never sample more".
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ttc.answers import DEFAULT_EQUIVALENCE
from ttc.checks import check_instance, check_int, check_number
from ttc.context import RunContext
from ttc.strategy import Decision, Run, Strategy
from ttc.types import Generation, Message, Prompt, Sample, SamplingParams

from .stats import Equiv
from .voting import pick_max, vote

_EPS = 1e-9  # P(better) == threshold closes the gate despite float rounding

DEFAULT_QUESTION = "Would you do better if you started over? Answer Yes or No."
NO_WORDS: tuple[str, ...] = ("no",)
YES_WORDS: tuple[str, ...] = ("yes",)


def _norm_token(tok: str) -> str:
    return tok.strip().strip(".,!:;\"'*").lower()


def p_no_from_top(top: Sequence[tuple[str, float]], no_words: Sequence[str] = NO_WORDS,
                  yes_words: Sequence[str] = YES_WORDS) -> float:
    """``P(No) / (P(No) + P(Yes))`` from top-k (token, logprob) pairs; 0.5 when neither
    a no-like nor a yes-like token is in the top-k."""
    no = {w.lower() for w in no_words}
    yes = {w.lower() for w in yes_words}
    p_no = sum(math.exp(lp) for t, lp in top if _norm_token(t) in no)
    p_yes = sum(math.exp(lp) for t, lp in top if _norm_token(t) in yes)
    if p_no + p_yes <= 0:
        return 0.5
    return p_no / (p_no + p_yes)


@dataclass
class SelfEvaluator:
    """Asks the model "would you do better if you started over?" about a sample.

    The question goes in a new user turn after the sample (chat prompts), or after
    the text (plain-text prompts). ``question`` and the yes/no word lists are
    configurable.
    """

    question: str = DEFAULT_QUESTION
    no_words: tuple[str, ...] = NO_WORDS
    yes_words: tuple[str, ...] = YES_WORDS
    top_k: int = 20
    answer_prefix: str = ""  # e.g. "Answer:" to force the next token to be the verdict

    def eval_prompt(self, prompt: Prompt, sample_text: str) -> Prompt:
        full = prompt.assistant_prefix + sample_text
        if prompt.messages is not None:
            msgs = list(prompt.messages) + [
                Message(role="assistant", content=full or " "),
                Message(role="user", content=self.question),
            ]
            return Prompt(messages=msgs, assistant_prefix=self.answer_prefix)
        assert prompt.text is not None
        return Prompt(text=f"{prompt.text}{full}\n\n{self.question}\n", assistant_prefix=self.answer_prefix)

    async def p_no(self, ctx: RunContext, prompt: Prompt, sample_text: str) -> float:
        """P(No): the model's confidence that starting over would not help."""
        if not ctx.capabilities.logprobs:
            raise ValueError(f"engine: {ctx.engine_name} returns no logprobs; the self-evaluation gate needs them")
        k = min(self.top_k, ctx.capabilities.max_top_logprobs)
        params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=k)
        gens = await ctx.generate(self.eval_prompt(prompt, sample_text), params, kind="self_eval")
        g = gens[0]
        if not g.logprobs:
            return 0.5
        first = g.logprobs[0]
        top = [(t.token, t.logprob) for t in first.top] or [(first.token, first.logprob)]
        return p_no_from_top(top, self.no_words, self.yes_words)

    async def score(self, ctx: RunContext, prompt: Prompt, texts: Sequence[str]) -> list[float]:
        return list(await asyncio.gather(*(self.p_no(ctx, prompt, t) for t in texts)))


def _select(samples: Sequence[Sample], rng: np.random.Generator, how: str, eq: Equiv) -> Decision:
    if not samples:
        return Decision(answer=None)
    scores = [s.score if s.score is not None else 0.0 for s in samples]
    if how == "best":
        parseable = [i for i, s in enumerate(samples) if s.answer is not None] or list(range(len(samples)))
        i = parseable[pick_max([scores[j] for j in parseable], rng)]
        return Decision(answer=samples[i].answer, chosen=samples[i], confidence=scores[i])
    return vote(samples, rng, eq=eq, pick_member_by=scores)


class SelfEvalGate(Strategy):
    """Adaptive sampling gated by self-evaluation (Manvi et al.).

    Draw batches of 1, 2, 4, ... samples (``growth`` times the last, up to
    ``max_samples``); after each batch score the new samples with ``P(No)``; stop as
    soon as the best sample's ``P(better) = 1 - P(No)`` is at most ``threshold``.
    Stop reason ``"self_eval"`` when the gate closed, ``"max_samples"`` otherwise.
    """

    name = "self_eval_gate"

    def __init__(
        self,
        threshold: float = 0.5,
        *,
        max_samples: int = 16,
        growth: int = 2,
        params: SamplingParams | None = None,
        evaluator: SelfEvaluator | None = None,
        select: Literal["vote", "best"] = "vote",
        eq: Equiv | None = None,
        **kw,  # type: ignore[no-untyped-def]
    ):
        super().__init__(**kw)
        check_number("threshold", threshold, lo=0, hi=1)
        check_int("max_samples", max_samples, lo=1)
        check_int("growth", growth, lo=1)
        check_instance("params", params, SamplingParams)
        if max_samples < 1:
            raise ValueError(f"max_samples: must be >= 1, got {max_samples}")
        if growth < 1:
            raise ValueError(f"growth: must be >= 1, got {growth}")
        if select not in ("vote", "best"):
            raise ValueError(f"select: 'vote' or 'best', got {select!r}")
        self.threshold = threshold
        self.max_samples = max_samples
        self.growth = growth
        self.params = (params or SamplingParams(temperature=0.7)).model_copy(update={"n": 1})
        self.evaluator = evaluator or SelfEvaluator()
        self.select = select
        self.eq = eq or DEFAULT_EQUIVALENCE

    async def _run(self, ctx: RunContext, prompt: Prompt, run: Run) -> str:
        samples = run.samples
        batch = 1
        while True:
            k = min(batch, self.max_samples - len(samples))
            gens = await ctx.generate(prompt, self.params.model_copy(update={"n": k}))
            new = [samples.add(g, batch=k) for g in gens]
            for s, p in zip(new, await self.evaluator.score(ctx, prompt, [s.text for s in new])):
                s.score = p
                s.meta["p_better"] = 1 - p
            best = max(s.score or 0.0 for s in samples)
            ctx.event("self_eval_batch", size=k, drawn=len(samples), best_p_no=best, p_better=1 - best)
            if 1 - best <= self.threshold + _EPS:
                return "self_eval"
            if len(samples) >= self.max_samples:
                return "max_samples"
            batch *= self.growth

    def decide(self, ctx: RunContext, prompt: Prompt, run: Run) -> Decision:
        samples = run.samples
        d = _select(samples.items, ctx.rng, self.select, self.eq)
        d.meta["batches"] = [s.meta.get("batch") for s in samples]
        return d


def keep_top(scores: Sequence[float], keep_fraction: float, rng: np.random.Generator | None = None) -> list[int]:
    """Indices of the top ``ceil(keep_fraction * n)`` scores (at least one), in index
    order; ties at the cut are broken at random."""
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction: must be in (0, 1], got {keep_fraction}")
    n = len(scores)
    if n == 0:
        return []
    m = max(1, math.ceil(keep_fraction * n - 1e-9))
    rng = rng or np.random.default_rng(0)
    jitter = rng.random(n)
    order = sorted(range(n), key=lambda i: (-scores[i], jitter[i]))
    return sorted(order[:m])


class SelfEvalPruning(Strategy):
    """Early pruning of partial samples with self-evaluation (Manvi et al.).

    Draw ``n`` samples up to ``prefix_tokens`` tokens; score each partial with
    ``P(No)``; keep the top ``keep_fraction`` and continue only those (continuation on
    ``prompt.with_prefix(partial)``) up to ``max_tokens`` in all. Partials that already
    finished are complete samples and compete like the rest. Pruned partials are kept
    in ``result.samples`` with ``meta["pruned"] = True`` and take no part in the vote.
    """

    name = "self_eval_pruning"

    def __init__(
        self,
        n: int = 8,
        *,
        prefix_tokens: int = 64,
        keep_fraction: float = 0.25,
        max_tokens: int = 384,
        params: SamplingParams | None = None,
        evaluator: SelfEvaluator | None = None,
        select: Literal["vote", "best"] = "vote",
        eq: Equiv | None = None,
        **kw,  # type: ignore[no-untyped-def]
    ):
        super().__init__(**kw)
        check_int("n", n, lo=1)
        check_int("prefix_tokens", prefix_tokens, lo=1)
        check_int("max_tokens", max_tokens, lo=1)
        check_number("keep_fraction", keep_fraction, lo=0, hi=1, lo_open=True)
        check_instance("params", params, SamplingParams)
        if select not in ("vote", "best"):
            raise ValueError(f"select: 'vote' or 'best', got {select!r}")
        if not 0 < keep_fraction <= 1:
            raise ValueError(f"keep_fraction: must be in (0, 1], got {keep_fraction}")
        if not 1 <= prefix_tokens < max_tokens:
            raise ValueError(f"prefix_tokens: must be in [1, max_tokens), got {prefix_tokens}")
        self.n = n
        self.prefix_tokens = prefix_tokens
        self.keep_fraction = keep_fraction
        self.max_tokens = max_tokens
        self.params = (params or SamplingParams(temperature=0.7)).model_copy(update={"n": 1})
        self.evaluator = evaluator or SelfEvaluator()
        self.select = select
        self.eq = eq or DEFAULT_EQUIVALENCE

    async def _run(self, ctx: RunContext, prompt: Prompt, run: Run) -> str:
        samples = run.samples
        partials = await ctx.generate(prompt, self.params.model_copy(update={"n": self.n, "max_tokens": self.prefix_tokens}))
        scores = await self.evaluator.score(ctx, prompt, [g.text for g in partials])
        kept = set(keep_top(scores, self.keep_fraction, ctx.rng))
        ctx.event("self_eval_prune", n=len(partials), kept=sorted(kept), scores=scores)
        rest = self.params.model_copy(update={"max_tokens": self.max_tokens - self.prefix_tokens})

        async def finish(g: Generation) -> Generation:
            if g.finish_reason != "length":
                return g
            (tail,) = await ctx.generate(prompt.continued(g.text), rest)
            return Generation(text=g.text + tail.text, num_tokens=g.num_tokens + tail.num_tokens,
                              finish_reason=tail.finish_reason)

        for i, g in enumerate(partials):
            if i not in kept:
                samples.add(g, pruned=True, prefix_score=scores[i])
        done = await asyncio.gather(*(finish(partials[i]) for i in sorted(kept)))
        for i, g in zip(sorted(kept), done):
            samples.add(g, pruned=False, prefix_score=scores[i]).score = scores[i]
        return "done"

    def decide(self, ctx: RunContext, prompt: Prompt, run: Run) -> Decision:
        samples = run.samples
        live = [s for s in samples if not s.meta.get("pruned")]
        d = _select(live, ctx.rng, self.select, self.eq)
        d.meta["pruned"] = sum(1 for s in samples if s.meta.get("pruned"))
        return d


# -- calibration --------------------------------------------------------------------------
@dataclass
class GateRecord:
    """One recorded sample of a held-out question, in draw order."""

    p_no: float
    correct: bool
    tokens: int
    answer: str | None = None


def gate_schedule(n_available: int, growth: int = 2, max_samples: int | None = None) -> list[int]:
    """Cumulative sample counts after each batch: 1, 3, 7, ... (growth 2), capped."""
    cap = min(n_available, max_samples) if max_samples is not None else n_available
    out, drawn, batch = [], 0, 1
    while drawn < cap:
        drawn = min(cap, drawn + batch)
        out.append(drawn)
        batch *= growth
    return out


def simulate_gate(
    records: Sequence[GateRecord],
    threshold: float,
    *,
    growth: int = 2,
    max_samples: int | None = None,
    select: Literal["vote", "best"] = "best",
    eq: Equiv | None = None,
) -> tuple[bool, int, int]:
    """Replay :class:`SelfEvalGate` on recorded samples: (correct, samples drawn, tokens)."""
    if not records:
        raise ValueError("records: no samples to replay")
    eq = eq or DEFAULT_EQUIVALENCE
    drawn = 0
    for drawn in gate_schedule(len(records), growth, max_samples):
        if 1 - max(r.p_no for r in records[:drawn]) <= threshold + _EPS:
            break
    used = records[:drawn]
    tokens = sum(r.tokens for r in used)
    if select == "best":
        best = max(range(drawn), key=lambda i: (used[i].p_no, -i))
        return used[best].correct, drawn, tokens
    samples = [Sample(index=i, text="", num_tokens=r.tokens, answer=r.answer) for i, r in enumerate(used)]
    d = vote(samples, np.random.default_rng(0), eq=eq)
    ok = d.chosen is not None and used[d.chosen.index].correct
    return ok, drawn, tokens


@dataclass
class Calibration:
    threshold: float
    objective: float
    accuracy: float
    mean_tokens: float
    mean_samples: float
    table: list[dict]


def calibrate_threshold(
    data: Sequence[Sequence[GateRecord]],
    *,
    token_price: float = 0.0,
    thresholds: Sequence[float] | None = None,
    growth: int = 2,
    max_samples: int | None = None,
    select: Literal["vote", "best"] = "best",
) -> Calibration:
    """The threshold maximising ``accuracy - token_price * mean tokens`` on held-out data.

    ``data[q]`` are question q's recorded samples in draw order, each with its
    ``P(No)``, correctness and token count. Candidates default to 0, 1 and every
    distinct ``P(better)`` in the data. Ties go to the larger threshold (fewer samples).
    """
    if not data:
        raise ValueError("data: no questions to calibrate on")
    if token_price < 0:
        raise ValueError(f"token_price: must be >= 0, got {token_price}")
    cands = sorted(set(thresholds) if thresholds is not None else
                   {0.0, 1.0} | {round(1 - r.p_no, 12) for q in data for r in q})
    table = []
    for t in cands:
        runs = [simulate_gate(q, t, growth=growth, max_samples=max_samples, select=select) for q in data]
        acc = float(np.mean([r[0] for r in runs]))
        toks = float(np.mean([r[2] for r in runs]))
        table.append({"threshold": t, "accuracy": acc, "mean_tokens": toks,
                      "mean_samples": float(np.mean([r[1] for r in runs])), "objective": acc - token_price * toks})
    best = max(table, key=lambda r: (round(r["objective"], 12), r["threshold"]))
    return Calibration(threshold=best["threshold"], objective=best["objective"], accuracy=best["accuracy"],
                       mean_tokens=best["mean_tokens"], mean_samples=best["mean_samples"], table=table)


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve of ``scores`` for ``labels`` (Mann-Whitney, ties = 1/2);
    None when one class is missing."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return None
    gt = (pos[:, None] > neg[None, :]).sum()
    eq = (pos[:, None] == neg[None, :]).sum()
    return float((gt + 0.5 * eq) / (len(pos) * len(neg)))
