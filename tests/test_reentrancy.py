"""Re-entrancy: one strategy instance serves many concurrent runs.

Every strategy keeps what it knows about a run in the :class:`~ttc.strategy.Run` it is
handed (never on the instance), so one instance running 64 questions at once gives,
question by question, what 64 runs one after the other give with the same seeds.

The scripted engine's texts here depend only on the prompt (question and assistant
prefix) and on how many times that prompt was asked before: a question's draws do not
depend on what the other questions asked in between, so any difference between the
concurrent and the sequential results comes from the strategy sharing state between runs.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttc import Budget, Meter, Prompt, SamplingParams, Strategy, StrategyResult
from ttc.engines import ScriptedEngine
from ttc.routers import CategoryRoute, EntropyBandPolicy, FunctionClassifier, Route, SemanticRouter
from ttc.strategies import (
    DVTS,
    BeamSearch,
    BestOfN,
    BetaRule,
    ComplexityVoting,
    DeepConf,
    DynasorCoT,
    EarlyExitSelfConsistency,
    ESCWindow,
    FixedN,
    Greedy,
    ParticleFiltering,
    ParticleGibbs,
    PerplexityConsistency,
    SelfConsistency,
    SelfEvalGate,
    SelfEvalPruning,
)
from ttc.verifiers import ArithmeticStepCheck

N_QUESTIONS = 64


def per_prompt_script() -> Callable[[Prompt, int, np.random.Generator], str]:
    """Texts keyed by (prompt, how many times it was asked): step-wise reasoning with a
    varying answer, so votes split and searches branch."""
    asked: dict[str, int] = defaultdict(int)

    def script(p: Prompt, i: int, rng: np.random.Generator) -> str:
        key = f"{p.question}\x00{p.assistant_prefix}"
        k = asked[key]
        asked[key] += 1
        h = int.from_bytes(hashlib.sha256(f"{key}\x00{k}".encode()).digest()[:8], "little")
        a, b = h % 7 + 1, (h >> 8) % 5 + 1
        wrong = (h >> 16) % 4 == 0
        steps = [f"First {a} + {b} = {a + b + (1 if wrong else 0)}.",
                 f"Then {a + b} * 2 = {2 * (a + b)}.",
                 f"So the answer is \\boxed{{{2 * (a + b) + (h >> 24) % 2}}}."]
        depth = p.assistant_prefix.count("\n\n")
        return "\n\n".join(steps[depth:]) if depth < len(steps) else "\\boxed{0}"

    return script


def make_router() -> SemanticRouter:
    def fn(texts: list[str]) -> np.ndarray:
        return np.array([[0.9, 0.1] if int(t.split()[1].rstrip(":")) % 2 else [0.1, 0.9] for t in texts])

    routes = {
        "math": CategoryRoute(reasoning=True, on=Route(name="sc", reasoning=True, strategy=BestOfN(n=3)),
                              off=Route(name="direct", strategy=Greedy())),
        "facts": Route(name="direct", strategy=Greedy(SamplingParams(max_tokens=16))),
    }
    return SemanticRouter(FunctionClassifier(["math", "facts"], fn), EntropyBandPolicy(routes))


def strategies() -> dict[str, Strategy]:
    prm = ArithmeticStepCheck()
    short = SamplingParams(temperature=0.8, max_tokens=48)
    return {
        "greedy": Greedy(),
        "best_of_n": BestOfN(n=4),
        "self_consistency": SelfConsistency(BetaRule(max_samples=12)),
        "esc": SelfConsistency(ESCWindow(w=4, L=12)),
        # One trace at a time: with several in flight, which finishes first (and so sets
        # the online threshold) depends on the event loop's interleaving, not on the run.
        "deepconf": DeepConf(n_init=4, max_traces=8, window=4, parallelism=1),
        "deepconf_offline": DeepConf("offline", n_init=6, window=4),
        "rpc": PerplexityConsistency(n=6),
        "complexity_voting": ComplexityVoting(n=6),
        "particle_filtering": ParticleFiltering(n=4, verifier=prm, params=short),
        "particle_gibbs": ParticleGibbs(n=3, verifier=prm, sweeps=2, params=short),
        "beam_search": BeamSearch(n=4, verifier=prm, m=2, params=short),
        "dvts": DVTS(n=4, verifier=prm, m=2, params=short),
        "dynasor_cot": DynasorCoT("moderate"),
        "early_exit_sc": EarlyExitSelfConsistency(FixedN(3)),
        "self_eval_gate": SelfEvalGate(max_samples=4),
        "self_eval_pruning": SelfEvalPruning(n=4, prefix_tokens=4, max_tokens=64),
        "semantic_router": make_router(),
    }


QUESTIONS = [f"Question {i}: what is twice the sum?" for i in range(N_QUESTIONS)]


def fingerprint(r: StrategyResult) -> tuple:
    """What must not depend on the other runs. The samples' texts are compared as a
    multiset: the draws of one question that run at once (DeepConf's parallel streams)
    may finish in another order when other questions' streams interleave with them."""
    return (r.answer, sorted(s.text for s in r.samples), r.stop_reason, r.budget_detail,
            r.usage.model_dump(exclude={"wall_seconds"}))


@pytest.mark.parametrize("name", sorted(strategies()))
async def test_one_instance_runs_concurrent_questions_as_it_runs_them_one_by_one(name: str) -> None:
    strategy = strategies()[name]
    budget = Budget(completion_tokens=3000)

    engine = ScriptedEngine(per_prompt_script())
    sequential = [await strategy.run(q, engine, budget, seed=i) for i, q in enumerate(QUESTIONS)]

    engine = ScriptedEngine(per_prompt_script())
    concurrent = await asyncio.gather(*(strategy.run(q, engine, budget, seed=i) for i, q in enumerate(QUESTIONS)))

    assert any(r.samples for r in sequential), f"{name}: the scripted runs drew nothing"
    for i, (a, b) in enumerate(zip(sequential, concurrent)):
        assert fingerprint(a) == fingerprint(b), f"{name}: question {i} differs when run concurrently"

    engine = ScriptedEngine(per_prompt_script())
    batch = await strategy.run_many(QUESTIONS, engine, None, question_budget=budget, seed=0, concurrency=8)
    assert [fingerprint(r) for r in batch.results] == [fingerprint(r) for r in sequential]
    assert batch.usage.completion_tokens == sum(r.usage.completion_tokens for r in sequential)


# -- run_many under one parent cap ------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cap=st.integers(1, 600), n=st.integers(1, 12), concurrency=st.sampled_from([None, 1, 3]),
       which=st.sampled_from(["best_of_n", "self_consistency", "beam_search", "deepconf"]))
def test_run_many_holds_one_parent_cap_across_questions(cap: int, n: int, concurrency: int | None, which: str) -> None:
    strategy = strategies()[which]
    engine = ScriptedEngine(per_prompt_script())
    parent = Meter(Budget(completion_tokens=cap))
    batch = strategy.run_many_sync(QUESTIONS[:n], engine, parent, concurrency=concurrency, seed=0)
    assert len(batch.results) == n
    assert batch.usage.completion_tokens == parent.spent.completion_tokens <= cap
    assert sum(r.usage.completion_tokens for r in batch.results) == parent.spent.completion_tokens
    for r in batch.results:
        assert r.stop_reason != "budget" or r.budget_detail == "completion_tokens"


def test_the_allocator_is_a_batch_strategy_with_the_run_many_conventions() -> None:
    from ttc.strategies import Allocator
    from ttc.strategy import BatchResult, BatchStrategy

    alloc = Allocator(params=SamplingParams(temperature=0.8, max_tokens=32), max_samples=6)
    assert isinstance(alloc, BatchStrategy)
    res = alloc.run_sync(QUESTIONS[:8], ScriptedEngine(per_prompt_script()), Budget(completion_tokens=600), seed=0)
    assert isinstance(res, BatchResult) and all(isinstance(r, StrategyResult) for r in res.results)
    assert res.questions == res.results and len(res.results) == 8
    assert res.usage.completion_tokens == sum(r.usage.completion_tokens for r in res.results) <= 600
    assert sum(res.stop_reasons.values()) == 8


# -- parts are arguments: the historical names only set parts -----------------------------------------------------
def test_the_historical_names_are_self_consistency_with_parts() -> None:
    from ttc.strategies import ComplexityVoter, EarlyExit, RPCVoter

    pairs = [
        (EarlyExitSelfConsistency(FixedN(3)),
         SelfConsistency(FixedN(3), sampler=EarlyExit("moderate"), params=SamplingParams(temperature=0.7))),
        (PerplexityConsistency(n=6),
         SelfConsistency(FixedN(6), voter=RPCVoter(), params=SamplingParams(temperature=0.8, logprobs=0))),
        (ComplexityVoting(n=6, top_k=2), SelfConsistency(FixedN(6), voter=ComplexityVoter(2))),
    ]
    for old, parts in pairs:
        for i, q in enumerate(QUESTIONS[:6]):
            a = old.run_sync(q, ScriptedEngine(per_prompt_script()), Budget(completion_tokens=3000), seed=i)
            b = parts.run_sync(q, ScriptedEngine(per_prompt_script()), Budget(completion_tokens=3000), seed=i)
            assert fingerprint(a) == fingerprint(b) and a.confidence == b.confidence, old.name
