"""What :class:`~engines.openai_engine.OpenAIEngine` sends and reads: request bodies,
reply and stream-chunk parsing, and the validation of a server's usage.

Nothing here does I/O. :class:`OpenAIWire` holds what the bodies and counts depend on
(the model, the endpoint and prefill choice, the optional tokenizer); the functions read
replies. Replies are plain JSON (``json.loads`` of the raw body, no typed models: that
keeps client CPU per request low). Every malformed piece raises
``TypeError``/``ValueError``/``KeyError``/``AttributeError``, which the engine treats as a
malformed (retryable) reply. Logprobs, finish and stop reasons are read with the
conversions every engine shares (:mod:`engines.outputs`); chat templates are rendered with
:func:`engines.chat.render`.

**Usage is validated** (:func:`checked_usage`): ``prompt_tokens``, ``completion_tokens``
and ``prompt_tokens_details.cached_tokens`` must be non-negative integers and no more than
the attempt's worst case. A count above the worst case that the reply can hold
(completion: one token per byte of returned text plus an end token per choice; prompt:
twice the bound) is billed as reported (the meter records the excess); one that is not
a non-negative integer, or more than the reply can hold, is billed as the worst case.
Either way the problem is returned, naming the field.

**Tool calls.** A prompt's ``tools`` and ``tool_choice`` go in the chat body as they are,
with earlier assistant ``tool_calls`` and ``"tool"`` results in OpenAI's message shape.
Replies: ``message.tool_calls`` (streamed: the ``delta.tool_calls`` fragments, joined by
``index``) become :class:`~ttc.types.ToolCall` s on the generation; when a prompt wants
tool calls and the reply has none in that field (a server without a tool parser, the
``/completions`` route), they are read from the text (:func:`ttc.tool_calls.parse_tool_calls`).
A server's ``finish_reason="tool_calls"`` is ttc's ``"stop"``; the calls say the rest.
Tool-call bytes count as returned text in the usage checks and token estimates.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ttc.engine import EngineError
from ttc.tool_calls import MAX_CALLS, parse_tool_calls
from ttc.types import (
    FinishReason,
    Generation,
    Prompt,
    SamplingParams,
    StreamDelta,
    TokenLogprob,
    ToolCall,
    Usage,
)

from .chat import chat_messages, render
from .outputs import chat_logprobs, completion_logprobs, finish_reason, stop_reason

__all__ = [
    "BASE_OPTIONS",
    "OpenAIWire",
    "Parsed",
    "StreamState",
    "UsageProblem",
    "checked_usage",
    "parse_chunk",
    "rejects_n",
]

Route = Literal["chat", "completions"]
#: One parsed choice: (text, finish reason, logprobs, stop reason, tool calls).
Parsed = tuple[str, FinishReason, list[TokenLogprob] | None, str | None, list[ToolCall] | None]
#: Template tokens a server may add for the tool schemas' preamble (no tokenizer to count them).
TOOLS_TEMPLATE_TOKENS = 256
#: ``SamplingParams.extra`` keys every server takes (vLLM/SGLang extras and reasoning_effort).
BASE_OPTIONS = frozenset({"chat_template_kwargs", "reasoning_effort", "top_k", "min_p", "repetition_penalty"})
_PATHS: dict[str, str] = {"chat": "/chat/completions", "completions": "/completions"}


class UsageProblem(EngineError):
    """A reply's usage failed validation (see :func:`checked_usage`)."""


class OpenAIWire:
    """Request bodies and prompt counts for one model (see ``OpenAIEngine`` for the
    options); ``continuous_usage_stats`` turns off when a server refuses it."""

    def __init__(self, model: str, *, endpoint: Route, prefill: str, tokenizer: Any, template_tokens: int,
                 continuous_usage_stats: bool):
        self.model = model
        self.endpoint = endpoint
        self.prefill = prefill
        self.tokenizer = tokenizer
        self.template_tokens = template_tokens
        self.continuous_usage_stats = continuous_usage_stats
        self._count_cache: dict[str, int] = {}

    # -- prompts ---------------------------------------------------------------------------
    def route(self, prompt: Prompt) -> Route:
        """Where a prompt goes: raw text, the completions endpoint and locally templated
        continuations to ``/completions``, the rest to ``/chat/completions``."""
        if prompt.text is not None or self.endpoint == "completions":
            return "completions"
        if prompt.assistant_prefix and self.prefill == "local_template":
            return "completions"
        return "chat"

    @staticmethod
    def path(route: Route) -> str:
        return _PATHS[route]

    def render(self, prompt: Prompt) -> str:
        """The prompt text as the server will see it on /completions (chat template applied locally)."""
        return render(self.tokenizer, prompt)[0]

    def count_prompt_tokens(self, prompt: Prompt) -> int:
        """Exact with a tokenizer (the server's template, or ours for /completions); else an
        upper bound: a token per UTF-8 byte of each message's content and role, 8 per message
        and ``template_tokens`` for the template's fixed text (raw text: 8 more). Memoised."""
        key = prompt.model_dump_json()
        hit = self._count_cache.get(key)
        if hit is not None:
            return hit
        if self.tokenizer is not None:
            # the chat endpoint: the server renders, with no fallback of ours
            text, templated = render(self.tokenizer, prompt, fallback=self.route(prompt) == "completions")
            n = len(self.tokenizer.encode(text, add_special_tokens=not templated))
        elif prompt.text is not None:  # sent as is: its bytes, plus room for a BOS/prefix token
            n = len(prompt.text.encode()) + len(prompt.assistant_prefix.encode()) + 8
        else:  # at most a token per byte of each message, plus the template's fixed text
            msgs = chat_messages(prompt)
            n = sum(len(m["content"].encode()) + len(m["role"].encode()) + 8 for m in msgs) + self.template_tokens
            n += _tool_bytes(prompt)
        if len(self._count_cache) > 4096:
            self._count_cache.clear()
        self._count_cache[key] = n
        return n

    def body(self, prompt: Prompt, params: SamplingParams, *, stream: bool) -> dict[str, Any]:
        """The JSON request body (the client's ``post`` sends it as is: no per-call typed
        transform). A continued assistant message goes to the chat endpoint with vLLM's
        ``continue_final_message``; ``SamplingParams.extra`` keys are top-level body fields."""
        route = self.route(prompt)
        kw: dict[str, Any] = {"model": self.model, "temperature": params.temperature, "top_p": params.top_p,
                              "max_tokens": params.max_tokens, "n": params.n}
        if route == "chat":
            kw["messages"] = chat_messages(prompt)
            if prompt.tools is not None:
                kw["tools"] = prompt.tools
            if prompt.tool_choice is not None:
                kw["tool_choice"] = prompt.tool_choice
            if prompt.assistant_prefix:
                kw.update(continue_final_message=True, add_generation_prompt=False)
            if params.logprobs is not None:
                kw["logprobs"] = True
                kw["top_logprobs"] = params.logprobs
        else:
            kw["prompt"] = self.render(prompt)
            if params.logprobs is not None:
                kw["logprobs"] = params.logprobs
        if params.stop:
            kw["stop"] = list(params.stop)
        if params.seed is not None:
            kw["seed"] = params.seed
        kw.update(params.extra)
        if stream:
            kw["stream"] = True
            so: dict[str, Any] = {"include_usage": True}
            if self.continuous_usage_stats:
                so["continuous_usage_stats"] = True
            kw["stream_options"] = so
        return kw

    # -- replies ---------------------------------------------------------------------------
    def estimate_tokens(self, text: str, finish: str | None = None) -> int:
        """Tokens of a generated ``text``, erring high, never low: exact with ``tokenizer``,
        else one per UTF-8 byte (a token holds at least one); plus the end token of a
        generation that stopped."""
        tok = self.tokenizer
        n = len(tok.encode(text, add_special_tokens=False)) if tok is not None else len(text.encode())
        return n + (1 if finish == "stop" else 0)

    def generations(self, resp: Any, route: Route, usage: Usage | None, max_tokens: int) -> list[Generation]:
        """The generations of a reply ``resp`` (see :meth:`counted`)."""
        return self.counted(parse_choices(resp["choices"], route), usage, max_tokens)

    def counted(self, parsed: list[Parsed], usage: Usage | None, max_tokens: int) -> list[Generation]:
        """Generations with per-sample token counts: exact from logprobs; else the server's
        total shared out in proportion to an estimate (so the samples add up to what the
        server billed); else the estimate. No estimated count exceeds ``max_tokens``."""
        if len(parsed) == 1 and parsed[0][2] is None and usage is not None:  # the usual reply: one choice
            (t, f, lp, sr, tc), = parsed  # the server's count (what the general path below gives one choice)
            return [Generation(text=t, num_tokens=min(max(usage.completion_tokens, 0), max_tokens), finish_reason=f,
                               logprobs=lp, stop_reason=sr, tool_calls=tc)]
        counts = [len(lps) if lps is not None else -1 for _, _, lps, _, _ in parsed]
        if any(c < 0 for c in counts) and usage is not None:
            self._share(parsed, counts, usage.completion_tokens)
        for i, c in enumerate(counts):
            if c < 0:
                counts[i] = self.estimate_tokens(output_text(parsed[i]), parsed[i][1])
        # An estimated share never exceeds max_tokens: move any excess to samples below it
        # (the billed total fits, since the server cannot generate more than n * max_tokens).
        excess = sum(max(0, c - max_tokens) for c in counts)
        counts = [min(c, max_tokens) for c in counts]
        for i in range(len(counts)):
            give = min(excess, max_tokens - counts[i])
            counts[i] += give
            excess -= give
        return [Generation(text=t, num_tokens=n, finish_reason=f, logprobs=lp, stop_reason=sr, tool_calls=tc)
                for (t, f, lp, sr, tc), n in zip(parsed, counts)]

    def _share(self, parsed: list[Parsed], counts: list[int], total: int) -> None:
        """Fill the unknown (-1) ``counts`` with what ``total`` leaves, in proportion to an
        estimate of each (largest remainders first)."""
        rest = max(total - sum(c for c in counts if c >= 0), 0)
        idx = [i for i, c in enumerate(counts) if c < 0]
        est = [self.estimate_tokens(output_text(parsed[i])) for i in idx]
        tot = sum(est)
        shares = [rest * e // tot if tot else rest // len(idx) for e in est]
        for j in sorted(range(len(idx)), key=lambda j: -(rest * est[j] % tot if tot else 0))[: rest - sum(shares)]:
            shares[j] += 1
        for i, s in zip(idx, shares):
            counts[i] = s


def _tool_bytes(prompt: Prompt) -> int:
    """A token bound for what a prompt's tools add to it (no tokenizer): a token per byte
    of the schemas and of earlier calls, and the template's tool preamble."""
    if not prompt.tools and not any(m.tool_calls for m in prompt.messages or []):
        return 0
    n = len(json.dumps(prompt.tools or []).encode()) + TOOLS_TEMPLATE_TOKENS
    for m in prompt.messages or []:
        for c in m.tool_calls or []:
            n += len(c.name.encode()) + len(c.arguments.encode()) + len(c.id.encode()) + 16
    return n


def output_text(p: Parsed) -> str:
    """What a choice generated, as text: its content and its calls' names and arguments."""
    return p[0] + "".join(c.name + c.arguments for c in p[4] or [])


def wire_tool_calls(raw: Any) -> list[ToolCall] | None:
    """A reply message's ``tool_calls`` (OpenAI shape) as ToolCalls, None if absent or empty."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise TypeError(f"tool_calls is {type(raw).__name__}, not a list")
    return [ToolCall.model_validate(c) for c in raw[:MAX_CALLS]] or None


def _count_of(v: Any) -> int | None:
    """``v`` as a token count: a non-negative integer (an integral JSON number), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if v >= 0 else None
    if isinstance(v, float) and math.isfinite(v) and v >= 0 and v.is_integer():
        return int(v)
    return None


def checked_usage(raw: Any, worst: Usage, text_bytes: int, choices: int) -> tuple[Usage | None, str | None]:
    """What to bill for one reply's ``usage`` object, and what is wrong with it.

    ``worst`` is the attempt's worst case; ``text_bytes`` the UTF-8 bytes of the text the
    reply brought in ``choices`` choices. (None, None) when the reply has no usage. A field
    left out is our count (the prompt bound; the text's bytes plus an end token per choice,
    at most the worst case). See the module doc for what is billed when a count fails.
    """
    if not isinstance(raw, dict):
        return None, None
    caps = {"prompt_tokens": 2 * worst.prompt_tokens,
            "completion_tokens": max(worst.completion_tokens, text_bytes + choices)}
    got = {"prompt_tokens": worst.prompt_tokens,
           "completion_tokens": min(worst.completion_tokens, text_bytes + choices)}
    problems: list[str] = []
    impossible = False
    for f in ("prompt_tokens", "completion_tokens"):
        if raw.get(f) is None:
            continue
        v = _count_of(raw[f])
        if v is None:
            problems.append(f"usage.{f}: {repr(raw[f])[:40]} is not a non-negative integer")
            impossible = True
        elif v > caps[f]:
            problems.append(f"usage.{f}: {v:.3g} is more than this reply can hold ({caps[f]})")
            impossible = True
        else:
            if v > getattr(worst, f):
                problems.append(f"usage.{f}: {v} is more than the request's worst case {getattr(worst, f)} "
                                "(charged as reported)")
            got[f] = v
    cached = 0
    details = raw.get("prompt_tokens_details")
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        c = _count_of(details["cached_tokens"])
        if c is None or c > got["prompt_tokens"]:
            problems.append(f"usage.prompt_tokens_details.cached_tokens: {repr(details['cached_tokens'])[:40]} "
                            "is not a count of at most prompt_tokens")
        else:
            cached = c
    problem = "; ".join(problems) or None
    if impossible:
        return worst.model_copy(update={"cached_prompt_tokens": 0, "wall_seconds": 0.0}), problem
    return Usage(prompt_tokens=got["prompt_tokens"], completion_tokens=got["completion_tokens"],
                 cached_prompt_tokens=cached, calls=1, generations=choices), problem


def _stop_reason(choice: dict[str, Any]) -> str | None:
    """What ended a finish_reason="stop" choice. vLLM servers report ``stop_reason``: the
    matched stop string, a stop token id, or null for EOS; other servers say nothing."""
    if choice.get("finish_reason") != "stop" or "stop_reason" not in choice:
        return None
    return stop_reason(choice["stop_reason"])


def parse_choices(choices: Any, route: Route, *, text_calls: bool = False) -> list[Parsed]:
    """(text, finish reason, logprobs, stop reason, tool calls) per choice, in index order;
    with ``text_calls`` (the prompt wants tool calls), calls are read from the text of a
    choice that has none in ``message.tool_calls``."""
    if not isinstance(choices, list):
        raise TypeError(f"choices is {type(choices).__name__}, not a list")
    out: list[Parsed] = []
    for c in sorted(choices, key=lambda c: c.get("index", 0)):
        calls = None
        if route == "chat":
            msg = c.get("message") or {}
            text = msg.get("content") or ""
            calls = wire_tool_calls(msg.get("tool_calls"))
        else:
            text = c.get("text") or ""
        if not isinstance(text, str):
            raise TypeError(f"choice text is {type(text).__name__}, not str")
        if calls is None and text_calls:
            calls = parse_tool_calls(text)
        lp = c.get("logprobs")
        lps = chat_logprobs(lp) if route == "chat" else completion_logprobs(lp)
        out.append((text, finish_reason(c.get("finish_reason"), missing="stop", unknown="stop"), lps,
                    _stop_reason(c), calls))
    return out


#: A streamed tool-call fragment: (index, id, name piece, arguments piece).
Fragment = tuple[int, str | None, str, str]


def _fragments(raw: Any) -> list[Fragment]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise TypeError(f"delta.tool_calls is {type(raw).__name__}, not a list")
    out = []
    for f in raw:
        fn = f.get("function") or {}
        idx, fid, name, args = f.get("index", 0), f.get("id"), fn.get("name") or "", fn.get("arguments") or ""
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < MAX_CALLS:
            raise ValueError(f"delta.tool_calls[].index: {idx!r} is not a call index below {MAX_CALLS}")
        if not (isinstance(name, str) and isinstance(args, str) and (fid is None or isinstance(fid, str))):
            raise TypeError("delta.tool_calls[]: id, function.name and function.arguments must be strings")
        out.append((idx, fid, name, args))
    return out


def parse_chunk(chunk: Any, route: Route) -> tuple[str, list[TokenLogprob] | None, str | None, list[Fragment]]:
    """(text, logprobs, raw finish reason, tool-call fragments) of a stream chunk's first choice."""
    if not isinstance(chunk, dict):
        raise TypeError(f"stream chunk is {type(chunk).__name__}, not a JSON object")
    if not chunk.get("choices"):
        return "", None, None, []
    c = chunk["choices"][0]
    frags: list[Fragment] = []
    if route == "chat":
        delta = c.get("delta") or {}
        text = delta.get("content") or ""
        frags = _fragments(delta.get("tool_calls"))
        lps = chat_logprobs(c.get("logprobs"))
    else:
        text = c.get("text") or ""
        lps = completion_logprobs(c.get("logprobs"))
    return text, lps, c.get("finish_reason"), frags


@dataclass
class StreamState:
    """What one streamed attempt handed out, and the usage the server reported for it."""

    route: Route
    worst: Usage
    wire: OpenAIWire
    name: str = "openai"
    received: int = 0  # tokens handed out (logprob entries, usage steps, else one per text chunk)
    text_bytes: int = 0  # UTF-8 bytes of the text handed out
    usage: Usage | None = None
    finished: bool = False
    errors: list[str] = field(default_factory=list)
    text_calls: bool = False  # the prompt wants tool calls: read them from the text if none come as such
    texts: list[str] = field(default_factory=list)
    calls: dict[int, list[Any]] = field(default_factory=dict)  # index -> [id, name, argument pieces]

    def reset(self) -> None:
        """A new attempt: nothing handed out, no usage."""
        self.usage, self.received, self.text_bytes = None, 0, 0
        self.texts, self.calls = [], {}

    def _absorb_calls(self, frags: list[Fragment]) -> None:
        for idx, fid, name, args in frags:
            acc = self.calls.setdefault(idx, [None, "", []])
            acc[0] = acc[0] or fid
            acc[1] += name
            acc[2].append(args)
            self.text_bytes += len(name.encode()) + len(args.encode())

    def tool_calls(self) -> list[ToolCall] | None:
        """The calls the stream brought (fragments joined by index), else those in its text
        when the prompt wants calls; None if none."""
        if self.calls:
            return [ToolCall(id=fid or f"call_{i}", name=name or "?", arguments="".join(args))
                    for i, (fid, name, args) in sorted(self.calls.items())]
        return parse_tool_calls("".join(self.texts)) if self.text_calls else None

    def delta(self, chunk: Any) -> StreamDelta | None:
        """The piece a chunk hands out (None if nothing); its usage validated (a
        :class:`UsageProblem` if it fails). Tokens: its logprob entries, else the step of
        the server's running usage, else one per chunk with text or a tool-call fragment."""
        text, lps, finish, frags = parse_chunk(chunk, self.route)
        self.text_bytes += len(text.encode())
        if self.text_calls:
            self.texts.append(text)
        self._absorb_calls(frags)
        u, problem = checked_usage(chunk.get("usage"), self.worst, self.text_bytes, 1)
        prev = self.usage.completion_tokens if self.usage is not None else self.received
        if u is not None:
            self.usage = u
        if problem is not None:
            raise UsageProblem(f"{self.name}: {problem}")
        if lps is not None:
            n = len(lps)
        elif u is not None and self.wire.continuous_usage_stats:
            n = max(u.completion_tokens - prev, 0)
        else:
            n = 1 if text or frags else 0
        if not text and lps is None and finish is None and not frags:
            return None
        self.received += n
        if finish is not None:
            self.finished = True
        return StreamDelta(text=text, num_tokens=n, logprobs=lps,
                           finish_reason=finish_reason(finish, missing="stop", unknown="stop") if finish else None)

    def final_usage(self, prompt_tokens: int, max_tokens: int) -> Usage:
        """What a stream is billed: the server's last (validated) usage, at least the
        tokens handed out; without one, the prompt bound plus an estimate of the text
        handed out that errs high (a token per byte plus an end token, at most
        ``max_tokens``, at least the tokens counted)."""
        if self.usage is not None:
            u = self.usage
            if u.completion_tokens < self.received:
                u = u.model_copy(update={"completion_tokens": self.received})
            return u.model_copy(update={"calls": 1, "generations": 1})
        est = (max(self.received, min(max_tokens, self.text_bytes + 1))
               if self.received or self.text_bytes else 0)
        return Usage(prompt_tokens=prompt_tokens, completion_tokens=est, calls=1, generations=1)


def rejects_n(message: str) -> bool:
    """A server's 400 message says it does not take ``n``."""
    low = message.lower()
    return ("'n'" in low or "`n`" in low or "n must" in low or "n >" in low or "n>" in low
            or "param n" in low or "parameter n" in low or "param=n" in low or "parameter=n)" in low)
