"""Pieces of a vLLM request's output that the engine and the resumable sessions share:
the per-index accumulator of streamed deltas and the stop-string heads.

Their own module so that :mod:`ttc.engines.vllm_sessions` uses them without importing
:mod:`ttc.engines.vllm_engine`, which imports the sessions (no import cycle).
"""

from __future__ import annotations

from collections.abc import Sequence

from ttc.types import TokenLogprob

__all__ = ["OutputAcc", "stop_heads"]


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
