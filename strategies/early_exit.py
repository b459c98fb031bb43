"""Early exit on certainty for one long reasoning trace (Dynasor-CoT probes).

Follows Dynasor-CoT (Fu et al., "Efficiently Serving LLM Reasoning Programs with
Certaindex"): generate the trace in chunks (default 64 tokens); after each chunk send
a side *probe* on the same prefix, the trace so far plus an answer-forcing suffix
("... Oh, I suddenly got the answer to the whole problem, **Final Answer**\\n\\n\\[
\\boxed{"), with about 20 tokens at temperature 0, *concurrently with the next chunk*.
The probe's tokens never join the trace. Exit when the last ``k`` probe answers are
equivalent (:class:`ttc.answers.Equivalence`), non-empty and free of hesitation words
(wait, hold, but, hmm); on exit the in-flight chunk is cancelled (its billed partial
tokens are still charged) and the final answer is appended in the expected format.

Metering: trace chunks are charged with ``kind="generate"``, probes with
``kind="probe"``, so ``StrategyResult.usage_by_kind`` separates the trace from the
probe cost; a sample's ``num_tokens`` counts trace tokens only.

Two ways to draw the trace (``mode``): ``"continuation"`` (each chunk is a call on
``prompt.with_prefix(trace_so_far)``; needs an engine that continues a partial answer,
and engines with prefix caching reuse the shared prefix) and ``"stream"`` (one
streamed generation; a probe is fired every ``chunk_tokens`` streamed tokens and the
stream is closed on exit).

Use :class:`DynasorCoT` as a strategy (one trace), or :class:`EarlyExit` as a trace
generator inside another strategy (``await early_exit.generate_trace(ctx, prompt)``),
e.g. :class:`EarlyExitSelfConsistency`, whose votes are over early-exited traces. With
``board=True`` the vote itself stops early too: the traces share a board
(:mod:`ttc.strategies.vote_board`) that says when the vote is decided, from the finished
traces' votes and, with ``share_probes``, the running traces' probe answers (Dynasor's
Certaindex reads the probed answers of a program's parallel branches the same way); the
traces still running are then halted at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ttc.answers import DEFAULT_EQUIVALENCE, extract_answer_is, extract_boxed, normalize
from ttc.budget import BudgetExhausted
from ttc.checks import check_bool, check_int, check_optional_int
from ttc.context import RunContext
from ttc.engine import EngineError
from ttc.grading import off_loop
from ttc.strategy import Decision, Describable, Run, Strategy
from ttc.types import Generation, Prompt, Sample, SamplingParams

from .self_consistency import SelfConsistency
from .stats import Equiv
from .stopping import StopCheck
from .vote_board import BoardView, VoteBoard, board_decision

HESITATION_WORDS: tuple[str, ...] = ("wait", "hold", "but", "hmm")
PLACEHOLDERS: tuple[str, ...] = ("n", "x", "?", "...", "answer", "number")

DYNASOR_SUFFIX = "... Oh, I suddenly got the answer to the whole problem, **Final Answer**\n\n\\[ \\boxed{"


#: ``await on_probe(record)`` after a probe; True ends the trace on that probe's answer.
OnProbe = Callable[["ProbeRecord"], Awaitable[bool]]


async def _unless_halted(aw: Awaitable[Any], halt: asyncio.Event | None) -> Any:
    """``await aw``, unless ``halt`` is set first: then it is cancelled (and awaited)
    and None comes back. A result that is ready wins over the halt."""
    if halt is None:
        return await aw
    fut = asyncio.ensure_future(aw)
    waiter = asyncio.ensure_future(halt.wait())
    try:
        await asyncio.wait({fut, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not fut.done():
            fut.cancel()
            with contextlib.suppress(asyncio.CancelledError, BudgetExhausted, EngineError):
                await fut
    if fut.done() and not fut.cancelled():
        return fut.result()
    return None


def _parse_boxed(text: str) -> str | None:
    return extract_boxed("\\boxed{" + text)


def _parse_answer_is(text: str) -> str | None:
    return extract_answer_is("The answer is" + text.split("\n")[0])


@dataclass(frozen=True)
class ProbeStyle:
    """How to force an answer out of a partial trace, read it, and write it down.

    ``suffix`` is appended to the trace for the probe; ``stop`` ends the probe;
    ``parse`` turns the probe's text into an answer (None = no answer); the final
    answer is appended to the trace as ``answer_format.format(answer=...)``.
    """

    suffix: str
    stop: tuple[str, ...]
    parse: Callable[[str], str | None]
    answer_format: str
    require_stop: bool = False  # a probe that runs out of tokens does not count
    # Stop strings that belong to the answer (engines drop the matched stop string from
    # the text): re-appended before ``parse`` when the probe ended on one.
    keep_stop: tuple[str, ...] = ()


PROBE_STYLES: dict[str, ProbeStyle] = {
    # The Dynasor-CoT suffix; the answer must close its \boxed{...} within the probe.
    "boxed": ProbeStyle(
        suffix=DYNASOR_SUFFIX, stop=("\\]", "\n"), parse=_parse_boxed,
        answer_format="\n\n**Final Answer**\n\n\\[ \\boxed{{{answer}}} \\]", require_stop=False,
    ),
    # The same suffix, but the probe stops at the first "}" (about half the probe tokens of
    # "boxed"); only for answers without braces (numbers, words; not \frac{a}{b}).
    "boxed_fast": ProbeStyle(
        suffix=DYNASOR_SUFFIX, stop=("}", "\\]", "\n"), parse=_parse_boxed,
        answer_format="\n\n**Final Answer**\n\n\\[ \\boxed{{{answer}}} \\]", keep_stop=("}",),
    ),
    # For models told to end with "The answer is N." (ttc.questions.COT_SUFFIX).
    "answer_is": ProbeStyle(
        suffix="\nThe answer is", stop=("\n",), parse=_parse_answer_is,
        answer_format="\n\nThe answer is {answer}.",
    ),
}


@dataclass(frozen=True)
class Preset:
    """Aggressiveness: probe every ``chunk_tokens`` tokens, exit after ``k`` agreeing probes."""

    chunk_tokens: int
    k: int


PRESETS: dict[str, Preset] = {
    "mild": Preset(chunk_tokens=64, k=4),
    "moderate": Preset(chunk_tokens=32, k=3),
    "aggressive": Preset(chunk_tokens=32, k=2),
    # for short traces (a few hundred tokens): a probe every 16 tokens
    "eager": Preset(chunk_tokens=16, k=2),
}


@dataclass
class ProbeRecord:
    """One probe: where it was sent (trace tokens so far), what it said, whether it counts."""

    at_tokens: int
    text: str
    answer: str | None
    valid: bool
    reason: str  # "ok", "empty", "hesitation", "placeholder", "unfinished", "budget", "error"
    tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"at_tokens": self.at_tokens, "text": self.text, "answer": self.answer, "valid": self.valid,
                "reason": self.reason, "tokens": self.tokens}


def has_hesitation(text: str, words: Sequence[str] = HESITATION_WORDS) -> bool:
    """True if ``text`` contains any of ``words`` as a whole word (case-insensitive)."""
    if not words:
        return False
    pat = r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b"
    return re.search(pat, text, re.IGNORECASE) is not None


def agreement_reached(answers: Sequence[str | None], k: int, eq: Equiv | None = None) -> bool:
    """The exit rule: the last ``k`` probe answers exist (None marks a probe that does
    not count: empty, hesitant, unfinished) and are all equivalent to the latest one."""
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    if len(answers) < k:
        return False
    last = list(answers[-k:])
    if any(a is None or normalize(a) is None for a in last):
        return False
    eq = eq or DEFAULT_EQUIVALENCE
    return all(eq(last[-1], a) for a in last[:-1])


class EarlyExit(Describable):
    """Generates one reasoning trace with certainty probes; usable from any strategy.

    Args:
        preset: ``"mild"``, ``"moderate"``, ``"aggressive"`` or ``"eager"`` (see :data:`PRESETS`);
            ``chunk_tokens`` / ``k`` override it.
        max_tokens: the trace's token limit (without early exit it may use all of it).
        probe: a :data:`PROBE_STYLES` name or a :class:`ProbeStyle`; ``probe_suffix``
            overrides its suffix.
        probe_max_tokens: tokens a probe may generate (about 20).
        hesitation: words that disqualify a probe.
        placeholders: answers that do not count (e.g. "N" copied from "The answer is N.").
        params: sampling parameters of the trace (``max_tokens`` is replaced).
        mode: ``"continuation"`` or ``"stream"``.
        min_tokens: no probe before this many trace tokens.
    """

    def __init__(
        self,
        preset: str | Preset = "moderate",
        *,
        chunk_tokens: int | None = None,
        k: int | None = None,
        max_tokens: int = 384,
        probe: str | ProbeStyle = "boxed",
        probe_suffix: str | None = None,
        probe_max_tokens: int = 20,
        hesitation: Sequence[str] = HESITATION_WORDS,
        placeholders: Sequence[str] = PLACEHOLDERS,
        params: SamplingParams | None = None,
        mode: Literal["continuation", "stream"] = "continuation",
        min_tokens: int = 0,
        eq: Equiv | None = None,
    ):
        if isinstance(preset, str):
            if preset not in PRESETS:
                raise ValueError(f"preset: unknown {preset!r}; known: {sorted(PRESETS)}")
            preset = PRESETS[preset]
        self.chunk_tokens = chunk_tokens if chunk_tokens is not None else preset.chunk_tokens
        self.k = k if k is not None else preset.k
        if self.chunk_tokens < 1:
            raise ValueError(f"chunk_tokens: must be >= 1, got {self.chunk_tokens}")
        if self.k < 1:
            raise ValueError(f"k: must be >= 1, got {self.k}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1, got {max_tokens}")
        if isinstance(probe, str):
            if probe not in PROBE_STYLES:
                raise ValueError(f"probe: unknown style {probe!r}; known: {sorted(PROBE_STYLES)}")
            probe = PROBE_STYLES[probe]
        if probe_suffix is not None:
            probe = dataclasses.replace(probe, suffix=probe_suffix)
        if mode not in ("continuation", "stream"):
            raise ValueError(f"mode: 'continuation' or 'stream', got {mode!r}")
        self.max_tokens = max_tokens
        self.style = probe
        self.probe_params = SamplingParams(temperature=0.0, max_tokens=probe_max_tokens, stop=list(probe.stop))
        self.hesitation = tuple(hesitation)
        self.placeholders = {p.lower() for p in placeholders}
        self.params = (params or SamplingParams(temperature=0.0)).model_copy(update={"n": 1})
        self.mode = mode
        self.min_tokens = min_tokens
        self.eq = eq or DEFAULT_EQUIVALENCE

    def __repr__(self) -> str:
        return f"EarlyExit(chunk_tokens={self.chunk_tokens}, k={self.k}, max_tokens={self.max_tokens}, mode={self.mode!r})"

    # -- probes -------------------------------------------------------------------------
    def read_probe(self, g: Generation, at_tokens: int) -> ProbeRecord:
        """Judge one probe's generation: answer, and whether it counts."""
        text = g.text
        if g.finish_reason == "stop" and g.stop_reason in self.style.keep_stop:
            text += g.stop_reason
        rec = ProbeRecord(at_tokens=at_tokens, text=text, answer=None, valid=False, reason="ok", tokens=g.num_tokens)
        if has_hesitation(text, self.hesitation):
            rec.reason = "hesitation"
            return rec
        if self.style.require_stop and g.finish_reason == "length":
            rec.reason = "unfinished"
            return rec
        a = self.style.parse(text)
        if a is not None and "=" in a:
            a = a.rsplit("=", 1)[1].strip() or None
        if a is None or normalize(a) is None:
            rec.reason = "empty"
            return rec
        if normalize(a) in self.placeholders:
            rec.reason = "placeholder"
            rec.answer = a
            return rec
        rec.answer, rec.valid = a, True
        return rec

    async def probe(self, ctx: RunContext, prompt: Prompt, prefix: str, at_tokens: int) -> ProbeRecord:
        """Send one probe on ``prefix`` (metered as ``kind="probe"``)."""
        try:
            gens = await ctx.generate(prompt.with_prefix(prefix + self.style.suffix), self.probe_params, kind="probe")
        except BudgetExhausted:
            return ProbeRecord(at_tokens=at_tokens, text="", answer=None, valid=False, reason="budget")
        except EngineError:  # a failed probe does not count; the trace goes on
            return ProbeRecord(at_tokens=at_tokens, text="", answer=None, valid=False, reason="error")
        return self.read_probe(gens[0], at_tokens)

    def _answers(self, probes: Sequence[ProbeRecord]) -> list[str | None]:
        return [p.answer if p.valid else None for p in probes]

    # -- one trace ---------------------------------------------------------------------------
    async def generate_trace(
        self, ctx: RunContext, prompt: Prompt, *, params: SamplingParams | None = None, index: int = 0,
        on_probe: OnProbe | None = None, halt: asyncio.Event | None = None,
    ) -> Sample:
        """Draw one trace with early exit. Never raises BudgetExhausted or EngineError:
        if the budget runs out, or the trace's request fails for good (a broken stream,
        a chunk that failed after its retries), the partial trace comes back with
        ``meta["exit"] == "budget"`` or ``"error"`` (its tokens were paid for).

        Hooks for a strategy that runs several traces at once (:class:`EarlyExitSelfConsistency`
        with ``board=True``): ``on_probe(record)`` is awaited after every probe that did not
        end the trace by itself; if it returns True the trace exits on that probe's answer
        (``exit == "agreed"``: the answer agrees with other traces). ``halt``: when the event
        is set, the trace stops at once (the in-flight chunk and probe are cancelled, their
        billed tokens charged) with ``exit == "halted"`` and no answer.

        ``meta``: ``exit`` ("certain", "agreed", "finished", "max_tokens", "halted", "budget",
        "error"), ``probes`` (list of probe records), ``probe_tokens``, ``probe_calls``,
        ``budget_limit``, ``error``.
        """
        params = (params or self.params).model_copy(update={"n": 1})
        ctx.event("early_exit_start", mode=self.mode, chunk_tokens=self.chunk_tokens, k=self.k)
        if self.mode == "stream":
            trace, tokens, probes, exit_reason, limit = await self._stream_trace(ctx, prompt, params, on_probe, halt)
        else:
            trace, tokens, probes, exit_reason, limit = await self._chunked_trace(ctx, prompt, params, on_probe, halt)
        error = None
        if exit_reason == "error":
            error, limit = limit, None
        text, answer = trace, None
        if exit_reason in ("certain", "agreed"):
            answer = probes[-1].answer
            text = trace + self.style.answer_format.format(answer=answer)
        meta: dict[str, Any] = {
            "exit": exit_reason,
            "exit_at_tokens": tokens,
            "probes": [p.as_dict() for p in probes],
            "probe_tokens": sum(p.tokens for p in probes),
            "probe_calls": sum(1 for p in probes if p.reason != "budget"),
        }
        if limit is not None:
            meta["budget_limit"] = limit
        if error is not None:
            meta["error"] = error
            meta["truncated"] = True
        valid = [p for p in probes if p.valid]
        if valid:
            meta["last_probe_answer"] = valid[-1].answer
        ctx.event("early_exit", exit=exit_reason, tokens=tokens, probes=len(probes), answer=answer)
        finish = "stop" if exit_reason in ("certain", "agreed", "finished") else "error" if error is not None else "length"
        return Sample(index=index, text=text, num_tokens=tokens, finish_reason=finish, answer=answer, meta=meta)

    async def _exit_after_probe(self, probes: list[ProbeRecord], on_probe: OnProbe | None) -> str | None:
        """``"certain"`` when the trace's own last k probes agree, ``"agreed"`` when
        ``on_probe`` accepts the latest probe, else None."""
        if await off_loop(agreement_reached, self._answers(probes), self.k, self.eq, pure=True):
            return "certain"
        if on_probe is not None and await on_probe(probes[-1]) and probes[-1].valid:
            return "agreed"
        return None

    async def _chunked_trace(
        self, ctx: RunContext, prompt: Prompt, params: SamplingParams, on_probe: OnProbe | None = None,
        halt: asyncio.Event | None = None,
    ) -> tuple[str, int, list[ProbeRecord], str, str | None]:
        base = prompt.assistant_prefix
        trace, tokens = "", 0
        probes: list[ProbeRecord] = []

        def next_chunk() -> asyncio.Future[list[Generation]]:
            n = min(self.chunk_tokens, self.max_tokens - tokens)
            p = prompt.with_prefix(base + trace)
            return asyncio.ensure_future(ctx.generate(p, params.model_copy(update={"max_tokens": n}), kind="generate"))

        main: asyncio.Future[list[Generation]] | None = None
        try:
            main = next_chunk()
            while True:
                gens = await _unless_halted(main, halt)
                if gens is None:
                    return trace, tokens, probes, "halted", None
                g = gens[0]
                main = None
                trace += g.text
                tokens += g.num_tokens
                if g.finish_reason != "length":
                    return trace, tokens, probes, "finished", None
                if tokens >= self.max_tokens or g.num_tokens == 0:
                    return trace, tokens, probes, "max_tokens", None
                main = next_chunk()  # the next chunk runs while the probe is out
                if tokens < self.min_tokens:
                    continue
                rec = await _unless_halted(self.probe(ctx, prompt, base + trace, tokens), halt)
                if rec is None:
                    return trace, tokens, probes, "halted", None
                probes.append(rec)
                ctx.event("probe", **rec.as_dict())
                reason = await self._exit_after_probe(probes, on_probe)
                if reason is not None:
                    return trace, tokens, probes, reason, None
        except BudgetExhausted as e:
            ctx.event("budget", limit=e.limit, needed=e.needed, available=e.available)
            return trace, tokens, probes, "budget", e.limit
        except EngineError as e:  # the trace so far is kept (paid for); the error rides in the last slot
            ctx.event("engine_error", error=str(e))
            return trace, tokens, probes, "error", str(e)
        finally:
            if main is not None and not main.done():
                main.cancel()  # the engine aborts it; what it billed is charged
            if main is not None:
                with contextlib.suppress(asyncio.CancelledError, BudgetExhausted, EngineError):
                    await main

    async def _stream_trace(
        self, ctx: RunContext, prompt: Prompt, params: SamplingParams, on_probe: OnProbe | None = None,
        halt: asyncio.Event | None = None,
    ) -> tuple[str, int, list[ProbeRecord], str, str | None]:
        base = prompt.assistant_prefix
        trace, tokens, last_probe_at = "", 0, 0
        probes: list[ProbeRecord] = []
        pending: deque[asyncio.Task[ProbeRecord]] = deque()
        exit_reason = "max_tokens"
        try:
            async with ctx.stream(prompt, params.model_copy(update={"max_tokens": self.max_tokens})) as deltas:
                async for d in deltas:
                    trace += d.text
                    tokens += d.num_tokens
                    if halt is not None and halt.is_set():
                        exit_reason = "halted"
                        break
                    while pending and pending[0].done():
                        probes.append(pending.popleft().result())
                        ctx.event("probe", **probes[-1].as_dict())
                        reason = await self._exit_after_probe(probes, on_probe)
                        if reason is not None:
                            exit_reason = reason
                            break
                    if exit_reason in ("certain", "agreed"):
                        break
                    if d.finish_reason is not None:
                        exit_reason = "finished" if d.finish_reason != "length" else "max_tokens"
                        break
                    if tokens - last_probe_at >= self.chunk_tokens and tokens >= self.min_tokens:
                        last_probe_at = tokens
                        pending.append(asyncio.ensure_future(self.probe(ctx, prompt, base + trace, tokens)))
        except BudgetExhausted as e:
            ctx.event("budget", limit=e.limit, needed=e.needed, available=e.available)
            return trace, tokens, probes, "budget", e.limit
        except EngineError as e:  # a broken stream: the text it delivered is kept (paid for)
            ctx.event("engine_error", error=str(e))
            return trace, tokens, probes, "error", str(e)
        finally:
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        return trace, tokens, probes, exit_reason, None

    async def __call__(self, ctx: RunContext, prompt: Prompt, **kw: Any) -> Sample:
        return await self.generate_trace(ctx, prompt, **kw)

    async def draw(self, ctx: RunContext, prompt: Prompt, params: SamplingParams) -> Sample:
        """One trace as a self-consistency sample (a
        :class:`~ttc.strategies.self_consistency.Sampler`). A trace cut by the budget or a
        failed request was paid for: it is kept (``ctx.salvaged``, ``meta["truncated"]``,
        out of the vote) and the call raises as a refused or failed request does."""
        s = await self.generate_trace(ctx, prompt, params=params)
        if s.meta["exit"] in ("budget", "error"):
            if s.num_tokens or s.text:
                s.meta["truncated"] = True
                ctx.salvaged.append(s)
            if s.meta["exit"] == "error":
                raise EngineError(s.meta.get("error") or "engine error")
            raise BudgetExhausted(s.meta.get("budget_limit") or "budget", 0, 0)
        return s


def _early_exit(preset: str | Preset | EarlyExit, kw: dict[str, Any]) -> EarlyExit:
    if isinstance(preset, EarlyExit):
        if kw:
            raise ValueError(f"give either an EarlyExit or its options, not both (got {sorted(kw)})")
        return preset
    return EarlyExit(preset, **kw)


class DynasorCoT(Strategy):
    """One reasoning trace with certainty probes (Dynasor-CoT). Stop reason
    ``"certainty"`` when the probes agreed, ``"done"`` when the trace ended on its own
    or at ``max_tokens``, ``"budget"`` when the budget ran out."""

    name = "dynasor_cot"

    def __init__(self, preset: str | Preset | EarlyExit = "moderate", *, extractor=None, **early_exit_kw: Any):  # type: ignore[no-untyped-def]
        super().__init__(extractor=extractor)
        self.early_exit = _early_exit(preset, early_exit_kw)

    async def _run(self, ctx: RunContext, prompt: Prompt, run: Run) -> str:
        samples = run.samples
        s = samples.add(await self.early_exit.generate_trace(ctx, prompt))
        if s.meta["exit"] == "budget":
            ctx.budget_detail = s.meta.get("budget_limit")
            return "budget"
        if s.meta["exit"] == "error":
            ctx.error = s.meta.get("error")
            return "engine_error"
        return "certainty" if s.meta["exit"] == "certain" else "done"

    def decide(self, ctx: RunContext, prompt: Prompt, run: Run) -> Decision:
        samples = run.samples
        if not len(samples):
            return Decision(answer=None)
        s = samples.items[0]
        return Decision(answer=s.answer, chosen=s, meta={"exit": s.meta.get("exit")})


class EarlyExitSelfConsistency(SelfConsistency):
    """Self-consistency whose traces exit early: ``SelfConsistency(rule,
    sampler=EarlyExit(...))`` under its historical name (it only sets the parts).

    :class:`~ttc.strategies.self_consistency.SelfConsistency` (stopping rule, batches,
    cancellation, vote) with every sample drawn through :meth:`EarlyExit.draw`, so a
    vote costs fewer tokens. Takes the
    SelfConsistency arguments (``rule``, ``batch_sizes``, ``max_samples``, ``params``,
    ...) plus ``early_exit`` (an :class:`EarlyExit` or a preset name). If the budget
    runs out inside a trace (or its request fails for good), the run stops with
    ``"budget"`` (``"engine_error"``) as plain self-consistency does; the partial trace
    was paid for, so it is kept in ``result.samples`` (``meta["truncated"]``) and does
    not vote.

    ``board=True``: each sample exits early *and* the vote stops early, on a board
    shared by the traces (:mod:`ttc.strategies.vote_board`). ``width`` traces run at
    once (default: all ``max_samples``; a finished trace makes room for the next). The
    vote stops, and the traces still running are halted at once (their billed tokens
    charged, the in-flight chunk and probe cancelled), as soon as

    - the leader among the finished traces' votes cannot be overtaken by the traces that
      can still vote (the fixed-cap majority is settled), or
    - the stopping rule fires on the votes (with ``share_probes``: the votes plus the
      latest probe answer of every running trace, Dynasor's Certaindex reading of parallel
      branches; a halted trace whose probe answer was counted votes with it).

    With ``agree=m`` a running trace also stops on a probe whose answer ``m`` other
    traces hold (votes or latest probes): its probes need not agree ``k`` times
    themselves. ``result.meta["stopped_by"]`` is ``"decided"``, the rule's name or
    ``"max_samples"``; halted traces that do not vote are kept with ``meta["late"]``.
    """

    def __init__(self, rule=None, *, early_exit: EarlyExit | str | Preset = "moderate",  # type: ignore[no-untyped-def]
                 board: bool = False, share_probes: bool = False, agree: int = 0, width: int | None = None,
                 **kw: Any):
        kw.setdefault("params", SamplingParams(temperature=0.7))
        self.early_exit = early_exit if isinstance(early_exit, EarlyExit) else EarlyExit(early_exit)
        super().__init__(rule, sampler=self.early_exit, **kw)
        check_bool("board", board)
        check_bool("share_probes", share_probes)
        check_int("agree", agree, lo=0)
        check_optional_int("width", width, lo=1)
        if (share_probes or agree or width is not None) and not board:
            raise ValueError("share_probes/agree/width: need board=True")
        if self.rule.needs_scores:
            if board:
                raise ValueError(f"board: the rule {self.rule.name!r} reads verifier scores, which a board cannot")
        self.board = board
        self.share_probes = share_probes
        self.agree = agree
        self.width = width
        self.name = f"early_exit_sc[{self.rule.name}]" + ("+board" if board else "")

    async def _run(self, ctx: RunContext, prompt: Prompt, run: Run) -> str:
        if not self.board:
            return await super()._run(ctx, prompt, run)
        return await _BoardRun(self, ctx, prompt, run).go()


class _BoardRun:
    """One run of :class:`EarlyExitSelfConsistency` with ``board=True``."""

    def __init__(self, sc: EarlyExitSelfConsistency, ctx: RunContext, prompt: Prompt, run: Run):
        self.sc, self.ctx, self.prompt, self.run = sc, ctx, prompt, run
        self.board = VoteBoard(sc.max_samples, share_probes=sc.share_probes, agree=sc.agree)
        self.halt = asyncio.Event()
        self.decision: StopCheck | None = None
        self.decided_view: BoardView | None = None
        self.seen: list[Sample] = []

    async def _check(self) -> None:
        """Decide on a snapshot of the board; a decision halts every running trace."""
        if self.decision is not None:
            return
        view = self.board.view()
        d = await off_loop(board_decision, view, self.sc.rule, self.sc.eq, self.sc.share_probes, pure=True)
        if d is not None and self.decision is None:
            self.decision, self.decided_view = d, (view if self.sc.share_probes else None)
            self.ctx.event("board_decision", reason=d.reason, confidence=d.confidence, votes=len(view.votes),
                           provisional=len(view.provisional))
            self.halt.set()

    def _on_probe(self, i: int) -> OnProbe:
        async def on_probe(rec: ProbeRecord) -> bool:
            if self.decision is not None:
                return False
            answer = rec.answer if rec.valid else None
            self.board.probe(i, answer)
            if answer is not None and self.sc.agree and self.board.support(i, answer, self.sc.eq) >= self.sc.agree:
                return True  # finishes as a vote for ``answer``; the check runs then
            if self.sc.share_probes:
                await self._check()
            return False

        return on_probe

    def _take(self, i: int, s: Sample) -> BaseException | None:
        """Record trace ``i``'s end: a vote, a trace that does not vote, or a cut trace (the
        error). Once the vote is decided, only what the decision saw votes: a trace whose
        probe answer it counted votes with that answer; any other trace ending after it is
        kept with ``meta["late"]``."""
        exit_reason = s.meta["exit"]
        samples = self.run.samples
        if exit_reason in ("budget", "error"):
            self.board.drop(i)
            if s.num_tokens or s.text:
                s.meta["truncated"] = True
                samples.add(s)
            if exit_reason == "error":
                return EngineError(s.meta.get("error") or "engine error")
            return BudgetExhausted(s.meta.get("budget_limit") or "budget", 0, 0)
        if self.decision is None and exit_reason != "halted":
            self.seen.append(added := samples.add(s))
            self.board.finish(i, added.answer)
            return None
        counted = dict(self.decided_view.provisional).get(i) if self.decided_view is not None else None
        if counted is None:
            self.board.drop(i)
            samples.add(s, late=True)
            return None
        if exit_reason == "halted":  # the trace's text ends with the answer it votes for
            s = s.model_copy(update={"text": s.text + self.sc.early_exit.style.answer_format.format(answer=counted)})
        s = s.model_copy(update={"answer": counted})
        self.board.finish(i, counted)
        self.seen.append(samples.add(s, provisional=True))
        return None

    async def go(self) -> str:
        sc, ctx = self.sc, self.ctx
        width = sc.width or sc.max_samples
        tasks: dict[asyncio.Task[Sample], int] = {}
        started = 0
        errors: list[BaseException] = []
        try:
            while True:
                while self.decision is None and not errors and len(tasks) < width and started < sc.max_samples:
                    coro = sc.early_exit.generate_trace(ctx, self.prompt, params=sc.params, index=started,
                                                        on_probe=self._on_probe(started), halt=self.halt)
                    tasks[asyncio.ensure_future(coro)] = started
                    started += 1
                if not tasks:
                    break
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in sorted(done, key=lambda t: tasks[t]):
                    err = self._take(tasks.pop(t), t.result())
                    if err is not None:
                        errors.append(err)
                        self.halt.set()
                await self._check()
        finally:
            self.halt.set()
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        return self._finish(errors, started)

    def _finish(self, errors: list[BaseException], started: int) -> str:
        d = self.decision
        if errors:
            reason = "budget" if isinstance(errors[0], BudgetExhausted) else "engine_error"
        else:
            reason = d.reason if d is not None else "max_samples"
        check = d or StopCheck(False, 0.0, self.sc.rule.name)
        self.sc._record(self.ctx, self.run, self.seen, [started], check, reason)
        if errors:
            raise errors[0]
        return reason
