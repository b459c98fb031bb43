"""Step machinery shared by every step-wise search: the step policy and trajectories.

A *step* ends at a delimiter string (default ``"\\n\\n"``, as in Puri et al. 2025 and
Snell et al. 2024) or after a fixed number of tokens. A *trajectory* (a particle, a
beam) is the list of steps written so far; it ends

- on EOS: the engine reports ``finish_reason="stop"`` without the delimiter having
  matched (``Generation.stop_reason == "eos"``, or another stop string);
- on a final-answer marker in the new step (``"\\boxed"``, ``"The answer is"``);
- at exactly ``max_steps`` steps (never ``max_steps + 1``);
- on an empty step (whitespace only): search never loops on empty steps.

Each extension is one ``ctx.generate(prompt.continued(partial), stop=[delimiter])``
call: the engine *continues* the partial assistant message, so engines with prefix
caching reuse the shared prefix. vLLM drops the matched stop string from its output;
the policy appends the delimiter back to the step text when the step ended on it, with
the whitespace the same token held past it (``Generation.stop_text``: a token "\\n\\n   "
stops on "\\n\\n"), so the prefix stays the model's exact tokens.
The searches run inside ``ctx.continuations()``: an engine that can keep a finished
step's request alive (``VLLMEngine``) resumes it for the next step instead of
re-reading the prefix (see :class:`ttc.engine.ContinuationScope`).

When an engine does not report which stop string matched (``stop_reason is None``), a
non-empty step that finished with ``"stop"`` is taken to have ended on the delimiter;
a real EOS is then detected one call later as an empty step (one decode token with
prefix caching).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ttc.budget import BudgetExhausted
from ttc.context import RunContext, gather_settled
from ttc.engine import EngineError
from ttc.types import Generation, Prompt, Sample, SamplingParams

DEFAULT_MARKERS = ("\\boxed", "The answer is", "the answer is", "Final answer", "final answer")

_ids = itertools.count()


@dataclass
class Trajectory:
    """A partial solution: its steps (each with its trailing delimiter when it ended on
    one), per-step process scores, and the aggregated score after each step (what a
    reference particle of particle Gibbs competes with at that step)."""

    steps: list[str] = field(default_factory=list)
    finished: bool = False
    finish: str | None = None  # "eos" | "answer" | "max_steps" | "empty" | "error"
    tokens: int = 0
    step_scores: list[float] = field(default_factory=list)
    agg_history: list[float] = field(default_factory=list)
    uid: int = field(default_factory=lambda: next(_ids))
    parent: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # lineage[k] = uid of this trajectory's ancestor with k steps (lineage[-1] == uid).
    lineage: list[int] = field(default_factory=list)
    added: str = ""  # the step text the last extension added ("" for an empty final step)

    def __post_init__(self) -> None:
        if not self.lineage:
            self.lineage = [self.uid]

    @property
    def text(self) -> str:
        return "".join(self.steps)

    @property
    def score(self) -> float | None:
        """The aggregated process score of the whole prefix (None before scoring)."""
        return self.agg_history[-1] if self.agg_history else None

    def copy(self) -> Trajectory:
        """A copy sharing history (same uid: resampling duplicates, it does not create)."""
        return Trajectory(
            steps=list(self.steps), finished=self.finished, finish=self.finish, tokens=self.tokens,
            step_scores=list(self.step_scores), agg_history=list(self.agg_history), uid=self.uid,
            parent=self.parent, meta=dict(self.meta), lineage=list(self.lineage), added=self.added,
        )

    def prefix(self, k: int) -> Trajectory:
        """The first ``k`` steps, scored as they were at step ``k`` (particle Gibbs)."""
        k = min(k, len(self.lineage) - 1)
        done = k >= len(self.steps) and self.finished
        # The last node is this trajectory itself, whose parent and added text are its own: a
        # step that came back empty (or failed without text) took its parent's lineage slot, so
        # lineage[k - 1] is not its parent there.
        last = k == len(self.lineage) - 1
        return Trajectory(
            steps=self.steps[:k], finished=done, finish=self.finish if done else None,
            tokens=self.tokens if done else 0, step_scores=self.step_scores[:k],
            agg_history=self.agg_history[:k], uid=self.lineage[k],
            parent=self.parent if last else (self.lineage[k - 1] if k >= 1 else None), meta=dict(self.meta),
            lineage=self.lineage[: k + 1],
            added=self.added if last else (self.steps[k - 1] if 0 < k <= len(self.steps) else ""),
        )

    def to_sample(self, index: int = 0, *, weight: float | None = None, **meta: Any) -> Sample:
        return Sample(
            index=index, text=self.text, num_tokens=self.tokens,
            finish_reason="stop" if self.finished else "length", score=self.score, weight=weight,
            meta={
                "steps": len(self.steps), "finished": self.finished, "finish": self.finish,
                "step_scores": list(self.step_scores), "particle": self.uid, **self.meta, **meta,
            },
        )


@dataclass
class StepPolicy:
    """How a trajectory is cut into steps and when it ends.

    ``delimiter``: the string that ends a step (also the separator process verifiers
    put between steps). ``step_tokens``: if set, a step is that many tokens instead
    (the delimiter is then only used to join steps for verifiers). ``max_step_tokens``
    caps a delimiter step. ``answer_markers``: a step containing one ends the trajectory.
    """

    delimiter: str = "\n\n"
    step_tokens: int | None = None
    max_steps: int = 8
    max_step_tokens: int = 256
    answer_markers: tuple[str, ...] = DEFAULT_MARKERS

    def __post_init__(self) -> None:
        if not self.delimiter:
            raise ValueError("delimiter: must be a non-empty string")
        if self.max_steps < 1:
            raise ValueError(f"max_steps: must be >= 1, got {self.max_steps}")
        if self.step_tokens is not None and self.step_tokens < 1:
            raise ValueError(f"step_tokens: must be >= 1, got {self.step_tokens}")
        if self.max_step_tokens < 1:
            raise ValueError(f"max_step_tokens: must be >= 1, got {self.max_step_tokens}")

    @property
    def separator(self) -> str:
        return self.delimiter

    def params(self, base: SamplingParams, n: int = 1) -> SamplingParams:
        """Sampling parameters for one step: the base ones, stopped at the delimiter."""
        if self.step_tokens is not None:
            return base.model_copy(update={"max_tokens": self.step_tokens, "n": n})
        stop = list(base.stop) + ([self.delimiter] if self.delimiter not in base.stop else [])
        return base.model_copy(update={"stop": stop, "max_tokens": self.max_step_tokens, "n": n})

    def split(self, text: str) -> list[str]:
        """Steps of a complete text (for scoring full answers with a process verifier)."""
        parts = [p for p in text.split(self.delimiter)]
        steps = [p for p in parts if p.strip()]
        return steps or [text]

    def has_marker(self, text: str) -> bool:
        return any(m in text for m in self.answer_markers)

    def _delimiter_as_written(self, g: Generation) -> str:
        """The delimiter as the model wrote it: with the whitespace its last token held past
        it ("\\n\\n   " from one token), so the next step continues the model's exact tokens
        and an engine that kept the request resumes it; else the delimiter itself."""
        st = g.stop_text
        if st and st.startswith(self.delimiter) and not st[len(self.delimiter):].strip():
            return st
        return self.delimiter

    def apply(self, traj: Trajectory, g: Generation) -> Trajectory:
        """The trajectory extended by generation ``g`` (a new Trajectory, child of ``traj``)."""
        if traj.finished:
            raise ValueError("trajectory: already finished, it is never extended")
        child = Trajectory(
            steps=list(traj.steps), tokens=traj.tokens + g.num_tokens, step_scores=list(traj.step_scores),
            agg_history=list(traj.agg_history), parent=traj.uid, meta=dict(traj.meta),
        )
        text = g.text
        child.lineage = list(traj.lineage) + [child.uid]
        eos = False
        if g.finish_reason in ("abort", "error"):
            child.finished, child.finish = True, "error"
            if text.strip():
                child.steps.append(text)
                child.added = text
            else:
                child.lineage = list(traj.lineage[:-1]) + [child.uid]
            return child
        if self.step_tokens is not None:
            eos = g.finish_reason == "stop"
            step = text
        elif g.finish_reason == "stop":
            hit = g.stop_reason == self.delimiter or (g.stop_reason is None and bool(text.strip()))
            eos = not hit
            step = text + self._delimiter_as_written(g) if hit else text
        else:  # "length": a step longer than max_step_tokens; the trajectory goes on
            step = text
        if not text.strip():
            child.finished, child.finish = True, "empty"
            child.lineage = list(traj.lineage[:-1]) + [child.uid]
            return child
        child.steps.append(step)
        child.added = step
        if eos:
            child.finished, child.finish = True, "eos"
        elif self.has_marker(text):
            child.finished, child.finish = True, "answer"
        elif len(child.steps) >= self.max_steps:
            child.finished, child.finish = True, "max_steps"
        return child


async def extend_all(
    ctx: RunContext,
    prompt: Prompt,
    policy: StepPolicy,
    base: SamplingParams,
    trajs: Sequence[Trajectory],
    n: int = 1,
) -> tuple[list[list[Trajectory]], BudgetExhausted | EngineError | None]:
    """Extend every trajectory by one step, ``n`` children each, all calls concurrent.

    Trajectories with the same text (copies made by resampling) share one request with
    ``n`` times the copies when the engine has native ``n``: the prompt is then computed
    once, where concurrent copies would each compute the prefix blocks the cache does not
    hold yet (vLLM fills its prefix cache only after a block is computed).

    Inside ``ctx.continuations()`` the calls go through the engine's continuation scope
    (a continued trajectory may resume its engine request, KV cache and all): what the
    previous step kept and this one will not continue is released before the calls
    (their new requests find its slots and KV memory free), and the scope is swept after
    the step.

    Returns the children per input (an empty list where the call could not be made)
    and the BudgetExhausted that stopped any of them, else the EngineError of a call
    that failed for good (the caller decides; the work of the calls that did run is
    never lost).
    """
    if ctx.capabilities.native_n:
        groups: dict[str, list[int]] = {}
        for i, t in enumerate(trajs):
            groups.setdefault(t.text, []).append(i)
        members = list(groups.values())
    else:
        members = [[i] for i in range(len(trajs))]
    calls = [(prompt.continued(trajs[idx[0]].text), policy.params(base, n * len(idx))) for idx in members]
    if ctx.scope is not None:
        await ctx.scope.release_unneeded(calls)
    factories = [(lambda c=c: ctx.generate(c[0], c[1], continuable=True)) for c in calls]
    results, errors = await gather_settled(factories)
    if ctx.scope is not None:
        await ctx.scope.sweep()
    out: list[list[Trajectory]] = [[] for _ in trajs]
    for g, gens in results:
        for j, i in enumerate(members[g]):
            out[i] = [policy.apply(trajs[i], x) for x in gens[j * n:(j + 1) * n]]
    budget_err: BudgetExhausted | None = None
    engine_err: EngineError | None = None
    for _, e in errors:
        if isinstance(e, BudgetExhausted):
            budget_err = budget_err or e
        elif isinstance(e, EngineError):
            engine_err = engine_err or e
        else:
            raise e  # a cancellation or a bug: the caller sees it
    return out, budget_err or engine_err


async def score_trajectories(
    ctx: RunContext, prompt: Prompt, verifier: Any, trajs: Sequence[Trajectory], separator: str
) -> None:
    """Score, with a :class:`~verifiers.process.ProcessVerifier`, every trajectory that
    has a step not scored yet; record per-step scores and the prefix aggregate."""
    todo = [t for t in trajs if t.steps and len(t.agg_history) < len(t.steps)]
    uniq: dict[tuple[tuple[str, ...], bool], list[Trajectory]] = {}
    for t in todo:
        uniq.setdefault((tuple(t.steps), t.finished), []).append(t)
    if not uniq:
        return
    keys = list(uniq)
    res = await verifier.score(ctx, prompt, [list(k) for k, _ in keys], separator, finished=[f for _, f in keys])
    for k, r in zip(keys, res):
        for t in uniq[k]:
            t.step_scores = list(r.steps)
            t.agg_history = t.agg_history[: len(t.steps) - 1]
            t.agg_history += [t.agg_history[-1] if t.agg_history else r.aggregate] * (
                len(t.steps) - 1 - len(t.agg_history))
            t.agg_history.append(float(r.aggregate))
