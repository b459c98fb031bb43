"""The semantic reasoning router as a strategy.

Follows "When to Reason: Semantic Router for vLLM" (Wang et al. 2025): classify the
query, decide with the entropy-banded policy whether to reason and which route to take,
then answer on that route. Here the route is any ttc strategy on any engine with its own
sub-budget, so the router composes: it can route to self-consistency with a budget on one
engine and to a single direct answer on another, and it can itself be a step of another
strategy (``await router.run_in(ctx.child(budget), prompt)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ttc.context import RunContext
from ttc.engine import Engine
from ttc.strategy import Decision, Run, Strategy
from ttc.types import Prompt, StrategyResult

from .encoders import ProbabilisticClassifier
from .policy import ComplexitySignal, EntropyBandPolicy, RoutingDecision
from .routes import Route, run_route


@dataclass
class _Routed:
    decision: RoutingDecision
    inner: StrategyResult


class SemanticRouter(Strategy):
    """Classify -> decide (entropy bands, threshold, complexity) -> run the route.

    ``classifier``: any :class:`~ttc.routers.encoders.ProbabilisticClassifier` (e.g.
    ``EncodedClassifier(SentenceTransformerEncoder(), LogisticRegression().fit(...))``).
    ``policy``: an :class:`~ttc.routers.policy.EntropyBandPolicy` (from a calibrated
    :class:`~ttc.routers.calibrate.RoutingTable`: ``table.policy(options)``).
    ``engines``: name -> engine, for routes whose ``engine`` is set; ``run(...,
    engines=...)`` adds or overrides entries per run. The ``engine`` given to ``run`` is
    the one for routes with ``engine=None``.

    The result carries the inner strategy's samples, answer and confidence; its meta has
    ``routing`` (the :class:`RoutingDecision`) and ``inner`` (the inner strategy's name,
    stop reason, meta); the trace has a ``route`` event and the inner run's events.
    """

    name = "semantic_router"

    def __init__(
        self,
        classifier: ProbabilisticClassifier,
        policy: EntropyBandPolicy,
        *,
        engines: Mapping[str, Engine] | None = None,
        complexity: ComplexitySignal | None = None,
    ):
        super().__init__()
        if not isinstance(classifier, ProbabilisticClassifier):
            raise TypeError(f"classifier: expected a ProbabilisticClassifier, got {type(classifier).__name__}")
        policy.check_classes(classifier.classes)
        self.classifier = classifier
        self.policy = policy
        self.engines = dict(engines or {})
        self.complexity = complexity

    def _engine_for(self, name: str | None, ctx: RunContext) -> Engine:
        """The run's engines (``run(..., engines=...)``, in the context) first, then the
        router's own; ``None``: the run's engine."""
        if name is None or name in ctx.engines:
            return ctx.engine_for(name)
        if name in self.engines:
            return self.engines[name]
        known = sorted(set(self.engines) | set(ctx.engines))
        raise KeyError(f"route engine {name!r}: not among the router's engines {known}")

    async def route(self, question: str) -> tuple[RoutingDecision, Route]:
        """The decision for ``question`` without running it: (record, Route)."""
        p = (await self.classifier.apredict_proba([question]))[0]
        probs = {c: float(v) for c, v in zip(self.classifier.classes, p)}
        s = await self.complexity.ascore(question) if self.complexity is not None else None
        return self.policy.decide(probs, complexity=s)

    async def _run(self, ctx: RunContext, prompt: Prompt, run: Run) -> str:
        samples = run.samples
        decision, route = await self.route(prompt.question)
        ctx.event("route", **decision.model_dump())
        engine = self._engine_for(route.engine, ctx)
        inner = await run_route(route, ctx, prompt, engine=engine)
        for e in inner.trace:
            ctx.trace.append(e.model_copy(update={"data": {**e.data, "route": decision.route}}))
        for s in inner.samples:
            samples.add(s, route=decision.route)
        run.state = _Routed(decision, inner)
        if inner.stop_reason == "budget":
            ctx.budget_detail = inner.budget_detail
        return inner.stop_reason

    def decide(self, ctx: RunContext, prompt: Prompt, run: Run) -> Decision:
        samples = run.samples
        routed: _Routed | None = run.state
        if routed is None:  # classification itself failed for lack of budget: nothing drawn
            return Decision(answer=None, meta={"routing": None})
        inner = routed.inner
        chosen = None
        if inner.chosen is not None and inner.chosen.index < len(samples.items):
            chosen = samples.items[inner.chosen.index]
        return Decision(
            answer=inner.answer,
            chosen=chosen,
            confidence=inner.confidence,
            meta={
                "routing": routed.decision.model_dump(),
                "inner": {"strategy": inner.strategy, "stop_reason": inner.stop_reason, "meta": inner.meta,
                          "usage": inner.usage.model_dump()},
            },
        )

    def __repr__(self) -> str:
        return f"SemanticRouter({self.classifier!r}, routes={sorted(self.policy.routes)})"
