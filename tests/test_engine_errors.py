"""A request that fails for good stops a strategy with stop_reason="engine_error", the
error in the result and every paid sample kept: the base class, salvaged generations,
step-wise search, and streams on the deterministic scripted engine (the HTTP side is in
tests/test_untrusted_server.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from ttc import Budget, BudgetExhausted, Meter, Prompt, RunContext, SamplingParams
from ttc.engine import EngineError, StreamBroken
from ttc.engines import ScriptedEngine
from ttc.strategies import BeamSearch, StepPolicy
from ttc.strategies.deepconf import DeepConf
from ttc.strategies.simple import BestOfN
from ttc.types import Generation
from ttc.verifiers import ProcessVerifier


class Failing(ScriptedEngine):
    """Scripted engine whose generate calls fail for good from call ``fail_from`` on
    (counting from 1), each failure handing over ``salvage`` paid generations."""

    def __init__(self, *a, fail_from: int = 1, salvage: int = 0, **kw):  # type: ignore[no-untyped-def]
        super().__init__(*a, **kw)
        self.fail_from = fail_from
        self.salvage = salvage

    async def _generate(self, prompt, params, billing):  # type: ignore[no-untyped-def]
        if self.calls + 1 >= self.fail_from:
            self.calls += 1
            gens = [Generation(text="The answer is 7.", num_tokens=4)] * self.salvage
            if gens:
                billing.bill(await self.worst_case(prompt, params.model_copy(update={"n": len(gens)})))
            raise EngineError("scripted: failed for good", generations=gens)
        return await super()._generate(prompt, params, billing)


class CutStream(ScriptedEngine):
    """Scripted engine whose streams break after ``cut`` tokens."""

    def __init__(self, *a, cut: int = 3, **kw):  # type: ignore[no-untyped-def]
        super().__init__(*a, **kw)
        self.cut = cut

    async def _stream(self, prompt, params, billing):  # type: ignore[no-untyped-def]
        k = 0
        async for d in super()._stream(prompt, params, billing):
            yield d
            k += 1
            if k == self.cut:
                raise StreamBroken("scripted: stream cut", retryable=True)


async def test_engine_error_becomes_a_stop_reason_with_the_error() -> None:
    eng = Failing(["The answer is 4."], fail_from=2)
    r = await BestOfN(8, params=SamplingParams(temperature=0.8, max_tokens=8)).run(
        "q", eng, Budget(completion_tokens=8 * 2), seed=0)  # a call of 2 samples, then one that fails
    assert r.stop_reason == "engine_error" and r.error == "scripted: failed for good"
    assert len(r.samples) == 2 and r.answer == "4" and eng.calls == 2
    assert [e.kind for e in r.trace][-2:] == ["engine_error", "stop"]


async def test_paid_generations_of_a_failed_call_are_kept() -> None:
    eng = Failing(["The answer is 4."], fail_from=1, salvage=2)
    m = Meter()
    r = await BestOfN(4, params=SamplingParams(temperature=0.8, max_tokens=8)).run("q", eng, m, seed=0)
    assert r.stop_reason == "engine_error"
    assert [s.meta.get("salvaged") for s in r.samples] == [True, True] and r.answer == "7"
    assert m.spent.generations == 2


class StepValue(ProcessVerifier):
    async def step_scores(self, ctx: RunContext, prompt: Prompt, batch: Sequence[Sequence[str]],
                          separator: str) -> list[list[float]]:
        return [[0.5 for _ in steps] for steps in batch]


async def test_step_search_keeps_its_trajectories_when_a_step_fails() -> None:
    def script(p, i, rng):  # type: ignore[no-untyped-def]
        return f"step{p.assistant_prefix.count(chr(10) * 2)} s{i}\n\n"

    eng = Failing(script, fail_from=3)  # the first step (1 call) and one call of the second
    r = await BeamSearch(4, StepValue(), m=2, policy=StepPolicy(max_steps=4)).run("q", eng, seed=0)
    assert r.stop_reason == "engine_error" and "failed for good" in (r.error or "")
    assert [s.text for s in r.samples] == ["step0 s0\n\n", "step0 s1\n\n"], "the beams it had"
    # the second step's call that did succeed is in the genealogy: its 2 children
    nodes = r.meta["genealogy"]["nodes"]
    assert sorted(n["text"] for n in nodes if n["step"] == 2) == ["step1 s4\n\n", "step1 s5\n\n"]


async def test_stream_deadline_interrupts_a_slow_stream() -> None:
    eng = ScriptedEngine([" ".join(["w"] * 100)], token_delay=0.05)
    ctx = RunContext(eng, Meter(Budget(wall_seconds=0.3)))
    got = 0
    t0 = time.monotonic()
    try:
        async with ctx.stream(Prompt.of("q"), SamplingParams(max_tokens=100)) as deltas:
            async for d in deltas:
                got += d.num_tokens
    except BudgetExhausted as e:
        assert e.limit == "wall_seconds"
    else:
        raise AssertionError("the deadline did not interrupt the stream")
    assert time.monotonic() - t0 < 0.3 + 1.0  # generous slack: a loaded machine
    assert 1 <= got < 100 and eng.aborted == 1
    assert ctx.meter.spent.completion_tokens == got


async def test_deepconf_keeps_cut_traces_and_goes_on() -> None:
    texts = [" ".join(f"w{i}" for i in range(12)) + f" The answer is {a}." for a in (4, 5)]
    eng = CutStream(texts, cut=5)
    strat = DeepConf("online", n_init=2, max_traces=5, window=4, eta=100,
                     params=SamplingParams(temperature=0.8, max_tokens=40))
    r = await strat.run("q", eng, seed=0)
    assert r.stop_reason == "max_traces"
    cut = [s for s in r.samples if s.meta.get("truncated")]
    assert len(cut) == 3 and all(s.num_tokens == 5 and s.finish_reason == "error" for s in cut)
    assert not any(s.meta["voter"] for s in cut) and r.answer in ("4", "5")
    assert r.usage.completion_tokens == sum(s.num_tokens for s in r.samples)
    await asyncio.sleep(0)
