"""A budget shared by several drivers through the ledger actor: chunked leases never let
the drivers together spend past the global limit."""

from __future__ import annotations

import asyncio

import pytest

ray = pytest.importorskip("ray")

from test_ray_engine import ray_cluster  # noqa: E402,F401  (the session's Ray cluster)
from test_reentrancy import QUESTIONS, per_prompt_script  # noqa: E402

from ttc import Budget, SamplingParams  # noqa: E402
from ttc.engines import ScriptedEngine  # noqa: E402
from ttc.engines.ray_budget import SharedBudget  # noqa: E402
from ttc.strategies import FixedN, SelfConsistency  # noqa: E402


async def test_drivers_sharing_one_budget_spend_at_most_its_limit(ray_cluster) -> None:  # noqa: F811
    shared = SharedBudget.create(Budget(completion_tokens=1500, calls=200), name="ttc-test-ledger")
    sc = SelfConsistency(FixedN(4), params=SamplingParams(temperature=0.8, max_tokens=32))
    spent_by_driver = [0, 0, 0]

    async def driver(d: int) -> int:
        engine = ScriptedEngine(per_prompt_script())
        handle = SharedBudget.connect("ttc-test-ledger")  # another driver finds the ledger by name
        batches = 0
        for start in range(0, 40, 2):
            qs = [f"{q} (driver {d})" for q in QUESTIONS[start:start + 2]]
            async with handle.lease(Budget(completion_tokens=300, calls=20), least=Budget(completion_tokens=32)) as meter:
                if meter is None:
                    break
                await sc.run_many(qs, engine, meter, seed=start)
                assert meter.spent.completion_tokens <= meter.budget.completion_tokens
                spent_by_driver[d] += meter.spent.completion_tokens
                batches += 1
        return batches

    batches = await asyncio.gather(*(driver(d) for d in range(3)))
    state = await shared.state()
    assert all(b >= 1 for b in batches) and sum(batches) < 60  # the budget ran out before the questions
    assert state["spent"]["completion_tokens"] == sum(spent_by_driver) <= 1500
    assert sum(spent_by_driver) > 1500 - 300  # little left idle: the last leases were partial
    assert state["leased"] == dict.fromkeys(state["leased"], 0) and not any(state["overspent"].values())
    async with shared.lease(Budget(completion_tokens=300, calls=20), least=Budget(completion_tokens=32)) as meter:
        assert meter is None  # what is left cannot buy one draw
    with pytest.raises(ValueError, match="calls"):
        async with shared.lease(Budget(completion_tokens=10)):
            pass
