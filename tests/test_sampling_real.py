"""Every sampling strategy and outcome verifier of issue 4 on the real bundled model,
through the in-process vLLM engine and the OpenAI engine on a real vLLM server.

Structure and usage are asserted, not accuracy (SmolLM2-135M is weak at arithmetic)."""

from __future__ import annotations

import math

import pytest

from ttc.budget import Budget
from ttc.context import RunContext
from ttc.strategies import (
    BestOfN,
    BetaRule,
    ComplexityVoting,
    DeepConf,
    ESCWindow,
    Greedy,
    PerplexityConsistency,
    SelfConsistency,
    VerifiedAnswer,
)
from ttc.types import Prompt, SamplingParams
from ttc.verifiers import ArithmeticCheck, LLMJudge, MeanLogprob, SelfCertainty

pytestmark = pytest.mark.real

Q = "Compute 23 + 45. End with 'The answer is N.'"
P = SamplingParams(temperature=0.7, max_tokens=48)


def check_usage(r) -> None:  # type: ignore[no-untyped-def]
    assert r.usage.completion_tokens >= sum(s.num_tokens for s in r.samples) > 0
    assert r.usage.prompt_tokens > 0 and r.usage.calls >= 1
    assert all(s.num_tokens <= P.max_tokens for s in r.samples)


async def test_greedy_and_self_consistency(real_engine) -> None:  # type: ignore[no-untyped-def]
    g = await Greedy(P).run(Q, real_engine, seed=0)
    assert len(g.samples) == 1 and g.stop_reason == "done"
    check_usage(g)
    sc = SelfConsistency(BetaRule(max_samples=8), params=P, batch_sizes=(4,))
    r = await sc.run(Q, real_engine, Budget(completion_tokens=2000), seed=0)
    assert 4 <= len(r.samples) <= 8 and r.stop_reason in ("beta", "max_samples")
    assert r.meta["stop_samples"] >= 4 and r.meta["stop_tokens"] > 0
    assert r.answer is None or r.confidence is not None and 0 < r.confidence <= 1
    check_usage(r)


async def test_esc_with_cancellation(real_engine) -> None:  # type: ignore[no-untyped-def]
    r = await SelfConsistency(ESCWindow(w=3, L=6), params=P).run(Q, real_engine, seed=1)
    assert r.stop_reason in ("esc", "max_samples") and r.meta["batches"][0] == 3
    assert len([s for s in r.samples if not s.meta.get("late")]) in (3, 6)
    check_usage(r)


async def test_verified_answer_stop(real_engine) -> None:  # type: ignore[no-untyped-def]
    sc = SelfConsistency(VerifiedAnswer(max_samples=8, pass_threshold=1.0), params=P, weighting=ArithmeticCheck())
    r = await sc.run(Q, real_engine, seed=0)
    assert r.stop_reason in ("verified", "max_samples") and 2 <= len(r.samples) <= 8
    assert all(s.score is not None for s in r.samples)  # every batch scored before the check
    if r.stop_reason == "verified":
        assert r.samples[-1].score == 1.0 or any(s.score == 1.0 for s in r.samples[-2:])
        assert r.answer is not None
    check_usage(r)


async def test_best_of_n_with_verifiers(real_engine) -> None:  # type: ignore[no-untyped-def]
    r = await BestOfN(4, ArithmeticCheck(), params=P).run(Q, real_engine, seed=0)
    assert len(r.samples) == 4 and len(r.meta["scores"]) == 4
    assert all(0 <= s <= 1 for s in r.meta["scores"])
    check_usage(r)
    lp = P.model_copy(update={"logprobs": 5})
    w = await BestOfN(4, SelfCertainty(k=5), weighted=True, params=lp).run(Q, real_engine, seed=0)
    assert all(s.logprobs and len(s.logprobs) == s.num_tokens for s in w.samples)
    assert all(x >= 0 for x in w.meta["scores"])
    m = await BestOfN(3, MeanLogprob(), params=lp).run(Q, real_engine, seed=0)
    assert all(0 < x <= 1 for x in m.meta["scores"])


async def test_deepconf_online_and_offline(real_engine) -> None:  # type: ignore[no-untyped-def]
    on = DeepConf("online", n_init=4, max_traces=8, eta=50, tau=0.95, window=8, top_k=5, parallelism=2, params=P)
    r = await on.run(Q, real_engine, seed=0)
    assert r.stop_reason in ("consensus", "max_traces")
    assert math.isfinite(r.meta["threshold"]) and r.meta["traces"] <= 8
    warm = [s for s in r.samples if s.meta["phase"] == "warmup"]
    assert len(warm) == 4 and all(len(s.logprobs or []) == s.num_tokens for s in warm)
    for s in r.samples:
        if s.meta.get("killed"):
            assert s.finish_reason == "abort" and not s.meta["voter"]
    check_usage(r)
    off = await DeepConf("offline", max_traces=4, eta=50, window=8, top_k=5, params=P).run(Q, real_engine, seed=0)
    assert off.meta["voters"] == 2 and len(off.samples) == 4
    check_usage(off)


async def test_rpc_and_complexity(real_engine) -> None:  # type: ignore[no-untyped-def]
    r = await PerplexityConsistency(4, params=P).run(Q, real_engine, seed=0)
    assert len(r.samples) == 4 and len(r.meta.get("path_probs", [])) in (0, 4)
    assert all(s.logprobs for s in r.samples)
    check_usage(r)
    c = await ComplexityVoting(4, top_k=2, params=P).run(Q, real_engine, seed=0)
    assert len(c.samples) == 4
    check_usage(c)


async def test_llm_judge_pointwise_and_pairwise(real_engine) -> None:  # type: ignore[no-untyped-def]
    from ttc.types import Sample

    ctx = RunContext(real_engine, seed=0)
    prompt = Prompt.of("What is 23 + 45?")
    s = [Sample(index=0, text="23 + 45 = 68. The answer is 68.", num_tokens=12, answer="68"),
         Sample(index=1, text="23 + 45 = 71. The answer is 71.", num_tokens=12, answer="71")]
    pw = await LLMJudge().score(ctx, prompt, s)
    assert len(pw) == 2 and all(0 <= x <= 1 for x in pw)
    pair = await LLMJudge("pairwise").score(ctx, prompt, s)
    assert pair[0] + pair[1] == pytest.approx(1.0)
    v = ctx.meter.by_kind["verify"]
    assert v.calls == 4 and v.completion_tokens <= 4 and v.prompt_tokens > 0
