"""Unit tests of the router's decision policy, routes, calibration arithmetic and the
router strategy on scripted engines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ttc.bench.datasets import COT_SUFFIX, DIRECT_SUFFIX, Example
from ttc.budget import Budget, Meter
from ttc.context import RunContext
from ttc.engines import ScriptedEngine
from ttc.routers import (
    CategoryRoute,
    ComplexitySignal,
    EntropyBandPolicy,
    FunctionClassifier,
    ItemRecord,
    Measurement,
    Route,
    RoutingTable,
    SemanticRouter,
    choose_routes,
    default_grader,
    detect_family,
    entropy_band,
    normalised_entropy,
    summarise,
)
from ttc.strategies.simple import BestOfN, Greedy
from ttc.types import Prompt, SamplingParams, StrategyResult

ON = Route(name="cot", reasoning=True)
OFF = Route(name="direct", reasoning=False)


def cat(flag: bool) -> CategoryRoute:
    return CategoryRoute(reasoning=flag, on=ON, off=OFF)


@pytest.fixture
def policy() -> EntropyBandPolicy:
    # math reasons, facts and chat answer directly, code reasons.
    return EntropyBandPolicy({"math": cat(True), "facts": cat(False), "chat": cat(False), "code": cat(True)})


# -- entropy and bands ------------------------------------------------------------------------------
def test_normalised_entropy_extremes():
    assert normalised_entropy([1.0, 0.0, 0.0]) == 0.0
    assert normalised_entropy([0.25] * 4) == pytest.approx(1.0)
    assert normalised_entropy([1.0]) == 0.0
    p = [0.7, 0.2, 0.1]
    h = -sum(x * math.log(x) for x in p) / math.log(3)
    assert normalised_entropy(p) == pytest.approx(h)


@pytest.mark.parametrize(
    "h, band",
    [(0.0, "low"), (0.3999, "low"), (0.4, "medium"), (0.5999, "medium"), (0.6, "medium_high"),
     (0.7999, "medium_high"), (0.8, "high"), (0.8 - 1e-12, "high"), (1.0, "high")],
)
def test_entropy_band_boundaries_belong_to_the_band_above(h, band):
    assert entropy_band(h) == band


def test_high_band_reasons_even_when_every_flag_is_off(policy):
    d, route = policy.decide({"facts": 0.5, "chat": 0.5, "math": 0.0, "code": 0.0}, entropy=0.8)
    assert d.band == "high" and d.reasoning and route is ON
    assert d.top_category == "chat"  # ties broken by name, deterministically
    d2, _ = policy.decide({"facts": 0.9, "chat": 0.1, "math": 0.0, "code": 0.0}, entropy=0.7999)
    assert d2.band == "medium_high" and not d2.reasoning


def test_medium_high_band_is_a_weighted_top2_vote(policy):
    # top-2: facts (off) 0.55, math (on) 0.45 -> on-share 0.45 < 0.5 -> off
    d, route = policy.decide({"facts": 0.55, "math": 0.45, "code": 0.0, "chat": 0.0}, entropy=0.6)
    assert d.band == "medium_high" and not d.reasoning and route is OFF
    assert d.vote_share == pytest.approx(0.45)
    # the third category (code, on) does not vote in this band
    d, _ = policy.decide({"facts": 0.4, "chat": 0.35, "code": 0.25, "math": 0.0}, entropy=0.6)
    assert not d.reasoning and d.vote_share == pytest.approx(0.0)
    # top-1 off but the on-mass wins among the top-2: reason
    d, _ = policy.decide({"facts": 0.40, "math": 0.38, "code": 0.22, "chat": 0.0}, entropy=0.75)
    assert d.vote_share == pytest.approx(0.38 / 0.78) and not d.reasoning
    d, _ = policy.decide({"facts": 0.50, "math": 0.50, "code": 0.0, "chat": 0.0}, entropy=0.7)
    assert d.reasoning and d.vote_share == pytest.approx(0.5)  # a tie reasons


def test_medium_band_trusts_top1_at_threshold_else_top3_vote(policy):
    probs = {"facts": 0.6, "math": 0.3, "code": 0.1, "chat": 0.0}
    d, route = policy.decide(probs, entropy=0.4)
    assert d.band == "medium" and not d.reasoning and route is OFF and "trust top-1" in d.reason
    # just under the 0.6 threshold: top-3 vote; on-mass 0.45 + 0.14 > 0.41
    d, route = policy.decide({"facts": 0.41, "math": 0.45, "code": 0.14, "chat": 0.0}, entropy=0.5999)
    assert d.top_category == "math" and d.reasoning and route is ON
    d, _ = policy.decide({"facts": 0.59, "math": 0.25, "code": 0.16, "chat": 0.0}, entropy=0.5)
    assert "top-3" in d.reason and not d.reasoning and d.vote_share == pytest.approx(0.41)
    d, _ = policy.decide({"facts": 0.45, "math": 0.35, "code": 0.2, "chat": 0.0}, entropy=0.5)
    assert d.reasoning and d.vote_share == pytest.approx(0.55)  # top-1 off, top-3 vote on


def test_low_band_trusts_top1_both_ways(policy):
    d, route = policy.decide({"math": 0.55, "facts": 0.45, "code": 0.0, "chat": 0.0}, entropy=0.3999)
    assert d.band == "low" and d.reasoning and route is ON
    d, route = policy.decide({"facts": 0.55, "math": 0.45, "code": 0.0, "chat": 0.0}, entropy=0.0)
    assert not d.reasoning and route is OFF


def test_computed_entropy_picks_the_band(policy):
    d, _ = policy.decide({"math": 0.97, "facts": 0.01, "code": 0.01, "chat": 0.01})
    assert d.band == "low" and d.reasoning
    assert d.entropy == pytest.approx(normalised_entropy([0.97, 0.01, 0.01, 0.01]))
    d, _ = policy.decide({"math": 0.25, "facts": 0.25, "code": 0.25, "chat": 0.25})
    assert d.band == "high" and d.reasoning


def test_confidence_threshold_falls_back_to_default_route():
    default = CategoryRoute(reasoning=False, on=Route(name="def-on", reasoning=True), off=Route(name="def-off"))
    pol = EntropyBandPolicy({"math": cat(True), "facts": cat(False)}, default=default, confidence_threshold=0.7)
    d, route = pol.decide({"math": 0.69, "facts": 0.31}, entropy=0.1)
    assert d.used_default and d.category == "default" and d.top_category == "math"
    assert route.name == "def-on"  # reasoning decided by the band (top-1 math reasons), route from the default
    d, route = pol.decide({"math": 0.7, "facts": 0.3}, entropy=0.1)
    assert not d.used_default and route is ON
    # a category with no route goes to the default
    d, route = pol.decide({"poetry": 0.9, "facts": 0.1}, entropy=0.1)
    assert d.used_default and route.name == "def-off"


def test_policy_rejects_bad_configuration():
    with pytest.raises(ValueError, match="confidence_threshold"):
        EntropyBandPolicy({"a": cat(True)}, confidence_threshold=0.5)  # no default
    with pytest.raises(ValueError, match="bands"):
        EntropyBandPolicy({"a": cat(True)}, bands=(0.6, 0.4, 0.8))
    pol = EntropyBandPolicy({"a": cat(True)})
    with pytest.raises(ValueError, match="no route for categories"):
        pol.check_classes(["a", "b"])
    with pytest.raises(ValueError, match="probabilities"):
        pol.decide({"a": -0.1})
    with pytest.raises(ValueError, match="on: route"):
        CategoryRoute(reasoning=True, on=OFF, off=OFF)


def test_complexity_signal_sign_and_override(policy):
    e = np.eye(4)
    sig = ComplexitySignal(hard=e[[0]], easy=e[[1]])
    near_hard = np.array([0.9, 0.1, 0.3, 0.0])
    near_easy = np.array([0.1, 0.9, 0.3, 0.0])
    assert sig.score_embeddings(near_hard)[0] > 0 > sig.score_embeddings(near_easy)[0]
    s = sig.score_embeddings(np.vstack([near_hard, near_easy]))
    assert s[0] == pytest.approx(-s[1])

    pol = EntropyBandPolicy(policy.routes, complexity_margin=0.1)
    low_facts = {"facts": 0.95, "math": 0.05, "code": 0.0, "chat": 0.0}
    assert pol.decide(low_facts, complexity=0.3)[0].reasoning  # hard-looking: reason despite the flag
    assert not pol.decide(low_facts, complexity=0.05)[0].reasoning  # inside the margin: no override
    low_math = {"math": 0.95, "facts": 0.05, "code": 0.0, "chat": 0.0}
    assert not pol.decide(low_math, complexity=-0.3)[0].reasoning  # easy-looking: answer directly
    assert pol.decide(low_math, complexity=-0.3, entropy=0.9)[0].reasoning  # the high band still reasons
    # without a margin the score is recorded, not used
    d, _ = policy.decide(low_facts, complexity=0.3)
    assert d.complexity == 0.3 and not d.reasoning


# -- routes ------------------------------------------------------------------------------------------------
def test_reasoning_switch_per_family():
    p = Prompt.of("What is 2 + 2?")
    base = SamplingParams(extra={"chat_template_kwargs": {"add_generation_prompt": True}})
    q_on = Route(name="q", model="Qwen/Qwen3-8B", reasoning=True)
    prompt, params = q_on.render(p, base)
    assert prompt == p
    assert params.extra == {"chat_template_kwargs": {"add_generation_prompt": True, "enable_thinking": True}}
    assert q_on.with_reasoning(False).extra() == {"chat_template_kwargs": {"enable_thinking": False}}
    assert Route(name="d", model="deepseek-ai/DeepSeek-V3.1").extra() == {"chat_template_kwargs": {"thinking": False}}
    assert Route(name="o", model="openai/gpt-oss-20b", reasoning=True, effort="high").extra() == {
        "reasoning_effort": "high"}
    assert Route(name="o", model="openai/gpt-oss-20b").extra() == {"reasoning_effort": "low"}
    plain_on, plain_off = Route(name="c", reasoning=True), Route(name="d")
    assert plain_on.extra() == {} and plain_on.resolved_family == "plain"
    assert plain_on.render(p)[0].question == "What is 2 + 2?" + COT_SUFFIX
    assert plain_off.render(p)[0].question == "What is 2 + 2?" + DIRECT_SUFFIX
    assert plain_off.prompt(Prompt(text="Q: 1+1")).text == "Q: 1+1" + DIRECT_SUFFIX
    assert [detect_family(m) for m in ("Qwen/Qwen3-0.6B", "deepseek-r1", "o3-mini", "smollm2")] == [
        "qwen3", "deepseek", "openai", "plain"]
    with pytest.raises(ValueError, match="effort"):
        Route(name="x", reasoning=False, effort="high")
    with pytest.raises(ValueError, match="strategy"):
        Route(name="x", strategy="greedy")


# -- calibration arithmetic ------------------------------------------------------------------------------------
def _table() -> list[Measurement]:
    return [
        Measurement(category="math", option="reason", reasoning=True, n=10, accuracy=0.8, completion_tokens=200,
                    total_tokens=260, latency=2.0),
        Measurement(category="math", option="direct", reasoning=False, n=10, accuracy=0.3, completion_tokens=20,
                    total_tokens=80, latency=0.2),
        Measurement(category="facts", option="reason", reasoning=True, n=30, accuracy=0.5, completion_tokens=150,
                    total_tokens=200, latency=1.5),
        Measurement(category="facts", option="direct", reasoning=False, n=30, accuracy=0.6, completion_tokens=10,
                    total_tokens=60, latency=0.1),
    ]


def test_choose_routes_maximises_accuracy_minus_token_cost():
    t = choose_routes(_table(), token_price=0.001)
    m, f = t.categories["math"], t.categories["facts"]
    assert m.reasoning and m.option == "reason" and m.on == "reason" and m.off == "direct"
    assert m.utility == pytest.approx(0.8 - 0.2)
    assert m.gain == pytest.approx(0.5) and m.extra_tokens == pytest.approx(180)
    assert not f.reasoning and f.option == "direct" and f.utility == pytest.approx(0.6 - 0.01)
    # break-even price for math: 0.5 / 180 tokens
    assert choose_routes(_table(), token_price=0.5 / 180 * 0.99).categories["math"].reasoning
    assert not choose_routes(_table(), token_price=0.5 / 180 * 1.01).categories["math"].reasoning
    # free tokens: the more accurate option everywhere
    free = choose_routes(_table(), token_price=0.0)
    assert free.categories["math"].reasoning and not free.categories["facts"].reasoning
    # pooled default (n-weighted): reason acc (8+15)/40, tokens (2000+4500)/40; direct acc (3+18)/40, 250/40
    assert free.default.option == "reason"  # 0.575 > 0.525
    assert choose_routes(_table(), token_price=0.001).default.option == "direct"  # 0.575-0.1625 < 0.525-0.00625
    # latency priced in: math's gain of 0.5 costs 1.8 s
    assert not choose_routes(_table(), token_price=0.0, latency_price=0.3).categories["math"].reasoning
    # total tokens as the measure: math on costs 180 extra either way
    assert choose_routes(_table(), token_price=0.002, token_measure="total").categories["math"].reasoning


def test_choose_routes_ties_go_to_fewer_tokens():
    ms = [Measurement(category="c", option="a", reasoning=True, n=1, accuracy=0.7, completion_tokens=100,
                      total_tokens=100),
          Measurement(category="c", option="b", reasoning=False, n=1, accuracy=0.6, completion_tokens=0,
                      total_tokens=0)]
    t = choose_routes(ms, token_price=0.001)  # 0.7 - 0.1 == 0.6 - 0
    assert t.categories["c"].option == "b"


def test_summarise_item_records_and_table_round_trip(tmp_path):
    recs = [
        ItemRecord(id=str(i), category="math", option="reason", reasoning=True, correct=i < 3,
                   completion_tokens=100 + i, prompt_tokens=10, latency=1.0)
        for i in range(4)
    ] + [
        ItemRecord(id=str(i), category="math", option="direct", reasoning=False, correct=i < 1,
                   completion_tokens=5, prompt_tokens=10, latency=0.5)
        for i in range(4)
    ]
    ms = {m.option: m for m in summarise(recs)}
    assert ms["reason"].accuracy == 0.75 and ms["reason"].completion_tokens == pytest.approx(101.5)
    assert ms["reason"].total_tokens == pytest.approx(111.5) and ms["direct"].accuracy == 0.25
    t = choose_routes(list(ms.values()), token_price=0.004)  # 0.75-0.406 = 0.344 > 0.25-0.02 = 0.23
    assert t.categories["math"].reasoning
    path = t.save(tmp_path / "table.json")
    t2 = RoutingTable.load(path)
    assert t2 == t
    options = {"reason": ON, "direct": OFF}
    pol = t2.policy(options)
    assert pol.routes["math"].reasoning and pol.routes["math"].on is ON and pol.routes["math"].source == "calibrated"
    with pytest.raises(KeyError, match="option 'reason'"):
        t2.routes({"direct": OFF})
    assert "| math | reason **" in t2.markdown()
    bad = recs + [recs[0].model_copy(update={"reasoning": False})]
    with pytest.raises(ValueError, match="both with reasoning on and off"):
        summarise(bad)


def test_default_grader():
    ex = Example(id="1", question="q", answer="Cairo")
    from ttc.types import Sample

    def res(text: str, answer: str | None = None) -> StrategyResult:
        s = Sample(index=0, text=text, num_tokens=1, answer=answer)
        return StrategyResult(strategy="x", answer=answer, chosen=s, samples=[s])

    assert default_grader(ex, res("The capital of Egypt is Cairo."))
    assert not default_grader(ex, res("The answer is N."))
    assert not default_grader(ex, res("Cairoville"))
    num = Example(id="2", question="q", answer="12")
    assert default_grader(num, res("7 + 5 = 12.", "12"))
    assert not default_grader(num, res("it is 112", "112"))


# -- the router strategy on scripted engines ---------------------------------------------------------------------
def keyword_classifier() -> FunctionClassifier:
    def fn(texts: list[str]) -> np.ndarray:
        return np.array([[0.9, 0.1] if "has" in t else [0.1, 0.9] for t in texts])

    return FunctionClassifier(["math", "facts"], fn)


def make_router(**kw) -> tuple[SemanticRouter, ScriptedEngine, ScriptedEngine]:
    small = ScriptedEngine(lambda p, i, rng: "The capital is Paris.")
    big = ScriptedEngine(lambda p, i, rng: f"Step {i}: 3 + 4 = 7. The answer is {7 if i % 3 else 8}.")
    routes = {
        "math": CategoryRoute(
            reasoning=True,
            on=Route(name="big-sc", engine="big", reasoning=True, strategy=BestOfN(n=5),
                     budget=Budget(completion_tokens=500)),
            off=Route(name="big-direct", engine="big", strategy=Greedy(SamplingParams(max_tokens=8))),
        ),
        "facts": Route(name="small-direct", strategy=Greedy(SamplingParams(max_tokens=16))),
    }
    router = SemanticRouter(keyword_classifier(), EntropyBandPolicy(routes), engines={"big": big}, **kw)
    return router, small, big


async def test_router_routes_to_the_right_engine_and_strategy():
    router, small, big = make_router()
    res = await router.run("Ann has 3 apples and gets 4 more. How many?", small, seed=0)
    assert small.calls == 0 and big.calls >= 1
    assert res.strategy == "semantic_router" and res.stop_reason == "done"
    assert len(res.samples) == 5 and all(s.meta["route"] == "big-sc" for s in res.samples)
    assert res.answer == "7"  # majority of 5: 7 x3, 8 x2 (samples 0 and 3)
    assert res.chosen is not None and res.chosen.answer == "7"
    assert big.prompts[0].question.endswith(COT_SUFFIX)
    routing = res.meta["routing"]
    assert routing["category"] == "math" and routing["reasoning"] and routing["route"] == "big-sc"
    assert routing["probabilities"] == pytest.approx({"math": 0.9, "facts": 0.1})
    assert routing["route_detail"]["strategy"] == "best_of_n" and routing["route_detail"]["engine"] == "big"
    assert res.meta["inner"]["strategy"] == "best_of_n"
    kinds = [e.kind for e in res.trace]
    assert kinds[0] == "start" and "route" in kinds and kinds[-1] == "stop"
    assert any(e.data.get("route") == "big-sc" and e.kind == "start" for e in res.trace)
    assert res.usage.completion_tokens == sum(s.num_tokens for s in res.samples)

    res2 = await router.run("What is the capital of France?", small, seed=0)
    assert small.calls == 1 and res2.samples[0].text == "The capital is Paris."
    assert small.prompts[0].question.endswith(DIRECT_SUFFIX)
    assert res2.meta["routing"]["route"] == "small-direct" and not res2.meta["routing"]["reasoning"]


async def test_router_engines_via_run_kwargs_and_unknown_engine():
    router, small, big = make_router()
    other = ScriptedEngine(["The answer is 42."])
    res = await router.run("Ben has 2 coins.", small, engines={"big": other})
    assert other.calls >= 1 and big.calls == 0 and res.answer == "42"
    router.engines.clear()
    with pytest.raises(KeyError, match="route engine 'big'"):
        await router.run("Ben has 2 coins.", small)


async def test_router_sub_budget_and_composition():
    router, small, _big = make_router()
    # The route's own budget is 500 completion tokens; the parent's 30 is tighter and wins:
    # BestOfN cannot reserve even one 256-token sample -> the router stops for budget, nothing spent.
    res = await router.run("Cara has 5 shells.", small, Budget(completion_tokens=30))
    assert res.stop_reason == "budget" and res.budget_detail == "completion_tokens"
    assert res.usage.completion_tokens <= 30
    # run as a step of another strategy: the parent meter is charged
    parent = RunContext(small, Meter(Budget(completion_tokens=1000)), seed=1)
    inner = await router.run_in(parent.child(Budget(completion_tokens=200)), Prompt.of("Where is Paris?"))
    assert inner.answer is None and inner.samples[0].text == "The capital is Paris."
    assert parent.meter.spent.completion_tokens == inner.usage.completion_tokens > 0


async def test_reasoning_switch_reaches_the_engine():
    strict = ScriptedEngine(["ok"], options=())  # accepts no extra options
    qwen = Route(name="qwen-think", model="Qwen/Qwen3-8B", reasoning=True)
    router = SemanticRouter(FunctionClassifier(["a", "b"], lambda t: np.array([[1.0, 0.0]] * len(t))),
                            EntropyBandPolicy({"a": qwen, "b": qwen}))
    with pytest.raises(ValueError, match="chat_template_kwargs"):
        await router.run("hi", strict)
    plain = ScriptedEngine(["ok"])  # knows chat_template_kwargs
    res = await router.run("hi", plain)
    assert res.samples[0].text == "ok" and plain.prompts[0].question == "hi"  # the template switches, not the prompt


def test_router_checks_classes_against_routes():
    with pytest.raises(ValueError, match="no route for categories"):
        SemanticRouter(keyword_classifier(), EntropyBandPolicy({"math": ON}))
    router = SemanticRouter(keyword_classifier(), EntropyBandPolicy({"math": ON}, default=OFF))
    res = router.run_sync("Paris?", ScriptedEngine(["Paris."]))
    assert res.meta["routing"]["used_default"] and res.meta["routing"]["route"] == "direct"


async def test_calibrate_measures_options_and_writes_the_table():
    from ttc.routers import calibrate, prompt_options

    def script(p: Prompt, i: int, rng) -> str:  # type: ignore[no-untyped-def]
        q = p.question
        if "coins" in q:  # reasoning helps: only the chain of thought gets 7
            return ("Step one, two plus five. " * 10 + "The answer is 7.") if q.endswith(COT_SUFFIX) else "The answer is 6."
        # facts: the direct answer is right, the chain of thought rambles and misses
        return "Paris." if q.endswith(DIRECT_SUFFIX) else "Let me think about cities and rivers for a long while. " * 6

    data = [Example(id=f"m{i}", question=f"Ann has {i} coins ...", answer="7", category="math") for i in range(3)] + [
        Example(id=f"f{i}", question="What is the capital of France?", answer="Paris", category="facts")
        for i in range(3)]
    options = prompt_options(reason_tokens=128, direct_tokens=16)
    engine = ScriptedEngine(script)
    table = await calibrate(data, options, engine, token_price=0.001, concurrency=4)
    cells = {(m.category, m.option): m for m in table.measurements}
    assert cells[("math", "reason")].accuracy == 1.0 and cells[("math", "direct")].accuracy == 0.0
    assert cells[("facts", "direct")].accuracy == 1.0 and cells[("facts", "reason")].accuracy == 0.0
    assert cells[("math", "reason")].completion_tokens == pytest.approx(54)  # 5 words x 10 + 4
    assert cells[("facts", "direct")].completion_tokens == pytest.approx(1)
    assert table.categories["math"].reasoning and not table.categories["facts"].reasoning
    assert engine.calls == 12 and all(m.n == 3 for m in table.measurements)
    # the table drives the router: math reasons, facts answers directly
    router = SemanticRouter(FunctionClassifier(["facts", "math"], lambda ts: np.array(
        [[0.02, 0.98] if "coins" in t else [0.98, 0.02] for t in ts])), table.policy(options))
    r = await router.run("Ben has 4 coins ...", engine)
    assert r.answer == "7" and r.meta["routing"]["route"] == "reason"
    r = await router.run("What is the capital of France?", engine)
    assert r.samples[0].text == "Paris." and r.meta["routing"]["route"] == "direct"


def test_calibrate_cli_needs_an_engine(tmp_path):
    from ttc.bench.datasets import save_jsonl
    from ttc.routers.calibrate import main

    data = save_jsonl([Example(id="1", question="q?", answer="1", category="a")], tmp_path / "d.jsonl")
    with pytest.raises(SystemExit, match="choose an engine"):
        main(["--data", str(data), "--out", str(tmp_path / "t.json"), "--token-price", "0.001"])
    with pytest.raises(SystemExit, match="token-price"):
        main(["--data", str(data), "--out", str(tmp_path / "t.json"), "--token-price", "-1"])


async def test_router_composes_with_self_consistency():
    from ttc.strategies.self_consistency import SelfConsistency

    engine = ScriptedEngine(lambda p, i, rng: f"... so the answer is {9 if i % 4 == 3 else 12}.")
    sc = Route(name="sc", reasoning=True, budget=Budget(generations=8),
               strategy=SelfConsistency(max_samples=8, params=SamplingParams(temperature=0.7, max_tokens=32)))
    router = SemanticRouter(keyword_classifier(), EntropyBandPolicy({"math": sc, "facts": OFF}))
    res = await router.run("Eli has 3 books and gets 9 more.", engine, seed=3)
    assert res.meta["routing"]["route"] == "sc" and res.meta["inner"]["strategy"] == res.meta["routing"][
        "route_detail"]["strategy"]
    assert res.answer == "12" and 1 <= len(res.samples) <= 8
    assert res.usage.generations == len(res.samples)
