"""Unit tests of the self-evaluation gate (Manvi et al.) on the scripted engine."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ttc.budget import Budget
from ttc.engines import ScriptedEngine
from ttc.strategies.self_eval import (
    GateRecord,
    SelfEvalGate,
    SelfEvalPruning,
    SelfEvaluator,
    auroc,
    calibrate_threshold,
    gate_schedule,
    keep_top,
    p_no_from_top,
    simulate_gate,
)
from ttc.types import Prompt

Q = SelfEvaluator().question


def is_eval(prompt: Prompt) -> bool:
    return prompt.messages is not None and prompt.messages[-1].content == Q


def judged_model(sample_texts):  # type: ignore[no-untyped-def]
    """Samples come from ``sample_texts`` in order; the judge says "No" (would not do
    better) only about samples containing "good"."""
    state = {"i": 0}

    def script(prompt: Prompt, i: int, rng) -> str:  # type: ignore[no-untyped-def]
        if is_eval(prompt):
            return "No" if "good" in prompt.messages[-2].content else "Yes"
        t = sample_texts[state["i"] % len(sample_texts)]
        state["i"] += 1
        return t

    return script


def test_p_no_from_top_sums_no_like_vs_yes_like():
    top = [(" No", math.log(0.5)), ("no", math.log(0.1)), ("Yes", math.log(0.2)), (" maybe", math.log(0.2))]
    assert p_no_from_top(top) == pytest.approx(0.6 / 0.8)
    assert p_no_from_top([("hello", 0.0)]) == 0.5
    assert p_no_from_top([("Nope", math.log(0.9)), ("Yes", math.log(0.1))], no_words=("nope",)) == pytest.approx(0.9)


async def test_eval_prompt_appends_question_and_reads_one_token():
    eng = ScriptedEngine(judged_model(["The answer is 3. good"]))
    gate = SelfEvalGate(threshold=0.5, max_samples=4)
    res = await gate.run("What is 1+2?", eng)
    assert res.stop_reason == "self_eval" and len(res.samples) == 1
    ev = eng.prompts[1]
    assert [m.role for m in ev.messages] == ["user", "assistant", "user"]
    assert ev.messages[1].content == "The answer is 3. good"
    assert res.usage_by_kind["self_eval"].completion_tokens == 1
    assert res.samples[0].score == pytest.approx(1.0)
    assert res.answer == "3"


async def test_gate_batches_grow_and_stop_when_gate_closes():
    texts = ["The answer is 1."] * 3 + ["The answer is 2.", "The answer is 5. good", "The answer is 2.", "x"]
    eng = ScriptedEngine(judged_model(texts))
    res = await SelfEvalGate(threshold=0.5, max_samples=16).run("q", eng)
    assert res.stop_reason == "self_eval"
    assert [s.meta["batch"] for s in res.samples] == [1, 2, 2, 4, 4, 4, 4]
    sizes = [e.data["size"] for e in res.trace if e.kind == "self_eval_batch"]
    assert sizes == [1, 2, 4]
    assert res.usage_by_kind["self_eval"].calls == 7


async def test_gate_never_closing_stops_at_max_samples_and_best_select():
    eng = ScriptedEngine(judged_model(["The answer is 1."]))
    res = await SelfEvalGate(threshold=0.1, max_samples=5).run("q", eng)
    assert res.stop_reason == "max_samples"
    assert [s.meta["batch"] for s in res.samples] == [1, 2, 2, 2, 2]  # last batch capped to 2
    eng2 = ScriptedEngine(judged_model(["The answer is 1.", "The answer is 9. good", "The answer is 1."]))
    res2 = await SelfEvalGate(threshold=0.0, max_samples=3, select="best").run("q", eng2)
    assert res2.answer == "9"


async def test_gate_respects_budget():
    eng = ScriptedEngine(judged_model(["The answer is 1."]))
    res = await SelfEvalGate(threshold=0.0, max_samples=64).run("q", eng, Budget(generations=8))
    assert res.stop_reason == "budget"
    assert res.usage.generations <= 8


async def test_pruning_keeps_top_fraction_and_continues_only_them():
    partial = ["good step one"] * 2 + ["bad step one"] * 6  # 3 whitespace tokens each, cut at 2

    def script(prompt: Prompt, i: int, rng) -> str:  # type: ignore[no-untyped-def]
        if is_eval(prompt):
            return "No" if "good" in prompt.messages[-2].content else "Yes"
        if prompt.assistant_prefix:
            return " and done. The answer is 4."
        return partial[i % 8] if i < 8 else "x"

    eng = ScriptedEngine(script)
    res = await SelfEvalPruning(n=8, prefix_tokens=2, keep_fraction=0.25, max_tokens=20).run("q", eng)
    kept = [s for s in res.samples if not s.meta["pruned"]]
    pruned = [s for s in res.samples if s.meta["pruned"]]
    assert len(kept) == 2 and len(pruned) == 6
    assert all(s.text.startswith("good step") and s.text.endswith("The answer is 4.") for s in kept)
    assert all(s.meta["prefix_score"] == pytest.approx(1.0) for s in kept)
    assert all(s.num_tokens == 2 for s in pruned)
    continuations = [p for p in eng.prompts if p.assistant_prefix and not is_eval(p)]
    assert len(continuations) == 2 and all(p.assistant_prefix == "good step" for p in continuations)
    assert res.answer == "4"


def test_keep_top_fraction():
    assert keep_top([0.1, 0.9, 0.5, 0.7], 0.5) == [1, 3]
    assert keep_top([0.1, 0.9, 0.5, 0.7], 0.25) == [1]
    assert keep_top([0.3], 0.25) == [0]
    assert len(keep_top([0.5] * 8, 0.5, np.random.default_rng(1))) == 4
    with pytest.raises(ValueError, match="keep_fraction"):
        keep_top([1.0], 0.0)


def test_gate_schedule_and_simulation():
    assert gate_schedule(16) == [1, 3, 7, 15, 16]
    assert gate_schedule(16, max_samples=5) == [1, 3, 5]
    recs = [GateRecord(0.2, False, 10), GateRecord(0.3, False, 10), GateRecord(0.9, True, 10), GateRecord(0.1, False, 10)]
    ok, drawn, toks = simulate_gate(recs, 0.5)
    assert (ok, drawn, toks) == (True, 3, 30)  # after batch 2 best P(better)=0.1 <= 0.5
    assert simulate_gate(recs, 0.85) == (False, 1, 10)  # first sample's P(better)=0.8 passes


def test_calibration_picks_threshold_on_hand_made_set():
    # Q1: first sample right and confident. Q2: first sample wrong (P(better) 0.6), the
    # 2nd right and confident. Q3: first wrong with P(better) 0.3: more samples do not help.
    q1 = [GateRecord(0.9, True, 100), GateRecord(0.9, True, 100), GateRecord(0.9, True, 100)]
    q2 = [GateRecord(0.4, False, 100), GateRecord(0.95, True, 100), GateRecord(0.2, False, 100)]
    q3 = [GateRecord(0.7, False, 100), GateRecord(0.1, False, 100), GateRecord(0.1, False, 100)]
    free = calibrate_threshold([q1, q2, q3], token_price=0.0)
    # Any threshold in [0.3, 0.6) gets q2 right with 3 samples and stops q1, q3 after one.
    assert free.accuracy == pytest.approx(2 / 3)
    assert 0.3 <= free.threshold < 0.6
    assert free.mean_tokens == pytest.approx((100 + 300 + 100) / 3)
    # A high token price: never sample more (threshold 1), accuracy 1/3.
    pricey = calibrate_threshold([q1, q2, q3], token_price=0.01)
    assert pricey.threshold == pytest.approx(1.0) and pricey.accuracy == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="data"):
        calibrate_threshold([])


def test_auroc():
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert auroc([0.5], [True]) is None
