"""Process verifiers: score a list of steps.

Every process verifier returns, for each trajectory, its per-step scores in [0, 1]
(P(step correct)) and an aggregate over the prefix (:class:`StepScores`):

- ``"last"``: the latest step's score (Puri et al. 2025's default with a PRM);
- ``"min"``: the weakest step (Lightman et al. 2023, Snell et al. 2024);
- ``"product"``: the product of step scores (P(every step correct));
- ``"model"``: the whole prefix scored as *one* step (Puri et al. 2025's ablation
  ranks model > product > min ~ last).

Steps are joined with the separator of the step policy that cut them (passed in by
the search), never a hard-coded string. Verifiers that call a model do it through
``ctx.generate(..., kind="verify")`` so their calls are charged to the budget.

Implementations here: :class:`LLMJudgeStepVerifier` (P("Yes") for "is the latest
step correct?" read from the logprobs of any engine, Kadavath et al. 2022's P(True)
applied per step), :class:`ArithmeticStepCheck` (rule-based: re-computes the
equations of each step with :func:`verifiers.rules.equations`, optionally requiring
their operands to come from the question or earlier results),
:class:`RemotePRM` (a PRM served by vLLM's ``/pooling`` or ``/classify`` endpoint), and
:class:`ProcessAsOutcome` (a process verifier scoring complete samples, for
weighted best-of-N with the same verifier). The transformers PRM is in
:mod:`verifiers.prm`.
"""

from __future__ import annotations

import abc
import asyncio
import json
import math
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ttc.answers import extract_answer
from ttc.context import RunContext
from ttc.strategy import Describable
from ttc.types import Message, Prompt, Sample, SamplingParams, Usage

from .base import OutcomeVerifier
from .rules import answer_is_value, equations, numbers_in, numerals_in

Aggregate = Literal["last", "min", "product", "model"]
AGGREGATES = ("last", "min", "product", "model")


@dataclass
class StepScores:
    """Per-step scores of one trajectory and their aggregate."""

    steps: list[float]
    aggregate: float


def aggregate_scores(scores: Sequence[float], how: str) -> float:
    if not scores:
        return 0.5
    if how in ("last", "model"):
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    if how == "product":
        return float(math.prod(scores))
    raise ValueError(f"aggregate: expected one of {AGGREGATES}, got {how!r}")


class ProcessVerifier(Describable, abc.ABC):
    """Scores lists of steps. Subclasses implement :meth:`step_scores`; one with an
    outcome-level check also implements :meth:`outcome_factor` and sets ``outcome``."""

    name: str = "process_verifier"
    outcome: bool = False

    def __init__(self, aggregate: Aggregate = "last"):
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate: expected one of {AGGREGATES}, got {aggregate!r}")
        self.aggregate: Aggregate = aggregate

    @abc.abstractmethod
    async def step_scores(
        self, ctx: RunContext, prompt: Prompt, batch: Sequence[Sequence[str]], separator: str
    ) -> list[list[float]]:
        """For each trajectory (a list of steps, delimiters stripped), one score per step."""

    async def score(
        self,
        ctx: RunContext,
        prompt: Prompt,
        batch: Sequence[Sequence[str]],
        separator: str = "\n\n",
        finished: Sequence[bool] | None = None,
    ) -> list[StepScores]:
        """Per-step scores and the aggregate, for each trajectory of ``batch``.

        ``finished`` says which trajectories are complete (searches pass their flags;
        ``None``: all of them, as when scoring full answers). Step scores ignore it; a
        verifier with an outcome-level check applies that check to complete ones only."""
        if finished is not None and len(finished) != len(batch):
            raise ValueError(f"finished: {len(finished)} flags for {len(batch)} trajectories")
        clean = [[s.removesuffix(separator) for s in steps] for steps in batch]
        if self.aggregate == "model":
            whole = [[separator.join(steps)] if steps else [] for steps in clean]
            per = await self.step_scores(ctx, prompt, whole, separator)
            res = [StepScores(steps=p, aggregate=aggregate_scores(p, "last")) for p in per]
        else:
            per = await self.step_scores(ctx, prompt, clean, separator)
            res = [StepScores(steps=p, aggregate=aggregate_scores(p, self.aggregate)) for p in per]
        if self.outcome:
            for r, steps, done in zip(res, clean, [True] * len(clean) if finished is None else finished):
                if done:
                    r.aggregate *= self.outcome_factor(prompt.question, separator.join(steps))
        return res

    def outcome_factor(self, question: str, text: str) -> float:
        """With ``outcome`` set: a factor for a complete trajectory's aggregate, from its
        whole ``text`` (an outcome-level check). This base verifier has none (1.0)."""
        return 1.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(aggregate={self.aggregate!r})"


class _PrefixCache:
    """Scores of step prefixes already judged (bounded, least recently used out)."""

    def __init__(self, size: int = 20000):
        self.size = size
        self.d: OrderedDict[tuple[str, ...], float] = OrderedDict()

    def get(self, key: tuple[str, ...]) -> float | None:
        v = self.d.get(key)
        if v is not None:
            self.d.move_to_end(key)
        return v

    def put(self, key: tuple[str, ...], v: float) -> None:
        self.d[key] = v
        self.d.move_to_end(key)
        while len(self.d) > self.size:
            self.d.popitem(last=False)


# -- rule-based -------------------------------------------------------------------------
class ArithmeticStepCheck(ProcessVerifier):
    """Rule-based step check: re-computes each arithmetic equation a step writes.

    A step's score is ``neutral`` when it has no equation, else
    ``wrong + (right - wrong) * fraction_correct``. Scores stay inside (0, 1) so a
    logit-based weighting never sees an infinite ratio. No model call, no cost.

    ``grounded=True`` also requires each equation's operands to be numbers the solution
    may use: stated in the question (numerals or number words: "three", "doubles" -> 2),
    results of the trajectory's earlier right equations, or ``constants``. Right
    arithmetic on a number that came from a wrong equation or from nowhere then counts
    as wrong ("2 + 13 = 14" and then "14 - 13 = 1": the second is charged too; 210 of
    960 samples of the bundled model on held-out word problems had such an equation).
    There this raised the min-aggregate's AUC for a right final answer from 0.71 to
    0.76 (``benchmarks/probes/verifier_auc.py``; table in benchmarks/RESULTS.md).

    ``outcome=True`` adds two checks of a *complete* trajectory (``finished`` in
    :meth:`score`), applied to its aggregate only (per-step scores unchanged): the
    aggregate is multiplied by ``unused + (1 - unused) * share`` (``share``: the fraction
    of the question's numerals that the trajectory's equations use as operands) and by
    ``mismatch`` when its answer is not the last right equation's result. Partial
    trajectories are not touched. On the same held-out samples this raised the
    min-aggregate's AUC from 0.76 to 0.80.
    """

    name = "arithmetic_step_check"

    def __init__(
        self,
        aggregate: Aggregate = "min",
        *,
        right: float = 0.9,
        wrong: float = 0.05,
        neutral: float = 0.6,
        grounded: bool = False,
        constants: Sequence[float] = (1.0,),
        outcome: bool = False,
        unused: float = 0.3,
        mismatch: float = 0.5,
    ):
        super().__init__(aggregate)
        for k, v in (("right", right), ("wrong", wrong), ("neutral", neutral), ("unused", unused),
                     ("mismatch", mismatch)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{k}: must be in [0, 1], got {v}")
        self.right, self.wrong, self.neutral = right, wrong, neutral
        self.grounded = grounded
        self.constants = frozenset(float(c) for c in constants)
        self.outcome, self.unused, self.mismatch = outcome, unused, mismatch

    def outcome_factor(self, question: str, text: str) -> float:
        """The ``outcome=True`` factor for a complete trajectory's ``text``: numerals of
        ``question`` used as operands, answer (:func:`ttc.answers.extract_answer`) = last
        right equation's result."""
        answer = extract_answer(text)
        eqs = equations(text)
        stated = numerals_in(question)
        used = {o for e in eqs for o in e.operands}
        share = len(stated & used) / len(stated) if stated else 1.0
        right = [e.result for e in eqs if e.correct]
        consistent = answer_is_value(answer, right[-1] if right else None)
        return (self.unused + (1.0 - self.unused) * share) * (1.0 if consistent else self.mismatch)

    def score_step(self, step: str, known: set[float] | None = None) -> float:
        """One step's score; with ``known`` (the numbers the step may use), grounded:
        each right equation's result joins ``known`` (in place) for the next ones."""
        eqs = equations(step)
        if not eqs:
            return self.neutral
        good = 0
        for e in eqs:
            if known is None:
                good += e.correct
            elif e.correct:
                good += all(o in known for o in e.operands)
                known.add(e.result)
        return self.wrong + (self.right - self.wrong) * good / len(eqs)

    def trajectory_scores(self, question: str, steps: Sequence[str]) -> list[float]:
        """Per-step scores of one trajectory (grounded: in the numbers of ``question``)."""
        if not self.grounded:
            return [self.score_step(s) for s in steps]
        known = numbers_in(question) | self.constants
        return [self.score_step(s, known) for s in steps]

    async def step_scores(
        self, ctx: RunContext, prompt: Prompt, batch: Sequence[Sequence[str]], separator: str
    ) -> list[list[float]]:
        return [self.trajectory_scores(prompt.question, steps) for steps in batch]

    def __repr__(self) -> str:
        extra = ", outcome=True" if self.outcome else ""
        return f"{type(self).__name__}(aggregate={self.aggregate!r}, grounded={self.grounded}{extra})"


# -- LLM judge ----------------------------------------------------------------------------
JUDGE_TEMPLATE = (
    "Here is a math problem and a partial solution.\n\nProblem: {question}\n\n"
    "Solution so far:\n{previous}\n\nLatest step:\n{step}\n\n"
    "Is the latest step correct? Answer Yes or No."
)


class LLMJudgeStepVerifier(ProcessVerifier):
    """P(correct) of the latest step, read from the judge's next-token logprobs.

    One engine call per (prefix, latest step) with ``max_tokens=1`` and top-k logprobs;
    P = mass("yes") / (mass("yes") + mass("no")) over the top-k tokens, 0.5 when
    neither shows up (P(True), Kadavath et al. 2022, applied to the latest step as a
    generative process verifier). Earlier steps' scores come from a prefix cache, so a
    search that scores the same prefix every step pays for each step once. Works with
    any engine that returns logprobs (the bundled model included); calls are
    ``kind="verify"``.
    """

    name = "llm_judge_step"

    def __init__(
        self,
        aggregate: Aggregate = "last",
        *,
        template: str = JUDGE_TEMPLATE,
        top_logprobs: int = 10,
        yes: Sequence[str] = ("yes",),
        no: Sequence[str] = ("no",),
        assistant_prefix: str = "",
        cache_size: int = 20000,
    ):
        super().__init__(aggregate)
        for k in ("{question}", "{step}"):
            if k not in template:
                raise ValueError(f"template: must contain {k}")
        self.template = template
        self.top_logprobs = top_logprobs
        self.yes = tuple(y.lower() for y in yes)
        self.no = tuple(n.lower() for n in no)
        self.assistant_prefix = assistant_prefix
        self.cache = _PrefixCache(cache_size)

    def judge_prompt(self, prompt: Prompt, previous: Sequence[str], step: str, separator: str) -> Prompt:
        prev = separator.join(previous) if previous else "(none)"
        content = self.template.format(question=prompt.question, previous=prev, step=step)
        return Prompt(messages=[Message(role="user", content=content)], assistant_prefix=self.assistant_prefix)

    def read_probability(self, top: Sequence[Any]) -> float:
        yes = no = 0.0
        for t in top:
            tok = t.token.strip().lower()
            if not tok:
                continue
            p = math.exp(t.logprob)
            if any(tok == y or (len(tok) >= 2 and y.startswith(tok)) for y in self.yes):
                yes += p
            elif any(tok == n or (len(tok) >= 2 and n.startswith(tok)) for n in self.no):
                no += p
        return 0.5 if yes + no <= 0 else yes / (yes + no)

    async def _judge(self, ctx: RunContext, prompt: Prompt, previous: Sequence[str], step: str, sep: str) -> float:
        k = min(self.top_logprobs, ctx.capabilities.max_top_logprobs)
        params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=k)
        gens = await ctx.generate(self.judge_prompt(prompt, previous, step, sep), params, kind="verify")
        lps = gens[0].logprobs if gens else None
        if not lps:
            return 0.5
        top = lps[0].top or [lps[0]]
        return self.read_probability(top)

    async def step_scores(
        self, ctx: RunContext, prompt: Prompt, batch: Sequence[Sequence[str]], separator: str
    ) -> list[list[float]]:
        todo: dict[tuple[str, ...], tuple[list[str], str]] = {}
        for steps in batch:
            for j in range(len(steps)):
                key = (prompt.question, separator, *steps[: j + 1])
                if self.cache.get(key) is None and key not in todo:
                    todo[key] = (list(steps[:j]), steps[j])
        keys = list(todo)
        vals = await asyncio.gather(*(self._judge(ctx, prompt, *todo[k], separator) for k in keys))
        fresh = dict(zip(keys, vals))
        for k, v in fresh.items():
            self.cache.put(k, v)
        out = []
        for steps in batch:
            row = []
            for j in range(len(steps)):
                key = (prompt.question, separator, *steps[: j + 1])
                v = fresh.get(key)
                c = self.cache.get(key)
                row.append(v if v is not None else (c if c is not None else 0.5))
            out.append(row)
        return out


# -- remote PRM (vLLM pooling / classify) ---------------------------------------------------
class RemotePRM(ProcessVerifier):
    """A process reward model served by vLLM (``vllm serve <prm> --task reward`` /
    ``--runner pooling``), e.g. Qwen2.5-Math-PRM-7B.

    The steps are joined as the PRM was trained: each step followed by
    ``step_token`` (Qwen2.5-Math-PRM: ``"<extra_0>"``), the whole in a chat template
    the server applies (``messages`` input) or as a plain string. ``endpoint``:

    - ``"pooling"``: POST ``{base}/pooling`` with ``{"model", "messages"|"input"}``;
      the response's ``data[0].data`` is one ``[p_neg, p_pos]`` row per token (vLLM's
      ``STEP`` pooler returns only the rows at the step tokens): the positive-class
      probability at each step token is the step score.
    - ``"classify"``: POST ``{base}/classify`` with ``{"model", "input"}`` once per
      prefix; ``data[0].probs[positive_index]`` is the latest step's score.

    Each request is charged to the run's meter (kind ``"verify"``, one call, the
    prompt tokens the server reports).
    """

    name = "remote_prm"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        aggregate: Aggregate = "last",
        endpoint: Literal["pooling", "classify"] = "pooling",
        step_token: str = "<extra_0>",
        positive_index: int = 1,
        system: str | None = "Please reason step by step, and put your final answer within \\boxed{}.",
        use_messages: bool = True,
        timeout: float = 60.0,
        api_key: str | None = None,
    ):
        super().__init__(aggregate)
        if endpoint not in ("pooling", "classify"):
            raise ValueError(f"endpoint: expected 'pooling' or 'classify', got {endpoint!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.endpoint = endpoint
        self.step_token = step_token
        self.positive_index = positive_index
        self.system = system
        self.use_messages = use_messages
        self.timeout = timeout
        self.api_key = api_key

    def payload(self, question: str, steps: Sequence[str]) -> dict[str, Any]:
        body = "".join(s + self.step_token for s in steps)
        if self.use_messages and self.endpoint == "pooling":
            msgs = ([{"role": "system", "content": self.system}] if self.system else []) + [
                {"role": "user", "content": question}, {"role": "assistant", "content": body},
            ]
            return {"model": self.model, "messages": msgs}
        return {"model": self.model, "input": f"{question}\n{body}"}

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            f"{self.base_url}/{path}", data=json.dumps(payload).encode(), method="POST",
            headers={"Content-Type": "application/json",
                     **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})},
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as r:
            return json.loads(r.read())

    async def _request(self, ctx: RunContext, payload: dict[str, Any]) -> dict[str, Any]:
        t0 = time.monotonic()
        res = ctx.meter.reserve(Usage(calls=1), "verify")
        try:
            out = await asyncio.to_thread(self._post, self.endpoint, payload)
            pt = int((out.get("usage") or {}).get("prompt_tokens", 0))
            res.bill(Usage(prompt_tokens=pt, calls=1, wall_seconds=time.monotonic() - t0))
        finally:
            res.close()
        return out

    def _positive(self, row: Any) -> float:
        if isinstance(row, (int, float)):
            return float(row)
        if isinstance(row, list) and row and isinstance(row[0], list):  # nested: last token's row
            row = row[-1]
        if not isinstance(row, list) or len(row) <= self.positive_index:
            raise ValueError(f"remote PRM: unexpected score row {row!r}")
        vals = [float(v) for v in row]
        if any(v < 0 for v in vals) or abs(sum(vals) - 1) > 1e-3:  # logits: softmax them
            m = max(vals)
            ex = [math.exp(v - m) for v in vals]
            vals = [e / sum(ex) for e in ex]
        return vals[self.positive_index]

    async def _score_one(self, ctx: RunContext, question: str, steps: Sequence[str]) -> list[float]:
        if not steps:
            return []
        if self.endpoint == "pooling":
            out = await self._request(ctx, self.payload(question, steps))
            rows = out["data"][0]["data"]
            if rows and not isinstance(rows[0], list):
                rows = [rows]
            scores = [self._positive(r) for r in rows]
            if len(scores) != len(steps):
                # A pooler that returns every token's row: keep the last len(steps) step rows.
                scores = scores[-len(steps):] if len(scores) > len(steps) else scores + [0.5] * (
                    len(steps) - len(scores))
            return scores
        outs = await asyncio.gather(
            *(self._request(ctx, self.payload(question, steps[: j + 1])) for j in range(len(steps)))
        )
        return [float(o["data"][0]["probs"][self.positive_index]) for o in outs]

    async def step_scores(
        self, ctx: RunContext, prompt: Prompt, batch: Sequence[Sequence[str]], separator: str
    ) -> list[list[float]]:
        return list(await asyncio.gather(*(self._score_one(ctx, prompt.question, s) for s in batch)))


# -- a process verifier used as an outcome verifier ------------------------------------------
class ProcessAsOutcome(OutcomeVerifier):
    """Scores complete samples with a process verifier: the text is cut into steps by
    ``separator`` and the aggregate is the sample's score (weighted best-of-N with the
    same verifier as the step-wise searches)."""

    name = "process_as_outcome"

    def __init__(self, verifier: ProcessVerifier, separator: str = "\n\n"):
        self.verifier = verifier
        self.separator = separator

    def _split(self, text: str) -> list[str]:
        steps = [p for p in text.split(self.separator) if p.strip()]
        return steps or [text]

    async def score(self, ctx: RunContext, prompt: Prompt, samples: Sequence[Sample]) -> list[float]:
        res = await self.verifier.score(ctx, prompt, [self._split(s.text) for s in samples], self.separator)
        return [r.aggregate for r in res]
