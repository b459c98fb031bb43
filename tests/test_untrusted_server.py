"""Budgets, deadlines and paid work against an untrusted OpenAI-compatible server.

Every test talks real HTTP to the fault-injecting server on 127.0.0.1
(:mod:`ttc.testing.fault_server`): replies with fewer choices than asked, usage that
lies or is missing, streams cut mid-way, requests that fail for good, slow answers,
refused connections. What must hold: every attempt is reserved (a retry that does not
fit stops the run with "budget"), usage never reaches the meter unchecked, deadlines
hold on streams, and nothing paid for is lost.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttc.budget import Budget, BudgetExhausted, Meter
from ttc.context import RunContext
from ttc.engine import EngineError, StreamBroken
from ttc.engines.openai_engine import OpenAIEngine
from ttc.strategies.deepconf import DeepConf
from ttc.strategies.early_exit import DynasorCoT
from ttc.strategies.self_consistency import SelfConsistency
from ttc.strategies.simple import BestOfN, Greedy
from ttc.strategies.stopping import FixedN
from ttc.testing.fault_server import HONEST_KINDS, LYING_KINDS, FaultConfig, FaultServer
from ttc.testing.tokens import whitespace_tokens as _tokens
from ttc.types import Prompt, SamplingParams

FAST = {"timeout": 2.0, "backoff_base": 0.01, "backoff_max": 0.05, "max_retry_after": 0.05}
Q = Prompt.of("What is 2 + 2?")
LONG = " ".join(f"step{i}" for i in range(40)) + " The answer is 4."
LONG5 = LONG.replace("is 4", "is 5")


def spent(m: Meter) -> tuple[int, int, int]:
    return m.spent.prompt_tokens, m.spent.completion_tokens, m.spent.calls


def billed(srv: FaultServer) -> tuple[int, int, int]:
    s = srv.stats
    return s.billed_prompt_tokens, s.billed_completion_tokens, s.billed_calls


async def settle() -> None:
    """Let the server thread finish the handlers of requests the client left."""
    await asyncio.sleep(0.3)


# -- item 3: every attempt is reserved -----------------------------------------------------------


async def test_short_reply_keeps_its_choices_and_asks_for_the_rest() -> None:
    with FaultServer(FaultConfig(script=("short",))) as srv:
        async with OpenAIEngine(srv.base_url, "fake", **FAST) as eng:
            m = Meter()
            gens = await RunContext(eng, m).generate(Q, SamplingParams(n=4, max_tokens=16))
            assert [g.text for g in gens] == ["The answer is 4."] * 4
            assert srv.stats.n_requested == [4, 2], "the retry asked only for the missing two"
            assert spent(m) == billed(srv) and m.spent.generations == 4


async def test_retry_that_does_not_fit_stops_on_budget_with_the_paid_samples() -> None:
    """BestOfN(4) on one call: a reply with 2 of 4 choices is billed (the call is spent),
    so its retry does not fit; the run stops on "budget" with the 2 samples it paid for."""
    with FaultServer(FaultConfig(rate=1.0, kinds=("short",))) as srv:
        async with OpenAIEngine(srv.base_url, "fake", **FAST) as eng:
            r = await BestOfN(4, params=SamplingParams(temperature=0.8, max_tokens=32)).run(
                Q, eng, Budget(completion_tokens=128, calls=1))
            assert r.stop_reason == "budget" and r.budget_detail == "calls"
            assert srv.stats.requests == 1, "the retry was never sent"
            assert len(r.samples) == 2 and all(s.meta.get("salvaged") for s in r.samples)
            assert r.answer == "4"
            assert (r.usage.calls, r.usage.completion_tokens) == (1, 8) == billed(srv)[1:][::-1]
            assert not r.overspent


async def test_short_replies_never_push_spending_past_the_budget() -> None:
    with FaultServer(FaultConfig(rate=1.0, kinds=("short",))) as srv:
        async with OpenAIEngine(srv.base_url, "fake", **FAST) as eng:
            budget = Budget(total_tokens=300)
            r = await BestOfN(4, params=SamplingParams(temperature=0.8, max_tokens=32)).run(Q, eng, budget)
            assert r.stop_reason in ("budget", "engine_error")
            assert r.usage.total_tokens <= 300
            assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.calls) == billed(srv)
            assert len(r.samples) == srv.stats.by_question[Q.question].samples


async def test_fallback_to_single_requests_is_reserved_first() -> None:
    """A server that refuses n: the n single requests need n calls; on a 1-call budget
    none is sent."""
    with FaultServer(FaultConfig(reject_n=True)) as srv:
        async with OpenAIEngine(srv.base_url, "fake", **FAST) as eng:
            r = await BestOfN(4, params=SamplingParams(temperature=0.8, max_tokens=16)).run(Q, eng, Budget(calls=1))
            assert r.stop_reason == "budget" and r.budget_detail == "calls"
            assert srv.stats.n_requested == [4], "no single request was sent"
            assert r.usage.calls == 0


# -- item 4: usage is validated ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lie_negative", "lie_huge"])
async def test_impossible_usage_never_reaches_the_meter(kind: str) -> None:
    with FaultServer(FaultConfig(script=(kind,))) as srv:
        async with OpenAIEngine(srv.base_url, "fake", **FAST) as eng:
            r = await BestOfN(4, params=SamplingParams(temperature=0.8, max_tokens=16)).run(
                Q, eng, Budget(completion_tokens=64))
            assert r.stop_reason == "engine_error"
            assert r.error is not None and "usage.completion_tokens" in r.error
            assert srv.stats.requests == 1, "a lying server is not asked again"
            # charged the request's worst case: never negative, never 1e30
            assert r.usage.completion_tokens == 64 and r.usage.prompt_tokens == await eng.count_prompt_tokens(Q)
            assert not r.overspent
            assert len(r.samples) == 4 and r.answer == "4", "the choices that came are kept"


async def test_server_ignoring_max_tokens_is_charged_and_overspent_recorded() -> None:
    with FaultServer(FaultConfig(script=("overbill",))) as srv:
        async with OpenAIEngine(srv.base_url, "fake", **FAST) as eng:
            r = await Greedy(SamplingParams(max_tokens=16)).run(Q, eng, Budget(completion_tokens=16))
            assert r.stop_reason == "engine_error"
            assert "usage.completion_tokens: 24 is more than the request's worst case 16" in (r.error or "")
            assert r.usage.completion_tokens == 24 == srv.stats.billed_completion_tokens
            assert r.overspent == {"completion_tokens": 8}
            assert len(r.samples) == 1 and r.samples[0].num_tokens <= 16


@pytest.mark.parametrize("kind", ["lie_negative", "lie_huge"])
async def test_stream_with_impossible_usage_fails_charged_its_worst_case(kind: str) -> None:
    with FaultServer(FaultConfig(script=(kind,), answers=(LONG,))) as srv:
        async with OpenAIEngine(srv.base_url, "fake", **FAST) as eng:
            m = Meter(Budget(completion_tokens=16))
            text = ""
            with pytest.raises(EngineError, match="usage.completion_tokens"):
                async with RunContext(eng, m).stream(Q, SamplingParams(max_tokens=16)) as deltas:
                    async for d in deltas:
                        text += d.text
            assert text == "", "the first chunk already lied: nothing was handed out"
            assert srv.stats.requests == 1
            assert m.spent.completion_tokens == 16 and not m.overspent


async def test_stream_past_max_tokens_breaks_keeping_its_text_and_records_overspent() -> None:
    with FaultServer(FaultConfig(script=("overbill",), answers=(LONG,))) as srv:
        async with OpenAIEngine(srv.base_url, "fake", **FAST) as eng:
            m = Meter(Budget(completion_tokens=16))
            text = ""
            with pytest.raises(StreamBroken, match="usage.completion_tokens: 17 is more than") as ei:
                async with RunContext(eng, m).stream(Q, SamplingParams(max_tokens=16)) as deltas:
                    async for d in deltas:
                        text += d.text
            assert not ei.value.retryable
            assert text == "".join(_tokens(" " + LONG)[:16]), "the 16 tokens it was allowed, handed out"
            assert m.spent.completion_tokens == 17 and m.overspent == {"completion_tokens": 1}


async def test_missing_usage_is_estimated_high_never_low() -> None:
    with FaultServer(FaultConfig(script=("no_usage",))) as srv:
        async with OpenAIEngine(srv.base_url, "fake", **FAST) as eng:
            m = Meter()
            gens = await RunContext(eng, m).generate(Q, SamplingParams(n=2, max_tokens=16))
            assert len(gens) == 2 and billed(srv) == (0, 0, 0)
            honest = await eng.generate(Q, SamplingParams(n=2, max_tokens=16))  # the server's own counts
            assert honest.usage.completion_tokens == 8
            assert m.spent.prompt_tokens >= honest.usage.prompt_tokens
            assert 8 <= m.spent.completion_tokens <= 32
            assert all(4 <= g.num_tokens <= 16 for g in gens)


# -- item 5: deadlines hold on streams -------------------------------------------------------------


async def test_stream_deadline_is_enforced_per_chunk() -> None:
    cfg = FaultConfig(token_delay=0.1, answers=(" ".join(["word"] * 60),))
    with FaultServer(cfg) as srv:
        async with OpenAIEngine(srv.base_url, "fake") as eng:
            m = Meter(Budget(wall_seconds=0.5))
            got = ""
            t0 = time.monotonic()
            with pytest.raises(BudgetExhausted, match="wall_seconds"):
                async with RunContext(eng, m).stream(Q, SamplingParams(max_tokens=100)) as deltas:
                    async for d in deltas:
                        got += d.text
            took = time.monotonic() - t0
            assert took < 0.5 + 1.0, took  # generous slack: a loaded machine
            assert got.startswith("word word")
            await settle()
            assert srv.stats.in_flight == 0, "the server saw the stream closed"
            assert m.spent.completion_tokens == srv.stats.billed_completion_tokens >= 2


@pytest.mark.parametrize("which", ["deepconf_online", "dynasor_stream"])
async def test_streaming_strategies_stop_at_the_deadline(which: str) -> None:
    cfg = FaultConfig(token_delay=0.05, answers=(LONG, LONG5))
    with FaultServer(cfg) as srv:
        async with OpenAIEngine(srv.base_url, "fake") as eng:
            if which == "deepconf_online":
                strat = DeepConf("online", n_init=2, max_traces=8, window=8,
                                 params=SamplingParams(temperature=0.8, max_tokens=60))
            else:
                strat = DynasorCoT("eager", mode="stream", max_tokens=60, probe="answer_is")
            t0 = time.monotonic()
            r = await strat.run(Q, eng, Budget(wall_seconds=0.5))
            took = time.monotonic() - t0
            assert took < 0.5 + 1.0, took  # generous slack: a loaded machine
            assert r.stop_reason == "budget" and r.budget_detail == "wall_seconds"
            await settle()
            assert srv.stats.in_flight == 0


# -- item 7: nothing paid for is lost -------------------------------------------------------------


async def test_failed_request_keeps_the_samples_a_question_paid_for() -> None:
    # FixedN(6) in batches of 3: each batch is one request for n=3 (the rule cannot stop
    # inside it); the first succeeds, every later attempt gets a 503.
    cfg = FaultConfig(script=("ok",), rate=1.0, kinds=("503",))
    with FaultServer(cfg) as srv:
        async with OpenAIEngine(srv.base_url, "fake", max_attempts=2, **FAST) as eng:
            sc = SelfConsistency(FixedN(6), batch_sizes=(3,), params=SamplingParams(temperature=0.8, max_tokens=16))
            r = await sc.run(Q, eng, Budget(completion_tokens=1000))
            assert r.stop_reason == "engine_error"
            assert r.error is not None and "503" in r.error
            assert len(r.samples) == 3 and r.answer == "4"
            assert r.meta["stopped_by"] == "engine_error"
            assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.calls) == billed(srv)


async def test_greedy_request_failing_for_good_returns_a_result() -> None:
    with FaultServer(FaultConfig(rate=1.0, kinds=("500",))) as srv:
        async with OpenAIEngine(srv.base_url, "fake", max_attempts=2, **FAST) as eng:
            r = await Greedy(SamplingParams(max_tokens=8)).run(Q, eng)
            assert r.stop_reason == "engine_error" and r.answer is None and not r.samples
            assert "failed after 2 attempt(s)" in (r.error or "")
            assert srv.stats.requests == 2


async def test_deepconf_keeps_cut_streams_and_leaves_no_task_exception(caplog) -> None:  # type: ignore[no-untyped-def]
    """Warm-up answers, then every stream is cut mid-way: the cut traces are kept
    (truncated, billed, not voting), fresh traces take their place up to max_traces,
    and no task exception is left unretrieved."""
    cfg = FaultConfig(script=("ok", "ok"), rate=1.0, kinds=("truncate",), answers=(LONG, LONG5))
    with FaultServer(cfg) as srv:
        async with OpenAIEngine(srv.base_url, "fake", **FAST) as eng:
            strat = DeepConf("online", n_init=2, max_traces=6, window=8, parallelism=2,
                             params=SamplingParams(temperature=0.8, max_tokens=60))
            with caplog.at_level(logging.ERROR, logger="asyncio"):
                r = await strat.run(Q, eng, Budget(completion_tokens=10_000))
                gc.collect()
                await asyncio.sleep(0)
            assert "never retrieved" not in caplog.text
            assert r.stop_reason == "max_traces"
            cut = [s for s in r.samples if s.meta.get("truncated")]
            assert len(cut) == 4 and all(s.finish_reason == "error" and not s.meta["voter"] for s in cut)
            assert all(s.num_tokens > 0 and s.text for s in cut)
            assert r.answer in ("4", "5")
            await settle()
            assert r.usage.completion_tokens == srv.stats.billed_completion_tokens
            assert sum(s.num_tokens for s in r.samples) == r.usage.completion_tokens
            assert len(r.samples) == srv.stats.by_question[Q.question].samples


async def test_dynasor_stream_cut_keeps_the_partial_trace() -> None:
    cfg = FaultConfig(rate=1.0, kinds=("truncate",), answers=(LONG,))
    with FaultServer(cfg) as srv:
        async with OpenAIEngine(srv.base_url, "fake", **FAST) as eng:
            r = await DynasorCoT("eager", mode="stream", max_tokens=60, probe="answer_is").run(Q, eng)
            assert r.stop_reason == "engine_error" and "stream" in (r.error or "")
            (s,) = r.samples
            assert s.finish_reason == "error" and s.meta["truncated"] and s.num_tokens > 0
            assert LONG.startswith(s.text)
            await settle()
            assert r.usage_by_kind["generate"].completion_tokens == s.num_tokens


# -- item 11 and transport: timeouts, refused connections, credentials --------------------------


def test_request_timeout_defaults_like_the_openai_sdk() -> None:
    eng = OpenAIEngine("http://127.0.0.1:9/v1", "m")
    assert eng.timeout == 600.0
    assert OpenAIEngine("http://127.0.0.1:9/v1", "m", timeout=30).timeout == 30.0
    for bad in (0, -1, float("inf"), "10"):
        with pytest.raises(ValueError, match="timeout"):
            OpenAIEngine("http://127.0.0.1:9/v1", "m", timeout=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
async def test_timed_out_attempt_is_aborted_before_the_retry(backend: str) -> None:
    with FaultServer(FaultConfig(script=("slow",), slow_delay=3.0)) as srv:
        async with OpenAIEngine(srv.base_url, "fake", http_backend=backend, timeout=0.3, backoff_base=0.05) as eng:
            r = await eng.generate(Q, SamplingParams(max_tokens=8))
            assert r.generations[0].text == "The answer is 4."
            arrivals = [open_others for what, _, open_others in srv.stats.events if what == "arrive"]
            # Every attempt found no other open: each timed-out copy was closed before the next
            # arrived (a loaded machine can time the retry out too: three arrivals, all 0).
            assert len(arrivals) >= 2 and set(arrivals) == {0}, arrivals
            # before the 3 s slow reply would end: an attempt left open still fails this
            timed_out = len(arrivals) - 1
            assert await srv.wait_for_abandoned(timed_out) == timed_out, "the server saw each timed-out copy closed"
            assert srv.stats.billed_calls == 1


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
async def test_refused_connection_is_a_connection_error_and_secrets_stay_hidden(backend: str) -> None:
    urls = [f"http://alice:hunter2secret@127.0.0.1:{_closed_port()}/v1",
            f"http://bob:pa55word@127.0.0.1:{_closed_port()}/v1"]
    async with OpenAIEngine(urls, "m", http_backend=backend, max_attempts=2, backoff_base=0.01) as eng:
        with pytest.raises(EngineError) as ei:
            await eng.generate(Q, SamplingParams(max_tokens=4))
        msg = str(ei.value)
        assert "connection error" in msg and "Refused" in msg, msg
        assert "timeout" not in msg
        assert "hunter2secret" not in msg and "pa55word" not in msg and "alice" not in msg
        assert all("@" not in s["url"] for s in eng.endpoint_stats())


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
async def test_credentials_in_the_url_are_sent_as_basic_auth(backend: str) -> None:
    with FaultServer() as srv:
        url = srv.base_url.replace("http://", "http://user:s3cret@")
        async with OpenAIEngine(url, "fake", http_backend=backend, **FAST) as eng:
            r = await eng.generate(Q, SamplingParams(max_tokens=8))
            assert r.generations[0].text == "The answer is 4."
            assert eng.endpoints == [srv.base_url]


# -- item 6: the prompt bound is an upper bound ---------------------------------------------------


def _bundled_tokenizer():  # type: ignore[no-untyped-def]
    from ttc.models import SMOLLM2_NAME, cache_dir

    path = cache_dir() / SMOLLM2_NAME
    if not (path / "tokenizer.json").exists():
        pytest.skip("the bundled model is not materialised")
    return path, _load_tokenizer(str(path))


@functools.lru_cache(maxsize=1)
def _load_tokenizer(path: str):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


async def test_prompt_bound_covers_the_bundled_chat_template() -> None:
    path, tok = _bundled_tokenizer()
    plain = OpenAIEngine("http://127.0.0.1:9/v1", "m")
    exact = OpenAIEngine("http://127.0.0.1:9/v1", "m", tokenizer=str(path))
    hi = Prompt.of("Hi")
    real = len(tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                       tokenize=True, return_dict=True)["input_ids"])
    assert real == 31
    assert await exact.count_prompt_tokens(hi) == 31
    assert await plain.count_prompt_tokens(hi) >= 31


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=80)


@settings(max_examples=60, deadline=None)
@given(msgs=st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]), _text), min_size=1, max_size=4),
       prefix=st.none() | _text)
async def test_property_prompt_bound_is_an_upper_bound(msgs, prefix) -> None:  # type: ignore[no-untyped-def]
    path, tok = _bundled_tokenizer()
    msgs = [*msgs[:-1], ("user", msgs[-1][1])]
    if not any(c.strip() for _, c in msgs):
        return
    p = Prompt.of([{"role": r, "content": c} for r, c in msgs])
    if prefix:
        p = p.with_prefix(prefix)
    plain = OpenAIEngine("http://127.0.0.1:9/v1", "m")
    dialog = [{"role": r, "content": c} for r, c in msgs] + ([{"role": "assistant", "content": prefix}] if prefix else [])
    kw = {"continue_final_message": True} if prefix else {"add_generation_prompt": True}
    real = len(tok.encode(tok.apply_chat_template(dialog, tokenize=False, **kw), add_special_tokens=False))
    assert await plain.count_prompt_tokens(p) >= real


@settings(max_examples=60, deadline=None)
@given(text=_text)
def test_property_no_usage_estimate_errs_high(text: str) -> None:
    _, tok = _bundled_tokenizer()
    plain = OpenAIEngine("http://127.0.0.1:9/v1", "m")
    real = len(tok.encode(text, add_special_tokens=False)) + 1  # + the end token
    assert plain.wire.estimate_tokens(text, "stop") >= real


# -- property: spent <= limit against a faulty server -----------------------------------------------


@pytest.fixture(scope="module")
def fault_server():  # type: ignore[no-untyped-def]
    with FaultServer() as srv:
        yield srv


_limits = st.fixed_dictionaries({}, optional={
    "completion_tokens": st.integers(8, 200), "total_tokens": st.integers(60, 600),
    "calls": st.integers(1, 10), "generations": st.integers(1, 16)})
_calls = st.lists(st.tuples(st.integers(1, 4), st.integers(1, 24), st.booleans()), min_size=1, max_size=6)
_honest = st.lists(st.sampled_from(("ok", *(k for k in HONEST_KINDS if k != "slow"))), max_size=14)
_any = st.lists(st.sampled_from(("ok", *(k for k in HONEST_KINDS if k != "slow"), *LYING_KINDS)), max_size=14)


async def _drive(srv: FaultServer, script: list[str], limits: dict, calls: list) -> Meter:  # type: ignore[type-arg]
    srv.configure(FaultConfig(script=tuple(script), retry_after=0.01, answers=("The answer is 4.", LONG)))
    root = Meter(Budget(**limits))
    async with OpenAIEngine(srv.base_url, "fake", max_attempts=3, **FAST) as eng:
        ctx = RunContext(eng, root)
        for n, max_tokens, stream in calls:
            params = SamplingParams(n=1 if stream else n, max_tokens=max_tokens, temperature=0.8)
            try:
                if stream:
                    async with ctx.stream(Q, params) as deltas:
                        async for _ in deltas:
                            pass
                else:
                    await ctx.generate(Q, params)
            except (BudgetExhausted, EngineError):
                pass
    await asyncio.sleep(0.05)
    assert all(v == pytest.approx(0) for v in root._reserved.values())
    return root


def _over(root: Meter) -> dict[str, int]:
    s, o = root.spent, root.overspent
    got = {"completion_tokens": s.completion_tokens, "total_tokens": s.total_tokens,
           "calls": s.calls, "generations": s.generations}
    slack = {"completion_tokens": o.get("completion_tokens", 0),
             "total_tokens": o.get("completion_tokens", 0) + o.get("prompt_tokens", 0),
             "calls": o.get("calls", 0), "generations": o.get("generations", 0)}
    return {k: got[k] - lim - slack[k] for k, lim in root.budget.limits().items() if got[k] - lim - slack[k] > 0}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=_honest, limits=_limits, calls=_calls)
async def test_property_honest_faulty_server_never_overspends(fault_server, script, limits, calls) -> None:  # type: ignore[no-untyped-def]
    """Short choices, missing usage, cut streams, drops, 429/5xx, malformed JSON:
    spent <= limit, nothing overspent, and the meter covers what the server billed:
    exactly, unless a reply carried no usage (our estimate, which errs high) or could
    not be read (the attempt's worst case)."""
    root = await _drive(fault_server, script, limits, calls)
    assert not _over(root) and not root.overspent
    assert min(root.spent.prompt_tokens, root.spent.completion_tokens, root.spent.calls) >= 0
    server = billed(fault_server)
    assert all(m >= b for m, b in zip(spent(root), server)), (spent(root), server)
    if not {"no_usage", "malformed", "truncate"} & set(script):
        assert spent(root) == server


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=_any, limits=_limits, calls=_calls)
async def test_property_lying_server_is_contained(fault_server, script, limits, calls) -> None:  # type: ignore[no-untyped-def]
    """With lies in the mix: nothing negative or absurd is charged, and any spending past
    a limit is exactly what the meter records as overspent (a server that ignored
    max_tokens)."""
    root = await _drive(fault_server, script, limits, calls)
    assert not _over(root)
    assert min(root.spent.prompt_tokens, root.spent.completion_tokens, root.spent.calls) >= 0
    assert root.spent.completion_tokens <= sum(4 * (mt + 8) for _, mt, _ in calls) * 3
    if not any(k in script for k in ("overbill",)):
        assert not root.overspent
