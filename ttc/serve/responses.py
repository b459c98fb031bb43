"""ttc results in the OpenAI response shapes.

``usage`` is the metered total of everything the request's strategy did: every sample,
probe and verifier call, prompt and completion tokens (its meter's charge, the same
number the library reports as ``StrategyResult.usage``). The ``ttc`` member adds the
strategy's description, stop reason, samples drawn, confidence, usage by kind of work
and, with ``ttc.return_samples``, every sample with its answer, score and vote weight.

Choices: ``passthrough`` returns its ``n`` generations; a strategy returns its chosen
sample, or with ``n > 1`` the ``n`` best *distinct* answers (the chosen one first, then by
summed vote weight), each with its confidence (``ttc.confidence`` on the choice: the
strategy's own for the chosen answer, else the answer's share of the vote). Fewer distinct
answers than ``n`` give fewer choices. A strategy that drew samples but chose none (no
sample had an extractable answer) returns its first sample, with no confidence.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from ttc.types import Sample, StrategyResult, Usage

FINISH = {"stop": "stop", "length": "length", "abort": "length", "error": "stop"}


def usage_json(u: Usage) -> dict[str, Any]:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_prompt_tokens}}


def sample_json(s: Sample) -> dict[str, Any]:
    out = {"index": s.index, "text": s.text, "answer": s.answer, "score": s.score, "weight": s.weight,
           "num_tokens": s.num_tokens, "finish_reason": s.finish_reason}
    calls = tool_calls_of(s)
    if calls:
        out["tool_calls"] = calls
    return out


def ttc_json(model: str, result: StrategyResult, *, return_samples: bool,
             description: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": model, "strategy": result.strategy, "stop_reason": result.stop_reason,
        "samples": len(result.samples), "answer": result.answer, "confidence": result.confidence,
        "usage": {**usage_json(result.usage), "calls": result.usage.calls, "generations": result.usage.generations,
                  "wall_seconds": round(result.usage.wall_seconds, 4)},
        "usage_by_kind": {k: {**usage_json(u), "calls": u.calls} for k, u in result.usage_by_kind.items()},
    }
    if description is not None:
        out["description"] = description
    if result.budget_detail:
        out["budget_detail"] = result.budget_detail
    if result.error:
        out["error"] = result.error
    if result.overspent:
        out["overspent"] = dict(result.overspent)
    if return_samples:
        out["sample_list"] = [sample_json(s) for s in result.samples]
    return out


def tool_calls_of(s: Sample | None) -> list[dict[str, Any]]:
    """A sample's tool calls in the OpenAI shape (none where the core types have none)."""
    calls = getattr(s, "tool_calls", None) if s is not None else None
    return [{"id": c.id or f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": c.name, "arguments": c.arguments}} for c in calls or []]


def vote_key(s: Sample) -> Any:
    """What makes two samples one answer: the extracted answer (for tool calls, the vote key
    of :mod:`ttc.tool_calls`: names and canonical arguments), else the calls as given, else
    the text."""
    if s.answer is not None:
        return ("answer", s.answer)
    calls = tool_calls_of(s)
    if calls:
        return ("tool_calls", tuple((c["function"]["name"], c["function"]["arguments"]) for c in calls))
    return ("text", s.text.strip())


def ranked(result: StrategyResult, n: int, *, passthrough: bool) -> list[tuple[Sample, float | None]]:
    """The choices: (sample, confidence) pairs."""
    if passthrough:
        return [(s, None) for s in result.samples[:n]]
    if not result.samples:
        return [(result.chosen, result.confidence)] if result.chosen is not None else []
    if result.chosen is None:  # no sample had an answer to choose by: the first one, unranked
        return [(result.samples[0], None)]
    if n == 1:
        return [(result.chosen, result.confidence)]
    groups: dict[Any, list[Sample]] = {}
    for s in result.samples:
        groups.setdefault(vote_key(s), []).append(s)
    weight = {k: sum(s.weight if s.weight is not None else 1.0 for s in g) for k, g in groups.items()}
    total = sum(weight.values()) or 1.0
    first = vote_key(result.chosen) if result.chosen is not None else None
    order = sorted(groups, key=lambda k: (k != first, -weight[k]))
    out: list[tuple[Sample, float | None]] = []
    for k in order[:n]:
        if k == first and result.chosen is not None:
            out.append((result.chosen, result.confidence if result.confidence is not None else weight[k] / total))
            continue
        best = max(groups[k], key=lambda s: (s.score if s.score is not None else float("-inf"), -s.index))
        out.append((best, weight[k] / total))
    return out


def finish_of(s: Sample) -> str:
    return "tool_calls" if tool_calls_of(s) else FINISH.get(s.finish_reason, "stop")


class Shape:
    """The response and chunk shapes of one endpoint (``chat`` or ``completions``)."""

    def __init__(self, endpoint: str, model: str):
        self.chat = endpoint == "chat"
        self.model = model
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.object = "chat.completion" if self.chat else "text_completion"

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def choice(self, i: int, s: Sample, confidence: float | None) -> dict[str, Any]:
        extra = {"ttc": {"confidence": confidence, "answer": s.answer, "sample": s.index}}
        if not self.chat:
            return {"index": i, "text": s.text, "finish_reason": finish_of(s), "logprobs": None, **extra}
        calls = tool_calls_of(s)
        msg: dict[str, Any] = {"role": "assistant", "content": s.text if (s.text or not calls) else None}
        if calls:
            msg["tool_calls"] = calls
        return {"index": i, "message": msg, "finish_reason": finish_of(s), "logprobs": None, **extra}

    def full(self, choices: list[tuple[Sample, float | None]], usage: Usage, ttc: dict[str, Any]) -> dict[str, Any]:
        return {**self._head(self.object), "choices": [self.choice(i, s, c) for i, (s, c) in enumerate(choices)],
                "usage": usage_json(usage), "ttc": ttc}

    def chunk(self, index: int, *, text: str | None = None, role: bool = False, finish: str | None = None,
              tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        if not self.chat:
            return {**self._head("text_completion"),
                    "choices": [{"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}]}
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        if tool_calls:
            delta["tool_calls"] = [{"index": j, **c} for j, c in enumerate(tool_calls)]
        return {**self._head("chat.completion.chunk"),
                "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    def usage_chunk(self, usage: Usage, ttc: dict[str, Any] | None) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        out = {**self._head(obj), "choices": [], "usage": usage_json(usage)}
        if ttc is not None:
            out["ttc"] = ttc
        return out
