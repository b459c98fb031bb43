"""Budgets that hold: reservation, charging, sub-budgets, and strategies stopping on
"budget" without losing samples. Property tests drive random concurrent workloads."""

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttc import Budget, BudgetExhausted, Meter, Prompt, RunContext, SamplingParams, Usage
from ttc.context import gather_settled
from ttc.engines import ScriptedEngine
from ttc.strategies import BestOfN

TEXTS = ["one two three four five six", "a b", "x y z w", "The answer is 4."]


class Recording(ScriptedEngine):
    """Scripted engine that records every usage it bills (what a server 'billed')."""

    def __init__(self, *a, **kw):  # type: ignore[no-untyped-def]
        super().__init__(*a, **kw)
        self.billed = Usage()

    async def _generate(self, prompt, params, billing):  # type: ignore[no-untyped-def]
        outer = self

        class Tee:
            def bill(self, u: Usage) -> None:
                outer.billed = outer.billed + u
                billing.bill(u)

        return await super()._generate(prompt, params, Tee())


def test_reserve_charge_release():
    m = Meter(Budget(completion_tokens=100, calls=3))
    r = m.reserve(Usage(completion_tokens=60, calls=1))
    assert m.remaining()["completion_tokens"] == 40
    with pytest.raises(BudgetExhausted) as ei:
        m.reserve(Usage(completion_tokens=50, calls=1))
    assert ei.value.limit == "completion_tokens"
    r.bill(Usage(completion_tokens=10, calls=1, prompt_tokens=5))
    r.close()
    assert m.spent.completion_tokens == 10 and m.spent.calls == 1
    assert m.remaining()["completion_tokens"] == 90 and m.remaining()["calls"] == 2
    r.close()  # idempotent
    assert m.spent.completion_tokens == 10


def test_child_budget_is_bounded_by_parent():
    parent = Meter(Budget(total_tokens=100))
    child = parent.child(Budget(total_tokens=80))
    child.reserve(Usage(prompt_tokens=10, completion_tokens=50)).close()
    assert parent.remaining()["total_tokens"] == 100  # nothing billed
    r = child.reserve(Usage(prompt_tokens=10, completion_tokens=50))
    r.bill(Usage(prompt_tokens=10, completion_tokens=20))
    r.close()
    assert parent.spent.total_tokens == 30 and child.spent.total_tokens == 30
    sibling = parent.child(Budget(total_tokens=1000))
    with pytest.raises(BudgetExhausted):
        sibling.reserve(Usage(completion_tokens=71))
    half = parent.split(0.5)
    assert half.budget.total_tokens == 35


def test_wall_budget():
    m = Meter(Budget(wall_seconds=0.05))
    m.started -= 1
    with pytest.raises(BudgetExhausted, match="wall_seconds"):
        m.reserve(Usage(calls=1))


async def test_wall_budget_interrupts_a_slow_call():
    eng = ScriptedEngine(["slow answer"], delay=5)
    ctx = RunContext(eng, Meter(Budget(wall_seconds=0.2)))
    with pytest.raises(BudgetExhausted, match="wall_seconds"):
        await ctx.generate(Prompt.of("q"), SamplingParams(max_tokens=4))
    assert eng.aborted == 1 and ctx.meter.spent.calls == 1  # the aborted call's prompt was billed


async def test_strategy_stops_on_budget_and_keeps_samples():
    eng = ScriptedEngine(["The answer is 4.", "The answer is 5.", "The answer is 4."])
    res = await BestOfN(n=20, params=SamplingParams(max_tokens=8)).run(
        "q", eng, Budget(completion_tokens=8 * 5), seed=0
    )
    assert res.stop_reason == "budget" and res.budget_detail == "completion_tokens"
    # Worst case 8 tokens a sample, real ones 4: released reservations are reused until
    # fewer than 8 tokens are left (5 + 2 + 1 + 1 samples = 36 tokens).
    assert len(res.samples) == eng.samples_served == 9
    assert res.answer == "4"
    assert res.usage.completion_tokens == sum(s.num_tokens for s in res.samples) <= 40


async def test_cancelled_requests_are_charged_what_was_billed():
    eng = Recording(["a b c"], delay=0.5)
    ctx = RunContext(eng, Meter(Budget(calls=10)))
    p, sp = Prompt.of("q"), SamplingParams(max_tokens=5)
    results, errors = await gather_settled(
        [lambda: ctx.generate(p, sp), lambda: asyncio.sleep(0.01, result="fast")],
        on_result=lambda i, v: v == "fast",
    )
    assert [i for i, _ in results] == [1] and not errors
    assert eng.aborted == 1
    assert ctx.meter.spent == eng.billed.model_copy(update={"wall_seconds": 0.0})
    assert ctx.meter.remaining()["calls"] == 9


limits = st.fixed_dictionaries(
    {},
    optional={
        "completion_tokens": st.integers(1, 200),
        "total_tokens": st.integers(1, 400),
        "generations": st.integers(1, 30),
        "calls": st.integers(1, 15),
    },
)
requests = st.lists(
    st.tuples(st.integers(1, 4), st.integers(1, 12), st.floats(0, 0.004), st.booleans()), min_size=1, max_size=25
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(limits=limits, reqs=requests, child_frac=st.none() | st.floats(0.1, 1.0))
async def test_property_spent_never_exceeds_limit_and_equals_billed(limits, reqs, child_frac):
    eng = Recording(TEXTS, token_delay=0.0002)
    root = Meter(Budget(**limits))
    meter = root.split(child_frac) if child_frac and root.budget.limits() else root
    ctx = RunContext(eng, meter)
    prompt = Prompt.of("what is two plus two")

    async def one(n: int, max_tokens: int, delay: float, cancel: bool):  # type: ignore[no-untyped-def]
        await asyncio.sleep(delay)
        task = asyncio.ensure_future(ctx.generate(prompt, SamplingParams(n=n, max_tokens=max_tokens)))
        if cancel:
            await asyncio.sleep(0)
            task.cancel()
        try:
            return await task
        except (BudgetExhausted, asyncio.CancelledError):
            return None

    outs = await asyncio.gather(*(one(*r) for r in reqs))
    spent = root.spent
    for k, lim in root.budget.limits().items():
        got = {"completion_tokens": spent.completion_tokens, "total_tokens": spent.total_tokens,
               "generations": spent.generations, "calls": spent.calls}[k]
        assert got <= lim, (k, got, lim)
    assert spent == eng.billed.model_copy(update={"wall_seconds": 0.0})
    assert not root.overshoot
    got_gens = sum(len(o) for o in outs if o)
    assert got_gens <= spent.generations
    assert all(v == pytest.approx(0) for v in root._reserved.values())


def test_reservation_extend_holds_more_or_refuses():
    m = Meter(Budget(completion_tokens=100, calls=2))
    r = m.reserve(Usage(completion_tokens=60, calls=1))
    r.bill(Usage(completion_tokens=30, calls=1))
    with pytest.raises(BudgetExhausted) as ei:
        r.extend(Usage(completion_tokens=41, calls=1))  # 60 held + 41 > 100
    assert ei.value.limit == "completion_tokens"
    assert m.remaining()["completion_tokens"] == 40, "a refused extension holds nothing"
    r.extend(Usage(completion_tokens=30, calls=1))
    assert m.remaining() == {"completion_tokens": 10, "calls": 0}
    r.bill(Usage(completion_tokens=20, calls=1))
    r.close()
    assert (m.spent.completion_tokens, m.spent.calls) == (50, 2)
    assert m.remaining() == {"completion_tokens": 50, "calls": 0} and not m.overspent


def test_billing_past_the_hold_is_charged_and_recorded_as_overspent():
    root = Meter(Budget(completion_tokens=20))
    child = root.child(Budget(completion_tokens=20))
    with child.reserve(Usage(completion_tokens=16, calls=1)) as r:
        r.bill(Usage(completion_tokens=24, calls=1))
    assert child.spent.completion_tokens == root.spent.completion_tokens == 24
    assert child.overspent == root.overspent == {"completion_tokens": 8}
    assert root.overshoot == {"completion_tokens": 4}


def test_attempt_billing_covers_each_attempt_and_nests():
    from ttc.engine import AttemptBilling

    m = Meter(Budget(completion_tokens=100, calls=3))
    worst = Usage(completion_tokens=40, calls=1, generations=1)
    res = m.reserve(worst)
    share = AttemptBilling.of(res, worst)
    share.cover(worst)  # the first attempt: already held
    assert m.remaining()["calls"] == 2
    share.bill(Usage(completion_tokens=10, calls=1))  # a failed attempt that billed
    share.cover(worst)  # its retry: hold what the first one used up
    assert m.remaining() == {"completion_tokens": 50, "calls": 1}
    inner = AttemptBilling(share, worst)
    inner.bill(Usage(completion_tokens=40, calls=1))
    with pytest.raises(BudgetExhausted):
        inner.cover(Usage(completion_tokens=60, calls=1))  # 10 + 40 billed, 100 would be needed
    res.close()
    assert m.spent.completion_tokens == 50 and not m.overspent
