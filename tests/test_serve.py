"""``ttc serve`` on the scripted engine: every error path, budgets per request and per key,
usage, streaming, disconnect cancellation, the queue and the metrics (fast; the real model
is in ``tests/test_serve_real.py``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from ttc import registry
from ttc.budget import Budget
from ttc.engine import EngineError
from ttc.engines.scripted import ScriptedEngine
from ttc.serve import Catalog, ServeLimits, create_app
from ttc.serve.limits import KeyBudgets
from ttc.types import Generation, GenerationResult, Prompt, ToolCall, Usage

Q = [{"role": "user", "content": "What is 2+2?"}]


def answers(texts: list[str]) -> ScriptedEngine:
    return ScriptedEngine(texts)


def client(app: Any, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ttc", headers=headers)


async def post(app: Any, body: Any, path: str = "/v1/chat/completions", **headers: str) -> httpx.Response:
    async with client(app, **headers) as c:
        if isinstance(body, (bytes, str)):
            return await c.post(path, content=body, headers={"content-type": "application/json"})
        return await c.post(path, json=body)


def error(r: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if param is not None:
        assert err["param"] == param, err
        assert param.split(".")[-1].split("[")[0] in err["message"], err
    return err


# -- happy paths -------------------------------------------------------------------------------
async def test_models_lists_passthrough_and_the_configured_strategies() -> None:
    app = create_app(answers(["4"]))
    async with client(app) as c:
        r = await c.get("/v1/models")
    ids = [m["id"] for m in r.json()["data"]]
    assert ids == ["passthrough", "greedy", "sc", "majority"]
    assert r.json()["data"][2]["ttc"]["name"] == "self_consistency"


async def test_the_whole_conversation_reaches_the_engine() -> None:
    eng = answers(["The answer is 4"])
    app = create_app(eng)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"}, {"role": "developer", "content": "Check it."},
            {"role": "user", "content": [{"type": "text", "text": "Sure? "}, {"type": "text", "text": "Again."}]}]
    r = await post(app, {"model": "greedy", "messages": msgs})
    assert r.status_code == 200, r.text
    sent = eng.prompts[-1].messages
    assert [(m.role, m.content) for m in sent] == [("system", "Be brief."), ("user", "2+2?"), ("assistant", "4"),
                                                   ("system", "Check it."), ("user", "Sure? Again.")]


async def test_usage_is_the_metered_total_and_equals_the_library_run() -> None:
    texts = ["The answer is 4", "The answer is 5", "The answer is 4", "The answer is 4"]
    app = create_app(answers(texts))
    r = await post(app, {"model": "sc", "messages": Q, "seed": 7})
    body = r.json()
    lib = await registry.build_from_spec("sc:rule=beta,max=8").run(Prompt.of(Q), answers(texts), seed=7)
    assert body["ttc"]["answer"] == lib.answer == "4"
    assert body["ttc"]["samples"] == len(lib.samples) > 1
    u = body["usage"]
    assert (u["prompt_tokens"], u["completion_tokens"]) == (lib.usage.prompt_tokens, lib.usage.completion_tokens)
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] > 0
    assert body["ttc"]["usage"]["calls"] == lib.usage.calls
    assert body["ttc"]["usage_by_kind"]["generate"]["completion_tokens"] == u["completion_tokens"]
    assert body["choices"][0]["message"]["content"] == "The answer is 4"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["ttc"]["stop_reason"] == lib.stop_reason


async def test_return_samples_lists_every_sample_with_its_vote() -> None:
    app = create_app(answers(["The answer is 4", "The answer is 5"]))
    r = await post(app, {"model": "majority", "messages": Q, "ttc": {"return_samples": True}})
    samples = r.json()["ttc"]["sample_list"]
    assert len(samples) == 4 and {s["answer"] for s in samples} == {"4", "5"}
    assert all({"text", "score", "weight", "num_tokens"} <= set(s) for s in samples)


async def test_n_gives_the_best_distinct_answers_with_confidences() -> None:
    app = create_app(answers(["The answer is 4", "The answer is 5", "The answer is 4", "The answer is 6"]))
    r = await post(app, {"model": "majority", "messages": Q, "n": 3})
    ch = r.json()["choices"]
    assert [c["ttc"]["answer"] for c in ch] == ["4", "5", "6"] or [c["ttc"]["answer"] for c in ch][0] == "4"
    assert len({c["ttc"]["answer"] for c in ch}) == len(ch) == 3
    assert ch[0]["ttc"]["confidence"] == pytest.approx(0.5)
    assert sum(c["ttc"]["confidence"] for c in ch) == pytest.approx(1.0)
    r = await post(app, {"model": "passthrough", "messages": Q, "n": 2, "max_tokens": 8})
    assert len(r.json()["choices"]) == 2 and r.json()["usage"]["completion_tokens"] > 0
    error(await post(app, {"model": "sc", "messages": Q, "n": 9}), 400, "n")


async def test_completions_send_raw_text() -> None:
    eng = answers(["four"])
    app = create_app(eng)
    r = await post(app, {"model": "passthrough", "prompt": "2+2=", "max_tokens": 4}, "/v1/completions")
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "four"
    assert r.json()["object"] == "text_completion"
    assert eng.prompts[-1].text == "2+2="


async def test_request_sampling_fields_reach_the_strategy_params() -> None:
    eng = answers(["one two three four five six"])
    app = create_app(eng)
    r = await post(app, {"model": "sc", "messages": Q, "max_tokens": 2, "stop": ["five"]})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "one two"
    assert r.json()["choices"][0]["finish_reason"] == "length"
    r = await post(app, {"model": "passthrough", "messages": Q, "stop": "three"})
    assert r.json()["choices"][0]["message"]["content"] == "one two "


async def test_adhoc_specs_only_when_allowed() -> None:
    eng = answers(["The answer is 4"])
    error(await post(create_app(eng), {"model": "x", "messages": Q, "ttc": {"strategy": "majority:n=2"}}), 400,
          "ttc.strategy")
    app = create_app(eng, allow_specs=True)
    r = await post(app, {"model": "x", "messages": Q, "ttc": {"strategy": "majority:n=2"}})
    assert r.status_code == 200 and r.json()["ttc"]["samples"] == 2
    err = error(await post(app, {"model": "x", "messages": Q, "ttc": {"strategy": "sc:rule=nope"}}), 400,
                "ttc.strategy")
    assert "nope" in err["message"]


async def test_config_file_names_the_models(tmp_path: Any) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("vote4:\n  strategy: majority\n  n: 4\n")
    app = create_app(answers(["The answer is 4"]), Catalog.from_config(str(f)))
    async with client(app) as c:
        assert [m["id"] for m in (await c.get("/v1/models")).json()["data"]] == ["passthrough", "vote4"]
    r = await post(app, {"model": "vote4", "messages": Q})
    assert r.json()["ttc"]["samples"] == 4
    error(await post(app, {"model": "sc", "messages": Q}), 400, "model")


# -- bad requests ------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "param"), [
    ({"model": "nope", "messages": Q}, "model"),
    ({"messages": Q}, "model"),
    ({"model": "sc"}, "messages"),
    ({"model": "sc", "messages": []}, "messages"),
    ({"model": "sc", "messages": Q, "temperature": 3}, "temperature"),
    ({"model": "sc", "messages": Q, "colour": "red"}, "colour"),
    ({"model": "sc", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"model": "sc", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]},
     "messages[0].content[0]"),
    ({"model": "sc", "messages": Q, "logprobs": True}, "logprobs"),
    ({"model": "sc", "messages": Q, "presence_penalty": 0.5}, "presence_penalty"),
    ({"model": "sc", "messages": Q, "max_tokens": 100000}, "max_tokens"),
    ({"model": "sc", "messages": Q, "max_tokens": 0}, "max_tokens"),
    ({"model": "sc", "messages": Q, "ttc": {"budget": {"total_tokens": -5}}}, "ttc.budget.total_tokens"),
    ({"model": "sc", "messages": Q, "ttc": {"budget": {"dollars": 5}}}, "ttc.budget.dollars"),
    ({"model": "sc", "messages": Q, "ttc": {"colour": 1}}, "ttc.colour"),
    ({"model": "sc", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]},
     "messages"),
    ({"model": "sc", "messages": Q, "tools": [{"type": "function", "function": {"name": "bad name!"}}]},
     "tools[0].function.name"),
    ({"model": "sc", "messages": Q, "tool_choice": {"type": "function", "function": {"name": "calc"}}},
     "tool_choice"),
    ({"model": "passthrough", "messages": Q, "n": 2, "stream": True}, "n"),
])
async def test_bad_requests_are_400s_naming_the_field(body: dict[str, Any], param: str) -> None:
    error(await post(create_app(answers(["4"])), body), 400, param)


async def test_malformed_json_oversized_body_and_wrong_paths() -> None:
    app = create_app(answers(["4"]), limits=ServeLimits(max_body_bytes=2000, max_messages=3))
    err = error(await post(app, b'{"model": "sc", "messages": [}'), 400)
    assert err["code"] == "invalid_json" and "malformed JSON" in err["message"]
    error(await post(app, b"[1, 2]"), 400)
    err = error(await post(app, {"model": "sc", "messages": [{"role": "user", "content": "x" * 5000}]}), 413)
    assert "2000" in err["message"]
    error(await post(app, {"model": "sc", "messages": Q * 4}), 400, "messages")
    async with client(app) as c:
        r = await c.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"


async def test_api_keys_are_required_when_set() -> None:
    app = create_app(answers(["4"]), api_keys=["sk-good"])
    err = error(await post(app, {"model": "greedy", "messages": Q}), 401)
    assert "Authorization: Bearer" in err["message"] and err["code"] == "invalid_api_key"
    error(await post(app, {"model": "greedy", "messages": Q}, authorization="Bearer sk-bad"), 401)
    r = await post(app, {"model": "greedy", "messages": Q}, authorization="Bearer sk-good")
    assert r.status_code == 200
    async with client(app) as c:
        assert (await c.get("/v1/models")).status_code == 401
        assert (await c.get("/metrics")).status_code == 401
        r = await c.get("/metrics", headers={"authorization": "Bearer sk-good"})
        assert r.status_code == 200 and "ttc_serve_requests_total" in r.text
        assert (await c.get("/health")).status_code == 200  # liveness probes need no key


# -- budgets -----------------------------------------------------------------------------------
async def test_request_budget_is_enforced_exactly() -> None:
    eng = answers(["a b c d e f g h"])
    app = create_app(eng)
    r = await post(app, {"model": "sc", "messages": Q, "max_tokens": 8, "ttc": {"budget": {"completion_tokens": 20}}})
    body = r.json()
    assert r.status_code == 200 and body["ttc"]["stop_reason"] == "budget"
    assert body["ttc"]["budget_detail"] == "completion_tokens"
    assert 0 < body["usage"]["completion_tokens"] <= 20 and body["ttc"]["samples"] == 2
    # the same through the header
    r = await post(app, {"model": "sc", "messages": Q, "max_tokens": 8}, **{"x-ttc-budget": "completion_tokens=20"})
    assert r.json()["usage"]["completion_tokens"] == 16
    error(await post(app, {"model": "sc", "messages": Q}, **{"x-ttc-budget": "calls=two"}), 400, "X-TTC-Budget.calls")
    error(await post(app, {"model": "sc", "messages": Q, "ttc": {"budget": {"calls": 3}}}, **{"x-ttc-budget": "calls=2"}),
          400, "ttc.budget")
    # a budget that cannot afford one call is refused before anything is sent
    calls = eng.calls
    err = error(await post(app, {"model": "greedy", "messages": Q, "ttc": {"budget": {"total_tokens": 10}}}), 400,
                "ttc.budget.total_tokens")
    assert "cannot afford one call" in err["message"] and eng.calls == calls


async def test_server_caps_the_per_request_budget() -> None:
    app = create_app(answers(["a b"]), limits=ServeLimits(max_request_budget=Budget(total_tokens=500)))
    error(await post(app, {"model": "sc", "messages": Q, "ttc": {"budget": {"total_tokens": 501}}}), 400,
          "ttc.budget.total_tokens")
    r = await post(app, {"model": "sc", "messages": Q, "max_tokens": 4})
    assert r.json()["usage"]["total_tokens"] <= 500


async def test_key_budget_holds_across_requests_and_renews() -> None:
    now = [1_000_000.0]
    eng = answers(["a b c d"])
    app = create_app(eng, api_keys=["k1", "k2"], key_budget=Budget(total_tokens=60), key_budget_period=3600)
    keys: KeyBudgets = app.state.server.keys
    keys.clock = lambda: now[0]
    spent, statuses = 0, []
    for _ in range(8):
        r = await post(app, {"model": "greedy", "messages": Q, "max_tokens": 4}, authorization="Bearer k1")
        statuses.append(r.status_code)
        if r.status_code == 200:
            spent += r.json()["usage"]["total_tokens"]
    assert 200 in statuses and statuses[-1] == 429
    assert 0 < spent <= 60
    err = r.json()["error"]
    assert err["param"] == "key_budget.total_tokens" and "resets at" in err["message"]
    assert r.headers["retry-after"] == "3600"
    # another key has its own meter
    assert (await post(app, {"model": "greedy", "messages": Q, "max_tokens": 4},
                       authorization="Bearer k2")).status_code == 200
    now[0] += 3601
    assert (await post(app, {"model": "greedy", "messages": Q, "max_tokens": 4},
                       authorization="Bearer k1")).status_code == 200
    async with client(app) as c:
        text = (await c.get("/metrics", headers={"authorization": "Bearer k2"})).text
    assert 'ttc_serve_budget_refusals_total{limit="total_tokens",scope="key"}' in text


# -- engine errors -----------------------------------------------------------------------------
class FailingEngine(ScriptedEngine):
    """Bills a call, then fails it for good."""

    async def _generate(self, prompt: Prompt, params: Any, billing: Any) -> GenerationResult:
        billing.bill(Usage(prompt_tokens=9, calls=1))
        raise EngineError("upstream said 500 twice", status=500)


async def test_engine_errors_are_502_with_the_usage_they_cost() -> None:
    r = await post(create_app(FailingEngine(["x"])), {"model": "greedy", "messages": Q})
    err = error(r, 502)
    assert "upstream said 500" in err["message"] and err["code"] == "engine_error"
    assert r.json()["usage"]["prompt_tokens"] == 9 and r.json()["ttc"]["stop_reason"] == "engine_error"


# -- tool calls --------------------------------------------------------------------------------
class ToolEngine(ScriptedEngine):
    """Answers every call with tool calls (arguments varying by sample)."""

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self.capabilities = self.capabilities.model_copy(update={"tools": True})

    async def _generate(self, prompt: Prompt, params: Any, billing: Any) -> GenerationResult:
        self.prompts.append(prompt)
        gens = []
        for _ in range(params.n):
            i = self.samples_served
            self.samples_served += 1
            args = '{"expression": "6*7"}' if i % 3 else '{"expression": "6+7"}'
            gens.append(Generation(text="", num_tokens=5, tool_calls=[ToolCall(id=f"c{i}", name="calc",
                                                                                arguments=args)]))
        u = Usage(prompt_tokens=10, completion_tokens=5 * params.n, calls=1, generations=params.n)
        billing.bill(u)
        return GenerationResult(generations=gens, usage=u)


TOOLS = [{"type": "function", "function": {"name": "calc", "description": "evaluate arithmetic",
                                           "parameters": {"type": "object",
                                                          "properties": {"expression": {"type": "string"}}}}}]


async def test_tools_on_an_engine_without_them_are_refused_naming_tools() -> None:
    eng = answers(["4"])
    eng.capabilities = eng.capabilities.model_copy(update={"tools": False})
    r = await post(create_app(eng), {"model": "greedy", "messages": Q, "tools": TOOLS})
    assert "does not take tools" in error(r, 400, "tools")["message"]


async def test_tool_calls_reach_the_engine_and_come_back_in_the_openai_shape() -> None:
    eng = ToolEngine(["x"])
    app = create_app(eng)
    msgs = [*Q, {"role": "assistant", "content": None,
                 "tool_calls": [{"id": "c0", "type": "function", "function": {"name": "calc", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c0", "content": "4"}, {"role": "user", "content": "and 6*7?"}]
    r = await post(app, {"model": "majority", "messages": msgs, "tools": TOOLS, "tool_choice": "required"})
    assert r.status_code == 200, r.text
    sent = eng.prompts[-1]
    assert sent.tools == TOOLS and sent.tool_choice == "required"
    assert sent.messages[1].tool_calls[0].name == "calc" and sent.messages[2].tool_call_id == "c0"
    ch = r.json()["choices"][0]
    assert ch["finish_reason"] == "tool_calls"
    call = ch["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "calc"
    assert json.loads(call["function"]["arguments"]) in ({"expression": "6*7"}, {"expression": "6+7"})
    assert call["id"] == f"c{ch['ttc']['sample']}"


# -- streaming ---------------------------------------------------------------------------------
def events(text: str) -> list[Any]:
    out = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[6:]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_passthrough_streams_token_by_token_with_usage_last() -> None:
    app = create_app(answers(["one two three four"]))
    r = await post(app, {"model": "passthrough", "messages": Q, "stream": True,
                         "stream_options": {"include_usage": True}})
    ev = events(r.text)
    assert ev[-1] == "[DONE]"
    pieces = [e["choices"][0]["delta"].get("content") for e in ev[1:-1] if e["choices"]]
    assert [p for p in pieces if p] == ["one", " two", " three", " four"]
    usage = ev[-2]["usage"]
    assert ev[-2]["choices"] == [] and usage["completion_tokens"] == 4 and usage["prompt_tokens"] > 0
    assert ev[-3]["choices"][0]["finish_reason"] == "stop" and ev[-3]["ttc"]["usage"]["completion_tokens"] == 4


async def test_sampling_strategies_keep_alive_then_stream_the_chosen_text() -> None:
    eng = ScriptedEngine(["The answer is 4"], delay=0.15)
    app = create_app(eng, keepalive=0.05)
    r = await post(app, {"model": "sc", "messages": Q, "stream": True})
    assert ": keep-alive" in r.text
    ev = events(r.text)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in ev[:-1] if e["choices"])
    assert text == "The answer is 4"
    assert ev[-2]["ttc"]["answer"] == "4" and ev[-2]["ttc"]["samples"] >= 4
    r = await post(app, {"model": "sc", "messages": Q, "stream": True, "ttc": {"progress": True}})
    assert "event: ttc.progress" in r.text


async def test_budget_and_engine_errors_inside_a_stream() -> None:
    r = await post(create_app(FailingEngine(["x"])), {"model": "sc", "messages": Q, "stream": True})
    ev = events(r.text)
    assert ev[-1] == "[DONE]" and "upstream said 500" in ev[-2]["error"]["message"]


# -- cancellation, queue, concurrency, metrics ---------------------------------------------------
async def asgi(app: Any, body: dict[str, Any], *, disconnect_after: float) -> list[dict[str, Any]]:
    """Drive the app as a server would, with a client that goes away after ``disconnect_after`` s."""
    raw = json.dumps(body).encode()
    sent: list[dict[str, Any]] = []
    first = True
    loop = asyncio.get_running_loop()
    gone = loop.time() + disconnect_after

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": raw, "more_body": False}
        if loop.time() < gone:  # as uvicorn: wait for news; once gone, answer without waiting
            await asyncio.sleep(gone - loop.time())
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]}
    await asyncio.wait_for(app(scope, receive, send), 10)
    return sent


async def wait_idle(eng: ScriptedEngine, within: float = 1.0) -> float:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while eng.in_flight and loop.time() - t0 < within:
        await asyncio.sleep(0.01)
    return loop.time() - t0


@pytest.mark.parametrize(("model", "stream"), [("passthrough", True), ("sc", True), ("sc", False)])
async def test_a_client_that_disconnects_cancels_every_engine_request(model: str, stream: bool) -> None:
    eng = ScriptedEngine(["w " * 200], token_delay=0.02)
    app = create_app(eng, keepalive=0.05, disconnect_poll=0.05)
    await asgi(app, {"model": model, "messages": Q, "stream": stream, "max_tokens": 200}, disconnect_after=0.3)
    assert eng.max_in_flight >= 1
    assert await wait_idle(eng) < 1.0 and eng.in_flight == 0
    assert eng.aborted >= 1
    assert app.state.server.gate.running == 0
    async with client(app) as c:
        assert 'status="499"' in (await c.get("/metrics")).text


async def test_the_queue_is_bounded_with_retry_after() -> None:
    eng = ScriptedEngine(["The answer is 4"], delay=0.3)
    app = create_app(eng, limits=ServeLimits(max_concurrent=1, max_queue=1))
    async with client(app) as c:
        rs = await asyncio.gather(*(c.post("/v1/chat/completions", json={"model": "greedy", "messages": Q})
                                    for _ in range(4)))
    codes = sorted(r.status_code for r in rs)
    assert codes == [200, 200, 503, 503]
    busy = next(r for r in rs if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "server_busy"
    assert eng.max_in_flight == 1


async def test_one_strategy_instance_serves_concurrent_requests_without_crosstalk() -> None:
    eng = ScriptedEngine(lambda p, i, rng: f"The answer is {p.question.split()[-1]}", delay=0.01)
    app = create_app(eng)
    async with client(app) as c:
        rs = await asyncio.gather(*(c.post("/v1/chat/completions", json={
            "model": "sc", "messages": [{"role": "user", "content": f"echo {k}"}]}) for k in range(24)))
    assert [r.json()["ttc"]["answer"] for r in rs] == [str(k) for k in range(24)]
    assert eng.max_in_flight > 1


async def test_metrics_count_requests_tokens_samples_and_stops() -> None:
    app = create_app(answers(["The answer is 4"]))
    await post(app, {"model": "sc", "messages": Q})
    await post(app, {"model": "nope", "messages": Q})
    async with client(app) as c:
        r = await c.get("/metrics")
    text = r.text
    assert r.headers["content-type"].startswith("text/plain")
    assert 'ttc_serve_requests_total{endpoint="chat",model="sc",status="200"} 1.0' in text
    assert 'ttc_serve_requests_total{endpoint="chat",model="unknown",status="400"} 1.0' in text
    assert 'ttc_serve_tokens_total{kind="generate",model="sc",type="completion"}' in text
    assert 'ttc_serve_samples_total{model="sc"}' in text and "ttc_serve_stop_reasons_total" in text
    assert "ttc_serve_request_seconds_bucket" in text and "ttc_serve_in_flight_requests 0.0" in text
    # two apps in one process keep their own counts
    other = create_app(answers(["4"]))
    async with client(other) as c:
        assert 'model="sc"' not in (await c.get("/metrics")).text


# -- the command line ---------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "message"), [
    (["--host", "0.0.0.0"], "--api-key"),
    (["--engine", "openai"], "--upstream"),
    (["--engine", "tgi"], "--engine"),
    (["--model", "/no/such/dir"], "--model"),
    (["--key-budget", "dollars=5"], "dollars"),
    (["--config", "/no/such.yaml"], "--config"),
])
def test_serve_command_refuses_bad_options_before_starting(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from ttc.bench.cli import app

    r = CliRunner().invoke(app, ["serve", *args])
    assert r.exit_code == 2 and message in r.output


async def test_a_key_budget_without_keys_caps_every_caller_together() -> None:
    app = create_app(answers(["a b c d"]), key_budget=Budget(calls=3))
    codes = [(await post(app, {"model": "greedy", "messages": Q, "max_tokens": 4})).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


def _call(args: str) -> str:
    return f'<tool_call>{{"name": "calc", "arguments": {args}}}</tool_call>'


async def test_tool_call_voting_returns_the_agreed_call_and_the_runner_up() -> None:
    eng = ScriptedEngine([_call('{"expression": "6*7"}'), _call('{"expression": "6+7"}'),
                          _call('{"expression":"6*7"}'), _call('{ "expression" : "6*7" }')])
    app = create_app(eng)
    body = {"model": "majority", "messages": Q, "tools": TOOLS, "tool_choice": "required", "n": 2}
    r = await post(app, body)
    assert r.status_code == 200, r.text
    first, second = r.json()["choices"]
    assert first["finish_reason"] == second["finish_reason"] == "tool_calls"
    args = [json.loads(c["message"]["tool_calls"][0]["function"]["arguments"]) for c in (first, second)]
    assert args == [{"expression": "6*7"}, {"expression": "6+7"}]  # three spellings of one call, one vote
    assert first["ttc"]["confidence"] == pytest.approx(0.75)
    r = await post(app, {**body, "n": 1, "stream": True})
    ev = events(r.text)
    last = next(e for e in reversed(ev[:-1]) if e.get("choices"))
    assert last["choices"][0]["finish_reason"] == "tool_calls"
    assert last["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "calc"


async def test_serving_runs_the_app_on_this_loop_and_stops_it() -> None:
    """``ttc.serve.serving``: the app answers on a loopback port while the block runs, and the
    port is closed after it."""
    from ttc.serve import serving

    app = create_app(ScriptedEngine(["The answer is 4"]), {"greedy": registry.build_from_spec("greedy")})
    async with serving(app) as url:
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/health")).status_code == 200
            r = await client.post("/v1/chat/completions", json={
                "model": "greedy", "messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 8})
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "The answer is 4"
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=url) as client:
            await client.get("/health")
