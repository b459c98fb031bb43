"""Beam search and DVTS on the scripted engine."""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import pytest

from ttc import Budget, Prompt
from ttc.context import RunContext
from ttc.engines import ScriptedEngine
from ttc.strategies import DVTS, BeamSearch, StepPolicy, genealogy_graph
from ttc.verifiers import ArithmeticStepCheck, ProcessVerifier


class StepValue(ProcessVerifier):
    """Test verifier: a step's score is the number after 'v=' in it (0.5 if none)."""

    async def step_scores(self, ctx: RunContext, prompt: Prompt, batch: Sequence[Sequence[str]],
                          separator: str) -> list[list[float]]:
        return [[float(s.split("v=")[1].split()[0]) if "v=" in s else 0.5 for s in steps] for steps in batch]


def _k(prefix: str) -> int:
    return prefix.count("\n\n")


def _script(p, i, rng):  # type: ignore[no-untyped-def]
    k = _k(p.assistant_prefix)
    if k >= 2:
        return f"The answer is {i % 3}. v=0.{5 + i % 4}\n\n"
    return f"step{k} s{i} v=0.{1 + (i * 7) % 9}\n\n"


def test_beam_search_keeps_top_and_expands_m() -> None:
    eng = ScriptedEngine(_script)
    n, m = 8, 2
    r = BeamSearch(n, StepValue(), m=m, policy=StepPolicy(max_steps=4)).run_sync("q", eng, seed=0)
    ev = [e.data for e in r.trace if e.kind == "tree_step"]
    assert len(ev[0]["candidates"]) == n  # N first steps from the root
    kept = [c for c in ev[0]["candidates"] if c["kept"]]
    assert len(kept) == n // m
    best = sorted((c["score"] for c in ev[0]["candidates"]), reverse=True)[: n // m]
    assert sorted(c["score"] for c in kept) == sorted(best)
    # step 2: each kept beam expanded M times, from a kept parent
    assert len(ev[1]["candidates"]) == (n // m) * m
    assert {c["parent"] for c in ev[1]["candidates"]} == {c["particle"] for c in kept}
    # calls: 1 (n=N) + N/M (n=M) + N/M (n=M)
    assert eng.calls == 1 + 2 * (n // m)
    assert r.stop_reason == "done" and r.answer is not None
    assert all(s.meta["finished"] for s in r.samples)
    g = genealogy_graph(r)
    assert nx.is_arborescence(g)


def test_dvts_subtrees_greedy() -> None:
    eng = ScriptedEngine(_script)
    n, m = 6, 3
    r = DVTS(n, StepValue(), m=m, policy=StepPolicy(max_steps=4)).run_sync("q", eng, seed=0)
    ev = [e.data for e in r.trace if e.kind == "tree_step"]
    for e in ev:
        trees = {c["tree"] for c in e["candidates"]}
        assert len(trees) == n // m
        for t in trees:
            cs = [c for c in e["candidates"] if c["tree"] == t]
            assert len(cs) == m
            kept = [c for c in cs if c["kept"]]
            assert len(kept) == 1 and kept[0]["score"] == max(c["score"] for c in cs)
    assert eng.samples_served == 3 * n  # M children per subtree per step
    assert eng.calls <= 3 * (n // m)  # one call (n=M) per distinct subtree prefix per step
    assert len(r.samples) == n // m and all(s.meta["finished"] for s in r.samples)
    # the subtrees are independent: their kept paths share only the root
    g = genealogy_graph(r)
    leaves = [s.meta["particle"] for s in r.samples]
    anc = [nx.ancestors(g, leaf) for leaf in leaves]
    assert len(anc[0] & anc[1]) == 1  # the virtual root only


def test_tree_search_budget_partial() -> None:
    eng = ScriptedEngine(lambda p, i, rng: f"step v=0.{1 + i % 8}\n\n")
    for s in (BeamSearch(4, StepValue(), m=2, policy=StepPolicy(max_steps=6)),
              DVTS(4, StepValue(), m=2, policy=StepPolicy(max_steps=6))):
        r = s.run_sync("q", eng, Budget(calls=3), seed=0)
        assert r.stop_reason == "budget"
        assert r.meta["partial"] is True and r.chosen is not None and r.chosen.meta["partial"] is True


def test_tree_validation() -> None:
    with pytest.raises(ValueError, match="multiple"):
        BeamSearch(5, ArithmeticStepCheck(), m=2)
    with pytest.raises(ValueError, match="verifier"):
        DVTS(4, m=2)
