"""A deterministic scripted engine for unit tests of strategy logic.

It does no language modelling: a ``script`` function maps (prompt, sample index,
seeded RNG) to a text, or a list of texts is served round-robin. Token counts are
whitespace tokens; logprobs are synthesised deterministically (optionally from a
``confidence`` function), so strategies that read logprobs can be unit-tested. It
honours the protocol fully: billing, ``n``, stop strings, ``max_tokens``,
continuation of ``assistant_prefix``, streaming with cancellation, and an optional
per-call ``delay`` so concurrency and cancellation are real. Tool calls are scripted as
text: for a prompt with ``tools`` a scripted ``<tool_call>{"name": ..., "arguments":
...}</tool_call>`` (or a bare JSON call) becomes the generation's ``tool_calls``, read as
the real engines read them (:func:`ttc.tool_calls.parse_tool_calls`).

Never the only proof a feature works: integration tests run the real model.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from typing import AsyncIterator, Callable, Sequence

import numpy as np

from ttc.budget import call_usage
from ttc.engine import Billing, Capabilities, Engine
from ttc.testing.tokens import whitespace_tokens
from ttc.tool_calls import tool_calls_for
from ttc.types import (
    Generation,
    GenerationResult,
    Prompt,
    SamplingParams,
    StreamDelta,
    TokenLogprob,
    TopLogprob,
    Usage,
)

Script = Callable[[Prompt, int, np.random.Generator], str]


#: Whitespace-preserving tokens, the same as the fault-injecting server's (:mod:`ttc.testing.tokens`).
_tokens = whitespace_tokens


class ScriptedEngine(Engine):
    """The deterministic engine of the module doc. Counters: ``calls``, ``samples_served``,
    ``in_flight``, ``max_in_flight`` and ``aborted`` calls (also in :meth:`stats`), and the
    ``prompts`` it was sent."""

    name = "scripted"

    def __init__(
        self,
        script: Script | Sequence[str],
        *,
        delay: float = 0.0,
        token_delay: float = 0.0,
        seed: int = 0,
        confidence: Callable[[str, int], float] | None = None,
        native_n: bool = True,
        options: Sequence[str] = ("chat_template_kwargs", "reasoning_effort"),
    ):
        if isinstance(script, (list, tuple)):
            texts = list(script)
            if not texts:
                raise ValueError("script: empty list of texts")
            self._script: Script = lambda p, i, rng: texts[i % len(texts)]
        else:
            self._script = script  # type: ignore[assignment]
        self.delay = delay
        self.token_delay = token_delay
        self.seed = seed
        self.confidence = confidence
        self.calls = 0
        self.samples_served = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.aborted = 0
        self.prompts: list[Prompt] = []
        self.capabilities = Capabilities(
            logprobs=True, max_top_logprobs=20, prefill=True, native_n=native_n,
            prefix_caching=False, streaming=True, options=frozenset(options), tools=True,
        )

    async def count_prompt_tokens(self, prompt: Prompt) -> int:
        body = prompt.text if prompt.text is not None else " ".join(m.content for m in prompt.messages or [])
        return len(_tokens(body)) + len(_tokens(prompt.assistant_prefix)) + 4

    def stats(self) -> dict[str, int | str]:
        return {"calls": self.calls, "samples_served": self.samples_served, "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight, "aborted": self.aborted}

    def _text(self, prompt: Prompt, params: SamplingParams) -> str:
        i = self.samples_served
        self.samples_served += 1
        key = f"{self.seed}:{i}:{params.seed}".encode()
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
        return self._script(prompt, i, rng)

    def _cut(self, text: str, params: SamplingParams) -> tuple[list[str], str]:
        return self._cut_reason(text, params)[:2]  # type: ignore[return-value]

    def _cut_reason(self, text: str, params: SamplingParams) -> tuple[list[str], str, str | None]:
        """Tokens, finish reason, and stop reason (the matched stop string, or "eos")."""
        finish = "stop"
        reason: str | None = "eos"
        for s in params.stop:
            k = text.find(s)
            if k >= 0:
                text, reason = text[:k], s
        toks = _tokens(text)
        if len(toks) > params.max_tokens:
            toks, finish, reason = toks[: params.max_tokens], "length", None
        return toks, finish, reason

    def _logprobs(self, toks: list[str], params: SamplingParams, sample: int) -> list[TokenLogprob] | None:
        if params.logprobs is None:
            return None
        out = []
        for j, t in enumerate(toks):
            p = self.confidence(t, j) if self.confidence else 0.9
            p = min(max(p, 1e-6), 1 - 1e-6)
            lp = math.log(p)
            k = max(params.logprobs, 1)
            rest = (1 - p) / max(k - 1, 1)
            top = [TopLogprob(token=t, logprob=lp)] + [
                TopLogprob(token=f"<alt{m}>", logprob=math.log(max(rest, 1e-9))) for m in range(1, k)
            ]
            out.append(TokenLogprob(token=t, logprob=lp, top=top[: params.logprobs]))
        return out

    async def _generate(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> GenerationResult:
        self.calls += 1
        self.prompts.append(prompt)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        prompt_tokens = await self.count_prompt_tokens(prompt)
        try:
            gens = []
            for _ in range(params.n):
                toks, finish, reason = self._cut_reason(self._text(prompt, params), params)
                gens.append(
                    Generation(
                        text="".join(toks), num_tokens=len(toks), finish_reason=finish,  # type: ignore[arg-type]
                        logprobs=self._logprobs(toks, params, len(gens)), stop_reason=reason,
                        tool_calls=tool_calls_for(prompt, "".join(toks)),
                    )
                )
            wait = self.delay + self.token_delay * max((g.num_tokens for g in gens), default=0)
            if wait:
                await asyncio.sleep(wait)
        except asyncio.CancelledError:
            self.aborted += 1
            billing.bill(Usage(prompt_tokens=prompt_tokens, calls=1))
            raise
        finally:
            self.in_flight -= 1
        usage = call_usage(prompt_tokens, sum(g.num_tokens for g in gens), len(gens),
                           native_n=self.capabilities.native_n)
        billing.bill(usage)
        return GenerationResult(generations=gens, usage=usage)

    async def _stream(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> AsyncIterator[StreamDelta]:
        self.calls += 1
        self.prompts.append(prompt)
        prompt_tokens = await self.count_prompt_tokens(prompt)
        toks, finish = self._cut(self._text(prompt, params), params)
        lps = self._logprobs(toks, params, 0)
        sent = 0
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            for j, t in enumerate(toks):
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                sent += 1
                last = j == len(toks) - 1
                yield StreamDelta(
                    text=t, num_tokens=1, logprobs=[lps[j]] if lps else None,
                    finish_reason=finish if last else None,  # type: ignore[arg-type]
                    tool_calls=tool_calls_for(prompt, "".join(toks)) if last else None,
                )
            if not toks:
                yield StreamDelta(finish_reason=finish)  # type: ignore[arg-type]
        finally:
            self.in_flight -= 1
            if sent < len(toks):
                self.aborted += 1
            billing.bill(Usage(prompt_tokens=prompt_tokens, completion_tokens=sent, calls=1, generations=1))
