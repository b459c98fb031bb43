"""vLLM's request outputs in ttc's types, for the engine's plain requests and the
resumable sessions alike.

A request streams DELTA outputs (``RequestOutputKind.DELTA``): each carries, per output
index, the new text, token ids and logprobs. :func:`absorb` adds one to the per-index
accumulators (:class:`OutputAcc`); :func:`generation`, :func:`usage` and
:func:`stream_delta` turn accumulated outputs into a :class:`~ttc.types.Generation`, the
:class:`~ttc.types.Usage` to bill and a :class:`~ttc.types.StreamDelta`. Finish reasons,
stop reasons and logprobs go through the conversions every engine shares
(:mod:`engines.outputs`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ttc.types import Generation, SamplingParams, StreamDelta, TokenLogprob, Usage

from .outputs import finish_reason, stop_reason, vllm_logprobs

__all__ = ["News", "OutputAcc", "absorb", "generation", "stop_heads", "stream_delta", "usage"]

#: What one output brought: (index, new text, new tokens, their logprobs).
News = tuple[int, str, int, list[TokenLogprob]]


class OutputAcc:
    """Accumulates the deltas of one output index of a request."""

    __slots__ = ("finish", "logprobs", "stop_reason", "text", "token_ids")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.token_ids: list[int] = []
        self.logprobs: list[TokenLogprob] = []
        self.finish: str | None = None
        self.stop_reason: str | None = None


def stop_heads(stops: Sequence[str]) -> tuple[str, ...]:
    """The heads (non-empty proper prefixes) of stop strings: text ending with one may be
    completed into a stop string by the next token."""
    return tuple({st[:k] for st in stops for k in range(1, len(st))})


def absorb(
    accs: dict[int, OutputAcc], out: Any, params: SamplingParams, token_text: Callable[[int], str]
) -> list[News]:
    """Add one DELTA ``RequestOutput`` to ``accs``; what each of its outputs brought."""
    news = []
    for c in out.outputs:
        acc = accs.setdefault(c.index, OutputAcc())
        tids = list(c.token_ids)
        lps = (
            vllm_logprobs(tids, c.logprobs, params.logprobs, token_text)
            if params.logprobs is not None and c.logprobs
            else []
        )
        acc.text.append(c.text)
        acc.token_ids.extend(tids)
        acc.logprobs.extend(lps)
        if c.finish_reason is not None:
            acc.finish = c.finish_reason
            if c.finish_reason == "stop":
                acc.stop_reason = stop_reason(c.stop_reason)
        news.append((c.index, c.text, len(tids), lps))
    return news


def usage(prompt_tokens: int, cached: int, accs: dict[int, OutputAcc], n: int, t0: float) -> Usage:
    """What a request of ``n`` outputs used so far (``t0``: when it started)."""
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=sum(len(a.token_ids) for a in accs.values()),
        cached_prompt_tokens=cached,
        calls=1,
        generations=n,
        wall_seconds=time.monotonic() - t0,
    )


def generation(
    a: OutputAcc,
    params: SamplingParams,
    decode: Callable[[list[int]], str],
    text: str | None = None,
    stop_text: str | None = None,
) -> Generation:
    """The Generation of one accumulated output (``text`` overrides its joined text;
    ``stop_text``, else what the tokens ``decode`` to past a stop string vLLM cut the text at)."""
    text = "".join(a.text) if text is None else text
    if stop_text is None and a.stop_reason not in (None, "eos") and a.token_ids:
        full = decode(a.token_ids)
        stop_text = full[len(text):] if full.startswith(text) else None
    return Generation(
        text=text,
        num_tokens=len(a.token_ids),
        finish_reason=finish_reason(a.finish, missing="abort", unknown="error"),
        logprobs=a.logprobs if params.logprobs is not None else None,
        token_ids=a.token_ids,
        stop_reason=a.stop_reason,
        stop_text=stop_text,
    )


def stream_delta(news: list[News], acc: OutputAcc | None, final: Usage | None, params: SamplingParams
                 ) -> StreamDelta | None:
    """The piece of a stream (``n=1``) one output brought; ``final`` once the request
    finished. None when it brought nothing."""
    finish = finish_reason(acc.finish, missing="abort", unknown="error") if final is not None and acc else None
    text = "".join(t for _, t, _, _ in news)
    ntok = sum(k for _, _, k, _ in news)
    if not (ntok or text or final is not None):
        return None
    lps = [lp for _, _, _, group in news for lp in group] if params.logprobs is not None else None
    return StreamDelta(text=text, num_tokens=ntok, logprobs=lps, finish_reason=finish, usage=final)
