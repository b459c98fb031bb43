"""OpenAIEngine against the fault-injecting OpenAI-compatible server (real HTTP, no mocks).

Each fault kind alone, then strategies through a 20% mixed fault rate: every sample
accounted for, metered usage == what the server billed, concurrency limit respected.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from ttc.budget import Budget, Meter
from ttc.context import RunContext
from ttc.engine import EngineError
from ttc.engines.openai_engine import ContextLengthExceeded, OpenAIEngine
from ttc.strategies.simple import BestOfN, Greedy
from ttc.testing.fault_server import FaultConfig, FaultServer
from ttc.types import Prompt, SamplingParams

FAST = {"timeout": 0.5, "backoff_base": 0.02, "backoff_max": 0.1}
Q = Prompt.of("What is 2 + 2?")


def billed(srv: FaultServer) -> tuple[int, int, int]:
    s = srv.stats
    return s.billed_prompt_tokens, s.billed_completion_tokens, s.billed_calls


def spent(m: Meter) -> tuple[int, int, int]:
    return m.spent.prompt_tokens, m.spent.completion_tokens, m.spent.calls


async def settle() -> None:
    """Let the server thread finish handlers of requests the client gave up on."""
    await asyncio.sleep(0.8)


@pytest.mark.parametrize("backend", ["direct", "aiohttp", "httpx"])
@pytest.mark.parametrize("kind", ["slow", "drop", "429", "500", "503", "malformed", "truncate"])
async def test_each_fault_is_retried_and_billed_once(kind: str, backend: str) -> None:
    with FaultServer(FaultConfig(script=(kind,), slow_delay=1.0, retry_after=0.3)) as srv:
        async with OpenAIEngine(srv.base_url, "fake", http_backend=backend, **FAST) as eng:
            assert eng.http_backend == backend
            ctx = RunContext(eng, Meter())
            t0 = time.monotonic()
            gens = await ctx.generate(Q, SamplingParams(n=3, max_tokens=16, logprobs=2))
            took = time.monotonic() - t0
            await settle()
            assert [g.text for g in gens] == ["The answer is 4."] * 3
            assert [g.num_tokens for g in gens] == [4, 4, 4]
            assert all(len(t.top) == 2 for g in gens for t in g.logprobs or [])
            assert eng.attempts == 2, "one failed attempt, then a successful retry"
            assert srv.stats.requests == 2
            assert srv.stats.faults == {kind: 1}
            p_srv = srv.stats.billed_prompt_tokens // srv.stats.billed_calls  # the server's count, per reply
            if kind in ("malformed", "truncate"):
                # the reply came but could not be read: the server ran the request and its
                # cost never arrived, so the attempt is charged its worst case
                bound = await eng.count_prompt_tokens(Q)
                assert spent(ctx.meter) == (p_srv + bound, 12 + 3 * 16, 2)
            else:
                assert spent(ctx.meter) == billed(srv) == (p_srv, 12, 1)
            if kind == "429":
                assert took >= 0.3, "Retry-After was honoured"


async def test_slow_answer_within_timeout_is_waited_for() -> None:
    with FaultServer(FaultConfig(script=("slow",), slow_delay=0.3)) as srv:
        async with OpenAIEngine(srv.base_url, "fake", timeout=2.0) as eng:
            r = await eng.generate(Q, SamplingParams(max_tokens=16))
            assert r.generations[0].text == "The answer is 4."
            assert eng.attempts == 1


async def test_attempts_run_out_with_clear_error() -> None:
    with FaultServer(FaultConfig(rate=1.0, kinds=("503",))) as srv:
        async with OpenAIEngine(srv.base_url, "fake", max_attempts=3, **FAST) as eng:
            m = Meter()
            with pytest.raises(EngineError, match=r"failed after 3 attempt\(s\).*503 injected 503") as ei:
                await RunContext(eng, m).generate(Q, SamplingParams(max_tokens=8))
            assert ei.value.retryable and ei.value.status == 503
            assert srv.stats.requests == 3
            assert spent(m) == (0, 0, 0) and m.remaining() == {}  # nothing billed, reservation released


async def test_401_fails_fast_without_retries() -> None:
    with FaultServer(FaultConfig(api_key="right")) as srv:
        async with OpenAIEngine(srv.base_url, "fake", api_key="wrong", **FAST) as eng:
            with pytest.raises(EngineError, match="HTTP 401.*Incorrect API key") as ei:
                await eng.generate(Q, SamplingParams(max_tokens=8))
            assert ei.value.status == 401 and not ei.value.retryable
            assert srv.stats.requests == 1


async def test_context_length_fails_fast_with_server_message() -> None:
    with FaultServer(FaultConfig(max_model_len=64)) as srv:
        async with OpenAIEngine(srv.base_url, "fake", **FAST) as eng:
            with pytest.raises(ContextLengthExceeded, match="maximum context length is 64"):
                await eng.generate(Q, SamplingParams(max_tokens=100))
            assert srv.stats.requests == 1


async def test_n_fallback_to_parallel_single_requests() -> None:
    with FaultServer(FaultConfig(reject_n=True)) as srv:
        async with OpenAIEngine(srv.base_url, "fake", **FAST) as eng:
            assert eng.capabilities.native_n
            m = Meter()
            gens = await RunContext(eng, m).generate(Q, SamplingParams(n=4, max_tokens=16))
            assert len(gens) == 4 and not eng.capabilities.native_n
            assert srv.stats.n_requested == [4, 1, 1, 1, 1]
            # the decision is remembered: no more n>1 requests
            await RunContext(eng, m).generate(Q, SamplingParams(n=3, max_tokens=16))
            assert srv.stats.n_requested[5:] == [1, 1, 1]
            assert spent(m) == billed(srv)
            w = await eng.worst_case(Q, SamplingParams(n=3))
            assert w.calls == 3


async def test_greedy_n_goes_as_single_requests() -> None:
    with FaultServer() as srv:
        async with OpenAIEngine(srv.base_url, "fake") as eng:
            r = await eng.generate(Q, SamplingParams(n=2, temperature=0.0, max_tokens=16))
            assert len(r.generations) == 2 and srv.stats.n_requested == [1, 1]
            assert eng.capabilities.native_n  # not a server limitation: nothing remembered


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_multi_endpoint_routes_around_dead_and_failing_endpoints() -> None:
    dead = f"http://127.0.0.1:{_closed_port()}/v1"
    with FaultServer() as good, FaultServer(FaultConfig(rate=1.0, kinds=("500",))) as bad:
        async with OpenAIEngine([dead, bad.base_url, good.base_url], "fake", cooldown=30.0, **FAST) as eng:
            m = Meter()
            ctx = RunContext(eng, m)
            for _ in range(12):
                gens = await ctx.generate(Q, SamplingParams(n=2, max_tokens=16))
                assert len(gens) == 2
            stats = {s["url"]: s for s in eng.endpoint_stats()}
            assert not stats[dead]["healthy"] and not stats[bad.base_url]["healthy"]
            assert stats[dead]["requests"] == 1 and stats[bad.base_url]["requests"] == 1, "each failed once, then skipped"
            assert good.stats.completed == 12
            assert spent(m) == billed(good)


async def test_multi_endpoint_spreads_load() -> None:
    with FaultServer(FaultConfig(latency=0.05)) as a, FaultServer(FaultConfig(latency=0.05)) as b:
        async with OpenAIEngine([a.base_url, b.base_url], "fake") as eng:
            await asyncio.gather(*[eng.generate(Q, SamplingParams(max_tokens=8)) for _ in range(40)])
            assert a.stats.requests + b.stats.requests == 40
            assert min(a.stats.requests, b.stats.requests) >= 15


async def test_concurrency_limit_is_respected_across_strategies() -> None:
    with FaultServer(FaultConfig(latency=0.05)) as srv:
        async with OpenAIEngine(srv.base_url, "fake", max_concurrency=5) as eng:
            greedy = Greedy(SamplingParams(max_tokens=16))
            results = await asyncio.gather(*[greedy.run(f"What is {i} + 2?", eng, seed=i) for i in range(30)])
            assert all(r.answer == "4" for r in results)
            assert srv.stats.max_in_flight == 5
            assert eng.max_in_flight == 5


@pytest.mark.parametrize("strategy", ["greedy", "best_of_n", "best_of_n_fallback"])
async def test_strategies_through_20pct_faults_account_for_everything(strategy: str) -> None:
    cfg = FaultConfig(rate=0.2, seed=7, slow_delay=1.0, retry_after=0.05, reject_n=strategy == "best_of_n_fallback")
    with FaultServer(cfg) as srv:
        async with OpenAIEngine(srv.base_url, "fake", max_concurrency=8, max_attempts=8, **FAST) as eng:
            n = 8
            strat = Greedy(SamplingParams(max_tokens=16)) if strategy == "greedy" else BestOfN(
                n=n, params=SamplingParams(temperature=0.8, max_tokens=16)
            )
            meters = [Meter(Budget(completion_tokens=10_000)) for _ in range(12)]
            results = await asyncio.gather(*[strat.run(Q, eng, m, seed=i) for i, m in enumerate(meters)])
            await settle()
            want = 1 if strategy == "greedy" else n
            for r in results:
                assert r.stop_reason == "done"
                assert len(r.samples) == want and r.answer == "4"
                assert sum(s.num_tokens for s in r.samples) == 4 * want <= r.usage.completion_tokens
            faults = sum(srv.stats.faults.values())
            assert faults >= 3, f"the fault rate was exercised ({srv.stats.faults})"
            total = (sum(m.spent.prompt_tokens for m in meters), sum(m.spent.completion_tokens for m in meters),
                     sum(m.spent.calls for m in meters))
            # what the server billed, plus the worst case of each reply that could not be read
            unread = srv.stats.faults.get("malformed", 0) + srv.stats.faults.get("truncate", 0)
            bound = await eng.count_prompt_tokens(Q)
            over = [t - b for t, b in zip(total, billed(srv))]
            assert 0 <= over[0] <= unread * bound * n and 0 <= over[1] <= unread * 16 * n
            assert 0 <= over[2] <= unread * n
            if not unread:
                assert total == billed(srv)
            assert eng.max_in_flight <= 8
            # the server also still counts slow requests the client timed out on and left
            assert srv.stats.max_in_flight <= 8 + srv.stats.faults.get("slow", 0)


# -- streaming -------------------------------------------------------------------------------


async def test_stream_full_and_usage() -> None:
    with FaultServer() as srv:
        async with OpenAIEngine(srv.base_url, "fake") as eng:
            m = Meter()
            ctx = RunContext(eng, m)
            async with ctx.stream(Q, SamplingParams(max_tokens=16, logprobs=3)) as deltas:
                got = [d async for d in deltas]
            assert "".join(d.text for d in got) == "The answer is 4."
            assert got[-1].finish_reason == "stop" and got[-1].usage is not None
            assert sum(d.num_tokens for d in got) == 4
            assert all(len(t.top) == 3 for d in got for t in d.logprobs or [])
            assert spent(m) == billed(srv) == (got[-1].usage.prompt_tokens, 4, 1)


async def test_stream_cancel_closes_the_request_and_bills_what_was_streamed() -> None:
    cfg = FaultConfig(token_delay=0.1, answers=(" ".join(["word"] * 50),))
    with FaultServer(cfg) as srv:
        async with OpenAIEngine(srv.base_url, "fake") as eng:
            m = Meter()
            async with RunContext(eng, m).stream(Q, SamplingParams(max_tokens=100)) as deltas:
                async for d in deltas:
                    if d.num_tokens and m.spent.calls == 0:
                        break
            await asyncio.sleep(0.5)
            assert srv.stats.in_flight == 0, "the server saw the disconnect"
            assert srv.stats.completed == 0
            assert 1 <= m.spent.completion_tokens <= 3
            assert m.spent.completion_tokens == srv.stats.billed_completion_tokens


async def test_stream_truncated_before_output_is_retried() -> None:
    cfg = FaultConfig(script=("500", "429"), retry_after=0.05)
    with FaultServer(cfg) as srv:
        async with OpenAIEngine(srv.base_url, "fake", **FAST) as eng:
            got = [d async for d in eng.stream(Q, SamplingParams(max_tokens=16))]
            assert "".join(d.text for d in got) == "The answer is 4."
            assert eng.attempts == 3


async def test_stream_truncated_mid_way_raises_and_bills_what_server_reported() -> None:
    with FaultServer(FaultConfig(script=("truncate",))) as srv:
        async with OpenAIEngine(srv.base_url, "fake", **FAST) as eng:
            m = Meter()
            text = ""
            with pytest.raises(EngineError, match="stream (truncated|broke)") as ei:
                async with RunContext(eng, m).stream(Q, SamplingParams(max_tokens=16)) as deltas:
                    async for d in deltas:
                        text += d.text
            assert ei.value.retryable
            assert text == "The answer"
            await settle()
            assert spent(m) == billed(srv) == (srv.stats.billed_prompt_tokens, 2, 1)


# -- options -----------------------------------------------------------------------------------


async def test_extras_pass_through_and_unknown_option_rejected() -> None:
    with FaultServer() as srv:
        async with OpenAIEngine(srv.base_url, "fake", extra_body_options=["guided_regex"]) as eng:
            extra = {"chat_template_kwargs": {"enable_thinking": False}, "reasoning_effort": "low", "top_k": 5,
                     "min_p": 0.1, "repetition_penalty": 1.1, "guided_regex": "x"}
            await eng.generate(Q, SamplingParams(max_tokens=8, extra=extra))
            body = srv.stats.bodies[-1]
            for k, v in extra.items():
                assert body[k] == v
            with pytest.raises(ValueError, match=r"unknown engine option\(s\) \['bogus'\]"):
                await eng.generate(Q, SamplingParams(extra={"bogus": 1}))


async def test_continuation_body_and_completions_for_text_prompts() -> None:
    with FaultServer() as srv:
        async with OpenAIEngine(srv.base_url, "fake") as eng:
            await eng.generate(Q.with_prefix("Let me think."), SamplingParams(max_tokens=8))
            body = srv.stats.bodies[-1]
            assert body["messages"][-1] == {"role": "assistant", "content": "Let me think."}
            assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
            r = await eng.generate(Prompt(text="2 + 2 ="), SamplingParams(max_tokens=8, logprobs=1))
            assert srv.stats.bodies[-1]["prompt"] == "2 + 2 =" and srv.stats.bodies[-1]["logprobs"] == 1
            assert r.generations[0].logprobs is not None and len(r.generations[0].logprobs) == 4


async def test_prompt_token_upper_bound_without_tokenizer() -> None:
    with FaultServer() as srv:
        async with OpenAIEngine(srv.base_url, "fake") as eng:
            n = await eng.count_prompt_tokens(Q)
            r = await eng.generate(Q, SamplingParams(max_tokens=8))
            assert n >= r.usage.prompt_tokens
            assert n == len(Q.question.encode()) + len(b"user") + 8 + eng.template_tokens


async def test_stream_completions_endpoint_with_logprobs() -> None:
    with FaultServer() as srv:
        async with OpenAIEngine(srv.base_url, "fake") as eng:
            m = Meter()
            async with RunContext(eng, m).stream(Prompt(text="2 + 2 ="), SamplingParams(max_tokens=3, logprobs=2)) as ds:
                got = [d async for d in ds]
            assert "".join(d.text for d in got) == "The answer is"
            assert got[-1].finish_reason == "length"
            assert [len(d.logprobs or []) for d in got] == [1, 1, 1]
            assert all(len(t.top) == 2 for d in got for t in d.logprobs or [])
            assert "prompt" in srv.stats.bodies[-1]
            assert spent(m) == billed(srv)


def test_http_backend_is_checked() -> None:
    with pytest.raises(ValueError, match="http_backend"):
        OpenAIEngine("http://127.0.0.1:9/v1", "m", http_backend="curl")  # type: ignore[arg-type]


def test_retry_after_header_forms() -> None:
    from email.utils import formatdate

    from ttc.engines.openai_transport import retry_after as _retry_after

    assert _retry_after({"retry-after": "2"}) == 2.0
    assert _retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert 3.0 <= (_retry_after({"retry-after": formatdate(time.time() + 5, usegmt=True)}) or 0) <= 5.0
    assert _retry_after({"retry-after": "soon"}) is None
    assert _retry_after({}) is None


async def test_server_without_usage_is_billed_our_count() -> None:
    with FaultServer(FaultConfig(report_usage=False)) as srv:
        async with OpenAIEngine(srv.base_url, "fake") as eng:
            m = Meter()
            gens = await RunContext(eng, m).generate(Q, SamplingParams(max_tokens=16, logprobs=0))
            assert gens[0].num_tokens == 4
            assert spent(m) == (await eng.count_prompt_tokens(Q), 4, 1)
            assert billed(srv) == (0, 0, 0)


def test_estimated_token_shares_add_up_and_never_exceed_max_tokens():
    """With n > 1 and no logprobs a server reports only the total; the engine shares it
    out by estimate, but no sample is ever given more than max_tokens."""
    from ttc.types import Usage

    eng = OpenAIEngine("http://127.0.0.1:9/v1", model="m")
    resp = {"choices": [
        {"index": 0, "message": {"content": "word " * 200}, "finish_reason": "length"},
        {"index": 1, "message": {"content": "ok"}, "finish_reason": "stop"},
    ]}
    gens = eng.wire.generations(resp, "chat", Usage(completion_tokens=40), 32)
    counts = [g.num_tokens for g in gens]
    assert sum(counts) == 40 and max(counts) <= 32, counts
