"""Recording and replaying a pool on the real bundled model (in-process vLLM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttc.bench.datasets import addition
from ttc.bench.pool import Pool, record_pool
from ttc.bench.replay import PoolExhausted, ReplayEngine
from ttc.bench.runner import replay_grid, run_dataset
from ttc.bench.specs import build_strategy
from ttc.budget import Budget
from ttc.types import SamplingParams

pytestmark = pytest.mark.real

SUFFIX = " Answer with just the number."


async def test_record_and_replay_real_pool(vllm_engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    exs = addition(3, seed=0, digits=1)
    path = tmp_path / "pool.jsonl.gz"
    pool = await record_pool(vllm_engine, exs, path, k=6, logprobs=5, suffix=SUFFIX,
                             params=SamplingParams(temperature=0.8, max_tokens=16), progress=False)
    assert len(pool) == 3 and pool.k == 6
    assert Pool.load(path).by_id().keys() == {e.id for e in exs}
    for q in pool.questions:
        assert q.prompt.question.endswith(SUFFIX) and q.prompt_tokens > 5
        assert q.usage.completion_tokens == sum(g.num_tokens for g in q.samples)
        for g in q.samples:
            assert 1 <= g.num_tokens <= 16 and g.finish_reason in ("stop", "length")
            assert g.logprobs is not None and len(g.logprobs) == g.num_tokens
            assert all(len(t.top) >= 1 and t.logprob <= 0 for t in g.logprobs)
            joined = "".join(t.token for t in g.logprobs)
            # the tokens spell the text (a finished sample's last token may be the end-of-turn token)
            assert joined == g.text or (g.finish_reason == "stop" and joined.startswith(g.text))
    # replay: a strategy runs unchanged, billed the recorded tokens, without replacement
    q = pool.questions[0]
    eng = ReplayEngine(pool, seed=1)
    r = await build_strategy("majority:n=4").run(q.prompt, eng, Budget(generations=4))
    assert len(r.samples) == 4
    assert r.usage.completion_tokens == sum(s.num_tokens for s in r.samples)
    assert {s.text for s in r.samples} <= {g.text for g in q.samples}
    await eng.generate(q.prompt, SamplingParams(n=2))
    with pytest.raises(PoolExhausted):
        await eng.generate(q.prompt, SamplingParams(n=1))
    rows = await replay_grid(pool, ["majority:n=B"], [1, 2, 6], seeds=2, progress=False)
    assert {r["budget"] for r in rows if r["type"] == "replay"} == {1, 2, 6}


async def test_run_dataset_on_real_engine(vllm_engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    exs = addition(3, seed=1, digits=1)
    out = tmp_path / "results.jsonl"
    rows = await run_dataset(lambda: build_strategy("majority:n=3,max_tokens=16"), exs, vllm_engine,
                             Budget(generations=3), out, suffix=SUFFIX, progress=False)
    assert len(rows) == 3 and len(out.read_text().splitlines()) == 1 + 3  # header + results
    for r in rows:
        assert r["usage"]["generations"] == 3 and r["usage"]["completion_tokens"] > 0
        assert len(r["samples"]) == 3
    again = await run_dataset(lambda: build_strategy("majority:n=3,max_tokens=16"), exs, vllm_engine,
                              Budget(generations=3), out, suffix=SUFFIX, progress=False)
    assert again == rows  # resumed: nothing recomputed
