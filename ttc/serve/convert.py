"""OpenAI requests to ttc prompts and sampling parameters.

The whole conversation reaches the strategy: every system (and ``developer``, read as
system), user, assistant and tool message, in order, as ``Prompt(messages=...)``; nothing
is cut to the last user message. Text content parts are joined; other parts (images,
audio) are refused naming the message. Tool definitions (``tools``, ``tool_choice``), the
assistant's earlier ``tool_calls`` and tool results' ``tool_call_id`` go into the prompt
where :mod:`ttc.types` has the fields for them; a server whose core types lack them
refuses those fields with a 400 rather than dropping them.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from ttc.types import Message, Prompt, SamplingParams

from .errors import ApiError, bad_request, dotted
from .limits import ServeLimits
from .schemas import ChatMessage, ChatRequest, CompletionRequest

TOOLS_SUPPORTED = "tool_calls" in Message.model_fields and "tools" in Prompt.model_fields


def _tool_call(raw: dict[str, Any], where: str) -> Any:
    from ttc.types import ToolCall

    try:
        return ToolCall.model_validate(raw)
    except (ValidationError, ValueError, TypeError) as e:
        raise bad_request(f"{where}: {_first(e)}", where) from None


def _first(e: Exception) -> str:
    if isinstance(e, ValidationError):
        err = e.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        return f"{dotted(err['loc'])}: {msg}" if err["loc"] else msg
    return " ".join(str(e).split())


def message(m: ChatMessage, i: int) -> Message:
    where = f"messages[{i}]"
    role = "system" if m.role == "developer" else m.role
    kw: dict[str, Any] = {"role": role, "content": m.text()}
    if m.tool_calls:
        if not TOOLS_SUPPORTED:
            raise bad_request(f"{where}.tool_calls: tool calls are not supported by this server's engines yet",
                              f"{where}.tool_calls", "tools_unsupported")
        kw["tool_calls"] = [_tool_call(tc, f"{where}.tool_calls[{j}]") for j, tc in enumerate(m.tool_calls)]
    if TOOLS_SUPPORTED:
        if m.tool_call_id is not None:
            kw["tool_call_id"] = m.tool_call_id
        if m.name is not None and "name" in Message.model_fields:
            kw["name"] = m.name
    try:
        return Message(**kw)
    except (ValidationError, ValueError) as e:
        raise bad_request(f"{where}: {_first(e)}", where) from None


def chat_prompt(req: ChatRequest, limits: ServeLimits) -> Prompt:
    if len(req.messages) > limits.max_messages:
        raise bad_request(f"messages: {len(req.messages)} messages, more than this server takes "
                          f"({limits.max_messages})", "messages")
    messages = [message(m, i) for i, m in enumerate(req.messages)]
    kw: dict[str, Any] = {"messages": messages}
    if req.tools is not None or req.tool_choice is not None:
        if not TOOLS_SUPPORTED:
            field = "tools" if req.tools is not None else "tool_choice"
            raise bad_request(f"{field}: tool calls are not supported by this server's engines yet; leave "
                              f"{field} out", field, "tools_unsupported")
        if req.tools is not None:
            kw["tools"] = req.tools
        if req.tool_choice is not None:
            kw["tool_choice"] = req.tool_choice
    return _prompt(kw, "messages")


def completion_prompt(req: CompletionRequest) -> Prompt:
    text = req.prompt
    if isinstance(text, list):
        if len(text) != 1:
            raise bad_request(f"prompt: give one prompt per request (got a list of {len(text)})", "prompt")
        text = text[0]
    return _prompt({"text": text}, "prompt")


def _prompt(kw: dict[str, Any], field: str) -> Prompt:
    try:
        return Prompt(**kw)
    except (ValidationError, ValueError) as e:
        msg = " ".join(str(e).split())
        if isinstance(e, ValidationError):
            msg = str(e.errors()[0]["msg"]).removeprefix("Value error, ")
        named = re.match(r"(tools|tool_choice)[\w.\[\]]*", msg)
        if named:
            raise bad_request(msg, named.group(0)) from None
        msg = msg.removeprefix("prompt.messages: ").removeprefix("prompt.")
        raise bad_request(f"{field}: {msg}", field) from None


def max_tokens(req: ChatRequest | CompletionRequest, limits: ServeLimits) -> int | None:
    """The request's ``max_tokens`` (chat: ``max_completion_tokens`` too), checked against the
    server's limit; ``None`` when not given."""
    value, field = req.max_tokens, "max_tokens"
    if isinstance(req, ChatRequest) and req.max_completion_tokens is not None:
        if value is not None and value != req.max_completion_tokens:
            raise bad_request("max_completion_tokens: differs from max_tokens; give one", "max_completion_tokens")
        value, field = req.max_completion_tokens, "max_completion_tokens"
    if value is not None and value > limits.max_tokens:
        raise bad_request(f"{field}: {value} is more than this server allows ({limits.max_tokens})", field)
    return value


def sampling_overrides(req: ChatRequest | CompletionRequest, limits: ServeLimits) -> dict[str, Any]:
    """The request's sampling fields that were given (for a strategy's ``params``)."""
    out: dict[str, Any] = {}
    mt = max_tokens(req, limits)
    if mt is not None:
        out["max_tokens"] = mt
    if req.temperature is not None:
        out["temperature"] = req.temperature
    if req.top_p is not None:
        out["top_p"] = req.top_p
    stops = req.stops()
    if stops:
        if len(stops) > 16 or any(not s for s in stops):
            raise bad_request("stop: at most 16 non-empty stop strings", "stop")
        out["stop"] = stops
    return out


def passthrough_params(req: ChatRequest | CompletionRequest, limits: ServeLimits) -> SamplingParams:
    """The request's own sampling parameters (OpenAI's defaults: temperature 1, top_p 1;
    ``max_tokens`` the server's default for chat, 16 for completions as in the API)."""
    over = sampling_overrides(req, limits)
    default_mt = limits.default_max_tokens if isinstance(req, ChatRequest) else min(16, limits.max_tokens)
    try:
        return SamplingParams(temperature=over.get("temperature", 1.0), top_p=over.get("top_p", 1.0),
                              max_tokens=over.get("max_tokens", default_mt), stop=over.get("stop", []),
                              n=req.n, seed=req.seed)
    except ValidationError as e:
        err = e.errors()[0]
        raise ApiError(400, f"{dotted(err['loc'])}: {err['msg']}", param=dotted(err["loc"])) from None
