"""Request bodies of the OpenAI API, as strict pydantic models.

The fields are those of the OpenAI API reference (Chat Completions, Completions), read
strictly: an unknown field is an error naming it (OpenAI's own answer to an unknown
argument), and a field whose meaning the server does not implement (``logprobs``,
penalties, a JSON ``response_format``, ``echo``, ``best_of``, ...) is refused with a 400
naming it rather than silently dropped. Fields that change nothing in the output
(``user``, ``metadata``, ``store``, ``service_tier``) are accepted and ignored.

``ttc`` (``extra_body={"ttc": {...}}`` in the ``openai`` SDK) carries ttc's own options:
``strategy`` (an ad-hoc registry spec, when the server allows them), ``budget`` (a
:class:`~ttc.budget.Budget` for this request), ``return_samples`` (every sample with its
score and vote in the response) and ``progress`` (``ttc.progress`` events while a
strategy samples, in a stream).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ttc.budget import Budget

#: Hard caps that hold whatever the server's limits say (the server's own are lower).
HARD_MAX_N = 128
HARD_MAX_STOP = 16


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    """A text part of a message's content (``{"type": "text", "text": ...}``); image and
    audio parts are refused: the engines take text."""

    type: str
    text: str = ""

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, v: Any) -> Any:
        if isinstance(v, dict) and v.get("type") != "text":
            raise ValueError(f"content part of type {v.get('type')!r}: only 'text' parts are taken (the engines "
                             "read text)")
        return v


class ChatMessage(_Strict):
    """One message of a conversation, as the OpenAI API writes it."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class TTCOptions(_Strict):
    """ttc's own request options (``extra_body={"ttc": {...}}``)."""

    strategy: str | None = Field(None, min_length=1, max_length=2000)
    budget: Budget | None = None
    return_samples: bool = False
    progress: bool = False


class _Common(_Strict):
    model: str = Field(min_length=1, max_length=2000)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=HARD_MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    ttc: TTCOptions | None = None

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatRequest(_Common):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None


class CompletionRequest(_Common):
    """``POST /v1/completions`` (a raw text prompt: no chat template)."""

    prompt: str | list[str]
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = None


def unsupported(req: ChatRequest | CompletionRequest) -> tuple[str, str] | None:
    """The first field given whose meaning this server does not implement, with why."""
    checks: list[tuple[str, bool, str]] = [
        ("presence_penalty", bool(req.presence_penalty), "penalties are not implemented; leave it out or 0"),
        ("frequency_penalty", bool(req.frequency_penalty), "penalties are not implemented; leave it out or 0"),
        ("logit_bias", bool(req.logit_bias), "logit_bias is not implemented"),
        ("logprobs", bool(req.logprobs), "logprobs are not returned by ttc serve; use ttc.return_samples"),
    ]
    if isinstance(req, ChatRequest):
        checks += [
            ("top_logprobs", req.top_logprobs is not None, "logprobs are not returned by ttc serve"),
            ("response_format", req.response_format is not None and req.response_format.get("type") != "text",
             "only response_format {'type': 'text'} is implemented"),
            ("reasoning_effort", req.reasoning_effort is not None, "reasoning_effort is not implemented"),
        ]
    else:
        checks += [
            ("echo", bool(req.echo), "echo is not implemented"),
            ("suffix", req.suffix is not None, "suffix (fill-in-the-middle) is not implemented"),
            ("best_of", req.best_of not in (None, 1), "best_of: name a best-of-N strategy as the model instead"),
        ]
    for name, given, why in checks:
        if given:
            return name, why
    return None
