"""Tool calls as data: reading them out of generated text, checking their arguments,
the key self-consistency votes by, and the OpenAI wire shape.

**Reading calls** (:func:`split_tool_calls`). Engines that see the raw text (in-process
vLLM, a server's ``/completions`` route, the scripted engine) read calls in two forms:

* Hermes / Qwen 2.5 (the format the fallback rendering of :mod:`engines.chat` asks for,
  and vLLM's ``hermes`` tool parser reads): ``<tool_call>{"name": ..., "arguments":
  {...}}</tool_call>``, any number of blocks; a last block cut off (no closing tag, e.g.
  at ``max_tokens``) still counts.
* A bare JSON object ``{"name": ..., "arguments": {...}}`` (or ``"parameters"``), or a
  list of them: what structured outputs produce under a named or ``"required"``
  ``tool_choice``, and what small models write unprompted. Prose before it is the
  message's content.

Text is data: it is only ever decoded with :mod:`json` (never evaluated), only its first
:data:`MAX_TEXT_CHARS` characters are read, at most :data:`MAX_CALLS` calls are taken, and
nesting too deep for the decoder counts as malformed. A block whose JSON does not parse
but names a function (``"name": "f"``) is kept as a call whose ``arguments`` are the raw
rest of the block: a malformed call is still a call (it scores 0 and casts no vote), as
vLLM's own parser reports it.

**Checking arguments** (:func:`check_call`). ``arguments`` must decode to a JSON object
(OpenAI's contract) and the function must be one of the prompt's tools; then the object
is validated against the tool's ``parameters`` schema with ``jsonschema`` when it is
installed (its draft picked from ``$schema``, Draft 2020-12 by default; a schema that is
itself invalid falls back to the plain checks), else with plain checks: every
``required`` property present, the JSON type of every declared property with a
``type``, no undeclared property when ``additionalProperties`` is false.

**Voting** (:func:`vote_key`): Wang et al. (2023)'s self-consistency votes over final
answers; for tool calls the answer is the set of calls, compared by function name and
canonical JSON arguments (keys sorted, compact separators, UTF-8 kept), so
``{"b": 1, "a": 2}`` and ``{"a":2,"b":1}`` are one vote. Parallel calls are compared as a
multiset (sorted). **Choice made:** a sample with any call that fails :func:`check_call`
casts no vote (its key is None, like a text sample without a parseable answer), so
malformed arguments can never win a vote; if no sample has a valid call, the vote has no
winner. The key carries a short digest of the canonical form (``tool_calls[<sha256:12>]:
f({...})``), so answer normalisation (which folds case and spacing) cannot merge two
different calls.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from ttc.types import Prompt, ToolCall

__all__ = [
    "MAX_CALLS",
    "MAX_TEXT_CHARS",
    "call_schema",
    "canonical_arguments",
    "check_arguments",
    "check_call",
    "parse_arguments",
    "parse_tool_calls",
    "split_tool_calls",
    "to_openai",
    "tool_calls_for",
    "vote_key",
    "wants_tool_calls",
]

#: Characters of a generated text read for calls (the rest is ignored).
MAX_TEXT_CHARS = 100_000
#: Calls taken from one text at most.
MAX_CALLS = 32
#: Characters of one call's arguments decoded at most (longer ones are malformed).
MAX_ARGUMENT_CHARS = 50_000

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
_NAME = re.compile(r'"name"\s*:\s*"([A-Za-z0-9_.:-]{1,64})"')
_ARGS = re.compile(r'"(?:arguments|parameters)"\s*:\s*')
_BARE = re.compile(r'[{\[]\s*(?:\{\s*)?"name"\s*:')
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")
_KEY_PREFIX = "tool_calls["


def _new_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _loads(text: str) -> Any:
    """``json.loads``, None when the text is no JSON (or nests too deep)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _arguments_text(args: Any) -> str:
    if args is None:
        return "{}"
    if isinstance(args, str):
        return args
    return json.dumps(args, ensure_ascii=False)


def _from_object(obj: Any) -> list[ToolCall]:
    """Calls from a decoded JSON value: an object with a string ``name`` (and
    ``arguments`` or ``parameters``), or a list of them."""
    items = obj if isinstance(obj, list) else [obj]
    calls = []
    for it in items[:MAX_CALLS]:
        if not isinstance(it, dict) or not isinstance(it.get("name"), str) or not it["name"]:
            continue
        if "function" in it and isinstance(it["function"], dict):  # the OpenAI wire shape
            it = it["function"]
        args = it.get("arguments", it.get("parameters"))
        calls.append(ToolCall(id=_new_id(), name=it["name"][:256], arguments=_arguments_text(args)))
    return calls


def _salvage(body: str) -> list[ToolCall]:
    """A call from JSON that does not parse (cut off, a stray brace): the function name
    it gives and the raw rest after ``"arguments":``, or nothing without a name."""
    m = _NAME.search(body[:512])
    if m is None:
        return []
    a = _ARGS.search(body, m.end()) or _ARGS.search(body)
    raw = body[a.end():].strip() if a is not None else ""
    try:
        _, end = json.JSONDecoder().raw_decode(raw)  # whole arguments followed by junk
        raw = raw[:end]
    except (ValueError, RecursionError):
        if raw.endswith("}") and raw.count("}") > raw.count("{"):
            raw = raw[:-1].rstrip()  # the outer object's closing brace
    return [ToolCall(id=_new_id(), name=m.group(1), arguments=raw)]


def _body_calls(body: str) -> list[ToolCall]:
    body = _FENCE.sub("", body.strip())
    obj = _loads(body)
    if obj is not None:
        return _from_object(obj)
    return _salvage(body)


def _hermes(text: str) -> tuple[str, list[ToolCall]]:
    content: list[str] = []
    calls: list[ToolCall] = []
    pos = 0
    while len(calls) < MAX_CALLS:
        i = text.find(_OPEN, pos)
        if i < 0:
            break
        content.append(text[pos:i])
        j = text.find(_CLOSE, i + len(_OPEN))
        end = len(text) if j < 0 else j
        calls.extend(_body_calls(text[i + len(_OPEN):end]))
        pos = len(text) if j < 0 else j + len(_CLOSE)
    content.append(text[pos:])
    return "".join(content).strip(), calls[:MAX_CALLS]


def _bare(text: str) -> tuple[str, list[ToolCall]]:
    m = _BARE.search(text)
    if m is None:
        return text, []
    start = m.start()
    rest = _FENCE.sub("", text[start:].strip())
    try:
        obj, _ = json.JSONDecoder().raw_decode(rest)
    except (ValueError, RecursionError):
        obj = None
    calls = _from_object(obj) if obj is not None else _salvage(rest)
    if not calls:
        return text, []
    head = text[:start].rstrip()
    head = head[:-7].rstrip() if head.endswith("```json") else head.removesuffix("```").rstrip()
    return head, calls


def split_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """(the text without its tool-call markup, the calls in it): Hermes blocks if any,
    else a bare JSON call (see the module doc). No calls: (``text``, [])."""
    head = text[:MAX_TEXT_CHARS]
    if _OPEN in head:
        content, calls = _hermes(head)
        return content, calls
    content, calls = _bare(head)
    return (content, calls) if calls else (text, [])


def parse_tool_calls(text: str) -> list[ToolCall] | None:
    """The calls in ``text`` (see :func:`split_tool_calls`), None if there are none."""
    return split_tool_calls(text)[1] or None


def wants_tool_calls(prompt: Prompt) -> bool:
    """The prompt offers tools and does not forbid calling them (``tool_choice="none"``)."""
    return bool(prompt.tools) and prompt.tool_choice != "none"


def tool_calls_for(prompt: Prompt, text: str) -> list[ToolCall] | None:
    """The calls an engine reports for a generation of ``prompt``: read from ``text``
    when the prompt offers tools (and does not forbid them), else None."""
    return parse_tool_calls(text) if wants_tool_calls(prompt) else None


# -- arguments --------------------------------------------------------------------------
def parse_arguments(arguments: str) -> dict[str, Any] | None:
    """A call's arguments as a JSON object, None when they are not one (malformed JSON,
    another JSON type, too long, nested too deep)."""
    if len(arguments) > MAX_ARGUMENT_CHARS:
        return None
    obj = _loads(arguments) if arguments.strip() else {}
    return obj if isinstance(obj, dict) else None


def canonical_arguments(arguments: str) -> str | None:
    """Canonical JSON of a call's arguments (keys sorted, compact), None if malformed."""
    obj = parse_arguments(arguments)
    if obj is None:
        return None
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list,), "object": (dict,), "null": (type(None),),
}


def _type_ok(value: Any, t: Any) -> bool:
    types = t if isinstance(t, list) else [t]
    for name in types:
        py = _JSON_TYPES.get(name) if isinstance(name, str) else None
        if py is None:
            return True  # a type this check does not know: not judged
        if isinstance(value, bool) and name in ("integer", "number"):
            continue
        if name == "integer" and isinstance(value, float) and value.is_integer():
            return True
        if isinstance(value, py):
            return True
    return False


def _plain_check(args: dict[str, Any], schema: dict[str, Any]) -> str | None:
    props = schema.get("properties") or {}
    for r in schema.get("required") or []:
        if r not in args:
            return f"required property {r!r} is missing"
    for k, v in args.items():
        spec = props.get(k) if isinstance(props, dict) else None
        if spec is None:
            if schema.get("additionalProperties") is False:
                return f"property {k!r} is not in the schema"
            continue
        if isinstance(spec, dict) and "type" in spec and not _type_ok(v, spec["type"]):
            return f"property {k!r}: {json.dumps(v)[:40]} is not of type {spec['type']}"
    return None


def check_arguments(args: dict[str, Any], schema: dict[str, Any] | None) -> str | None:
    """What is wrong with decoded arguments under a tool's ``parameters`` schema, or None
    (``jsonschema`` when installed, else the plain checks of the module doc)."""
    if not schema:
        return None
    try:
        import jsonschema
        from jsonschema import validators
    except ImportError:
        return _plain_check(args, schema)
    cls = validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError:
        return _plain_check(args, schema)
    err = jsonschema.exceptions.best_match(cls(schema).iter_errors(args))
    if err is None:
        return None
    where = "/".join(str(p) for p in err.absolute_path)
    return f"{where + ': ' if where else ''}{err.message[:200]}"


def _tool_functions(tools: Iterable[dict[str, Any]] | None) -> dict[str, dict[str, Any]] | None:
    if tools is None:
        return None
    return {t["function"]["name"]: t["function"] for t in tools}


def check_call(call: ToolCall, tools: Sequence[dict[str, Any]] | None = None) -> str | None:
    """What is wrong with one call, or None: arguments that are not a JSON object; with
    ``tools`` (OpenAI function tools), a function that is not one of them or arguments
    that fail its ``parameters`` schema."""
    fns = _tool_functions(tools)
    args = parse_arguments(call.arguments)
    if args is None:
        return f"{call.name}: arguments are not a JSON object: {call.arguments[:60]!r}"
    if fns is None:
        return None
    fn = fns.get(call.name)
    if fn is None:
        return f"{call.name}: not one of the tools {sorted(fns)}"
    problem = check_arguments(args, fn.get("parameters"))
    return None if problem is None else f"{call.name}: {problem}"


def vote_key(calls: Sequence[ToolCall] | None, tools: Sequence[dict[str, Any]] | None = None) -> str | None:
    """The answer a sample with ``calls`` votes for (see the module doc), None when it has
    none or any of them fails :func:`check_call`."""
    if not calls:
        return None
    parts = []
    for c in calls:
        if check_call(c, tools) is not None:
            return None
        parts.append(f"{c.name}({canonical_arguments(c.arguments)})")
    joined = "; ".join(sorted(parts))
    digest = hashlib.sha256(joined.encode("utf-8")).hexdigest()[:12]
    return f"{_KEY_PREFIX}{digest}]: {joined}"


def is_vote_key(answer: str | None) -> bool:
    """``answer`` is a tool-call vote key (:func:`vote_key`)."""
    return answer is not None and answer.startswith(_KEY_PREFIX)


def to_openai(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """The calls in the OpenAI wire shape (``message.tool_calls``)."""
    return [c.to_openai() for c in calls]


# -- constrained decoding -------------------------------------------------------------------
def _one_call(fn: dict[str, Any]) -> dict[str, Any]:
    params = fn.get("parameters") or {"type": "object"}
    return {
        "type": "object",
        "properties": {"name": {"type": "string", "enum": [fn["name"]]}, "arguments": params},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def call_schema(prompt: Prompt) -> dict[str, Any] | None:
    """The JSON schema a generation must follow under the prompt's ``tool_choice``: one
    call ``{"name", "arguments"}`` of the named function, or of any tool for
    ``"required"``; None when the choice leaves the model free (``"auto"``, ``"none"``,
    no tools)."""
    choice = prompt.tool_choice
    if not prompt.tools or choice in (None, "auto", "none"):
        return None
    if isinstance(choice, dict):
        fn = prompt.tool(choice["function"]["name"])
        assert fn is not None  # Prompt checked the name
        return _one_call(fn)
    options = [_one_call(t["function"]) for t in prompt.tools]
    return options[0] if len(options) == 1 else {"anyOf": options}
