"""An engine for any OpenAI-compatible server (vLLM, SGLang, llama.cpp, OpenAI itself).

Built on the official ``openai.AsyncOpenAI`` client: one client per endpoint, created
once and reused for the engine's life, with the client's own retries switched off
(``max_retries=0``): retries are ours, with tenacity.

Three modules: this one holds the engine (the life of a call: attempts, billing, the
``n`` fallback, streams); :mod:`engines.openai_transport` how requests reach the servers
(endpoints, health, cool-down, timeouts, error classification, retries);
:mod:`engines.openai_wire` what goes over the wire (request bodies, prompt counts, reply
and stream-chunk parsing, usage validation).

Behaviour
---------
* **Endpoints.** ``endpoint="chat"`` (default) sends chat messages to
  ``/chat/completions``; ``endpoint="completions"`` renders the chat template locally
  with ``tokenizer`` and sends the text to ``/completions``. A ``Prompt(text=...)`` is
  raw text by definition and always goes to ``/completions``.
* **Continuing a partial assistant answer** (``Prompt.assistant_prefix``): by default
  (``prefill="continue_final_message"``) the chat endpoint gets the messages ending with
  the partial assistant message and vLLM's extras ``continue_final_message=True,
  add_generation_prompt=False``: the server applies its own chat template and continues
  the last message instead of opening a new turn. This is vLLM (and SGLang)
  specific; for other servers use ``prefill="local_template"``: the template is applied
  locally with ``tokenizer`` (``continue_final_message=True`` in
  ``apply_chat_template``, with the fallback of :mod:`engines.chat` for templates that
  alter the partial message) and the text sent to ``/completions``. Both paths are tested
  against the real vLLM server.
* **n.** Sent natively; if a server rejects ``n`` (a 400 naming it) the engine falls
  back to ``n`` parallel single requests and remembers that (``capabilities.native_n``
  turns False; ``supports_n=False`` forces it from the start). Greedy requests
  (``temperature=0``) with ``n>1`` are always sent as single requests: vLLM rejects
  ``n>1`` with greedy sampling. :meth:`worst_case` reserves a prompt per request then.
* **Logprobs** up to top-20 (chat: ``logprobs=True, top_logprobs=k``; completions:
  ``logprobs=k``) mapped to :class:`~ttc.types.TokenLogprob`.
* **Streaming** requests ``stream_options={"include_usage": True}`` plus vLLM's
  ``continuous_usage_stats`` (usage in every chunk, so a cancelled stream is billed what
  the server counted; dropped automatically if a server rejects it). Closing the
  iterator closes the HTTP response, and vLLM aborts the request on disconnect.
  Failures before the first token are retried; after text was handed out they raise
  :class:`~ttc.engine.StreamBroken` (not retried: a stream cannot be replayed); the text
  the caller received is its own, a truncated sample. The deadline of a stream is the
  caller's (``RunContext.stream`` enforces ``wall_seconds`` per chunk).
* **Every attempt is reserved.** The engine bills through an
  :class:`~ttc.engine.AttemptBilling` and covers each attempt's worst case before sending
  it: a retry after an attempt that billed usage, or ``n`` single requests after a
  server refused ``n``, first extends the caller's hold; when that does not fit the
  call raises :class:`~ttc.budget.BudgetExhausted` (the strategy stops with
  ``"budget"``) instead of spending past the budget.
* **Short replies.** A 200 reply with fewer ``choices`` than ``n`` is billed, its choices
  are kept, and the retry asks only for the missing ones. Choices a call paid for but
  could not complete are handed to the caller on the error (``EngineError.generations``).
* **Usage is validated**: ``prompt_tokens``, ``completion_tokens`` and
  ``prompt_tokens_details.cached_tokens`` must be non-negative integers and no more than
  the attempt's worst case (the prompt bound; ``n * max_tokens``); otherwise the call
  fails with an :class:`~ttc.engine.EngineError` naming the field (not retried: the
  server is not to be trusted). A count above the worst case that the reply can hold
  (completion tokens: at most one per byte of returned text plus one end token per
  choice; prompt tokens: at most twice the bound), i.e. a server that ignored
  ``max_tokens``, is charged as reported and the meter records the excess
  (``Meter.overspent``, ``StrategyResult.overspent``). A count that is not a
  non-negative integer, or more than the reply can hold (``-100000``, ``1e30``), never
  reaches the meter: the attempt is charged its worst case.
* **Usage** is otherwise the server's. Every response that carried usage is billed once,
  even if it then fails validation and is retried. A reply that came back but cannot be
  read (malformed JSON, a body cut short, choices without usage that do not parse) is
  billed the attempt's worst case: the server ran the request and what it charged is
  unknown, so the budget still holds against its true cost (and a retry then needs a
  hold of its own). A request the server never reported usage for is otherwise billed
  only when the caller cancelled it (its prompt bound and one call), or a stream broke
  after handing out text (the server did that work): its prompt bound plus the streamed
  tokens received. Failed attempts without a reply (connection errors, timeouts: the
  connection is closed, and vLLM aborts the request) or with an error status bill
  nothing. A reply from a server that reports no usage (or omits a field) is billed the
  engine's own count, which errs high, never low: the prompt bound, and per sample its
  logprob count if any, else (no tokenizer) one token per UTF-8 byte plus one end token,
  at most ``max_tokens``.
* **Prompt tokens** (:meth:`count_prompt_tokens`): with ``tokenizer``, the tokens of the
  real chat template rendered with the messages (exact). Without one, an upper bound:
  the UTF-8 bytes of every message's content and role, plus 8 per message and
  ``template_tokens`` (default 64) for the template's fixed text (special tokens, a
  default system prompt). A byte-level BPE or byte-fallback token holds at least one
  byte, so the content part is provable; the fixed part covers the common templates
  (ChatML with a default system prompt: 31 tokens for "Hi" on SmolLM2, bound 78; Llama 3
  with its date header). A server whose template is larger fails the usage check with
  an error naming ``usage.prompt_tokens``: pass ``tokenizer`` or raise ``template_tokens``.
* **Back-pressure**: one ``asyncio.Semaphore(max_concurrency)`` per engine, shared by every
  strategy that uses it, held for each HTTP attempt (not during back-off sleeps). A call
  takes its place before it builds its first attempt (prompt count, hold, body), so calls
  queued behind the cap hold nothing built and their work does not all run at once.
* **Client CPU** (what bounds throughput against a fast server; measured by
  ``benchmarks/openai_concurrency.py``, 2,000 requests at 64 in flight): one
  ``AsyncOpenAI`` per endpoint on the SDK's aiohttp transport (httpx's connection pool
  walks every connection on each request), responses read raw and parsed with
  ``json.loads``, the first attempt outside tenacity's loop, and the SDK's ``X-Stainless-*``
  telemetry headers left out (``sdk_headers=True`` keeps them); then ``http_backend="direct"``
  (the default with aiohttp): requests that are not streamed go straight to aiohttp with
  the URL and headers the SDK builds for their path, built once (see
  :class:`~engines.openai_transport.DirectPost`). ``http_backend="aiohttp"`` keeps every
  request in the SDK, ``"httpx"`` uses the SDK's httpx transport. Per request the engine
  builds few objects: the first attempt runs inline (no closure, no tenacity, no
  context-manager coroutines), a hold that already covers an attempt builds no ``Usage``,
  and a one-choice reply takes the server's token count as it is.
* **Retries** (tenacity): connection errors, timeouts, 429 (honouring
  ``Retry-After``/``retry-after-ms``), 408/409/5xx, malformed JSON, short replies and
  streams that end before any output are retried with exponential back-off and full
  jitter, at most ``max_attempts`` attempts; then an :class:`EngineError` lists every
  attempt. 400, 401, 403, 404, 422 and context-length errors fail at once with the
  server's message (:class:`ContextLengthExceeded` for the latter). A refused or reset
  connection is reported as a connection error, not a timeout.
* **Timeouts**: ``timeout`` seconds per attempt (and per streamed chunk), 600 by
  default like the openai SDK's: a loaded server can take minutes, and re-sending early
  only adds load. A timed-out attempt is aborted before it is retried: its connection is
  closed (vLLM aborts a request whose client disconnects), then the retry waits its
  back-off.
* **Credentials in a URL** (``http://user:secret@host/v1``) are taken out of the URL and
  sent as HTTP basic auth (what httpx does with them; aiohttp refuses them in the URL);
  no error text or endpoint listing ever shows them.
* **Several endpoints** (``base_url`` a list, the same model on several replicas):
  each attempt goes to the healthy endpoint with the fewest requests in flight (round
  robin on ties); an endpoint that fails with a connection error, timeout, 429 or 5xx is
  marked unhealthy for ``cooldown`` seconds and the retry goes elsewhere at once.
* **Options** in ``SamplingParams.extra``: ``chat_template_kwargs``, ``reasoning_effort``,
  ``top_k``, ``min_p``, ``repetition_penalty`` plus the keys in ``extra_body_options``;
  any other key raises ``ValueError``.
* **Tool calls**: ``Prompt.tools``/``tool_choice`` and tool messages go in the chat body;
  ``message.tool_calls`` and streamed ``delta.tool_calls`` fragments come back as
  ``Generation.tool_calls`` / the last delta's ``tool_calls`` (see :mod:`engines.openai_wire`).
  vLLM's server needs ``--enable-auto-tool-choice --tool-call-parser hermes`` (or another
  parser) to accept a named ``tool_choice``.
* ``capabilities.prefix_caching`` is True because vLLM/SGLang servers cache prefixes
  (``--enable-prefix-caching``); whether a given server does is up to the server.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any, Literal

from ttc.budget import BudgetExhausted, worst_case
from ttc.engine import AttemptBilling, Billing, Capabilities, Engine, EngineError, StreamBroken
from ttc.tool_calls import wants_tool_calls
from ttc.types import Generation, GenerationResult, Prompt, SamplingParams, StreamDelta, Usage

from .openai_transport import ContextLengthExceeded, Endpoint, Retryable, Slot, Transport, reply_cut
from .openai_wire import (
    BASE_OPTIONS,
    OpenAIWire,
    StreamState,
    UsageProblem,
    checked_usage,
    output_text,
    parse_choices,
    rejects_n,
)

__all__ = ["ContextLengthExceeded", "OpenAIEngine"]


class OpenAIEngine(Engine):
    """Engine over one or several OpenAI-compatible endpoints serving the same model.

    See the module docstring for every behaviour (continuation, ``n`` fallback, retries,
    billing, routing). ``base_url`` ends in ``/v1``. Its parts: ``transport``
    (:class:`~engines.openai_transport.Transport`) and ``wire``
    (:class:`~engines.openai_wire.OpenAIWire`).
    """

    name = "openai"

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str,
        *,
        api_key: str = "EMPTY",
        endpoint: Literal["chat", "completions"] = "chat",
        prefill: Literal["continue_final_message", "local_template"] = "continue_final_message",
        tokenizer: str | None = None,
        max_concurrency: int = 64,
        max_attempts: int = 5,
        timeout: float = 600.0,
        template_tokens: int = 64,
        backoff_base: float = 0.25,
        backoff_max: float = 8.0,
        max_retry_after: float = 60.0,
        cooldown: float = 5.0,
        supports_n: bool | None = None,
        continuous_usage_stats: bool = True,
        extra_body_options: Sequence[str] = (),
        http_backend: Literal["direct", "aiohttp", "httpx"] | None = None,
        sdk_headers: bool = False,
    ):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        http_backend = _check(urls, endpoint, prefill, tokenizer, max_concurrency, max_attempts, timeout,
                              template_tokens, http_backend)
        self.model = model
        self.endpoint = endpoint
        self.prefill = prefill
        self.max_concurrency = max_concurrency
        self.max_attempts = max_attempts
        self.timeout = float(timeout)
        self.template_tokens = template_tokens
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.cooldown = cooldown
        self.transport = Transport(
            urls, api_key, name=self.name, max_concurrency=max_concurrency, max_attempts=max_attempts,
            timeout=self.timeout, backoff_base=backoff_base, backoff_max=backoff_max,
            max_retry_after=max_retry_after, cooldown=cooldown, http_backend=http_backend, sdk_headers=sdk_headers,
        )
        tok = None
        if tokenizer is not None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(tokenizer)
        self.wire = OpenAIWire(model, endpoint=endpoint, prefill=prefill, tokenizer=tok,
                               template_tokens=template_tokens, continuous_usage_stats=continuous_usage_stats)
        self._native_n = supports_n
        self._options = BASE_OPTIONS | frozenset(extra_body_options)
        self._set_caps()

    # -- settings and counters --------------------------------------------------------------
    @property
    def http_backend(self) -> str:
        return self.transport.http_backend

    @property
    def sdk_headers(self) -> bool:
        return self.transport.sdk_headers

    @property
    def continuous_usage_stats(self) -> bool:
        """Streams ask for vLLM's usage in every chunk (off once a server refused it)."""
        return self.wire.continuous_usage_stats

    @property
    def attempts(self) -> int:
        """HTTP attempts sent."""
        return self.transport.attempts

    @property
    def in_flight(self) -> int:
        """Calls holding the concurrency cap now."""
        return self.transport.in_flight

    @property
    def max_in_flight(self) -> int:
        """The most calls that held the concurrency cap at once."""
        return self.transport.max_in_flight

    @property
    def endpoints(self) -> list[str]:
        return [e.url for e in self.transport.endpoints]

    def endpoint_stats(self) -> list[dict[str, Any]]:
        return self.transport.endpoint_stats()

    def stats(self) -> dict[str, int | str]:
        """HTTP attempts sent, calls in flight now and at most, endpoints (and healthy ones)."""
        eps = self.transport.endpoint_stats()
        return {"attempts": self.attempts, "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
                "endpoints": len(eps), "healthy_endpoints": sum(bool(e["healthy"]) for e in eps)}

    # -- capabilities --------------------------------------------------------------------
    def _set_caps(self) -> None:
        self.capabilities = Capabilities(
            logprobs=True, max_top_logprobs=20, prefill=True, native_n=self._native_n is not False,
            prefix_caching=True, streaming=True, options=self._options, tools=True,
        )

    def _use_native_n(self, params: SamplingParams) -> bool:
        return params.n == 1 or (self._native_n is not False and params.temperature > 0)

    async def worst_case(self, prompt: Prompt, params: SamplingParams) -> Usage:
        prompt_tokens = await self.count_prompt_tokens(prompt)
        return worst_case(prompt_tokens, params.n, params.max_tokens, native_n=self._use_native_n(params))

    async def count_prompt_tokens(self, prompt: Prompt) -> int:
        return self.wire.count_prompt_tokens(prompt)

    # -- generate -----------------------------------------------------------------------------------
    async def _generate(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> GenerationResult:
        if self._use_native_n(params):
            # A place under the cap first, used by the first attempt: a call waiting for the cap
            # has built nothing yet (with many calls queued, their work would otherwise all run
            # at once while the first replies wait to be read).
            slot = await self.transport.slot()
            try:
                prompt_bound = await self.count_prompt_tokens(prompt)
                worst = worst_case(prompt_bound, params.n, params.max_tokens, native_n=True)
                hold = AttemptBilling.of(billing, worst)
                try:
                    return await _Call(self, prompt, params, hold, prompt_bound, worst, slot).run()
                except EngineError as e:
                    if isinstance(e, ContextLengthExceeded) or not (
                        params.n > 1 and e.status == 400 and rejects_n(str(e))
                    ):
                        raise
                    self._native_n = False  # remember: this server takes n=1 only
                    self._set_caps()
            finally:
                slot.release()  # (nothing to do once the first attempt took the place over)
            # n requests instead of one: the hold must cover them all
            hold.cover(worst_case(prompt_bound, params.n, params.max_tokens, native_n=False))
        else:
            prompt_bound = await self.count_prompt_tokens(prompt)
            hold = AttemptBilling.of(billing, worst_case(prompt_bound, params.n, params.max_tokens, native_n=False))
        return await self._singly(prompt, params, hold, worst_case(prompt_bound, 1, params.max_tokens, native_n=True),
                                  prompt_bound)

    async def _singly(self, prompt: Prompt, params: SamplingParams, hold: AttemptBilling, one: Usage,
                      prompt_bound: int) -> GenerationResult:
        """``params.n`` single requests, each on its own share of ``hold``; on a failure the
        samples that did come are handed to the caller on the error (they are paid for)."""
        singles = params.model_copy(update={"n": 1})
        results = await asyncio.gather(
            *[_Call(self, prompt, singles, AttemptBilling(hold, one), prompt_bound, one).run() for _ in range(params.n)],
            return_exceptions=True,
        )
        gens = [g for r in results if isinstance(r, GenerationResult) for g in r.generations]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            for r in errors:
                if not isinstance(r, Exception):
                    raise r
            first = errors[0]
            if isinstance(first, (EngineError, BudgetExhausted)):
                first.generations = gens + [g for r in errors for g in getattr(r, "generations", [])]
            raise first
        usage = sum((r.usage for r in results), Usage())  # type: ignore[union-attr]
        return GenerationResult(generations=gens, usage=usage)

    # -- stream -------------------------------------------------------------------------------------
    async def _stream(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> AsyncIterator[StreamDelta]:
        call = _StreamCall(self, prompt, params, billing, await self.count_prompt_tokens(prompt))
        async with self.transport.held():
            try:
                async with aclosing(call.deltas()) as deltas:
                    async for d in deltas:
                        yield d
            finally:
                await call.close()

    async def aclose(self) -> None:
        await self.transport.aclose()


def _check(urls: list[str], endpoint: str, prefill: str, tokenizer: str | None, max_concurrency: int,
           max_attempts: int, timeout: float, template_tokens: int, http_backend: str | None
           ) -> Literal["direct", "aiohttp", "httpx"]:
    """Check the constructor's arguments (ValueError naming the argument); the HTTP backend."""
    if not urls:
        raise ValueError("base_url: give at least one endpoint URL")
    if endpoint not in ("chat", "completions"):
        raise ValueError(f"endpoint: 'chat' or 'completions', got {endpoint!r}")
    if prefill not in ("continue_final_message", "local_template"):
        raise ValueError(f"prefill: 'continue_final_message' or 'local_template', got {prefill!r}")
    if (endpoint == "completions" or prefill == "local_template") and tokenizer is None:
        raise ValueError("tokenizer: needed to apply the chat template locally "
                         f"(endpoint={endpoint!r}, prefill={prefill!r})")
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency: must be >= 1, got {max_concurrency}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts: must be >= 1, got {max_attempts}")
    if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and math.isfinite(timeout)
            and timeout > 0):
        raise ValueError(f"timeout: must be a positive number of seconds, got {timeout!r}")
    if isinstance(template_tokens, bool) or not isinstance(template_tokens, int) or template_tokens < 0:
        raise ValueError(f"template_tokens: must be an integer >= 0, got {template_tokens!r}")
    if http_backend is None:
        http_backend = "direct" if importlib.util.find_spec("aiohttp") is not None else "httpx"
    if http_backend not in ("direct", "aiohttp", "httpx"):
        raise ValueError(f"http_backend: 'direct', 'aiohttp' or 'httpx', got {http_backend!r}")
    return http_backend  # type: ignore[return-value]


_NOTHING = Usage()


class _Call:
    """One request for ``params.n`` choices, retried; a short reply's choices are kept and
    the retry asks for the rest. Each attempt covers its worst case on ``hold`` before it
    is sent, and every reply is billed once (see the module doc for what, when the reply
    is cut, unreadable, without usage or with usage that fails validation)."""

    def __init__(self, engine: OpenAIEngine, prompt: Prompt, params: SamplingParams, hold: AttemptBilling,
                 prompt_bound: int, worst: Usage, slot: Slot | None = None):
        self.engine, self.transport, self.wire = engine, engine.transport, engine.wire
        self.prompt, self.params, self.hold, self.prompt_bound = prompt, params, hold, prompt_bound
        self.worst = worst  # an attempt's worst case for all params.n choices (prompt_bound's)
        self.slot = slot  # a place under the cap the caller took for the first attempt
        self.route = self.wire.route(prompt)
        self.got: list[Generation] = []
        self.billed = _NOTHING  # (replaced, never changed in place)

    async def run(self) -> GenerationResult:
        t0 = time.monotonic()
        try:
            await self.transport.retrying(self.attempt, f"{self.route} request")
        except (EngineError, BudgetExhausted) as e:
            e.generations = list(self.got)  # paid for: the caller keeps them
            raise
        return GenerationResult(generations=self.got,
                                usage=self.billed.model_copy(update={"wall_seconds": time.monotonic() - t0}))

    def bill(self, u: Usage) -> None:
        self.hold.bill(u)
        self.billed = self.billed + u

    async def attempt(self, ep: Endpoint) -> None:
        params = self.params
        n = params.n - len(self.got)
        worst = self.worst if n == params.n else worst_case(self.prompt_bound, n, params.max_tokens, native_n=True)
        self.hold.cover(worst)  # a retry is sent only on a hold that covers it
        body = self.wire.body(self.prompt, params if n == params.n else params.model_copy(update={"n": n}),
                              stream=False)
        try:
            raw = await self.transport.post(ep, self.wire.path(self.route), body, self.slot)
        except asyncio.CancelledError:
            # Cancelled by the caller: the server got the prompt but reports nothing.
            self.bill(Usage(prompt_tokens=self.prompt_bound, calls=1))
            raise
        except Exception as e:
            if reply_cut(e):  # it answered (and ran the request); what it charged never came
                self.bill(worst)
            raise
        try:
            resp = json.loads(raw.content)
        except ValueError:
            self.bill(worst)  # an unreadable reply: the request ran, its cost is unknown
            raise
        if not isinstance(resp, dict):
            self.bill(worst)
            raise Retryable(f"malformed response: not a JSON object: {str(resp)[:120]!r}")
        self.take(resp, worst, n, raw.status_code)

    def take(self, resp: dict[str, Any], worst: Usage, n: int, status: int) -> None:
        """Bill a reply and keep its choices; raise what is wrong with it."""
        try:
            parsed = parse_choices(resp.get("choices"), self.route, text_calls=wants_tool_calls(self.prompt))[:n]
            bad = None
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            parsed, bad = [], e
        text_bytes = sum(len(output_text(p).encode()) for p in parsed)
        usage, problem = checked_usage(resp.get("usage"), worst, text_bytes, len(parsed))
        if usage is not None:
            self.bill(usage)  # the server billed it, whatever happens next
        elif bad is not None:
            self.bill(worst)
        if bad is not None:
            raise Retryable(f"malformed response: {type(bad).__name__}: {str(bad)[:160]}")
        gens = self.wire.counted(parsed, usage, self.params.max_tokens)
        if usage is None:  # a server that reports no usage: bill our count of what it did (errs high)
            self.bill(Usage(prompt_tokens=self.prompt_bound, completion_tokens=sum(g.num_tokens for g in gens),
                            calls=1, generations=len(gens)))
        self.got.extend(gens)
        if problem is not None:
            raise EngineError(f"{self.engine.name}: {problem}", status=status)
        if len(self.got) < self.params.n:
            raise Retryable(f"short reply: {len(gens)} of {n} choices")


class _StreamCall:
    """One streamed generation: attempts until the first output (retried, each reserved),
    then the stream; its usage billed once when it ends (see :meth:`close`).

    A finish chunk is held back until the stream ends, so the final delta carries the
    usage. Failures after text was handed out raise :class:`~ttc.engine.StreamBroken`."""

    def __init__(self, engine: OpenAIEngine, prompt: Prompt, params: SamplingParams, billing: Billing,
                 prompt_tokens: int):
        self.engine, self.transport, self.wire = engine, engine.transport, engine.wire
        self.prompt, self.params, self.prompt_tokens = prompt, params, prompt_tokens
        self.worst = worst_case(prompt_tokens, 1, params.max_tokens, native_n=True)
        self.hold = AttemptBilling.of(billing, self.worst)
        self.route = self.wire.route(prompt)
        self.st = StreamState(self.route, self.worst, self.wire, engine.name, text_calls=wants_tool_calls(prompt))
        self.stream: Any = None
        self.ep: Endpoint | None = None  # the endpoint of the open stream

    async def open(self, ep: Endpoint) -> tuple[Any, StreamDelta]:
        """One attempt: open the stream at ``ep`` and read it up to its first output."""
        self.hold.cover(self.worst)  # a retry is sent only on a hold that covers it
        body = self.wire.body(self.prompt, self.params, stream=True)
        self.transport.start(ep)
        self.ep = ep
        self.st.reset()
        s = None
        try:
            async with asyncio.timeout(self.transport.timeout):
                s = self.stream = await self.transport.open_stream(ep, self.wire.path(self.route), body)
                it = s.__aiter__()
                while True:  # read until the first piece of output
                    try:
                        chunk = await it.__anext__()
                    except StopAsyncIteration:
                        raise Retryable("stream ended before any output (truncated)") from None
                    d = self.st.delta(chunk)
                    if d is not None:
                        return it, d
        except BaseException:
            if self.st.usage is not None:  # the server reported usage before failing
                self.hold.bill(self.st.usage)
                self.st.usage = None
            if s is not None:
                await s.close()
            self.stream = self.ep = None
            self.transport.done(ep)
            raise

    async def _open_with_fallback(self) -> tuple[Any, StreamDelta]:
        what = f"{self.route} stream"
        try:
            return await self.transport.retrying(self.open, what)
        except EngineError as e:
            if e.status == 400 and "continuous_usage_stats" in str(e) and self.wire.continuous_usage_stats:
                self.wire.continuous_usage_stats = False  # this server does not know vLLM's extension
                return await self.transport.retrying(self.open, what)
            raise

    async def _next(self, it: Any) -> StreamDelta | None:
        """The next piece of the open stream (None at its end); a failure breaks the stream."""
        st = self.st
        try:
            while True:
                try:
                    async with asyncio.timeout(self.transport.timeout):
                        chunk = await it.__anext__()
                except StopAsyncIteration:
                    return None
                d = st.delta(chunk)
                if d is not None:
                    return d
        except UsageProblem as e:
            raise StreamBroken(f"{e} (stream closed after {st.received} token(s))") from e
        except Exception as e:
            assert self.ep is not None
            err = self.transport.classify(e, self.ep)
            raise StreamBroken(
                f"{self.engine.name}: stream broke after {st.received} token(s): {err}", retryable=True,
                status=getattr(err, "status", None),
            ) from e

    async def deltas(self) -> AsyncGenerator[StreamDelta, None]:
        it, first = await self._open_with_fallback()
        d: StreamDelta | None = first
        pending: StreamDelta | None = None
        while d is not None:
            if pending is not None:  # text after a finish (n>1 is not streamed): pass it on
                yield pending
                pending = None
            if d.finish_reason is not None:
                pending = d
            else:
                yield d
            d = await self._next(it)
        if not self.st.finished:
            raise StreamBroken(f"{self.engine.name}: stream truncated after {self.st.received} token(s) "
                               "(no finish_reason)", retryable=True)
        final = pending or StreamDelta(finish_reason="stop")
        final.usage = self.st.final_usage(self.prompt_tokens, self.params.max_tokens)
        final.tool_calls = self.st.tool_calls()
        yield final

    async def close(self) -> None:
        """Close the HTTP response (the server aborts the request) and bill the stream."""
        if self.stream is not None:
            try:
                await self.stream.close()
            except Exception as e:  # noqa: BLE001 - the connection is gone either way
                self.st.errors.append(f"close: {e!r}")
        if self.ep is not None:
            self.transport.done(self.ep)
            self.hold.bill(self.st.final_usage(self.prompt_tokens, self.params.max_tokens))
