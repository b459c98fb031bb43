"""The simplest strategies: one greedy answer, and best-of-N with a verifier.

Best-of-N follows WebGPT-style rejection sampling (Nakano et al. 2021): draw N
complete answers, score each with an outcome verifier, return the argmax; the
*weighted* variant sums scores per answer class (as in Puri et al. 2025's
weighted BoN baseline). Ties are broken at random with the seeded generator.
"""

from __future__ import annotations

from ttc.checks import check_bool, check_instance, check_int
from ttc.context import RunContext
from ttc.strategy import Decision, Run, SampleSet, Strategy
from ttc.types import Prompt, SamplingParams
from ttc.verifiers.base import OutcomeVerifier

from .voting import pick_max, vote


class Greedy(Strategy):
    """One sample at temperature 0."""

    name = "greedy"

    def __init__(self, params: SamplingParams | None = None, **kw):  # type: ignore[no-untyped-def]
        super().__init__(**kw)
        check_instance("params", params, SamplingParams)
        self.params = (params or SamplingParams()).model_copy(update={"temperature": 0.0, "n": 1})

    async def _run(self, ctx: RunContext, prompt: Prompt, run: Run) -> str:
        samples = run.samples
        for g in await ctx.generate(prompt, self.params):
            samples.add(g)
        return "done"

    def decide(self, ctx: RunContext, prompt: Prompt, run: Run) -> Decision:
        samples = run.samples
        if not len(samples):
            return Decision(answer=None)
        s = samples.items[0]
        return Decision(answer=s.answer, chosen=s, confidence=None)


class BestOfN(Strategy):
    """Draw ``n`` samples (in one engine call when the engine has native ``n``),
    score them with ``verifier``, pick the best sample (``weighted=False``) or the
    answer class with the largest summed score (``weighted=True``).

    If the budget cannot hold all ``n`` in one call, samples are drawn in smaller
    calls until it runs out, and the decision is made on what was drawn.
    """

    name = "best_of_n"

    def __init__(
        self,
        n: int = 8,
        verifier: OutcomeVerifier | None = None,
        *,
        weighted: bool = False,
        params: SamplingParams | None = None,
        **kw,  # type: ignore[no-untyped-def]
    ):
        super().__init__(**kw)
        self.n = check_int("n", n, lo=1)
        check_instance("verifier", verifier, OutcomeVerifier)
        check_bool("weighted", weighted)
        check_instance("params", params, SamplingParams)
        self.verifier = verifier
        self.weighted = weighted
        self.params = params or SamplingParams(temperature=0.8)
        if verifier is None and not weighted:
            self.name = "best_of_n"

    async def _run(self, ctx: RunContext, prompt: Prompt, run: Run) -> str:
        samples = run.samples
        want = self.n
        prompt_tokens = await ctx.count_prompt_tokens(prompt)
        while want > 0:
            k = want
            while k > 1 and not ctx.can_afford(prompt_tokens, self.params.model_copy(update={"n": k})):
                k //= 2
            gens = await ctx.generate(prompt, self.params.model_copy(update={"n": k}))
            for g in gens:
                samples.add(g)
            want -= len(gens)
        await self._score(ctx, prompt, samples)
        return "done"

    async def _score(self, ctx: RunContext, prompt: Prompt, samples: SampleSet) -> None:
        if self.verifier is None:
            return
        unscored = [s for s in samples if s.score is None]
        if unscored:
            for s, sc in zip(unscored, await self.verifier.score(ctx, prompt, unscored)):
                s.score = sc

    def decide(self, ctx: RunContext, prompt: Prompt, run: Run) -> Decision:
        samples = run.samples
        items = samples.items
        if not items:
            return Decision(answer=None)
        scores = [s.score if s.score is not None else 0.0 for s in items]
        if self.verifier is None or self.weighted:
            d = vote(items, ctx.rng, weights=scores if self.verifier else None, pick_member_by=scores)
        else:
            parseable = [i for i, s in enumerate(items) if s.answer is not None]
            if not parseable:
                return Decision(answer=None, meta={"scores": scores})
            best = parseable[pick_max([scores[i] for i in parseable], ctx.rng)]
            d = Decision(answer=items[best].answer, chosen=items[best], confidence=scores[best])
        d.meta["scores"] = scores
        return d
