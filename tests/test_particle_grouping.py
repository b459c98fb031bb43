"""Particle filtering's resampled copies: one call per distinct particle with ``n`` = its copies.

A recording scripted engine logs every call (the partial answer it continues and ``n``); the
genealogy says which particle each child continued. The checks: one call per distinct live
particle per step with ``n`` its number of copies, copies' children independent draws,
genealogy and particle Gibbs' reference intact, usage billed per call exactly as the engine
bills ``n``, budgets held, runs deterministic per seed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttc import Budget, Prompt
from ttc.budget import call_usage
from ttc.context import RunContext
from ttc.engines import ScriptedEngine
from ttc.strategies import ParticleFiltering, ParticleGibbs, StepPolicy, genealogy_graph
from ttc.types import GenerationResult, SamplingParams
from ttc.verifiers import ProcessVerifier


class StepValue(ProcessVerifier):
    """A step's score is the number after 'v=' in it."""

    async def step_scores(self, ctx: RunContext, prompt: Prompt, batch: Sequence[Sequence[str]],
                          separator: str) -> list[list[float]]:
        return [[float(s.split("v=")[1].split()[0]) for s in steps] for steps in batch]


class Recording(ScriptedEngine):
    """Logs (partial answer continued, n, prompt tokens) per call."""

    def __init__(self, *a, **kw):  # type: ignore[no-untyped-def]
        super().__init__(*a, **kw)
        self.log: list[tuple[str, int, int]] = []

    async def _generate(self, prompt: Prompt, params: SamplingParams, billing) -> GenerationResult:  # type: ignore[no-untyped-def]
        self.log.append((prompt.assistant_prefix, params.n, await self.count_prompt_tokens(prompt)))
        return await super()._generate(prompt, params, billing)


def _script(p, i, rng):  # type: ignore[no-untyped-def]
    """Every third sample is a good step, the rest bad (resampling copies the good ones);
    the fourth step answers. Each sample's text names its index: copies' children differ."""
    k = p.assistant_prefix.count("\n\n")
    if k >= 3:
        return f"i{i}: The answer is {3 + i % 2}. v=0.8\n\n"
    return f"s{k} i{i} v={0.9 if i % 3 == 0 else 0.1}\n\n"


def _texts(g: nx.DiGraph) -> dict[int, str]:
    root = next(v for v in g if g.in_degree(v) == 0)
    return {v: "".join(g.nodes[u]["text"] for u in nx.shortest_path(g, root, v)) for v in g}


def _expected_calls(g: nx.DiGraph) -> Counter[tuple[str, int]]:
    """(partial answer, n) per call as the genealogy implies: each node with children was
    continued once, with n = its number of children."""
    text = _texts(g)
    return Counter((text[u], g.out_degree(u)) for u in g if g.out_degree(u) > 0)


@pytest.mark.parametrize("resample", ["always", "ess"])
def test_one_call_per_distinct_particle_with_n_its_copies(resample: str) -> None:
    eng = Recording(_script)
    n = 6
    pf = ParticleFiltering(n, StepValue(), policy=StepPolicy(max_steps=5), resample=resample)  # type: ignore[arg-type]
    r = pf.run_sync("q", eng, seed=0)
    assert r.stop_reason == "done" and r.answer in ("3", "4")
    ev = [e.data for e in r.trace if e.kind == "pf_step"]
    assert any(e["resampled"] and len(set(e["ancestors"])) < n for e in ev)  # copies were made
    g = genealogy_graph(r)
    assert nx.is_arborescence(g)
    calls = Counter((prefix, k) for prefix, k, _ in eng.log)
    assert calls == _expected_calls(g)
    assert max(k for _, k, _ in eng.log) > 1  # a resampled particle continued as one call with n = copies
    # per step: the calls' prefixes are distinct and their n add up to the live particles
    for step, e in enumerate(ev[:-1], start=1):
        slots = e["ancestors"] if e["ancestors"] is not None else range(n)
        live = Counter(e["particles"][a]["particle"] for a in slots if not e["particles"][a]["finished"])
        step_calls = [(p, k) for p, k, _ in eng.log if p.count("\n\n") == step]
        assert len({p for p, _ in step_calls}) == len(step_calls) == len(live)
        assert sorted(k for _, k in step_calls) == sorted(live.values())
    # the copies' children are independent draws: distinct samples of one call
    for u in g:
        kids = [g.nodes[v]["text"] for v in g.successors(u)]
        assert len(set(kids)) == len(kids)


@pytest.mark.parametrize("native_n", [True, False])
def test_grouped_calls_are_billed_exactly(native_n: bool) -> None:
    """Prompt tokens are billed once per call with native ``n`` (once per sample without it),
    as the engine bills: the run's usage is exactly the sum over its calls."""
    eng = Recording(_script, native_n=native_n)
    r = ParticleFiltering(6, StepValue(), policy=StepPolicy(max_steps=5), resample="always").run_sync("q", eng, seed=1)
    gen = sum(k for _, k, _ in eng.log)
    expect_prompt = sum(c.prompt_tokens for c in (call_usage(pt, 0, k, native_n=native_n) for _, k, pt in eng.log))
    u = r.usage
    assert u.generations == gen == eng.samples_served
    assert u.calls == (len(eng.log) if native_n else gen)
    assert u.prompt_tokens == expect_prompt
    if native_n:
        assert len(eng.log) < gen  # copies shared calls
    else:
        assert all(k == 1 for _, k, _ in eng.log)


def test_grouped_runs_are_deterministic_per_seed() -> None:
    def run(seed: int):  # type: ignore[no-untyped-def]
        eng = Recording(_script)
        r = ParticleFiltering(6, StepValue(), policy=StepPolicy(max_steps=5), resample="always",
                              final="sample").run_sync("q", eng, seed=seed)
        text = _texts(genealogy_graph(r))  # particle ids are global counters: compare by text
        edges = sorted((text[e["source"]], text[e["target"]]) for e in r.meta["genealogy"]["edges"])
        return r.answer, [s.text for s in r.samples], edges, eng.log

    first = run(3)
    assert first == run(3)
    assert max(k for _, k, _ in first[3]) > 1  # the grouped path ran


def test_particle_gibbs_reference_is_never_in_a_grouped_call() -> None:
    """The reference particle is never regenerated: in the second sweep each step's calls
    continue the N-1 other slots only, one call per distinct text with n = the slots holding
    it (a slot may hold a copy of the reference's prefix: conditional SMC draws the other
    slots from all N), and the reference stays in the genealogy."""
    eng = Recording(_script)
    n = 5
    r = ParticleGibbs(n, StepValue(), sweeps=2, policy=StepPolicy(max_steps=4), resample="always").run_sync(
        "q", eng, seed=0)
    assert r.stop_reason == "done"
    ref = next(e.data for e in r.trace if e.kind == "pg_reference")
    g = genealogy_graph(r)
    assert nx.is_arborescence(g) and ref["particle"] in g
    text = _texts(g)
    ref_path = nx.ancestors(g, ref["particle"]) | {ref["particle"]}
    start = next(j for j, (p, _, _) in enumerate(eng.log) if j > 0 and p == "")  # sweep 1's first call
    assert eng.log[start][1] == n - 1  # the fresh particles from the root: one call, n = N-1
    sweep1_calls = eng.log[start:]
    ref_texts = {text[v] for v in ref_path}
    copies_of_ref: set[str] = set()
    sweep1 = [e.data for e in r.trace if e.kind == "pf_step" and e.data["sweep"] == 1]
    for e in sweep1:
        [q] = [q for q in e["particles"] if q["reference"]]
        assert q["particle"] in ref_path
        if e["ancestors"] is None:
            continue
        live = Counter(text[e["particles"][a]["particle"]] for slot, a in enumerate(e["ancestors"])
                       if not e["particles"][a]["finished"] and not e["particles"][slot]["reference"])
        step_calls = Counter({p: k for p, k, _ in sweep1_calls if p.count("\n\n") == e["step"]})
        assert step_calls == live
        copies_of_ref |= {p for p in live if p in ref_texts}
    assert len(sweep1) >= 2 and copies_of_ref  # some slot continued a copy of the reference prefix


_budgets = st.builds(
    Budget,
    calls=st.none() | st.integers(1, 20),
    generations=st.none() | st.integers(1, 40),
    completion_tokens=st.none() | st.integers(1, 200),
    total_tokens=st.none() | st.integers(1, 600),
)


@settings(max_examples=60, deadline=None)
@given(budget=_budgets, n=st.integers(1, 8), seed=st.integers(0, 10_000),
       resample=st.sampled_from(["always", "ess"]), native_n=st.booleans())
def test_grouped_path_holds_every_budget(budget: Budget, n: int, seed: int, resample: str, native_n: bool) -> None:
    eng = Recording(_script, native_n=native_n)
    pf = ParticleFiltering(n, StepValue(), policy=StepPolicy(max_steps=5), resample=resample)  # type: ignore[arg-type]
    r = pf.run_sync("q", eng, budget, seed=seed)
    u = r.usage
    for field, used in (("calls", u.calls), ("generations", u.generations), ("completion_tokens", u.completion_tokens),
                        ("total_tokens", u.prompt_tokens + u.completion_tokens)):
        cap = getattr(budget, field)
        assert cap is None or used <= cap, (field, used, cap)
    assert r.stop_reason in ("done", "budget")
    # billed exactly what the calls were: nothing lost or double-counted when a call is refused
    assert u.generations == eng.samples_served
    assert u.calls == (len(eng.log) if native_n else eng.samples_served)
    if r.stop_reason == "done":
        expected = _expected_calls(genealogy_graph(r))
        if not native_n:  # one request per sample
            expected = Counter({(p, 1): c * k for (p, k), c in expected.items()})
        assert Counter((p, k) for p, k, _ in eng.log) == expected
