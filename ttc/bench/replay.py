"""Replay a recorded sample pool through the engine protocol.

:class:`ReplayEngine` serves the samples of a :class:`ttc.bench.pool.Pool` (text, token
count, finish reason, logprobs) as if they were being generated, so every parallel
strategy and stopping rule runs unchanged on a pool that was paid for once.

- **Which question.** A request is matched to its question by the prompt's last user
  message (:attr:`ttc.types.Prompt.question`), or by ``key=`` (a function of the
  prompt). Questions of the pool with the same key share one stream of samples. An
  engine made with :meth:`ReplayEngine.for_question` serves one question whatever the
  prompt says.
- **Without replacement.** Each question's samples are served in a random order
  (seeded per question from ``seed``), or in recorded order with ``shuffle=False`` (so
  that a strategy sees the same samples as a method that reads the first N of each
  question); a sample is never served twice until :meth:`reset`. When a question runs
  out, :class:`PoolExhausted` names it, how many
  samples it had and how many were asked for.
- **Billing** is what the recording cost: the recorded prompt tokens once per call
  (``native_n``) and each served sample's recorded completion tokens; a stream
  closed early bills the tokens it handed out (the rest of that sample is
  consumed, as a real aborted request would be).
- **Parameters.** Sampling parameters (temperature, top-p) are *not* re-applied: the
  pool is a draw from the recording's distribution (see the pool header). ``max_tokens``
  and ``stop`` are honoured by cutting the recorded tokens (a cut sample ends with
  ``finish_reason="length"`` / ``"stop"``). Logprobs come back with at most the
  recorded top-k (``capabilities.max_top_logprobs``), or not at all if not asked for.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import AsyncIterator, Callable, Mapping, Sequence

import numpy as np

from ttc.checks import check_int, check_number
from ttc.engine import Billing, Capabilities, Engine, EngineError
from ttc.types import Generation, GenerationResult, Prompt, SamplingParams, StreamDelta, TokenLogprob, Usage

from .pool import Pool, PoolQuestion


class PoolExhausted(EngineError):
    """A question's recorded samples have all been served."""


class _Stream:
    """The samples of one key and the position of the next one to serve."""

    def __init__(self, key: str, samples: list[Generation], prompt_tokens: int, shuffle: bool = True):
        self.key = key
        self.samples = samples
        self.prompt_tokens = prompt_tokens
        self.shuffle = shuffle
        self.order: np.ndarray | None = None
        self.next = 0

    def draw(self, n: int, seed: int) -> list[Generation]:
        if self.order is None and not self.shuffle:
            self.order = np.arange(len(self.samples))
        elif self.order is None:
            h = hashlib.sha256(f"{seed}:{self.key}".encode()).digest()
            self.order = np.random.default_rng(int.from_bytes(h[:8], "little")).permutation(len(self.samples))
        left = len(self.samples) - self.next
        if n > left:
            raise PoolExhausted(
                f"replay: the pool for question {self.key[:80]!r} is exhausted: it has {len(self.samples)} "
                f"samples, {self.next} already served, {n} more asked for; record a larger pool (--k) or "
                f"lower the budget", retryable=False,
            )
        out = [self.samples[i] for i in self.order[self.next : self.next + n].tolist()]
        self.next += n
        return out


def _cut(g: Generation, params: SamplingParams) -> Generation:
    """Apply ``max_tokens`` and ``stop`` to a recorded generation."""
    lps = g.logprobs
    if g.num_tokens <= params.max_tokens and not params.stop:
        return g
    if lps is None or len(lps) != g.num_tokens:
        if g.num_tokens > params.max_tokens:
            raise ValueError(
                f"params.max_tokens: {params.max_tokens} is below a recorded sample's {g.num_tokens} tokens "
                f"and "
                f"the pool has no per-token data to cut it; replay with max_tokens >= the recording's"
            )
        if params.stop:
            cuts = [g.text.find(s) for s in params.stop if s in g.text]
            if cuts:
                return g.model_copy(update={"text": g.text[: min(cuts)], "finish_reason": "stop"})
        return g
    text = ""
    for i, t in enumerate(lps):
        if i >= params.max_tokens:
            return Generation(text=text, num_tokens=i, finish_reason="length", logprobs=list(lps[:i]))
        nxt = text + t.token
        hits = [nxt.find(s) for s in params.stop if s in nxt]
        if hits:
            return Generation(text=nxt[: min(hits)], num_tokens=i + 1, finish_reason="stop",
                              logprobs=list(lps[: i + 1]))
        text = nxt
    return g


def _strip_logprobs(g: Generation, k: int | None) -> Generation:
    if g.logprobs is None:
        return g
    if k is None:
        return g.model_copy(update={"logprobs": None})
    return g.model_copy(
        update={"logprobs": [t.model_copy(update={"top": t.top[:k]})
                             for t in g.logprobs]}
    )


class ReplayEngine(Engine):
    """Serves recorded samples without replacement per question (see the module doc).

    ``pool``: a :class:`~ttc.bench.pool.Pool`, a path to one, or a mapping from key (question
    text) to a list of :class:`~ttc.types.Generation`. ``shuffle=False``: serve each
    question's samples in recorded order (``seed`` then plays no part).
    """

    name = "replay"

    def __init__(
        self,
        pool: Pool | str | Mapping[str, Sequence[Generation]],
        *,
        seed: int = 0,
        key: Callable[[Prompt], str] | None = None,
        prompt_tokens: int | Mapping[str, int] | None = None,
        delay: float = 0.0,
        shuffle: bool = True,
    ):
        if isinstance(pool, (str, os.PathLike)):
            pool = Pool.load(pool)
        elif not isinstance(pool, (Pool, Mapping)):
            raise TypeError(f"pool: expected a Pool, a path or a mapping of question -> generations, "
                            f"got {type(pool).__name__}")
        check_int("seed", seed)
        check_number("delay", delay, lo=0, hi=3600)
        if not isinstance(shuffle, bool):
            raise TypeError(f"shuffle: expected True or False, got {type(shuffle).__name__}")
        if key is not None and not callable(key):
            raise TypeError(f"key: expected a function of the prompt, got {type(key).__name__}")
        if prompt_tokens is not None and not isinstance(prompt_tokens, Mapping):
            check_int("prompt_tokens", prompt_tokens, lo=0)
        if isinstance(pool, Mapping):
            for k, gens in pool.items():
                if not isinstance(k, str) or isinstance(gens, (str, bytes)) or not isinstance(gens, Sequence) \
                        or not all(isinstance(g, Generation) for g in gens):
                    raise TypeError(f"pool: expected question text -> list of Generation, got {k!r:.60} -> "
                                    f"{type(gens).__name__}")
        self.key_of = key or (lambda p: p.question)
        self.seed = seed
        self.delay = delay
        self.shuffle = shuffle
        self._fixed: str | None = None
        entries: dict[str, tuple[list[Generation], int]] = {}
        if isinstance(pool, Pool):
            for q in pool.questions:
                gens, pt = entries.get(q.key, ([], q.prompt_tokens))
                entries[q.key] = (gens + list(q.samples), pt)
            top_k = pool.header.get("logprobs")
        else:
            for k, gens in pool.items():
                pt = prompt_tokens.get(k, 0) if isinstance(prompt_tokens, Mapping) else (prompt_tokens or 0)
                entries[k] = (list(gens), pt)
            top_k = None
        if not entries:
            raise ValueError("pool: no questions to replay")
        self._entries = entries
        self._streams: dict[str, _Stream] = {}
        if top_k is None:
            tops = [len(t.top) for gens, _ in entries.values() for g in gens[:1]
                    for t in (g.logprobs or [])[:1]]
            top_k = max(tops, default=0)
        has_lp = any(g.logprobs is not None for gens, _ in entries.values() for g in gens)
        self.capabilities = Capabilities(
            logprobs=has_lp, max_top_logprobs=int(top_k or 0), prefill=False, native_n=True,
            prefix_caching=False, streaming=True, options=frozenset(),
        )
        self.calls = 0
        self.served = 0

    @classmethod
    def for_question(cls, q: PoolQuestion, *, seed: int = 0, top_k: int | None = None, delay: float = 0.0
                     ) -> "ReplayEngine":
        """An engine serving only ``q``'s samples, whatever prompt it is sent."""
        eng = cls({q.key: q.samples}, seed=seed, prompt_tokens=q.prompt_tokens, delay=delay)
        eng._fixed = q.key
        if top_k is not None:
            eng.capabilities = eng.capabilities.model_copy(update={"max_top_logprobs": top_k})
        return eng

    # -- state --------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """Forget what was served; draw orders restart (from ``seed`` if given)."""
        if seed is not None:
            self.seed = seed
        self._streams.clear()
        self.calls = 0
        self.served = 0

    def remaining(self, prompt: Prompt | str) -> int:
        s = self._queue(Prompt.of(prompt))
        return len(s.samples) - s.next

    def _queue(self, prompt: Prompt) -> _Stream:
        key = self._fixed if self._fixed is not None else self.key_of(prompt)
        s = self._streams.get(key)
        if s is None:
            if key not in self._entries:
                raise ValueError(
                    f"prompt: no recorded samples for question {key[:80]!r} "
                    f"({len(self._entries)} questions in "
                    f"the pool; replay sends the pool's own prompts)"
                )
            gens, pt = self._entries[key]
            s = self._streams[key] = _Stream(key, gens, pt, self.shuffle)
        return s

    # -- protocol ---------------------------------------------------------------------------
    async def count_prompt_tokens(self, prompt: Prompt) -> int:
        if self._fixed is not None or self.key_of(prompt) in self._entries:
            return self._queue(prompt).prompt_tokens
        return 0

    def _take(self, prompt: Prompt, params: SamplingParams, n: int, strip: bool = True
              ) -> tuple[list[Generation], int]:
        s = self._queue(prompt)
        gens = [_cut(g, params) for g in s.draw(n, self.seed)]
        if strip:
            gens = [_strip_logprobs(g, params.logprobs) for g in gens]
        self.calls += 1
        self.served += n
        return gens, s.prompt_tokens

    async def _generate(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> GenerationResult:
        gens, pt = self._take(prompt, params, params.n)
        usage = Usage(prompt_tokens=pt, completion_tokens=sum(g.num_tokens for g in gens), calls=1,
                      generations=len(gens))
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            billing.bill(Usage(prompt_tokens=pt, calls=1))
            raise
        billing.bill(usage)
        return GenerationResult(generations=gens, usage=usage)

    async def _stream(self, prompt: Prompt, params: SamplingParams, billing: Billing
                          ) -> AsyncIterator[StreamDelta]:
        (g,), pt = self._take(prompt, params, 1, strip=False)
        k = params.logprobs
        sent = 0
        try:
            if g.logprobs is not None and len(g.logprobs) == g.num_tokens and g.num_tokens:
                lps: list[TokenLogprob] | None = g.logprobs
                pieces = [t.token for t in g.logprobs]
                # tokens may not re-join to the text exactly (stop cut): the last piece carries the rest
                joined = "".join(pieces[:-1])
                pieces[-1] = g.text[len(joined):] if g.text.startswith(joined) else pieces[-1]
            else:
                lps, pieces = None, [g.text] if g.text else []
            for j, piece in enumerate(pieces):
                if self.delay:
                    await asyncio.sleep(self.delay)
                last = j == len(pieces) - 1
                nt = 1 if lps is not None else g.num_tokens
                sent += nt
                lp = None
                if lps is not None and k is not None:
                    lp = [lps[j].model_copy(update={"top": lps[j].top[:k]})]
                yield StreamDelta(text=piece, num_tokens=nt, logprobs=lp,
                                  finish_reason=g.finish_reason if last else None)
            if not pieces:
                yield StreamDelta(finish_reason=g.finish_reason)
        finally:
            billing.bill(Usage(prompt_tokens=pt, completion_tokens=sent, calls=1, generations=1))

    def __repr__(self) -> str:
        return f"ReplayEngine(questions={len(self._entries)}, seed={self.seed})"
