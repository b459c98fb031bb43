"""OpenAIEngine's direct requests (``http_backend="direct"``, the default with aiohttp):
the same bytes on the wire and the same errors as the SDK's own request path, timeouts
that close the connection, refused connections, credentials."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from ttc.engine import EngineError
from ttc.engines.openai_engine import OpenAIEngine
from ttc.engines.openai_transport import ContextLengthExceeded
from ttc.testing.fault_server import FaultConfig, FaultServer
from ttc.types import Prompt, SamplingParams

Q = Prompt.of("What is 2 + 2?")
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, "max_attempts": 3}
REPLY = {"id": "x", "object": "chat.completion", "model": "m",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}


@asynccontextmanager
async def recording_server(replies: list[tuple[int, Any, dict[str, str]]]) -> AsyncIterator[tuple[str, list]]:
    """A server on 127.0.0.1 answering POSTs with ``replies`` in turn (status, JSON body,
    headers; the last repeats) and recording (path, headers, body bytes) of each."""
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, dict(request.headers), await request.read()))
        if request.path.endswith("/moved/chat/completions"):
            raise web.HTTPTemporaryRedirect("/v1/chat/completions")
        status, body, headers = replies[min(len(seen) - 1, len(replies) - 1)]
        return web.json_response(body, status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1", seen
    finally:
        await runner.cleanup()


_HOP = {"host", "content-length", "connection", "accept-encoding"}  # the HTTP library's own


def _headers(h: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in h.items() if k.lower() not in _HOP}


@pytest.mark.parametrize("sdk_headers", [False, True])
async def test_direct_requests_send_what_the_sdk_sends(sdk_headers: bool) -> None:
    sent = {}
    for backend in ("direct", "aiohttp"):
        async with recording_server([(200, REPLY, {})]) as (url, seen):
            url = url.replace("http://", "http://user:s3cret@")
            async with OpenAIEngine(url, "m", api_key="k", http_backend=backend, sdk_headers=sdk_headers) as eng:
                r = await eng.generate(Q, SamplingParams(max_tokens=8, temperature=0.5, seed=3))
                assert [g.text for g in r.generations] == ["4"] and r.usage.completion_tokens == 1
        (path, headers, body), = seen
        sent[backend] = (path, _headers(headers), json.loads(body))
    assert sent["direct"] == sent["aiohttp"]
    path, headers, body = sent["direct"]
    assert path == "/v1/chat/completions" and body["model"] == "m" and body["seed"] == 3
    assert headers["authorization"].startswith("Basic ")  # credentials from the URL, as basic auth
    assert headers["content-type"] == "application/json"
    assert any(k.startswith("x-stainless-lang") for k in headers) == sdk_headers


@pytest.mark.parametrize("status,body,kind,text", [
    (401, {"error": {"message": "Incorrect API key provided."}}, EngineError, "HTTP 401"),
    (404, {"error": {"message": "The model `m` does not exist."}}, EngineError, "does not exist"),
    (400, {"error": {"message": "This model's maximum context length is 2048 tokens."}}, ContextLengthExceeded,
     "context length exceeded"),
])
async def test_final_errors_read_the_same_as_through_the_sdk(status: int, body: dict, kind: type, text: str) -> None:
    msgs = {}
    for backend in ("direct", "aiohttp"):
        async with recording_server([(status, body, {})]) as (url, seen):
            async with OpenAIEngine(url, "m", http_backend=backend, **FAST) as eng:
                with pytest.raises(kind) as ei:
                    await eng.generate(Q, SamplingParams(max_tokens=8))
                assert len(seen) == 1, "a final error is not retried"
                msgs[backend] = (str(ei.value), ei.value.status)
    assert msgs["direct"] == msgs["aiohttp"]
    assert text in msgs["direct"][0] and msgs["direct"][1] == status


async def test_429_waits_its_retry_after_and_5xx_is_retried() -> None:
    replies = [(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.2"}),
               (503, {"error": {"message": "busy"}}, {}), (200, REPLY, {})]
    async with recording_server(replies) as (url, seen):
        async with OpenAIEngine(url, "m", http_backend="direct", **FAST) as eng:
            r = await eng.generate(Q, SamplingParams(max_tokens=8))
            assert r.generations[0].text == "4" and eng.attempts == 3 and len(seen) == 3


async def test_exhausted_retries_list_every_attempt() -> None:
    async with recording_server([(500, {"error": {"message": "boom"}}, {})]) as (url, _):
        async with OpenAIEngine(url, "m", http_backend="direct", **FAST) as eng:
            with pytest.raises(EngineError, match=r"failed after 3 attempt\(s\).*1\) 500 boom; 2\) 500 boom; 3\) 500"):
                await eng.generate(Q, SamplingParams(max_tokens=8))


async def test_redirects_are_followed_as_the_sdk_does() -> None:
    async with recording_server([(200, REPLY, {})]) as (url, seen):
        async with OpenAIEngine(url + "/moved", "m", http_backend="direct") as eng:
            r = await eng.generate(Q, SamplingParams(max_tokens=8))
        assert r.generations[0].text == "4"
        assert [p for p, _, _ in seen] == ["/v1/moved/chat/completions", "/v1/chat/completions"]


async def test_malformed_reply_is_retried() -> None:
    async with recording_server([(200, ["not", "an", "object"], {}), (200, REPLY, {})]) as (url, seen):
        async with OpenAIEngine(url, "m", http_backend="direct", **FAST) as eng:
            r = await eng.generate(Q, SamplingParams(max_tokens=8))
            assert r.generations[0].text == "4" and len(seen) == 2


async def test_timed_out_direct_attempt_is_aborted_before_the_retry() -> None:
    with FaultServer(FaultConfig(script=("slow",), slow_delay=3.0)) as srv:
        async with OpenAIEngine(srv.base_url, "fake", http_backend="direct", timeout=0.3, backoff_base=0.05) as eng:
            r = await eng.generate(Q, SamplingParams(max_tokens=8))
            assert r.generations[0].text == "The answer is 4."
            arrivals = [open_others for what, _, open_others in srv.stats.events if what == "arrive"]
            # Every attempt found no other open: each timed-out copy was closed before the next
            # arrived (a loaded machine can time the retry out too: three arrivals, all 0).
            assert len(arrivals) >= 2 and set(arrivals) == {0}, arrivals
            # before the 3 s slow reply would end: an attempt left open still fails this
            timed_out = len(arrivals) - 1
            assert await srv.wait_for_abandoned(timed_out) == timed_out, "the server saw each timed-out copy closed"


async def test_refused_connection_is_a_connection_error_and_secrets_stay_hidden() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    async with OpenAIEngine(f"http://alice:hunter2secret@127.0.0.1:{port}/v1", "m", http_backend="direct",
                            max_attempts=2, backoff_base=0.01) as eng:
        with pytest.raises(EngineError) as ei:
            await eng.generate(Q, SamplingParams(max_tokens=4))
    msg = str(ei.value)
    assert "connection error" in msg and "Refused" in msg and "timeout" not in msg, msg
    assert "hunter2secret" not in msg and "alice" not in msg


async def test_streams_still_go_through_the_sdk() -> None:
    with FaultServer() as srv:
        async with OpenAIEngine(srv.base_url, "fake", http_backend="direct") as eng:
            text = "".join([d.text async for d in eng.stream(Q, SamplingParams(max_tokens=8))])
            assert text == "The answer is 4."
            assert eng.http_backend == "direct"


def test_direct_is_the_default_with_aiohttp() -> None:
    assert OpenAIEngine("http://127.0.0.1:9/v1", "m").http_backend == "direct"
    with pytest.raises(ValueError, match="http_backend: 'direct', 'aiohttp' or 'httpx'"):
        OpenAIEngine("http://127.0.0.1:9/v1", "m", http_backend="curl")  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["direct", "aiohttp"])
async def test_the_place_taken_before_the_first_attempt_is_given_back(backend: str) -> None:
    """A call takes its place under the cap before building its first attempt; a call that
    fails or is cancelled before sending gives it back (cap 1: the next call still runs)."""
    from ttc.budget import BudgetExhausted
    from ttc.types import Usage

    class NoRoom:  # a hold that cannot be extended: the first attempt is never sent
        held = Usage()
        billed = Usage()

        def bill(self, usage: Usage) -> None:
            pass

        def extend(self, extra: Usage) -> None:
            raise BudgetExhausted("completion_tokens", extra.completion_tokens, 0)

    params = SamplingParams(max_tokens=8)
    with FaultServer() as srv:
        async with OpenAIEngine(srv.base_url, "fake", max_concurrency=1, http_backend=backend) as eng:
            with pytest.raises(BudgetExhausted):
                await eng.generate(Q, params, NoRoom())
            assert eng.attempts == 0
            r = await asyncio.wait_for(eng.generate(Q, params), 10)
            assert r.generations[0].text == "The answer is 4."

            gate = asyncio.Event()
            real = eng.count_prompt_tokens

            async def slow_count(prompt: Prompt) -> int:
                await gate.wait()  # holds the place, not sent yet
                return await real(prompt)

            eng.count_prompt_tokens = slow_count  # type: ignore[method-assign]
            waiting = asyncio.ensure_future(eng.generate(Q, params))
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            eng.count_prompt_tokens = real  # type: ignore[method-assign]
            r = await asyncio.wait_for(eng.generate(Q, params), 10)
            assert r.generations[0].text == "The answer is 4." and eng.attempts == 2
            assert eng.max_in_flight == 1 and eng.in_flight == 0
