"""The strategy base class: one call shape for every test-time method.

``await strategy.run(question, engine, budget)`` -> :class:`~ttc.types.StrategyResult`;
``strategy.run_sync(...)`` does the same from plain scripts and Jupyter;
``await strategy.run_in(ctx.child(budget), prompt)`` runs it as a step of another
strategy on a sub-budget.

A subclass implements :meth:`Strategy._run`, which draws samples into the
:class:`SampleSet` it is handed and returns a stop reason, and :meth:`Strategy.decide`,
which picks the answer from the samples. If the budget runs out inside ``_run`` the
base class catches :class:`~ttc.budget.BudgetExhausted`, keeps every sample already
drawn, and decides on those with ``stop_reason="budget"``: a strategy never raises
mid-way for lack of budget. An :class:`~ttc.engine.EngineError` (a request that failed
after its retries) is caught the same way: ``stop_reason="engine_error"``, the error in
``result.error``, every sample kept, and the paid-for generations the failed call did
receive added (``meta["salvaged"]``): nothing paid for is lost.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from .answers import AnswerExtractor, extract_answer
from .budget import Budget, BudgetExhausted, Meter
from .context import RunContext
from .engine import Engine, EngineError
from .grading import off_loop
from .types import Generation, Prompt, PromptLike, Sample, StrategyResult


@dataclass
class Decision:
    answer: str | None
    chosen: Sample | None = None
    confidence: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class SampleSet:
    """The samples of one run, in arrival order. Strategies add, never remove."""

    def __init__(self, extractor: AnswerExtractor):
        self.extractor = extractor
        self.items: list[Sample] = []

    def add(self, g: Generation | Sample, *, prefix: str = "", **meta: Any) -> Sample:
        if isinstance(g, Sample):
            s = g.model_copy(update={"index": len(self.items)})
        else:
            s = Sample.from_generation(len(self.items), g, prefix=prefix)
        if s.answer is None:
            s.answer = self.extractor(s.text)
        s.meta.update(meta)
        self.items.append(s)
        return s

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items)

    @property
    def completion_tokens(self) -> int:
        return sum(s.num_tokens for s in self.items)


class Strategy(abc.ABC):
    """Base of every test-time strategy."""

    name: str = "strategy"

    def __init__(self, *, extractor: AnswerExtractor | None = None):
        self.extractor: AnswerExtractor = extractor or extract_answer

    # -- entry points ------------------------------------------------------------------
    async def run(
        self,
        question: PromptLike,
        engine: Engine,
        budget: Budget | Meter | None = None,
        *,
        seed: int | None = None,
    ) -> StrategyResult:
        if budget is not None and not isinstance(budget, (Budget, Meter)):
            raise TypeError(
                f"budget: expected a ttc.Budget (e.g. Budget(completion_tokens=2000)), a Meter or None, "
                f"got {type(budget).__name__} {budget!r:.60}"
            )
        prompt = Prompt.of(question)
        meter = budget if isinstance(budget, Meter) else Meter(budget)
        return await self.run_in(RunContext(engine, meter, seed=seed), prompt)

    def run_sync(
        self,
        question: PromptLike,
        engine: Engine,
        budget: Budget | Meter | None = None,
        *,
        seed: int | None = None,
        **run_kwargs: Any,
    ) -> StrategyResult:
        """Blocking :meth:`run` for scripts and notebooks (works inside Jupyter);
        ``run_kwargs`` go to a subclass's :meth:`run` (e.g. the router's ``engines``)."""
        from .sync import run_sync

        return run_sync(self.run(question, engine, budget, seed=seed, **run_kwargs))

    async def run_in(self, ctx: RunContext, prompt: Prompt) -> StrategyResult:
        samples = SampleSet(self.extractor)
        ctx.event("start", strategy=self.name)
        try:
            stop = await self._run(ctx, prompt, samples)
        except BudgetExhausted as e:
            stop = "budget"
            ctx.budget_detail = e.limit
            ctx.event("budget", limit=e.limit, needed=e.needed, available=e.available)
        except EngineError as e:
            stop = "engine_error"
            ctx.error = str(e)
            ctx.event("engine_error", error=ctx.error)
        if stop == "engine_error" and ctx.error is None:
            ctx.error = "engine error"
        for salvaged in ctx.salvaged:
            samples.add(salvaged, salvaged=True)
        ctx.salvaged.clear()
        decision = await off_loop(self.decide, ctx, prompt, samples)  # grading never blocks the loop
        ctx.event("stop", reason=stop, samples=len(samples), answer=decision.answer)
        return StrategyResult(
            strategy=self.name,
            answer=decision.answer,
            confidence=decision.confidence,
            chosen=decision.chosen,
            samples=list(samples.items),
            stop_reason=stop,
            budget_detail=ctx.budget_detail,
            error=ctx.error,
            usage=ctx.meter.usage(),
            overspent=dict(ctx.meter.overspent),
            usage_by_kind=dict(ctx.meter.by_kind),
            trace=list(ctx.trace),
            meta=decision.meta,
        )

    # -- to implement ------------------------------------------------------------------
    @abc.abstractmethod
    async def _run(self, ctx: RunContext, prompt: Prompt, samples: SampleSet) -> str:
        """Draw samples into ``samples``; return the stop reason ("done", a rule name)."""

    @abc.abstractmethod
    def decide(self, ctx: RunContext, prompt: Prompt, samples: SampleSet) -> Decision:
        """Pick the answer from whatever samples were drawn (possibly none)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
