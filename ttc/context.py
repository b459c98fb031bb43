"""The run context: the only door from a strategy to an engine.

Every engine call a strategy (or a verifier, or a probe) makes goes through
:meth:`RunContext.generate` or :meth:`RunContext.stream`, which reserve the call's
worst case on the meter before sending it, bill real usage as it comes back, and
release the rest. No strategy reaches around it.

Deadlines (``Budget(wall_seconds=...)``) hold on every await on the engine: a call
(counting its prompt, every attempt and retry) runs under the time left, and a stream
under the time left at each chunk; when it runs out the engine aborts the request and
:class:`~ttc.budget.BudgetExhausted` (``"wall_seconds"``) is raised. Paid generations a
failed call did receive (``EngineError.generations``) are kept in :attr:`RunContext.salvaged`
for the strategy's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from .budget import Budget, BudgetExhausted, Meter, worst_case
from .engine import Capabilities, ContinuationScope, Engine, EngineError
from .types import Generation, Prompt, Sample, SamplingParams, StreamDelta, TraceEvent, Usage

T = TypeVar("T")


class RunContext:
    """Engine + meter + trace + seeded RNG for one strategy run.

    ``engines``: named engines a multi-engine strategy (the router) may send a part of
    the run to, looked up with :meth:`engine_for`; they are per run, so one strategy
    instance serves concurrent runs with different engines. Strategies read the engine's
    capabilities and count tokens through :attr:`capabilities`, :meth:`count_prompt_tokens`
    and :meth:`worst_case`; only the context itself calls the engine.
    """

    def __init__(
        self,
        engine: Engine,
        meter: Meter | None = None,
        *,
        seed: int | None = None,
        trace: list[TraceEvent] | None = None,
        t0: float | None = None,
        engines: Mapping[str, Engine] | None = None,
    ):
        self.engine = engine
        self.engines: dict[str, Engine] = dict(engines or {})
        self.meter = meter or Meter()
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.trace: list[TraceEvent] = trace if trace is not None else []
        self.t0 = t0 if t0 is not None else time.monotonic()
        self.budget_detail: str | None = None
        #: What made the run stop with ``"engine_error"``, if it did.
        self.error: str | None = None
        #: Paid-for samples a failed call received (``kind="generate"`` calls only), and
        #: partial traces a strategy gave up; the strategy's result keeps them.
        self.salvaged: list[Generation | Sample] = []
        #: The open continuation scope (:meth:`continuations`), if any.
        self.scope: ContinuationScope | None = None

    # -- the engine, read-only ------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        """What the run's engine can do (logprobs, native ``n``, prefill, ...)."""
        return self.engine.capabilities

    @property
    def engine_name(self) -> str:
        return self.engine.name

    def engine_for(self, name: str | None) -> Engine:
        """The engine named ``name`` among this run's ``engines``; ``None``: the run's own."""
        if name is None:
            return self.engine
        if name not in self.engines:
            raise KeyError(f"engine {name!r}: not among this run's engines {sorted(self.engines)}")
        return self.engines[name]

    async def count_prompt_tokens(self, prompt: Prompt) -> int:
        """Prompt tokens of ``prompt`` on the run's engine (after templating)."""
        return await self.engine.count_prompt_tokens(prompt)

    async def worst_case(self, prompt: Prompt, params: SamplingParams) -> Usage:
        """The most one call with ``params`` can bill: what :meth:`generate` holds for it."""
        return await self.engine.worst_case(prompt, params)

    def call_worst_case(self, prompt_tokens: int, n: int, max_tokens: int) -> Usage:
        """:func:`ttc.budget.worst_case` on this engine, for a prompt already counted."""
        return worst_case(prompt_tokens, n, max_tokens, native_n=self.engine.capabilities.native_n)

    # -- trace ---------------------------------------------------------------------
    def event(self, kind: str, **data: Any) -> None:
        self.trace.append(TraceEvent(t=round(time.monotonic() - self.t0, 6), kind=kind, data=data))

    # -- engine calls ----------------------------------------------------------------
    async def _with_deadline(self, aw: Awaitable[T]) -> T:
        left = self.meter.deadline_left()
        if left is None:
            return await aw
        if left <= 0:
            if asyncio.iscoroutine(aw):
                aw.close()
            raise BudgetExhausted("wall_seconds", 0, 0)
        try:
            return await asyncio.wait_for(aw, left)
        except TimeoutError:
            raise BudgetExhausted("wall_seconds", left, 0) from None

    async def generate(
        self, prompt: Prompt, params: SamplingParams, *, kind: str = "generate", continuable: bool = False
    ) -> list[Generation]:
        """``params.n`` generations, metered. Raises BudgetExhausted before sending
        if the worst case does not fit; cancellation aborts the request in the engine
        and charges what the engine billed for it. ``continuable``: the caller may
        continue these generations next step, so the call goes through the open
        continuation scope (if any)."""
        self.engine.check(prompt, params)
        scope = self.scope if continuable else None

        async def call() -> list[Generation]:
            worst = await self.engine.worst_case(prompt, params)
            with self.meter.reserve(worst, kind) as res:
                try:
                    result = await self.engine.generate(prompt, params, res, scope=scope)
                except (EngineError, BudgetExhausted) as e:
                    if kind == "generate":
                        self.salvaged.extend(getattr(e, "generations", None) or [])
                    raise
            return result.generations

        return await self._with_deadline(call())

    @contextlib.asynccontextmanager
    async def continuations(self) -> AsyncIterator[ContinuationScope]:
        """Open the engine's continuation scope for one search: continuable calls go
        through it, and leaving the block releases what the engine kept."""
        if self.scope is not None:
            raise RuntimeError("continuations: a scope is already open on this context")
        scope = self.engine.continuation_scope()
        self.scope = scope
        try:
            yield scope
        finally:
            self.scope = None
            await scope.aclose()

    @contextlib.asynccontextmanager
    async def stream(
        self, prompt: Prompt, params: SamplingParams, *, kind: str = "generate"
    ) -> AsyncIterator[AsyncIterator[StreamDelta]]:
        """``async with ctx.stream(p, sp) as deltas: async for d in deltas: ...``

        Leaving the block early stops the generation in the engine; what it produced
        so far is charged. Each chunk is awaited under the time left of the deadline:
        when it passes, the engine stops the generation and the iterator raises
        :class:`~ttc.budget.BudgetExhausted` (the text received so far is the caller's).
        """
        self.engine.check(prompt, params)
        worst = await self._with_deadline(self.engine.worst_case(prompt, params.model_copy(update={"n": 1})))
        res = self.meter.reserve(worst, kind)
        agen = self.engine.stream(prompt, params, res)
        try:
            yield _Deadlined(agen, self.meter)
        finally:
            try:
                await agen.aclose()  # type: ignore[attr-defined]
            finally:
                res.close()

    def can_afford(self, prompt_tokens: int, params: SamplingParams) -> bool:
        return self.meter.can_afford(self.call_worst_case(prompt_tokens, params.n, params.max_tokens))

    # -- composition -----------------------------------------------------------------
    def child(self, budget: Budget | None = None, *, name: str = "child", seed: int | None = None) -> RunContext:
        """A context for a nested strategy: its own sub-budget, same engine, same trace clock."""
        child_seed = seed if seed is not None else int(self.rng.integers(0, 2**31 - 1))
        return RunContext(self.engine, self.meter.child(budget, name=name), seed=child_seed, t0=self.t0,
                          engines=self.engines)


class _Deadlined:
    """An engine stream whose every chunk is awaited under the meter's time left."""

    def __init__(self, agen: AsyncIterator[StreamDelta], meter: Meter):
        self.agen = agen
        self.meter = meter

    def __aiter__(self) -> _Deadlined:
        return self

    async def __anext__(self) -> StreamDelta:
        left = self.meter.deadline_left()
        if left is None:
            return await self.agen.__anext__()
        if left <= 0:
            raise BudgetExhausted("wall_seconds", 0, 0)
        try:
            async with asyncio.timeout(left) as cm:
                return await self.agen.__anext__()
        except TimeoutError:
            if cm.expired():
                raise BudgetExhausted("wall_seconds", left, 0) from None
            raise

    async def aclose(self) -> None:
        await self.agen.aclose()  # type: ignore[attr-defined]


async def gather_settled(
    factories: list[Callable[[], Awaitable[T]]],
    *,
    on_result: Callable[[int, T], bool | Awaitable[bool]] | None = None,
) -> tuple[list[tuple[int, T]], list[tuple[int, BaseException]]]:
    """Run awaitables concurrently; collect every result that arrives.

    ``on_result(i, value)`` is called as each one finishes (a coroutine function is
    awaited: stopping rules grade off the event loop); if it returns True the
    rest are cancelled (their engines abort the requests). Returns (results,
    errors) by index; cancelled ones appear in neither. Nothing that finished is lost.
    """
    tasks = {asyncio.ensure_future(f()): i for i, f in enumerate(factories)}
    results: list[tuple[int, T]] = []
    errors: list[tuple[int, BaseException]] = []
    pending = set(tasks)
    stop = False
    try:
        while pending and not stop:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in sorted(done, key=lambda t: tasks[t]):
                if t.cancelled():
                    continue
                exc = t.exception()
                if exc is not None:
                    errors.append((tasks[t], exc))
                    continue
                results.append((tasks[t], t.result()))
                verdict = on_result(tasks[t], t.result()) if on_result is not None else False
                if inspect.isawaitable(verdict):
                    verdict = await verdict
                if verdict:
                    stop = True
    finally:
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for t in sorted(pending, key=lambda t: tasks[t]):  # finished before the cancel landed
            if not t.cancelled() and t.exception() is None:
                results.append((tasks[t], t.result()))
    return results, errors
