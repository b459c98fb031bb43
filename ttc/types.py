"""Core data types of ttc: prompts, sampling parameters, generations, usage, results.

Every type is a pydantic v2 model, so it validates its input (a bad field raises a
``pydantic.ValidationError`` naming the field) and round-trips through JSON
(``model_dump_json`` / ``model_validate_json``).
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

Role = Literal["system", "user", "assistant", "tool"]
# A generation that ended in tool calls finishes "stop" (the model ended it) and carries
# ``tool_calls``; the OpenAI wire's ``finish_reason="tool_calls"`` is derived from that.
FinishReason = Literal["stop", "length", "abort", "error"]
ToolChoice = Literal["none", "auto", "required"] | dict[str, Any]

# OpenAI's rule for a function name (the Chat Completions API refuses any other).
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class _Optional(_Model):
    """A model whose optional fields named in ``_omit_none`` are left out of its dump
    while None, so dumps and digests of data made before those fields existed stay
    the same."""

    _omit_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for k in self._omit_none:
            if data.get(k) is None:
                data.pop(k, None)
        return data


class ToolCall(_Model):
    """One function call a model asked for (OpenAI Chat Completions ``tool_calls[i]``).

    ``arguments`` is the JSON text as the model produced it: it may be malformed, and it
    is data (parse it with :func:`ttc.tool_calls.parse_arguments`, never evaluate it).
    The OpenAI wire shape ``{"id", "type": "function", "function": {"name",
    "arguments"}}`` is accepted as input; :meth:`to_openai` writes it back. Arguments
    given as a JSON object (not text) are serialised compactly.
    """

    id: str
    name: str = Field(min_length=1)
    arguments: str = ""

    @model_validator(mode="before")
    @classmethod
    def _wire(cls, v: Any) -> Any:
        if isinstance(v, dict) and "function" in v:
            fn = v["function"]
            if not isinstance(fn, dict):
                raise ValueError("tool_call.function: expected an object with 'name' and 'arguments'")
            if v.get("type", "function") != "function":
                raise ValueError(f"tool_call.type: only 'function' calls exist, got {v.get('type')!r}")
            v = {"id": v.get("id", ""), "name": fn.get("name"), "arguments": fn.get("arguments", "")}
        if isinstance(v, dict) and isinstance(v.get("arguments"), (dict, list)):
            v = {**v, "arguments": json.dumps(v["arguments"], separators=(",", ":"), ensure_ascii=False)}
        return v

    def to_openai(self) -> dict[str, Any]:
        """The call in the OpenAI wire shape."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


class Message(_Optional):
    """One chat message.

    ``content`` is text; a null content (an assistant message that only calls tools)
    becomes ``""``. An assistant message may carry ``tool_calls``; a ``"tool"`` message
    is a tool's result and names the call it answers in ``tool_call_id`` (OpenAI's
    rule), optionally the function in ``name``.
    """

    _omit_none: ClassVar[tuple[str, ...]] = ("tool_calls", "tool_call_id", "name")

    role: Role
    content: str
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _null_content(cls, v: Any) -> Any:
        return "" if v is None else v

    @model_validator(mode="after")
    def _check_tool_fields(self) -> Message:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError(f"message.tool_calls: only an assistant message calls tools, not a {self.role!r} one")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("message.tool_call_id: a 'tool' message must name the call it answers")
        if self.tool_call_id is not None and self.role != "tool":
            raise ValueError(f"message.tool_call_id: only a 'tool' message answers a call, not a {self.role!r} one")
        return self


class Prompt(_Optional):
    """What an engine is asked to continue.

    Either plain ``text`` (sent as-is, no chat template) or chat ``messages``.
    ``assistant_prefix`` is a partial assistant answer the engine must *continue*
    (not restart): step-wise search and early-exit probes build on it, and engines
    with prefix caching reuse the shared prefix.

    ``tools`` (chat prompts only) are OpenAI function tools, ``{"type": "function",
    "function": {"name", "description"?, "parameters"?}}`` with ``parameters`` a JSON
    Schema object; ``tool_choice`` is ``"none"``, ``"auto"``, ``"required"`` or
    ``{"type": "function", "function": {"name": ...}}`` naming one of the tools.
    """

    _omit_none: ClassVar[tuple[str, ...]] = ("tools", "tool_choice")

    text: str | None = None
    messages: list[Message] | None = None
    assistant_prefix: str = ""
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice | None = None

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if v is None:
            return v
        seen: set[str] = set()
        for i, t in enumerate(v):
            name = _check_tool(t, f"tools[{i}]")
            if name in seen:
                raise ValueError(f"tools[{i}].function.name: {name!r} is defined twice")
            seen.add(name)
        return v

    @model_validator(mode="after")
    def _check_tool_choice(self) -> Prompt:
        if self.tools is not None and self.text is not None:
            raise ValueError("prompt.tools: tools need a chat prompt ('messages'), not 'text'")
        c = self.tool_choice
        if c is None or c in ("none", "auto"):
            return self
        if c == "required":
            if not self.tools:
                raise ValueError("tool_choice: 'required' but the prompt has no tools")
            return self
        if isinstance(c, str):
            raise ValueError(f"tool_choice: expected 'none', 'auto', 'required' or a named function, got {c!r}")
        fn = c.get("function")
        if c.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ValueError('tool_choice: a named choice is {"type": "function", "function": {"name": ...}}')
        if not self.tools:
            raise ValueError(f"tool_choice: names the function {fn['name']!r} but the prompt has no tools")
        if fn["name"] not in self.tool_names:
            raise ValueError(f"tool_choice.function.name: {fn['name']!r} is not one of the tools {self.tool_names}")
        return self

    @property
    def tool_names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools or []]

    def tool(self, name: str) -> dict[str, Any] | None:
        """The ``function`` object of the tool called ``name``, or None."""
        for t in self.tools or []:
            if t["function"]["name"] == name:
                return t["function"]
        return None

    @model_validator(mode="after")
    def _check(self) -> Prompt:
        if (self.text is None) == (self.messages is None):
            raise ValueError("prompt: give exactly one of 'text' or 'messages'")
        if self.text is not None and not self.text.strip():
            raise ValueError("prompt.text: the prompt is empty")
        if self.messages is not None:
            if not self.messages:
                raise ValueError("prompt.messages: the message list is empty")
            if not any(m.content.strip() or m.tool_calls for m in self.messages):
                raise ValueError("prompt.messages: every message is empty")
            if self.messages[-1].role == "assistant":
                raise ValueError(
                    "prompt.messages: the last message is an assistant message; "
                    "put a partial answer to continue in 'assistant_prefix'"
                )
        return self

    @classmethod
    def of(cls, value: PromptLike) -> Prompt:
        """Coerce a str (one user message), a message list or a Prompt."""
        if isinstance(value, Prompt):
            return value
        if isinstance(value, str):
            return cls(messages=[Message(role="user", content=value)])
        if isinstance(value, list):
            return cls(messages=[m if isinstance(m, Message) else Message(**m) for m in value])
        raise TypeError(f"prompt: expected str, list of messages or Prompt, got {type(value).__name__}")

    def continued(self, extra: str) -> Prompt:
        """The same prompt with ``extra`` appended to the partial assistant answer."""
        return self.model_copy(update={"assistant_prefix": self.assistant_prefix + extra})

    def with_prefix(self, prefix: str) -> Prompt:
        return self.model_copy(update={"assistant_prefix": prefix})

    @property
    def question(self) -> str:
        """The last user message (or the text): what a verifier or router reads."""
        if self.text is not None:
            return self.text
        assert self.messages is not None
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content
        return self.messages[-1].content


PromptLike = Prompt | str | list


def _check_tool(t: Any, where: str) -> str:
    """Check one OpenAI function tool's shape; its function name."""
    if not isinstance(t, dict):
        raise ValueError(f"{where}: expected an object, got {type(t).__name__}")
    if t.get("type") != "function":
        raise ValueError(f"{where}.type: only 'function' tools exist, got {t.get('type')!r}")
    fn = t.get("function")
    if not isinstance(fn, dict):
        raise ValueError(f"{where}.function: expected an object with 'name' and 'parameters'")
    extra = set(t) - {"type", "function"}
    if extra:
        raise ValueError(f"{where}: unknown field {sorted(extra)[0]!r}")
    name = fn.get("name")
    if not isinstance(name, str) or not _TOOL_NAME.match(name):
        raise ValueError(f"{where}.function.name: expected 1-64 letters, digits, '_' or '-', got {name!r}")
    if "description" in fn and not isinstance(fn["description"], str):
        raise ValueError(f"{where}.function.description: expected a string")
    params = fn.get("parameters")
    if params is not None:
        if not isinstance(params, dict):
            raise ValueError(f"{where}.function.parameters: expected a JSON Schema object, got {type(params).__name__}")
        if params.get("type", "object") != "object":
            raise ValueError(f"{where}.function.parameters.type: a function's parameters are an 'object' schema")
        props = params.get("properties", {})
        if not isinstance(props, dict):
            raise ValueError(f"{where}.function.parameters.properties: expected an object")
        req = params.get("required", [])
        if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
            raise ValueError(f"{where}.function.parameters.required: expected a list of property names")
    return name


class SamplingParams(_Model):
    """Sampling parameters, engine-neutral.

    ``logprobs`` is the number of top-k alternatives to return per token (0 = only
    the sampled token's logprob, None = no logprobs). ``extra`` carries engine
    options (e.g. ``chat_template_kwargs``, ``reasoning_effort``); an engine raises
    on an option it does not know.
    """

    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1)
    stop: list[str] = Field(default_factory=list)
    n: int = Field(1, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20)
    seed: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [v]
        return v

    @field_validator("stop")
    @classmethod
    def _stop_nonempty(cls, v: list[str]) -> list[str]:
        if any(s == "" for s in v):
            raise ValueError("stop: empty stop string")
        return v


class TopLogprob(_Model):
    token: str
    logprob: float
    token_id: int | None = None  # set where the engine knows it (vLLM in-process): texts can repeat


class TokenLogprob(_Model):
    """The sampled token, its logprob, and the top-k alternatives at that position."""

    token: str
    logprob: float
    top: list[TopLogprob] = Field(default_factory=list)
    token_id: int | None = None  # several token ids can decode to the same text (byte pieces)


class Usage(_Model):
    """Resources one or more engine calls consumed, as the engine reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    calls: int = 0
    generations: int = 0
    wall_seconds: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens + other.cached_prompt_tokens,
            calls=self.calls + other.calls,
            generations=self.generations + other.generations,
            wall_seconds=self.wall_seconds + other.wall_seconds,
        )


class Generation(_Optional):
    """One sampled completion. ``tool_calls``: the function calls it made (parsed by the
    engine; their arguments are the model's JSON text, possibly malformed)."""

    _omit_none: ClassVar[tuple[str, ...]] = ("tool_calls",)

    text: str
    num_tokens: int = Field(ge=0)
    finish_reason: FinishReason = "stop"
    logprobs: list[TokenLogprob] | None = None
    token_ids: list[int] | None = None
    # What ended a finish_reason="stop" generation: the stop string that matched, or
    # "eos" when the model ended it; None when the engine does not say (or not "stop").
    stop_reason: str | None = None
    # For a stop-string stop: the generated text from the matched string to the end of the
    # tokens (``text + stop_text`` is what ``token_ids`` decode to), e.g. "\n\n   " when one
    # token held the string and more. None when the engine does not know (OpenAI servers).
    stop_text: str | None = None
    tool_calls: list[ToolCall] | None = None

    @property
    def mean_logprob(self) -> float | None:
        if not self.logprobs:
            return None
        return sum(t.logprob for t in self.logprobs) / len(self.logprobs)


class GenerationResult(_Model):
    """What one engine call returns: its generations and the usage it was billed."""

    generations: list[Generation]
    usage: Usage


class StreamDelta(_Optional):
    """One piece of a streamed generation. ``tool_calls``: on the last delta, the
    complete function calls of the generation (assembled from the stream's fragments)."""

    _omit_none: ClassVar[tuple[str, ...]] = ("tool_calls",)

    text: str = ""
    num_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None  # set on the last delta when the engine reports it
    tool_calls: list[ToolCall] | None = None


class Sample(_Optional):
    """A generation as a strategy sees it: extracted answer, score, vote weight, and the
    generation's ``tool_calls`` (None when it made none)."""

    _omit_none: ClassVar[tuple[str, ...]] = ("tool_calls",)

    index: int
    text: str
    num_tokens: int
    finish_reason: FinishReason = "stop"
    answer: str | None = None
    score: float | None = None
    weight: float | None = None
    logprobs: list[TokenLogprob] | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    tool_calls: list[ToolCall] | None = None

    @classmethod
    def from_generation(cls, index: int, g: Generation, *, prefix: str = "") -> Sample:
        return cls(
            index=index,
            text=prefix + g.text,
            num_tokens=g.num_tokens,
            finish_reason=g.finish_reason,
            logprobs=g.logprobs,
            tool_calls=g.tool_calls,
        )


class TraceEvent(_Model):
    """One thing a strategy did, for inspection in a notebook."""

    t: float
    kind: str
    data: dict[str, Any] = Field(default_factory=dict)


class StrategyResult(_Model):
    """What every strategy returns.

    ``stop_reason`` is ``"done"`` (the strategy ran to completion), ``"budget"``
    (its budget ran out: the samples drawn so far are all here), ``"engine_error"``
    (a request failed for good: the samples drawn so far are all here and ``error``
    says what failed), or the name of the stopping rule that fired (e.g.
    ``"beta"``). ``budget_detail`` names the exhausted limit. ``overspent``: usage a
    server billed beyond the worst case of the requests that billed it (it ignored
    ``max_tokens``), per field; charged, so ``usage`` may pass a limit by that much.
    """

    strategy: str
    answer: str | None
    confidence: float | None = None
    chosen: Sample | None = None
    samples: list[Sample] = Field(default_factory=list)
    stop_reason: str = "done"
    budget_detail: str | None = None
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    overspent: dict[str, int] = Field(default_factory=dict)
    usage_by_kind: dict[str, Usage] = Field(default_factory=dict)
    trace: list[TraceEvent] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)

    def trace_records(self) -> list[dict[str, Any]]:
        """The trace as flat dicts (``pandas.DataFrame(result.trace_records())``)."""
        return [{"t": e.t, "kind": e.kind, **e.data} for e in self.trace]

    def summary(self) -> str:
        return (
            f"{self.strategy}: answer={self.answer!r} conf={self.confidence} "
            f"samples={len(self.samples)} stop={self.stop_reason} "
            f"tokens={self.usage.completion_tokens}+{self.usage.prompt_tokens}p calls={self.usage.calls}"
        )
