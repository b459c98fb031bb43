"""Adaptive compute allocation: one budget shared across many questions by difficulty.

Follows Snell et al. 2024 ("Scaling LLM Test-Time Compute Optimally can be More
Effective than Scaling Model Parameters": allocate per prompt by estimated
difficulty, optionally a per-bin strategy table fitted offline), with the gain of
the next unit of compute estimated from the vote posterior (Adaptive-Consistency's
Beta rule, Aggarwal et al. 2023) or from per-bin coverage curves (Large Language
Monkeys), and the fLaws cap on resample-until-pass with an imperfect verifier
("Inference Scaling fLaws"). Formulas: :mod:`ttc.strategies.gain`.

The loop: a first cheap round (``initial_k`` samples per question, fewer when that
round would take more than ``first_round_share`` of the budget), then, while the
budget lasts, the next unit (``batch`` samples for one question, one engine call)
goes to the active question with the highest expected accuracy gain per token.
A question stops when it is *settled* (P(leader is the mode) >= ``threshold``),
*hopeless* (no parseable answer, or a flat vote: agreement <= ``hopeless_agreement``,
default 0.15, i.e. no answer repeated among the first 8, after ``hopeless_after``
samples; or its difficulty bin's policy says skip), *abstain*
(verifier mode: the fLaws-optimal number of tries failed), ``max_samples``,
``low_gain`` (its gain per token fell under ``min_gain_per_token``), ``budget``
(the shared budget cannot hold one more sample) or ``error`` (the engine failed).

Every engine call goes through a per-question child :class:`~ttc.context.RunContext`
of one batch context, so each call reserves its worst case on the one batch meter
before it is sent: the batch never spends more than its budget. Up to
``max_in_flight`` units are outstanding at once; as soon as one finishes
(``asyncio.wait(FIRST_COMPLETED)``) the next is scheduled, so one straggler never
idles the engine.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ttc.answers import (
    DEFAULT_EQUIVALENCE,
    AnswerExtractor,
    ExtractorName,
    extract_answer,
    group_answers,
    resolve_extractor,
)
from ttc.budget import Budget, BudgetExhausted, Meter
from ttc.context import RunContext
from ttc.engine import Engine
from ttc.grading import off_loop
from ttc.questions import Example
from ttc.strategy import BatchResult, BatchStrategy, SampleSet
from ttc.types import Prompt, PromptLike, Sample, SamplingParams, StrategyResult, TraceEvent, Usage
from ttc.verifiers.base import OutcomeVerifier

from .gain import (
    CoverageCurves,
    dirichlet_vote_gain,
    flaws_next_try_gain,
    flaws_optimal_k,
    prob_leader_is_mode,
    vote_gain_beta,
)
from .stats import Equiv
from .voting import vote

STOP_REASONS = ("settled", "hopeless", "abstain", "budget", "max_samples", "low_gain", "error")


# -- what gain models and binners see ----------------------------------------------------
@dataclass
class QuestionView:
    """A question's state as the gain model / difficulty binner sees it."""

    index: int
    question: str
    samples: list[Sample]
    counts: list[int]  # answer-class sizes, largest first
    completion_tokens: int
    bin: int | None = None
    failures: int = 0  # verifier mode: samples that did not pass

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def agreement(self) -> float:
        return (self.counts[0] if self.counts else 0) / self.n if self.n else 0.0


class GainModel(Protocol):
    def __call__(self, view: QuestionView, m: int) -> float:
        """Expected accuracy gain from ``m`` more samples for this question."""


@dataclass
class VotePosteriorGain:
    """Gain from the vote posterior (see :func:`ttc.strategies.gain.vote_gain_beta`).

    ``method="beta"`` (exact, top two classes) or ``"dirichlet"`` (Monte Carlo over all
    classes). Of ``m`` new samples only the share expected to land in the top two
    classes counts (Laplace estimate ``(v1 + v2 + 1) / (n + 2)``). ``calibration``
    maps a view to P(mode is correct) (e.g. a per-bin rate fitted offline); the
    default 1 values settling the vote only.
    """

    method: str = "beta"
    prior: float = 1.0
    calibration: Callable[[QuestionView], float] | None = None
    draws: int = 2000

    def __call__(self, view: QuestionView, m: int) -> float:
        c = view.counts
        v1 = c[0] if c else 0
        v2 = c[1] if len(c) > 1 else 0
        if self.method == "dirichlet":
            key = hashlib.sha256(repr((tuple(c), m)).encode()).digest()[:8]
            rng = np.random.default_rng(int.from_bytes(key, "little"))
            g = dirichlet_vote_gain(c or [0], m, rng, alpha=self.prior, draws=self.draws)
        elif self.method == "beta":
            m_eff = m * (v1 + v2 + 1) / (view.n + 2)
            lo = math.floor(m_eff)
            g_lo = vote_gain_beta(v1, v2, lo, self.prior)
            g_hi = vote_gain_beta(v1, v2, lo + 1, self.prior)
            g = g_lo + (m_eff - lo) * (g_hi - g_lo)
        else:
            raise ValueError(f"VotePosteriorGain.method: 'beta' or 'dirichlet', got {self.method!r}")
        return g * (self.calibration(view) if self.calibration else 1.0)


@dataclass
class CurveGain:
    """Gain from per-bin curves fitted offline: ``curves.gain(bin, n, m)`` (e.g.
    :class:`~ttc.strategies.gain.CoverageCurves`, for a verifier that recognises a
    correct sample). Needs the allocator's ``binner``."""

    curves: CoverageCurves

    def __call__(self, view: QuestionView, m: int) -> float:
        if view.bin is None:
            raise ValueError("CurveGain: the question has no difficulty bin; give the Allocator a binner")
        return self.curves.gain(view.bin, view.n, m)


class BinPolicy(BaseModel):
    """What to do with the questions of one difficulty bin (Snell et al.'s per-bin
    compute-optimal choice, fitted offline): ``skip`` gives up after the first
    round; the other fields override the allocator's defaults. ``verified``: settle
    this bin's questions by the verifier (stop at the first passing sample, answer among
    the passing ones; True) or by the vote (False); None: verifier mode whenever the
    allocator has a verifier (its samples are scored either way)."""

    model_config = ConfigDict(extra="forbid")

    max_samples: int | None = Field(None, ge=1)
    batch: int | None = Field(None, ge=1)
    threshold: float | None = Field(None, gt=0.5, le=1.0)
    skip: bool = False
    verified: bool | None = None
    weight: float = Field(1.0, ge=0.0)  # multiplies the gain (e.g. P(mode correct) in this bin)


def fit_bin_table(
    accuracy_at_k: dict[int, Sequence[float]],
    tokens_per_sample: dict[int, float],
    *,
    price_per_token: float,
    min_gain: float = 0.0,
) -> dict[int, BinPolicy]:
    """Per bin, the number of samples k maximising ``acc(k) - price * k * tokens``
    (``accuracy_at_k[bin][k-1]`` measured offline, e.g. maj@k by bin); a bin whose
    best k gains no more than ``min_gain`` over k = 1 is skipped after the first round."""
    table = {}
    for b, acc in accuracy_at_k.items():
        if not len(acc):
            raise ValueError(f"accuracy_at_k[{b}]: empty")
        t = tokens_per_sample.get(b, 0.0)
        utils = [a - price_per_token * (k + 1) * t for k, a in enumerate(acc)]
        k = int(np.argmax(utils)) + 1
        table[b] = BinPolicy(max_samples=k, skip=k == 1 or acc[k - 1] - acc[0] <= min_gain)
    return table


@dataclass
class LearnedDifficulty:
    """Difficulty bins learned from labelled questions, and a per-bin policy.

    Snell et al. 2024 bin questions by (oracle or verifier-estimated) difficulty and pick
    the compute per bin; here the bin comes from a predictor of pass@1 fitted on question
    embeddings (:class:`~ttc.strategies.difficulty.EmbeddingPredictor`, ridge), cut into
    ``n_bins`` quantile bins, and each bin gets its majority-vote accuracy curve
    (:class:`~ttc.strategies.gain.MajorityCurves`) from the same labelled samples. A bin
    where going from ``first_k`` to all K samples buys less than ``min_gain`` accuracy is
    skipped after the allocator's first round (``BinPolicy(skip=True)``): its questions
    are either settled or out of reach, and the budget goes where more samples help.

    Use: ``ld = LearnedDifficulty.fit(questions, answers, references, encoder.encode)``
    on held-out labelled data, then ``Allocator(binner=ld, table=ld.table)``. The binner
    reads ``QuestionView.question`` (the prompt's last user message).
    """

    predictor: Any  # EmbeddingPredictor
    bins: Any  # DifficultyBins
    curves: Any  # MajorityCurves
    table: dict[int, BinPolicy]
    encode: Callable[[list[str]], Any]
    cache: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def fit(
        cls,
        questions: Sequence[str],
        answers: Sequence[Sequence[str | None]],
        references: Sequence[str],
        encode: Callable[[list[str]], Any],
        *,
        n_bins: int = 3,
        first_k: int = 4,
        min_gain: float = 0.05,
        l2: float = 1.0,
        seed: int = 0,
        eq: Equiv | None = None,
    ) -> LearnedDifficulty:
        """``answers[i]``: the extracted answers of question i's labelled samples (in draw
        order); ``references[i]``: its correct answer; ``encode``: texts -> vectors."""
        from .difficulty import DifficultyBins, EmbeddingPredictor
        from .gain import MajorityCurves

        if not (len(questions) == len(answers) == len(references)) or not questions:
            raise ValueError(f"questions/answers/references: need equal, non-zero lengths, got "
                             f"{len(questions)}/{len(answers)}/{len(references)}")
        eq = eq or DEFAULT_EQUIVALENCE
        x = np.asarray(encode(list(questions)), dtype=float)
        p1 = [sum(bool(eq(a, r)) for a in ans) / max(1, len(ans)) for ans, r in zip(answers, references)]
        pred = EmbeddingPredictor(kind="ridge", l2=l2).fit(x, p1)
        hardness = 1.0 - pred.predict(x)
        bins = DifficultyBins.fit(hardness, n_bins)
        curves = MajorityCurves.fit([(bins(float(h)), a, r) for h, a, r in zip(hardness, answers, references)],
                                    keep_first=0, seed=seed, eq=eq)
        k = min(len(a) for a in answers)
        table = {b: BinPolicy(skip=True) for b in curves.acc if curves(b, k) - curves(b, first_k) < min_gain}
        return cls(pred, bins, curves, table, encode)

    def bin_of(self, question: str) -> int:
        if question not in self.cache:
            hardness = 1.0 - float(self.predictor.predict(np.asarray(self.encode([question]), dtype=float))[0])
            self.cache[question] = self.bins(hardness)
        return self.cache[question]

    def __call__(self, view: QuestionView) -> int:
        return self.bin_of(view.question)


class FlawsPolicy(BaseModel):
    """Resample-until-pass with an imperfect verifier ("Inference Scaling fLaws").

    ``population`` is [(c, f, weight)]: c = P(correct and passes), f = P(wrong and
    passes) over the question population (estimated on labelled data, see
    :func:`ttc.strategies.gain.estimate_cf`). Each question gets at most
    ``flaws_optimal_k`` tries, then abstains."""

    model_config = ConfigDict(extra="forbid")

    population: list[tuple[float, float, float]]
    fp_cost: float = Field(1.0, ge=0.0)
    abstain_cost: float = Field(0.0, ge=0.0)
    cost_per_try: float = Field(0.0, ge=0.0)
    k_max: int = Field(64, ge=1)

    def k_cap(self) -> int:
        return flaws_optimal_k(
            self.population, fp_cost=self.fp_cost, abstain_cost=self.abstain_cost,
            cost_per_try=self.cost_per_try, k_max=self.k_max,
        )

    def next_try_gain(self, failures: int) -> float:
        return flaws_next_try_gain(
            self.population, failures, fp_cost=self.fp_cost, abstain_cost=self.abstain_cost,
            cost_per_try=self.cost_per_try,
        )


# -- results --------------------------------------------------------------------------------
class QuestionResult(StrategyResult):
    """One question's outcome: a :class:`~ttc.types.StrategyResult` (answer, samples,
    stop reason, usage of the question's child meter) plus where it stands in the batch."""

    strategy: str = "allocator"
    index: int
    id: str
    question: str
    reference: str | None = None
    correct: bool | None = None
    bin: int | None = None

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    @property
    def tokens(self) -> int:
        return self.usage.completion_tokens


class AllocationResult(BatchResult):
    """The batch (a :class:`~ttc.strategy.BatchResult`): per-question results in
    ``results`` (also ``questions``), the budget spent, the allocation histogram."""

    strategy: str = "allocator"
    results: list[QuestionResult] = Field(default_factory=list)  # type: ignore[assignment]
    budget: Budget
    histogram: dict[int, int]  # samples per question -> number of questions
    budget_detail: str | None = None
    trace: list[TraceEvent] = Field(default_factory=list)

    @property
    def questions(self) -> list[QuestionResult]:
        return self.results

    @property
    def answers(self) -> list[str | None]:
        return [q.answer for q in self.questions]

    @property
    def accuracy(self) -> float | None:
        """Fraction correct over questions with a reference (abstentions count as wrong)."""
        graded = [q.correct for q in self.questions if q.correct is not None]
        return sum(graded) / len(graded) if graded else None

    @property
    def total_samples(self) -> int:
        return sum(q.num_samples for q in self.questions)

    def records(self) -> list[dict[str, Any]]:
        """Flat per-question rows (``pandas.DataFrame(result.records())``)."""
        return [
            {
                "index": q.index, "id": q.id, "answer": q.answer, "reference": q.reference,
                "correct": q.correct, "confidence": q.confidence, "samples": q.num_samples,
                "tokens": q.tokens, "stop_reason": q.stop_reason, "bin": q.bin,
            }
            for q in self.questions
        ]

    def summary(self) -> str:
        acc = self.accuracy
        return (
            f"allocation: {len(self.questions)} questions, {self.total_samples} samples, "
            f"{self.usage.completion_tokens}+{self.usage.prompt_tokens}p tokens, "
            f"accuracy={'n/a' if acc is None else f'{acc:.3f}'}, stops={self.stop_reasons}"
        )


def _minus(a: Usage, b: Usage) -> Usage:
    return Usage(**{k: getattr(a, k) - getattr(b, k) for k in ("prompt_tokens", "completion_tokens", "calls",
                                                             "generations")})


# -- the allocator ----------------------------------------------------------------------------
@dataclass
class _Q:
    index: int
    id: str
    prompt: Prompt
    reference: str | None
    ctx: RunContext
    samples: SampleSet
    prompt_tokens: int = 0
    in_flight: int = 0  # units
    pending_samples: int = 0
    first_done: bool = False
    stop_reason: str | None = None
    bin: int | None = None
    policy: BinPolicy | None = None
    priority: float = math.inf
    failures: int = 0
    passed: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.stop_reason is None


@dataclass
class _Schedule:
    """The allocation loop's units in flight and the worst cases they hold."""

    pending: dict[asyncio.Task[list[Sample]], tuple[_Q, int]] = field(default_factory=dict)
    launched: Usage = field(default_factory=Usage)
    out_of_budget: bool = False


class Allocator(BatchStrategy):
    """Shares one budget across many questions by expected accuracy gain per token.

    ``await Allocator(...).run(questions, engine, budget)`` -> :class:`AllocationResult`;
    ``run_sync`` is the blocking twin. ``questions`` are prompt-likes or
    :class:`~ttc.questions.Example` (graded against their answers; prompted with
    ``prompt_fn``, default ``example.prompt("cot")``). See the module doc for the loop.
    """

    name = "allocator"

    def __init__(
        self,
        *,
        params: SamplingParams | None = None,
        initial_k: int = 4,
        min_initial_k: int | None = None,
        first_round_share: float | None = 0.5,
        batch: int = 2,
        max_samples: int = 32,
        threshold: float = 0.95,
        hopeless_after: int = 8,
        hopeless_agreement: float = 0.15,
        min_gain_per_token: float = 0.0,
        gain: GainModel | None = None,
        binner: Callable[[QuestionView], int] | None = None,
        table: dict[int, BinPolicy] | None = None,
        verifier: OutcomeVerifier | None = None,
        pass_threshold: float = 0.5,
        flaws: FlawsPolicy | None = None,
        max_in_flight: int = 16,
        lookahead: int = 16,
        per_question_in_flight: int = 1,
        extractor: AnswerExtractor | ExtractorName | None = None,
        eq: Equiv | None = None,
        prompt_fn: Callable[[Example], PromptLike] | None = None,
    ):
        for name, v in (("initial_k", initial_k), ("batch", batch), ("max_samples", max_samples),
                        ("hopeless_after", hopeless_after), ("max_in_flight", max_in_flight),
                        ("per_question_in_flight", per_question_in_flight)):
            if v < 1:
                raise ValueError(f"{name}: must be >= 1, got {v}")
        if min_initial_k is None:
            min_initial_k = min(2, initial_k)  # two samples: the least that can show a split vote
        if not 1 <= min_initial_k <= initial_k:
            raise ValueError(f"min_initial_k: must be in [1, initial_k={initial_k}], got {min_initial_k}")
        if first_round_share is not None and not 0 < first_round_share <= 1:
            raise ValueError(f"first_round_share: must be in (0, 1] or None, got {first_round_share}")
        if not 0.5 < threshold <= 1.0:
            raise ValueError(f"threshold: must be in (0.5, 1], got {threshold}")
        if flaws is not None and verifier is None:
            raise ValueError("flaws: a FlawsPolicy needs a verifier")
        if table is not None and binner is None:
            raise ValueError("table: a per-bin table needs a binner")
        self.params = (params or SamplingParams(temperature=0.8, max_tokens=256)).model_copy(update={"n": 1})
        self.initial_k = initial_k
        self.min_initial_k = min_initial_k
        self.first_round_share = first_round_share
        self.batch = batch
        self.max_samples = max_samples
        self.threshold = threshold
        self.hopeless_after = hopeless_after
        self.hopeless_agreement = hopeless_agreement
        self.min_gain_per_token = min_gain_per_token
        self.gain: GainModel = gain or VotePosteriorGain()
        self.binner = binner
        self.table = table or {}
        self.verifier = verifier
        self.pass_threshold = pass_threshold
        self.flaws = flaws
        self.k_cap = flaws.k_cap() if flaws is not None else None
        self.max_in_flight = max_in_flight
        self.lookahead = lookahead
        self.per_question_in_flight = per_question_in_flight
        self.extractor = resolve_extractor(extractor) or extract_answer
        self.eq = eq or DEFAULT_EQUIVALENCE
        self.prompt_fn = prompt_fn or (lambda e: e.prompt("cot"))

    # -- entry points ---------------------------------------------------------------------------
    async def run(
        self, questions: Sequence[Example | PromptLike], engine: Engine, budget: Budget | Meter | None = None,
        *, seed: int | None = None,
    ) -> AllocationResult:
        if not questions:
            raise ValueError("questions: empty")
        meter = budget if isinstance(budget, Meter) else Meter(budget)
        root = RunContext(engine, meter, seed=seed)
        qs = []
        for i, item in enumerate(questions):
            if isinstance(item, Example):
                prompt, ref, qid = Prompt.of(self.prompt_fn(item)), item.answer, item.id
            else:
                prompt, ref, qid = Prompt.of(item), None, str(i)
            ctx = root.child(None, name=f"q{i}")
            ctx.trace = root.trace
            q = _Q(i, qid, prompt, ref, ctx, SampleSet(self.extractor))
            q.prompt_tokens = await engine.count_prompt_tokens(prompt)
            qs.append(q)
        root.event("allocate", questions=len(qs), budget=meter.budget.limits())
        await self._loop(root, qs)
        return await off_loop(_allocation_result, self, root, meter, qs)

    # -- scheduling -----------------------------------------------------------------------------
    def _verifies(self, q: _Q) -> bool:
        """Whether ``q`` is settled by the verifier (see :attr:`BinPolicy.verified`)."""
        if self.verifier is None:
            return False
        return q.policy is None or q.policy.verified is None or q.policy.verified

    def _cap(self, q: _Q) -> int:
        cap = self.max_samples
        if q.policy is not None and q.policy.max_samples is not None:
            cap = q.policy.max_samples
        if self.k_cap is not None:
            cap = min(cap, self.k_cap)
        return cap

    def _first_k(self, qs: list[_Q], meter: Meter) -> int:
        """Samples per question in the first round: ``initial_k``, lowered (never below
        ``min_initial_k``) so that the round's projected cost stays within
        ``first_round_share`` of the batch's completion-token (or generation) limit and
        the rest is left to allocate by gain. Tokens per sample: the mean of the samples
        drawn so far (``max_tokens`` before the first comes back)."""
        k = self.initial_k
        if self.first_round_share is None:
            return k
        b = meter.budget
        drawn = sum(len(q.samples) for q in qs)
        if b.completion_tokens is not None:
            per = sum(q.samples.completion_tokens for q in qs) / drawn if drawn else self.params.max_tokens
            k = min(k, int(self.first_round_share * b.completion_tokens / (len(qs) * max(per, 1.0))))
        if b.generations is not None:
            k = min(k, int(self.first_round_share * b.generations / len(qs)))
        return max(self.min_initial_k, k)

    def _next_unit(self, qs: list[_Q], first_k: int) -> tuple[_Q, int] | None:
        # The first round, breadth-first in passes of ``batch``: every question gets
        # its first samples before any question gets its first_k-th (a budget too
        # small for the whole round still covers every question).
        want = [q for q in qs if q.active and not q.first_done and q.in_flight < self.per_question_in_flight
                and len(q.samples) + q.pending_samples < min(first_k, self._cap(q))]
        if want:
            q = min(want, key=lambda q: (len(q.samples) + q.pending_samples, q.index))
            have = len(q.samples) + q.pending_samples
            return q, min(self.batch, min(first_k, self._cap(q)) - have)
        best: _Q | None = None
        for q in qs:
            if not q.active or not q.first_done or q.in_flight >= self.per_question_in_flight:
                continue
            if best is None or q.priority > best.priority:
                best = q
        if best is None or best.priority <= self.min_gain_per_token:
            return None
        b = best.policy.batch if best.policy is not None and best.policy.batch else self.batch
        n = min(b, self._cap(best) - len(best.samples) - best.pending_samples)
        return (best, n) if n >= 1 else None

    def _worst(self, q: _Q, n: int) -> Usage:
        return q.ctx.call_worst_case(q.prompt_tokens, n, self.params.max_tokens)

    def _fit(self, q: _Q, n: int, launched: Usage) -> int:
        """The largest n' <= n whose worst case the batch budget can hold now on top of
        the units already launched (0 if none). A launched unit counts until it is done,
        so a unit is never refused for a reservation made by a sibling in between."""
        while n >= 1 and not q.ctx.meter.can_afford(launched + self._worst(q, n)):
            n -= 1
        return n

    async def _unit(self, q: _Q, n: int) -> list[Sample]:
        gens = await q.ctx.generate(q.prompt, self.params.model_copy(update={"n": n}))
        new = [q.samples.add(g, unit=len(q.samples)) for g in gens]
        if self.verifier is not None and new:
            try:
                scores = await self.verifier.score(q.ctx, q.prompt, new)
            except BudgetExhausted:
                scores = [0.0] * len(new)  # unverified samples do not pass
            for s, sc in zip(new, scores):
                s.score = float(sc)
        return new

    async def _loop(self, root: RunContext, qs: list[_Q]) -> None:
        s = _Schedule()
        try:
            while True:
                first_k = self._first_k(qs, root.meter)
                for q in qs:  # the first round may have shrunk under questions already past it
                    if q.active and not q.first_done and q.in_flight == 0 and len(q.samples) >= min(first_k, self._cap(q)):
                        q.first_done = True
                        await off_loop(self._update, root, q)  # grades: off the event loop
                self._launch(root, qs, first_k, s)
                if s.out_of_budget or not s.pending:
                    break
                done, _ = await asyncio.wait(s.pending, return_when=asyncio.FIRST_COMPLETED)
                for t in sorted(done, key=lambda t: s.pending[t][0].index):
                    await self._collect(root, t, first_k, s)
                if s.out_of_budget and not s.pending:
                    break
        finally:
            for t in s.pending:
                t.cancel()
            if s.pending:
                await asyncio.gather(*s.pending, return_exceptions=True)
        leftover = "budget" if s.out_of_budget else "low_gain"
        for q in qs:
            if q.active:
                self._stop(root, q, leftover)

    def _launch(self, root: RunContext, qs: list[_Q], first_k: int, s: _Schedule) -> None:
        """Send units until ``max_in_flight`` are out, no question wants one, or the budget
        cannot hold the next on top of those in flight."""
        while len(s.pending) < self.max_in_flight:
            pick = self._next_unit(qs, first_k)
            if pick is None:
                return
            q, n = pick
            n = self._fit(q, n, s.launched)
            if n == 0:
                s.out_of_budget = not s.pending
                return
            q.in_flight += 1
            q.pending_samples += n
            s.launched = s.launched + self._worst(q, n)
            root.event("unit", q=q.index, n=n, priority=None if math.isinf(q.priority) else q.priority)
            s.pending[asyncio.ensure_future(self._unit(q, n))] = (q, n)

    async def _collect(self, root: RunContext, t: asyncio.Task[list[Sample]], first_k: int, s: _Schedule) -> None:
        """Take in a finished unit: release its worst case, note a refusal or an error,
        and re-assess its question."""
        q, n = s.pending.pop(t)
        s.launched = _minus(s.launched, self._worst(q, n))
        q.in_flight -= 1
        q.pending_samples -= n
        exc = t.exception()
        if isinstance(exc, BudgetExhausted):
            root.budget_detail = exc.limit
            root.event("refused", q=q.index, limit=exc.limit)
            if not s.pending:  # nothing else in flight: the budget will not free up
                s.out_of_budget = True
        elif exc is not None:
            q.error = f"{type(exc).__name__}: {exc}"
            self._stop(root, q, "error")
        q.first_done = q.first_done or len(q.samples) >= min(first_k, self._cap(q))
        if q.active and q.in_flight == 0 and q.first_done:
            await off_loop(self._update, root, q)

    def _view(self, q: _Q) -> QuestionView:
        classes = group_answers([s.answer for s in q.samples], self.eq)
        return QuestionView(
            index=q.index, question=q.prompt.question, samples=list(q.samples.items),
            counts=sorted((len(c.members) for c in classes), reverse=True),
            completion_tokens=q.samples.completion_tokens, bin=q.bin, failures=q.failures,
        )

    def _stop(self, root: RunContext, q: _Q, reason: str) -> None:
        if q.stop_reason is None:
            q.stop_reason = reason
            root.event("stop", q=q.index, reason=reason, samples=len(q.samples))

    def _update(self, root: RunContext, q: _Q) -> None:
        """Re-assess a question after its units came back: stop it or re-price it."""
        view = self._view(q)
        if self.binner is not None and q.bin is None and view.n:
            q.bin = view.bin = int(self.binner(view))
            q.policy = self.table.get(q.bin)
            root.event("bin", q=q.index, bin=q.bin)
            if q.policy is not None and q.policy.skip:
                return self._stop(root, q, "hopeless")
        n = view.n
        if self._verifies(q):
            passing = [s for s in q.samples if s.answer is not None and (s.score or 0.0) >= self.pass_threshold]
            q.failures = n - len(passing)
            if passing:
                return self._stop(root, q, "settled")
            if self.flaws is not None and (n >= self._cap(q) or self.flaws.next_try_gain(q.failures) <= 0):
                return self._stop(root, q, "abstain")
        else:
            v1 = view.counts[0] if view.counts else 0
            v2 = view.counts[1] if len(view.counts) > 1 else 0
            thr = q.policy.threshold if q.policy is not None and q.policy.threshold else self.threshold
            if v1 > 0 and prob_leader_is_mode(v1, v2) >= thr:
                return self._stop(root, q, "settled")
            if n >= self.hopeless_after and (v1 == 0 or view.agreement <= self.hopeless_agreement):
                return self._stop(root, q, "hopeless")
        if n >= self._cap(q):
            return self._stop(root, q, "max_samples")
        q.priority = self._priority(q, view)

    def _priority(self, q: _Q, view: QuestionView) -> float:
        """Expected accuracy gain per token of the question's next unit.

        The one-step gain of a small batch is 0 whenever the batch cannot flip the vote
        (myopic value of information), so the rate is the best average over lookaheads
        of m, 2m, 4m, ... samples up to the cap (the KG* rule of Frazier & Powell):
        ``max_L gain(L) / L`` per sample, times m, over the unit's expected tokens.
        """
        m = q.policy.batch if q.policy is not None and q.policy.batch else self.batch
        room = self._cap(q) - view.n
        m = max(1, min(m, room))
        if self._verifies(q) and self.flaws is not None:
            rate = max(0.0, self.flaws.next_try_gain(q.failures))
        else:
            rate, horizon = 0.0, m
            while True:
                rate = max(rate, self.gain(view, horizon) / horizon)
                if horizon >= room or horizon >= self.lookahead:
                    break
                horizon = min(2 * horizon, room, self.lookahead)
        if q.policy is not None:
            rate *= q.policy.weight
        per_sample = view.completion_tokens / view.n if view.n else self.params.max_tokens
        return rate * m / max(1.0, m * per_sample + q.prompt_tokens)


def _allocation_result(self: Allocator, root: RunContext, meter: Meter, qs: list[_Q]) -> AllocationResult:
    """The batch result: each question decided by vote (verifier mode: among passing samples)."""
    out = []
    for q in qs:
        items = q.samples.items
        meta: dict[str, Any] = {}
        answer, conf = None, None
        if self._verifies(q):
            passing = [s for s in items if s.answer is not None and (s.score or 0.0) >= self.pass_threshold]
            if passing:
                d = vote(passing, q.ctx.rng, weights=[s.score or 0.0 for s in passing], eq=self.eq)
                answer, conf = d.answer, max(s.score or 0.0 for s in passing)
            elif q.stop_reason != "abstain" and items:
                d = vote(items, q.ctx.rng, weights=[s.score or 0.0 for s in items], eq=self.eq)
                answer, conf = d.answer, d.confidence
            meta["passed"] = len(passing)
        elif items:
            d = vote(items, q.ctx.rng, eq=self.eq)
            answer, conf = d.answer, d.confidence
            meta["votes"] = d.meta.get("votes", {})
            counts = sorted(d.meta.get("votes", {}).values(), reverse=True)
            if counts:
                meta["p_mode"] = prob_leader_is_mode(int(counts[0]), int(counts[1]) if len(counts) > 1 else 0)
        if q.error:
            meta["error"] = q.error
        correct = None
        if q.reference is not None:
            correct = answer is not None and bool(self.eq(answer, q.reference))
        out.append(
            QuestionResult(
                index=q.index, id=q.id, question=q.prompt.question, answer=answer, confidence=conf,
                reference=q.reference, correct=correct, stop_reason=q.stop_reason or "budget", bin=q.bin,
                samples=list(items), usage=q.ctx.meter.usage(), meta=meta,
            )
        )
    hist = Counter(len(q.samples) for q in qs)
    return AllocationResult(
        results=out,
        usage=meter.usage(),
        overspent=dict(meter.overspent),
        usage_by_kind=dict(meter.by_kind),
        budget=meter.budget,
        histogram=dict(sorted(hist.items())),
        stop_reasons=dict(Counter(r.stop_reason for r in out)),
        budget_detail=root.budget_detail,
        trace=list(root.trace),
        meta={"k_cap": self.k_cap, "max_in_flight": self.max_in_flight},
    )
