"""Resumable step requests (engines.vllm_sessions) on the real in-process vLLM engine.

The scheduler counters (``count_scheduled_tokens``) are vLLM's own count of the tokens it
ran through the model, so the prompt work of a resumed turn is checked at the source.
"""

from __future__ import annotations

import asyncio

import pytest

from ttc.budget import Budget, Meter
from ttc.context import RunContext
from ttc.strategies import StepPolicy, Trajectory
from ttc.types import Prompt, SamplingParams

pytestmark = pytest.mark.real

LINE = SamplingParams(temperature=0.0, max_tokens=24, stop=["\n"])


def count(tag: str) -> Prompt:
    """A counting prompt whose first KV block is this test's own (the tag sits in it), so
    one test's prefix-cache blocks cannot change another's exact token counts."""
    return Prompt.of([
        {"role": "system", "content": f"You are a helpful assistant (test {tag})."},
        {"role": "user", "content": "Count from 1 to 30 in words, one per line."},
    ])


@pytest.fixture
def resumable_engine(vllm_engine):  # type: ignore[no-untyped-def]
    """The shared engine: resumable steps are on by default."""
    assert vllm_engine.resumable_steps
    return vllm_engine


async def _settled(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    await asyncio.sleep(0.5)  # scheduler stats of the last iterations arrive after the outputs
    return engine.stats()


def _line(g) -> str:  # type: ignore[no-untyped-def]
    return g.text + ("\n" if g.stop_reason == "\n" else "")


async def _clean(engine) -> None:  # type: ignore[no-untyped-def]
    s = await _settled(engine)
    assert s["open_sessions"] == 0 and s["unfinished"] == 0, s


async def test_resumed_turn_matches_a_new_request_and_computes_one_token(resumable_engine):  # type: ignore[no-untyped-def]
    COUNT = count("resume")
    # the plain path: every step a new request
    g1 = (await resumable_engine.generate(COUNT, LINE)).generations[0]
    g2 = (await resumable_engine.generate(COUNT.with_prefix(_line(g1)), LINE)).generations[0]
    assert g1.stop_reason == "\n" and g2.stop_reason == "\n", (g1, g2)
    # the same two steps in a scope: the second resumes the first's request
    async with resumable_engine.continuation_scope() as scope:
        s1 = (await resumable_engine.generate(COUNT, LINE, scope=scope)).generations[0]
        assert (s1.text, s1.stop_reason, s1.finish_reason) == (g1.text, "\n", "stop")
        assert (await _settled(resumable_engine))["open_sessions"] == 1
        before = await _settled(resumable_engine)
        cont = COUNT.with_prefix(_line(s1))
        r2 = await resumable_engine.generate(cont, LINE, scope=scope)
        after = await _settled(resumable_engine)
        s2 = r2.generations[0]
        assert (s2.text, s2.stop_reason) == (g2.text, "\n")
        assert scope.resumed == 1 and after["resumed_turns"] - before["resumed_turns"] == 1
        # vLLM computed one prompt token (the last sampled one), the rest came from the kept KV
        assert after["scheduled_prefill_tokens"] - before["scheduled_prefill_tokens"] == 1
        n_prompt = len(resumable_engine.encode(cont))
        assert r2.usage.prompt_tokens == n_prompt and r2.usage.cached_prompt_tokens == n_prompt - 1
    await _clean(resumable_engine)


async def test_a_new_request_recomputes_the_partial_block(resumable_engine):  # type: ignore[no-untyped-def]
    """The comparison the scope is for: without it, a continuation recomputes the last
    partial KV block of its prefix (at least one token, up to a block)."""
    p = count("plain")
    g1 = (await resumable_engine.generate(p, LINE)).generations[0]
    cont = p.with_prefix(_line(g1))
    before = await _settled(resumable_engine)
    r = await resumable_engine.generate(cont, LINE)
    after = await _settled(resumable_engine)
    n_prompt = len(resumable_engine.encode(cont))
    computed = after["scheduled_prefill_tokens"] - before["scheduled_prefill_tokens"]
    assert computed == (n_prompt - 1) % resumable_engine.block_size + 1, (computed, n_prompt)
    assert r.usage.prompt_tokens - r.usage.cached_prompt_tokens == computed


async def test_stop_string_across_tokens_ends_the_turn_like_vllm_and_stays_resumable(resumable_engine):  # type: ignore[no-untyped-def]
    """No single token holds ". 4": the turn stops on the tokens ending with its heads
    ("." and ". "), goes on a token at a time, and ends where vLLM's stop-string check
    does, with the same tokens; its request is kept and the next step resumes it."""
    COUNT = count("across")
    params = SamplingParams(temperature=0.0, max_tokens=40, stop=[". 4"])
    plain = (await resumable_engine.generate(COUNT, params)).generations[0]
    assert plain.stop_reason == ". 4", plain
    cont = COUNT.with_prefix(plain.text + ". 4")
    plain2 = (await resumable_engine.generate(cont, params)).generations[0]
    before = resumable_engine.stats()
    async with resumable_engine.continuation_scope() as scope:
        g = (await resumable_engine.generate(COUNT, params, scope=scope)).generations[0]
        mid = await _settled(resumable_engine)
        assert mid["open_sessions"] == 1 and mid["cut_turns"] == before["cut_turns"], mid
        assert mid["stop_head_resumes"] > before["stop_head_resumes"], mid
        assert (g.text, g.stop_reason, g.finish_reason) == (plain.text, ". 4", "stop")
        assert g.token_ids == plain.token_ids and g.num_tokens == plain.num_tokens
        g2 = (await resumable_engine.generate(cont, params, scope=scope)).generations[0]
        assert scope.resumed == 1
        assert (g2.text, g2.stop_reason, g2.token_ids) == (plain2.text, plain2.stop_reason, plain2.token_ids)
    await _clean(resumable_engine)


async def test_a_stop_token_holding_whitespace_past_the_delimiter_stays_resumable(resumable_engine):  # type: ignore[no-untyped-def]
    """The model indents code with one token "\n   ": a step delimited by "\n" stops on it.
    Both paths report what the tokens held past the stop string (``stop_text``: text +
    stop_text is what the tokens decode to); the step policy keeps that whitespace, so the
    next step's prefix is the request's own tokens and resumes it."""
    code = Prompt.of("Write a Python function that adds two numbers. Only the code.")
    params = SamplingParams(temperature=0.0, max_tokens=40, stop=["\n"])
    policy = StepPolicy(delimiter="\n", max_steps=8, max_step_tokens=40)
    tok = resumable_engine.tokenizer
    plain: list = []  # type: ignore[type-arg]
    t = Trajectory()
    for _ in range(3):
        g = (await resumable_engine.generate(code.with_prefix(t.text), params)).generations[0]
        assert g.stop_reason == "\n" and g.text + g.stop_text == tok.decode(g.token_ids), g
        plain.append(g)
        t = policy.apply(t, g)
    assert [g.stop_text for g in plain[:2]] == ["\n", "\n   "], plain  # "def ...):" then the indent token
    assert t.steps[1].endswith("):\n   ")
    t = Trajectory()
    async with resumable_engine.continuation_scope() as scope:
        for k in range(3):
            g = (await resumable_engine.generate(code.with_prefix(t.text), params, scope=scope)).generations[0]
            assert (g.text, g.stop_text, g.token_ids) == (plain[k].text, plain[k].stop_text, plain[k].token_ids)
            t = policy.apply(t, g)
        assert scope.resumed == 2  # the step after the indent token resumed too
    await _clean(resumable_engine)


async def test_a_turn_out_of_tokens_after_a_stop_head_reports_length(resumable_engine):  # type: ignore[no-untyped-def]
    """The token budget counts every sub-turn: a turn that runs out of tokens while
    checking a stop string's head ends at exactly max_tokens, finish "length"."""
    COUNT = count("budget")
    free = (await resumable_engine.generate(COUNT, SamplingParams(temperature=0.0, max_tokens=12))).generations[0]
    # a stop string whose head ends the text at every line end, never completed
    params = SamplingParams(temperature=0.0, max_tokens=12, stop=["\n@@"])
    async with resumable_engine.continuation_scope() as scope:
        g = (await resumable_engine.generate(COUNT, params, scope=scope)).generations[0]
    assert "\n" in free.text, free
    assert (g.text, g.token_ids, g.finish_reason, g.stop_reason) == (free.text, free.token_ids, "length", None)
    await _clean(resumable_engine)


async def test_sweep_releases_what_the_step_did_not_continue(resumable_engine):  # type: ignore[no-untyped-def]
    p = Prompt.of("Name three colours, one per line.")
    async with resumable_engine.continuation_scope() as scope:
        for _ in range(5):  # at T=1 all three may end on EOS (nothing kept, CI saw it once): draw again
            r = await resumable_engine.generate(p, LINE.model_copy(update={"temperature": 1.0, "n": 3}), scope=scope)
            assert len(r.generations) == 3 and r.usage.calls == 1 and r.usage.generations == 3
            kept = sum(g.finish_reason == "length" or g.stop_reason == "\n" for g in r.generations)
            assert (await _settled(resumable_engine))["open_sessions"] == kept
            if kept:
                break
        assert kept, "five draws of three lines all ended on EOS"
        await scope.sweep()  # kept at this sweep: survives one more step
        assert (await _settled(resumable_engine))["open_sessions"] == kept
        g = next(g for g in r.generations if g.stop_reason == "\n" or g.finish_reason == "length")
        g2 = (await resumable_engine.generate(p.with_prefix(_line(g)), LINE, scope=scope)).generations[0]
        assert scope.resumed == 1
        await scope.sweep()  # the ones not continued are released; the continued one is kept again
        s = await _settled(resumable_engine)
        assert s["open_sessions"] == int(g2.stop_reason == "\n" or g2.finish_reason == "length")
    await _clean(resumable_engine)


async def test_release_unneeded_frees_what_the_next_step_will_not_continue(resumable_engine):  # type: ignore[no-untyped-def]
    """Before a step, the scope keeps as many kept requests per prompt as the step will
    continue (three identical greedy lines, two continued: one released at once), and
    the continued ones resume."""
    p = Prompt.of("Name three colours, one per line. (release test)")
    async with resumable_engine.continuation_scope() as scope:
        r = await resumable_engine.generate(p, LINE.model_copy(update={"n": 3}), scope=scope)
        assert len({g.text for g in r.generations}) == 1 and r.generations[0].stop_reason == "\n", r.generations
        assert (await _settled(resumable_engine))["open_sessions"] == 3
        nxt = p.with_prefix(_line(r.generations[0]))
        two = LINE.model_copy(update={"n": 2})
        await scope.release_unneeded([(nxt, two)])
        assert (await _settled(resumable_engine))["open_sessions"] == 2  # before the step's calls
        r2 = await resumable_engine.generate(nxt, two, scope=scope)
        assert scope.resumed == 2 and len(r2.generations) == 2
        await scope.release_unneeded([])  # a step that continues nothing: all released now
        assert (await _settled(resumable_engine))["open_sessions"] == 0
    await _clean(resumable_engine)


async def test_metered_scope_calls_bill_exactly_and_cancel_cleanly(resumable_engine):  # type: ignore[no-untyped-def]
    COUNT = count("meter")
    meter = Meter(Budget(total_tokens=10_000))
    ctx = RunContext(resumable_engine, meter)
    async with ctx.continuations():
        gens = await ctx.generate(COUNT, LINE.model_copy(update={"n": 2}), continuable=True)
        assert len(gens) == 2
        spent = meter.spent
        assert spent.calls == 1 and spent.generations == 2
        assert spent.completion_tokens == sum(g.num_tokens for g in gens)
        # cancel a long turn: the request is aborted, its partial work billed
        long = SamplingParams(temperature=1.0, max_tokens=400)
        task = asyncio.ensure_future(ctx.generate(COUNT.with_prefix(_line(gens[0])), long, continuable=True))
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert meter.spent.calls == 2 and meter.spent.completion_tokens > spent.completion_tokens
    await _clean(resumable_engine)


async def test_particle_filtering_resumes_particles_and_leaves_nothing_open(resumable_engine):  # type: ignore[no-untyped-def]
    from ttc.strategies import ParticleFiltering, StepPolicy
    from ttc.verifiers import ArithmeticStepCheck

    q = "Tom has 3 apples and buys 5 more. Then he gives 2 away. How many apples does he have? Solve step by step."
    pf = ParticleFiltering(
        4, ArithmeticStepCheck(aggregate="min"), policy=StepPolicy(max_steps=3, max_step_tokens=24),
        params=SamplingParams(temperature=0.8),
    )
    before = await _settled(resumable_engine)
    res = await pf.run(q, resumable_engine, Budget(total_tokens=4000), seed=3)
    after = await _settled(resumable_engine)
    assert res.samples and res.usage.total_tokens <= 4000
    resumed = after["resumed_turns"] - before["resumed_turns"]
    steps = max(s.meta["steps"] for s in res.samples)
    assert steps < 2 or resumed >= 1, (steps, resumed)
    # the per-request counters agree with vLLM's scheduler on the prompt work; a sub-turn
    # after a stop string's head feeds back one sampled token, which vLLM counts as prefill
    computed = (after["prompt_tokens"] - after["cached_prompt_tokens"]) - (
        before["prompt_tokens"] - before["cached_prompt_tokens"])
    fed = after["stop_head_resumes"] - before["stop_head_resumes"]
    assert computed + fed == after["scheduled_prefill_tokens"] - before["scheduled_prefill_tokens"]
    await _clean(resumable_engine)


async def test_a_resumed_request_leaves_later_requests_for_its_prompt_unchanged(resumable_engine):  # type: ignore[no-untyped-def]
    """Regression: vLLM appends a streaming request's later inputs to its first input's
    token list in place; that list was the engine's memoised tokenization of the prompt,
    so every later request for the prompt carried the resumed token (and answered
    "The number of words in the given sentence is 30.")."""
    p = count("after-resume")
    whole = SamplingParams(temperature=0.0, max_tokens=40)
    ids = resumable_engine.encode(p)
    before = (await resumable_engine.generate(p, whole)).generations[0].text
    async with resumable_engine.continuation_scope() as scope:
        s1 = (await resumable_engine.generate(p, LINE, scope=scope)).generations[0]
        await resumable_engine.generate(p.with_prefix(_line(s1)), LINE, scope=scope)
        assert scope.resumed == 1
    assert resumable_engine.encode(p) == ids
    after = await resumable_engine.generate(p, whole)
    assert after.usage.prompt_tokens == len(ids)
    assert after.generations[0].text == before
    await _clean(resumable_engine)
