"""``ttc serve`` on the bundled model, through the official ``openai`` client.

One uvicorn server per test session, started in-process on the session's event loop and
serving the session's in-process vLLM engine (``vllm_engine``): the main app at ``/v1``,
and at ``/keyed/v1`` an app with API keys and a per-key budget. One test starts the
``ttc serve --upstream`` command as a subprocess in front of the session's vLLM server.
Generations are kept short (the model is SmolLM2-135M: what it answers is not graded here,
only what the server does with it)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ttc import registry
from ttc.budget import Budget
from ttc.types import Prompt

pytestmark = pytest.mark.real

Q = [{"role": "user", "content": "What is 3 + 4? Answer with a number."}]
KEY_BUDGET = 400


@pytest.fixture(scope="session")
async def served(vllm_engine: Any) -> Any:
    from ttc.serve import ServeLimits, create_app, serving

    strategies = {"greedy": registry.build_from_spec("greedy"), "sc": registry.build_from_spec("sc:rule=beta,max=4"),
                  "majority": registry.build_from_spec("majority:n=3")}
    app = create_app(vllm_engine, strategies, limits=ServeLimits(max_body_bytes=100_000), keepalive=0.2)
    keyed = create_app(vllm_engine, {"greedy": strategies["greedy"]}, api_keys=["sk-agent", "sk-other"],
                       key_budget=Budget(total_tokens=KEY_BUDGET), key_budget_period=3600)
    app.mount("/keyed", keyed)
    async with serving(app) as url:
        yield url, app


def oa(base: str, key: str = "none") -> Any:
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)


async def test_chat_matches_the_library_and_reports_true_usage(served: Any, vllm_engine: Any) -> None:
    url, _ = served
    r = await oa(f"{url}/v1").chat.completions.create(model="greedy", messages=Q, max_tokens=12)
    lib = await registry.build("greedy", {"params": {"max_tokens": 12}}).run(Prompt.of(Q), vllm_engine)
    assert r.choices[0].message.content == lib.samples[0].text
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (lib.usage.prompt_tokens, lib.usage.completion_tokens)
    assert r.usage.completion_tokens > 0 and r.choices[0].finish_reason in ("stop", "length")
    assert r.model_extra["ttc"]["stop_reason"] == "done"


async def test_completions_and_a_multi_turn_conversation(served: Any, vllm_engine: Any) -> None:
    url, _ = served
    c = oa(f"{url}/v1")
    r = await c.completions.create(model="passthrough", prompt="1, 2, 3, 4,", max_tokens=6, temperature=0)
    assert r.choices[0].text and 0 < r.usage.completion_tokens <= 6
    assert r.usage.prompt_tokens == await vllm_engine.count_prompt_tokens(Prompt(text="1, 2, 3, 4,"))
    turns = [{"role": "system", "content": "You are a terse calculator."}, *Q,
             {"role": "assistant", "content": "7"}, {"role": "user", "content": "And times 2?"}]
    many = await c.chat.completions.create(model="greedy", messages=turns, max_tokens=8)
    assert many.choices[0].message.content is not None and many.usage.completion_tokens > 0
    # every turn reached the model: the prompt is the whole conversation under the chat template
    assert many.usage.prompt_tokens == await vllm_engine.count_prompt_tokens(Prompt.of(turns))
    last_only = await vllm_engine.count_prompt_tokens(Prompt.of(turns[-1:]))
    assert many.usage.prompt_tokens > last_only


async def test_streaming_live_and_chosen(served: Any) -> None:
    url, _ = served
    c = oa(f"{url}/v1")
    stream = await c.chat.completions.create(model="passthrough", messages=Q, max_tokens=16, temperature=0,
                                             stream=True, stream_options={"include_usage": True})
    pieces, usage = [], None
    async for ch in stream:
        if ch.choices and ch.choices[0].delta.content:
            pieces.append(ch.choices[0].delta.content)
        if ch.usage is not None:
            usage = ch.usage
    assert len(pieces) > 3 and usage is not None and usage.completion_tokens == pytest.approx(len(pieces), abs=2)
    stream = await c.chat.completions.create(model="sc", messages=Q, max_tokens=16, stream=True,
                                             stream_options={"include_usage": True})
    text, usage = "", None
    async for ch in stream:
        if ch.choices and ch.choices[0].delta.content:
            text += ch.choices[0].delta.content
        if ch.usage is not None:
            usage = ch.usage
    assert text and usage is not None and usage.completion_tokens > len(text.split()) // 4


async def test_per_request_budget_stops_the_strategy(served: Any) -> None:
    url, _ = served
    r = await oa(f"{url}/v1").chat.completions.create(model="sc", messages=Q, max_tokens=16,
                                                       extra_body={"ttc": {"budget": {"completion_tokens": 40}}})
    t = r.model_extra["ttc"]
    assert t["stop_reason"] == "budget" and t["budget_detail"] == "completion_tokens"
    assert 0 < r.usage.completion_tokens <= 40 and t["samples"] == 2


async def test_per_key_budget_runs_out_with_429(served: Any) -> None:
    import openai

    url, _ = served
    c = oa(f"{url}/keyed/v1", "sk-agent")
    spent = 0
    with pytest.raises(openai.RateLimitError) as e:
        for _ in range(40):
            r = await c.chat.completions.create(model="greedy", messages=Q, max_tokens=16)
            spent += r.usage.total_tokens
    assert 0 < spent <= KEY_BUDGET
    assert "total_tokens" in str(e.value) and "resets at" in str(e.value)
    assert e.value.response.headers["retry-after"]
    ok = await oa(f"{url}/keyed/v1", "sk-other").chat.completions.create(model="greedy", messages=Q, max_tokens=4)
    assert ok.usage.total_tokens > 0


async def test_disconnect_mid_stream_aborts_the_engine_request(served: Any, vllm_engine: Any) -> None:
    url, _ = served
    for model in ("passthrough", "sc"):
        stream = await oa(f"{url}/v1").chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Write a long story about a cat."}],
            max_tokens=400, stream=True)
        async for _ in stream:
            break
        await asyncio.sleep(0.3)
        assert vllm_engine.num_unfinished_requests() > 0
        await stream.close()
        t0 = time.monotonic()
        while vllm_engine.num_unfinished_requests() and time.monotonic() - t0 < 1.0:
            await asyncio.sleep(0.02)
        assert vllm_engine.num_unfinished_requests() == 0, model


async def test_64_concurrent_clients(served: Any) -> None:
    url, app = served
    c = oa(f"{url}/v1")
    rs = await asyncio.gather(*(c.chat.completions.create(
        model="passthrough", messages=[{"role": "user", "content": f"Say the number {i}."}], max_tokens=6,
        temperature=0) for i in range(64)))
    assert all(r.choices[0].message.content is not None and r.usage.completion_tokens > 0 for r in rs)
    assert app.state.server.gate.running == 0


async def test_bad_requests_get_openai_errors_naming_the_problem(served: Any) -> None:
    import openai

    url, _ = served
    c = oa(f"{url}/v1")
    with pytest.raises(openai.BadRequestError) as e:
        await c.chat.completions.create(model="no-such-model", messages=Q)
    assert e.value.body["param"] == "model" and "no-such-model" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        await c.chat.completions.create(model="sc", messages=Q, extra_body={"ttc": {"budget": {"total_tokens": -1}}})
    assert e.value.body["param"] == "ttc.budget.total_tokens"
    with pytest.raises(openai.APIStatusError) as e:
        await c.chat.completions.create(model="sc", messages=[{"role": "user", "content": "x " * 60_000}])
    assert e.value.status_code == 413
    with pytest.raises(openai.AuthenticationError):
        await oa(f"{url}/keyed/v1", "wrong").chat.completions.create(model="greedy", messages=Q)
    async with httpx.AsyncClient() as h:
        r = await h.post(f"{url}/v1/chat/completions", content=b'{"model": "sc",', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]


TOOLS = [{"type": "function", "function": {"name": "calculator", "description": "Evaluate an arithmetic expression",
                                           "parameters": {"type": "object", "properties": {
                                               "expression": {"type": "string"}}, "required": ["expression"]}}}]


async def test_tool_calls_with_a_named_tool_choice(served: Any, vllm_engine: Any) -> None:
    if not getattr(vllm_engine.capabilities, "tools", False):
        pytest.skip("the in-process vLLM engine does not take tools in this build")
    url, _ = served
    r = await oa(f"{url}/v1").chat.completions.create(
        model="majority", messages=[{"role": "user", "content": "Use the calculator: what is 17 * 23?"}],
        tools=TOOLS, tool_choice={"type": "function", "function": {"name": "calculator"}}, max_tokens=48)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls" and ch.message.tool_calls[0].function.name == "calculator"
    assert r.usage.completion_tokens > 0 and r.model_extra["ttc"]["samples"] == 3


def test_the_serve_command_fronts_an_upstream_server(vllm_server: Any) -> None:
    from openai import OpenAI

    from ttc.engines.vllm_server import free_port

    port = free_port()
    exe = Path(sys.executable).parent / "ttc"
    proc = subprocess.Popen([str(exe), "serve", "--upstream", vllm_server.base_url, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "ttc serve did not come up"
            time.sleep(0.2)
        c = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        r = c.chat.completions.create(model="passthrough", messages=Q, max_tokens=8, temperature=0)
        direct = OpenAI(base_url=vllm_server.base_url, api_key="none").chat.completions.create(
            model="smollm2", messages=Q, max_tokens=8, temperature=0)
        assert r.choices[0].message.content == direct.choices[0].message.content
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (direct.usage.prompt_tokens,
                                                                     direct.usage.completion_tokens)
        models = [m.id for m in c.models.list()]
        assert models == ["passthrough", "greedy", "sc", "majority"]
        assert json.loads(httpx.get(f"http://127.0.0.1:{port}/health").text)["engine"] == "openai"
    finally:
        proc.terminate()
        proc.wait(15)
