"""Engine configs that travel: a plain dict naming an engine kind and its constructor
arguments, built into an engine where it is needed (a Ray replica, another process).

``{"kind": "scripted" | "openai" | "vllm", **kwargs}``: the keyword arguments of
:class:`~engines.scripted.ScriptedEngine`, :class:`~engines.openai_engine.OpenAIEngine`
or :class:`~engines.vllm_engine.VLLMEngine`. A spec is data except for a scripted
engine's ``script`` and ``confidence`` callables, which travel pickled (cloudpickle, as
Ray ships any Python function): fine for tests and notebooks, not for configs read from
files. ``replica_spec`` turns retries off where an engine has them, for a caller that
retries each attempt itself (:class:`~engines.ray_engine.RayEngine`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ttc.engine import Engine

KINDS = ("scripted", "openai", "vllm")


def check_spec(spec: Mapping[str, Any]) -> str:
    """The spec's kind, or ValueError naming what is wrong."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"engine spec: expected a dict with 'kind', got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"engine spec: 'kind' must be one of {list(KINDS)}, got {kind!r}")
    return kind  # type: ignore[return-value]


def build_engine(spec: Mapping[str, Any]) -> Engine:
    """Build the engine a spec names (imports only what that kind needs)."""
    kind = check_spec(spec)
    kwargs = {k: v for k, v in spec.items() if k != "kind"}
    if kind == "scripted":
        from .scripted import ScriptedEngine

        if "script" not in kwargs:
            raise ValueError("engine spec: a scripted engine needs 'script' (a function or a list of texts)")
        return ScriptedEngine(kwargs.pop("script"), **kwargs)
    if kind == "openai":
        from .openai_engine import OpenAIEngine

        if "base_url" not in kwargs or "model" not in kwargs:
            raise ValueError("engine spec: an openai engine needs 'base_url' and 'model'")
        return OpenAIEngine(kwargs.pop("base_url"), **kwargs)
    from .vllm_engine import VLLMEngine

    if "model" not in kwargs:
        raise ValueError("engine spec: a vllm engine needs 'model' (a path or a model name)")
    return VLLMEngine(kwargs.pop("model"), **kwargs)


def replica_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with the engine's own retries off (an OpenAI engine sends one attempt per
    call), so every attempt is one the caller reserved before sending."""
    out = dict(spec)
    if check_spec(out) == "openai":
        out["max_attempts"] = 1
    return out
