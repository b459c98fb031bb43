"""The allocator on the real bundled model (in-process vLLM): a few questions, a small budget."""

from __future__ import annotations

import pytest

from ttc.bench.datasets import addition
from ttc.budget import Budget
from ttc.strategies.allocator import Allocator
from ttc.types import Prompt, SamplingParams

FEW_SHOT = [("What is 2 + 3?", "The answer is 5."), ("What is 14 + 21?", "The answer is 35.")]


def few_shot(e):  # type: ignore[no-untyped-def]
    msgs = []
    for q, a in FEW_SHOT:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return Prompt.of(msgs + [{"role": "user", "content": e.question}])


@pytest.mark.real
async def test_allocator_on_the_real_model(real_engine):  # type: ignore[no-untyped-def]
    exs = addition(2, seed=3, digits=1) + addition(2, seed=3, digits=3)
    budget = Budget(completion_tokens=600)
    alloc = Allocator(
        params=SamplingParams(temperature=0.7, max_tokens=16), initial_k=4, batch=2, max_samples=16,
        max_in_flight=4, prompt_fn=few_shot,
    )
    res = await alloc.run(exs, real_engine, budget, seed=0)
    # the batch never spends more than its budget; per-question usage adds up to it
    assert 0 < res.usage.completion_tokens <= 600
    assert res.usage.completion_tokens == sum(q.tokens for q in res.questions)
    assert res.usage.completion_tokens == sum(s.num_tokens for q in res.questions for s in q.samples)
    assert res.usage.generations == res.total_samples
    # every question got its first round (the budget holds 4 x 4 x 16 worst case) and a stop reason
    assert all(q.num_samples >= 4 for q in res.questions)
    assert all(q.stop_reason in ("settled", "hopeless", "budget", "max_samples", "low_gain") for q in res.questions)
    assert all(q.num_samples <= 16 for q in res.questions)
    assert sum(res.histogram.values()) == 4
    # real answers were parsed and graded
    assert any(q.answer is not None for q in res.questions)
    assert res.accuracy is not None
    # the real model's samples carry real text and token counts
    assert all(s.num_tokens > 0 and s.text for q in res.questions for s in q.samples)
