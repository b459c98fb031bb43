"""Chat-template rendering, the one implementation every engine with a tokenizer uses.

:func:`render` turns a :class:`~ttc.types.Prompt` into the text a model reads: a raw
``text`` prompt as is (plus its ``assistant_prefix``); chat ``messages`` through the
tokenizer's chat template, opening a new assistant turn (``add_generation_prompt``) or,
with a partial ``assistant_prefix``, continuing it (``continue_final_message=True``:
the model writes on from the prefix instead of starting a new answer).

Some templates alter the final message (trim its trailing space, drop it); the rendered
text then does not end with the prefix. With ``fallback`` (the default, for an engine
that sends the text itself) the assistant turn is opened instead and the prefix
appended verbatim, so the model continues exactly the prefix. Without it the text is
what the template makes, as a server applying the same template does (what
``OpenAIEngine`` counts for its chat endpoint, where the server renders).

``VLLMEngine`` tokenizes the result and sends token ids; ``OpenAIEngine`` sends it to
``/completions`` when it applies the template locally, and counts prompt tokens with it.

**Tools.** A prompt's ``tools`` go to the template as its ``tools`` argument, and
assistant ``tool_calls`` and ``"tool"`` result messages as OpenAI-shaped messages
(Hugging Face's tool-use convention). A template that ignores them (SmolLM2's renders
only role and content) is detected once per template by rendering a probe, and the
conversation is then rewritten in the Hermes / Qwen 2.5 format (:func:`hermes_messages`):
the tool schemas in the system message inside ``<tools></tools>`` with the instruction to
answer with ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``, earlier calls as
such blocks in the assistant's content, and tool results as user messages inside
``<tool_response></tool_response>``. :mod:`ttc.tool_calls` reads the calls back.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from ttc.types import Message, Prompt

__all__ = ["chat_messages", "hermes_messages", "message_dict", "render", "template_renders_tools"]


def message_dict(m: Message) -> dict[str, Any]:
    """One message as a chat-API dict: role and content, and the tool fields it has
    (``tool_calls`` in the OpenAI wire shape)."""
    d: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls is not None:
        d["tool_calls"] = [c.to_openai() for c in m.tool_calls]
    if m.tool_call_id is not None:
        d["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        d["name"] = m.name
    return d


def chat_messages(prompt: Prompt, *, with_prefix: bool = True) -> list[dict[str, Any]]:
    """The prompt's messages as chat-API dicts; with ``with_prefix``, ending with the
    partial assistant message when the prompt has an ``assistant_prefix``."""
    if prompt.messages is None:
        raise ValueError("prompt: a text prompt has no chat messages")
    msgs = [message_dict(m) for m in prompt.messages]
    if with_prefix and prompt.assistant_prefix:
        msgs.append({"role": "assistant", "content": prompt.assistant_prefix})
    return msgs


_HERMES_TOOLS = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def _choice_line(prompt: Prompt) -> str:
    c = prompt.tool_choice
    if isinstance(c, dict):
        return f"\n\nYou must call the function {c['function']['name']!r}."
    if c == "required":
        return "\n\nYou must call one of the functions."
    return ""


def hermes_messages(prompt: Prompt, msgs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """``msgs`` (chat-API dicts of ``prompt``) in the Hermes / Qwen 2.5 tool format, for a
    template that renders only role and content (see the module doc). Tool schemas join
    the system message (one is added if there is none) unless ``tool_choice="none"``."""
    out: list[dict[str, str]] = []
    if prompt.tools and prompt.tool_choice != "none":
        block = _HERMES_TOOLS.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in prompt.tools))
        block += _choice_line(prompt)
        if msgs and msgs[0]["role"] == "system":
            out.append({"role": "system", "content": f"{msgs[0]['content']}\n\n{block}"})
            msgs = msgs[1:]
        else:
            out.append({"role": "system", "content": block})
    for m in msgs:
        if m["role"] == "tool":
            piece = f"<tool_response>\n{m['content']}\n</tool_response>"
            if out and out[-1]["role"] == "user" and out[-1]["content"].endswith("</tool_response>"):
                out[-1]["content"] += "\n" + piece  # consecutive results: one user turn
            else:
                out.append({"role": "user", "content": piece})
            continue
        content = m["content"]
        for c in m.get("tool_calls") or []:
            fn = c["function"]
            args = fn["arguments"].strip() or "{}"
            call = f'{{"name": {json.dumps(fn["name"])}, "arguments": {args}}}'
            content += ("\n" if content else "") + f"<tool_call>\n{call}\n</tool_call>"
        out.append({"role": m["role"], "content": content})
    return out


_PROBE = "ttc_probe_7f3a"
_probed: dict[str, tuple[bool, bool]] = {}
_probe_lock = threading.Lock()


def _renders(tokenizer: Any, msgs: list[dict[str, Any]], marks: tuple[str, ...], **kw: Any) -> bool:
    try:
        text = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, **kw)
    except Exception:  # noqa: BLE001 - a template that refuses the probe does not render it
        return False
    return isinstance(text, str) and all(m in text for m in marks)


def template_renders_tools(tokenizer: Any) -> tuple[bool, bool]:
    """(the chat template renders a ``tools`` argument, it renders assistant tool calls
    and tool results): probed once per template text."""
    key = str(getattr(tokenizer, "chat_template", None))
    with _probe_lock:
        hit = _probed.get(key)
    if hit is not None:
        return hit
    tool = {"type": "function", "function": {"name": f"{_PROBE}_fn", "description": "probe",
                                             "parameters": {"type": "object", "properties": {}}}}
    user = {"role": "user", "content": "hi"}
    call = {"id": "call_probe", "type": "function", "function": {"name": f"{_PROBE}_call", "arguments": "{}"}}
    convo = [user, {"role": "assistant", "content": "", "tool_calls": [call]},
             {"role": "tool", "content": f"{_PROBE}_result", "tool_call_id": "call_probe"}]
    hit = (_renders(tokenizer, [user], (f"{_PROBE}_fn",), tools=[tool]),
           _renders(tokenizer, convo, (f"{_PROBE}_call", f"{_PROBE}_result"), tools=[tool]))
    with _probe_lock:
        _probed[key] = hit
    return hit


def _template_input(tokenizer: Any, prompt: Prompt, kw: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages and template arguments for ``prompt`` (tools natively or in the
    Hermes format, see the module doc)."""
    msgs = chat_messages(prompt, with_prefix=False)
    has_tool_turns = any(m.tool_calls is not None or m.role == "tool" for m in prompt.messages or [])
    if not prompt.tools and not has_tool_turns:
        return msgs, kw
    tools_ok, turns_ok = template_renders_tools(tokenizer)
    if (prompt.tools and not tools_ok) or (has_tool_turns and not turns_ok):
        return hermes_messages(prompt, msgs), kw
    if prompt.tools and prompt.tool_choice != "none":
        kw = {**kw, "tools": prompt.tools}
    return msgs, kw


def render(
    tokenizer: Any, prompt: Prompt, template_kwargs: dict[str, Any] | None = None, *, fallback: bool = True
) -> tuple[str, bool]:
    """The prompt as the model reads it, and whether it is chat-templated (then the
    template wrote the special tokens: tokenize it without adding them again)."""
    if prompt.text is not None:
        return prompt.text + prompt.assistant_prefix, False
    msgs, kw = _template_input(tokenizer, prompt, template_kwargs or {})
    prefix = prompt.assistant_prefix
    if not prefix:
        return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, **kw), True
    rendered = tokenizer.apply_chat_template(
        msgs + [{"role": "assistant", "content": prefix}],
        continue_final_message=True,
        add_generation_prompt=False,
        tokenize=False,
        **kw,
    )
    if fallback and not rendered.endswith(prefix):
        # The template altered the partial message: open the assistant turn, append it verbatim.
        rendered = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, **kw) + prefix
    return rendered, True
