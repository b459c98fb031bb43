"""The allocator on ScriptedEngine: budget invariant (hypothesis), concurrency,
settled / hopeless / abstain stopping, per-bin tables, results."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttc.bench.datasets import Example
from ttc.budget import Budget
from ttc.engines import ScriptedEngine
from ttc.strategies.allocator import (
    AllocationResult,
    Allocator,
    BinPolicy,
    CurveGain,
    FlawsPolicy,
    QuestionView,
    VotePosteriorGain,
    fit_bin_table,
)
from ttc.strategies.gain import CoverageCurves
from ttc.types import SamplingParams
from ttc.verifiers.base import OutcomeVerifier

PARAMS = SamplingParams(temperature=0.8, max_tokens=12)


def script(prompt, i, rng):  # type: ignore[no-untyped-def]
    """Questions read "Q<i> p=<P(correct)> a=<answer> w=<spread of wrong answers, 0 = unparseable>"."""
    m = re.search(r"p=([\d.]+) a=(\d+) w=(\d+)", prompt.question)
    p, a, w = float(m[1]), m[2], int(m[3])
    if rng.random() < p:
        return f"so the answer is {a}."
    if w == 0:
        return "no idea at all"
    return f"so the answer is {1000 + int(rng.integers(0, w))}."


def questions(spec):  # type: ignore[no-untyped-def]
    return [Example(id=f"q{i}", question=f"Q{i} p={p} a={i} w={w}", answer=str(i)) for i, (p, w) in enumerate(spec)]


def alloc(**kw):  # type: ignore[no-untyped-def]
    kw.setdefault("params", PARAMS)
    kw.setdefault("prompt_fn", lambda e: e.question)
    return Allocator(**kw)


def check_accounting(res: AllocationResult, eng: ScriptedEngine, budget: Budget) -> None:
    for k, lim in budget.limits().items():
        spent = res.usage.total_tokens if k == "total_tokens" else getattr(res.usage, k)
        assert spent <= lim, f"{k}: spent {spent} > {lim}"
    # spent == sum of what was billed per question; every drawn sample in exactly one question
    per_q = [q.usage for q in res.questions]
    assert res.usage.completion_tokens == sum(u.completion_tokens for u in per_q)
    assert res.usage.prompt_tokens == sum(u.prompt_tokens for u in per_q)
    assert res.usage.generations == sum(u.generations for u in per_q) == eng.samples_served
    assert res.total_samples == eng.samples_served
    assert sum(q.tokens for q in res.questions) == sum(s.num_tokens for q in res.questions for s in q.samples)
    assert sum(res.histogram.values()) == len(res.questions)
    assert sum(k * v for k, v in res.histogram.items()) == res.total_samples


SPEC = st.lists(
    st.tuples(st.sampled_from([0.0, 0.1, 0.5, 0.7, 0.95, 1.0]), st.sampled_from([0, 2, 30])), min_size=1, max_size=10
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    spec=SPEC,
    tokens=st.integers(1, 600),
    total=st.one_of(st.none(), st.integers(1, 1500)),
    gens=st.one_of(st.none(), st.integers(1, 80)),
    in_flight=st.integers(1, 6),
    batch=st.integers(1, 4),
    seed=st.integers(0, 3),
    native_n=st.booleans(),
)
async def test_budget_invariant(spec, tokens, total, gens, in_flight, batch, seed, native_n):
    eng = ScriptedEngine(script, delay=0.002, token_delay=0.0002, seed=seed, native_n=native_n)
    budget = Budget(completion_tokens=tokens, total_tokens=total, generations=gens)
    res = await alloc(initial_k=2, batch=batch, max_samples=12, max_in_flight=in_flight).run(
        questions(spec), eng, budget, seed=seed
    )
    check_accounting(res, eng, budget)
    assert eng.max_in_flight <= in_flight
    assert all(q.stop_reason in ("settled", "hopeless", "budget", "max_samples", "low_gain") for q in res.questions)
    assert all(q.num_samples <= 12 for q in res.questions)


async def test_scheduler_keeps_the_engine_busy():
    eng = ScriptedEngine(script, delay=0.02)
    spec = [(0.5, 30)] * 12
    res = await alloc(max_in_flight=5, max_samples=12).run(questions(spec), eng, Budget(completion_tokens=5000))
    assert eng.max_in_flight == 5
    check_accounting(res, eng, Budget(completion_tokens=5000))


async def test_straggler_does_not_idle_the_engine():
    """One slow question: the others keep the engine at its limit meanwhile."""

    class Slow(ScriptedEngine):
        async def _generate(self, prompt, params, billing):  # type: ignore[no-untyped-def]
            self.delay = 0.3 if "Q0 " in prompt.question else 0.005
            return await super()._generate(prompt, params, billing)

    eng = Slow(script)
    spec = [(0.5, 30)] * 8
    res = await alloc(max_in_flight=3, max_samples=16, per_question_in_flight=1).run(
        questions(spec), eng, Budget(completion_tokens=20_000)
    )
    q0_done = max(e.t for e in res.trace if e.kind == "stop" and e.data["q"] == 0)
    others = [e.t for e in res.trace if e.kind == "unit" and e.data["q"] != 0]
    assert len(others) > 8
    # Everyone else was served while Q0's slow units were outstanding.
    assert all(t < q0_done for t in others)
    assert eng.max_in_flight == 3


async def test_settled_and_hopeless_stopping():
    eng = ScriptedEngine(script, seed=1)
    spec = [(1.0, 2), (0.0, 0), (0.0, 1000)]  # unanimous; never parseable; flat wrong answers
    res = await alloc(initial_k=4, max_samples=30, hopeless_after=8).run(
        questions(spec), eng, Budget(completion_tokens=10_000), seed=0
    )
    easy, unparseable, flat = res.questions
    assert easy.stop_reason == "settled" and easy.num_samples == 4 and easy.correct
    assert easy.meta["p_mode"] == pytest.approx(1 - 1 / 32)
    assert unparseable.stop_reason == "hopeless" and unparseable.answer is None and unparseable.num_samples == 8
    assert flat.stop_reason == "hopeless" and flat.num_samples == 8
    assert res.stop_reasons == {"settled": 1, "hopeless": 2}


async def test_contested_questions_get_more_samples_than_easy_ones():
    eng = ScriptedEngine(script, seed=2)
    spec = [(1.0, 2)] * 4 + [(0.5, 2)] * 4
    res = await alloc(max_samples=24).run(questions(spec), eng, Budget(completion_tokens=3000), seed=0)
    easy = [q.num_samples for q in res.questions[:4]]
    hard = [q.num_samples for q in res.questions[4:]]
    assert max(easy) == 4 and sum(hard) > 1.5 * sum(easy)
    assert res.accuracy is not None and res.accuracy >= 0.6


async def test_budget_stop_and_every_question_answered_from_its_samples():
    eng = ScriptedEngine(script, seed=3)
    spec = [(0.6, 3)] * 6
    budget = Budget(completion_tokens=150)
    res = await alloc(initial_k=2, max_samples=30).run(questions(spec), eng, budget, seed=0)
    check_accounting(res, eng, budget)
    assert "budget" in res.stop_reasons
    assert res.budget_detail is None or res.budget_detail == "completion_tokens"


async def test_max_samples_and_low_gain_floor():
    eng = ScriptedEngine(script, seed=4)
    res = await alloc(initial_k=2, batch=2, max_samples=6, threshold=0.999, hopeless_after=100).run(
        questions([(0.5, 2)]), eng, Budget(completion_tokens=5000)
    )
    assert res.questions[0].stop_reason == "max_samples" and res.questions[0].num_samples == 6
    eng = ScriptedEngine(script, seed=4)
    res = await alloc(initial_k=2, min_gain_per_token=1.0).run(questions([(0.5, 2)] * 3), eng, Budget())
    assert res.stop_reasons == {"low_gain": 3} and res.total_samples == 6


class PassIfEven(OutcomeVerifier):
    """Passes answers that are even numbers (a deliberately imperfect verifier)."""

    async def score(self, ctx, prompt, samples):  # type: ignore[no-untyped-def]
        return [1.0 if s.answer is not None and int(float(s.answer)) % 2 == 0 else 0.0 for s in samples]


async def test_verifier_mode_settles_on_pass_and_abstains_at_the_flaws_cap():
    pop = [(0.6, 0.02, 1.0), (0.2, 0.05, 1.0), (0.02, 0.15, 1.0), (0.0, 0.1, 1.0)]
    flaws = FlawsPolicy(population=pop, fp_cost=1.0)
    k = flaws.k_cap()
    assert k == 2
    eng = ScriptedEngine(script, seed=5)
    # q0 answer 0 (even, always right) passes; q1 answer 1 (odd) never passes, wrong answers are unparseable
    spec = [(1.0, 2), (1.0, 2)]
    res = await alloc(initial_k=1, batch=1, verifier=PassIfEven(), flaws=flaws).run(
        questions(spec), eng, Budget(completion_tokens=5000)
    )
    q0, q1 = res.questions
    assert q0.stop_reason == "settled" and q0.answer == "0" and q0.num_samples == 1
    assert q1.stop_reason == "abstain" and q1.answer is None and q1.num_samples == k
    assert q1.correct is False  # abstentions count as not correct


async def test_bin_table_skips_and_caps():
    eng = ScriptedEngine(script, seed=6)
    spec = [(0.0, 1000)] * 2 + [(0.6, 2)] * 2

    def binner(v: QuestionView) -> int:
        return 0 if v.agreement >= 0.5 else 1

    table = {0: BinPolicy(max_samples=6), 1: BinPolicy(skip=True)}
    res = await alloc(initial_k=4, binner=binner, table=table).run(questions(spec), eng, Budget(completion_tokens=5000))
    for q in res.questions[:2]:
        assert q.bin == 1 and q.stop_reason == "hopeless" and q.num_samples == 4
    for q in res.questions[2:]:
        assert q.bin == 0 and q.num_samples <= 6
    with pytest.raises(ValueError, match="binner"):
        Allocator(table=table)


def test_fit_bin_table():
    acc = {0: [0.9, 0.9, 0.92, 0.92], 1: [0.3, 0.45, 0.55, 0.6], 2: [0.0, 0.0, 0.01, 0.01]}
    t = fit_bin_table(acc, {0: 10, 1: 10, 2: 10}, price_per_token=0.002, min_gain=0.02)
    assert t[0].skip and t[2].skip and not t[1].skip and t[1].max_samples == 4


async def test_curve_gain_prefers_the_bin_with_the_steeper_curve():
    curves = CoverageCurves(params={0: (-0.2, -0.8), 1: (-3.0, -0.3)})
    eng = ScriptedEngine(script, seed=7)
    spec = [(0.5, 30)] * 4

    def binner(v: QuestionView) -> int:
        return int(v.index % 2)

    res = await alloc(initial_k=2, gain=CurveGain(curves), binner=binner, threshold=1.0, hopeless_after=100,
                      max_samples=40).run(questions(spec), eng, Budget(completion_tokens=400))
    by_bin = {b: np.mean([q.num_samples for q in res.questions if q.bin == b]) for b in (0, 1)}
    assert by_bin[1] > by_bin[0]


def test_vote_posterior_gain_methods():
    v = QuestionView(index=0, question="q", samples=[], counts=[3, 1], completion_tokens=0)
    v.samples = [None] * 4  # type: ignore[list-item]
    beta = VotePosteriorGain()(v, 4)
    dirichlet = VotePosteriorGain(method="dirichlet", draws=20_000)(v, 4)
    assert beta > 0 and dirichlet > 0
    assert VotePosteriorGain(calibration=lambda _: 0.5)(v, 4) == pytest.approx(beta / 2)
    with pytest.raises(ValueError, match="method"):
        VotePosteriorGain(method="x")(v, 1)


def test_run_sync_and_prompt_likes():
    eng = ScriptedEngine(["the answer is 7."])
    res = alloc().run_sync(["What is 3 + 4?", "What is 5 + 2?"], eng, Budget(completion_tokens=500), seed=0)
    assert res.answers == ["7", "7"] and res.accuracy is None
    assert all(q.stop_reason == "settled" for q in res.questions)
    assert res.records()[0]["samples"] == 4 and "allocation:" in res.summary()
    AllocationResult.model_validate_json(res.model_dump_json())


def test_bad_arguments():
    with pytest.raises(ValueError, match="initial_k"):
        Allocator(initial_k=0)
    with pytest.raises(ValueError, match="threshold"):
        Allocator(threshold=0.4)
    with pytest.raises(ValueError, match="verifier"):
        Allocator(flaws=FlawsPolicy(population=[(0.5, 0.1, 1.0)]))


async def test_wall_clock_deadline_stops_the_batch():
    eng = ScriptedEngine(script, delay=0.05)
    res = await alloc(max_in_flight=2, max_samples=30).run(
        questions([(0.5, 30)] * 6), eng, Budget(wall_seconds=0.3), seed=0
    )
    assert "budget" in res.stop_reasons
    assert res.usage.completion_tokens == sum(q.tokens for q in res.questions)
    assert res.usage.wall_seconds < 1.0


async def test_engine_error_stops_only_that_question():
    def flaky(prompt, i, rng):  # type: ignore[no-untyped-def]
        if "Q1 " in prompt.question:
            raise RuntimeError("boom")
        return script(prompt, i, rng)

    res = await alloc().run(questions([(1.0, 2), (1.0, 2)]), ScriptedEngine(flaky), Budget(completion_tokens=500))
    assert res.questions[0].stop_reason == "settled"
    assert res.questions[1].stop_reason == "error" and "boom" in res.questions[1].meta["error"]


async def test_first_round_shrinks_to_leave_budget_for_allocation():
    """A budget too small for initial_k samples everywhere: the first round takes at most
    first_round_share of it (never below min_initial_k), the rest goes by gain."""
    spec = [(1.0, 2)] * 10 + [(0.5, 2)] * 10
    eng = ScriptedEngine(script)
    budget = Budget(generations=20 * 3)  # 3 samples a question on average
    # threshold 0.85: two agreeing samples settle a question (P(leader is the mode) = 0.875)
    res = await alloc(initial_k=4, min_initial_k=2, first_round_share=0.5, batch=1, max_samples=12,
                      threshold=0.85).run(questions(spec), eng, budget, seed=0)
    check_accounting(res, eng, budget)
    easy = [q.num_samples for q in res.questions[:10]]
    hard = [q.num_samples for q in res.questions[10:]]
    assert min(easy + hard) >= 2  # the first round still covers every question
    assert easy == [2] * 10  # settled by the first round
    assert sum(hard) == 60 - 20  # everything left went to the split votes

    # without the shrink, initial_k=4 would take 80 samples: the budget ends inside the first round
    eng2 = ScriptedEngine(script)
    res2 = await alloc(initial_k=4, first_round_share=None, batch=1, max_samples=12, threshold=0.85).run(
        questions(spec), eng2, budget, seed=0)
    assert sum(q.num_samples for q in res2.questions[:10]) >= 20 + 10  # easy ones got >= 3 each


def test_first_round_arguments_are_checked():
    with pytest.raises(ValueError, match="min_initial_k"):
        Allocator(initial_k=2, min_initial_k=3)
    with pytest.raises(ValueError, match="first_round_share"):
        Allocator(first_round_share=0.0)


def _length_encoder(texts):  # type: ignore[no-untyped-def]
    """A stand-in embedding: the question's length (long = hard in the data below)."""
    return np.asarray([[len(t) / 10.0] for t in texts])


def test_learned_difficulty_bins_and_skips_the_bin_more_samples_do_not_help():
    from ttc.strategies.allocator import LearnedDifficulty

    easy = [(f"Q{i} short", ["1", "1", "2", "1", "1", "1"], "1") for i in range(6)]
    mid = [(f"Q{i} a bit longer here", ["2", "1", "3", "1", "1", "4"], "1") for i in range(6)]
    hard = [(f"Q{i} a very much longer question text", ["5", "6", "7", "8", "9", "3"], "1") for i in range(6)]
    rows = easy + mid + hard
    ld = LearnedDifficulty.fit([q for q, _, _ in rows], [a for _, a, _ in rows], [r for _, _, r in rows],
                               _length_encoder, n_bins=3, first_k=2, min_gain=0.05)
    assert [ld.bin_of(q) for q, _, _ in easy] == [0] * 6
    assert [ld.bin_of(q) for q, _, _ in hard] == [2] * 6
    assert ld.curves(2, 6) == 0.0 and 2 in ld.table and ld.table[2].skip  # never right: skipped
    assert 1 not in ld.table  # the middle bin gains from more samples
    view = QuestionView(index=0, question=hard[0][0], samples=[], counts=[], completion_tokens=0)
    assert ld(view) == 2
    with pytest.raises(ValueError, match="equal"):
        LearnedDifficulty.fit(["a"], [], ["1"], _length_encoder)


async def test_allocator_with_learned_difficulty_stops_the_skipped_bin_after_the_first_round():
    from ttc.strategies.allocator import LearnedDifficulty

    spec = [(0.5, 2)] * 4 + [(0.0, 30)] * 4  # the last four are never right
    exs = questions(spec)
    texts = [e.question for e in exs]
    answers = [["1", "2", "1", "1"] if p > 0 else ["5", "6", "7", "8"] for p, _ in spec]
    # a stand-in embedding that tells the two groups apart
    ld = LearnedDifficulty.fit(texts, answers, ["1"] * 8, lambda ts: np.asarray([[float("p=0.0" in t)] for t in ts]),
                               n_bins=2, first_k=2)
    assert ld.table and all(p.skip for p in ld.table.values())
    eng = ScriptedEngine(script)
    budget = Budget(generations=60)
    res = await alloc(initial_k=2, batch=2, max_samples=12, binner=ld, table=ld.table).run(exs, eng, budget, seed=0)
    check_accounting(res, eng, budget)
    hopeless = res.questions[4:]
    assert all(q.stop_reason == "hopeless" and q.num_samples == 2 for q in hopeless)
    assert sum(q.num_samples for q in res.questions[:4]) > 8  # the budget went to the others
