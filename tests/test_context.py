"""RunContext and gather_settled: nothing finished is lost, the rest is cancelled."""

import asyncio

from ttc import Budget, Meter, Prompt, RunContext, SamplingParams
from ttc.context import gather_settled
from ttc.engines import ScriptedEngine


async def test_gather_settled_keeps_results_and_cancels_rest():
    async def after(t: float, v: int) -> int:
        await asyncio.sleep(t)
        return v

    async def fail() -> int:
        raise RuntimeError("boom")

    seen = []
    results, errors = await gather_settled(
        [lambda: after(0.01, 1), lambda: after(0.02, 2), lambda: after(5, 3), fail],
        on_result=lambda i, v: seen.append(v) or v == 2,
    )
    assert sorted(v for _, v in results) == [1, 2]
    assert [i for i, _ in errors] == [3] and isinstance(errors[0][1], RuntimeError)


async def test_stream_close_aborts_and_charges_partial():
    eng = ScriptedEngine([" ".join(str(i) for i in range(100))], token_delay=0.001)
    ctx = RunContext(eng, Meter(Budget(completion_tokens=1000)))
    got = 0
    async with ctx.stream(Prompt.of("count"), SamplingParams(max_tokens=100)) as deltas:
        async for d in deltas:
            got += d.num_tokens
            if got == 10:
                break
    assert eng.aborted == 1 and eng.in_flight == 0
    assert ctx.meter.spent.completion_tokens == 10
    assert ctx.meter.remaining()["completion_tokens"] == 990


async def test_trace_and_child_context():
    eng = ScriptedEngine(["The answer is 1."])
    ctx = RunContext(eng, Meter(Budget(calls=5)), seed=3)
    child = ctx.child(Budget(calls=2))
    await child.generate(Prompt.of("q"), SamplingParams(max_tokens=5))
    ctx.event("note", x=1)
    assert ctx.meter.spent.calls == 1 and child.meter.remaining()["calls"] == 1
    assert ctx.trace[-1].kind == "note" and ctx.trace[-1].data == {"x": 1}


async def test_continuation_scope_routes_continuable_calls_and_closes():
    import pytest

    from ttc.engine import ContinuationScope

    eng = ScriptedEngine(["a b c"])
    other = ScriptedEngine(["x"])
    ctx = RunContext(eng, Meter(Budget(total_tokens=1000)))
    seen: list[str] = []

    class Recording(ContinuationScope):
        async def generate(self, prompt, params, billing):  # type: ignore[no-untyped-def]
            seen.append(prompt.question)
            return await super().generate(prompt, params, billing)

        async def aclose(self) -> None:
            seen.append("closed")

    eng.continuation_scope = lambda: Recording(eng)  # type: ignore[method-assign]
    async with ctx.continuations() as scope:
        assert ctx.scope is scope
        with pytest.raises(RuntimeError, match="already open"):
            async with ctx.continuations():
                pass
        await ctx.generate(Prompt.of("q1"), SamplingParams(max_tokens=4), continuable=True)
        await ctx.generate(Prompt.of("q2"), SamplingParams(max_tokens=4))  # not continuable: plain call
        with pytest.raises(ValueError, match="scope: belongs to"):
            await other.generate(Prompt.of("q3"), SamplingParams(max_tokens=4), scope=scope)
    assert seen == ["q1", "closed"] and ctx.scope is None
    assert ctx.meter.spent.calls == 2
