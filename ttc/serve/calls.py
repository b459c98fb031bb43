"""One request's run: the strategy on the request's meter, and what its result answers.

A :class:`Call` is a checked request: the strategy (a configured one, an ad-hoc spec, or
:class:`~ttc.serve.catalog.Passthrough`), the prompt, and the meter it runs on (a child of
the API key's long-lived meter when there is a key budget, limited by the request's budget).
:func:`run` runs the strategy exactly as the library does (``strategy.run_in`` on a fresh
:class:`~ttc.context.RunContext`); :func:`run_live` runs a single-trace call as one engine
stream, handing each delta out as it arrives, and makes the same
:class:`~ttc.types.StrategyResult` of it. A result without a choice is a refusal:
502 when the engine failed, 429 when the budget ran out; either way the error carries the
``usage`` that was metered (paid work is never reported as zero).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ttc.budget import BudgetExhausted, Meter
from ttc.context import RunContext
from ttc.engine import Engine, EngineError
from ttc.strategy import Strategy
from ttc.types import Prompt, Sample, SamplingParams, StrategyResult

from .errors import ApiError
from .limits import KeyBudgets, key_refusal
from .responses import ranked, ttc_json, usage_json


@dataclass
class Call:
    endpoint: str  # "chat" or "completions"
    model: str  # the request's model field (echoed in the response)
    label: str  # the metrics label: a configured model id, "passthrough" or "adhoc"
    strategy: Strategy
    passthrough: bool
    prompt: Prompt
    meter: Meter
    seed: int | None
    n: int
    return_samples: bool = False
    progress: bool = False
    include_usage: bool = False
    stream: bool = False
    live: SamplingParams | None = None  # set: stream this one engine call token by token
    key: tuple[KeyBudgets, str, float] | None = None  # key budgets, key digest, window reset time

    def context(self, engine: Engine) -> RunContext:
        return RunContext(engine, self.meter, seed=self.seed)

    def ttc(self, result: StrategyResult) -> dict[str, Any]:
        return ttc_json(self.label, result, return_samples=self.return_samples,
                        description=None if self.passthrough else _describe(self.strategy))

    def choices(self, result: StrategyResult) -> list[tuple[Sample, float | None]]:
        return ranked(result, self.n, passthrough=self.passthrough)

    def refusal(self, result: StrategyResult) -> ApiError:
        """Why a result without a choice is no answer (with the usage it cost)."""
        extra = {"usage": usage_json(result.usage), "ttc": self.ttc(result)}
        if result.stop_reason == "engine_error":
            return ApiError(502, f"engine error: {result.error}", code="engine_error", extra=extra)
        if result.stop_reason != "budget":
            return ApiError(500, f"the strategy drew no sample (stop reason {result.stop_reason!r})",
                            code="no_sample", extra=extra)
        limit = result.budget_detail or "budget"
        if self.key is not None:
            keys, digest, resets = self.key
            meter, _ = keys.meter(digest)
            if limit in meter.budget.limits() and meter.remaining().get(limit, 1) <= 0 or limit == "key":
                err = key_refusal(BudgetExhausted(limit, 1, 0), resets, keys.clock())
                err.extra = extra
                return err
        return ApiError(429, f"request budget exhausted: {limit} ran out before the strategy drew a sample "
                             f"(stop reason {result.stop_reason!r})", param=f"ttc.budget.{limit}",
                        code="budget_exhausted", extra=extra)


def _describe(s: Strategy) -> dict[str, Any] | None:
    try:
        return s.describe()
    except Exception:  # noqa: BLE001 - a strategy configured in Python may not describe
        return None


async def run(call: Call, engine: Engine) -> StrategyResult:
    if call.passthrough:
        return await run_once(call, engine)
    return await call.strategy.run_in(call.context(engine), call.prompt)


def _result(call: Call, samples: list[Sample], stop: str, detail: str | None, error: str | None) -> StrategyResult:
    chosen = samples[0] if samples else None
    return StrategyResult(strategy=call.strategy.name, answer=chosen.answer if chosen else None, chosen=chosen,
                          samples=samples, stop_reason=stop, budget_detail=detail, error=error,
                          usage=call.meter.usage(), overspent=dict(call.meter.overspent),
                          usage_by_kind=dict(call.meter.by_kind))


async def run_once(call: Call, engine: Engine) -> StrategyResult:
    """Passthrough: one engine call through the run context (metered like any strategy's call),
    without the strategy machinery around it (no trace, no decision on a worker thread)."""
    ctx = call.context(engine)
    params = call.strategy.params  # type: ignore[attr-defined]
    stop, detail, error = "done", None, None
    gens = []
    try:
        gens = await ctx.generate(call.prompt, params)
    except BudgetExhausted as e:
        stop, detail = "budget", e.limit
    except EngineError as e:
        stop, error = "engine_error", str(e)
        gens = [g for g in ctx.salvaged if not isinstance(g, Sample)]
    samples = []
    for i, g in enumerate(gens):
        s = Sample.from_generation(i, g)
        s.answer = call.strategy.extractor(s.text)
        samples.append(s)
    return _result(call, samples, stop, detail, error)


async def run_live(call: Call, engine: Engine, emit: Callable[[str], Awaitable[None]]) -> StrategyResult:
    """One engine stream; ``emit(text)`` for each delta as generated."""
    assert call.live is not None
    ctx = call.context(engine)
    parts: list[str] = []
    calls = None
    tokens = 0
    finish: str = "stop"
    stop, detail, error = "done", None, None
    try:
        async with ctx.stream(call.prompt, call.live) as deltas:
            async for d in deltas:
                if d.text:
                    parts.append(d.text)
                    await emit(d.text)
                tokens += d.num_tokens
                calls = d.tool_calls or calls
                if d.finish_reason:
                    finish = d.finish_reason
    except BudgetExhausted as e:
        stop, detail, finish = "budget", e.limit, "length"
    except EngineError as e:
        stop, error, finish = "engine_error", str(e), "error"
    text = "".join(parts)
    samples = []
    if parts or calls or stop == "done":
        samples = [Sample(index=0, text=text, num_tokens=tokens, finish_reason=finish,  # type: ignore[arg-type]
                          answer=call.strategy.extractor(text), tool_calls=calls)]
    return _result(call, samples, stop, detail, error)
