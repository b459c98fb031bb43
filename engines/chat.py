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
"""

from __future__ import annotations

from typing import Any

from ttc.types import Prompt

__all__ = ["chat_messages", "render"]


def chat_messages(prompt: Prompt, *, with_prefix: bool = True) -> list[dict[str, str]]:
    """The prompt's messages as chat-API dicts; with ``with_prefix``, ending with the
    partial assistant message when the prompt has an ``assistant_prefix``."""
    if prompt.messages is None:
        raise ValueError("prompt: a text prompt has no chat messages")
    msgs = [{"role": m.role, "content": m.content} for m in prompt.messages]
    if with_prefix and prompt.assistant_prefix:
        msgs.append({"role": "assistant", "content": prompt.assistant_prefix})
    return msgs


def render(
    tokenizer: Any, prompt: Prompt, template_kwargs: dict[str, Any] | None = None, *, fallback: bool = True
) -> tuple[str, bool]:
    """The prompt as the model reads it, and whether it is chat-templated (then the
    template wrote the special tokens: tokenize it without adding them again)."""
    if prompt.text is not None:
        return prompt.text + prompt.assistant_prefix, False
    kw = template_kwargs or {}
    msgs = chat_messages(prompt, with_prefix=False)
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
