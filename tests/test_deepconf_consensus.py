"""DeepConf online's consensus stop (Fu et al. 2025): after each finished trace, beta =
V(top) / sum V over the voting traces (confidence-weighted); stop as soon as beta >= tau.
On the scripted engine, whose traces all have the same confidence unless scripted otherwise."""

from __future__ import annotations

import pytest

from ttc.engines import ScriptedEngine
from ttc.strategies import DeepConf
from ttc.types import SamplingParams

Q = "What is 3 + 4?"
P = SamplingParams(temperature=0.8, max_tokens=40)


def says(a: str) -> str:
    return f"So 3 plus 4 is {a} . The answer is {a}."


def online(tau: float, **kw) -> DeepConf:  # type: ignore[no-untyped-def]
    kw.setdefault("n_init", 4)
    kw.setdefault("max_traces", 12)
    return DeepConf("online", eta=90, tau=tau, window=3, parallelism=1, params=P, **kw)


@pytest.mark.parametrize("tau, traces", [(0.75, 4), (0.76, 5), (0.8, 5), (0.95, 12)])
async def test_consensus_stops_at_the_first_trace_that_reaches_tau(tau, traces):
    # warm-up: 7, 7, 7, 8 (beta 0.75); then 7s: beta 4/5 = 0.8, 5/6, 6/7, ... 11/12 = 0.917 < 0.95
    answers = ["7", "7", "7", "8"] + ["7"] * 20
    eng = ScriptedEngine(lambda p, i, rng: says(answers[i]))
    r = await online(tau).run(Q, eng, seed=0)
    assert len(r.samples) == traces
    assert r.stop_reason == ("consensus" if traces < 12 else "max_traces")
    assert r.answer == "7"
    if r.stop_reason == "consensus":
        assert r.confidence >= tau - 1e-9
        beta = [e.data["beta"] for e in r.trace if e.kind == "deepconf_consensus"]
        assert beta and beta[0] >= tau - 1e-9


async def test_consensus_at_the_papers_tau_stops_on_a_unanimous_warmup():
    eng = ScriptedEngine(lambda p, i, rng: says("7"))
    r = await online(0.95, max_traces=64).run(Q, eng, seed=0)
    assert r.stop_reason == "consensus" and len(r.samples) == 4 and r.answer == "7"
    assert r.usage.completion_tokens == sum(s.num_tokens for s in r.samples)


async def test_consensus_weights_votes_by_confidence():
    # the low-confidence trace's "8" weighs less than a confident "7": beta passes 0.8 sooner
    def conf(token: str, j: int) -> float:
        return 0.2 if token.strip() == "hmm" else 0.9

    texts = [says("7"), says("7"), says("7"), "hmm hmm hmm hmm " + says("8")]
    eng = ScriptedEngine(lambda p, i, rng: texts[i] if i < 4 else says("7"), confidence=conf)
    dc = DeepConf("online", n_init=4, max_traces=12, eta=100, tau=0.8, window=3, parallelism=1, params=P,
                  filter_warmup=False)
    r = await dc.run(Q, eng, seed=0)
    assert r.stop_reason == "consensus" and len(r.samples) == 4  # unweighted beta would be 0.75


async def test_no_voter_no_consensus():
    eng = ScriptedEngine(lambda p, i, rng: "no answer here")
    r = await online(0.5, max_traces=6).run(Q, eng, seed=0)
    assert r.stop_reason == "max_traces" and len(r.samples) == 6 and r.answer is None
