"""The replay engine: without-replacement draws, billing, streaming, errors, and
replay statistics matching live runs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ttc.bench.datasets import Example
from ttc.bench.metrics import wilson_interval
from ttc.bench.pool import Pool, record_pool
from ttc.bench.replay import PoolExhausted, ReplayEngine
from ttc.bench.runner import replay_grid
from ttc.budget import Budget, Meter
from ttc.context import RunContext
from ttc.engines import ScriptedEngine
from ttc.types import Prompt, SamplingParams


def _examples(n: int) -> list[Example]:
    return [Example(id=f"q{i}", question=f"What is {i} + 2?", answer=str(i + 2)) for i in range(n)]


def _script(p_correct: float = 0.4):  # type: ignore[no-untyped-def]
    """Correct with p_correct; else one of two wrong answers (equally likely)."""

    def f(prompt: Prompt, i: int, rng: np.random.Generator) -> str:
        a = int(prompt.question.split()[2]) + 2
        u = rng.random()
        ans = a if u < p_correct else (a + 1 if u < p_correct + (1 - p_correct) / 2 else a + 2)
        return f"I add the numbers carefully. The answer is {ans}."

    return f


async def _pool(tmp_path, n: int = 4, k: int = 8, p: float = 0.4, logprobs: int | None = 3) -> Pool:  # type: ignore[no-untyped-def]
    eng = ScriptedEngine(_script(p), confidence=lambda t, j: 0.5 + 0.05 * (j % 5))
    return await record_pool(eng, _examples(n), tmp_path / "pool.jsonl.gz", k=k, logprobs=logprobs,
                             params=SamplingParams(max_tokens=40), progress=False)


async def test_draws_without_replacement_and_exhausts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pool = await _pool(tmp_path, k=8)
    q = pool.questions[1]
    eng = ReplayEngine(pool, seed=3)
    texts: list[str] = []
    for n in (3, 4, 1):
        res = await eng.generate(q.prompt, SamplingParams(n=n, logprobs=3))
        assert len(res.generations) == n
        texts += [g.text for g in res.generations]
    assert sorted(texts) == sorted(g.text for g in q.samples)  # every recorded sample exactly once
    assert eng.remaining(q.prompt) == 0
    with pytest.raises(PoolExhausted, match=r"What is 1 \+ 2\?.*exhausted: it has 8 samples"):
        await eng.generate(q.prompt, SamplingParams())
    # another question is untouched
    assert eng.remaining(pool.questions[0].prompt) == 8
    with pytest.raises(ValueError, match="no recorded samples for question 'What is 99"):
        await eng.generate(Prompt.of("What is 99 + 2?"), SamplingParams())


async def test_seed_and_reset_control_the_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pool = await _pool(tmp_path, k=8)
    q = pool.questions[0]

    async def order(eng: ReplayEngine) -> list[tuple[str, float]]:
        gens = (await eng.generate(q.prompt, SamplingParams(n=8, logprobs=0))).generations
        return [(g.text, sum(t.logprob for t in g.logprobs or [])) for g in gens]

    a = await order(ReplayEngine(pool, seed=1))
    b = await order(ReplayEngine(pool, seed=1))
    orders = {tuple(map(str, await order(ReplayEngine(pool, seed=s)))) for s in range(6)}
    assert a == b
    assert len(orders) > 1  # different seeds, different draw orders
    eng = ReplayEngine(pool, seed=1)
    first = await order(eng)
    eng.reset()
    assert await order(eng) == first
    eng.reset(seed=2)
    assert eng.remaining(q.prompt) == 8


async def test_recorded_order_without_shuffle(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pool = await _pool(tmp_path, k=8)
    q = pool.questions[0]
    recorded = [g.text for g in q.samples]
    for seed in (0, 5):
        eng = ReplayEngine(pool, seed=seed, shuffle=False)
        first = (await eng.generate(q.prompt, SamplingParams(n=3))).generations
        rest = (await eng.generate(q.prompt, SamplingParams(n=5))).generations
        assert [g.text for g in first + rest] == recorded  # the first N are the recording's first N
    with pytest.raises(TypeError, match="shuffle"):
        ReplayEngine(pool, shuffle="no")  # type: ignore[arg-type]


async def test_billing_is_the_recorded_usage(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pool = await _pool(tmp_path, k=8)
    q = pool.questions[2]
    eng = ReplayEngine(pool)
    meter = Meter(Budget(generations=8))
    ctx = RunContext(eng, meter)
    gens = await ctx.generate(q.prompt, SamplingParams(n=5))
    assert meter.spent.completion_tokens == sum(g.num_tokens for g in gens) > 0
    assert meter.spent.prompt_tokens == q.prompt_tokens > 0
    assert meter.spent.calls == 1 and meter.spent.generations == 5
    assert all(g.logprobs is None for g in gens)  # not asked for
    # the recorded prompt tokens are the engine's own count at recording time
    assert q.prompt_tokens == await ScriptedEngine(["x"]).count_prompt_tokens(q.prompt)


async def test_stream_replays_tokens_with_logprobs_and_bills_what_was_sent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pool = await _pool(tmp_path, k=4)
    q = pool.questions[0]
    eng = ReplayEngine(pool, seed=0)
    ref = ReplayEngine(pool, seed=0)
    full = (await ref.generate(q.prompt, SamplingParams(logprobs=2))).generations[0]
    meter = Meter()
    ctx = RunContext(eng, meter)
    deltas = []
    async with ctx.stream(q.prompt, SamplingParams(logprobs=2)) as stream:
        async for d in stream:
            deltas.append(d)
    assert "".join(d.text for d in deltas) == full.text
    assert [d.logprobs[0].token for d in deltas if d.logprobs] == [t.token for t in full.logprobs or []]
    assert all(len(d.logprobs[0].top) <= 2 for d in deltas if d.logprobs)
    assert deltas[-1].finish_reason == full.finish_reason
    assert meter.spent.completion_tokens == full.num_tokens
    # closing early bills the tokens handed out, and the sample is used up
    meter2 = Meter()
    ctx2 = RunContext(eng, meter2)
    async with ctx2.stream(q.prompt, SamplingParams()) as stream:
        async for _ in stream:
            break
    assert meter2.spent.completion_tokens == 1
    assert eng.remaining(q.prompt) == 2


async def test_max_tokens_and_stop_cut_recorded_samples(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pool = await _pool(tmp_path, k=4)
    q = pool.questions[0]
    g = (await ReplayEngine(pool).generate(q.prompt, SamplingParams(max_tokens=3))).generations[0]
    assert g.num_tokens == 3 and g.finish_reason == "length"
    assert g.text == "I add the"
    g = (await ReplayEngine(pool).generate(q.prompt, SamplingParams(stop=["numbers"]))).generations[0]
    assert g.text == "I add the " and g.finish_reason == "stop"
    with pytest.raises(ValueError, match="max_top_logprobs|top-k alternatives"):
        await ReplayEngine(pool).generate(q.prompt, SamplingParams(logprobs=10))


async def test_pool_round_trip_and_resume(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "pool.jsonl.gz"
    eng = ScriptedEngine(_script(), confidence=lambda t, j: 0.7)
    await record_pool(eng, _examples(3), path, k=4, logprobs=2, progress=False)
    calls = eng.calls
    # a torn tail (killed mid-write) is dropped; the rerun records only what is missing
    with path.open("ab") as f:
        f.write(b"\x1f\x8b\x08\x00garbage")
    pool = await record_pool(eng, _examples(5), path, k=4, logprobs=2, progress=False)
    assert eng.calls == calls + 2
    assert [q.id for q in pool.questions] == ["q0", "q1", "q2", "q3", "q4"]
    assert all(len(q.samples) == 4 and q.samples[0].logprobs for q in pool.questions)
    assert len(pool.questions[0].samples[0].logprobs[0].top) == 2
    with pytest.raises(ValueError, match="different 'k'"):
        await record_pool(eng, _examples(5), path, k=8, logprobs=2, progress=False)


def _majority_accuracy(p: float, n: int) -> float:
    """Exact accuracy of an n-sample majority vote over answers {right: p, w1: q, w2: q}, random ties."""
    q = (1 - p) / 2
    acc = 0.0
    for c in itertools.product(range(3), repeat=n):
        counts = [c.count(0), c.count(1), c.count(2)]
        prob = math.prod([p, q, q][x] for x in c)
        top = max(counts)
        winners = [i for i in range(3) if counts[i] == top]
        acc += prob * (0 in winners) / len(winners)
    return acc


async def test_replay_of_fixed_n_self_consistency_matches_live_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("ttc.strategies.self_consistency")
    from ttc.bench.specs import build_strategy

    p, n, runs = 0.4, 5, 400
    exact = _majority_accuracy(p, n)
    # live: fresh samples from the engine every run
    live_engine = ScriptedEngine(_script(p))
    exs = _examples(40)
    live = 0
    for r in range(runs):
        e = exs[r % len(exs)]
        res = await build_strategy("sc:rule=fixed,n=5").run(e.question, live_engine, seed=r)
        live += res.answer == e.answer
    # replay: a 40 x 32 pool, 10 draw orders per question
    pool = await record_pool(ScriptedEngine(_script(p), seed=7), exs, tmp_path / "p.jsonl.gz", k=32,
                             logprobs=None, progress=False)
    rows = await replay_grid(pool, ["sc:rule=fixed,n=B"], [n], seeds=10, estimators=False, progress=False)
    replay_acc = float(np.mean([r["accuracy"] for r in rows]))
    lo, hi = wilson_interval(live, runs)
    # both estimate the same number: the exact majority-of-5 accuracy
    assert lo <= exact <= hi
    assert abs(replay_acc - exact) < 0.08, (replay_acc, exact)
    assert abs(replay_acc - live / runs) < 0.1
    assert all(r["generations"] == n for r in rows)


async def test_replay_judges_answers_by_the_pools_grader(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A pool recorded from a GSM8K file is graded by the number grader (prose answers are
    wrong there), one with no dataset format by ttc's default equivalence (which accepts
    ``Evelyn`` for ``\\text{Evelyn}``); the pool names its grader."""
    exs = [Example(id="q0", question="Who won?", answer="\\text{Evelyn}")]
    eng = ScriptedEngine(lambda prompt, i, rng: "She ran fastest. The answer is Evelyn.")
    rows = {}
    for name, extra in (("number", {"dataset": "gsm8k:/data/gsm8k.jsonl"}), ("default", {})):
        pool = await record_pool(eng, exs, tmp_path / f"{name}.jsonl", k=2, progress=False, header_extra=extra)
        assert pool.grader == name
        rows[name] = await replay_grid(pool, ["majority:n=B"], [2], seeds=1, progress=False)
        assert Pool.load(tmp_path / f"{name}.jsonl").grader == name
    acc = {name: {r["strategy"]: r["accuracy"] for r in rs} for name, rs in rows.items()}
    assert acc["number"] == {"pass@k (oracle)": 0.0, "best-of-k (mean logprob)": 0.0, "majority:n=B": 0.0}
    assert acc["default"]["majority:n=B"] == acc["default"]["pass@k (oracle)"] == 1.0
    explicit = await record_pool(eng, exs, tmp_path / "x.jsonl", k=2, progress=False,
                                 header_extra={"dataset": "gsm8k:/d.jsonl", "grader": "latex"})
    assert explicit.grader == "latex"  # a recorded grader wins over the dataset's format
