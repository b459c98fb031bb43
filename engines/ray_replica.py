"""One replica of a :class:`~engines.ray_engine.RayEngine`: a Ray async actor owning one
engine built from a spec (:func:`engines.specs.build_engine`).

The actor never sees a budget. Each call runs its engine with a collecting billing sink
and returns what the engine billed with the result, also when the engine fails (an
:class:`Outcome` carrying the error) or when the call is aborted: the driver charges
exactly that on its meter. Aborts are messages: :meth:`Replica.abort` cancels the
call's asyncio task in the actor, the engine aborts the request and bills its partial
work, and the call returns (or the stream yields, as its last item) the bill. So the
driver learns the cost of an aborted request instead of guessing it; ``ray.cancel`` is
only its fall-back when the replica does not answer.

This module does not import Ray: :mod:`engines.ray_engine` wraps :class:`Replica` with
``ray.remote`` when it creates the actors.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ttc.engine import Capabilities, EngineError, StreamBroken
from ttc.types import Generation, Prompt, SamplingParams, StreamDelta, Usage

from .specs import build_engine


class _Collector:
    """A billing sink that adds up what the engine billed."""

    def __init__(self) -> None:
        self.usage = Usage()

    def bill(self, usage: Usage) -> None:
        self.usage = self.usage + usage


@dataclass
class Outcome:
    """What one call on a replica came to: generations, the engine's bill, and the error
    it failed with (``None``: it succeeded; ``"aborted"``: the driver aborted it)."""

    usage: Usage = field(default_factory=Usage)
    generations: list[Generation] = field(default_factory=list)
    error: str | None = None
    retryable: bool = False
    status: int | None = None
    broken: bool = False  # a stream that broke after handing out text

    @classmethod
    def failed(cls, e: EngineError, usage: Usage) -> Outcome:
        return cls(usage=usage, generations=list(e.generations), error=str(e) or type(e).__name__,
                   retryable=e.retryable, status=e.status, broken=isinstance(e, StreamBroken))


class Replica:
    """The actor: one engine, its calls by request id (for :meth:`abort`), and counters
    (``requests``, ``in_flight``, ``aborted``, ``failed``). ``max_concurrency``: at most that
    many calls run in the engine at once, the others wait their turn (a replica's batch
    slots, for engines without a cap of their own); ``None``: no cap."""

    def __init__(self, spec: Mapping[str, Any], index: int = 0, max_concurrency: int | None = None):
        self.index = index
        self.engine = build_engine(spec)
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self.requests = 0
        self.in_flight = 0
        self.aborted = 0
        self.failed = 0
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    # -- what the driver reads once ---------------------------------------------------
    def capabilities(self) -> Capabilities:
        return self.engine.capabilities

    def name(self) -> str:
        return self.engine.name

    async def count_prompt_tokens(self, prompt: Prompt) -> int:
        return await self.engine.count_prompt_tokens(prompt)

    async def worst_case(self, prompt: Prompt, params: SamplingParams) -> Usage:
        return await self.engine.worst_case(prompt, params)

    def stats(self) -> dict[str, Any]:
        """The replica's counters and its engine's (under ``engine``)."""
        return {"index": self.index, "requests": self.requests, "in_flight": self.in_flight,
                "aborted": self.aborted, "failed": self.failed, "engine": self.engine.stats()}

    def prompts(self) -> list[Prompt]:
        """The prompts the engine was sent, if it records them (the scripted engine does)."""
        return list(getattr(self.engine, "prompts", []))

    # -- calls ---------------------------------------------------------------------------
    def _start(self, rid: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks[rid] = task
        self.requests += 1
        self.in_flight += 1

    def _end(self, rid: str) -> None:
        self._tasks.pop(rid, None)
        self.in_flight -= 1

    async def generate(self, rid: str, prompt: Prompt, params: SamplingParams) -> Outcome:
        """``params.n`` generations and their bill; never raises an engine's failure."""
        self._start(rid)
        bill = _Collector()
        try:
            async with self._slots or contextlib.nullcontext():
                result = await self.engine.generate(prompt, params, bill)
            return Outcome(usage=bill.usage, generations=result.generations)
        except asyncio.CancelledError:
            self.aborted += 1
            return Outcome(usage=bill.usage, error="aborted")
        except EngineError as e:
            self.failed += 1
            return Outcome.failed(e, bill.usage)
        finally:
            self._end(rid)

    async def stream(self, rid: str, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamDelta | Outcome]:
        """The engine's deltas, then an :class:`Outcome` with the stream's bill (and its
        error, or ``"aborted"``) as the last item."""
        self._start(rid)
        bill = _Collector()
        end = Outcome()
        deltas = self.engine.stream(prompt, params, bill)
        try:
            async with self._slots or contextlib.nullcontext():
                try:
                    async for d in deltas:
                        yield d
                finally:
                    await deltas.aclose()  # type: ignore[attr-defined]
        except asyncio.CancelledError:
            self.aborted += 1
            end.error = "aborted"
        except EngineError as e:
            self.failed += 1
            end = Outcome.failed(e, Usage())
        finally:
            self._end(rid)
        end.usage = bill.usage
        yield end

    def abort(self, rid: str) -> bool:
        """Cancel the call ``rid`` (its engine aborts the request); False if it is not running."""
        task = self._tasks.get(rid)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def aclose(self) -> None:
        await self.engine.aclose()
