"""The engine protocol: the one async interface every strategy talks to.

An engine turns a :class:`~ttc.types.Prompt` and :class:`~ttc.types.SamplingParams`
into generations. It never sees budgets: it *bills* every usage it incurs to the
``billing`` sink it is handed (a :class:`~ttc.budget.Reservation`), including the
partial work of a cancelled request and the billed tokens of a failed attempt, and
the caller's meter charges exactly that. Strategies do not call engines directly;
they go through :class:`ttc.context.RunContext`, which reserves the worst case first.

Implementations: ``ttc.engines.VLLMEngine`` (in-process vLLM, GPU or CPU build),
``ttc.engines.OpenAIEngine`` (any OpenAI-compatible server) and
``ttc.engines.ScriptedEngine`` (deterministic, for unit tests of strategy logic).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from .budget import worst_case
from .types import Generation, GenerationResult, Prompt, SamplingParams, StreamDelta, Usage


class Billing(Protocol):
    """Where an engine bills what a call cost.

    The meter's sink (:class:`~ttc.budget.Reservation`) also has ``extend(extra)``,
    which holds more before an attempt the hold does not cover yet and raises
    :class:`~ttc.budget.BudgetExhausted` when it does not fit, and ``held``, what it
    holds. Both are optional: engines reach them through :class:`AttemptBilling`,
    which treats a sink without them (:class:`NullBilling`, a collector) as holding
    whatever is asked.
    """

    def bill(self, usage: Usage) -> None: ...


class NullBilling:
    """Billing sink that drops usage (for direct engine calls outside a meter)."""

    def bill(self, usage: Usage) -> None:
        pass


#: The usage fields a hold covers.
_HELD = ("prompt_tokens", "completion_tokens", "calls", "generations")


def _excess(a: Usage, b: Usage) -> Usage:
    """Field by field, how much ``a`` exceeds ``b`` (zero where it does not)."""
    return Usage(**{k: max(0, getattr(a, k) - getattr(b, k)) for k in _HELD})


class AttemptBilling:
    """One engine call's share of a hold, across all of its attempts.

    An engine wraps the sink it was handed (``AttemptBilling.of(billing, worst)``),
    bills every attempt through it, and calls :meth:`cover` with an attempt's worst
    case before sending that attempt. ``cover`` extends the hold by what earlier
    attempts used up, so every attempt, retries included, is sent on a hold that covers
    its worst case; when the extension does not fit, ``cover`` raises
    :class:`~ttc.budget.BudgetExhausted` and the attempt is not sent. Shares nest: a
    call split into ``n`` single requests gives each its own ``AttemptBilling`` over
    the call's (after covering all ``n``).
    """

    def __init__(self, billing: Billing, held: Usage):
        self.billing = billing
        self.held = held
        self.billed = Usage()

    @classmethod
    def of(cls, billing: Billing, worst: Usage) -> AttemptBilling:
        """The share of a call whose caller reserved for it (what ``billing`` holds and
        has not been billed yet, if it says; else ``worst``), covering ``worst``."""
        held, billed = getattr(billing, "held", None), getattr(billing, "billed", None)
        if isinstance(held, Usage) and isinstance(billed, Usage):
            held = _excess(held, billed)
        share = cls(billing, held if isinstance(held, Usage) else worst)
        share.cover(worst)
        return share

    def bill(self, usage: Usage) -> None:
        self.billed = self.billed + usage
        self.billing.bill(usage)

    def extend(self, extra: Usage) -> None:
        ext = getattr(self.billing, "extend", None)
        if ext is not None:
            ext(extra)
        self.held = self.held + extra

    def cover(self, worst: Usage) -> None:
        """Make the hold cover what was billed so far plus ``worst`` (the next attempt)."""
        b, h = self.billed, self.held
        if (b.prompt_tokens + worst.prompt_tokens <= h.prompt_tokens  # covered already (the usual case):
                and b.completion_tokens + worst.completion_tokens <= h.completion_tokens  # no Usage built
                and b.calls + worst.calls <= h.calls and b.generations + worst.generations <= h.generations):
            return
        extra = _excess(self.billed + worst, self.held)
        if extra != Usage():
            self.extend(extra)


class Capabilities(BaseModel):
    """What an engine can do; strategies check it instead of guessing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    logprobs: bool = True
    max_top_logprobs: int = 20
    prefill: bool = True  # continues a partial assistant message
    native_n: bool = True  # one call returns n samples sharing the prompt
    prefix_caching: bool = False
    streaming: bool = True
    options: frozenset[str] = frozenset()  # accepted keys of SamplingParams.extra
    tools: bool = False  # takes Prompt.tools / tool_choice and reports Generation.tool_calls


class EngineError(RuntimeError):
    """An engine call failed for good (after retries, or not retryable).

    ``usage`` is what the server billed for the failed attempts, already charged.
    ``generations`` are complete generations the failed call did receive and pay for
    (e.g. the choices of a reply that brought fewer than ``n``): the run context keeps
    them as samples, so nothing paid for is lost.
    """

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None, usage: Usage | None = None,
                 generations: list[Generation] | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.usage = usage or Usage()
        self.generations: list[Generation] = list(generations or [])


class StreamBroken(EngineError):
    """A stream broke after it handed out text (cut connection, truncated stream, a
    usage report that fails validation). It is not retried (a stream cannot be
    replayed): the text the caller received is its own, a truncated sample whose
    tokens are billed. ``retryable`` says whether a fresh request may succeed."""


class ContinuationScope:
    """Where an engine may keep the state of generations the caller will continue.

    Step-wise search extends each trajectory by one step per call and sends the grown
    prefix back as the next prompt. With prefix caching an engine re-reads that prefix
    from its cache in whole KV blocks, recomputing the last partial block of every
    continuation. A scope lets an engine that can (``VLLMEngine``: vLLM's resumable
    streaming-input requests) keep each finished step's request alive, KV cache and all,
    so a call whose prompt is exactly that request's tokens resumes it instead: only the
    last sampled token is computed again.

    The caller opens a scope for one search (``RunContext.continuations()``), sends the
    calls it may continue through it (``ctx.generate(..., continuable=True)``), and
    calls :meth:`sweep` once per step: what was kept at the previous sweep and not
    continued since is released (resampling dropped it). A caller that knows a step's
    calls before making them says so with :meth:`release_unneeded`, which releases that
    earlier. Leaving the scope releases the rest. This base scope keeps nothing: every
    call is a plain ``engine.generate``.
    """

    def __init__(self, engine: Engine):
        self.engine = engine

    async def generate(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> GenerationResult:
        return await self.engine._generate(prompt, params, billing)

    async def sweep(self) -> None:
        """Release what the last step did not continue."""

    async def release_unneeded(self, calls: Sequence[tuple[Prompt, SamplingParams]]) -> None:
        """Release now what the coming step's ``calls`` will not continue.

        Each call continues at most ``params.n`` kept generations whose tokens are
        exactly its prompt's; everything else kept (the particles resampling dropped,
        finished ones) is released before the step starts, so the step's new requests
        find its slots and memory free. Optional: :meth:`sweep` after the step releases
        the same things later."""

    async def aclose(self) -> None:
        """Release everything kept (idempotent)."""

    async def __aenter__(self) -> ContinuationScope:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Engine(abc.ABC):
    """Async engine protocol.

    Subclasses implement :meth:`_generate` and :meth:`_stream`; the public methods
    validate parameters against :attr:`capabilities` first, so every engine rejects
    the same bad input with the same error.
    """

    name: str = "engine"
    capabilities: Capabilities = Capabilities()

    # -- validation ----------------------------------------------------------------
    def check(self, prompt: Prompt, params: SamplingParams) -> None:
        unknown = set(params.extra) - set(self.capabilities.options)
        if unknown:
            raise ValueError(
                f"params.extra: unknown engine option(s) {sorted(unknown)} for {self.name}; "
                f"known: {sorted(self.capabilities.options)}"
            )
        if params.logprobs is not None:
            if not self.capabilities.logprobs:
                raise ValueError(f"params.logprobs: {self.name} does not return logprobs")
            if params.logprobs > self.capabilities.max_top_logprobs:
                raise ValueError(
                    f"params.logprobs: {params.logprobs} > {self.capabilities.max_top_logprobs} "
                    f"(the most top-k alternatives {self.name} returns)"
                )
        if prompt.tools and not self.capabilities.tools:
            raise ValueError(f"prompt.tools: {self.name} does not take tools")
        if prompt.assistant_prefix and not self.capabilities.prefill:
            raise ValueError(f"prompt.assistant_prefix: {self.name} cannot continue a partial answer")

    # -- public API ------------------------------------------------------------------
    async def generate(
        self,
        prompt: Prompt,
        params: SamplingParams,
        billing: Billing | None = None,
        *,
        scope: ContinuationScope | None = None,
    ) -> GenerationResult:
        """``params.n`` complete generations. Cancelling the awaiting task aborts them.

        With a ``scope`` from :meth:`continuation_scope`, the call goes through it (the
        engine may keep its state for a continuation, see :class:`ContinuationScope`).
        """
        self.check(prompt, params)
        if scope is not None:
            if scope.engine is not self:
                raise ValueError(f"scope: belongs to {scope.engine!r}, not to {self!r}")
            return await scope.generate(prompt, params, billing or NullBilling())
        return await self._generate(prompt, params, billing or NullBilling())

    def continuation_scope(self) -> ContinuationScope:
        """A scope for the calls of one step-wise search (see :class:`ContinuationScope`);
        this base one keeps nothing."""
        return ContinuationScope(self)

    def stream(
        self, prompt: Prompt, params: SamplingParams, billing: Billing | None = None
    ) -> AsyncIterator[StreamDelta]:
        """One generation as it is produced (``params.n`` must be 1).

        Closing the iterator (``aclose()``, leaving ``async for`` via ``break`` in an
        ``aclosing`` block, or cancelling the task) stops the generation in the engine.
        """
        self.check(prompt, params)
        if params.n != 1:
            raise ValueError(f"params.n: streaming takes n=1, got {params.n}")
        if not self.capabilities.streaming:
            raise ValueError(f"{self.name} does not stream")
        return self._stream(prompt, params, billing or NullBilling())

    async def worst_case(self, prompt: Prompt, params: SamplingParams) -> Usage:
        """The most one call can bill: what a meter reserves before sending it."""
        prompt_tokens = await self.count_prompt_tokens(prompt)
        return worst_case(prompt_tokens, params.n, params.max_tokens, native_n=self.capabilities.native_n)

    @abc.abstractmethod
    async def count_prompt_tokens(self, prompt: Prompt) -> int:
        """Prompt tokens of ``prompt`` after templating (an upper bound if not exact)."""

    @abc.abstractmethod
    async def _generate(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> GenerationResult: ...

    @abc.abstractmethod
    def _stream(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> AsyncIterator[StreamDelta]: ...

    def stats(self) -> dict[str, int | str]:
        """Counters over this engine's life, by name (requests, tokens, retries, ...: each
        engine documents its own). Benchmarks read them without knowing the engine; this
        base counts nothing and returns ``{}``."""
        return {}

    async def aclose(self) -> None:
        """Release the engine's resources."""

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
