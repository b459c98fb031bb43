"""Step-wise searches on the real bundled model, through the in-process vLLM engine and
the OpenAI engine on a real vLLM server (``real_engine`` runs each test on both)."""

from __future__ import annotations

from collections import Counter

import networkx as nx
import pytest

from ttc import Budget, SamplingParams
from ttc.strategies import DVTS, BeamSearch, ParticleFiltering, ParticleGibbs, StepPolicy, genealogy_graph
from ttc.verifiers import ArithmeticStepCheck, LLMJudgeStepVerifier

pytestmark = pytest.mark.real

COT = "\nThink step by step, then end with 'The answer is N.'"
QUESTIONS = [
    "Ann has 3 apples. She gets 4 more, then doubles them. How many apples does she have?" + COT,
    "Ben has 10 coins. He gives away 3, then gets 5 more. How many coins does he have?" + COT,
]
POLICY = StepPolicy(max_steps=3, max_step_tokens=40)
PARAMS = SamplingParams(temperature=0.8)


def _check_result(r, max_steps: int = 3) -> None:  # type: ignore[no-untyped-def]
    assert r.stop_reason == "done", r.summary()
    assert r.samples and r.chosen is not None
    for s in r.samples:
        assert 1 <= s.meta["steps"] <= max_steps or s.meta["finish"] == "empty"
        assert "<|im_start|>" not in s.text and "<|im_end|>" not in s.text
        if not s.meta["finished"]:
            pytest.fail(f"unfinished particle in a completed run: {s.meta}")
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0
    g = genealogy_graph(r)
    root = next(v for v in g if g.in_degree(v) == 0)
    for s in r.samples:
        # the genealogy path's step texts rebuild the particle's text exactly
        path = nx.shortest_path(g, root, s.meta["particle"])
        assert "".join(g.nodes[v]["text"] for v in path) == s.text
        # a step that ended on the delimiter carries it again (vLLM drops stop strings)
        steps = [g.nodes[v]["text"] for v in path[1:]]
        assert all("\n\n" not in t[:-2] for t in steps if t.endswith("\n\n"))


async def test_particle_filtering_real(real_engine) -> None:  # type: ignore[no-untyped-def]
    pf = ParticleFiltering(3, ArithmeticStepCheck(), policy=POLICY, params=PARAMS)
    for i, q in enumerate(QUESTIONS):
        r = await pf.run(q, real_engine, seed=i)
        _check_result(r)
        steps = [e.data for e in r.trace if e.kind == "pf_step"]
        assert 1 <= len(steps) <= POLICY.max_steps
        # one step per live particle per step; finished particles are never extended;
        # resampled copies of one prefix share a request (n = copies)
        live_next = [sum(not e["particles"][a]["finished"] for a in (e["ancestors"] or range(3))) for e in steps]
        assert r.usage.generations == 3 + sum(live_next[:-1])
        assert r.usage.calls <= r.usage.generations
        if real_engine.name == "vllm" and len(steps) > 1:
            assert r.usage.cached_prompt_tokens > 0  # the shared prefix came from the prefix cache


async def test_particle_gibbs_real(real_engine) -> None:  # type: ignore[no-untyped-def]
    pg = ParticleGibbs(2, ArithmeticStepCheck(), sweeps=2, policy=StepPolicy(max_steps=2, max_step_tokens=32),
                       params=PARAMS)
    r = await pg.run(QUESTIONS[0], real_engine, seed=0)
    _check_result(r, max_steps=2)
    assert {s.meta["sweep"] for s in r.samples} == {0, 1}
    ref = next(e.data for e in r.trace if e.kind == "pg_reference")
    for e in (e.data for e in r.trace if e.kind == "pf_step" and e.data["sweep"] == 1):
        [q] = [q for q in e["particles"] if q["reference"]]
        k = min(e["step"], len(ref["prefix_scores"])) - 1
        assert q["score"] == pytest.approx(ref["prefix_scores"][k])


async def test_beam_search_real(real_engine) -> None:  # type: ignore[no-untyped-def]
    r = await BeamSearch(4, ArithmeticStepCheck(), m=2, policy=POLICY, params=PARAMS).run(
        QUESTIONS[1], real_engine, seed=0)
    _check_result(r)


async def test_dvts_real(real_engine) -> None:  # type: ignore[no-untyped-def]
    r = await DVTS(4, ArithmeticStepCheck(), m=2, policy=POLICY, params=PARAMS).run(QUESTIONS[0], real_engine, seed=0)
    _check_result(r)
    assert len(r.samples) <= 2


async def test_llm_judge_real_and_budget(real_engine) -> None:  # type: ignore[no-untyped-def]
    judge = LLMJudgeStepVerifier(aggregate="last", top_logprobs=5)
    pf = ParticleFiltering(2, judge, policy=StepPolicy(max_steps=2, max_step_tokens=32), params=PARAMS)
    r = await pf.run(QUESTIONS[1], real_engine, seed=0)
    assert r.usage_by_kind["verify"].calls >= 2
    assert all(0.0 <= x <= 1.0 for s in r.samples for x in s.meta["step_scores"])
    # a tight budget: the run stops on it and returns a (marked) answer, never raises
    r2 = await ParticleFiltering(3, ArithmeticStepCheck(), policy=POLICY, params=PARAMS).run(
        QUESTIONS[0], real_engine, Budget(completion_tokens=100), seed=1)
    assert r2.stop_reason == "budget" and r2.usage.completion_tokens <= 100
    assert r2.chosen is not None and r2.meta["partial"] == (not r2.chosen.meta["finished"])


async def test_resampled_copies_cost_at_most_a_kv_block_each(vllm_engine) -> None:  # type: ignore[no-untyped-def]
    """Copies of a resampled particle continue as one call with n = copies: one turn resumes
    the particle's kept request, each other copy starts a request of its own that reads the
    prefix's full KV blocks from the prefix cache and computes only its last partial block."""
    pf = ParticleFiltering(6, ArithmeticStepCheck(), policy=POLICY, params=PARAMS, resample="always")
    before = vllm_engine.stats()
    r = await pf.run(QUESTIONS[0], vllm_engine, seed=3)
    after = vllm_engine.stats()
    _check_result(r)
    forked = after["forked_turns"] - before["forked_turns"]
    work = after["forked_prompt_tokens"] - before["forked_prompt_tokens"]
    steps = [e.data for e in r.trace if e.kind == "pf_step"]
    copies = sum(
        max(0, n - 1) for e in steps[:-1]
        for n in Counter(e["particles"][a]["particle"] for a in (e["ancestors"] or range(6))
                         if not e["particles"][a]["finished"]).values())
    if len(steps) > 1:  # a later step continued particles: at least one resumed its kept request
        assert after["resumed_turns"] > before["resumed_turns"]
    assert forked <= copies  # only copies beyond the one that resumed start requests of their own
    if forked:
        assert 0 < work <= forked * vllm_engine.block_size, (forked, work)
