"""An engine for any OpenAI-compatible server (vLLM, SGLang, llama.cpp, OpenAI itself).

Built on the official ``openai.AsyncOpenAI`` client: one client per endpoint, created
once and reused for the engine's life, with the client's own retries switched off
(``max_retries=0``): retries are ours, with tenacity.

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
  ``apply_chat_template``) and the text sent to ``/completions``. Both paths are tested
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
  strategy that uses it, held for each HTTP attempt (not during back-off sleeps).
* **Client CPU** (what bounds throughput against a fast server; measured by
  ``benchmarks/openai_concurrency.py``, 2,000 requests at 64 in flight): one
  ``AsyncOpenAI`` per endpoint on the SDK's aiohttp transport (``http_backend``; httpx's
  connection pool walks every connection on each request), responses read raw and parsed
  with ``json.loads``, the first attempt outside tenacity's loop, and the SDK's
  ``X-Stainless-*`` telemetry headers left out (``sdk_headers=True`` keeps them): 1.45 ms
  of client CPU per request down to about 0.7 ms.
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
* ``capabilities.prefix_caching`` is True because vLLM/SGLang servers cache prefixes
  (``--enable-prefix-caching``); whether a given server does is up to the server.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import importlib.util
import json
import math
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx2
import openai
import pydantic
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from ttc.budget import BudgetExhausted
from ttc.engine import AttemptBilling, Billing, Capabilities, Engine, EngineError, StreamBroken
from ttc.types import (
    FinishReason,
    Generation,
    GenerationResult,
    Prompt,
    SamplingParams,
    StreamDelta,
    TokenLogprob,
    TopLogprob,
    Usage,
)

BASE_OPTIONS = frozenset({"chat_template_kwargs", "reasoning_effort", "top_k", "min_p", "repetition_penalty"})
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "abort", "error": "error"}


#: The openai SDK's per-request telemetry headers (see ``OpenAIEngine(sdk_headers=...)``).
_SDK_HEADERS = (
    "X-Stainless-Lang", "X-Stainless-Package-Version", "X-Stainless-OS", "X-Stainless-Arch",
    "X-Stainless-Runtime", "X-Stainless-Runtime-Version", "X-Stainless-Async",
)  # (the SDK adds X-Stainless-Retry-Count / -Read-Timeout per request whatever the defaults say)


class ContextLengthExceeded(EngineError):
    """The prompt plus ``max_tokens`` do not fit the server's context window (HTTP 400)."""


class _UsageProblem(EngineError):
    """A reply's usage failed validation (see ``OpenAIEngine._checked_usage``)."""


class _Retryable(Exception):
    """One failed attempt that may succeed if tried again."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 endpoint: _Endpoint | None = None, endpoint_fault: bool = False):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.endpoint = endpoint
        self.endpoint_fault = endpoint_fault


@dataclass(eq=False)
class _Endpoint:
    url: str
    client: openai.AsyncOpenAI
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    unhealthy_until: float = 0.0


@dataclass
class _StreamState:
    received: int = 0  # tokens handed out (logprob entries, usage steps, else one per text chunk)
    text_bytes: int = 0  # UTF-8 bytes of the text handed out
    usage: Usage | None = None
    finished: bool = False
    errors: list[str] = field(default_factory=list)


def _count_of(v: Any) -> int | None:
    """``v`` as a token count: a non-negative integer (an integral JSON number), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if v >= 0 else None
    if isinstance(v, float) and math.isfinite(v) and v >= 0 and v.is_integer():
        return int(v)
    return None


def _split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its userinfo, and the (user, password) it carried, if any."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"base_url: not a URL ({e})") from None
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc)), (unquote(parts.username or ""), unquote(parts.password or ""))


def _reply_cut(e: BaseException) -> bool:
    """``e`` says the server's reply started but its body was cut short (the server ran
    the request: aiohttp's ``ClientPayloadError``, h11's incomplete message body)."""
    seen: set[int] = set()
    c: BaseException | None = e
    while c is not None and id(c) not in seen:
        seen.add(id(c))
        if type(c).__name__ in ("ClientPayloadError", "ContentLengthError") or "complete message body" in str(c):
            return True
        c = c.__cause__ or c.__context__
    return False


def _connection_failure(e: BaseException) -> BaseException | None:
    """The refused, reset or unresolvable connection behind ``e``, if any (the SDK's
    aiohttp transport reports a refused connection as a connect *timeout*)."""
    seen: set[int] = set()
    c: BaseException | None = e
    while c is not None and id(c) not in seen:
        seen.add(id(c))
        if isinstance(c, (ConnectionError, socket.gaierror)):
            return c
        c = c.__cause__ or c.__context__
    return None


def _server_message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    try:
        text = e.response.text
    except Exception:  # noqa: BLE001
        text = ""
    return text[:500] or str(e)


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(float(ra), 0.0)
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(ra)
        return max(dt.timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def _is_transport_error(e: BaseException) -> bool:
    mod = type(e).__module__ or ""
    return mod.startswith(("httpx", "httpcore", "h11", "anyio")) or isinstance(e, (ConnectionError, OSError))


class OpenAIEngine(Engine):
    """Engine over one or several OpenAI-compatible endpoints serving the same model.

    See the module docstring for every behaviour (continuation, ``n`` fallback, retries,
    billing, routing). ``base_url`` ends in ``/v1``.
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
        http_backend: Literal["aiohttp", "httpx"] | None = None,
        sdk_headers: bool = False,
    ):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
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
            http_backend = "aiohttp" if importlib.util.find_spec("aiohttp") is not None else "httpx"
        if http_backend not in ("aiohttp", "httpx"):
            raise ValueError(f"http_backend: 'aiohttp' or 'httpx', got {http_backend!r}")
        self.http_backend = http_backend
        self.sdk_headers = sdk_headers
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
        self.continuous_usage_stats = continuous_usage_stats
        self._native_n = supports_n
        self._options = BASE_OPTIONS | frozenset(extra_body_options)
        self._secrets: list[str] = []
        self._endpoints = []
        for u in urls:
            clean, cred = _split_credentials(u)
            if cred is not None:
                self._secrets += [x for x in cred if len(x) >= 3]
            self._endpoints.append(_Endpoint(clean.rstrip("/"), self._client(clean.rstrip("/"), api_key, cred)))
        self._rr = 0
        self._sem = asyncio.Semaphore(max_concurrency)
        self._backoff = wait_random_exponential(multiplier=backoff_base, max=backoff_max)
        self._tok = None
        if tokenizer is not None:
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(tokenizer)
        self._count_cache: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.attempts = 0
        self._set_caps()

    def _client(self, url: str, api_key: str, cred: tuple[str, str] | None = None) -> openai.AsyncOpenAI:
        """One client (one connection pool) per endpoint, for the engine's life; the
        pool keeps ``max_concurrency`` connections alive: the semaphore never lets more run.

        The transport is the openai SDK's aiohttp one (``openai.DefaultAioHttpClient``)
        when aiohttp is installed, else its default httpx one (``http_backend``). Measured
        by ``benchmarks/openai_concurrency.py``: the httpx connection pool walks every
        connection on each request (about 1/3 of the client's CPU at 64 in flight)."""
        limits = httpx2.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        if self.http_backend == "aiohttp":
            http = openai.DefaultAioHttpClient(limits=limits, timeout=self.timeout)
        else:
            http = openai.DefaultAsyncHttpxClient(limits=limits, timeout=self.timeout)
        # The SDK's telemetry headers (X-Stainless-*) cost header-handling CPU on every
        # request and mean nothing to a self-hosted server: left out unless sdk_headers=True.
        headers: dict[str, Any] = {} if self.sdk_headers else {h: openai.Omit() for h in _SDK_HEADERS}
        if cred is not None:  # credentials from the URL: basic auth (they never stay in the URL)
            headers["Authorization"] = "Basic " + base64.b64encode(f"{cred[0]}:{cred[1]}".encode()).decode()
        return openai.AsyncOpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=self.timeout, http_client=http,
                                  default_headers=headers)

    def _redact(self, text: str) -> str:
        """``text`` with every credential taken from a base URL blanked out."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # -- capabilities --------------------------------------------------------------------
    def _set_caps(self) -> None:
        self.capabilities = Capabilities(
            logprobs=True, max_top_logprobs=20, prefill=True, native_n=self._native_n is not False,
            prefix_caching=True, streaming=True, options=self._options,
        )

    def _use_native_n(self, params: SamplingParams) -> bool:
        return params.n == 1 or (self._native_n is not False and params.temperature > 0)

    async def worst_case(self, prompt: Prompt, params: SamplingParams) -> Usage:
        prompt_tokens = await self.count_prompt_tokens(prompt)
        per_call = 1 if self._use_native_n(params) else params.n
        return Usage(prompt_tokens=prompt_tokens * per_call, completion_tokens=params.n * params.max_tokens,
                     calls=per_call, generations=params.n)

    @property
    def endpoints(self) -> list[str]:
        return [e.url for e in self._endpoints]

    def endpoint_stats(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [{"url": e.url, "requests": e.requests, "failures": e.failures, "in_flight": e.in_flight,
                 "healthy": e.unhealthy_until <= now} for e in self._endpoints]

    # -- prompts ---------------------------------------------------------------------------
    def _messages(self, prompt: Prompt) -> list[dict[str, str]]:
        assert prompt.messages is not None
        msgs = [{"role": m.role, "content": m.content} for m in prompt.messages]
        if prompt.assistant_prefix:
            msgs.append({"role": "assistant", "content": prompt.assistant_prefix})
        return msgs

    def _render(self, prompt: Prompt) -> str:
        """The prompt text as the server will see it on /completions (chat template applied locally)."""
        if prompt.text is not None:
            return prompt.text + prompt.assistant_prefix
        assert self._tok is not None
        if prompt.assistant_prefix:
            return self._tok.apply_chat_template(
                self._messages(prompt), tokenize=False, continue_final_message=True
            )
        return self._tok.apply_chat_template(self._messages(prompt), tokenize=False, add_generation_prompt=True)

    def _route(self, prompt: Prompt) -> Literal["chat", "completions"]:
        if prompt.text is not None or self.endpoint == "completions":
            return "completions"
        if prompt.assistant_prefix and self.prefill == "local_template":
            return "completions"
        return "chat"

    async def count_prompt_tokens(self, prompt: Prompt) -> int:
        key = prompt.model_dump_json()
        hit = self._count_cache.get(key)
        if hit is not None:
            return hit
        if self._tok is not None:
            if self._route(prompt) == "completions":
                n = len(self._tok.encode(self._render(prompt), add_special_tokens=prompt.text is not None))
            else:
                text = self._tok.apply_chat_template(
                    self._messages(prompt), tokenize=False,
                    **({"continue_final_message": True} if prompt.assistant_prefix else {"add_generation_prompt": True}),
                )
                n = len(self._tok.encode(text, add_special_tokens=False))
        elif prompt.text is not None:  # sent as is: its bytes, plus room for a BOS/prefix token
            n = len(prompt.text.encode()) + len(prompt.assistant_prefix.encode()) + 8
        else:  # at most a token per byte of each message, plus the template's fixed text
            msgs = self._messages(prompt)
            n = sum(len(m["content"].encode()) + len(m["role"].encode()) + 8 for m in msgs) + self.template_tokens
        if len(self._count_cache) > 4096:
            self._count_cache.clear()
        self._count_cache[key] = n
        return n

    # -- request bodies ----------------------------------------------------------------------
    def _body(self, prompt: Prompt, params: SamplingParams, *, stream: bool) -> tuple[str, dict[str, Any]]:
        """The JSON request body (the client's ``post`` sends it as is: no per-call typed
        transform, and responses are read as plain JSON, to keep client CPU per request low)."""
        route = self._route(prompt)
        kw: dict[str, Any] = {"model": self.model, "temperature": params.temperature, "top_p": params.top_p,
                              "max_tokens": params.max_tokens, "n": params.n}
        if route == "chat":
            kw["messages"] = self._messages(prompt)
            if prompt.assistant_prefix:
                kw.update(continue_final_message=True, add_generation_prompt=False)
            if params.logprobs is not None:
                kw["logprobs"] = True
                kw["top_logprobs"] = params.logprobs
        else:
            kw["prompt"] = self._render(prompt)
            if params.logprobs is not None:
                kw["logprobs"] = params.logprobs
        if params.stop:
            kw["stop"] = list(params.stop)
        if params.seed is not None:
            kw["seed"] = params.seed
        kw.update(params.extra)  # vLLM/SGLang extras and reasoning_effort are top-level body fields
        if stream:
            kw["stream"] = True
            so: dict[str, Any] = {"include_usage": True}
            if self.continuous_usage_stats:
                so["continuous_usage_stats"] = True
            kw["stream_options"] = so
        return route, kw

    # -- endpoint choice and errors --------------------------------------------------------------
    def _pick(self) -> _Endpoint:
        now = time.monotonic()
        pool = [e for e in self._endpoints if e.unhealthy_until <= now]
        if not pool:  # all cooling down: the one back soonest
            pool = [min(self._endpoints, key=lambda e: e.unhealthy_until)]
        least = min(e.in_flight for e in pool)
        cands = [e for e in pool if e.in_flight == least]
        self._rr += 1
        return cands[self._rr % len(cands)]

    def _fail(self, ep: _Endpoint, err: _Retryable) -> None:
        ep.failures += 1
        if err.endpoint_fault and len(self._endpoints) > 1:
            hold = self.cooldown if err.retry_after is None else max(err.retry_after, 0.0)
            ep.unhealthy_until = time.monotonic() + hold

    def _classify(self, e: BaseException, ep: _Endpoint) -> _Retryable | EngineError:
        where = f" ({ep.url})" if len(self._endpoints) > 1 else ""
        if isinstance(e, _Retryable):
            e.endpoint = ep
            return e
        refused = _connection_failure(e) if isinstance(e, (openai.APIConnectionError, OSError)) else None
        if refused is not None:  # (APITimeoutError is an APIConnectionError)
            return _Retryable(self._redact(f"connection error: {type(refused).__name__}: {refused}{where}"),
                              endpoint=ep, endpoint_fault=True)
        if isinstance(e, (asyncio.TimeoutError, openai.APITimeoutError)):
            return _Retryable(f"timeout after {self.timeout:g}s (the request was aborted){where}", endpoint=ep,
                              endpoint_fault=True)
        if isinstance(e, openai.APIConnectionError):
            cause = e.__cause__ or e
            return _Retryable(self._redact(f"connection error: {type(cause).__name__}: {cause}{where}"), endpoint=ep,
                              endpoint_fault=True)
        if isinstance(e, openai.APIStatusError):
            status, msg = e.status_code, self._redact(_server_message(e))
            if status == 429:
                return _Retryable(f"429 {msg}{where}", status=429, retry_after=_retry_after(e.response.headers),
                                  endpoint=ep, endpoint_fault=True)
            if status >= 500 or status in (408, 409):
                return _Retryable(f"{status} {msg}{where}", status=status, retry_after=_retry_after(e.response.headers),
                                  endpoint=ep, endpoint_fault=True)
            low = msg.lower()
            if status == 400 and ("context length" in low or "context window" in low or "maximum context" in low):
                return ContextLengthExceeded(f"{self.name}: context length exceeded: {msg}", status=status)
            return EngineError(f"{self.name}: HTTP {status} from the server{where}: {msg}", status=status)
        if isinstance(e, (openai.APIResponseValidationError, json.JSONDecodeError, pydantic.ValidationError,
                          ValueError, KeyError, TypeError, AttributeError)):
            return _Retryable(self._redact(f"malformed response: {type(e).__name__}: {str(e)[:200]}{where}"),
                              endpoint=ep)
        if _is_transport_error(e):
            return _Retryable(self._redact(f"transport error: {type(e).__name__}: {e}{where}"), endpoint=ep,
                              endpoint_fault=True)
        return EngineError(self._redact(f"{self.name}: unexpected {type(e).__name__}: {e}"))

    def _wait(self, rs: RetryCallState) -> float:
        exc = rs.outcome.exception() if rs.outcome is not None else None
        if isinstance(exc, _Retryable):
            if exc.retry_after is not None and not (exc.endpoint_fault and self._healthy_other(exc.endpoint)):
                return min(exc.retry_after, self.max_retry_after)
            if exc.endpoint_fault and self._healthy_other(exc.endpoint):
                return 0.0  # another replica can take it now
        return float(self._backoff(rs))

    def _healthy_other(self, ep: _Endpoint | None) -> bool:
        now = time.monotonic()
        return any(e is not ep and e.unhealthy_until <= now for e in self._endpoints)

    async def _retrying(self, attempt_fn: Any, what: str) -> Any:
        """Run ``attempt_fn(endpoint)`` with retries; EngineError when attempts run out.

        The first attempt runs outside tenacity (the hot path: most requests succeed);
        a retryable failure is replayed as tenacity's first attempt, so waits,
        ``Retry-After`` and the attempt count are exactly tenacity's."""
        errors: list[str] = []

        async def once() -> Any:
            ep = self._pick()
            try:
                return await attempt_fn(ep)
            except (asyncio.CancelledError, EngineError, BudgetExhausted):
                raise
            except Exception as e:
                err = self._classify(e, ep)
                if isinstance(err, _Retryable):
                    errors.append(str(err))
                    self._fail(ep, err)
                raise err from e

        try:
            return await once()
        except _Retryable as e:
            first = e
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.max_attempts), wait=self._wait,
                retry=retry_if_exception_type(_Retryable), reraise=True,
            ):
                with attempt:
                    if attempt.retry_state.attempt_number == 1:
                        raise first
                    return await once()
        except _Retryable as last:
            lines = "; ".join(f"{i + 1}) {m}" for i, m in enumerate(errors))
            raise EngineError(
                f"{self.name}: {what} failed after {len(errors)} attempt(s); last error: {last}. Attempts: {lines}",
                retryable=True, status=last.status,
            ) from last
        raise AssertionError("unreachable")  # pragma: no cover

    # -- parsing ----------------------------------------------------------------------------------
    @staticmethod
    def _checked_usage(raw: Any, worst: Usage, text_bytes: int, choices: int) -> tuple[Usage | None, str | None]:
        """What to bill for one reply's ``usage`` object, and what is wrong with it.

        ``worst`` is the attempt's worst case; ``text_bytes`` the UTF-8 bytes of the
        text the reply brought in ``choices`` choices. (None, None) when the reply has no
        usage. A field left out is our count (the prompt bound; the text's bytes plus an
        end token per choice, at most the worst case). A count that is not a
        non-negative integer, or more than the reply can hold (completion: a token per
        byte of text plus an end token per choice, or the worst case if larger; prompt:
        twice the bound), is billed as the worst case; one above the worst case but
        possible is billed as reported (the meter records the excess). Either way the
        problem is returned, naming the field.
        """
        if not isinstance(raw, dict):
            return None, None
        caps = {"prompt_tokens": 2 * worst.prompt_tokens,
                "completion_tokens": max(worst.completion_tokens, text_bytes + choices)}
        got = {"prompt_tokens": worst.prompt_tokens,
               "completion_tokens": min(worst.completion_tokens, text_bytes + choices)}
        problems: list[str] = []
        impossible = False
        for f in ("prompt_tokens", "completion_tokens"):
            if raw.get(f) is None:
                continue
            v = _count_of(raw[f])
            if v is None:
                problems.append(f"usage.{f}: {repr(raw[f])[:40]} is not a non-negative integer")
                impossible = True
            elif v > caps[f]:
                problems.append(f"usage.{f}: {v:.3g} is more than this reply can hold ({caps[f]})")
                impossible = True
            else:
                if v > getattr(worst, f):
                    problems.append(f"usage.{f}: {v} is more than the request's worst case {getattr(worst, f)} "
                                    "(charged as reported)")
                got[f] = v
        cached = 0
        details = raw.get("prompt_tokens_details")
        if isinstance(details, dict) and details.get("cached_tokens") is not None:
            c = _count_of(details["cached_tokens"])
            if c is None or c > got["prompt_tokens"]:
                problems.append(f"usage.prompt_tokens_details.cached_tokens: {repr(details['cached_tokens'])[:40]} "
                                "is not a count of at most prompt_tokens")
            else:
                cached = c
        problem = "; ".join(problems) or None
        if impossible:
            return worst.model_copy(update={"cached_prompt_tokens": 0, "wall_seconds": 0.0}), problem
        return Usage(prompt_tokens=got["prompt_tokens"], completion_tokens=got["completion_tokens"],
                     cached_prompt_tokens=cached, calls=1, generations=choices), problem

    @staticmethod
    def _chat_logprobs(lp: Any) -> list[TokenLogprob] | None:
        if not lp or lp.get("content") is None:
            return None
        return [
            TokenLogprob(token=t["token"], logprob=float(t["logprob"]),
                         top=[TopLogprob(token=a["token"], logprob=float(a["logprob"]))
                              for a in (t.get("top_logprobs") or [])])
            for t in lp["content"]
        ]

    @staticmethod
    def _completion_logprobs(lp: Any) -> list[TokenLogprob] | None:
        if not lp or lp.get("tokens") is None:
            return None
        toks = lp["tokens"]
        tops = lp.get("top_logprobs") or [None] * len(toks)
        out = []
        for tok, p, top in zip(toks, lp.get("token_logprobs") or [], tops):
            alts = sorted((top or {}).items(), key=lambda kv: -kv[1])
            out.append(TokenLogprob(token=tok, logprob=float(p if p is not None else 0.0),
                                    top=[TopLogprob(token=a, logprob=float(v)) for a, v in alts]))
        return out

    def _estimate_tokens(self, text: str, finish: str | None = None) -> int:
        """Tokens of a generated ``text``, erring high, never low: exact with ``tokenizer``,
        else one per UTF-8 byte (a token holds at least one); plus the end token of a
        generation that stopped."""
        n = len(self._tok.encode(text, add_special_tokens=False)) if self._tok is not None else len(text.encode())
        return n + (1 if finish == "stop" else 0)

    def _parse_choices(self, choices: Any, route: str) -> list[tuple[str, FinishReason, list[TokenLogprob] | None,
                                                                      str | None]]:
        """(text, finish reason, logprobs, stop reason) per choice, in index order; raises
        TypeError/ValueError/KeyError/AttributeError on a malformed choice."""
        if not isinstance(choices, list):
            raise TypeError(f"choices is {type(choices).__name__}, not a list")
        out: list[tuple[str, FinishReason, list[TokenLogprob] | None, str | None]] = []
        for c in sorted(choices, key=lambda c: c.get("index", 0)):
            if route == "chat":
                text = (c.get("message") or {}).get("content") or ""
            else:
                text = c.get("text") or ""
            if not isinstance(text, str):
                raise TypeError(f"choice text is {type(text).__name__}, not str")
            lp = c.get("logprobs")
            lps = self._chat_logprobs(lp) if route == "chat" else self._completion_logprobs(lp)
            out.append((text, _FINISH.get(c.get("finish_reason") or "stop", "stop"), lps, _stop_reason(c)))
        return out

    def _generations(self, resp: Any, route: str, usage: Usage | None, max_tokens: int) -> list[Generation]:
        return self._counted(self._parse_choices(resp["choices"], route), usage, max_tokens)

    def _counted(self, parsed: list[tuple[str, FinishReason, list[TokenLogprob] | None, str | None]],
                 usage: Usage | None, max_tokens: int) -> list[Generation]:
        gens = [(t, f, lp) for t, f, lp, _ in parsed]
        stop_reasons = [sr for *_, sr in parsed]
        # Per-sample token counts: exact from logprobs; else the server's total shared out
        # in proportion to an estimate (so the samples add up to what the server billed).
        counts = [len(lps) if lps is not None else -1 for _, _, lps in gens]
        if any(c < 0 for c in counts) and usage is not None:
            known = sum(c for c in counts if c >= 0)
            rest = max(usage.completion_tokens - known, 0)
            idx = [i for i, c in enumerate(counts) if c < 0]
            est = [self._estimate_tokens(gens[i][0]) for i in idx]
            tot = sum(est)
            shares = [rest * e // tot if tot else rest // len(idx) for e in est]
            for j in sorted(range(len(idx)), key=lambda j: -(rest * est[j] % tot if tot else 0))[
                : rest - sum(shares)
            ]:
                shares[j] += 1
            for i, s in zip(idx, shares):
                counts[i] = s
        for i, c in enumerate(counts):
            if c < 0:
                counts[i] = self._estimate_tokens(gens[i][0], gens[i][1])
        # An estimated share never exceeds max_tokens: move any excess to samples below it
        # (the billed total fits, since the server cannot generate more than n * max_tokens).
        excess = sum(max(0, c - max_tokens) for c in counts)
        counts = [min(c, max_tokens) for c in counts]
        for i in range(len(counts)):
            give = min(excess, max_tokens - counts[i])
            counts[i] += give
            excess -= give
        return [Generation(text=t, num_tokens=n, finish_reason=f, logprobs=lp, stop_reason=sr)
                for (t, f, lp), n, sr in zip(gens, counts, stop_reasons)]

    # -- generate -----------------------------------------------------------------------------------
    async def _generate(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> GenerationResult:
        prompt_bound = await self.count_prompt_tokens(prompt)
        one = Usage(prompt_tokens=prompt_bound, completion_tokens=params.max_tokens, calls=1, generations=1)
        singly = _times(one, params.n)
        if self._use_native_n(params):
            call = Usage(prompt_tokens=prompt_bound, completion_tokens=params.n * params.max_tokens, calls=1,
                         generations=params.n)
            hold = AttemptBilling.of(billing, call)
            try:
                return await self._generate_call(prompt, params, hold)
            except EngineError as e:
                if isinstance(e, ContextLengthExceeded) or not (
                    params.n > 1 and e.status == 400 and self._rejects_n(str(e))
                ):
                    raise
                self._native_n = False  # remember: this server takes n=1 only
                self._set_caps()
            hold.cover(singly)  # n requests instead of one: the hold must cover them all
        else:
            hold = AttemptBilling.of(billing, singly)
        singles = params.model_copy(update={"n": 1})
        results = await asyncio.gather(
            *[self._generate_call(prompt, singles, AttemptBilling(hold, one)) for _ in range(params.n)],
            return_exceptions=True,
        )
        gens = [g for r in results if isinstance(r, GenerationResult) for g in r.generations]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            for r in errors:
                if not isinstance(r, Exception):
                    raise r
            first = errors[0]
            if isinstance(first, (EngineError, BudgetExhausted)):  # the samples that did come are paid for
                first.generations = gens + [g for r in errors for g in getattr(r, "generations", [])]
            raise first
        usage = sum((r.usage for r in results), Usage())  # type: ignore[union-attr]
        return GenerationResult(generations=gens, usage=usage)

    @staticmethod
    def _rejects_n(message: str) -> bool:
        low = message.lower()
        return ("'n'" in low or "`n`" in low or "n must" in low or "n >" in low or "n>" in low
                or "param n" in low or "parameter n" in low or "param=n" in low or "parameter=n)" in low)

    async def _generate_call(self, prompt: Prompt, params: SamplingParams, hold: AttemptBilling) -> GenerationResult:
        """One request for ``params.n`` choices, retried; a short reply's choices are kept
        and the retry asks for the rest. Each attempt covers its worst case on ``hold``
        before it is sent."""
        route = self._route(prompt)
        path = "/chat/completions" if route == "chat" else "/completions"
        prompt_bound = await self.count_prompt_tokens(prompt)
        got: list[Generation] = []
        billed = Usage()
        t0 = time.monotonic()

        def bill(u: Usage) -> None:
            nonlocal billed
            hold.bill(u)
            billed = billed + u

        async def attempt(ep: _Endpoint) -> None:
            n = params.n - len(got)
            worst = Usage(prompt_tokens=prompt_bound, completion_tokens=n * params.max_tokens, calls=1, generations=n)
            hold.cover(worst)  # a retry is sent only on a hold that covers it
            _, body = self._body(prompt, params if n == params.n else params.model_copy(update={"n": n}), stream=False)
            async with self._sem:
                ep.in_flight += 1
                ep.requests += 1
                self.attempts += 1
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                answered = False
                try:
                    async with asyncio.timeout(self.timeout):
                        # The raw response, parsed here: the SDK's generic cast to dict
                        # costs more CPU than json.loads (benchmarks/openai_concurrency.py).
                        raw = await ep.client.post(path, body=body, cast_to=httpx2.Response)
                    answered = True
                except asyncio.CancelledError:
                    if not answered:
                        # Cancelled by the caller: the server got the prompt but reports nothing.
                        bill(Usage(prompt_tokens=prompt_bound, calls=1))
                    raise
                except Exception as e:
                    if _reply_cut(e):  # it answered (and ran the request); what it charged never came
                        bill(worst)
                    raise
                finally:
                    ep.in_flight -= 1
                    self.in_flight -= 1
            try:
                resp = json.loads(raw.content)
            except ValueError:
                bill(worst)  # an unreadable reply: the request ran, its cost is unknown
                raise
            if not isinstance(resp, dict):
                bill(worst)
                raise _Retryable(f"malformed response: not a JSON object: {str(resp)[:120]!r}")
            try:
                parsed = self._parse_choices(resp.get("choices"), route)[:n]
                bad = None
            except (TypeError, ValueError, KeyError, AttributeError) as e:
                parsed, bad = [], e
            text_bytes = sum(len(t.encode()) for t, *_ in parsed)
            usage, problem = self._checked_usage(resp.get("usage"), worst, text_bytes, len(parsed))
            if usage is not None:
                bill(usage)  # the server billed it, whatever happens next
            elif bad is not None:
                bill(worst)
            if bad is not None:
                raise _Retryable(f"malformed response: {type(bad).__name__}: {str(bad)[:160]}")
            gens = self._counted(parsed, usage, params.max_tokens)
            if usage is None:  # a server that reports no usage: bill our count of what it did (errs high)
                bill(Usage(prompt_tokens=prompt_bound, completion_tokens=sum(g.num_tokens for g in gens), calls=1,
                           generations=len(gens)))
            got.extend(gens)
            if problem is not None:
                raise EngineError(f"{self.name}: {problem}", status=raw.status_code)
            if len(got) < params.n:
                raise _Retryable(f"short reply: {len(gens)} of {n} choices")

        try:
            await self._retrying(attempt, f"{route} request")
        except (EngineError, BudgetExhausted) as e:
            e.generations = list(got)  # paid for: the caller keeps them
            raise
        return GenerationResult(generations=got, usage=billed.model_copy(update={"wall_seconds": time.monotonic() - t0}))

    # -- streaming ----------------------------------------------------------------------------------
    def _parse_chunk(self, chunk: Any, route: str) -> tuple[str, list[TokenLogprob] | None, str | None]:
        if not isinstance(chunk, dict):
            raise TypeError(f"stream chunk is {type(chunk).__name__}, not a JSON object")
        if not chunk.get("choices"):
            return "", None, None
        c = chunk["choices"][0]
        if route == "chat":
            text = (c.get("delta") or {}).get("content") or ""
            lps = self._chat_logprobs(c.get("logprobs"))
        else:
            text = c.get("text") or ""
            lps = self._completion_logprobs(c.get("logprobs"))
        return text, lps, c.get("finish_reason")

    async def _stream(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> AsyncIterator[StreamDelta]:
        prompt_tokens = await self.count_prompt_tokens(prompt)
        worst = Usage(prompt_tokens=prompt_tokens, completion_tokens=params.max_tokens, calls=1, generations=1)
        hold = AttemptBilling.of(billing, worst)
        st = _StreamState()
        stream: Any = None
        ep_used: list[_Endpoint] = []
        route = self._route(prompt)
        await self._sem.acquire()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

        def delta_of(chunk: Any) -> StreamDelta | None:
            text, lps, finish = self._parse_chunk(chunk, route)
            st.text_bytes += len(text.encode())
            u, problem = self._checked_usage(chunk.get("usage"), worst, st.text_bytes, 1)
            prev = st.usage.completion_tokens if st.usage is not None else st.received
            if u is not None:
                st.usage = u
            if problem is not None:
                raise _UsageProblem(f"{self.name}: {problem}")
            if lps is not None:
                n = len(lps)
            elif u is not None and self.continuous_usage_stats:
                n = max(u.completion_tokens - prev, 0)
            else:
                n = 1 if text else 0
            if not text and lps is None and finish is None:
                return None
            st.received += n
            if finish is not None:
                st.finished = True
            return StreamDelta(text=text, num_tokens=n, logprobs=lps,
                               finish_reason=_FINISH.get(finish, "stop") if finish else None)

        async def open_stream(ep: _Endpoint) -> tuple[Any, list[StreamDelta]]:
            nonlocal stream
            hold.cover(worst)  # a retry is sent only on a hold that covers it
            _, body = self._body(prompt, params, stream=True)
            path = "/chat/completions" if route == "chat" else "/completions"
            ep.requests += 1
            ep.in_flight += 1
            ep_used.append(ep)
            self.attempts += 1
            st.usage, st.received, st.text_bytes = None, 0, 0
            s = None
            try:
                async with asyncio.timeout(self.timeout):
                    s = await ep.client.post(path, body=body, cast_to=dict, stream=True,
                                             stream_cls=openai.AsyncStream[dict])
                    stream = s
                    buf: list[StreamDelta] = []
                    it = s.__aiter__()
                    while not buf:  # read until the first piece of output
                        try:
                            chunk = await it.__anext__()
                        except StopAsyncIteration:
                            raise _Retryable("stream ended before any output (truncated)") from None
                        d = delta_of(chunk)
                        if d is not None:
                            buf.append(d)
                return (s, it), buf
            except BaseException:
                if st.usage is not None:  # the server reported usage before failing
                    hold.bill(st.usage)
                    st.usage = None
                if s is not None:
                    await s.close()
                stream = None
                ep.in_flight -= 1
                ep_used.pop()
                raise

        async def open_with_fallback() -> tuple[Any, list[StreamDelta]]:
            try:
                return await self._retrying(open_stream, f"{route} stream")
            except EngineError as e:
                if e.status == 400 and "continuous_usage_stats" in str(e) and self.continuous_usage_stats:
                    self.continuous_usage_stats = False  # this server does not know vLLM's extension
                    return await self._retrying(open_stream, f"{route} stream")
                raise

        try:
            (_, it), buf = await open_with_fallback()
            pending: StreamDelta | None = None
            for d in buf:
                if d.finish_reason is not None:
                    pending = d
                else:
                    yield d
            try:
                while True:
                    try:
                        async with asyncio.timeout(self.timeout):
                            chunk = await it.__anext__()
                    except StopAsyncIteration:
                        break
                    d = delta_of(chunk)
                    if d is None:
                        continue
                    if pending is not None:  # text after a finish (n>1 is not streamed): pass it on
                        yield pending
                        pending = None
                    if d.finish_reason is not None:
                        pending = d
                    else:
                        yield d
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except _UsageProblem as e:
                raise StreamBroken(f"{e} (stream closed after {st.received} token(s))") from e
            except Exception as e:
                err = self._classify(e, ep_used[-1])
                raise StreamBroken(
                    f"{self.name}: stream broke after {st.received} token(s): {err}", retryable=True,
                    status=getattr(err, "status", None),
                ) from e
            if not st.finished:
                raise StreamBroken(f"{self.name}: stream truncated after {st.received} token(s) (no finish_reason)",
                                   retryable=True)
            final = pending or StreamDelta(finish_reason="stop")
            final.usage = self._final_usage(st, prompt_tokens, params.max_tokens)
            yield final
        finally:
            if stream is not None:
                try:
                    await stream.close()  # closes the HTTP response: the server aborts the request
                except Exception as e:  # noqa: BLE001 - the connection is gone either way
                    st.errors.append(f"close: {e!r}")
            if ep_used:
                ep_used[-1].in_flight -= 1
                hold.bill(self._final_usage(st, prompt_tokens, params.max_tokens))
            self.in_flight -= 1
            self._sem.release()

    @staticmethod
    def _final_usage(st: _StreamState, prompt_tokens: int, max_tokens: int) -> Usage:
        """What a stream is billed: the server's last (validated) usage, at least the
        tokens handed out; without one, the prompt bound plus an estimate of the text
        handed out that errs high (a token per byte plus an end token, at most
        ``max_tokens``, at least the tokens counted)."""
        if st.usage is not None:
            u = st.usage
            if u.completion_tokens < st.received:
                u = u.model_copy(update={"completion_tokens": st.received})
            return u.model_copy(update={"calls": 1, "generations": 1})
        est = max(st.received, min(max_tokens, st.text_bytes + 1)) if st.received or st.text_bytes else 0
        return Usage(prompt_tokens=prompt_tokens, completion_tokens=est, calls=1, generations=1)

    async def aclose(self) -> None:
        for e in self._endpoints:
            await e.client.close()


__all__ = ["ContextLengthExceeded", "OpenAIEngine"]


def _times(u: Usage, k: int) -> Usage:
    return Usage(prompt_tokens=u.prompt_tokens * k, completion_tokens=u.completion_tokens * k, calls=u.calls * k,
                 generations=u.generations * k)


def _stop_reason(choice: dict[str, Any]) -> str | None:
    """What ended a finish_reason="stop" choice. vLLM servers report ``stop_reason``: the
    matched stop string, a stop token id, or null for EOS; other servers say nothing."""
    if choice.get("finish_reason") != "stop" or "stop_reason" not in choice:
        return None
    sr = choice["stop_reason"]
    return sr if isinstance(sr, str) else "eos"
