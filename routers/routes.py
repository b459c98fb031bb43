"""Routes: where a routed question goes, and how reasoning is switched on or off.

A :class:`Route` names an engine (a key of the router's engine dict; ``None`` is the
engine ``run`` was given), the model it serves, reasoning on/off with an effort level,
a :class:`~ttc.strategy.Strategy` (Greedy for a direct answer, BestOfN, self-consistency,
...) and a :class:`~ttc.budget.Budget` for it.

Reasoning is switched per model family, as in "When to Reason: Semantic Router for
vLLM" (Wang et al. 2025):

- ``qwen3``: ``chat_template_kwargs.enable_thinking``;
- ``deepseek`` (V3.1): ``chat_template_kwargs.thinking``;
- ``openai`` (gpt-oss, o-series): ``reasoning_effort`` (off = ``"low"``: these models
  always reason a little);
- ``plain`` (no thinking mode, e.g. SmolLM2): a chain-of-thought prompt versus a
  direct-answer prompt (suffixes of :mod:`ttc.questions`).

:meth:`Route.render` produces the prompt and the ``SamplingParams.extra`` of a route;
:func:`run_route` runs the route's strategy with them applied to every engine call
(through :class:`SwitchedEngine`, so any strategy composes without knowing about it).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ttc.budget import Budget, Meter
from ttc.context import RunContext
from ttc.engine import Billing, ContinuationScope, Engine
from ttc.questions import COT_SUFFIX, DIRECT_SUFFIX
from ttc.strategy import Strategy
from ttc.types import GenerationResult, Message, Prompt, SamplingParams, StrategyResult, StreamDelta, Usage

Family = Literal["qwen3", "deepseek", "openai", "plain"]
Effort = Literal["low", "medium", "high"]


def detect_family(model: str | None) -> Family:
    """Model family from a model name (``Qwen/Qwen3-8B`` -> ``qwen3``); ``plain`` if unknown."""
    m = (model or "").lower()
    if "qwen3" in m:
        return "qwen3"
    if "deepseek" in m:
        return "deepseek"
    if "gpt-oss" in m or m.split("/")[-1].startswith(("o1", "o3", "o4", "gpt-5")):
        return "openai"
    return "plain"


def _merge_extra(base: dict[str, Any], add: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in add.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


class Route(BaseModel):
    """One routing target. ``strategy`` defaults to a greedy answer; ``budget`` to none."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True, extra="forbid")

    name: str
    engine: str | None = None
    model: str | None = None
    family: Family | None = None
    reasoning: bool = False
    effort: Effort | None = None
    strategy: Any = Field(None, validate_default=True)
    budget: Budget | None = None
    cot_suffix: str = COT_SUFFIX
    direct_suffix: str = DIRECT_SUFFIX

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("name: empty route name")
        return v

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: Any) -> Any:
        if v is None:
            from ttc.strategies.simple import Greedy

            return Greedy()
        if not isinstance(v, Strategy):
            # pydantic turns a ValueError into a ValidationError naming the field
            raise ValueError(f"strategy: expected a ttc Strategy instance, got {type(v).__name__}")  # noqa: TRY004
        return v

    @model_validator(mode="after")
    def _effort(self) -> Route:
        if self.effort is not None and not self.reasoning:
            raise ValueError(f"effort: route {self.name!r} sets effort={self.effort!r} with reasoning off")
        return self

    @property
    def resolved_family(self) -> Family:
        return self.family or detect_family(self.model)

    def with_reasoning(self, on: bool, *, name: str | None = None) -> Route:
        """The same target with reasoning switched ``on``/off (same strategy and budget)."""
        return self.model_copy(
            update={"reasoning": on, "effort": self.effort if on else None,
                    "name": name or f"{self.name}:{'on' if on else 'off'}"}
        )

    # -- the switch ---------------------------------------------------------------------------
    def extra(self) -> dict[str, Any]:
        """The ``SamplingParams.extra`` entries that switch reasoning for this family."""
        fam = self.resolved_family
        if fam == "qwen3":
            return {"chat_template_kwargs": {"enable_thinking": self.reasoning}}
        if fam == "deepseek":
            return {"chat_template_kwargs": {"thinking": self.reasoning}}
        if fam == "openai":
            return {"reasoning_effort": (self.effort or "medium") if self.reasoning else "low"}
        return {}

    def prompt(self, prompt: Prompt) -> Prompt:
        """The prompt for this route: for a ``plain`` model the last user message (or the
        text) gets the chain-of-thought or the direct-answer suffix; other families switch
        reasoning in the chat template and keep the prompt as is."""
        if self.resolved_family != "plain":
            return prompt
        suffix = self.cot_suffix if self.reasoning else self.direct_suffix
        if not suffix:
            return prompt
        if prompt.text is not None:
            return prompt.model_copy(update={"text": prompt.text + suffix})
        msgs = list(prompt.messages or [])
        for i in range(len(msgs) - 1, -1, -1):
            if msgs[i].role == "user":
                msgs[i] = Message(role="user", content=msgs[i].content + suffix)
                break
        return prompt.model_copy(update={"messages": msgs})

    def render(self, prompt: Prompt, params: SamplingParams | None = None) -> tuple[Prompt, SamplingParams]:
        """(prompt, params) as this route sends them: the route's prompt and ``params``
        with the reasoning switch merged into ``extra``."""
        params = params or SamplingParams()
        return self.prompt(prompt), params.model_copy(update={"extra": _merge_extra(params.extra, self.extra())})

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary, recorded in every routing decision."""
        return {
            "name": self.name, "engine": self.engine, "model": self.model, "family": self.resolved_family,
            "reasoning": self.reasoning, "effort": self.effort,
            "strategy": getattr(self.strategy, "name", type(self.strategy).__name__),
            "budget": self.budget.limits() if self.budget else None,
        }


class CategoryRoute(BaseModel):
    """What a category maps to: its reasoning flag and the route taken with reasoning on
    and with it off (the policy may override the flag when the classifier is unsure)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True, extra="forbid")

    reasoning: bool
    on: Route
    off: Route
    source: str = Field("given", description="'calibrated' when a routing table wrote it")

    @model_validator(mode="after")
    def _check(self) -> CategoryRoute:
        if not self.on.reasoning:
            raise ValueError(f"on: route {self.on.name!r} has reasoning off")
        if self.off.reasoning:
            raise ValueError(f"off: route {self.off.name!r} has reasoning on")
        return self

    @classmethod
    def of(cls, value: Route | CategoryRoute) -> CategoryRoute:
        """A Route's own flag, with the flipped switch (same strategy/budget) as the other side."""
        if isinstance(value, CategoryRoute):
            return value
        if isinstance(value, Route):
            other = value.with_reasoning(not value.reasoning)
            on, off = (value, other) if value.reasoning else (other, value)
            return cls(reasoning=value.reasoning, on=on, off=off)
        raise TypeError(f"route: expected Route or CategoryRoute, got {type(value).__name__}")

    def pick(self, reasoning: bool) -> Route:
        return self.on if reasoning else self.off


# -- running a route ---------------------------------------------------------------------------------
class SwitchedEngine(Engine):
    """An engine view that merges a route's reasoning switch into every call's
    ``SamplingParams.extra``. Billing, capabilities and cancellation are the inner
    engine's; closing the view does not close the inner engine."""

    def __init__(self, inner: Engine, extra: dict[str, Any]):
        self.inner = inner
        self.extra = extra
        self.name = inner.name
        self.capabilities = inner.capabilities

    def _params(self, params: SamplingParams) -> SamplingParams:
        if not self.extra:
            return params
        return params.model_copy(update={"extra": _merge_extra(params.extra, self.extra)})

    def check(self, prompt: Prompt, params: SamplingParams) -> None:
        self.inner.check(prompt, self._params(params))

    async def generate(
        self, prompt: Prompt, params: SamplingParams, billing: Billing | None = None, *,
        scope: ContinuationScope | None = None,
    ) -> GenerationResult:
        return await self.inner.generate(prompt, self._params(params), billing, scope=scope)

    def continuation_scope(self) -> ContinuationScope:
        return self.inner.continuation_scope()

    def stream(self, prompt: Prompt, params: SamplingParams, billing: Billing | None = None) -> AsyncIterator[StreamDelta]:
        return self.inner.stream(prompt, self._params(params), billing)

    async def worst_case(self, prompt: Prompt, params: SamplingParams) -> Usage:
        return await self.inner.worst_case(prompt, self._params(params))

    async def count_prompt_tokens(self, prompt: Prompt) -> int:
        return await self.inner.count_prompt_tokens(prompt)

    async def _generate(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> GenerationResult:
        return await self.inner.generate(prompt, self._params(params), billing)

    async def _stream(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> AsyncIterator[StreamDelta]:
        async for d in self.inner.stream(prompt, self._params(params), billing):
            yield d


async def run_route(
    route: Route, ctx: RunContext, prompt: Prompt, *, engine: Engine | None = None
) -> StrategyResult:
    """Run ``route.strategy`` on ``route.prompt(prompt)`` in a child of ``ctx`` limited to
    ``route.budget``, on ``engine`` (default ``ctx.engine``) with the reasoning switch."""
    sub = ctx.child(route.budget, name=f"route:{route.name}")
    sub.engine = SwitchedEngine(engine or ctx.engine, route.extra())
    return await route.strategy.run_in(sub, route.prompt(prompt))


async def run_route_once(
    route: Route, question: Any, engine: Engine, *, seed: int | None = None
) -> tuple[StrategyResult, float]:
    """Run a route on its own (no router): (result, wall seconds). Used by calibration."""
    t0 = time.monotonic()
    ctx = RunContext(engine, Meter(None), seed=seed)
    res = await run_route(route, ctx, Prompt.of(question))
    return res, time.monotonic() - t0
