"""Early exit combined with self-consistency on a shared board (``EarlyExitSelfConsistency(board=True)``),
on the scripted engine: several traces of known texts, each answering its probes from a
per-trace script."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttc.budget import Budget
from ttc.engines import ScriptedEngine
from ttc.strategies.early_exit import DYNASOR_SUFFIX, EarlyExit, EarlyExitSelfConsistency
from ttc.strategies.stopping import BetaRule, FixedN
from ttc.strategies.vote_board import BoardView, VoteBoard, board_decision, leader_decided
from ttc.types import Prompt


def long_text(j: int, n: int = 300) -> str:
    return " ".join(f"t{j}w{i}" for i in range(n))


def short_text(j: int, answer: str, n: int = 12) -> str:
    return " ".join(f"t{j}w{i}" for i in range(n)) + f" The answer is {answer}."


def boxed(a: str | None) -> str:
    return "" if a is None else f"{a}" + "} \\]"


class Traces:
    """A scripted model of several traces: trace j (the j-th trace started) continues
    ``texts[j]``; a probe on it after t tokens answers ``probe(j, t)``."""

    def __init__(self, texts, probe):  # type: ignore[no-untyped-def]
        self.texts = texts
        self.probe = probe
        self.started = 0

    def __call__(self, prompt: Prompt, i: int, rng) -> str:  # type: ignore[no-untyped-def]
        pre = prompt.assistant_prefix
        if pre.endswith(DYNASOR_SUFFIX):
            body = pre[: -len(DYNASOR_SUFFIX)]
            j = self._which(body)
            return boxed(self.probe(j, len(body.split())))
        if not pre:
            j = self.started
            self.started += 1
            return self.texts[j]
        return self.texts[self._which(pre)][len(pre):]

    def _which(self, prefix: str) -> int:
        return int(prefix.split()[0][1:].split("w")[0])


def ee(**kw) -> EarlyExit:  # type: ignore[no-untyped-def]
    kw.setdefault("chunk_tokens", 10)
    kw.setdefault("k", 50)
    kw.setdefault("max_tokens", 300)
    return EarlyExit(**kw)


# -- the board ---------------------------------------------------------------------------------
def test_leader_decided_only_when_it_cannot_be_overtaken():
    from ttc.answers import DEFAULT_EQUIVALENCE as eq

    assert leader_decided(("7", "7", "7"), 2, eq).reason == "decided"
    assert leader_decided(("7", "7", "7"), 3, eq) is None  # 3 more votes for another answer would tie
    assert leader_decided(("7", "7.0", "8"), 0, eq) is not None
    assert leader_decided(("7", "8"), 0, eq) is None  # a tie is not decided
    assert leader_decided((None, None, None), 0, eq) is None  # unparseable never leads


def test_board_support_and_provisional_answers():
    from ttc.answers import DEFAULT_EQUIVALENCE as eq

    b = VoteBoard(4, share_probes=True, agree=2)
    b.probe(0, "5")
    b.probe(1, "5.0")
    b.finish(2, "5")
    assert b.support(0, "5", eq) == 2  # trace 1's probe and trace 2's vote; not its own probe
    b.probe(1, None)  # an empty probe clears the provisional answer
    assert b.support(0, "5", eq) == 1
    v = b.view()
    assert v.votes == ("5",) and v.provisional == ((0, "5"),) and v.open_slots == 3
    b.drop(3)
    assert b.view().open_slots == 2
    with pytest.raises(ValueError, match="already voted"):
        b.finish(2, "6")


def test_board_decision_counts_probes_only_when_shared():
    from ttc.answers import DEFAULT_EQUIVALENCE as eq

    view = BoardView(votes=(), provisional=((0, "5"), (1, "5"), (2, "5"), (3, "5")), open_slots=8)
    rule = BetaRule(0.95, max_samples=8)
    assert board_decision(view, rule, eq, share_probes=False) is None
    d = board_decision(view, rule, eq, share_probes=True)
    assert d is not None and d.reason == "beta" and d.detail["provisional"] == 4
    # the rule's own cap is no decision
    capped = BoardView(votes=("1", "2"), provisional=(), open_slots=0)
    assert board_decision(capped, FixedN(2), eq, share_probes=False) is None


# -- the vote stops once decided -------------------------------------------------------------------
async def test_vote_stops_when_the_leader_is_decided_and_halts_running_traces():
    texts = [short_text(j, "7") for j in range(3)] + [long_text(j) for j in (3, 4)]
    eng = ScriptedEngine(Traces(texts, lambda j, t: None), token_delay=0.002)
    sc = EarlyExitSelfConsistency(FixedN(5), early_exit=ee(), board=True)
    r = await sc.run("q", eng, seed=0)
    assert r.stop_reason == "decided" and r.answer == "7"
    halted = [s for s in r.samples if s.meta.get("exit") == "halted"]
    assert len(halted) == 2 and all(s.meta.get("late") for s in halted)
    assert all(s.num_tokens < 100 for s in halted)  # stopped long before their 300 tokens
    assert eng.in_flight == 0
    assert r.meta["stop_samples"] == 3
    # the fixed vote at the same cap: same answer, every trace to its end
    full = await EarlyExitSelfConsistency(FixedN(5), early_exit=ee()).run(
        "q", ScriptedEngine(Traces(texts, lambda j, t: None)), seed=0)
    assert full.answer == "7" and full.usage.completion_tokens > 3 * r.usage.completion_tokens


async def test_undecided_vote_runs_to_the_cap():
    texts = [short_text(j, str(j)) for j in range(4)]
    eng = ScriptedEngine(Traces(texts, lambda j, t: None))
    r = await EarlyExitSelfConsistency(FixedN(4), early_exit=ee(), board=True).run("q", eng, seed=0)
    assert r.stop_reason == "max_samples" and len(r.samples) == 4
    assert not any(s.meta.get("late") for s in r.samples)


# -- samples exit on agreeing probes ---------------------------------------------------------------
async def test_traces_exit_on_a_probe_other_traces_agree_with():
    texts = [long_text(j) for j in range(4)]
    eng = ScriptedEngine(Traces(texts, lambda j, t: "8"), token_delay=0.001)
    # k=50: a trace's own probes would need 50 agreeing probes (500 tokens) to exit
    r = await EarlyExitSelfConsistency(FixedN(4), early_exit=ee(), board=True, agree=1).run("q", eng, seed=0)
    assert r.answer == "8"
    exits = [s.meta["exit"] for s in r.samples if not s.meta.get("late")]
    assert "agreed" in exits
    assert all(s.num_tokens <= 30 for s in r.samples)
    # without the board every trace runs to its end
    plain = await EarlyExitSelfConsistency(FixedN(4), early_exit=ee()).run(
        "q", ScriptedEngine(Traces(texts, lambda j, t: "8")), seed=0)
    assert all(s.num_tokens == 300 for s in plain.samples)


async def test_a_lone_probe_answer_does_not_exit():
    texts = [long_text(j, 60) for j in range(3)]
    eng = ScriptedEngine(Traces(texts, lambda j, t: str(j)))  # every trace says something else
    r = await EarlyExitSelfConsistency(FixedN(3), early_exit=ee(), board=True, agree=1).run("q", eng, seed=0)
    assert all(s.meta["exit"] != "agreed" for s in r.samples)
    assert all(s.num_tokens == 60 for s in r.samples)


async def test_shared_probes_decide_the_vote_and_halted_traces_vote_with_them():
    texts = [long_text(j) for j in range(4)]
    eng = ScriptedEngine(Traces(texts, lambda j, t: "5"), token_delay=0.001)
    sc = EarlyExitSelfConsistency(BetaRule(0.95, max_samples=8), early_exit=ee(), board=True, share_probes=True,
                                  max_samples=4)
    r = await sc.run("q", eng, seed=0)
    assert r.stop_reason == "beta" and r.answer == "5"
    voters = [s for s in r.samples if s.meta.get("provisional")]
    assert len(voters) == 4 and all(s.answer == "5" and s.text.endswith("\\boxed{5} \\]") for s in voters)
    assert all(s.num_tokens <= 20 for s in r.samples)
    # without share_probes the probes do not count: the traces run on
    r2 = await EarlyExitSelfConsistency(BetaRule(0.95, max_samples=8), early_exit=ee(max_tokens=60), board=True,
                                        max_samples=4).run("q", ScriptedEngine(Traces(texts, lambda j, t: "5")), seed=0)
    assert all(s.num_tokens == 60 for s in r2.samples)


async def test_width_limits_traces_in_flight():
    texts = [short_text(j, "3") for j in range(6)]
    eng = ScriptedEngine(Traces(texts, lambda j, t: None), token_delay=0.001)
    r = await EarlyExitSelfConsistency(FixedN(6), early_exit=ee(), board=True, width=2).run("q", eng, seed=0)
    assert r.answer == "3" and r.stop_reason == "decided"
    assert eng.max_in_flight <= 2 * 2  # a chunk and a probe per trace
    assert r.meta["stop_samples"] == 4  # 4 votes for "3" with 2 open slots: decided


def test_board_options_validated():
    with pytest.raises(ValueError, match="board=True"):
        EarlyExitSelfConsistency(FixedN(3), share_probes=True)
    with pytest.raises(ValueError, match="agree"):
        EarlyExitSelfConsistency(FixedN(3), board=True, agree=-1)
    with pytest.raises(ValueError, match="width"):
        EarlyExitSelfConsistency(FixedN(3), board=True, width=0)


# -- budget --------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    budget=st.integers(15, 900),
    share=st.booleans(),
    agree=st.integers(0, 2),
    width=st.sampled_from([None, 1, 3]),
    answers=st.lists(st.sampled_from(["1", "2", None]), min_size=4, max_size=4),
)
async def test_property_board_never_exceeds_the_budget(budget, share, agree, width, answers):
    texts = [short_text(j, "1", 40) if j % 2 else long_text(j, 120) for j in range(4)]
    eng = ScriptedEngine(Traces(texts, lambda j, t: answers[j]))
    sc = EarlyExitSelfConsistency(BetaRule(0.95, max_samples=4), early_exit=ee(k=2, max_tokens=120), board=True,
                                  share_probes=share, agree=agree, width=width)
    r = await sc.run("q", eng, Budget(completion_tokens=budget), seed=0)
    assert r.usage.completion_tokens <= budget
    assert eng.in_flight == 0
    assert r.stop_reason in ("decided", "beta", "max_samples", "budget")
    voters = [s for s in r.samples if not s.meta.get("late") and not s.meta.get("truncated")]
    assert len(voters) <= 4
    if r.stop_reason != "budget":
        assert r.answer is None or any(s.answer == r.answer for s in voters)
