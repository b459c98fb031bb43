"""Outcome reward models (ORMs) behind the :class:`OutcomeVerifier` interface.

- :class:`RemoteRewardModel`: a reward / classification model served by vLLM
  (``vllm serve RM --runner pooling``), called over HTTP with httpx at its
  ``/classify`` endpoint (response ``data[i].probs``: the class probabilities) or
  its ``/pooling`` endpoint (response ``data[i].data``: the pooled output; a reward
  model returns its reward, a per-token output is reduced to its last value).
- :class:`LocalRewardModel`: a ``transformers`` sequence-classification model
  (``AutoModelForSequenceClassification``) run in-process, off the event loop.

Both read "question + answer" through ``template``. Score: the probability of
``positive_index`` (softmax over >= 2 classes, sigmoid of a single logit), or the
raw value with ``raw=True``.

Budget: these models are not engines, so a call reserves one *call* on the run's
meter before it is sent (refused with BudgetExhausted if none is left) and then
charges the prompt tokens the server (or tokenizer) reports, under kind ``"verify"``.
The prompt tokens of one call are not known in advance, so a token limit can be
overshot by one call's inputs; the meter records the overshoot.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any, Literal

import httpx

from ttc.checks import check_bool, check_instance, check_int, check_number
from ttc.context import RunContext
from ttc.engine import EngineError
from ttc.types import Prompt, Sample, Usage

from .base import OutcomeVerifier

TEMPLATE = "Question: {question}\nAnswer: {answer}"


def _prob(values: Sequence[float], positive_index: int, already_probs: bool) -> float:
    vals = [float(v) for v in values]
    if len(vals) == 1:
        v = vals[0]
        return v if already_probs else 1.0 / (1.0 + math.exp(-v))
    if already_probs:
        return vals[positive_index]
    m = max(vals)
    ex = [math.exp(v - m) for v in vals]
    return ex[positive_index] / sum(ex)


def _flatten_last(x: Any) -> list[float]:
    """The last row of a (possibly nested) pooled output, as a list of floats."""
    while isinstance(x, list) and x and isinstance(x[0], list):
        x = x[-1]
    if isinstance(x, (int, float)):
        return [float(x)]
    return [float(v) for v in x]


class RemoteRewardModel(OutcomeVerifier):
    """A reward model on a vLLM server's ``/classify`` or ``/pooling`` endpoint.

    Args:
        base_url: the server root or its ``/v1`` URL (e.g. ``http://127.0.0.1:8000/v1``).
        model: the served model name.
        endpoint: ``"classify"`` or ``"pooling"``.
        positive_index: the class whose probability is the score (default: the last).
        raw: return the raw pooled value / class probability vector entry without a
            sigmoid or softmax (``pooling`` only; ``classify`` already returns probs).
    """

    name = "remote_reward_model"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        endpoint: Literal["classify", "pooling"] = "classify",
        template: str = TEMPLATE,
        positive_index: int = -1,
        raw: bool = False,
        timeout: float = 60.0,
        api_key: str | None = None,
        batch_size: int = 32,
    ):
        if endpoint not in ("classify", "pooling"):
            raise ValueError(f"endpoint: expected 'classify' or 'pooling', got {endpoint!r}")
        check_instance("base_url", base_url, str, optional=False)
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: expected an http(s) URL, got {base_url[:60]!r}")
        check_int("positive_index", positive_index)
        check_bool("raw", raw)
        check_number("timeout", timeout, lo=0, lo_open=True)
        check_int("batch_size", batch_size, lo=1)
        root = base_url.rstrip("/")
        self.url = root + ("" if root.endswith("/v1") else "/v1") + "/" + endpoint
        # vLLM also serves these without the /v1 prefix; /v1 is the documented one.
        self.model = model
        self.endpoint = endpoint
        self.template = template
        self.positive_index = positive_index
        self.raw = raw
        self.timeout = timeout
        self.batch_size = batch_size
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def _post(self, client: httpx.AsyncClient, ctx: RunContext, inputs: list[str]) -> list[float]:
        with ctx.meter.reserve(Usage(calls=1), "verify") as res:
            try:
                r = await client.post(self.url, json={"model": self.model, "input": inputs}, headers=self.headers)
            except httpx.HTTPError as e:
                raise EngineError(f"reward model: {self.url}: {e}", retryable=True) from e
            if r.status_code != 200:
                raise EngineError(f"reward model: {self.url} -> HTTP {r.status_code}: {r.text[:300]}",
                                  status=r.status_code)
            body = r.json()
            usage = body.get("usage") or {}
            res.bill(Usage(prompt_tokens=int(usage.get("prompt_tokens", 0)), calls=1))
        data = sorted(body["data"], key=lambda d: d.get("index", 0))
        if len(data) != len(inputs):
            raise EngineError(f"reward model: {len(data)} results for {len(inputs)} inputs")
        out = []
        for d in data:
            if self.endpoint == "classify":
                out.append(_prob(d["probs"], self.positive_index, already_probs=True))
            else:
                vals = _flatten_last(d["data"])
                out.append(vals[self.positive_index] if self.raw else _prob(vals, self.positive_index, False))
        return out

    async def score(self, ctx: RunContext, prompt: Prompt, samples: Sequence[Sample]) -> list[float]:
        texts = [self.template.format(question=prompt.question, answer=s.text) for s in samples]
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            chunks = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
            results = await asyncio.gather(*(self._post(client, ctx, c) for c in chunks), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return [x for r in results for x in r]  # type: ignore[union-attr]


class LocalRewardModel(OutcomeVerifier):
    """A ``transformers`` sequence-classification reward model run in-process.

    ``model`` is a path / hub name, or an already-built model (then pass ``tokenizer``).
    Forward passes run in a worker thread so the event loop keeps serving engines.
    """

    name = "local_reward_model"

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        template: str = TEMPLATE,
        positive_index: int = -1,
        raw: bool = False,
        batch_size: int = 8,
        max_length: int = 1024,
        device: str = "cpu",
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if isinstance(model, str):
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = AutoModelForSequenceClassification.from_pretrained(model)
        if tokenizer is None:
            raise ValueError("tokenizer: required when model is an object")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.template = template
        self.positive_index = positive_index
        self.raw = raw
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device

    def logits(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Raw logits per text and the number of input tokens (blocking)."""
        import torch

        out: list[list[float]] = []
        n_tokens = 0
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[i : i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                max_length=self.max_length,
            ).to(self.device)
            n_tokens += int(enc["attention_mask"].sum())
            with torch.no_grad():
                logits = self.model(**enc).logits.float()
            out.extend(logits.tolist())
        return out, n_tokens

    async def score(self, ctx: RunContext, prompt: Prompt, samples: Sequence[Sample]) -> list[float]:
        texts = [self.template.format(question=prompt.question, answer=s.text) for s in samples]
        if not texts:
            return []
        with ctx.meter.reserve(Usage(calls=1), "verify") as res:
            logits, n_tokens = await asyncio.to_thread(self.logits, texts)
            res.bill(Usage(prompt_tokens=n_tokens, calls=1))
        if self.raw:
            return [row[self.positive_index] for row in logits]
        return [_prob(row, self.positive_index, already_probs=False) for row in logits]
