"""The strategy base class: one call shape for every test-time method.

``await strategy.run(question, engine, budget)`` -> :class:`~ttc.types.StrategyResult`;
``strategy.run_sync(...)`` does the same from plain scripts and Jupyter;
``await strategy.run_in(ctx.child(budget), prompt)`` runs it as a step of another
strategy on a sub-budget.

A subclass implements :meth:`Strategy._run`, which draws samples into the
:class:`Run` it is handed (the run's samples and a state slot the strategy owns for this
run) and returns a stop reason, and :meth:`Strategy.decide`, which picks the answer from
the samples. Nothing about a run lives on the strategy instance, so one instance serves
concurrent runs (``await strategy.run_many(questions, engine, budget)``). If the budget runs out inside ``_run`` the
base class catches :class:`~ttc.budget.BudgetExhausted`, keeps every sample already
drawn, and decides on those with ``stop_reason="budget"``: a strategy never raises
mid-way for lack of budget. An :class:`~ttc.engine.EngineError` (a request that failed
after its retries) is caught the same way: ``stop_reason="engine_error"``, the error in
``result.error``, every sample kept, and the paid-for generations the failed call did
receive added (``meta["salvaged"]``): nothing paid for is lost.

Every strategy (and every part built the same way: stopping rules, verifiers, ...) is
:class:`Describable`: ``strategy.describe()`` is a plain dict (``{"name": ..., **arguments}``)
from which :func:`ttc.registry.build` makes an equal strategy, and two strategies are
equal when they describe alike.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import functools
import inspect
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from .answers import AnswerExtractor, ExtractorName, extract_answer, resolve_extractor
from .budget import Budget, BudgetExhausted, Meter
from .context import RunContext
from .engine import Engine, EngineError
from .grading import NeedsWorker, in_process_only, off_loop
from .tool_calls import vote_key
from .types import Generation, Prompt, PromptLike, Sample, StrategyResult, Usage


@dataclass
class Decision:
    answer: str | None
    chosen: Sample | None = None
    confidence: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class SampleSet:
    """The samples of one run, in arrival order. Strategies add, never remove.

    A sample's answer is what ``extractor`` reads from its text; a sample with tool calls
    answers with its calls instead (:func:`ttc.tool_calls.vote_key`: function names and
    canonical JSON arguments, checked against ``tools``; None when a call is malformed),
    so every strategy that votes on answers votes on tool calls alike."""

    def __init__(self, extractor: AnswerExtractor, tools: list[dict[str, Any]] | None = None):
        self.extractor = extractor
        self.tools = tools
        self.items: list[Sample] = []

    def add(self, g: Generation | Sample, *, prefix: str = "", **meta: Any) -> Sample:
        if isinstance(g, Sample):
            s = g.model_copy(update={"index": len(self.items)})
        else:
            s = Sample.from_generation(len(self.items), g, prefix=prefix)
        if s.answer is None:
            s.answer = vote_key(s.tool_calls, self.tools) if s.tool_calls else self.extractor(s.text)
        s.meta.update(meta)
        self.items.append(s)
        return s

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items)

    @property
    def completion_tokens(self) -> int:
        return sum(s.num_tokens for s in self.items)


class Run:
    """One run of a strategy: what :meth:`Strategy._run` and :meth:`Strategy.decide` are
    handed, made fresh by :meth:`Strategy.run_in` for every run.

    ``samples``: the :class:`SampleSet` of the run (``run.add``, ``len(run)`` and
    iteration reach it directly). ``state``: a slot the strategy owns for this run (what
    ``_run`` leaves for ``decide``: a search's genealogy, the routed inner result, the
    stopping record), so nothing about a run is kept on the strategy instance and one
    instance serves any number of concurrent runs. ``stop_reason``, ``budget_detail``
    and ``error``: how ``_run`` ended, filled in by the base class before ``decide``.
    """

    def __init__(self, extractor: AnswerExtractor, tools: list[dict[str, Any]] | None = None):
        self.samples = SampleSet(extractor, tools)
        self.state: Any = None
        self.stop_reason: str | None = None
        self.budget_detail: str | None = None
        self.error: str | None = None

    def add(self, g: Generation | Sample, *, prefix: str = "", **meta: Any) -> Sample:
        return self.samples.add(g, prefix=prefix, **meta)

    @property
    def items(self) -> list[Sample]:
        return self.samples.items

    @property
    def extractor(self) -> AnswerExtractor:
        return self.samples.extractor

    @property
    def completion_tokens(self) -> int:
        return self.samples.completion_tokens

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.samples)


class DescribeError(TypeError):
    """An argument that cannot be written down as data (a function, an engine, an array)."""


def config_name(cls: type) -> str:
    """The name a class describes itself by: its own ``name`` attribute (set in its class
    body, not inherited), else its class name in snake case (``SelfConsistency`` ->
    ``self_consistency``)."""
    own = cls.__dict__.get("name")
    if isinstance(own, str):
        return own
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", cls.__name__).lower()


def _recording(init: Callable[..., None], owner: type) -> Callable[..., None]:
    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if "_init_call" not in self.__dict__:  # the outermost constructor: the one the caller called
            # the class, not the function: the instance stays picklable (the class is found by name)
            self.__dict__["_init_call"] = (owner, args, kwargs)
        init(self, *args, **kwargs)

    __init__.__ttc_records__ = True  # type: ignore[attr-defined]
    return __init__


def describe_value(value: Any, where: str) -> Any:
    """``value`` as data: scalars as they are, describable objects by their description,
    pydantic models and dataclasses by the fields that differ from their defaults,
    sequences as lists, mappings as dicts. Anything else raises :class:`DescribeError`
    naming ``where``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Describable):
        try:
            return value.describe()
        except DescribeError as e:
            raise DescribeError(f"{where}: {e}") from None
    stamp = getattr(value, "_described_as", None)
    if isinstance(stamp, dict):
        return json.loads(json.dumps(stamp))
    if isinstance(value, BaseModel):
        fields = {k: (getattr(value, k), dataclasses.MISSING if f.is_required() else f.get_default(call_default_factory=True))
                  for k, f in type(value).model_fields.items()}
        return _fields(fields, where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {}
        for f in dataclasses.fields(value):
            if f.init:
                default = f.default if f.default is not dataclasses.MISSING else (
                    f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
                fields[f.name] = (getattr(value, f.name), default)
        return _fields(fields, where)
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, (str, int))]
        if bad:
            raise DescribeError(f"{where}: a mapping key {bad[0]!r} cannot be written as data")
        return {k: describe_value(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return sorted(describe_value(v, f"{where}[]") for v in value)
    item = getattr(value, "item", None)  # a numpy scalar
    if callable(item) and getattr(value, "shape", None) == ():
        return describe_value(item(), where)
    what = (f"a function ({getattr(value, '__qualname__', repr(value))})" if callable(value) and not isinstance(value, type)
            else f"a {type(value).__name__}")
    raise DescribeError(f"{where}: {what} cannot be written as data; configure it in Python instead")


def _fields(fields: dict[str, tuple[Any, Any]], where: str) -> dict[str, Any]:
    out = {}
    for k, (v, default) in fields.items():
        if default is v:
            continue
        d = describe_value(v, f"{where}.{k}")
        try:
            same = default is not dataclasses.MISSING and d == describe_value(default, k)
        except DescribeError:
            same = False
        if not same:
            out[k] = d
    return out


class Describable:
    """Objects that can say how they were built.

    The constructor call of a subclass is recorded (the outermost one: a subclass that
    calls ``super().__init__`` records its own arguments). :meth:`describe` returns
    ``{"name": config_name(type(self)), **arguments}``: every parameter of that constructor,
    defaults filled in (explicit, so a saved description does not change meaning when a
    default does), and the keyword arguments a ``**kw`` passed on, as given. Values are
    written by :func:`describe_value`; one that cannot be written as data (a function, an
    engine) raises :class:`DescribeError` naming the argument, unless it is the parameter's
    own default, which is left out (the constructor picks it again).

    Equality is by description: two objects of the same class that describe alike are
    equal (and hash alike); objects that cannot be described compare by identity.
    """

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "__ttc_records__", False):
            cls.__init__ = _recording(init, cls)  # type: ignore[method-assign]

    @classmethod
    def config_name(cls) -> str:
        return config_name(cls)

    def describe(self) -> dict[str, Any]:
        """``{"name": ..., **arguments}``: plain data that :func:`ttc.registry.build` turns
        back into an equal object."""
        stamp = self.__dict__.get("_described_as")
        if isinstance(stamp, dict):
            return json.loads(json.dumps(stamp))
        name = self.config_name()
        call = self.__dict__.get("_init_call")
        out: dict[str, Any] = {"name": name}
        if call is None:
            return out
        owner, args, kwargs = call
        init = inspect.unwrap(owner.__dict__["__init__"])
        sig = inspect.signature(init)
        bound = sig.bind(self, *args, **kwargs)
        given = dict(bound.arguments)
        for i, p in enumerate(sig.parameters.values()):
            if i == 0:
                continue
            where = f"{name}: {p.name}"
            if p.kind is p.VAR_POSITIONAL:
                if given.get(p.name):
                    raise DescribeError(f"{where}: positional arguments beyond the signature cannot be described")
            elif p.kind is p.VAR_KEYWORD:
                out.update({k: describe_value(v, f"{name}: {k}") for k, v in given.get(p.name, {}).items()})
            elif p.name in given:
                try:
                    out[p.name] = describe_value(given[p.name], where)
                except DescribeError:
                    if given[p.name] is not p.default:
                        raise
            elif p.default is not p.empty:
                try:
                    out[p.name] = describe_value(p.default, where)
                except DescribeError:
                    pass  # a default that is no data (a function): the constructor picks it again
        return out

    def _description(self) -> str | None:
        try:
            return json.dumps(self.describe(), sort_keys=True, default=repr)
        except DescribeError:
            return None

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not type(self):
            return NotImplemented
        mine = self._description()
        return mine is not None and mine == other._description()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        d = self._description()
        return hash((type(self), d)) if d is not None else id(self)


class Strategy(Describable, abc.ABC):
    """Base of every test-time strategy."""

    name: str = "strategy"
    #: True when :meth:`decide` has no effect but draws from ``ctx.rng``: it then runs
    #: inline first (under :func:`ttc.grading.in_process_only`) and moves to the grading
    #: thread pool, with the generator's state restored, only when a verdict needs a
    #: worker check. False: it always runs on the thread pool.
    inline_decide: bool = False

    def __init__(self, *, extractor: AnswerExtractor | ExtractorName | None = None):
        """``extractor``: how a sample's answer is read from its text, a function or the
        name of one in :data:`ttc.answers.EXTRACTORS` (``"number"`` for numeric tasks);
        default :func:`ttc.answers.extract_answer`."""
        self.extractor: AnswerExtractor = resolve_extractor(extractor) or extract_answer

    # -- entry points ------------------------------------------------------------------
    async def run(
        self,
        question: PromptLike,
        engine: Engine,
        budget: Budget | Meter | None = None,
        *,
        seed: int | None = None,
        engines: Mapping[str, Engine] | None = None,
    ) -> StrategyResult:
        """Run on ``question`` within ``budget``. ``engines``: named engines for the parts
        of a run that go elsewhere (a router's routes); ``engine`` serves the rest."""
        meter = as_meter(budget)
        prompt = Prompt.of(question)
        return await self.run_in(RunContext(engine, meter, seed=seed, engines=engines), prompt)

    def run_sync(
        self,
        question: PromptLike,
        engine: Engine,
        budget: Budget | Meter | None = None,
        *,
        seed: int | None = None,
        engines: Mapping[str, Engine] | None = None,
    ) -> StrategyResult:
        """Blocking :meth:`run` for scripts and notebooks (works inside Jupyter)."""
        from .sync import run_sync

        return run_sync(self.run(question, engine, budget, seed=seed, engines=engines))

    async def run_many(
        self,
        questions: Sequence[PromptLike],
        engine: Engine,
        budget: Budget | Meter | None = None,
        *,
        concurrency: int | None = None,
        seed: int | Sequence[int | None] | None = None,
        engines: Mapping[str, Engine] | None = None,
        question_budget: Budget | None = None,
    ) -> BatchResult:
        """Run on every question, at most ``concurrency`` at once (default: all).

        One parent meter holds ``budget`` across the whole batch (an agent's cap over its
        many calls); each question runs on a child meter of it (limited further by
        ``question_budget`` if given), so a question never spends what the parent does not
        have, and a question that finds the parent empty stops with ``"budget"`` like any
        run. ``seed``: one per question, or an int ``s`` (question ``i`` gets ``s + i``), so
        a question's result does not depend on the others or on the concurrency.
        """
        return await run_batch(self, questions, engine, budget, concurrency=concurrency, seed=seed,
                               engines=engines, question_budget=question_budget)

    def run_many_sync(
        self,
        questions: Sequence[PromptLike],
        engine: Engine,
        budget: Budget | Meter | None = None,
        *,
        concurrency: int | None = None,
        seed: int | Sequence[int | None] | None = None,
        engines: Mapping[str, Engine] | None = None,
        question_budget: Budget | None = None,
    ) -> BatchResult:
        """Blocking :meth:`run_many`."""
        from .sync import run_sync

        return run_sync(self.run_many(questions, engine, budget, concurrency=concurrency, seed=seed,
                                      engines=engines, question_budget=question_budget))

    async def run_in(self, ctx: RunContext, prompt: Prompt) -> StrategyResult:
        run = Run(self.extractor, prompt.tools)
        samples = run.samples
        ctx.event("start", strategy=self.name)
        try:
            stop = await self._run(ctx, prompt, run)
        except BudgetExhausted as e:
            stop = "budget"
            ctx.budget_detail = e.limit
            ctx.event("budget", limit=e.limit, needed=e.needed, available=e.available)
        except EngineError as e:
            stop = "engine_error"
            ctx.error = str(e)
            ctx.event("engine_error", error=ctx.error)
        if stop == "engine_error" and ctx.error is None:
            ctx.error = "engine error"
        for salvaged in ctx.salvaged:
            samples.add(salvaged, salvaged=True)
        ctx.salvaged.clear()
        run.stop_reason, run.budget_detail, run.error = stop, ctx.budget_detail, ctx.error
        decision = await self._decide_off_loop(ctx, prompt, run)
        ctx.event("stop", reason=stop, samples=len(samples), answer=decision.answer)
        return StrategyResult(
            strategy=self.name,
            answer=decision.answer,
            confidence=decision.confidence,
            chosen=decision.chosen,
            samples=list(samples.items),
            stop_reason=stop,
            budget_detail=ctx.budget_detail,
            error=ctx.error,
            usage=ctx.meter.usage(),
            overspent=dict(ctx.meter.overspent),
            usage_by_kind=dict(ctx.meter.by_kind),
            trace=list(ctx.trace),
            meta=decision.meta,
        )

    async def _decide_off_loop(self, ctx: RunContext, prompt: Prompt, run: Run) -> Decision:
        """:meth:`decide` without blocking the event loop on a worker check."""
        if self.inline_decide:
            state = ctx.rng.bit_generator.state
            try:
                with in_process_only():
                    return self.decide(ctx, prompt, run)
            except NeedsWorker:
                ctx.rng.bit_generator.state = state
        return await off_loop(self.decide, ctx, prompt, run)

    # -- to implement ------------------------------------------------------------------
    @abc.abstractmethod
    async def _run(self, ctx: RunContext, prompt: Prompt, run: Run) -> str:
        """Draw samples into ``run`` (``run.add``), keep what ``decide`` needs in
        ``run.state``; return the stop reason ("done", a rule name)."""

    @abc.abstractmethod
    def decide(self, ctx: RunContext, prompt: Prompt, run: Run) -> Decision:
        """Pick the answer from whatever samples were drawn (possibly none); ``run.state``
        is what ``_run`` left (``None`` if it stopped before setting it)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def as_meter(budget: Budget | Meter | None) -> Meter:
    """``budget`` as a meter: a :class:`Meter` as it is (the caller's, shared), else a new one."""
    if budget is not None and not isinstance(budget, (Budget, Meter)):
        raise TypeError(
            f"budget: expected a ttc.Budget (e.g. Budget(completion_tokens=2000)), a Meter or None, "
            f"got {type(budget).__name__} {budget!r:.60}"
        )
    return budget if isinstance(budget, Meter) else Meter(budget)


class BatchResult(BaseModel):
    """What a run over many questions returns: one :class:`~ttc.types.StrategyResult` per
    question (in question order) and the batch summary: ``usage`` (the parent meter's:
    the sum over questions), ``overspent``, ``usage_by_kind`` and ``meta`` (what the
    batch strategy adds: allocation records, per-question extras)."""

    strategy: str
    results: list[StrategyResult] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    overspent: dict[str, int] = Field(default_factory=dict)
    usage_by_kind: dict[str, Usage] = Field(default_factory=dict)
    #: Questions per stop reason.
    stop_reasons: dict[str, int] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def answers(self) -> list[str | None]:
        return [r.answer for r in self.results]

    def summary(self) -> str:
        return (f"{self.strategy}: {len(self.results)} questions, {self.usage.completion_tokens}+"
                f"{self.usage.prompt_tokens}p tokens, {self.usage.calls} calls, stops={self.stop_reasons}")


class BatchStrategy(Describable, abc.ABC):
    """A method that decides across many questions at once (the cross-question allocator):
    ``await s.run(questions, engine, budget)`` -> :class:`BatchResult`, the usage and
    result conventions of :meth:`Strategy.run_many`; ``run_sync`` is the blocking twin."""

    name: str = "batch_strategy"

    @abc.abstractmethod
    async def run(
        self, questions: Sequence[Any], engine: Engine, budget: Budget | Meter | None = None,
        *, seed: int | None = None,
    ) -> BatchResult: ...

    def run_sync(
        self, questions: Sequence[Any], engine: Engine, budget: Budget | Meter | None = None,
        *, seed: int | None = None,
    ) -> BatchResult:
        """Blocking :meth:`run` (scripts and notebooks)."""
        from .sync import run_sync

        return run_sync(self.run(questions, engine, budget, seed=seed))


def _seeds(seed: int | Sequence[int | None] | None, n: int) -> list[int | None]:
    if seed is None or isinstance(seed, int):
        return [None if seed is None else seed + i for i in range(n)]
    seeds = list(seed)
    if len(seeds) != n:
        raise ValueError(f"seed: {len(seeds)} seeds for {n} questions")
    return seeds


async def run_batch(
    strategy: Strategy,
    questions: Sequence[PromptLike],
    engine: Engine,
    budget: Budget | Meter | None = None,
    *,
    concurrency: int | None = None,
    seed: int | Sequence[int | None] | None = None,
    engines: Mapping[str, Engine] | None = None,
    question_budget: Budget | None = None,
) -> BatchResult:
    """:meth:`Strategy.run_many`: each question on a child meter of one parent meter."""
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                    or concurrency < 1):
        raise ValueError(f"concurrency: expected an int >= 1 or None, got {concurrency!r}")
    parent = as_meter(budget)
    prompts = [Prompt.of(q) for q in questions]
    seeds = _seeds(seed, len(prompts))
    gate = asyncio.Semaphore(concurrency or max(len(prompts), 1))
    t0 = time.monotonic()

    async def one(i: int) -> StrategyResult:
        async with gate:
            ctx = RunContext(engine, parent.child(question_budget, name=f"q{i}"), seed=seeds[i],
                             engines=engines, t0=t0)
            return await strategy.run_in(ctx, prompts[i])

    results = await asyncio.gather(*(one(i) for i in range(len(prompts))))
    reasons: dict[str, int] = {}
    for r in results:
        reasons[r.stop_reason] = reasons.get(r.stop_reason, 0) + 1
    return BatchResult(strategy=strategy.name, results=list(results), usage=parent.usage(),
                       overspent=dict(parent.overspent), usage_by_kind=dict(parent.by_kind), stop_reasons=reasons)
