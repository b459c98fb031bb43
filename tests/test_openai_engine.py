"""OpenAIEngine against the real vLLM OpenAI server on the bundled SmolLM2 (no mocks)."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from ttc.budget import Meter
from ttc.context import RunContext
from ttc.types import Prompt, SamplingParams

pytestmark = pytest.mark.real

Q = Prompt.of("What is 2 + 2? Answer briefly.")


async def test_chat_usage_matches_exact_prompt_count(openai_engine) -> None:  # type: ignore[no-untyped-def]
    m = Meter()
    gens = await RunContext(openai_engine, m).generate(Q, SamplingParams(temperature=0.0, max_tokens=12))
    assert len(gens) == 1 and gens[0].text.strip()
    assert gens[0].finish_reason in ("stop", "length")
    assert m.spent.calls == 1 and 1 <= m.spent.completion_tokens <= 12
    assert gens[0].num_tokens == m.spent.completion_tokens
    assert m.spent.prompt_tokens == await openai_engine.count_prompt_tokens(Q)


async def test_completions_endpoint_for_text_prompt(openai_engine) -> None:  # type: ignore[no-untyped-def]
    p = Prompt(text="1, 2, 3, 4,")
    r = await openai_engine.generate(p, SamplingParams(temperature=0.0, max_tokens=6))
    assert r.usage.prompt_tokens == await openai_engine.count_prompt_tokens(p)
    assert r.generations[0].text.strip().startswith("5")


async def test_native_n(openai_engine) -> None:  # type: ignore[no-untyped-def]
    r = await openai_engine.generate(Q, SamplingParams(n=4, temperature=1.0, max_tokens=8))
    assert len(r.generations) == 4 and r.usage.calls == 1 and r.usage.generations == 4
    assert sum(g.num_tokens for g in r.generations) == r.usage.completion_tokens
    assert openai_engine.capabilities.native_n


async def test_logprobs_topk_and_consistency(openai_engine) -> None:  # type: ignore[no-untyped-def]
    r = await openai_engine.generate(Q, SamplingParams(temperature=0.0, max_tokens=8, logprobs=5))
    g = r.generations[0]
    assert g.logprobs is not None and len(g.logprobs) == g.num_tokens == r.usage.completion_tokens
    for t in g.logprobs:
        assert len(t.top) == 5
        assert t.logprob <= 0.0 and all(a.logprob <= 0.0 for a in t.top)
        tops = [a.logprob for a in t.top]
        assert tops == sorted(tops, reverse=True)
        # greedy: the sampled token is the most likely one
        assert math.isclose(t.logprob, tops[0], abs_tol=1e-4)
    assert "".join(t.token for t in g.logprobs if t.token != "<|im_end|>") == g.text


async def test_completions_logprobs(openai_engine) -> None:  # type: ignore[no-untyped-def]
    r = await openai_engine.generate(Prompt(text="The capital of France is"),
                                     SamplingParams(temperature=0.0, max_tokens=4, logprobs=3))
    g = r.generations[0]
    assert g.logprobs is not None and len(g.logprobs) == g.num_tokens == 4
    assert all(1 <= len(t.top) <= 3 for t in g.logprobs)
    assert "".join(t.token for t in g.logprobs) == g.text


async def test_stream_collects_and_bills(openai_engine) -> None:  # type: ignore[no-untyped-def]
    m = Meter()
    async with RunContext(openai_engine, m).stream(Q, SamplingParams(temperature=0.0, max_tokens=12)) as ds:
        got = [d async for d in ds]
    assert got[-1].finish_reason is not None and got[-1].usage is not None
    full = await openai_engine.generate(Q, SamplingParams(temperature=0.0, max_tokens=12))
    assert "".join(d.text for d in got) == full.generations[0].text
    assert sum(d.num_tokens for d in got) == m.spent.completion_tokens == got[-1].usage.completion_tokens
    assert m.spent.prompt_tokens == full.usage.prompt_tokens


async def test_stream_cancel_stops_server_generation(vllm_server) -> None:  # type: ignore[no-untyped-def]
    from ttc.engines.openai_engine import OpenAIEngine

    async with OpenAIEngine(vllm_server.base_url, "smollm2", extra_body_options=["ignore_eos"]) as eng:
        m = Meter()
        before = vllm_server.metrics()
        params = SamplingParams(temperature=1.0, max_tokens=1800, extra={"ignore_eos": True})
        running_during = 0.0
        async with RunContext(eng, m).stream(Prompt.of("Tell me a long story."), params) as ds:
            k = 0
            async for d in ds:
                k += d.num_tokens
                if k >= 5:
                    running_during = vllm_server.metrics().get("vllm:num_requests_running", 0.0)
                    break
        assert running_during == 1.0
        deadline = time.monotonic() + 10
        while vllm_server.metrics().get("vllm:num_requests_running", 0.0) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        after = vllm_server.metrics()
        assert after.get("vllm:num_requests_running", 0.0) == 0.0
        generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
        assert generated < 1000, "the server stopped long before max_tokens"
        assert 5 <= m.spent.completion_tokens < 1000 and m.spent.calls == 1


@pytest.mark.parametrize("path", ["continue_final_message", "local_template"])
async def test_greedy_continuation_continues_the_prefix(vllm_server, path: str) -> None:  # type: ignore[no-untyped-def]
    from ttc.engines.openai_engine import OpenAIEngine

    async with OpenAIEngine(vllm_server.base_url, "smollm2", prefill=path,  # type: ignore[arg-type]
                            tokenizer=str(vllm_server.model_dir)) as eng:
        params = SamplingParams(temperature=0.0, max_tokens=24)
        full = (await eng.generate(Q, params)).generations[0].text
        words = full.split(" ")
        assert len(words) >= 4, full
        prefix = " ".join(words[:3])
        p = Q.with_prefix(prefix)
        cont = await eng.generate(p, params.model_copy(update={"max_tokens": 12}))
        g = cont.generations[0]
        # a continuation, not a new answer: prefix + continuation re-reads as the greedy answer
        assert (prefix + g.text).startswith(full[: len(prefix) + 4].rstrip()), (prefix, g.text, full)
        assert not g.text.startswith(prefix)
        assert cont.usage.prompt_tokens == await eng.count_prompt_tokens(p)


async def test_cached_prompt_tokens_reported(openai_engine) -> None:  # type: ignore[no-untyped-def]
    long_q = Prompt.of("Here is some context. " + "The sky is blue and the grass is green. " * 40 + "What colour is the sky?")
    params = SamplingParams(temperature=0.0, max_tokens=4)
    await openai_engine.generate(long_q, params)
    r = await openai_engine.generate(long_q, params)
    assert r.usage.prompt_tokens > 300
    assert r.usage.cached_prompt_tokens >= 256, "vLLM's prefix cache served the repeated prompt"


async def test_extras_pass_through_real_server(openai_engine) -> None:  # type: ignore[no-untyped-def]
    r = await openai_engine.generate(
        Q, SamplingParams(temperature=0.7, max_tokens=6, extra={"top_k": 1, "repetition_penalty": 1.0,
                                                                "chat_template_kwargs": {}}),
    )
    greedy = await openai_engine.generate(Q, SamplingParams(temperature=0.0, max_tokens=6))
    assert r.generations[0].text == greedy.generations[0].text  # top_k=1 is greedy: the server used it
