"""Engine outputs in ttc's types: finish reasons, stop reasons and token logprobs, read
once for every engine.

They arrive in three shapes: vLLM's in-process outputs (per position a dict of token id
to ``Logprob``, with the sampled token added when it is outside the top-k), the chat
API's ``logprobs.content`` list, and the completions API's parallel ``tokens`` /
``token_logprobs`` / ``top_logprobs``. Each reader (:func:`vllm_logprobs`,
:func:`chat_logprobs`, :func:`completion_logprobs`) takes its shape apart and
:func:`token_logprob` builds every :class:`~ttc.types.TokenLogprob` the same way: the
alternatives highest first (ties in the order the source ranks them), at most ``k``.

A malformed entry raises ``TypeError``/``ValueError``/``KeyError``/``AttributeError``
(a server's reply is read by the OpenAI engine, which treats that as a malformed reply).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from ttc.tool_calls import parse_tool_calls
from ttc.types import FinishReason, StreamDelta, TokenLogprob, TopLogprob

__all__ = [
    "chat_logprobs",
    "completion_logprobs",
    "finish_reason",
    "stop_reason",
    "token_logprob",
    "vllm_logprobs",
    "with_tool_calls",
]

_FINISH_REASONS: frozenset[str] = frozenset({"stop", "length", "abort", "error"})


def finish_reason(raw: Any, *, missing: FinishReason, unknown: FinishReason) -> FinishReason:
    """An engine's finish reason as ttc's: a known one as is, ``missing`` when there is none
    (vLLM: not finished, so aborted; an OpenAI server that says nothing: stopped), else
    ``unknown``."""
    if raw is None or raw == "":
        return missing
    return raw if raw in _FINISH_REASONS else unknown  # type: ignore[return-value]


def stop_reason(raw: Any) -> str:
    """What ended a ``finish_reason="stop"`` output, as vLLM reports it: the matched stop
    string, else (a stop token id, or nothing for the end-of-sequence token) ``"eos"``."""
    return raw if isinstance(raw, str) else "eos"


def token_logprob(
    token: str,
    logprob: float,
    alternatives: Iterable[tuple[str, float, int | None]],
    *,
    token_id: int | None = None,
    k: int | None = None,
) -> TokenLogprob:
    """One sampled token with its top alternatives ``(text, logprob, token id or None)``,
    highest first (a stable sort: ties keep the given order), the first ``k`` if given."""
    top = sorted(alternatives, key=lambda a: -a[1])
    if k is not None:
        top = top[:k]
    return TokenLogprob(
        token=token,
        logprob=logprob,
        token_id=token_id,
        top=[TopLogprob(token=t, logprob=lp, token_id=i) for t, lp, i in top],
    )


def vllm_logprobs(
    token_ids: Sequence[int], positions: Sequence[Any], k: int, token_text: Callable[[int], str]
) -> list[TokenLogprob]:
    """vLLM's per-position ``{token id: Logprob}`` for the sampled ``token_ids``; a token's
    text is vLLM's decoded one, else ``token_text(id)``. vLLM adds the sampled token when it
    is outside the top-``k``: it is then left out of the alternatives."""

    def text(tid: int, lp: Any) -> str:
        return lp.decoded_token if lp.decoded_token is not None else token_text(tid)

    out = []
    for tid, pos in zip(token_ids, positions):
        sampled = pos[tid]
        entries = list(pos.items())
        if len(entries) > k:
            entries = [(i, lp) for i, lp in entries if i != tid]
        entries.sort(key=lambda e: e[1].rank or 0)  # vLLM's rank breaks ties of equal logprobs
        out.append(token_logprob(text(tid, sampled), sampled.logprob,
                                 [(text(i, lp), lp.logprob, i) for i, lp in entries], token_id=tid, k=k))
    return out


def chat_logprobs(lp: Any) -> list[TokenLogprob] | None:
    """The chat API's ``choice.logprobs`` (``{"content": [{"token", "logprob",
    "top_logprobs": [...]}]}``); None when the choice has none."""
    if not lp or lp.get("content") is None:
        return None
    return [
        token_logprob(t["token"], float(t["logprob"]),
                      [(a["token"], float(a["logprob"]), None) for a in (t.get("top_logprobs") or [])])
        for t in lp["content"]
    ]


def completion_logprobs(lp: Any) -> list[TokenLogprob] | None:
    """The completions API's ``choice.logprobs`` (``tokens``, ``token_logprobs``, and
    ``top_logprobs`` as one ``{text: logprob}`` per token); None when the choice has none."""
    if not lp or lp.get("tokens") is None:
        return None
    toks = lp["tokens"]
    tops = lp.get("top_logprobs") or [None] * len(toks)
    return [
        token_logprob(tok, float(p if p is not None else 0.0), [(a, float(v), None) for a, v in (top or {}).items()])
        for tok, p, top in zip(toks, lp.get("token_logprobs") or [], tops)
    ]


async def with_tool_calls(deltas: AsyncIterator[StreamDelta]) -> AsyncIterator[StreamDelta]:
    """``deltas`` as they come, the last one (with a finish reason) carrying the tool calls
    read from the whole streamed text (:func:`ttc.tool_calls.parse_tool_calls`). Closing
    this iterator closes ``deltas``."""
    text: list[str] = []
    try:
        async for d in deltas:
            text.append(d.text)
            if d.finish_reason is not None and d.tool_calls is None:
                d = d.model_copy(update={"tool_calls": parse_tool_calls("".join(text))})
            yield d
    finally:
        await deltas.aclose()  # type: ignore[attr-defined]
