"""Self-consistency (Wang et al. 2023) with adaptive stopping.

Samples are drawn in batches (each batch's requests run concurrently, so a
continuous-batching engine stays busy); as each sample *finishes* the stopping rule
is evaluated on every finished sample so far, and when it fires the rest of the
batch is cancelled (the engine aborts those requests; their partial tokens are
charged). A batch the rule cannot stop inside (it is still under its ``min_samples``
until the batch's last sample: fixed N, an adaptive rule's first batch) is one
request for ``n`` samples instead. Then the answer classes are voted on (majority,
or weighted by a verifier's scores, or another voter such as RPC / complexity voting).

The early-finisher bias: when a rule fires mid-batch the samples still running
are, by construction, the *longer* ones, so the rule (and the vote) see a sample
biased toward short answers. This strategy votes only on the samples the rule was
shown; a sample that finished after the rule fired but before its cancellation
landed is kept in ``result.samples`` (its tokens were paid) with
``meta["late"] = True`` and takes no part in the vote. Use ``batch_sizes=(1,)``
for strictly sequential, unbiased sampling at the cost of concurrency.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ttc.answers import DEFAULT_EQUIVALENCE
from ttc.budget import BudgetExhausted
from ttc.checks import check_instance, check_int, check_optional_int
from ttc.context import RunContext, gather_settled
from ttc.engine import EngineError
from ttc.grading import off_loop
from ttc.strategy import Decision, Describable, Run, SampleSet, Strategy
from ttc.types import Generation, Prompt, Sample, SamplingParams, Usage
from ttc.verifiers.base import OutcomeVerifier

from .stats import Equiv
from .stopping import BetaRule, StopCheck, StoppingRule
from .voting import vote

Voter = Callable[[Sequence[Sample], np.random.Generator, Equiv], Decision]
Schedule = Sequence[int] | Callable[[int, int], int]


@runtime_checkable
class Sampler(Protocol):
    """How self-consistency draws one sample: ``await sampler.draw(ctx, prompt, params)``
    returns a generation (or a finished :class:`~ttc.types.Sample`) and raises
    :class:`~ttc.budget.BudgetExhausted` / :class:`~ttc.engine.EngineError` as a call
    does. :class:`PlainSampler` is one request; :class:`~ttc.strategies.early_exit.EarlyExit`
    draws a trace that stops when its probes agree."""

    async def draw(self, ctx: RunContext, prompt: Prompt, params: SamplingParams) -> Generation | Sample: ...


class PlainSampler(Describable):
    """One sample per request, as the engine finishes it."""

    async def draw(self, ctx: RunContext, prompt: Prompt, params: SamplingParams) -> Generation:
        gens = await ctx.generate(prompt, params)
        return gens[0]


#: The most draws one batch starts at once; a larger batch is drawn as several.
MAX_BATCH = 256


def affordable_draws(ctx: RunContext, worst: Usage) -> tuple[int | None, BudgetExhausted | None]:
    """(how many draws costing ``worst`` each fit in what is left of the budget now, None
    when nothing limits them; the :class:`BudgetExhausted` the next draw would raise)."""
    need = {"completion_tokens": worst.completion_tokens, "total_tokens": worst.total_tokens,
            "generations": worst.generations, "calls": worst.calls}
    fit: int | None = None
    short: BudgetExhausted | None = None
    for key, left in ctx.meter.remaining().items():
        per = need.get(key, 0)
        if per > 0:
            k = int(max(left, 0) // per)
            if fit is None or k < fit:
                fit, short = k, BudgetExhausted(key, per, max(left - k * per, 0))
    return fit, short


def batch_size(schedule: Schedule, batch_index: int, drawn: int) -> int:
    """Size of batch ``batch_index`` (0-based) after ``drawn`` samples; the last entry of
    a sequence repeats."""
    if callable(schedule):
        k = int(schedule(batch_index, drawn))
    else:
        seq = list(schedule)
        k = int(seq[min(batch_index, len(seq) - 1)])
    if k < 1:
        raise ValueError(f"batch_sizes: batch {batch_index} has size {k} (< 1)")
    return k


class SelfConsistency(Strategy):
    """Self-consistency with a pluggable stopping rule.

    Args:
        rule: a :class:`~ttc.strategies.stopping.StoppingRule` (default ``BetaRule()``).
        batch_sizes: batch schedule, a sequence (the last size repeats) or a function
            ``(batch_index, samples_drawn) -> size``; default: the rule's ``batch_hint``
            or ``(4, 4, 8)``.
        max_samples: a hard cap on top of the rule's own cap.
        params: sampling parameters (``n`` is ignored: the batch schedule sets it).
        weighting: ``"majority"``; ``"score"`` (vote weight = ``verifier`` score); or an
            :class:`~ttc.verifiers.base.OutcomeVerifier` (the same with that verifier).
            The rule counts votes unweighted while sampling (``DeepConfConsensus``
            reads ``Sample.weight`` if set); verifier scores are computed once at the end.
        voter: how the answer classes are voted on, ``(samples, rng, eq) -> Decision``
            (e.g. :class:`~ttc.strategies.rpc.RPCVoter`,
            :class:`~ttc.strategies.rpc.ComplexityVoter`); overrides ``weighting``. It
            runs on the event loop first and again on a grading thread (the same ``rng``
            state) when an equivalence check it asks for needs a worker process: it must
            have no effect but its draws from ``rng``.
        sampler: how one sample is drawn (a :class:`Sampler`; default
            :class:`PlainSampler`, one request; :class:`~ttc.strategies.early_exit.EarlyExit`
            draws traces that exit early).
        eq: answer equivalence (default :data:`ttc.answers.DEFAULT_EQUIVALENCE`).

    ``result.meta``: ``stopped_by`` (rule name, ``"max_samples"``, ``"budget"`` or ``"engine_error"``),
    ``stop_samples``, ``stop_tokens`` (completion tokens of the samples seen by the
    rule), ``rule_confidence``, ``batches`` (sizes drawn), ``votes``.
    """

    name = "self_consistency"
    inline_decide = True  # the vote draws only from ctx.rng (ties)

    def __init__(
        self,
        rule: StoppingRule | None = None,
        *,
        batch_sizes: Schedule | None = None,
        max_samples: int | None = None,
        params: SamplingParams | None = None,
        weighting: str | OutcomeVerifier = "majority",
        verifier: OutcomeVerifier | None = None,
        voter: Voter | None = None,
        sampler: Sampler | None = None,
        eq: Equiv | None = None,
        **kw,  # type: ignore[no-untyped-def]
    ):
        super().__init__(**kw)
        check_instance("rule", rule, StoppingRule)
        check_optional_int("max_samples", max_samples, lo=1)
        check_instance("params", params, SamplingParams)
        if batch_sizes is not None and not callable(batch_sizes):
            if isinstance(batch_sizes, (str, bytes)) or not isinstance(batch_sizes, Sequence) or not batch_sizes:
                raise TypeError(f"batch_sizes: expected a non-empty sequence of integers or a function, "
                                f"got {batch_sizes!r}")
            for size in batch_sizes:
                check_int("batch_sizes", size, lo=1)
        if sampler is not None and not isinstance(sampler, Sampler):
            raise TypeError(f"sampler: expected a Sampler (with an async draw method), got {type(sampler).__name__}")
        for name, fn in (("voter", voter), ("eq", eq)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name}: expected a function, got {type(fn).__name__}")
        self.rule = rule or BetaRule()
        self.batch_sizes: Schedule = batch_sizes or self.rule.batch_hint or (4, 4, 8)
        caps = [c for c in (max_samples, self.rule.max_samples) if c is not None]
        if not caps:
            raise ValueError("max_samples: the rule has no cap; give max_samples")
        self.max_samples = min(caps)
        self.params = (params or SamplingParams(temperature=0.8)).model_copy(update={"n": 1})
        if isinstance(weighting, OutcomeVerifier):
            verifier, weighting = weighting, "score"
        if weighting not in ("majority", "score"):
            raise ValueError(f"weighting: expected 'majority', 'score' or a verifier, got {weighting!r}")
        check_instance("verifier", verifier, OutcomeVerifier)
        if weighting == "score" and verifier is None:
            raise ValueError("verifier: weighting='score' needs a verifier")
        if self.rule.needs_scores and verifier is None:
            raise ValueError(f"verifier: the rule {self.rule.name!r} reads verifier scores; give a verifier")
        self.weighting = weighting
        self.verifier = verifier
        self.voter = voter
        self.sampler: Sampler = sampler or PlainSampler()
        self.eq = eq or DEFAULT_EQUIVALENCE
        self.name = f"sc[{self.rule.name}]"

    async def _draw(self, ctx: RunContext, prompt: Prompt) -> Generation | Sample:
        return await self.sampler.draw(ctx, prompt, self.params)

    async def _run(self, ctx: RunContext, prompt: Prompt, run: Run) -> str:
        samples = run.samples
        seen: list[Sample] = []
        batches: list[int] = []
        check = StopCheck(False, 0.0, self.rule.name)
        stop_reason: str | None = None
        b = 0
        worst = await ctx.worst_case(prompt, self.params)
        while stop_reason is None:
            k = min(batch_size(self.batch_sizes, b, len(seen)), self.max_samples - len(seen))
            # Start only the draws the budget can hold (a draw that cannot fit would fail at
            # once anyway) and at most MAX_BATCH: a huge k never allocates per requested draw.
            fit, short = affordable_draws(ctx, worst)
            cut = short if fit is not None and 0 < fit < min(k, MAX_BATCH) else None
            start = fit if cut is not None else min(k, MAX_BATCH)
            batches.append(k if cut is not None else start)
            ctx.event("batch", index=b, size=k, drawn=len(seen))
            fired, errors = await self._batch(ctx, prompt, samples, seen, b, start)
            if cut is not None and not fired and not errors:
                errors = [(start, cut)]  # the draws that did not fit, as when they were refused
            if fired:
                check = fired[0]
                stop_reason = check.reason
            elif errors:
                budget = [e for _, e in errors if isinstance(e, BudgetExhausted)]
                if budget:
                    self._record(ctx, run, seen, batches, check, "budget")
                    raise budget[0]
                failed = [e for _, e in errors if isinstance(e, EngineError)]
                if failed:  # the samples that did come are kept: the run stops on them
                    self._record(ctx, run, seen, batches, check, "engine_error")
                    raise failed[0]
                raise errors[0][1]
            elif len(seen) >= self.max_samples:
                stop_reason = "max_samples"
            else:
                check = await off_loop(self.rule.check, seen, self.eq, pure=True)
            b += 1
        self._record(ctx, run, seen, batches, check, stop_reason)
        if self.verifier is not None:
            await self._score(ctx, prompt, samples)
        return stop_reason

    async def _batch(
        self, ctx: RunContext, prompt: Prompt, samples: SampleSet, seen: list[Sample], b: int, k: int
    ) -> tuple[list[StopCheck], list[tuple[int, BaseException]]]:
        """Draw one batch of ``k`` concurrently; check the rule as each sample finishes and
        cancel the rest when it fires. Returns (the firing check, if any; errors)."""
        fired: list[StopCheck] = []

        if self.rule.needs_scores:
            return await self._scored_batch(ctx, prompt, samples, seen, b, k)

        async def on_result(i: int, g: Generation) -> bool:
            if fired:  # same completion round as the firing sample: not shown to the rule
                samples.add(g, batch=b, late=True)
                return True
            s = samples.add(g, batch=b)
            seen.append(s)
            if self._below_minimum(len(seen)):
                return False
            res = await off_loop(self._check, seen, pure=True)
            if res.stop:
                fired.append(res)
            return res.stop

        if self._one_request(len(seen), k):
            try:
                gens = await ctx.generate(prompt, self.params.model_copy(update={"n": k}))
            except Exception as e:  # as a failed draw of the per-sample path: the caller decides
                return fired, [(0, e)]
            for i, g in enumerate(gens):
                await on_result(i, g)
            return fired, []
        n_before = len(samples)
        results, errors = await gather_settled(
            [lambda: self._draw(ctx, prompt) for _ in range(k)], on_result=on_result
        )
        # Results that landed after the rule fired (not shown to it): kept, not voted.
        for _, g in results[len(samples) - n_before :]:
            samples.add(g, batch=b, late=True)
        return fired, errors

    async def _scored_batch(
        self, ctx: RunContext, prompt: Prompt, samples: SampleSet, seen: list[Sample], b: int, k: int
    ) -> tuple[list[StopCheck], list[tuple[int, BaseException]]]:
        """A batch for a rule that reads verifier scores: draw it whole, score it, check."""
        results, errors = await gather_settled([lambda: self._draw(ctx, prompt) for _ in range(k)])
        seen.extend(samples.add(g, batch=b) for _, g in results)
        try:
            await self._score(ctx, prompt, samples)
        except BudgetExhausted as e:
            errors.append((-1, e))
        if errors:
            return [], errors
        res = await off_loop(self._check, seen, pure=True)
        return ([res] if res.stop else []), errors

    def _one_request(self, drawn: int, k: int) -> bool:
        """True when no sample of a batch of ``k`` after ``drawn`` can stop sampling before
        the batch's last one (the rule is still under its ``min_samples`` until then):
        such a batch gains nothing from arriving sample by sample, so it is drawn as one
        request for ``k`` generations (one prompt read on an engine with native ``n``,
        one round trip over HTTP). Only for plain one-request samples and a rule that
        keeps :meth:`StoppingRule.check`'s minimum."""
        return k > 1 and type(self.sampler) is PlainSampler and self._below_minimum(drawn + k - 1)

    def _below_minimum(self, seen: int) -> bool:
        """True when ``seen`` samples cannot stop sampling: fewer than the rule's
        ``min_samples`` (and so than any cap), for a rule keeping
        :meth:`StoppingRule.check`'s minimum."""
        return type(self.rule).check is StoppingRule.check and seen < self.rule.min_samples

    def _check(self, seen: list[Sample]) -> StopCheck:
        """The rule's verdict on the samples seen, or a stop at this strategy's own cap."""
        res = self.rule.check(seen, self.eq)
        if not res.stop and len(seen) >= self.max_samples:
            res = StopCheck(True, res.confidence, "max_samples", res.detail)
        return res

    def _record(
        self, ctx: RunContext, run: Run, seen: list[Sample], batches: list[int], check: StopCheck, reason: str
    ) -> None:
        """Why sampling stopped: kept in ``run.state`` for :meth:`decide` and traced."""
        run.state = {
            "stopped_by": reason,
            "stop_samples": len(seen),
            "stop_tokens": sum(s.num_tokens for s in seen),
            "rule_confidence": check.confidence,
            "rule_detail": {k: v for k, v in check.detail.items() if isinstance(v, (int, float, str, type(None)))},
            "batches": list(batches),
        }
        ctx.event("sc_stop", **run.state)

    async def _score(self, ctx: RunContext, prompt: Prompt, samples: SampleSet) -> None:
        assert self.verifier is not None
        todo = [s for s in samples if s.score is None and not s.meta.get("late")]
        if todo:
            for s, sc in zip(todo, await self.verifier.score(ctx, prompt, todo)):
                s.score = sc

    def decide(self, ctx: RunContext, prompt: Prompt, run: Run) -> Decision:
        samples = run.samples
        voters = [s for s in samples if not s.meta.get("late") and not s.meta.get("truncated")]
        if self.voter is not None:
            d = self.voter(voters, ctx.rng, self.eq)
        elif self.weighting == "score":
            scores = [s.score if s.score is not None else 0.0 for s in voters]
            d = vote(voters, ctx.rng, weights=scores, eq=self.eq, pick_member_by=scores)
        else:
            d = vote(voters, ctx.rng, eq=self.eq)
        info = run.state or {
            "stopped_by": "budget",
            "stop_samples": len(voters),
            "stop_tokens": sum(s.num_tokens for s in voters),
        }
        d.meta.update({k: v for k, v in info.items() if k != "rule_detail"})
        d.meta["rule"] = repr(self.rule)
        return d
