"""DeepConf: parallel thinking filtered by the model's own confidence (Fu et al. 2025,
"Deep Think with Confidence").

Confidence metrics (token, group, trace) live in :mod:`ttc.strategies.confidence`.

- **Offline**: draw ``max_traces`` complete traces, score each with a trace
  confidence metric (default ``lowest_group``), keep the top ``eta``% by it, and
  return the confidence-weighted vote V(a) = sum_t c_t [ans_t = a].
- **Online**: draw ``n_init`` complete warm-up traces; threshold
  s = the (100 - eta)th percentile of their *lowest-group* confidences. Then each
  new trace is streamed, ``parallelism`` at a time, and killed the moment the
  confidence of its current (full) window falls below s: the same quantity, a
  window confidence, on both sides of the comparison (a public port compares
  the percentile of *average* confidences against window confidences; we don't).
  Killed traces do not vote; their tokens are charged. A trace cut off before it
  finished is kept as a sample flagged ``meta["truncated"]`` that does not vote either:
  a broken stream (a fresh trace takes its place), the deadline, or the cancellation
  of the traces in flight when the run stops; a request that fails for good stops the
  run with ``"engine_error"`` on the traces it has. After each finished trace,
  beta = V(top) / sum V; stop when beta >= ``tau``, at ``max_traces`` traces, or when
  the budget runs out. Warm-up traces whose lowest-group confidence is below s
  don't vote either (``filter_warmup``, the offline filter at the same eta), so
  every voter passed the same test.

The paper's k = 20 top logprobs and W = 2048-token windows are for traces of
thousands of tokens; ``window`` here defaults to 64 and should be scaled to the
traces at hand (a trace shorter than one window is judged by its mean and is
never killed mid-way).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ttc.answers import DEFAULT_EQUIVALENCE
from ttc.budget import BudgetExhausted
from ttc.checks import check_bool, check_choice, check_instance, check_int, check_number
from ttc.context import RunContext, gather_settled
from ttc.engine import EngineError, StreamBroken
from ttc.grading import off_loop
from ttc.strategy import Decision, Run, SampleSet, Strategy
from ttc.types import FinishReason, Generation, Prompt, Sample, SamplingParams, TokenLogprob

from .confidence import (
    METRICS,
    Metric,
    WindowConfidence,
    token_confidence,
    token_confidences,
    trace_confidence,
)
from .self_consistency import MAX_BATCH, affordable_draws
from .stats import Equiv
from .stopping import consensus_beta
from .voting import vote

#: Slack on ``beta >= tau`` for floating-point rounding of the weighted shares.
_BETA_ROUNDING = 1e-9


class _Online:
    """What the online phase's finished traces have said so far."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.budget_error: BudgetExhausted | None = None
        self.engine_error: EngineError | None = None
        self.other: BaseException | None = None

    @property
    def stopping(self) -> bool:
        return self.reason is not None or self.budget_error is not None or self.engine_error is not None

    def result(self) -> str:
        """The stop reason, or the error that ended the phase."""
        if self.reason is not None:
            return self.reason
        if self.budget_error is not None:
            raise self.budget_error
        if self.engine_error is not None:
            raise self.engine_error
        return "max_traces"


@dataclass
class _Trace:
    """What one streamed trace has delivered so far (kept if it is cut off)."""

    parts: list[str] = field(default_factory=list)
    lps: list[TokenLogprob] = field(default_factory=list)
    ntok: int = 0
    finish: FinishReason | None = None
    killed: bool = False

    def generation(self, finish: FinishReason) -> Generation:
        return Generation(text="".join(self.parts), num_tokens=self.ntok, finish_reason=finish,
                          logprobs=self.lps or None)


class DeepConf(Strategy):
    """DeepConf offline or online (see the module docstring).

    Args:
        mode: ``"online"`` or ``"offline"``.
        n_init: warm-up traces (online).
        max_traces: traces drawn (offline) / the most traces started (online).
        eta: keep the top ``eta``% traces (10 = aggressive, 90 = conservative).
        tau: consensus threshold on beta (online).
        window: group (sliding window) size in tokens.
        metric: the trace metric used to filter (offline) and weight votes.
        top_k: top-k logprobs requested per token (the engine's maximum if smaller).
        parallelism: concurrent streams in the online phase.
    """

    name = "deepconf"

    def __init__(
        self,
        mode: Literal["online", "offline"] = "online",
        *,
        n_init: int = 16,
        max_traces: int = 64,
        eta: float = 10.0,
        tau: float = 0.95,
        window: int = 64,
        metric: Metric = "lowest_group",
        top_k: int = 20,
        parallelism: int = 4,
        filter_warmup: bool = True,
        params: SamplingParams | None = None,
        eq: Equiv | None = None,
        **kw,  # type: ignore[no-untyped-def]
    ):
        super().__init__(**kw)
        check_choice("mode", mode, ("online", "offline"))
        check_int("n_init", n_init, lo=1)
        check_int("max_traces", max_traces, lo=1)
        check_number("eta", eta)
        check_number("tau", tau, lo=0, hi=1, lo_open=True)
        check_int("window", window, lo=1)
        check_int("top_k", top_k, lo=0, hi=20)
        check_int("parallelism", parallelism, lo=1)
        check_bool("filter_warmup", filter_warmup)
        check_instance("params", params, SamplingParams)
        if eq is not None and not callable(eq):
            raise TypeError(f"eq: expected a function, got {type(eq).__name__}")
        if not 0 < eta <= 100:
            raise ValueError(f"eta: must be in (0, 100], got {eta}")
        if metric not in METRICS:
            raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
        if n_init < 1 or max_traces < (n_init if mode == "online" else 1):
            raise ValueError(f"n_init/max_traces: need 1 <= n_init ({n_init}) <= max_traces ({max_traces})")
        if parallelism < 1:
            raise ValueError(f"parallelism: must be >= 1, got {parallelism}")
        if window < 1:
            raise ValueError(f"window: must be >= 1, got {window}")
        self.mode = mode
        self.n_init = n_init
        self.max_traces = max_traces
        self.eta = eta
        self.tau = tau
        self.window = window
        self.metric: Metric = metric
        self.top_k = top_k
        self.parallelism = parallelism
        self.filter_warmup = filter_warmup
        self.params = params or SamplingParams(temperature=0.8)
        self.eq = eq or DEFAULT_EQUIVALENCE
        self.name = f"deepconf_{mode}"

    # -- helpers ---------------------------------------------------------------------
    def _params(self, ctx: RunContext) -> SamplingParams:
        caps = ctx.capabilities
        if not caps.logprobs:
            raise ValueError(f"engine: DeepConf needs logprobs; {ctx.engine_name} returns none")
        k = min(self.top_k, caps.max_top_logprobs)
        return self.params.model_copy(update={"n": 1, "logprobs": k})

    def _score(self, s: Sample) -> None:
        conf = token_confidences(s.logprobs, self.top_k)
        s.meta["lowest_group"] = trace_confidence(conf, "lowest_group", self.window)
        s.meta["trace_conf"] = trace_confidence(conf, self.metric, self.window)
        c = s.meta["trace_conf"]
        s.weight = 0.0 if math.isnan(c) else c

    async def _draw(self, ctx: RunContext, prompt: Prompt, params: SamplingParams) -> Generation:
        return (await ctx.generate(prompt, params))[0]

    async def _draw_all(
        self, ctx: RunContext, prompt: Prompt, params: SamplingParams, n: int, samples: SampleSet, phase: str
    ) -> None:
        def on_result(i: int, g: Generation) -> bool:
            self._score(samples.add(g, phase=phase))
            return False

        # In rounds of what the budget holds (at most MAX_BATCH at once): a huge n never
        # starts, or allocates for, a draw per requested trace.
        errors: list[tuple[int, BaseException]] = []
        left = n
        while left > 0 and not errors:
            fit, short = affordable_draws(ctx, await ctx.worst_case(prompt, params))
            k = min(left, MAX_BATCH)
            cut = short if fit is not None and 0 < fit < k else None
            k = fit if cut is not None else k
            _, errors = await gather_settled([lambda: self._draw(ctx, prompt, params)] * k, on_result=on_result)
            if cut is not None and not errors:
                errors = [(k, cut)]  # the draws that did not fit, as when they were refused
            left -= k
        if errors:
            # The run stops on what it has: offline, the usual filter; a cut-short
            # warm-up has no threshold yet, so its traces all vote.
            if phase == "offline":
                self._filter_offline(ctx, samples)
            else:
                for s in samples:
                    s.meta.setdefault("voter", True)
            raise errors[0][1]

    async def _stream_trace(
        self, ctx: RunContext, prompt: Prompt, params: SamplingParams, s: float, tr: _Trace
    ) -> None:
        """One streamed trace into ``tr``; killed (closed early) when a full window's
        confidence < s. If the stream is cut off (a broken stream, the deadline, a
        cancellation) what it delivered stays in ``tr``."""
        wc = WindowConfidence(self.window)
        async with ctx.stream(prompt, params) as deltas:
            async for d in deltas:
                tr.parts.append(d.text)
                tr.ntok += d.num_tokens
                for t in d.logprobs or []:
                    tr.lps.append(t)
                    cur = wc.push(token_confidence(t, self.top_k))
                    if wc.full and cur < s:
                        tr.killed = True
                        break
                if d.finish_reason is not None:
                    tr.finish = d.finish_reason
                if tr.killed:
                    break

    def _keep_cut(self, ctx: RunContext, samples: SampleSet, tr: _Trace, cut_by: str,
                  error: BaseException | None = None) -> None:
        """A trace cut off before it finished (``cut_by``: "error", "budget",
        "cancelled"): its tokens were paid for, so it is kept, flagged
        ``meta["truncated"]``; it does not vote."""
        if not tr.parts and not tr.ntok:
            return
        done = cut_by == "cancelled" and (tr.finish is not None or tr.killed)
        finish = tr.finish if done and tr.finish else ("error" if cut_by == "error" else "abort")
        s = samples.add(tr.generation(finish), phase="online", killed=tr.killed)  # type: ignore[arg-type]
        self._score(s)
        s.meta.update(voter=False, truncated=not done, cut_by=cut_by)
        if done:
            s.meta["late"] = True  # finished while being cancelled: after the decision
        if error is not None:
            s.meta["error"] = str(error)
        s.weight = 0.0
        ctx.event("deepconf_cut", index=s.index, tokens=s.num_tokens, by=cut_by)

    # -- run ---------------------------------------------------------------------------
    async def _run(self, ctx: RunContext, prompt: Prompt, run: Run) -> str:
        samples = run.samples
        params = self._params(ctx)
        if self.mode == "offline":
            await self._draw_all(ctx, prompt, params, self.max_traces, samples, "offline")
            self._filter_offline(ctx, samples)
            return "done"
        return await self._online(ctx, prompt, params, samples)

    def _filter_offline(self, ctx: RunContext, samples: SampleSet) -> None:
        # In the order of their texts, not of arrival: the same draws keep the same traces.
        items = sorted((s for s in samples if not math.isnan(s.meta.get("trace_conf", float("nan")))),
                       key=lambda s: s.text)
        keep = max(1, math.ceil(self.eta / 100 * len(items))) if items else 0
        order = ctx.rng.permutation(len(items))  # random tie-breaking, then a stable sort
        ranked = sorted(order, key=lambda i: -items[i].meta["trace_conf"])
        kept = {items[i].index for i in ranked[:keep]}
        for s in samples:
            s.meta["voter"] = s.index in kept
        ctx.event("deepconf_filter", kept=len(kept), of=len(samples.items), eta=self.eta)

    async def _online(self, ctx: RunContext, prompt: Prompt, params: SamplingParams, samples: SampleSet) -> str:
        thr = await self._warmup(ctx, prompt, params, samples)
        if await self._consensus(ctx, samples):
            return "consensus"
        started = len(samples)
        tasks: dict[asyncio.Task, _Trace] = {}
        out = _Online()
        try:
            while True:
                while not out.stopping and len(tasks) < self.parallelism and started < self.max_traces:
                    tr = _Trace()
                    tasks[asyncio.ensure_future(self._stream_trace(ctx, prompt, params, thr, tr))] = tr
                    started += 1
                if not tasks:
                    break
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in done:  # every finished task is read: no exception is left unretrieved
                    await self._settle(ctx, samples, tasks.pop(t), t.exception(), out)
                if out.other is not None:
                    raise out.other
                if out.reason is not None:
                    break
        finally:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            for tr in tasks.values():  # in flight when the run stopped: paid for, kept
                self._keep_cut(ctx, samples, tr, "cancelled")
            ctx.event("deepconf_cancelled", traces=len(tasks))
        return out.result()

    async def _warmup(self, ctx: RunContext, prompt: Prompt, params: SamplingParams, samples: SampleSet) -> float:
        """Draw the warm-up traces and return the stopping threshold: the ``100 - eta``
        percentile of their lowest group confidences (DeepConf-low at eta=10)."""
        await self._draw_all(ctx, prompt, params, self.n_init, samples, "warmup")
        lowest = [s.meta["lowest_group"] for s in samples if not math.isnan(s.meta["lowest_group"])]
        if not lowest:
            raise ValueError("engine: warm-up traces came back without logprobs")
        thr = float(np.percentile(lowest, 100 - self.eta))
        ctx.event("deepconf_threshold", threshold=thr, eta=self.eta, warmup=len(samples))
        for s in samples:
            s.meta["voter"] = (not self.filter_warmup) or s.meta["lowest_group"] >= thr
        return thr

    async def _consensus(self, ctx: RunContext, samples: SampleSet) -> bool:
        """beta >= tau, up to rounding: confidence-weighted shares of equal weights (4 of 5
        traces, 0.8) come out a hair under the exact fraction in floating point."""
        beta = await off_loop(self._beta, samples, pure=True)
        if beta < self.tau - _BETA_ROUNDING:
            return False
        ctx.event("deepconf_consensus", beta=beta, traces=len(samples))
        return True

    async def _settle(self, ctx: RunContext, samples: SampleSet, tr: _Trace, exc: BaseException | None,
                      out: _Online) -> None:
        """Take in one finished online trace: a sample, a kept cut trace, or an error."""
        if isinstance(exc, BudgetExhausted):
            out.budget_error = out.budget_error or exc
            self._keep_cut(ctx, samples, tr, "budget", exc)
        elif isinstance(exc, StreamBroken) and exc.retryable:
            self._keep_cut(ctx, samples, tr, "error", exc)  # a fresh trace takes its place
        elif isinstance(exc, EngineError):
            out.engine_error = out.engine_error or exc
            self._keep_cut(ctx, samples, tr, "error", exc)
        elif exc is not None:
            out.other = out.other or exc
        else:
            killed = tr.killed
            g = tr.generation("abort" if killed else (tr.finish or "stop"))  # type: ignore[arg-type]
            s = samples.add(g, phase="online", killed=killed)
            self._score(s)
            s.meta["voter"] = not killed
            if killed:
                s.weight = 0.0
                ctx.event("deepconf_kill", index=s.index, tokens=s.num_tokens)
            elif out.reason is None and await self._consensus(ctx, samples):
                out.reason = "consensus"

    def _beta(self, samples: SampleSet) -> float:
        voters = [s for s in samples if s.meta.get("voter")]
        return consensus_beta(voters, self.eq)[0] if voters else 0.0

    def decide(self, ctx: RunContext, prompt: Prompt, run: Run) -> Decision:
        samples = run.samples
        voters = [s for s in samples if s.meta.get("voter")]
        weights = [s.weight or 0.0 for s in voters]
        if voters and sum(weights) <= 0:
            weights = [1.0] * len(voters)
        d = vote(voters, ctx.rng, weights=weights, eq=self.eq) if voters else Decision(answer=None)
        d.meta.update(
            {
                "mode": self.mode,
                "threshold": next(
                    (e.data["threshold"] for e in ctx.trace if e.kind == "deepconf_threshold"), None
                ),
                "voters": len(voters),
                "killed": sum(1 for s in samples if s.meta.get("killed")),
                "traces": len(samples),
            }
        )
        return d
