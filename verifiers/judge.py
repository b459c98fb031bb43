"""LLM-as-judge outcome verifier reading probabilities, not parsed scores.

The judge model is asked a yes/no question (pointwise: "is this answer correct?") or
an A/B question (pairwise: "which answer is better?") and generates ONE token with
the top-20 logprobs. The score is the probability mass of yes-like tokens over the
yes-like plus no-like mass in the top-k (P(yes) / P(True)), as in generative
verifiers (Zhang et al. 2024, "Generative Verifiers") and the P(True) of Kadavath
et al. 2022; binary verdicts rank more reliably than 3+ level scores, and pairwise
judging beats pointwise scores (Zheng et al. 2023), at O(n^2) calls.

Works on any engine that returns top-k logprobs. Every call goes through
``ctx.generate(kind="verify")``, so it is reserved and charged to the run's budget.
A separate judge engine can be given; its calls are charged to the same meter.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from typing import Literal

from ttc.checks import check_bool, check_instance, check_int
from ttc.context import RunContext
from ttc.engine import Engine
from ttc.types import Generation, Prompt, Sample, SamplingParams

from .base import OutcomeVerifier

YES = frozenset({"yes", "true", "correct", "right", "y"})
NO = frozenset({"no", "false", "incorrect", "wrong", "n"})

POINTWISE = (
    "Question:\n{question}\n\nProposed answer:\n{answer}\n\n"
    "Is the proposed answer correct? Answer with Yes or No only."
)
PAIRWISE = (
    "Question:\n{question}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}\n\n"
    "Which answer is correct, A or B? Answer with the letter A or B only."
)


def _norm(token: str) -> str:
    return re.sub(r"[^a-z]", "", token.strip().lower())


def label_mass(g: Generation, positive: frozenset[str], negative: frozenset[str]) -> tuple[float, float]:
    """(positive mass, negative mass) in the first token's top-k alternatives."""
    if not g.logprobs:
        raise ValueError("judge: the engine returned no logprobs for the verdict token")
    first = g.logprobs[0]
    alts = first.top or []
    pos = neg = 0.0
    seen: set[str] = set()
    for t in alts or [first]:  # type: ignore[list-item]
        if t.token in seen:
            continue
        seen.add(t.token)
        w = _norm(t.token)
        if w in positive:
            pos += math.exp(t.logprob)
        elif w in negative:
            neg += math.exp(t.logprob)
    return pos, neg


def p_yes(g: Generation, positive: frozenset[str] = YES, negative: frozenset[str] = NO) -> float:
    """P(positive) / (P(positive) + P(negative)); 0.5 when neither appears in the top-k."""
    pos, neg = label_mass(g, positive, negative)
    return pos / (pos + neg) if pos + neg > 0 else 0.5


class LLMJudge(OutcomeVerifier):
    """Pointwise or pairwise LLM judge scoring with P(yes) from logprobs.

    Pointwise: score_i = P(yes | question, answer_i).
    Pairwise: every ordered pair (both orders when ``both_orders``, which cancels
    position bias) gives P(A better); score_i = mean win probability of sample i
    against the others (a Bradley-Terry-free round robin). Costs n(n-1) calls.
    """

    name = "llm_judge"

    def __init__(
        self,
        mode: Literal["pointwise", "pairwise"] = "pointwise",
        *,
        engine: Engine | None = None,
        template: str | None = None,
        top_k: int = 20,
        both_orders: bool = True,
        max_answer_chars: int = 2000,
        concurrency: int = 16,
    ):
        if mode not in ("pointwise", "pairwise"):
            raise ValueError(f"mode: expected 'pointwise' or 'pairwise', got {mode!r}")
        check_instance("engine", engine, Engine)
        check_instance("template", template, str)
        check_int("top_k", top_k, lo=1, hi=20)
        check_bool("both_orders", both_orders)
        check_int("max_answer_chars", max_answer_chars, lo=1)
        check_int("concurrency", concurrency, lo=1)
        self.mode = mode
        self.engine = engine
        self.template = template or (POINTWISE if mode == "pointwise" else PAIRWISE)
        self.top_k = top_k
        self.both_orders = both_orders
        self.max_answer_chars = max_answer_chars
        self._sem_size = concurrency
        self.name = f"llm_judge_{mode}"

    def _ctx(self, ctx: RunContext) -> RunContext:
        if self.engine is None:
            return ctx
        return RunContext(self.engine, ctx.meter, seed=ctx.seed, trace=ctx.trace, t0=ctx.t0)

    def _params(self, ctx: RunContext) -> SamplingParams:
        k = min(self.top_k, ctx.capabilities.max_top_logprobs)
        return SamplingParams(temperature=0.0, max_tokens=1, logprobs=k)

    async def _ask(self, ctx: RunContext, text: str, sem: asyncio.Semaphore) -> Generation:
        async with sem:
            return (await ctx.generate(Prompt.of(text), self._params(ctx), kind="verify"))[0]

    async def score(self, ctx: RunContext, prompt: Prompt, samples: Sequence[Sample]) -> list[float]:
        jctx = self._ctx(ctx)
        if not jctx.capabilities.logprobs:
            raise ValueError(f"engine: the judge needs logprobs; {jctx.engine.name} returns none")
        sem = asyncio.Semaphore(self._sem_size)
        q = prompt.question
        texts = [s.text[-self.max_answer_chars :] for s in samples]
        if self.mode == "pointwise":
            gens = await asyncio.gather(
                *(self._ask(jctx, self.template.format(question=q, answer=t), sem) for t in texts)
            )
            return [p_yes(g) for g in gens]
        return await self._pairwise(jctx, q, texts, sem)

    async def _pairwise(self, ctx: RunContext, q: str, texts: list[str], sem: asyncio.Semaphore) -> list[float]:
        n = len(texts)
        if n < 2:
            return [0.5] * n
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j and (self.both_orders or i < j)]
        gens = await asyncio.gather(
            *(self._ask(ctx, self.template.format(question=q, a=texts[i], b=texts[j]), sem) for i, j in pairs)
        )
        wins = [0.0] * n
        games = [0] * n
        for (i, j), g in zip(pairs, gens):
            pa = p_yes(g, frozenset({"a"}), frozenset({"b"}))
            wins[i] += pa
            wins[j] += 1 - pa
            games[i] += 1
            games[j] += 1
        return [w / m for w, m in zip(wins, games)]

    async def prefer(self, ctx: RunContext, prompt: Prompt, a: str, b: str) -> float:
        """P(a is better than b), averaged over both presentation orders."""
        jctx = self._ctx(ctx)
        sem = asyncio.Semaphore(2)
        tpl = self.template if self.mode == "pairwise" else PAIRWISE
        g1, g2 = await asyncio.gather(
            self._ask(jctx, tpl.format(question=prompt.question, a=a, b=b), sem),
            self._ask(jctx, tpl.format(question=prompt.question, a=b, b=a), sem),
        )
        ab = frozenset({"a"}), frozenset({"b"})
        return 0.5 * (p_yes(g1, *ab) + 1 - p_yes(g2, *ab))
