"""Deterministic step-wise searches with a process verifier, on the same step
machinery as particle filtering (:mod:`strategies.steps`).

**Beam search** (Snell et al. 2024, "Scaling LLM Test-Time Compute Optimally..."):
N candidate first steps; after each step keep the top N/M live paths by aggregated
process score and expand each M times (one engine call with ``n=M`` per beam,
continuing the beam's partial answer). Finished candidates leave the beam for the
pool of completed answers; the search stops when N answers are complete, no beam is
live, or at max steps.

**DVTS**, diverse verifier tree search (Beeching et al. 2024, "Scaling test-time
compute with open models"): N/M independent subtrees; each expands its current node M
times and greedily keeps its best-scoring child, until that child finishes.

Budget semantics as for every step-wise search: the run's Budget (tokens, calls,
generations); N and M are parameters. Out of budget: the best finished path, or the
best partial one with ``meta["partial"] = True``. Final answer: the best path by
score (``final="argmax"``) or a vote over answer classes weighted by score
(``"vote"``). Per step a ``"tree_step"`` event lists each candidate's step text,
score, parent index and whether it was kept; ``result.meta["genealogy"]`` holds the
search tree (node-link data; :func:`strategies.particle_filter.genealogy_graph`).
"""

from __future__ import annotations

from typing import Any, Literal

import networkx as nx

from ttc.checks import check_instance, check_int
from ttc.context import RunContext
from ttc.strategy import Decision, Run, Strategy
from ttc.types import Prompt, SamplingParams
from ttc.verifiers.process import ProcessVerifier

from .particle_filter import decide_particles
from .steps import StepPolicy, Trajectory, extend_all, score_trajectories


class _TreeSearch(Strategy):
    def __init__(
        self,
        n: int = 8,
        verifier: ProcessVerifier | None = None,
        *,
        m: int = 4,
        policy: StepPolicy | None = None,
        params: SamplingParams | None = None,
        final: Literal["argmax", "vote"] = "argmax",
        **kw: Any,
    ):
        super().__init__(**kw)
        check_int("n", n, lo=1)
        check_int("m", m, lo=1)
        check_instance("params", params, SamplingParams)
        if verifier is None:
            raise ValueError("verifier: a tree search needs a process verifier")
        check_instance("verifier", verifier, ProcessVerifier)
        if m < 1 or n < m:
            raise ValueError(f"n, m: need 1 <= m <= n, got n={n}, m={m}")
        if n % m:
            raise ValueError(f"n: must be a multiple of m={m}, got {n}")
        if final not in ("argmax", "vote"):
            raise ValueError(f"final: expected 'argmax' or 'vote', got {final!r}")
        self.n, self.m = n, m
        self.verifier = verifier
        self.policy = policy or StepPolicy()
        self.params = params or SamplingParams(temperature=0.8)
        self.final = final

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, m={self.m}, verifier={self.verifier!r})"

    @staticmethod
    def _score(t: Trajectory) -> float:
        return t.score if t.score is not None else 0.0

    def _record(self, g: nx.DiGraph, ts: list[Trajectory], step: int) -> None:
        for t in ts:
            if t.uid not in g:
                g.add_node(t.uid, step=len(t.steps), text=t.added, score=t.score,
                           finished=t.finished, finish=t.finish)
            parent = t.parent if t.parent is not None else -1
            if parent not in g:
                g.add_node(parent, step=0, text="", score=None, finished=False, finish=None)
            g.add_edge(parent, t.uid)

    async def _expand(
        self, ctx: RunContext, prompt: Prompt, frontier: list[Trajectory], k: int, step: int,
        g: nx.DiGraph,
    ) -> list[list[Trajectory]]:
        children, err = await extend_all(ctx, prompt, self.policy, self.params, frontier, n=k)
        flat = [c for cs in children for c in cs]
        try:
            await score_trajectories(ctx, prompt, self.verifier, flat, self.policy.separator)
        finally:
            self._record(g, flat, step)
        if err is not None:
            raise err
        return children

    async def _run(self, ctx: RunContext, prompt: Prompt, run: Run) -> str:
        samples = run.samples
        g = nx.DiGraph()
        g.add_node(-1, step=0, text="", score=None, finished=False, finish=None)
        completed: list[Trajectory] = []
        live: list[Trajectory] = []
        run.state = g  # the search tree, for decide's genealogy
        try:
            async with ctx.continuations():
                await self._search(ctx, prompt, g, completed, live)
        finally:
            for t in completed:
                samples.add(t.to_sample(weight=self._score(t)))
            for t in live:
                samples.add(t.to_sample(weight=self._score(t)))
        return "done"

    async def _search(
        self, ctx: RunContext, prompt: Prompt, g: nx.DiGraph, completed: list[Trajectory], live: list[Trajectory]
    ) -> None:
        raise NotImplementedError

    def decide(self, ctx: RunContext, prompt: Prompt, run: Run) -> Decision:
        samples = run.samples
        g: nx.DiGraph | None = run.state
        cands = list(samples)
        d = decide_particles(cands, self.final, ctx.rng, weights=[self._sample_score(s) for s in cands])
        if g is not None:
            d.meta["genealogy"] = nx.node_link_data(g, edges="edges")
        return d

    @staticmethod
    def _sample_score(s: Any) -> float:
        return s.score if s.score is not None else 0.0


class BeamSearch(_TreeSearch):
    """Beam search with a process verifier: keep the top N/M, expand each M times."""

    name = "beam_search"

    async def _search(
        self, ctx: RunContext, prompt: Prompt, g: nx.DiGraph, completed: list[Trajectory], live: list[Trajectory]
    ) -> None:
        width = self.n // self.m
        frontier = [Trajectory()]
        g.add_node(frontier[0].uid, step=0, text="", score=None, finished=False, finish=None)
        g.add_edge(-1, frontier[0].uid)
        per = self.n  # the first expansion draws N candidates from the root
        for step in range(1, self.policy.max_steps + 1):
            if not frontier or len(completed) >= self.n:
                break
            children = await self._expand(ctx, prompt, frontier, per, step, g)
            cands = [c for cs in children for c in cs]
            done = [c for c in cands if c.finished]
            completed.extend(done)
            open_ = sorted((c for c in cands if not c.finished), key=self._score, reverse=True)
            keep = open_[:width]
            ctx.event("tree_step", strategy=self.name, step=step, candidates=[
                {"particle": c.uid, "parent": c.parent, "text": c.added, "score": c.score,
                 "finished": c.finished, "kept": any(c is k for k in keep) or c.finished} for c in cands])
            frontier = keep
            live[:] = keep
            per = self.m
        live[:] = frontier if len(completed) < 1 else []


class DVTS(_TreeSearch):
    """Diverse verifier tree search: N/M independent greedy subtrees of fan-out M."""

    name = "dvts"

    async def _search(
        self, ctx: RunContext, prompt: Prompt, g: nx.DiGraph, completed: list[Trajectory], live: list[Trajectory]
    ) -> None:
        trees = self.n // self.m
        roots = [Trajectory() for _ in range(trees)]
        for r in roots:
            g.add_node(r.uid, step=0, text="", score=None, finished=False, finish=None)
            g.add_edge(-1, r.uid)
        current: dict[int, Trajectory] = dict(enumerate(roots))
        for step in range(1, self.policy.max_steps + 1):
            if not current:
                break
            ids = list(current)
            children = await self._expand(ctx, prompt, [current[i] for i in ids], self.m, step, g)
            record = []
            for i, cs in zip(ids, children):
                if not cs:
                    continue
                best = max(cs, key=self._score)  # ties: the first drawn (children are i.i.d.)
                record += [{"tree": i, "particle": c.uid, "parent": c.parent,
                            "text": c.added, "score": c.score, "finished": c.finished,
                            "kept": c is best} for c in cs]
                if best.finished:
                    completed.append(best)
                    del current[i]
                else:
                    current[i] = best
            ctx.event("tree_step", strategy=self.name, step=step, candidates=record)
            live[:] = [current[i] for i in current if current[i].steps]
        live[:] = [current[i] for i in current if current[i].steps]
