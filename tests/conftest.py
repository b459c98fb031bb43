"""Shared fixtures.

Real-engine fixtures start once per test session: the in-process vLLM engine on the
bundled SmolLM2-135M-Instruct (``vllm_engine``) and vLLM's OpenAI-compatible server
on the same model (``vllm_server``, with ``openai_engine`` on it). ``real_engine``
is parametrised over both, so a strategy test written once runs on either.

Set ``TTC_SKIP_REAL=1`` to run only the unit tests (never in CI: ``make test`` runs all).
"""

from __future__ import annotations

import os

import pytest

REAL_SKIP = os.environ.get("TTC_SKIP_REAL") == "1"


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    if not REAL_SKIP:
        return
    skip = pytest.mark.skip(reason="TTC_SKIP_REAL=1")
    for item in items:
        if "real" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bundled_model():  # type: ignore[no-untyped-def]
    from ttc.models import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
async def vllm_engine(bundled_model):  # type: ignore[no-untyped-def]
    from ttc.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine(bundled_model, max_model_len=2048, kv_cache_gib=2, count_scheduled_tokens=True)
    yield engine
    await engine.aclose()


@pytest.fixture(scope="session")
def vllm_server(bundled_model):  # type: ignore[no-untyped-def]
    from ttc.engines.vllm_server import VLLMServer

    # vLLM refuses a named tool_choice unless its server parses tool calls (hermes: the
    # format the tool tests ask for)
    with VLLMServer(bundled_model, served_name="smollm2", kv_cache_gib=2,
                    extra_args=["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]) as server:
        yield server


@pytest.fixture(scope="session")
async def openai_engine(vllm_server):  # type: ignore[no-untyped-def]
    from ttc.engines.openai_engine import OpenAIEngine

    engine = OpenAIEngine(vllm_server.base_url, model="smollm2", tokenizer=str(vllm_server.model_dir))
    yield engine
    await engine.aclose()


@pytest.fixture(params=["vllm", "openai"])
def real_engine(request):  # type: ignore[no-untyped-def]
    """The in-process vLLM engine, then the OpenAI engine on the real vLLM server."""
    return request.getfixturevalue("vllm_engine" if request.param == "vllm" else "openai_engine")
