"""Prompts to token ids for :class:`~engines.vllm_engine.VLLMEngine`, and the token side
of the tokenizer (a token's text, the tokens a stop string can end on).

Prompts are rendered with the shared chat-template code (:func:`engines.chat.render`) and
tokenized here with the model's Hugging Face tokenizer, so the ids sent to vLLM are known
before the request and ``count_prompt_tokens`` is exact.

**Token-exact continuation.** Step-wise search and early exit send the prompt plus what
the model just wrote as the next prompt. Re-tokenizing that text can split it differently
from the tokens the model generated, and every token after the first difference misses
vLLM's prefix cache. So :class:`PromptEncoder` remembers, for recent completions, the
rendered text and the exact token ids (prompt + output) that produced it
(:class:`ContinuationIndex`); a prompt whose rendered text starts with one is sent as those
ids plus the tokenized rest. The model then sees exactly its own tokens, and the whole
shared prefix hits the cache (all but the last partial KV block).

Tokenized prompts are memoised as tuples and every caller gets a list of its own: vLLM
extends the ``prompt_token_ids`` list of a resumable request in place.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from ttc.engine import EngineError
from ttc.types import Generation, Prompt, SamplingParams

from .chat import render
from .vllm_outputs import stop_heads

__all__ = ["ContinuationIndex", "PromptEncoder"]


class ContinuationIndex:
    """Rendered text -> the exact token ids that produced it, for recent completions.

    ``lookup(text)`` returns the longest recorded entry that ``text`` starts with: an
    exact hit by dictionary, else a scan of the ``scan`` most recent entries. Bounded
    (``capacity`` entries, least recently used dropped); thread-safe.
    """

    def __init__(self, capacity: int = 2048, scan: int = 256):
        self.capacity, self.scan = capacity, scan
        self._entries: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, text: str, ids: list[int]) -> None:
        with self._lock:
            self._entries[text] = tuple(ids)
            self._entries.move_to_end(text)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def lookup(self, text: str) -> tuple[str, tuple[int, ...]] | None:
        with self._lock:
            ids = self._entries.get(text)
            if ids is not None:
                self._entries.move_to_end(text)
                self.hits += 1
                return text, ids
            best: str | None = None
            for i, key in enumerate(reversed(self._entries)):
                if i >= self.scan:
                    break
                if len(key) < len(text) and (best is None or len(key) > len(best)) and text.startswith(key):
                    best = key
            if best is None:
                return None
            self._entries.move_to_end(best)
            self.hits += 1
            return best, self._entries[best]


class PromptEncoder:
    """The token ids of prompts for one model (memoised, token-exact continuations) and
    the text of its tokens. Thread-safe."""

    def __init__(self, tokenizer: Any, max_model_len: int, memo: int = 4096):
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.continuations = ContinuationIndex()
        self.special_ids = frozenset(tokenizer.all_special_ids)
        self._memo = memo
        self._encoded: OrderedDict[str, tuple[str, tuple[int, ...]]] = OrderedDict()
        self._lock = threading.Lock()
        self._vocab_text: list[str] | None = None
        self._stop_token_cache: dict[tuple[str, ...], tuple[int, ...]] = {}

    # -- prompts ---------------------------------------------------------------------------
    def encode(self, prompt: Prompt, template_kwargs: dict[str, Any] | None = None) -> tuple[str, list[int]]:
        """The rendered prompt and the token ids sent for it (a list of the caller's own)."""
        template_kwargs = template_kwargs or {}
        key = prompt.model_dump_json() + json.dumps(template_kwargs, sort_keys=True, default=str)
        with self._lock:
            hit = self._encoded.get(key)
            if hit is not None:
                self._encoded.move_to_end(key)
                return hit[0], list(hit[1])
        text, templated = render(self.tokenizer, prompt, template_kwargs)
        known = self.continuations.lookup(text) if prompt.assistant_prefix else None
        if known is not None:
            head, head_ids = known
            rest = text[len(head):]
            ids = list(head_ids) + (list(self.tokenizer(rest, add_special_tokens=False)["input_ids"]) if rest else [])
        else:
            ids = list(self.tokenizer(text, add_special_tokens=not templated)["input_ids"])
        with self._lock:
            self._encoded[key] = (text, tuple(ids))
            while len(self._encoded) > self._memo:
                self._encoded.popitem(last=False)
        return text, ids

    def prompt_ids(self, prompt: Prompt, params: SamplingParams) -> tuple[str, list[int]]:
        """The rendered prompt and the ids a request sends for it (with the call's
        ``chat_template_kwargs``); an :class:`EngineError` if it leaves no room to generate."""
        kw = params.extra.get("chat_template_kwargs") or {}
        if not isinstance(kw, dict):
            raise TypeError(f"params.extra['chat_template_kwargs']: expected a dict, got {type(kw).__name__}")
        text, ids = self.encode(prompt, kw)
        if len(ids) >= self.max_model_len:
            raise EngineError(
                f"prompt: {len(ids)} tokens do not fit max_model_len={self.max_model_len} "
                f"(at least one token must be left to generate)",
                retryable=False,
            )
        return text, ids

    def remember(self, text: str, ids: list[int], gens: list[Generation]) -> None:
        """Record prompt + output of each completion that a continuation may extend: cut at
        the length limit or at a stop string (not EOS: the text drops the EOS token)."""
        for g in gens:
            out = list(g.token_ids or [])
            if not out or not (g.finish_reason == "length" or (g.stop_reason not in (None, "eos"))):
                continue
            while out and out[-1] in self.special_ids:
                out.pop()
            if out:
                # a stop-string stop knows its tokens' whole text already (text + stop_text)
                done = g.text + g.stop_text if g.stop_text is not None else self.tokenizer.decode(out)
                self.continuations.record(text + done, ids + out)

    # -- tokens ----------------------------------------------------------------------------
    def decode(self, ids: list[int]) -> str:
        """The text of ``ids``, special tokens left out."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _vocab(self) -> list[str]:
        """The text of every token on its own (decoded once)."""
        if self._vocab_text is None:
            self._vocab_text = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
        return self._vocab_text

    def token_text(self, tid: int) -> str:
        """The text of one token on its own."""
        return self._vocab()[tid]

    def stop_tokens(self, stops: tuple[str, ...]) -> tuple[int, ...]:
        """The tokens a resumable turn stops on, for stop strings ``stops`` (memoised, sorted):
        those whose text contains one of ``stops`` and those whose text ends with a head of one
        (:func:`~engines.vllm_outputs.stop_heads`), where a stop string may begin and end in a
        later token ("\\n" then "\\n" for "\\n\\n")."""
        hit = self._stop_token_cache.get(stops)
        if hit is None:
            heads = stop_heads(stops)
            hit = self._stop_token_cache[stops] = tuple(
                tid for tid, t in enumerate(self._vocab())
                if tid not in self.special_ids
                and (any(st in t for st in stops) or t.endswith(heads))
            )
        return hit
