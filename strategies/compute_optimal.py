"""Compute-optimal test-time scaling: the method and its caps chosen per difficulty bin.

Follows Snell et al. 2024 ("Scaling LLM Test-Time Compute Optimally can be More
Effective than Scaling Model Parameters", sec. 3-5): estimate each question's
difficulty, put it in a bin, and run in each bin the method and the amount of compute
that did best on a labelled calibration set for that bin and the budget. The policy
(bins, choice per bin, the measured curves) is fitted offline by
:func:`ttc.bench.compute_optimal.fit_policy` from recorded pools and stored as a small
JSON file (:class:`Policy`); :class:`ComputeOptimal` runs it.

**Difficulty signal: the first samples (a probe), not the question embedding.** Snell
et al. bin by *model-predicted* difficulty: the verifier's scores of the model's own
samples, because the oracle is not available at test time. Here the probe is the
first ``probe`` samples of every question (drawn anyway: they are the first samples
of every method), and the bin is read off them:

- ``verified``: a probe sample passes the verifier (e.g.
  :class:`~ttc.verifiers.rules.ArithmeticCheck`: its equations are right and its answer
  is the last one's result);
- ``agree``: every probe sample has an answer and they all agree (with ``probe=1``:
  the sample has an answer);
- ``split``: the probe's answers disagree, or some have none;
- ``unparsed``: no probe sample has an answer.

The question embedding (:class:`~ttc.strategies.allocator.LearnedDifficulty`) is not
used in the bins. On the recorded additions, a ridge predictor on MiniLM embeddings
tracks held-out pass@1 with Pearson r of about 0.5, while a question's rate of verified
samples (what the probe estimates) tracks it with r of about 0.9. The probe costs
nothing extra, because every method draws those samples first. Splitting the probe's
bins further by embedding-predicted difficulty is not implemented.

**Methods a bin can choose** (all of them draw whole samples, so every one is run by
the cross-question :class:`~ttc.strategies.allocator.Allocator` and can be fitted on a
recorded pool by replay):

- ``probe``: answer from the probe samples alone (with ``probe=1``, a single sample);
- ``vote``: self-consistency with the allocator's Beta-posterior stop (settled when
  P(leader is the mode) >= ``threshold``), at most ``max_samples`` samples;
- ``verified``: resample until a sample passes the verifier (answer: the vote among the
  passing samples; none passed: the score-weighted vote), at most ``max_samples``.

Early-exit sampling and particle filtering are not offered: their probes and step
continuations are prompts that a pool of complete samples did not record, so replay
cannot evaluate them honestly and a policy could not be fitted for them.

**One budget for the batch.** The policy's choices become the allocator's per-bin
table (:class:`~ttc.strategies.allocator.BinPolicy`: caps, Beta threshold, verified or
voted); the batch shares one meter, every call reserves its worst case before it is
sent, and the allocator gives the next samples to the question with the highest
expected gain per token (:class:`PolicyGain`: the vote posterior in voted bins, the
chance of a passing sample in verified bins). Without a budget the batch
gets the policy's ``budget_per_question`` times the number of questions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ttc.answers import DEFAULT_EQUIVALENCE, AnswerExtractor, ExtractorName, group_answers, resolve_extractor
from ttc.budget import Budget, Meter
from ttc.checks import check_int
from ttc.configs import ConfigError, validation_error
from ttc.engine import Engine
from ttc.questions import Example
from ttc.strategy import BatchStrategy
from ttc.types import PromptLike, Sample, SamplingParams
from ttc.verifiers.base import OutcomeVerifier

from .allocator import AllocationResult, Allocator, BinPolicy, QuestionView, VotePosteriorGain
from .stats import Equiv

POLICY_FORMAT = "ttc.compute_optimal"
POLICY_VERSION = 1
BIN_NAMES = ("verified", "agree", "split", "unparsed")
METHODS = ("probe", "vote", "verified")
VERIFIERS = ("arithmetic_check",)


class CurvePoint(BaseModel):
    """One candidate measured on a bin's calibration questions: accuracy and mean
    completion tokens per question."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["probe", "vote", "verified"]
    max_samples: int = Field(ge=1)
    accuracy: float = Field(ge=0.0, le=1.0)
    tokens: float = Field(ge=0.0)


class BinChoice(BaseModel):
    """A bin's method and caps, and what the fit measured for the bin."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["probe", "vote", "verified"]
    max_samples: int = Field(ge=1)
    threshold: float | None = Field(None, gt=0.5, le=1.0)  # vote: the Beta stop's P(leader is the mode)
    share: float | None = Field(None, ge=0.0, le=1.0)  # of the calibration questions
    accuracy: float | None = Field(None, ge=0.0, le=1.0)  # of the choice on them
    tokens: float | None = Field(None, ge=0.0)  # completion tokens per question, the probe included
    curve: list[CurvePoint] = Field(default_factory=list)  # every candidate measured in the bin


class Policy(BaseModel):
    """A compute-optimal policy: the probe, a choice per bin, the fitted curves.

    Stored as JSON (``save``/``load``); every field is validated on load and an error
    names the field (``bins.split.max_samples: ...``)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["ttc.compute_optimal"] = POLICY_FORMAT
    version: Literal[1] = POLICY_VERSION
    probe: int = Field(1, ge=1, le=8)
    verifier: Literal["arithmetic_check"] | None = None
    pass_threshold: float = Field(1.0, ge=0.0, le=1.0)
    threshold: float = Field(0.95, gt=0.5, le=1.0)  # the vote bins' default Beta threshold
    budget_per_question: float | None = Field(None, gt=0.0)  # completion tokens the choices were fitted for
    bins: dict[str, BinChoice]
    fit: dict[str, Any] = Field(default_factory=dict)  # how it was fitted (pool, questions, seeds, objective)

    @model_validator(mode="after")
    def _check(self) -> Policy:
        missing = [b for b in BIN_NAMES if b not in self.bins]
        unknown = [b for b in self.bins if b not in BIN_NAMES]
        if unknown:
            raise ValueError(f"bins: unknown bin {unknown[0]!r} (bins are {', '.join(BIN_NAMES)})")
        if missing:
            raise ValueError(f"bins: no choice for bin {missing[0]!r} (every one of {', '.join(BIN_NAMES)} needs one)")
        for name, c in self.bins.items():
            if c.max_samples < self.probe:
                raise ValueError(f"bins.{name}.max_samples: {c.max_samples} is below the probe's {self.probe} samples")
            if c.method == "probe" and c.max_samples != self.probe:
                raise ValueError(f"bins.{name}.max_samples: method 'probe' stops at the probe's {self.probe} "
                                 f"samples, got {c.max_samples}")
            if c.method == "verified" and self.verifier is None:
                raise ValueError(f"bins.{name}.method: 'verified' needs the policy's verifier (e.g. "
                                 f"'arithmetic_check'), which is null")
        return self

    # -- files ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Policy:
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"policy: no such file {str(p)!r}", "policy") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"policy: {str(p)!r} is not JSON: {e}", "policy") from None
        return cls.parse(data, where=str(p))

    @classmethod
    def parse(cls, data: Any, where: str = "policy") -> Policy:
        """A policy from plain data; a bad field raises :class:`~ttc.configs.ConfigError` naming it."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}", "policy")
        if data.get("format", POLICY_FORMAT) != POLICY_FORMAT:
            raise ConfigError(f"{where}: format: expected {POLICY_FORMAT!r}, got {data.get('format')!r}", "format")
        if "version" in data and data["version"] != POLICY_VERSION:
            raise ConfigError(f"{where}: version: this ttc reads policy version {POLICY_VERSION}, the file is "
                              f"version {data['version']!r}", "version")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            err = validation_error(e)
            msg = str(err).removeprefix("value: ")  # a whole-policy check: its message names the field
            key = err.key or msg.split(":", 1)[0]
            raise type(err)(f"{where}: {msg}", key) from None

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.model_dump(mode="json"), indent=1) + "\n")
        return p

    # -- reading it -------------------------------------------------------------------------------
    def table(self) -> dict[int, BinPolicy]:
        """The allocator's per-bin table (bin index = position in :data:`BIN_NAMES`)."""
        out = {}
        for i, name in enumerate(BIN_NAMES):
            c = self.bins[name]
            if c.method == "probe":
                out[i] = BinPolicy(max_samples=self.probe, verified=self.verifier is not None)
            elif c.method == "vote":
                out[i] = BinPolicy(max_samples=c.max_samples, threshold=c.threshold or self.threshold,
                                   verified=False)
            else:
                out[i] = BinPolicy(max_samples=c.max_samples, verified=True)
        return out

    def max_samples(self) -> int:
        return max(c.max_samples for c in self.bins.values())

    def lines(self) -> list[str]:
        """The policy as a markdown table (bin, share, choice, expected accuracy and tokens)."""
        out = [f"probe {self.probe} sample(s), verifier {self.verifier or 'none'}, fitted for "
               f"{'-' if self.budget_per_question is None else f'{self.budget_per_question:.1f}'} completion "
               f"tokens/question",
               "", "| bin | share | choice | accuracy | tokens/q | candidates measured |", "|---|---|---|---|---|---|"]
        for name in BIN_NAMES:
            c = self.bins[name]
            what = c.method if c.method == "probe" else f"{c.method} max {c.max_samples}"

            def f(x: float | None, fmt: str) -> str:
                return "-" if x is None else format(x, fmt)

            out.append(f"| {name} | {f(c.share, '.2f')} | {what} | {f(c.accuracy, '.3f')} | {f(c.tokens, '.1f')} "
                       f"| {len(c.curve)} |")
        return out


def default_policy(verifier: str | None = None) -> Policy:
    """The unfitted policy: one sample probes, then self-consistency with the Beta stop
    (cap 16) in every bin; a ``verified`` probe answers at once. Fit one for your data."""
    vote = BinChoice(method="vote", max_samples=16)
    return Policy(probe=1, verifier=verifier, bins={
        "verified": BinChoice(method="probe", max_samples=1) if verifier else vote,
        "agree": vote, "split": vote, "unparsed": vote})


def make_verifier(name: str | None) -> OutcomeVerifier | None:
    if name is None:
        return None
    if name == "arithmetic_check":
        from ttc.verifiers.rules import ArithmeticCheck

        return ArithmeticCheck()
    raise ConfigError(f"verifier: expected one of {', '.join(VERIFIERS)} or null, got {name!r}", "verifier")


def probe_bin(samples: Sequence[Sample], probe: int, *, verifier: bool = False, pass_threshold: float = 1.0,
              eq: Equiv | None = None) -> str:
    """The bin of a question from its first ``probe`` samples (see the module doc)."""
    first = list(samples[:probe])
    answered = [s for s in first if s.answer is not None]
    if not answered:
        return "unparsed"
    if verifier and any((s.score or 0.0) >= pass_threshold for s in answered):
        return "verified"
    classes = group_answers([s.answer for s in answered], eq or DEFAULT_EQUIVALENCE)
    return "agree" if len(classes) == 1 and len(answered) == len(first) else "split"


class ProbeBinner:
    """The allocator's binner for a policy: the index in :data:`BIN_NAMES` of
    :func:`probe_bin` of the question's first samples."""

    def __init__(self, policy: Policy, eq: Equiv | None = None):
        self.policy = policy
        self.eq = eq or DEFAULT_EQUIVALENCE

    def __call__(self, view: QuestionView) -> int:
        name = probe_bin(view.samples, self.policy.probe, verifier=self.policy.verifier is not None,
                         pass_threshold=self.policy.pass_threshold, eq=self.eq)
        return BIN_NAMES.index(name)


class PolicyGain:
    """Expected accuracy gain of ``m`` more samples for a question.

    Voted bins: the vote posterior (:class:`~ttc.strategies.allocator.VotePosteriorGain`).
    Bins settled by the verifier (the question is still running, so none of its ``n``
    samples passed): the chance that one of the next ``m`` passes, ``m / (n + m + 1)``
    (the posterior predictive under a uniform prior on the question's pass rate, after
    ``n`` failures), times the accuracy the fit measured for the bin's choice (a stand-in
    for the share of passing answers that are right; 1 when the fit measured none)."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.vote = VotePosteriorGain()
        self.verified: dict[int, float] = {}
        for i, name in enumerate(BIN_NAMES):
            c = policy.bins[name]
            if c.method == "verified" or (c.method == "probe" and policy.verifier is not None):
                self.verified[i] = c.accuracy if c.accuracy is not None else 1.0

    def __call__(self, view: QuestionView, m: int) -> float:
        if view.bin is None or view.bin not in self.verified:
            return self.vote(view, m)
        return self.verified[view.bin] * m / (view.n + m + 1)


class ComputeOptimal(BatchStrategy):
    """Runs a fitted :class:`Policy` over a batch under one token budget (module doc).

    ``policy``: a policy file's path, a :class:`Policy` or its data; None: the unfitted
    :func:`default_policy`. ``await ComputeOptimal(policy="policy.json").run(questions,
    engine, budget)`` -> :class:`~ttc.strategies.allocator.AllocationResult` (each
    question's ``bin`` is its index in :data:`BIN_NAMES`).
    """

    name = "compute_optimal"

    def __init__(
        self,
        policy: str | dict[str, Any] | None = None,
        *,
        params: SamplingParams | None = None,
        batch: int = 2,
        max_in_flight: int = 16,
        extractor: AnswerExtractor | ExtractorName | None = None,
        eq: Equiv | None = None,
        prompt_fn: Callable[[Example], PromptLike] | None = None,
    ):
        if isinstance(policy, Policy):
            self.policy = policy
        elif isinstance(policy, (str, Path)):
            self.policy = Policy.load(policy)
        elif isinstance(policy, dict):
            self.policy = Policy.parse(policy)
        elif policy is None:
            self.policy = default_policy()
        else:
            raise ConfigError(f"policy: expected a policy file's path, a Policy or its data, got "
                              f"{type(policy).__name__}", "policy")
        if params is not None and not isinstance(params, SamplingParams):
            raise TypeError(f"params: expected SamplingParams, got {type(params).__name__}")
        self.params = params
        self.batch = check_int("batch", batch, lo=1)
        self.max_in_flight = max_in_flight
        self.extractor = resolve_extractor(extractor)
        self.eq = eq
        self.prompt_fn = prompt_fn
        self.verifier = make_verifier(self.policy.verifier)

    def describe(self) -> dict[str, Any]:
        """The constructor's arguments, with the policy as its data (bins, choice per bin,
        the fitted curves), so the description rebuilds the same strategy."""
        d = super().describe()
        d["policy"] = self.policy.model_dump(mode="json")
        return d

    def allocator(self) -> Allocator:
        """The allocator that runs the policy."""
        p = self.policy
        return Allocator(
            params=self.params, initial_k=p.probe, min_initial_k=p.probe, first_round_share=None,
            batch=self.batch, max_samples=p.max_samples(), threshold=p.threshold, gain=PolicyGain(p),
            binner=ProbeBinner(p, self.eq), table=p.table(), verifier=self.verifier,
            pass_threshold=p.pass_threshold, max_in_flight=self.max_in_flight, extractor=self.extractor,
            eq=self.eq, prompt_fn=self.prompt_fn,
        )

    async def run(
        self, questions: Sequence[Example | PromptLike], engine: Engine, budget: Budget | Meter | None = None,
        *, seed: int | None = None,
    ) -> AllocationResult:
        if budget is None and self.policy.budget_per_question is not None and questions:
            budget = Budget(completion_tokens=max(1, int(self.policy.budget_per_question * len(questions))))
        res = await self.allocator().run(questions, engine, budget, seed=seed)
        res.strategy = self.name
        res.meta["bins"] = {name: sum(1 for q in res.questions if q.bin == i) for i, name in enumerate(BIN_NAMES)}
        return res


__all__ = [
    "BIN_NAMES", "BinChoice", "ComputeOptimal", "CurvePoint", "Policy", "PolicyGain", "ProbeBinner",
    "default_policy", "make_verifier", "probe_bin",
]
