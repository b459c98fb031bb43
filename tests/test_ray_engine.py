"""RayEngine on a local Ray cluster (started once per session, loopback only): strategies
give the results of one local engine, budgets hold with replicas dying, continuations land
on the replica of their question, and cancellation reaches the replica's engine."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

ray = pytest.importorskip("ray")

from test_reentrancy import QUESTIONS, fingerprint, per_prompt_script, strategies  # noqa: E402

from ttc import Budget, Meter, Prompt, SamplingParams  # noqa: E402
from ttc.engine import EngineError  # noqa: E402
from ttc.engines import RayEngine, ScriptedEngine  # noqa: E402
from ttc.strategies import FixedN, ParticleFiltering, SelfConsistency  # noqa: E402
from ttc.strategies.steps import StepPolicy  # noqa: E402
from ttc.testing.fault_server import FaultConfig, FaultServer  # noqa: E402
from ttc.verifiers import ArithmeticStepCheck  # noqa: E402


@pytest.fixture(scope="session")
def ray_cluster():  # type: ignore[no-untyped-def]
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 configure_logging=False)
    yield ray


@pytest.fixture(scope="module")
async def scripted_pool(ray_cluster):  # type: ignore[no-untyped-def]
    """Two scripted replicas with strict affinity, shared by the strategies (each asks its
    own questions, so the per-prompt script's counts are not shared between them)."""
    engine = await RayEngine({"kind": "scripted", "script": per_prompt_script()}, 2, slack=None).start()
    yield engine
    await engine.aclose()


def _questions(name: str, k: int = 8) -> list[str]:
    return [f"{q} ({name})" for q in QUESTIONS[:k]]


@pytest.mark.parametrize("name", sorted(strategies()))
async def test_every_strategy_gives_on_two_replicas_what_one_local_engine_gives(name: str, scripted_pool) -> None:
    strategy = strategies()[name]
    budget = Budget(completion_tokens=3000)
    qs = _questions(name)
    local = ScriptedEngine(per_prompt_script())
    expected = [await strategy.run(q, local, budget, seed=i) for i, q in enumerate(qs)]
    got = await asyncio.gather(*(strategy.run(q, scripted_pool, budget, seed=i) for i, q in enumerate(qs)))
    assert any(r.samples for r in expected)
    for i, (a, b) in enumerate(zip(expected, got)):
        # Draws of one question come back in the network's order; votes do not depend on it.
        fa, fb = fingerprint(a), fingerprint(b)
        assert fa == fb, f"{name}: question {i} differs on the Ray pool"
    assert scripted_pool.stats()["in_flight"] == 0


async def test_particle_filtering_continuations_land_on_the_replica_of_their_question(ray_cluster) -> None:
    engine = await RayEngine({"kind": "scripted", "script": per_prompt_script()}, 2).start()
    try:
        qs = _questions("affinity", 12)
        pf = ParticleFiltering(n=4, verifier=ArithmeticStepCheck(), params=SamplingParams(temperature=0.8,
                                                                                          max_tokens=48))
        results = await asyncio.gather(*(pf.run(q, engine, Budget(completion_tokens=3000), seed=i)
                                         for i, q in enumerate(qs)))
        assert all(r.samples for r in results)
        where: dict[str, set[int]] = {}
        continued = 0
        for i in range(2):
            for p in await engine.replica_prompts(i):
                question = p.messages[-1].content if p.messages else p.text
                where.setdefault(question, set()).add(i)
                continued += bool(p.assistant_prefix)
        assert continued > len(qs), "particle filtering sent no continuations"
        assert all(len(r) == 1 for r in where.values()), f"a question spread over replicas: {where}"
        assert {next(iter(r)) for r in where.values()} == {0, 1}, "affinity put every question on one replica"
        assert engine.stats()["rerouted"] == 0
    finally:
        await engine.aclose()


async def test_killing_a_replica_mid_run_loses_no_paid_sample_and_keeps_the_budget(ray_cluster) -> None:
    texts = [f"Thinking step {k}.\n\nSo the answer is \\boxed{{{k % 3}}}." for k in range(5)]
    engine = await RayEngine({"kind": "scripted", "script": texts, "delay": 0.15}, 2, slack=2).start()
    try:
        parent = Meter(Budget(completion_tokens=700))
        sc = SelfConsistency(FixedN(6), params=SamplingParams(temperature=0.8, max_tokens=16))

        async def kill_soon() -> None:
            while engine.stats()["replica0_in_flight"] < 3:  # requests in flight on it
                await asyncio.sleep(0.01)
            ray.kill(engine.actors[0], no_restart=False)

        killer = asyncio.ensure_future(kill_soon())
        batch = await sc.run_many(_questions("kill", 10), engine, parent, seed=0, concurrency=10)
        await killer
        stats = engine.stats()
        assert stats["lost_attempts"] >= 1 and stats["retries"] >= 1, stats
        assert parent.spent.completion_tokens <= 700
        assert not parent.overspent
        # Every completion token charged is in a sample a result kept (a lost attempt is
        # charged its prompt and call, never tokens nobody received).
        kept = sum(s.num_tokens for r in batch.results for s in r.samples)
        assert parent.spent.completion_tokens == kept > 0
        assert sum(r.usage.completion_tokens for r in batch.results) == kept
        assert stats["in_flight"] == 0
        # Ray restarted the killed replica: it serves again.
        again = await engine.generate(Prompt(text="after the kill"), SamplingParams(max_tokens=8))
        assert again.generations
    finally:
        await engine.aclose()


async def test_a_dead_replica_leaves_the_pool_and_a_failing_pool_fails_with_engine_error(ray_cluster) -> None:
    engine = await RayEngine({"kind": "scripted", "script": ["a b c"]}, 2, max_restarts=0).start()
    try:
        ray.kill(engine.actors[1], no_restart=True)
        for i in range(6):
            out = await engine.generate(Prompt(text=f"q{i}"), SamplingParams(max_tokens=4))
            assert out.generations[0].text == "a b c"
        assert engine.stats()["live_replicas"] == 1
    finally:
        await engine.aclose()

    # Nothing listens on port 9: every attempt fails with a retryable connection error.
    spec = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout": 5}
    engine = await RayEngine(spec, 2, max_failures=2, max_attempts=2).start()
    try:
        meter = Meter(Budget(total_tokens=5000))
        for _ in range(2):
            with pytest.raises(EngineError):
                with meter.reserve(await engine.worst_case(Prompt(text="hi"), SamplingParams(max_tokens=4))) as r:
                    await engine.generate(Prompt(text="hi"), SamplingParams(max_tokens=4), r)
        assert engine.stats()["live_replicas"] == 0
        with pytest.raises(EngineError, match="no live replica"):
            await engine.generate(Prompt(text="hi"), SamplingParams(max_tokens=4))
        assert meter.spent.prompt_tokens + meter.spent.completion_tokens <= 5000
    finally:
        await engine.aclose()


async def test_cancelling_reaches_the_replica_and_charges_what_it_billed(ray_cluster) -> None:
    long = " ".join(f"w{k}" for k in range(200))
    engine = await RayEngine({"kind": "scripted", "script": [long], "token_delay": 0.02}, 1).start()
    try:
        meter = Meter()
        prompt, params = Prompt(text="go on"), SamplingParams(max_tokens=200)
        res = meter.reserve(await engine.worst_case(prompt, params))
        got = 0
        async with contextlib.aclosing(engine.stream(prompt, params, res)) as deltas:
            async for d in deltas:
                got += d.num_tokens
                if got >= 3:
                    break
        res.close()
        (replica,) = await engine.replica_stats()
        assert replica["engine"]["in_flight"] == 0 and replica["engine"]["aborted"] == 1
        assert replica["in_flight"] == 0
        assert 3 <= meter.spent.completion_tokens < 200  # what the replica produced, not the worst case
        assert meter.spent.calls == 1

        res = meter.reserve(await engine.worst_case(prompt, params))
        task = asyncio.ensure_future(engine.generate(prompt, params, res))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        res.close()
        (replica,) = await engine.replica_stats()
        assert replica["engine"]["aborted"] == 2 and replica["engine"]["in_flight"] == 0
        assert meter.spent.calls == 2 and engine.stats()["aborted"] == 2
    finally:
        await engine.aclose()


async def test_openai_replicas_under_server_faults_charge_exactly_what_the_server_billed(ray_cluster) -> None:
    """Replicas send one attempt each; the driver retries 429s, 5xx and short replies on the
    pool, and its meter ends equal to what the server billed."""
    with FaultServer(FaultConfig(rate=0.3, kinds=("429", "500", "503", "short"), seed=3)) as srv:
        spec = {"kind": "openai", "base_url": srv.base_url, "model": "fake", "timeout": 10}
        engine = await RayEngine(spec, 2, max_attempts=8, max_failures=50).start()
        try:
            meter = Meter(Budget(completion_tokens=3000))
            sc = SelfConsistency(FixedN(4), params=SamplingParams(temperature=0.8, max_tokens=16))
            batch = await sc.run_many([f"What is {i} + 2?" for i in range(8)], engine, meter, seed=0)
            await asyncio.sleep(0.3)
            s = srv.stats
            assert (meter.spent.prompt_tokens, meter.spent.completion_tokens, meter.spent.calls) == (
                s.billed_prompt_tokens, s.billed_completion_tokens, s.billed_calls)
            assert engine.stats()["retries"] > 0 and sum(s.faults.values()) > 0
            assert all(r.stop_reason != "engine_error" for r in batch.results)
            assert sum(len(r.samples) for r in batch.results) == 32
            assert meter.spent.completion_tokens <= 3000
        finally:
            await engine.aclose()


def test_the_cli_runs_a_dataset_on_ray_replicas(ray_cluster, tmp_path) -> None:
    from typer.testing import CliRunner

    from ttc.bench.cli import app

    with FaultServer(FaultConfig()) as srv:
        out = tmp_path / "runs.jsonl"
        res = CliRunner().invoke(app, ["run", "--dataset", "generator:addition:4:0", "--strategy", "majority:n=3",
                                       "--engine", "openai", "--base-url", srv.base_url, "--model", "fake",
                                       "--ray", "local", "--replicas", "2", "--out", str(out)])
        assert res.exit_code == 0, res.output
        rows = [json.loads(line) for line in out.read_text().splitlines()][1:]
        assert len(rows) == 4 and all(len(r["samples"]) == 3 for r in rows)
        assert srv.stats.requests >= 4
        res = CliRunner().invoke(app, ["run", "--dataset", "generator:addition:4:0", "--engine", "openai",
                                       "--base-url", srv.base_url, "--ray", "local", "--replicas", "0",
                                       "--out", str(tmp_path / "x.jsonl")])
        assert res.exit_code == 2 and "--replicas" in res.output


async def test_a_stream_whose_replica_dies_before_its_first_token_is_sent_again_elsewhere(ray_cluster) -> None:
    engine = await RayEngine({"kind": "scripted", "script": ["one two three"], "delay": 1.0}, 2).start()
    try:
        meter = Meter()
        prompt, params = Prompt(text="stream me"), SamplingParams(max_tokens=8)
        res = meter.reserve(await engine.worst_case(prompt, params))

        async def kill_its_replica() -> None:
            while engine.stats()["in_flight"] == 0:
                await asyncio.sleep(0.01)
            busy = next(i for i in range(2) if engine.stats()[f"replica{i}_in_flight"])
            ray.kill(engine.actors[busy], no_restart=False)

        killer = asyncio.ensure_future(kill_its_replica())
        text = "".join([d.text async for d in engine.stream(prompt, params, res)])
        await killer
        res.close()
        assert text == "one two three"
        assert engine.stats()["lost_attempts"] == 1 and engine.stats()["retries"] == 1
        # the lost attempt: its prompt and call; the one that streamed: everything
        assert meter.spent.calls == 2 and meter.spent.completion_tokens == 3 and meter.spent.generations == 1
    finally:
        await engine.aclose()


def test_bad_settings_are_named(ray_cluster) -> None:
    with pytest.raises(ValueError, match="kind"):
        RayEngine({"kind": "llama"})
    with pytest.raises(ValueError, match="replicas"):
        RayEngine({"kind": "scripted", "script": ["x"]}, 0)
    with pytest.raises(ValueError, match="slack"):
        RayEngine({"kind": "scripted", "script": ["x"]}, 1, slack=-1)
    with pytest.raises(ValueError, match="lost_charge"):
        RayEngine({"kind": "scripted", "script": ["x"]}, 1, lost_charge="half")  # type: ignore[arg-type]


@pytest.mark.real
async def test_two_openai_replicas_on_the_real_server_run_sc_and_particle_filtering(ray_cluster, vllm_server) -> None:
    spec = {"kind": "openai", "base_url": vllm_server.base_url, "model": "smollm2",
            "tokenizer": str(vllm_server.model_dir)}
    engine = await RayEngine(spec, 2).start()
    try:
        params = SamplingParams(temperature=0.8, max_tokens=48)
        budget = Budget(completion_tokens=800)
        qs = ["What is 3 + 4? Put the answer in \\boxed{}.", "What is 6 * 2? Put the answer in \\boxed{}."]
        sc = await asyncio.gather(*(SelfConsistency(FixedN(4), params=params).run(q, engine, budget, seed=i)
                                    for i, q in enumerate(qs)))
        pf = ParticleFiltering(n=2, verifier=ArithmeticStepCheck(), policy=StepPolicy(max_steps=3, max_step_tokens=24),
                               params=params)
        pf_res = await pf.run(qs[0], engine, budget, seed=0)
        for r in [*sc, pf_res]:
            assert r.samples and r.usage.completion_tokens <= 800 and r.stop_reason != "engine_error", r.stop_reason
        # Each fixed-4 vote is one request for n=4 (the rule cannot stop before the fourth);
        # the particle filter sends at least one more.
        assert engine.stats()["requests"] >= 3 and engine.stats()["lost_attempts"] == 0
        assert sum(len(r.samples) for r in sc) >= 8
    finally:
        await engine.aclose()
