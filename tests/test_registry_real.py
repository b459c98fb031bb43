"""Every registered strategy name on the real bundled model (the session's in-process vLLM
engine): two questions each, in the small configuration of ``test_registry_cli.SMALL`` (at
most 16 tokens a generation, two samples), through the runner ``ttc run`` uses. The whole
module is sized to run in well under a minute on two CPU cores."""

from __future__ import annotations

import pytest
from test_registry_cli import SMALL

from ttc import registry
from ttc.bench import datasets as ds
from ttc.bench.runner import run_dataset
from ttc.budget import Budget

pytestmark = pytest.mark.real

QUESTIONS = ds.addition(2, seed=0, digits=1)
BUDGET = Budget(completion_tokens=160)


@pytest.mark.parametrize("name", registry.list_names(registry.RUNNABLE))
async def test_every_registered_name_runs_on_the_real_engine(name, vllm_engine):  # type: ignore[no-untyped-def]
    spec = SMALL[name]
    rows = await run_dataset(lambda: registry.build_from_spec(spec), QUESTIONS, vllm_engine, BUDGET, None,
                             concurrency=2, spec=spec, progress=False)
    assert sorted(r["id"] for r in rows) == [e.id for e in QUESTIONS]
    assert all(r["samples"] for r in rows), name
    assert all(s["num_tokens"] <= 16 for r in rows for s in r["samples"]), name
    assert sum(r["usage"]["completion_tokens"] for r in rows) <= BUDGET.completion_tokens * len(QUESTIONS)
    assert all(r["stop_reason"] for r in rows)
