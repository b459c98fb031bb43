"""Core data types of ttc: prompts, sampling parameters, generations, usage, results.

Every type is a pydantic v2 model, so it validates its input (a bad field raises a
``pydantic.ValidationError`` naming the field) and round-trips through JSON
(``model_dump_json`` / ``model_validate_json``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "abort", "error"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Message(_Model):
    """One chat message."""

    role: Role
    content: str


class Prompt(_Model):
    """What an engine is asked to continue.

    Either plain ``text`` (sent as-is, no chat template) or chat ``messages``.
    ``assistant_prefix`` is a partial assistant answer the engine must *continue*
    (not restart): step-wise search and early-exit probes build on it, and engines
    with prefix caching reuse the shared prefix.
    """

    text: str | None = None
    messages: list[Message] | None = None
    assistant_prefix: str = ""

    @model_validator(mode="after")
    def _check(self) -> Prompt:
        if (self.text is None) == (self.messages is None):
            raise ValueError("prompt: give exactly one of 'text' or 'messages'")
        if self.text is not None and not self.text.strip():
            raise ValueError("prompt.text: the prompt is empty")
        if self.messages is not None:
            if not self.messages:
                raise ValueError("prompt.messages: the message list is empty")
            if not any(m.content.strip() for m in self.messages):
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


class Generation(_Model):
    """One sampled completion."""

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

    @property
    def mean_logprob(self) -> float | None:
        if not self.logprobs:
            return None
        return sum(t.logprob for t in self.logprobs) / len(self.logprobs)


class GenerationResult(_Model):
    """What one engine call returns: its generations and the usage it was billed."""

    generations: list[Generation]
    usage: Usage


class StreamDelta(_Model):
    """One piece of a streamed generation."""

    text: str = ""
    num_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None  # set on the last delta when the engine reports it


class Sample(_Model):
    """A generation as a strategy sees it: extracted answer, score, vote weight."""

    index: int
    text: str
    num_tokens: int
    finish_reason: FinishReason = "stop"
    answer: str | None = None
    score: float | None = None
    weight: float | None = None
    logprobs: list[TokenLogprob] | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_generation(cls, index: int, g: Generation, *, prefix: str = "") -> Sample:
        return cls(
            index=index,
            text=prefix + g.text,
            num_tokens=g.num_tokens,
            finish_reason=g.finish_reason,
            logprobs=g.logprobs,
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
