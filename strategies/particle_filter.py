"""Particle filtering over reasoning steps (Puri et al. 2025, "A Probabilistic
Inference Approach to Inference-Time Scaling of LLMs using Particle-Based Monte Carlo
Methods"), particle Gibbs, and parallel tempering.

State = a partial solution (:class:`~strategies.steps.Trajectory`); transition = the
LLM writes one more step (:class:`~strategies.steps.StepPolicy`); emission =
Bernoulli(r) with r the process reward of the prefix. Each step: extend every live
particle by one step (all calls concurrent, each continuing the particle's partial
answer so prefix caching reuses it), score the prefixes, turn rewards into weights,
resample. Finished particles keep their weight, may be resampled, and are never
extended; the loop ends when every particle has finished.

**Weights** (``weighting``): ``"logit"`` (the reference implementation):
p_i proportional to exp(logit(r_i) / T) = (r_i / (1 - r_i))^(1/T), r clipped to
[1e-7, 1 - 1e-7]; ``"softmax"`` (the paper's text): p_i proportional to exp(r_i / T),
a ratio of at most e^(1/T) between particles. As in the reference implementation the
weight is the potential of the *current prefix* (its aggregated reward), not a
product of incremental ratios; with ``resample="ess"`` a step whose weights are
balanced (ESS = 1 / sum p_i^2 >= ess_threshold * N) is simply not resampled.

**Resampling**: ``"systematic"`` (one uniform, N evenly spaced points: unbiased, lower
variance) or ``"multinomial"`` (N independent draws), when ESS < ``ess_threshold`` x N
(``"ess"``, the default: the improvement over the reference code that ``algorithms.md``
lists) or at every step (``"always"``, the paper's loop). ``"ess"`` duplicates fewer
particles, and each duplicate costs the engine its own KV tail, so it is the cheaper one
in prompt work (1.22-1.28x vs 1.42-1.54x that of N full completions in
benchmarks/stepwise_search.py). On the bundled model the two are equally accurate
(``benchmarks/stepwise_search.py`` at N = 4, 8 and 16 over 1240 question-runs each:
"always" 267 right, "ess" 266; at N = 8, 158 vs 150 of 760; neither mode wins every N
or every run). With systematic resampling and
equal weights, "always" keeps every particle once.

**Copies** (resampling's duplicates): a particle drawn k times is k particles that share
their history (same uid in the genealogy) and are extended as k independent draws of the
next step, as in the paper. The choice made here: the k copies are extended by ONE engine
call with ``n = k`` (:func:`~strategies.steps.extend_all` groups live particles by text
when the engine has native ``n``), so the prompt is sent and billed once per distinct
particle, not once per copy; the n samples of a call are independent draws, so the
algorithm is unchanged. On ``VLLMEngine`` one of the k turns resumes the particle's kept
request and each other copy computes its prefix's last partial KV block (vLLM v1 shares
only full blocks between requests): the measured floor of particle filtering's prompt work
(``benchmarks/stepwise_search.py --prefill-only``, ``forked_turns``).

**Final answer** (``final``): the particle of largest weight (``"argmax"``), a weighted
vote over answer classes (``"vote"``), or one particle drawn by weight (``"sample"``).

**Budget**: one unit for every step-wise search, the run's :class:`~ttc.budget.Budget`
(tokens, calls, generations) charged through the run context; ``n`` particles is a
parameter. If the budget runs out, the result holds the best finished particle, or
the best partial one with ``meta["partial"] = True`` (``stop_reason="budget"``).

**Particle Gibbs** (:class:`ParticleGibbs`): ``sweeps`` runs of N particles; after a
sweep a reference particle is drawn from the final weights; the next sweep runs N-1
fresh particles plus the reference (conditional SMC). The reference is never
re-generated and competes at step t with the weight of *its prefix at step t* (the
public implementation uses its final weight, a bug). Its slot is kept at every
resampling; the other N-1 slots are drawn from all N.

**Parallel tempering** (``tempering=(T_0, T_1, ...)``): K replica particle filters,
replica k weighting with temperature T_k (target T_0, hotter replicas explore); the N
particles are split evenly across replicas (N is the total). After each step's
weighting, for each adjacent pair (k, k+1) a particle i of replica k and j of k+1
are drawn by their weights and swapped with probability
min(1, exp((1/T_k - 1/T_{k+1}) * (l_j - l_i))), l = logit(r) (or r for ``"softmax"``):
the Metropolis ratio for targets proportional to exp(l / T_k). The answer comes from
replica 0.

Traces: per step, a ``"pf_step"`` event with each particle's step text, score,
weight, ancestor index and finished flag, plus the ESS and whether it resampled.
``result.meta["genealogy"]`` is the particles' genealogy as networkx node-link data
(:func:`genealogy_graph` rebuilds the DiGraph).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx
import numpy as np

from ttc.budget import BudgetExhausted
from ttc.checks import check_instance, check_int, check_number
from ttc.context import RunContext
from ttc.strategy import Decision, Run, SampleSet, Strategy
from ttc.types import Prompt, SamplingParams, StrategyResult
from ttc.verifiers.process import ProcessVerifier

from .steps import StepPolicy, Trajectory, extend_all, score_trajectories
from .voting import pick_max, vote

Weighting = Literal["logit", "softmax"]
Resampling = Literal["systematic", "multinomial"]
FinalRule = Literal["argmax", "vote", "sample"]

CLIP = 1e-7


# -- weights, ESS, resampling ---------------------------------------------------------------
def log_potentials(rewards: Sequence[float], weighting: Weighting = "logit") -> np.ndarray:
    """logit(r) (r clipped to [1e-7, 1-1e-7]) for ``"logit"``, r for ``"softmax"``."""
    r = np.asarray(rewards, dtype=float)
    if weighting == "logit":
        r = np.clip(r, CLIP, 1 - CLIP)
        return np.log(r) - np.log1p(-r)
    if weighting == "softmax":
        return r
    raise ValueError(f"weighting: expected 'logit' or 'softmax', got {weighting!r}")


def particle_weights(rewards: Sequence[float], weighting: Weighting = "logit", temperature: float = 1.0) -> np.ndarray:
    """Normalised resampling probabilities softmax(l(r) / T)."""
    if temperature <= 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if len(rewards) == 0:
        return np.zeros(0)
    z = log_potentials(rewards, weighting) / temperature
    z = z - z.max()
    w = np.exp(z)
    return w / w.sum()


def effective_sample_size(p: Sequence[float]) -> float:
    """ESS = 1 / sum p_i^2 of normalised weights (N when uniform, 1 when degenerate)."""
    a = np.asarray(p, dtype=float)
    s = a.sum()
    if s <= 0:
        return 0.0
    a = a / s
    return float(1.0 / np.sum(a * a))


def _check_probs(p: Sequence[float]) -> np.ndarray:
    a = np.asarray(p, dtype=float)
    if a.ndim != 1 or len(a) == 0:
        raise ValueError("weights: need a non-empty 1-d array")
    if np.any(a < 0) or not np.all(np.isfinite(a)) or a.sum() <= 0:
        raise ValueError("weights: must be finite, non-negative, with a positive sum")
    return a / a.sum()


def multinomial_resample(p: Sequence[float], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices drawn independently with probabilities ``p``."""
    a = _check_probs(p)
    return rng.choice(len(a), size=n, replace=True, p=a)


def systematic_resample(p: Sequence[float], n: int, rng: np.random.Generator) -> np.ndarray:
    """Systematic resampling: points (u + k) / n, u ~ U[0, 1), k = 0..n-1, mapped through
    the CDF. Each index i is drawn floor(n p_i) or ceil(n p_i) times; zero-weight
    indices never."""
    a = _check_probs(p)
    cdf = np.cumsum(a)
    cdf /= cdf[-1]
    pts = (rng.random() + np.arange(n)) / n
    idx = np.searchsorted(cdf, pts, side="right")
    last_pos = int(np.flatnonzero(a > 0)[-1])
    return np.minimum(idx, last_pos)


RESAMPLERS = {"systematic": systematic_resample, "multinomial": multinomial_resample}


def genealogy_graph(result: StrategyResult | dict[str, Any]) -> nx.DiGraph:
    """The genealogy DiGraph of a step-wise search result (or its node-link data)."""
    data = result.meta.get("genealogy") if isinstance(result, StrategyResult) else result
    if data is None:
        raise ValueError("result.meta has no 'genealogy' (not a step-wise search result?)")
    return nx.node_link_graph(data, directed=True, edges="edges")


# -- run state -----------------------------------------------------------------------------
@dataclass
class _System:
    """One particle population (one replica under tempering)."""

    temperature: float
    particles: list[Trajectory]
    ref_slot: int | None = None
    ancestors: list[int] = field(default_factory=list)


@dataclass
class _RunState:
    graph: nx.DiGraph
    root: int
    sweeps: list[list[_System]] = field(default_factory=list)
    swaps: int = 0
    swap_tries: int = 0


class ParticleFiltering(Strategy):
    """Particle filtering over reasoning steps (Puri et al. 2025). See the module doc."""

    name = "particle_filtering"

    def __init__(
        self,
        n: int = 8,
        verifier: ProcessVerifier | None = None,
        *,
        policy: StepPolicy | None = None,
        params: SamplingParams | None = None,
        weighting: Weighting = "logit",
        temperature: float = 1.0,
        resampling: Resampling = "systematic",
        resample: Literal["always", "ess"] = "ess",
        ess_threshold: float = 0.5,
        final: FinalRule = "argmax",
        tempering: Sequence[float] | None = None,
        **kw: Any,
    ):
        super().__init__(**kw)
        check_int("n", n, lo=1)
        check_number("temperature", temperature)
        check_number("ess_threshold", ess_threshold)
        check_instance("params", params, SamplingParams)
        for t in tempering or ():
            check_number("tempering", t)
        if verifier is None:
            raise ValueError("verifier: particle filtering needs a process verifier")
        check_instance("verifier", verifier, ProcessVerifier)
        if weighting not in ("logit", "softmax"):
            raise ValueError(f"weighting: expected 'logit' or 'softmax', got {weighting!r}")
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        if resampling not in RESAMPLERS:
            raise ValueError(f"resampling: expected one of {sorted(RESAMPLERS)}, got {resampling!r}")
        if resample not in ("always", "ess"):
            raise ValueError(f"resample: expected 'always' or 'ess', got {resample!r}")
        if not 0 < ess_threshold <= 1:
            raise ValueError(f"ess_threshold: must be in (0, 1], got {ess_threshold}")
        if final not in ("argmax", "vote", "sample"):
            raise ValueError(f"final: expected 'argmax', 'vote' or 'sample', got {final!r}")
        temps = list(tempering) if tempering else [temperature]
        if any(t <= 0 for t in temps):
            raise ValueError(f"tempering: temperatures must be > 0, got {temps}")
        if len(temps) > n:
            raise ValueError(f"tempering: {len(temps)} replicas need n >= {len(temps)}, got n={n}")
        self.n = n
        self.verifier = verifier
        self.policy = policy or StepPolicy()
        self.params = params or SamplingParams(temperature=0.8)
        self.weighting: Weighting = weighting
        self.temperature = temperature
        self.resampling: Resampling = resampling
        self.resample = resample
        self.ess_threshold = ess_threshold
        self.final: FinalRule = final
        self.temps = temps

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={self.n}, verifier={self.verifier!r}, weighting={self.weighting!r}, "
                f"resampling={self.resampling!r}, resample={self.resample!r})")

    # -- the run -------------------------------------------------------------------------------
    async def _run(self, ctx: RunContext, prompt: Prompt, run: Run) -> str:
        samples = run.samples
        root = Trajectory()
        g = nx.DiGraph()
        g.add_node(root.uid, step=0, text="", score=None, finished=False, sweep=0)
        state = _RunState(graph=g, root=root.uid)
        run.state = state
        try:
            async with ctx.continuations():
                await self._sweeps(ctx, prompt, state, root)
        finally:
            self._collect(state, samples)
        return "done"

    async def _sweeps(self, ctx: RunContext, prompt: Prompt, state: _RunState, root: Trajectory) -> None:
        await self._sweep(ctx, prompt, state, root, reference=None, sweep=0)

    def _new_systems(self, root: Trajectory, reference: Trajectory | None) -> list[_System]:
        k = len(self.temps)
        sizes = [self.n // k + (1 if i < self.n % k else 0) for i in range(k)]
        systems = []
        for temp, size in zip(self.temps, sizes):
            parts = [root.copy() for _ in range(size)]
            systems.append(_System(temperature=temp, particles=parts, ancestors=list(range(size))))
        if reference is not None:
            s0 = systems[0]
            s0.ref_slot = len(s0.particles) - 1
            s0.particles[s0.ref_slot] = reference.prefix(0)
        return systems

    async def _sweep(
        self, ctx: RunContext, prompt: Prompt, state: _RunState, root: Trajectory,
        reference: Trajectory | None, sweep: int,
    ) -> list[_System]:
        systems = self._new_systems(root, reference)
        state.sweeps.append(systems)
        sep = self.policy.separator
        for step in range(1, self.policy.max_steps + 1):
            slots = [(si, i) for si, s in enumerate(systems) for i, p in enumerate(s.particles)
                     if not p.finished and i != s.ref_slot]
            ref_live = reference is not None and not systems[0].particles[systems[0].ref_slot].finished  # type: ignore[index]
            if not slots and not ref_live:
                break
            children, err = await extend_all(
                ctx, prompt, self.policy, self.params, [systems[si].particles[i] for si, i in slots]
            )
            for (si, i), ch in zip(slots, children):
                if ch:
                    systems[si].particles[i] = ch[0]
            if reference is not None:
                s0 = systems[0]
                s0.particles[s0.ref_slot] = reference.prefix(step)  # type: ignore[index]
            try:
                await score_trajectories(
                    ctx, prompt, self.verifier, [p for s in systems for p in s.particles], sep
                )
            finally:
                for s in systems:
                    for p in s.particles:
                        self._add_node(state, p, sweep)
            if err is not None:
                raise err
            self._weigh_and_resample(ctx, state, systems, step, sweep)
        return systems

    # -- weighting, tempering swaps, resampling ----------------------------------------------------
    @staticmethod
    def _reward(p: Trajectory) -> float:
        return p.score if p.score is not None else 0.0

    def _weigh_and_resample(
        self, ctx: RunContext, state: _RunState, systems: list[_System], step: int, sweep: int
    ) -> None:
        if len(systems) > 1:
            self._swap(ctx, state, systems)
        for k, s in enumerate(systems):
            rewards = [self._reward(p) for p in s.particles]
            p = particle_weights(rewards, self.weighting, s.temperature)
            ess = effective_sample_size(p)
            live = any(not q.finished for i, q in enumerate(s.particles) if i != s.ref_slot) or (
                s.ref_slot is not None and not s.particles[s.ref_slot].finished)
            do = live and (self.resample == "always" or ess < self.ess_threshold * len(s.particles))
            record = [
                {"slot": i, "particle": q.uid, "parent": q.parent, "text": q.added,
                 "score": q.score, "weight": float(p[i]), "ancestor": s.ancestors[i], "finished": q.finished,
                 "reference": i == s.ref_slot}
                for i, q in enumerate(s.particles)
            ]
            anc: list[int] | None = None
            if do:
                n = len(s.particles)
                resampler = RESAMPLERS[self.resampling]
                if s.ref_slot is None:
                    anc = [int(a) for a in resampler(p, n, ctx.rng)]
                else:
                    drawn = [int(a) for a in resampler(p, n - 1, ctx.rng)] if n > 1 else []
                    anc = drawn[: s.ref_slot] + [s.ref_slot] + drawn[s.ref_slot:]
                s.particles = [s.particles[a].copy() for a in anc]
                s.ancestors = anc
            else:
                s.ancestors = list(range(len(s.particles)))
            ctx.event("pf_step", sweep=sweep, replica=k, temperature=s.temperature, step=step, ess=ess,
                      resampled=do, particles=record, ancestors=anc)

    def _swap(self, ctx: RunContext, state: _RunState, systems: list[_System]) -> None:
        for k in range(len(systems) - 1):
            a, b = systems[k], systems[k + 1]
            pa = particle_weights([self._reward(p) for p in a.particles], self.weighting, a.temperature)
            pb = particle_weights([self._reward(p) for p in b.particles], self.weighting, b.temperature)
            i = int(ctx.rng.choice(len(pa), p=pa))
            j = int(ctx.rng.choice(len(pb), p=pb))
            li, lj = log_potentials([self._reward(a.particles[i]), self._reward(b.particles[j])], self.weighting)
            log_acc = (1 / a.temperature - 1 / b.temperature) * (lj - li)
            state.swap_tries += 1
            if math.log(max(ctx.rng.random(), 1e-300)) < min(0.0, log_acc):
                a.particles[i], b.particles[j] = b.particles[j], a.particles[i]
                state.swaps += 1

    # -- genealogy and results ---------------------------------------------------------------------
    @staticmethod
    def _add_node(state: _RunState, p: Trajectory, sweep: int) -> None:
        g = state.graph
        if p.uid == state.root:
            return
        attrs = {"step": len(p.steps), "text": p.added, "score": p.score,
                 "finished": p.finished, "finish": p.finish, "sweep": sweep}
        if p.uid in g:
            if g.nodes[p.uid].get("score") is None:
                g.nodes[p.uid].update(attrs)
        else:
            g.add_node(p.uid, **attrs)
        parent = p.parent if p.parent is not None else state.root
        if parent not in g:
            g.add_node(parent, step=max(len(p.steps) - 1, 0), text="", score=None, finished=False, sweep=sweep)
        if not g.has_edge(parent, p.uid):
            g.add_edge(parent, p.uid)

    def _collect(self, state: _RunState, samples: SampleSet) -> None:
        for sweep, systems in enumerate(state.sweeps):
            for k, s in enumerate(systems):
                p = particle_weights([self._reward(q) for q in s.particles], self.weighting, s.temperature)
                for i, q in enumerate(s.particles):
                    samples.add(q.to_sample(weight=float(p[i]), sweep=sweep, replica=k, slot=i,
                                            reference=i == s.ref_slot))

    def decide(self, ctx: RunContext, prompt: Prompt, run: Run) -> Decision:
        samples = run.samples
        state: _RunState | None = run.state
        cands = [s for s in samples if s.meta.get("replica", 0) == 0]
        meta: dict[str, Any] = {}
        if state is not None:
            meta["genealogy"] = nx.node_link_data(state.graph, edges="edges")
            if state.swap_tries:
                meta["swaps"] = {"accepted": state.swaps, "tried": state.swap_tries}
        d = decide_particles(cands, self.final, ctx.rng, weights=[s.weight or 0.0 for s in cands])
        d.meta.update(meta)
        return d


def final_candidates(cands: Sequence[Any]) -> tuple[list[Any], bool]:
    """The particles a final rule picks among: the finished ones if any, else the partial
    ones; of those, the ones with an answer if any. Returns them and whether they are partial."""
    finished = [s for s in cands if s.meta.get("finished")]
    pool = finished or list(cands)
    return [s for s in pool if s.answer is not None] or pool, not finished


def decide_particles(
    cands: Sequence[Any], final: str, rng: np.random.Generator, *, weights: Sequence[float]
) -> Decision:
    """Pick the answer among final particles (Samples with ``meta["finished"]``):
    finished ones if any, else the partial ones (then ``meta["partial"] = True``)."""
    if not cands:
        return Decision(answer=None, meta={"partial": True})
    wmap = {id(s): w for s, w in zip(cands, weights)}
    parseable, partial = final_candidates(cands)
    w = np.asarray([wmap[id(s)] for s in parseable], dtype=float)
    if final == "vote":
        d = vote(parseable, rng, weights=list(w), pick_member_by=list(w))
        if d.answer is None:  # nothing parseable: fall back to the heaviest particle
            d = Decision(answer=None, chosen=parseable[pick_max(list(w), rng)])
    elif final == "sample":
        pr = w / w.sum() if w.sum() > 0 else np.full(len(w), 1 / len(w))
        c = parseable[int(rng.choice(len(parseable), p=pr))]
        d = Decision(answer=c.answer, chosen=c, confidence=float(w[parseable.index(c)] / max(w.sum(), 1e-300)))
    else:
        k = pick_max(list(w), rng)
        c = parseable[k]
        d = Decision(answer=c.answer, chosen=c, confidence=float(w[k] / w.sum()) if w.sum() > 0 else None)
    if d.chosen is not None and partial:
        d.chosen = d.chosen.model_copy(update={"meta": {**d.chosen.meta, "partial": True}})
    d.meta["partial"] = partial
    return d


class ParticleGibbs(ParticleFiltering):
    """Particle Gibbs (Puri et al. 2025, section on iterated particle filtering):
    ``sweeps`` conditional particle filters; see the module doc for the reference
    particle's prefix weighting. The answer is decided over every sweep's final particles."""

    name = "particle_gibbs"

    def __init__(self, n: int = 8, verifier: ProcessVerifier | None = None, *, sweeps: int = 2, **kw: Any):
        if kw.get("tempering"):
            raise ValueError("tempering: not supported together with particle Gibbs")
        super().__init__(n, verifier, **kw)
        check_int("sweeps", sweeps, lo=1)
        if n < 2 and sweeps > 1:
            raise ValueError("n: particle Gibbs needs n >= 2 (N-1 fresh particles plus the reference)")
        self.sweeps = sweeps

    async def _sweeps(self, ctx: RunContext, prompt: Prompt, state: _RunState, root: Trajectory) -> None:
        reference: Trajectory | None = None
        for sweep in range(self.sweeps):
            systems = await self._sweep(ctx, prompt, state, root, reference=reference, sweep=sweep)
            parts = systems[0].particles
            p = particle_weights([self._reward(q) for q in parts], self.weighting, systems[0].temperature)
            k = int(ctx.rng.choice(len(parts), p=p))
            reference = parts[k]
            ctx.event("pg_reference", sweep=sweep, slot=k, particle=reference.uid, score=reference.score,
                      prefix_scores=list(reference.agg_history))


__all__ = [
    "BudgetExhausted",
    "ParticleFiltering",
    "ParticleGibbs",
    "decide_particles",
    "final_candidates",
    "effective_sample_size",
    "genealogy_graph",
    "log_potentials",
    "multinomial_resample",
    "particle_weights",
    "systematic_resample",
]
