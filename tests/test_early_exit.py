"""Unit tests of early exit on certainty (Dynasor-CoT probes) and Certaindex, on the
scripted engine: a fake "model" that continues a fixed trace and answers probes
from a per-position script."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttc.budget import Budget, Meter
from ttc.context import RunContext
from ttc.engines import ScriptedEngine
from ttc.strategies.certainty import CertaintyBudgetCurve, isotonic_decreasing
from ttc.strategies.early_exit import (
    DYNASOR_SUFFIX,
    PRESETS,
    PROBE_STYLES,
    DynasorCoT,
    EarlyExit,
    EarlyExitSelfConsistency,
    agreement_reached,
    has_hesitation,
)
from ttc.strategies.stats import certaindex, certainty_from_counts, class_sizes
from ttc.types import Prompt

TRACE = " ".join(f"w{i}" for i in range(400))  # 400 whitespace tokens
ANS_SUFFIX = PROBE_STYLES["answer_is"].suffix


def trace_model(probe_answers, trace: str = TRACE, suffix: str = DYNASOR_SUFFIX):
    """Continues ``trace``; a probe after t trace tokens answers probe_answers(t)."""

    def script(prompt: Prompt, i: int, rng) -> str:  # type: ignore[no-untyped-def]
        pre = prompt.assistant_prefix
        if pre.endswith(suffix):
            t = len(pre[: -len(suffix)].split())
            return probe_answers(t)
        return trace[len(pre):]

    return script


def boxed(a: str) -> str:
    return f"{a}" + "} \\]"


async def run_trace(engine, ee: EarlyExit, budget: Budget | None = None):  # type: ignore[no-untyped-def]
    ctx = RunContext(engine, Meter(budget), seed=0)
    s = await ee.generate_trace(ctx, Prompt.of("q"))
    return s, ctx


# -- the exit rule ------------------------------------------------------------------------
def test_agreement_window_needs_k_consecutive():
    assert not agreement_reached(["5", "5"], 3)
    assert agreement_reached(["5", "5", "5"], 3)
    assert not agreement_reached(["5", "5", "6"], 3)
    assert agreement_reached(["1", "5", "5.0", "5"], 3)  # numeric equivalence
    assert not agreement_reached(["5", None, "5", "5"], 4)  # an invalid probe breaks the window
    assert agreement_reached(["5", None, "5", "5"], 2)


def test_hesitation_words_whole_words_only():
    assert has_hesitation("Wait, 12")
    assert has_hesitation("12 but maybe 13")
    assert has_hesitation("hmm 4")
    assert not has_hesitation("buttons 12")  # not a whole word
    assert not has_hesitation("12", ())


@settings(max_examples=200, deadline=None)
@given(
    answers=st.lists(st.sampled_from(["3", "3.0", "4", None, "", "wait 3"]), max_size=8),
    k=st.integers(1, 4),
)
def test_property_exit_iff_last_k_equivalent_and_clean(answers, k):
    """Through the full probe pipeline: exit iff the last k probes are clean and equal."""
    ee = EarlyExit(k=k, chunk_tokens=5, probe="boxed")
    recs = []
    for j, a in enumerate(answers):
        from ttc.types import Generation

        text = "" if a is None else boxed(a)
        recs.append(ee.read_probe(Generation(text=text, num_tokens=2, finish_reason="stop"), j))
    got = agreement_reached(ee._answers(recs), k)
    last = answers[-k:]
    clean = len(answers) >= k and all(a not in (None, "", "wait 3") for a in last)
    expect = clean and len({float(a) for a in last}) == 1
    assert got == expect


# -- one trace --------------------------------------------------------------------------------
async def test_exits_after_k_agreeing_probes_and_appends_answer():
    # probes: at 10 tokens "7", then "8" from 20 on -> k=3 agree at 40 tokens.
    eng = ScriptedEngine(trace_model(lambda t: boxed("7" if t < 20 else "8")))
    ee = EarlyExit(chunk_tokens=10, k=3, max_tokens=150)
    s, _ = await run_trace(eng, ee)
    assert s.meta["exit"] == "certain"
    assert s.num_tokens == 40
    assert [p["answer"] for p in s.meta["probes"]] == ["7", "8", "8", "8"]
    assert s.answer == "8"
    assert s.text.startswith(" ".join(f"w{i}" for i in range(40)))
    assert s.text.endswith("\\boxed{8} \\]")


async def test_answer_is_format_and_suffix():
    eng = ScriptedEngine(trace_model(lambda t: " 12.", suffix=ANS_SUFFIX))
    ee = EarlyExit(chunk_tokens=10, k=2, probe="answer_is", max_tokens=150)
    s, _ = await run_trace(eng, ee)
    assert s.meta["exit"] == "certain" and s.num_tokens == 20
    assert s.text.endswith("\n\nThe answer is 12.")
    assert eng.prompts[1].assistant_prefix.endswith("\nThe answer is")


async def test_boxed_fast_probe_stops_at_the_closing_brace():
    """The engine drops the matched "}" from the text; the probe re-attaches it to parse."""
    eng = ScriptedEngine(trace_model(lambda t: boxed("12")))
    ee = EarlyExit(chunk_tokens=10, k=2, probe="boxed_fast", max_tokens=150)
    s, _ = await run_trace(eng, ee)
    assert s.meta["exit"] == "certain" and s.num_tokens == 20
    assert [p["answer"] for p in s.meta["probes"]] == ["12", "12"]
    probe_text = s.meta["probes"][0]["text"]
    assert probe_text == "12}"  # stopped at "}" (" \\]" never generated)
    assert s.text.endswith("\\boxed{12} \\]")


async def test_hesitant_and_empty_probes_do_not_count():
    script = {10: boxed("5"), 20: "wait, " + boxed("5"), 30: boxed("5"), 40: boxed(""), 50: boxed("5"),
              60: boxed("N"), 70: boxed("5"), 80: boxed("5")}
    eng = ScriptedEngine(trace_model(lambda t: script.get(t, boxed("9"))))
    ee = EarlyExit(chunk_tokens=10, k=2, max_tokens=150)
    s, _ = await run_trace(eng, ee)
    reasons = [p["reason"] for p in s.meta["probes"]]
    assert reasons == ["ok", "hesitation", "ok", "empty", "ok", "placeholder", "ok", "ok"]
    assert s.meta["exit"] == "certain" and s.num_tokens == 80


async def test_unfinished_boxed_probe_is_empty():
    # the box never closes within the probe -> no answer -> never exits
    eng = ScriptedEngine(trace_model(lambda t: "12 + 3 + 4 + 5"))
    ee = EarlyExit(chunk_tokens=50, k=2, max_tokens=150)
    s, _ = await run_trace(eng, ee)
    assert s.meta["exit"] == "max_tokens" and s.num_tokens == 150
    assert all(p["reason"] == "empty" for p in s.meta["probes"])


async def test_probe_tokens_charged_as_probe_not_trace():
    eng = ScriptedEngine(trace_model(lambda t: boxed("8") + " extra words here"), token_delay=0.002)
    ee = EarlyExit(chunk_tokens=10, k=3, max_tokens=150)
    strat = DynasorCoT(ee)
    res = await strat.run("q", eng, Budget(completion_tokens=10_000))
    s = res.samples[0]
    assert res.stop_reason == "certainty"
    assert s.num_tokens == 30  # trace only
    probe = res.usage_by_kind["probe"]
    assert probe.calls == 3 and probe.completion_tokens == s.meta["probe_tokens"] == 3 * 2
    # the in-flight 4th chunk was cancelled: it billed a call but no completion tokens (scripted engine)
    gen = res.usage_by_kind["generate"]
    assert gen.completion_tokens == 30
    assert gen.calls == 4
    assert res.usage.completion_tokens == 30 + 6
    assert eng.aborted == 1


async def test_main_chunk_cancelled_on_exit_while_in_flight():
    # chunks are slow (token_delay), probes finish first: the in-flight chunk is aborted.
    eng = ScriptedEngine(trace_model(lambda t: boxed("4")), token_delay=0.002)
    ee = EarlyExit(chunk_tokens=20, k=2, max_tokens=200)
    s, ctx = await run_trace(eng, ee)
    assert s.meta["exit"] == "certain"
    assert eng.aborted == 1
    assert eng.in_flight == 0
    assert eng.max_in_flight == 2  # probe concurrent with the next chunk
    assert ctx.meter.by_kind["generate"].calls == 3


async def test_natural_finish_needs_no_exit():
    short = " ".join(f"w{i}" for i in range(25)) + " The answer is 3."
    eng = ScriptedEngine(trace_model(lambda t: boxed(str(t)), trace=short))
    ee = EarlyExit(chunk_tokens=10, k=2, max_tokens=150)
    s, _ = await run_trace(eng, ee)
    assert s.meta["exit"] == "finished" and s.finish_reason == "stop"
    assert s.num_tokens == 29 and s.answer is None  # the strategy's extractor reads the trace


async def test_stream_mode_exits_and_closes_stream():
    eng = ScriptedEngine(trace_model(lambda t: boxed("6")), token_delay=0.001)
    ee = EarlyExit(chunk_tokens=10, k=2, max_tokens=200, mode="stream")
    res = await DynasorCoT(ee).run("q", eng)
    s = res.samples[0]
    assert s.meta["exit"] == "certain" and s.answer == "6" and res.answer == "6"
    assert 20 <= s.num_tokens < 200
    assert eng.aborted == 1 and eng.in_flight == 0
    assert res.usage_by_kind["generate"].completion_tokens == s.num_tokens
    assert res.usage_by_kind["probe"].calls == len(s.meta["probes"]) >= 2


async def test_min_tokens_delays_probes():
    eng = ScriptedEngine(trace_model(lambda t: boxed("4")))
    s, _ = await run_trace(eng, EarlyExit(chunk_tokens=10, k=2, max_tokens=150, min_tokens=50))
    assert s.meta["probes"][0]["at_tokens"] == 50 and s.num_tokens == 60


async def test_budget_runs_out_keeps_partial_trace():
    eng = ScriptedEngine(trace_model(lambda t: boxed(str(t))))
    res = await DynasorCoT(EarlyExit(chunk_tokens=10, k=2, max_tokens=150)).run(
        "q", eng, Budget(completion_tokens=45)
    )
    assert res.stop_reason == "budget" and res.budget_detail == "completion_tokens"
    assert res.usage.completion_tokens <= 45
    assert res.samples and res.samples[0].meta["exit"] == "budget"


def test_presets_mild_to_aggressive():
    eem, eea = EarlyExit("mild"), EarlyExit("aggressive")
    assert (eem.chunk_tokens, eem.k) == (PRESETS["mild"].chunk_tokens, PRESETS["mild"].k)
    assert eem.chunk_tokens * eem.k > EarlyExit("moderate").chunk_tokens * EarlyExit("moderate").k
    assert EarlyExit("moderate").chunk_tokens * EarlyExit("moderate").k > eea.chunk_tokens * eea.k
    assert eea.chunk_tokens * eea.k > EarlyExit("eager").chunk_tokens * EarlyExit("eager").k
    assert EarlyExit("mild", k=7).k == 7
    with pytest.raises(ValueError, match="preset"):
        EarlyExit("reckless")
    with pytest.raises(ValueError, match="probe"):
        EarlyExit(probe="nope")


async def test_presets_exit_earlier_when_aggressive():
    used = {}
    for name in ("mild", "moderate", "aggressive", "eager"):
        eng = ScriptedEngine(trace_model(lambda t: boxed("8")))
        s, _ = await run_trace(eng, EarlyExit(name, max_tokens=400))
        used[name] = s.num_tokens
    assert used["eager"] < used["aggressive"] < used["moderate"] < used["mild"] < 400


async def test_custom_suffix_is_sent():
    suf = "\nSo the final answer is \\boxed{"
    eng = ScriptedEngine(trace_model(lambda t: boxed("1"), suffix=suf))
    s, _ = await run_trace(eng, EarlyExit(chunk_tokens=10, k=2, probe_suffix=suf))
    assert s.meta["exit"] == "certain" and s.num_tokens == 20


async def test_self_consistency_over_early_exit_traces():
    from ttc.strategies.stopping import FixedN

    eng = ScriptedEngine(trace_model(lambda t: boxed("8")))
    sc = EarlyExitSelfConsistency(FixedN(3), early_exit=EarlyExit(chunk_tokens=10, k=2, max_tokens=150))
    res = await sc.run("q", eng)
    assert res.answer == "8" and len(res.samples) == 3
    assert all(s.meta["exit"] == "certain" and s.num_tokens == 20 for s in res.samples)
    assert res.usage_by_kind["generate"].completion_tokens == 60
    assert res.usage_by_kind["probe"].calls == 6
    assert res.confidence == 1.0


async def test_self_consistency_early_exit_budget_stops_cleanly():
    from ttc.strategies.stopping import FixedN

    eng = ScriptedEngine(trace_model(lambda t: boxed(str(t))))
    sc = EarlyExitSelfConsistency(FixedN(4), early_exit=EarlyExit(chunk_tokens=10, k=2, max_tokens=150))
    res = await sc.run("q", eng, Budget(completion_tokens=100))
    assert res.stop_reason == "budget"
    assert res.usage.completion_tokens <= 100


# -- Certaindex ---------------------------------------------------------------------------------
def test_certaindex_values():
    assert certaindex(["1", "1", "1", "1"]) == pytest.approx(1.0)
    assert certaindex(["1", "2", "3", "4"]) == pytest.approx(0.0)
    # two classes of 2 out of 4: H = log 2 -> (log 4 - log 2)/log 4 = 0.5
    assert certaindex(["1", "1.0", "2", "2"]) == pytest.approx(0.5)
    assert certaindex(["7"]) == 0.0
    assert certaindex([None, None]) == pytest.approx(0.0)  # unparseable answers never agree
    assert class_sizes(["3", None, "3"], singletons=True) == [2, 1]
    assert certainty_from_counts([3, 1]) == pytest.approx((np.log(4) - (-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))) / np.log(4))


def test_isotonic_fit_is_non_increasing_and_least_squares():
    xs, ys = isotonic_decreasing([0.0, 0.2, 0.5, 0.8, 1.0], [1.0, 0.6, 0.8, 0.2, 0.0])
    assert list(xs) == [0.0, 0.2, 0.5, 0.8, 1.0]
    assert ys == pytest.approx([1.0, 0.7, 0.7, 0.2, 0.0])


def test_certainty_curve_profile_budget_and_json(tmp_path):
    # Unanimous first-3 never change; split first-3 changed by the rest.
    runs = [["1", "1", "1", "1", "1"]] * 4 + [["1", "2", "3", "4", "4"]] * 4 + [["1", "1", "2", "2", "2"]] * 2
    curve = CertaintyBudgetCurve.profile(runs, k=3, target="changed")
    assert curve.benefit(1.0) == pytest.approx(0.0)
    assert curve.benefit(0.0) == pytest.approx(1.0)
    assert curve.remaining_budget(1.0, 10) == 0
    assert curve.remaining_budget(0.0, 10) == 10
    mids = [curve.remaining_budget(c, 10) for c in np.linspace(0, 1, 11)]
    assert all(a >= b for a, b in itertools.pairwise(mids))
    path = curve.save(tmp_path / "curve.json")
    back = CertaintyBudgetCurve.load(path)
    assert back.xs == curve.xs and back.ys == curve.ys and back.k == 3
    assert json.loads(path.read_text())["target"] == "changed"
    gold = ["1"] * 4 + ["4"] * 4 + ["2"] * 2
    gain = CertaintyBudgetCurve.profile(runs, k=3, gold=gold, target="gain")
    assert gain.benefit(0.0) > 0 and gain.benefit(1.0) == pytest.approx(0.0)


def test_certainty_curve_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="non-increasing"):
        CertaintyBudgetCurve(xs=[0.0, 1.0], ys=[0.0, 1.0])
    with pytest.raises(ValueError, match="certainty"):
        CertaintyBudgetCurve.fit([1.5], [0.0])
    with pytest.raises(ValueError, match="gold"):
        CertaintyBudgetCurve.profile([["1", "2"]], k=1, target="gain")
    p = tmp_path / "bad.json"
    p.write_text("{}")
    with pytest.raises(ValueError, match="xs"):
        CertaintyBudgetCurve.load(p)


@settings(max_examples=100, deadline=None)
@given(answers=st.lists(st.sampled_from(["1", "1.0", "2", "3", None, "x+1", "1+x"]), max_size=9))
def test_stopping_rule_certaindex_agrees_with_certainty_function(answers):
    """strategies/stopping.py's CertaindexEntropy rule and this module's function agree."""
    stopping = pytest.importorskip("ttc.strategies.stopping")
    from ttc.types import Sample

    samples = [Sample(index=i, text="", num_tokens=0, answer=a) for i, a in enumerate(answers)]
    assert stopping.certaindex(samples) == pytest.approx(certaindex(answers), abs=1e-9)
    rule = stopping.CertaindexEntropy(threshold=0.8, min_samples=1)
    assert rule.check(samples).confidence == pytest.approx(certaindex(answers), abs=1e-9)
