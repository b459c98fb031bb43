"""Particle filtering, particle Gibbs, parallel tempering on the scripted engine."""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttc import Budget, Prompt
from ttc.context import RunContext
from ttc.engines import ScriptedEngine
from ttc.strategies import (
    ParticleFiltering,
    ParticleGibbs,
    StepPolicy,
    effective_sample_size,
    genealogy_graph,
    multinomial_resample,
    particle_weights,
    systematic_resample,
)
from ttc.verifiers import ArithmeticStepCheck, ProcessVerifier


def _k(prefix: str) -> int:
    return prefix.count("\n\n")


class StepValue(ProcessVerifier):
    """Test verifier: a step's score is the number after 'v=' in it (0.5 if none)."""

    def __init__(self, aggregate="last"):  # type: ignore[no-untyped-def]
        super().__init__(aggregate)
        self.calls = 0

    async def step_scores(self, ctx: RunContext, prompt: Prompt, batch: Sequence[Sequence[str]],
                          separator: str) -> list[list[float]]:
        self.calls += 1
        out = []
        for steps in batch:
            row = []
            for s in steps:
                row.append(float(s.split("v=")[1].split()[0]) if "v=" in s else 0.5)
            out.append(row)
        return out


# -- weights, ESS, resampling ---------------------------------------------------------------------
def test_weightings() -> None:
    r = [0.2, 0.5, 0.8]
    p = particle_weights(r, "logit", 1.0)
    odds = np.array([0.25, 1.0, 4.0])
    assert np.allclose(p, odds / odds.sum())
    p2 = particle_weights(r, "logit", 2.0)
    assert np.allclose(p2, np.sqrt(odds) / np.sqrt(odds).sum())
    s = particle_weights(r, "softmax", 1.0)
    assert np.allclose(s, np.exp(r) / np.exp(r).sum())
    assert s.max() / s.min() <= np.e + 1e-9  # the paper's softmax(r): ratio at most e
    clipped = particle_weights([0.0, 1.0], "logit")
    assert np.isfinite(clipped).all() and clipped[1] > 0.999
    with pytest.raises(ValueError, match="weighting"):
        particle_weights(r, "bogus")  # type: ignore[arg-type]


def test_ess() -> None:
    assert effective_sample_size([0.25] * 4) == pytest.approx(4)
    assert effective_sample_size([1, 0, 0, 0]) == pytest.approx(1)
    assert effective_sample_size([0.5, 0.5, 0, 0]) == pytest.approx(2)


def test_resampling_statistics_systematic_vs_multinomial() -> None:
    p = np.array([0.05, 0.15, 0.3, 0.5])
    n, reps = 10, 4000
    rng = np.random.default_rng(0)
    sys_counts = np.array([np.bincount(systematic_resample(p, n, rng), minlength=4) for _ in range(reps)])
    mul_counts = np.array([np.bincount(multinomial_resample(p, n, rng), minlength=4) for _ in range(reps)])
    # unbiased: mean counts match N * p
    assert np.allclose(sys_counts.mean(0), n * p, atol=0.08)
    assert np.allclose(mul_counts.mean(0), n * p, atol=0.15)
    # systematic: each count is floor or ceil of N p, far lower variance
    assert np.all(sys_counts >= np.floor(n * p)) and np.all(sys_counts <= np.ceil(n * p))
    assert sys_counts.var(0).sum() < 0.5 * mul_counts.var(0).sum()
    assert np.allclose(mul_counts.var(0), n * p * (1 - p), rtol=0.15)


@settings(max_examples=200, deadline=None)
@given(
    w=st.lists(st.one_of(st.just(0.0), st.floats(1e-6, 1e3)), min_size=1, max_size=12).filter(lambda w: sum(w) > 0),
    n=st.integers(1, 40),
    seed=st.integers(0, 2**31),
    kind=st.sampled_from(["systematic", "multinomial"]),
)
def test_resampling_properties(w: list[float], n: int, seed: int, kind: str) -> None:
    f = systematic_resample if kind == "systematic" else multinomial_resample
    idx = f(w, n, np.random.default_rng(seed))
    counts = np.bincount(idx, minlength=len(w))
    assert counts.sum() == n and len(idx) == n
    assert all(w[i] > 0 for i in idx)  # only positive-weight indices are ever drawn


def test_resampling_rejects_bad_weights() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="weights"):
        systematic_resample([0.0, 0.0], 3, rng)
    with pytest.raises(ValueError, match="weights"):
        multinomial_resample([-1.0, 2.0], 3, rng)


# -- the filter ------------------------------------------------------------------------------------
def _mixed_script(p, i, rng):  # type: ignore[no-untyped-def]
    """Even samples are good steps, odd ones bad; the third step answers."""
    k = _k(p.assistant_prefix)
    if k >= 2:
        return "The answer is 7. v=0.9\n\n"
    return "good step v=0.9\n\n" if i % 2 == 0 else "bad step v=0.1\n\n"


def _events(r, kind="pf_step"):  # type: ignore[no-untyped-def]
    return [e.data for e in r.trace if e.kind == kind]


def test_ess_trigger() -> None:
    eng = ScriptedEngine(_mixed_script)
    pf = ParticleFiltering(6, StepValue(), policy=StepPolicy(max_steps=4), resample="ess", ess_threshold=0.6)
    r = pf.run_sync("q", eng, seed=0)
    ev = _events(r)
    assert ev
    for e in ev:
        live = any(not q["finished"] for q in e["particles"])
        assert e["resampled"] == (live and e["ess"] < 0.6 * 6)
    assert ev[0]["resampled"] and ev[0]["ess"] == pytest.approx(3.07, abs=0.01)  # half the particles are bad
    # balanced weights: ESS = N, never resampled
    eng2 = ScriptedEngine(["same v=0.5\n\n"])
    r2 = ParticleFiltering(4, StepValue(), policy=StepPolicy(max_steps=3), resample="ess").run_sync("q", eng2, seed=0)
    assert all(not e["resampled"] and e["ess"] == pytest.approx(4) for e in _events(r2))
    # "always" (the paper's loop) resamples every step with live particles
    r3 = ParticleFiltering(4, StepValue(), policy=StepPolicy(max_steps=3), resample="always").run_sync(
        "q", ScriptedEngine(["s\n\n"]), seed=0)
    assert [e["resampled"] for e in _events(r3)] == [True, True, False]


def test_default_resamples_when_ess_falls_below_half_n() -> None:
    """Default: systematic resampling when ESS < N/2 (the improvement over the reference
    code in algorithms.md): ESS 3.07 of 6 particles (> 3) is kept and a step with one good
    particle of 6 (ESS about 1.7) is resampled."""
    pf = ParticleFiltering(6, StepValue())
    assert (pf.resample, pf.ess_threshold, pf.resampling) == ("ess", 0.5, "systematic")
    ess = ParticleFiltering(6, StepValue(), policy=StepPolicy(max_steps=4))
    first = _events(ess.run_sync("q", ScriptedEngine(_mixed_script), seed=0))[0]
    assert not first["resampled"] and first["ess"] == pytest.approx(3.07, abs=0.01)

    def one_good(p, i, rng):  # type: ignore[no-untyped-def]
        return "good v=0.9\n\n" if i == 0 and not p.assistant_prefix else "bad v=0.1\n\n"
    ess2 = ParticleFiltering(6, StepValue(), policy=StepPolicy(max_steps=2))
    first = _events(ess2.run_sync("q", ScriptedEngine(one_good), seed=0))[0]
    assert first["ess"] < 3 and first["resampled"], first


def test_bad_particles_are_resampled_away() -> None:
    eng = ScriptedEngine(_mixed_script)
    r = ParticleFiltering(6, StepValue(), policy=StepPolicy(max_steps=4), resample="always").run_sync("q", eng, seed=0)
    ev = _events(r)
    first = ev[0]
    assert first["ancestors"] is not None
    assert all(first["particles"][a]["score"] == pytest.approx(0.9) for a in first["ancestors"])
    assert all("bad step" not in s.text.split("\n\n")[0] for s in r.samples)
    assert r.answer == "7" and r.stop_reason == "done"


def test_finished_particles_are_absorbing() -> None:
    def script(p, i, rng):  # type: ignore[no-untyped-def]
        k = _k(p.assistant_prefix)
        if k == 0:
            return "The answer is 5. v=0.8\n\n" if i % 2 == 0 else "thinking v=0.6\n\n"
        return f"more {k} v=0.6\n\n"

    eng = ScriptedEngine(script)
    r = ParticleFiltering(4, StepValue(), policy=StepPolicy(max_steps=4), resample="always").run_sync("q", eng, seed=3)
    # never extended: no prompt continues a finished particle
    assert not any("The answer is" in p.assistant_prefix for p in eng.prompts)
    finished = [s for s in r.samples if s.meta["finish"] == "answer"]
    assert finished and all(s.meta["steps"] == 1 for s in finished)
    # finished particles kept their weight in every step's record
    for e in _events(r):
        for q in e["particles"]:
            if q["finished"] and "answer is" in q["text"]:
                assert q["score"] == pytest.approx(0.8)
    # calls: step 1 = 4 calls; then only the unfinished slots
    per_step = [sum(1 for q in e["particles"] if not q["finished"]) for e in _events(r)]
    assert eng.samples_served == 4 + sum(per_step[:-1])
    assert eng.calls <= eng.samples_served  # identical prefixes share a request


def test_final_rules() -> None:
    def script(p, i, rng):  # type: ignore[no-untyped-def]
        return ["The answer is 3. v=0.9\n\n", "The answer is 4. v=0.6\n\n", "The answer is 4. v=0.6\n\n",
                "The answer is 4. v=0.6\n\n"][i % 4]

    for final, expected in (("argmax", "3"), ("vote", "4")):
        eng = ScriptedEngine(script)
        pf = ParticleFiltering(4, StepValue(), weighting="softmax", final=final)  # type: ignore[arg-type]
        r = pf.run_sync("q", eng, seed=0)
        assert r.answer == expected, final
    r = ParticleFiltering(4, StepValue(), final="sample").run_sync("q", ScriptedEngine(script), seed=0)
    assert r.answer in ("3", "4")


def test_budget_exhaustion_returns_best_partial_marked() -> None:
    def script(p, i, rng):  # type: ignore[no-untyped-def]
        return f"step {_k(p.assistant_prefix)} x = {i} v=0.{1 + i % 8}\n\n"

    eng = ScriptedEngine(script)
    r = ParticleFiltering(4, StepValue(), policy=StepPolicy(max_steps=6)).run_sync("q", eng, Budget(calls=6), seed=0)
    assert r.stop_reason == "budget" and r.budget_detail == "calls"
    assert r.meta["partial"] is True and r.chosen is not None and r.chosen.meta["partial"] is True
    assert r.chosen.meta["finished"] is False and r.usage.calls <= 6
    assert r.chosen.score == max(s.score for s in r.samples)


def test_budget_exhaustion_prefers_finished() -> None:
    def script(p, i, rng):  # type: ignore[no-untyped-def]
        return "The answer is 2. v=0.3\n\n" if i == 0 else f"step {i} v=0.9\n\n"

    eng = ScriptedEngine(script)
    r = ParticleFiltering(3, StepValue(), policy=StepPolicy(max_steps=6), resample="ess", ess_threshold=0.1).run_sync(
        "q", eng, Budget(calls=4), seed=0)
    assert r.stop_reason == "budget" and r.meta["partial"] is False
    assert r.answer == "2" and r.chosen.meta["finished"]


def test_genealogy_and_trace() -> None:
    eng = ScriptedEngine(_mixed_script)
    r = ParticleFiltering(4, StepValue(), policy=StepPolicy(max_steps=4)).run_sync("q", eng, seed=1)
    g = genealogy_graph(r)
    assert isinstance(g, nx.DiGraph) and nx.is_arborescence(g)
    roots = [v for v in g if g.in_degree(v) == 0]
    assert len(roots) == 1
    for u, v in g.edges:
        assert g.nodes[v]["step"] == g.nodes[u]["step"] + 1
    for s in r.samples:
        assert s.meta["particle"] in g
        assert nx.has_path(g, roots[0], s.meta["particle"])
    for e in _events(r):
        assert {"ess", "resampled", "particles", "step"} <= set(e)
        assert all({"text", "score", "weight", "ancestor", "finished"} <= set(q) for q in e["particles"])
        assert sum(q["weight"] for q in e["particles"]) == pytest.approx(1.0)


# -- particle Gibbs ----------------------------------------------------------------------------------
def test_particle_gibbs_reference_uses_prefix_weight() -> None:
    # Step values rise along a trajectory: prefix score at step k != final score.
    def script(p, i, rng):  # type: ignore[no-untyped-def]
        k = _k(p.assistant_prefix)
        v = [0.2, 0.5, 0.95][k] if k < 3 else 0.9
        return f"s{k} id{i} v={v}\n\n"

    eng = ScriptedEngine(script)
    n, steps = 4, 3
    pg = ParticleGibbs(n, StepValue(), sweeps=2, policy=StepPolicy(max_steps=steps))
    r = pg.run_sync("q", eng, seed=0)
    ref = _events(r, "pg_reference")[0]
    assert ref["prefix_scores"] == pytest.approx([0.2, 0.5, 0.95])
    sweep1 = [e for e in _events(r) if e["sweep"] == 1]
    assert len(sweep1) == steps
    for e in sweep1:
        refs = [q for q in e["particles"] if q["reference"]]
        assert len(refs) == 1
        q = refs[0]
        assert q["score"] == pytest.approx(ref["prefix_scores"][e["step"] - 1])  # its prefix, not final
        scores = [x["score"] for x in e["particles"]]
        assert q["weight"] == pytest.approx(particle_weights(scores)[q["slot"]])
        assert e["ancestors"] is None or e["ancestors"][q["slot"]] == q["slot"]  # its slot is kept
    # never re-generated: sweep 0 makes n calls per step, sweep 1 n-1
    assert eng.samples_served == n * steps + (n - 1) * steps
    assert len(r.samples) == 2 * n and r.stop_reason == "done"


# -- parallel tempering ------------------------------------------------------------------------------
def test_parallel_tempering_swaps_and_answers_from_target() -> None:
    eng = ScriptedEngine(_mixed_script)
    pf = ParticleFiltering(6, StepValue(), policy=StepPolicy(max_steps=4), tempering=(1.0, 4.0))
    r = pf.run_sync("q", eng, seed=0)
    assert r.meta["swaps"]["tried"] >= 1
    assert {s.meta["replica"] for s in r.samples} == {0, 1}
    assert r.chosen.meta["replica"] == 0 and r.answer == "7"
    assert eng.samples_served <= 6 * 4
    with pytest.raises(ValueError, match="tempering"):
        ParticleFiltering(2, StepValue(), tempering=(1, 2, 3))


def test_validation_names_fields() -> None:
    v = ArithmeticStepCheck()
    for kw, field in (({"n": 0}, "n"), ({"weighting": "x"}, "weighting"), ({"resampling": "x"}, "resampling"),
                      ({"ess_threshold": 0}, "ess_threshold"), ({"final": "x"}, "final"),
                      ({"temperature": 0}, "temperature")):
        with pytest.raises(ValueError, match=field):
            ParticleFiltering(verifier=v, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="verifier"):
        ParticleFiltering(4)


def test_genealogy_paths_rebuild_texts() -> None:
    def script(p, i, rng):  # type: ignore[no-untyped-def]
        k = _k(p.assistant_prefix)
        if k == 2 and i % 2:
            return "\n\n"  # an empty step ends some particles
        return f"step {k} v=0.{3 + i % 5}\n\n"

    r = ParticleFiltering(4, StepValue(), policy=StepPolicy(max_steps=4)).run_sync("q", ScriptedEngine(script), seed=2)
    g = genealogy_graph(r)
    root = next(v for v in g if g.in_degree(v) == 0)
    assert any(s.meta["finish"] == "empty" for s in r.samples)
    for s in r.samples:
        path = nx.shortest_path(g, root, s.meta["particle"])
        assert "".join(g.nodes[v]["text"] for v in path) == s.text
