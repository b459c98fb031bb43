"""Integration tests of the in-process vLLM engine on the bundled SmolLM2-135M-Instruct.

Every test runs the real model through the session fixture ``vllm_engine`` and keeps
generations short. Run: ``realslot pytest tests/test_vllm_engine.py -x -q``.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from ttc.budget import Budget, Meter
from ttc.context import RunContext
from ttc.engine import EngineError
from ttc.types import Prompt, SamplingParams, Usage

pytestmark = pytest.mark.real

QUESTION = "What is the capital of France?"


async def _settle(engine, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Wait until vLLM has dropped every request (aborts land asynchronously)."""
    t = 0.0
    while engine.num_unfinished_requests() and t < timeout:
        await asyncio.sleep(0.05)
        t += 0.05


async def test_generates_text_with_exact_usage(vllm_engine):  # type: ignore[no-untyped-def]
    prompt = Prompt.of(QUESTION)
    res = await vllm_engine.generate(prompt, SamplingParams(temperature=0.0, max_tokens=16))
    (g,) = res.generations
    assert g.text.strip()
    assert 1 <= g.num_tokens <= 16
    assert g.finish_reason in ("stop", "length")
    assert g.token_ids is not None and len(g.token_ids) == g.num_tokens
    assert res.usage.prompt_tokens == await vllm_engine.count_prompt_tokens(prompt)
    assert res.usage.completion_tokens == g.num_tokens
    assert res.usage.calls == 1 and res.usage.generations == 1


async def test_length_finish_and_stop_strings(vllm_engine):  # type: ignore[no-untyped-def]
    prompt = Prompt.of("Count from 1 to 50, separated by commas.")
    res = await vllm_engine.generate(prompt, SamplingParams(temperature=0.0, max_tokens=4))
    assert res.generations[0].finish_reason == "length"
    assert res.generations[0].num_tokens == 4
    full = (
        (await vllm_engine.generate(prompt, SamplingParams(temperature=0.0, max_tokens=24)))
        .generations[0]
        .text
    )
    # Stop on a character the greedy output contains (whatever this small model writes).
    stop = next(c for c in full[1:] if not c.isspace())
    stopped = await vllm_engine.generate(prompt, SamplingParams(temperature=0.0, max_tokens=24, stop=[stop]))
    g = stopped.generations[0]
    assert g.finish_reason == "stop" and stop not in g.text and g.stop_reason == stop
    assert g.text == full[: full.index(stop)], (full, g.text)


async def test_native_n_returns_n_samples_with_shared_prompt(vllm_engine):  # type: ignore[no-untyped-def]
    prompt = Prompt.of("Write a one-line poem about the sea.")
    res = await vllm_engine.generate(prompt, SamplingParams(temperature=1.0, max_tokens=16, n=4))
    assert len(res.generations) == 4
    assert len({g.text for g in res.generations}) >= 2, [g.text for g in res.generations]
    assert res.usage.prompt_tokens == await vllm_engine.count_prompt_tokens(prompt)  # billed once, not 4x
    assert res.usage.completion_tokens == sum(g.num_tokens for g in res.generations)
    assert res.usage.generations == 4 and res.usage.calls == 1


async def test_logprobs_are_consistent(vllm_engine):  # type: ignore[no-untyped-def]
    k = 3
    res = await vllm_engine.generate(
        Prompt.of("Write a long story about a cat."),
        SamplingParams(temperature=1.0, max_tokens=12, logprobs=k, n=2),
    )
    special = set(vllm_engine.tokenizer.all_special_tokens)
    for g in res.generations:
        assert g.logprobs is not None and len(g.logprobs) == g.num_tokens
        for t in g.logprobs:
            assert t.logprob <= 0.0 and math.isfinite(t.logprob)
            assert len(t.top) == k
            lps = [a.logprob for a in t.top]
            assert lps == sorted(lps, reverse=True)
            assert all(lp <= 0.0 for lp in lps)
            assert t.token_id is not None and all(a.token_id is not None for a in t.top)
            for a in t.top:  # match by id: several ids can decode to one text (byte pieces)
                if a.token_id == t.token_id:
                    assert a.logprob == pytest.approx(t.logprob, abs=1e-5)
            assert t.logprob <= lps[0] + 1e-5  # nothing beats the top-1
        pieces = [t.token for t in g.logprobs if t.token not in special]
        if not any("\ufffd" in p for p in pieces):  # a character split over byte tokens shows as U+FFFD per piece
            assert "".join(pieces) == g.text
    # Greedy: the sampled token is the top-1 alternative.
    greedy = await vllm_engine.generate(
        Prompt.of(QUESTION), SamplingParams(temperature=0.0, max_tokens=8, logprobs=2)
    )
    for t in greedy.generations[0].logprobs or []:
        assert t.top[0].token_id == t.token_id and t.top[0].logprob == pytest.approx(t.logprob, abs=1e-5)
    zero = await vllm_engine.generate(
        Prompt.of(QUESTION), SamplingParams(temperature=0.0, max_tokens=4, logprobs=0)
    )
    assert all(t.top == [] for t in zero.generations[0].logprobs or [None])  # type: ignore[union-attr]


async def test_continues_partial_assistant_message(vllm_engine):  # type: ignore[no-untyped-def]
    base = Prompt.of(QUESTION)
    prefix = "The capital of France is"
    cont = base.with_prefix(prefix)
    rendered = vllm_engine.tokenizer.decode(vllm_engine.encode(cont))
    assert rendered.endswith(prefix)  # the assistant turn is left open on the prefix
    assert not rendered.endswith(prefix + "<|im_end|>")
    n_base = await vllm_engine.count_prompt_tokens(base)
    n_cont = await vllm_engine.count_prompt_tokens(cont)
    assert n_cont > n_base
    assert n_cont == len(vllm_engine.encode(cont))

    res = await vllm_engine.generate(cont, SamplingParams(temperature=0.0, max_tokens=8))
    text = res.generations[0].text
    assert res.usage.prompt_tokens == n_cont
    # A continuation, not a restart: it goes on mid-sentence and does not repeat the prefix.
    assert not text.lstrip().startswith("The capital")
    assert "Paris" in text, text
    # Continuing the continuation keeps going from where the text stopped.
    again = await vllm_engine.generate(cont.continued(text), SamplingParams(temperature=0.0, max_tokens=4))
    assert await vllm_engine.count_prompt_tokens(cont.continued(text)) > n_cont
    assert again.generations[0].num_tokens >= 1


async def test_text_prompt_is_sent_as_is(vllm_engine):  # type: ignore[no-untyped-def]
    p = Prompt(text="1, 2, 3, 4,")
    ids = vllm_engine.encode(p)
    assert vllm_engine.tokenizer.decode(ids) == "1, 2, 3, 4,"
    res = await vllm_engine.generate(p, SamplingParams(temperature=0.0, max_tokens=3))
    assert res.generations[0].text.strip().startswith("5"), res.generations[0].text


async def test_stream_deltas_match_generate(vllm_engine):  # type: ignore[no-untyped-def]
    prompt = Prompt.of(QUESTION)
    params = SamplingParams(temperature=0.0, max_tokens=16, logprobs=1)
    whole = (await vllm_engine.generate(prompt, params)).generations[0]
    deltas = [d async for d in vllm_engine.stream(prompt, params)]
    assert len(deltas) >= 2
    assert "".join(d.text for d in deltas) == whole.text
    assert sum(d.num_tokens for d in deltas) == whole.num_tokens
    assert sum(len(d.logprobs or []) for d in deltas) == whole.num_tokens
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert deltas[-1].finish_reason == whole.finish_reason
    last = deltas[-1].usage
    assert last is not None and last.completion_tokens == whole.num_tokens
    assert last.prompt_tokens == await vllm_engine.count_prompt_tokens(prompt)


async def test_stream_closed_early_aborts_and_bills_partial(vllm_engine):  # type: ignore[no-untyped-def]
    prompt = Prompt.of("Tell me a very long story about a dragon.")
    params = SamplingParams(temperature=1.0, max_tokens=1500)
    meter = Meter(Budget(completion_tokens=5000))
    ctx = RunContext(vllm_engine, meter)
    seen = 0
    async with ctx.stream(prompt, params) as deltas:
        async for d in deltas:
            seen += d.num_tokens
            if seen >= 3:
                break
    await _settle(vllm_engine)
    assert vllm_engine.num_unfinished_requests() == 0
    spent = meter.usage()
    assert seen <= spent.completion_tokens < 1500
    assert spent.prompt_tokens == await vllm_engine.count_prompt_tokens(prompt)
    assert meter.remaining()["completion_tokens"] == 5000 - spent.completion_tokens  # reservation released


async def test_cancelling_generate_aborts_and_bills_partial(vllm_engine):  # type: ignore[no-untyped-def]
    prompt = Prompt.of("Tell me a very long story about a dragon.")
    params = SamplingParams(temperature=1.0, max_tokens=1500, n=2)
    meter = Meter(Budget(completion_tokens=10_000))
    ctx = RunContext(vllm_engine, meter)
    before = vllm_engine.stats()
    task = asyncio.ensure_future(ctx.generate(prompt, params))
    for _ in range(200):  # until vLLM has the request
        if vllm_engine.num_unfinished_requests():
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # let it produce some tokens
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _settle(vllm_engine)
    assert vllm_engine.num_unfinished_requests() == 0
    after = vllm_engine.stats()
    assert after["aborted"] == before["aborted"] + 1
    spent = meter.usage()
    assert spent.prompt_tokens == await vllm_engine.count_prompt_tokens(prompt)
    assert spent.completion_tokens == after["completion_tokens"] - before["completion_tokens"]
    assert spent.completion_tokens < 2 * 1500
    assert meter.remaining()["completion_tokens"] == 10_000 - spent.completion_tokens  # reservation released


async def test_meter_charges_exactly_engine_usage(vllm_engine):  # type: ignore[no-untyped-def]
    meter = Meter(Budget(completion_tokens=100))
    ctx = RunContext(vllm_engine, meter)
    before = vllm_engine.stats()
    gens = await ctx.generate(Prompt.of(QUESTION), SamplingParams(temperature=0.7, max_tokens=20, n=3))
    after = vllm_engine.stats()
    spent = meter.usage()
    assert spent.completion_tokens == sum(g.num_tokens for g in gens)
    assert spent.completion_tokens == after["completion_tokens"] - before["completion_tokens"]
    assert spent.prompt_tokens == after["prompt_tokens"] - before["prompt_tokens"]
    assert spent.generations == 3 and spent.calls == 1
    assert meter.remaining()["completion_tokens"] == 100 - spent.completion_tokens
    # The next call's worst case (3 x 20) no longer fits when fewer than 60 tokens are left.
    from ttc.budget import BudgetExhausted

    if meter.remaining()["completion_tokens"] < 60:
        with pytest.raises(BudgetExhausted):
            await ctx.generate(Prompt.of(QUESTION), SamplingParams(max_tokens=20, n=3))


async def test_prefix_cache_counts_cached_prompt_tokens(vllm_engine):  # type: ignore[no-untyped-def]
    long_q = "Here is some context. " + " ".join(f"Fact {i}: the number {i} is {i * 7}." for i in range(40))
    prompt = Prompt.of(long_q + " What is fact 3?")
    params = SamplingParams(temperature=0.0, max_tokens=2)
    await vllm_engine.generate(prompt, params)
    second = await vllm_engine.generate(prompt, params)
    assert second.usage.cached_prompt_tokens > 0
    assert second.usage.cached_prompt_tokens <= second.usage.prompt_tokens
    st = vllm_engine.stats()
    assert st["computed_prompt_tokens"] == st["prompt_tokens"] - st["cached_prompt_tokens"]


async def test_engine_options_and_errors(vllm_engine):  # type: ignore[no-untyped-def]
    prompt = Prompt.of(QUESTION)
    res = await vllm_engine.generate(
        prompt,
        SamplingParams(
            temperature=0.8, max_tokens=6, extra={"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.1}
        ),
    )
    assert res.generations[0].num_tokens >= 1
    with pytest.raises(ValueError, match="bogus"):
        await vllm_engine.generate(prompt, SamplingParams(max_tokens=4, extra={"bogus": 1}))
    too_long = Prompt(text="word " * 3000)
    with pytest.raises(EngineError, match="max_model_len=2048") as err:
        await vllm_engine.generate(too_long, SamplingParams(max_tokens=4))
    assert not err.value.retryable


async def test_greedy_and_best_of_n_end_to_end(vllm_engine):  # type: ignore[no-untyped-def]
    from ttc.strategies.simple import BestOfN, Greedy

    q = "What is 2 + 3? Answer with just the number."
    g = await Greedy(SamplingParams(max_tokens=16)).run(q, vllm_engine, Budget(completion_tokens=100))
    assert g.usage.completion_tokens > 0 and len(g.samples) == 1
    assert g.stop_reason == "done"
    b = await BestOfN(4, params=SamplingParams(temperature=0.8, max_tokens=16)).run(
        q, vllm_engine, Budget(completion_tokens=200), seed=0
    )
    assert len(b.samples) == 4
    assert 0 < b.usage.completion_tokens <= 64
    assert b.usage.completion_tokens == sum(s.num_tokens for s in b.samples)


def test_run_sync_on_the_shared_loop(vllm_engine):  # type: ignore[no-untyped-def]
    """The engine lives on ttc's shared loop, so the sync facade drives it directly."""
    from ttc.strategies.simple import Greedy

    r = Greedy(SamplingParams(max_tokens=8)).run_sync(QUESTION, vllm_engine, Budget(completion_tokens=50))
    assert r.usage.completion_tokens > 0 and r.samples[0].text


async def test_usage_type(vllm_engine):  # type: ignore[no-untyped-def]
    worst = await vllm_engine.worst_case(Prompt.of(QUESTION), SamplingParams(max_tokens=10, n=3))
    assert worst == Usage(
        prompt_tokens=await vllm_engine.count_prompt_tokens(Prompt.of(QUESTION)),
        completion_tokens=30,
        calls=1,
        generations=3,
    )


async def test_continuation_reuses_the_generated_token_ids(vllm_engine):  # type: ignore[no-untyped-def]
    """A step-wise continuation is sent as prompt ids + the ids the model generated (not a
    re-tokenization of the text), so its whole shared prefix hits the prefix cache."""
    base = Prompt.of("Count from 1 to 30 in words, one per line.")
    params = SamplingParams(temperature=0.0, max_tokens=48, stop=["\n\n"])
    first_ids = vllm_engine.encode(base)
    g = (await vllm_engine.generate(base, params)).generations[0]
    assert g.finish_reason == "length" or g.stop_reason == "\n\n"
    step = g.text + ("\n\n" if g.stop_reason == "\n\n" else "")
    cont = base.with_prefix(step)
    ids = vllm_engine.encode(cont)
    assert ids[: len(first_ids) + g.num_tokens] == first_ids + list(g.token_ids)
    res = await vllm_engine.generate(cont, SamplingParams(temperature=0.0, max_tokens=4))
    block = vllm_engine.block_size
    shared = len(first_ids) + g.num_tokens
    # every full KV block of the shared prefix is reused
    assert res.usage.cached_prompt_tokens >= (shared // block) * block - block, (res.usage, shared)
    # a probe-style suffix after the generated text also reuses the exact ids (prefix match)
    probe = base.with_prefix(step + " So the answer is")
    pids = vllm_engine.encode(probe)
    assert pids[:shared] == first_ids + list(g.token_ids)


async def test_engine_reports_the_dtype_it_loaded(vllm_engine):  # type: ignore[no-untyped-def]
    from ttc.engines.dtype import cpu_has_native_bf16

    loaded = vllm_engine.stats()["dtype"]
    if vllm_engine.on_cpu and not cpu_has_native_bf16():
        assert vllm_engine.dtype == "float32" and loaded == "float32"
    else:
        assert vllm_engine.dtype == "auto" and loaded == "bfloat16"  # the bundled checkpoint's dtype
