"""Tool calls: the core types (messages, tools, tool_choice, calls on generations and samples)."""

import copy
import json

import pydantic
import pytest

from ttc.types import Generation, Message, Prompt, Sample, StreamDelta, ToolCall

CALC = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}
NAMED = {"type": "function", "function": {"name": "calculator"}}


def _err(fn, field):  # type: ignore[no-untyped-def]
    with pytest.raises((pydantic.ValidationError, ValueError)) as ei:
        fn()
    assert field in str(ei.value), str(ei.value)


def _user(text="What is 6*7?"):  # type: ignore[no-untyped-def]
    return Message(role="user", content=text)


def test_tool_call_accepts_the_openai_shape_and_writes_it_back():
    wire = {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'}}
    c = ToolCall.model_validate(wire)
    assert (c.id, c.name, c.arguments) == ("call_1", "calculator", '{"expression": "6*7"}')
    assert c.to_openai() == wire
    # arguments given as an object become compact JSON text; malformed text is kept as data
    assert ToolCall(id="a", name="f", arguments={"x": 1}).arguments == '{"x":1}'  # type: ignore[arg-type]
    assert ToolCall(id="a", name="f", arguments='{"x": ').arguments == '{"x": '
    _err(lambda: ToolCall.model_validate({"id": "a", "type": "code", "function": {"name": "f"}}), "tool_call.type")
    _err(lambda: ToolCall(id="a", name="", arguments="{}"), "name")


def test_conversation_with_tool_calls_and_results_is_a_valid_prompt():
    p = Prompt(
        messages=[
            _user(),
            Message.model_validate({"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression":"6*7"}'}}]}),
            Message(role="tool", content="42", tool_call_id="c1", name="calculator"),
        ],
        tools=[CALC],
        tool_choice="auto",
    )
    assert p.messages[1].content == "" and p.messages[1].tool_calls[0].name == "calculator"
    assert p.tool_names == ["calculator"] and p.tool("calculator")["parameters"]["required"] == ["expression"]
    assert p.tool("nope") is None
    assert Prompt.model_validate_json(p.model_dump_json()) == p
    # only an assistant tool-call message: not "every message is empty"
    Prompt(messages=[_user(" "), Message(role="assistant", content="", tool_calls=[ToolCall(id="c", name="f")]),
                     Message(role="tool", content="", tool_call_id="c")])
    # the last message may still not be an assistant message
    _err(lambda: Prompt(messages=[_user(), Message(role="assistant", content="", tool_calls=[ToolCall(id="c", name="f")])]),
         "last message is an assistant")


def test_message_tool_fields_are_checked():
    _err(lambda: Message(role="tool", content="42"), "tool_call_id")
    _err(lambda: Message(role="user", content="x", tool_call_id="c1"), "tool_call_id")
    _err(lambda: Message(role="user", content="x", tool_calls=[ToolCall(id="c", name="f")]), "tool_calls")


def test_bad_tools_and_tool_choice_name_the_field():
    msgs = [_user()]
    _err(lambda: Prompt(messages=msgs, tools=[{"type": "retrieval"}]), "tools[0].type")
    _err(lambda: Prompt(messages=msgs, tools=[{"type": "function"}]), "tools[0].function")
    _err(lambda: Prompt(messages=msgs, tools=[{"type": "function", "function": {"name": "has space"}}]),
         "tools[0].function.name")
    _err(lambda: Prompt(messages=msgs, tools=[CALC, {"type": "function", "function": {"name": "f", "parameters": []}}]),
         "tools[1].function.parameters")
    _err(lambda: Prompt(messages=msgs, tools=[{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "required": "x"}}}]), "tools[0].function.parameters.required")
    _err(lambda: Prompt(messages=msgs, tools=[CALC, CALC]), "defined twice")
    _err(lambda: Prompt(messages=msgs, tools=[{**CALC, "strict": True}]), "tools[0]: unknown field 'strict'")
    _err(lambda: Prompt(text="hi", tools=[CALC]), "prompt.tools")
    _err(lambda: Prompt(messages=msgs, tools=[CALC], tool_choice="sometimes"), "tool_choice")
    _err(lambda: Prompt(messages=msgs, tool_choice="required"), "tool_choice")
    _err(lambda: Prompt(messages=msgs, tool_choice=NAMED), "no tools")
    _err(lambda: Prompt(messages=msgs, tools=[CALC], tool_choice={"type": "function", "function": {"name": "search"}}),
         "tool_choice.function.name")
    _err(lambda: Prompt(messages=msgs, tools=[CALC], tool_choice={"type": "function"}), "tool_choice")
    for ok in ("none", "auto", "required", NAMED):
        assert Prompt(messages=msgs, tools=[CALC], tool_choice=ok).tool_choice == ok


def test_tool_calls_pass_from_generation_to_sample():
    calls = [ToolCall(id="c1", name="calculator", arguments='{"expression":"6*7"}')]
    g = Generation(text='<tool_call>{"name": "calculator"}</tool_call>', num_tokens=9, tool_calls=calls)
    s = Sample.from_generation(0, g)
    assert s.tool_calls == calls
    assert Sample.from_generation(1, Generation(text="42", num_tokens=1)).tool_calls is None
    assert Generation.model_validate_json(g.model_dump_json()) == g
    assert StreamDelta(text="", tool_calls=calls).tool_calls == calls


def test_dumps_without_tools_are_unchanged():
    """Prompts, messages, generations and samples without tool fields dump as before the
    fields existed, so recorded pools keep their digests."""
    assert Prompt.of("hi").model_dump() == {"text": None, "messages": [{"role": "user", "content": "hi"}],
                                            "assistant_prefix": ""}
    assert "tool_calls" not in Generation(text="x", num_tokens=1).model_dump_json()
    assert "tool_calls" not in Sample(index=0, text="x", num_tokens=1).model_dump()
    assert "tool_calls" not in StreamDelta(text="x").model_dump()


# -- reading calls out of text -------------------------------------------------------------
from ttc.tool_calls import (  # noqa: E402
    MAX_CALLS,
    call_schema,
    canonical_arguments,
    check_arguments,
    check_call,
    is_vote_key,
    parse_tool_calls,
    split_tool_calls,
    to_openai,
    tool_calls_for,
    vote_key,
)


def _calls(text):  # type: ignore[no-untyped-def]
    return [(c.name, c.arguments) for c in parse_tool_calls(text) or []]


def test_hermes_blocks_bare_json_and_lists_are_read():
    assert _calls('<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n</tool_call>') == [
        ("calculator", '{"expression": "6*7"}')]
    content, calls = split_tool_calls('Let me compute. <tool_call>{"name": "a", "arguments": {}}</tool_call>'
                                      '<tool_call>{"name": "b", "parameters": {"x": 1}}</tool_call>')
    assert content == "Let me compute." and [(c.name, c.arguments) for c in calls] == [("a", "{}"), ("b", '{"x": 1}')]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)
    assert _calls('{"name": "calculator", "arguments": {"expression": "2+2"}}') == [
        ("calculator", '{"expression": "2+2"}')]
    assert _calls('```json\n{"name": "f", "arguments": {"a": [1, 2]}}\n```') == [("f", '{"a": [1, 2]}')]
    assert _calls('[{"name": "f", "arguments": {}}, {"name": "g", "arguments": {"y": null}}]') == [
        ("f", "{}"), ("g", '{"y": null}')]
    # the OpenAI wire shape written as text
    assert _calls('{"type": "function", "name": "f", "function": {"name": "f", "arguments": "{\\"q\\": 1}"}}') == [
        ("f", '{"q": 1}')]


def test_text_without_calls_is_not_a_call():
    for text in ("The answer is 42.", '{"answer": 42}', "[1, 2, 3]", '{"name": 5, "arguments": {}}',
                 "<tool_call>not json, no name</tool_call>", ""):
        assert parse_tool_calls(text) is None, text
    assert split_tool_calls("The answer is 42.") == ("The answer is 42.", [])


def test_malformed_calls_are_kept_as_calls_with_their_raw_arguments():
    # cut off at max_tokens: no closing tag, JSON incomplete
    assert _calls('<tool_call>\n{"name": "calculator", "arguments": {"expression": "23*') == [
        ("calculator", '{"expression": "23*')]
    # arguments as a JSON string or a list: kept as the model wrote them
    assert _calls('{"name": "calculator", "arguments": "23"}') == [("calculator", "23")]
    assert _calls('{"name": "calculator", "arguments": [23]}') == [("calculator", "[23]")]
    (c,) = parse_tool_calls('<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}}</tool_call>')
    assert c.name == "calculator" and check_call(c) is None  # one stray brace: the call is salvaged


def test_reading_is_bounded():
    many = "".join(f'<tool_call>{{"name": "f{i}", "arguments": {{}}}}</tool_call>' for i in range(MAX_CALLS + 10))
    assert len(parse_tool_calls(many)) == MAX_CALLS
    deep = '{"name": "f", "arguments": ' + "[" * 100_000 + "]" * 100_000 + "}"
    calls = parse_tool_calls(deep)  # nesting past the decoder's depth: malformed, not a crash
    assert calls is not None and check_call(calls[0]) is not None
    late = "x" * 200_000 + '<tool_call>{"name": "f", "arguments": {}}</tool_call>'
    assert parse_tool_calls(late) is None  # only the first MAX_TEXT_CHARS are read


def test_calls_are_read_only_when_the_prompt_offers_tools():
    text = '<tool_call>{"name": "calculator", "arguments": {"expression": "1"}}</tool_call>'
    assert tool_calls_for(Prompt(messages=[_user()], tools=[CALC]), text) is not None
    assert tool_calls_for(Prompt(messages=[_user()]), text) is None
    assert tool_calls_for(Prompt(messages=[_user()], tools=[CALC], tool_choice="none"), text) is None


# -- checking and voting -----------------------------------------------------------------------
def _call(args, name="calculator"):  # type: ignore[no-untyped-def]
    return ToolCall(id="x", name=name, arguments=args)


def test_vote_key_is_canonical_json_and_malformed_calls_cast_no_vote():
    a = vote_key([_call('{"expression": "6*7", "precision": 2}')])
    b = vote_key([_call('{"precision":2,"expression":"6*7"}')])
    assert a == b and is_vote_key(a) and 'calculator({"expression":"6*7","precision":2})' in a
    assert vote_key([_call('{"expression": "6*8"}')]) != vote_key([_call('{"expression": "6*7"}')])
    # case matters in arguments; the key's digest keeps answer normalisation from folding it
    from ttc.answers import normalize
    assert normalize(vote_key([_call('{"city": "Paris"}')])) != normalize(vote_key([_call('{"city": "paris"}')]))
    # parallel calls compare as a multiset
    assert vote_key([_call("{}", "a"), _call("{}", "b")]) == vote_key([_call("{}", "b"), _call("{}", "a")])
    for bad in ('"23"', "[23]", '{"expression": "23*', "not json"):
        assert vote_key([_call(bad)]) is None, bad
    assert vote_key([_call('{"expression": "1"}'), _call("oops")]) is None
    assert vote_key(None) is None and vote_key([]) is None
    assert canonical_arguments(' { "b" : 1 , "a" : "é" } ') == '{"a":"é","b":1}'
    assert canonical_arguments("") == "{}"  # no arguments: the empty object


def test_calls_are_checked_against_the_tools_schema():
    tools = [CALC]
    assert check_call(_call('{"expression": "6*7"}'), tools) is None
    assert "not one of the tools" in check_call(_call("{}", "search"), tools)
    assert "expression" in check_call(_call("{}"), tools)  # required property missing
    assert "expression" in check_call(_call('{"expression": 42}'), tools)  # wrong type
    assert vote_key([_call('{"expression": 42}')], tools) is None
    assert vote_key([_call('{"expression": 42}')]) is not None  # without tools only the JSON is checked
    strict = {"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": False}
    assert check_arguments({"n": 3}, strict) is None
    assert check_arguments({"n": 3, "m": 1}, strict) is not None
    assert check_arguments({"n": True}, strict) is not None


def test_plain_checks_without_jsonschema(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import fails
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": ["string", "null"]}},
              "required": ["n"], "additionalProperties": False}
    assert check_arguments({"n": 3, "s": None}, schema) is None
    assert check_arguments({"n": 3.0}, schema) is None  # 3.0 is an integer in JSON
    assert "required property 'n'" in check_arguments({}, schema)
    assert "'n'" in check_arguments({"n": "3"}, schema)
    assert "'n'" in check_arguments({"n": True}, schema)
    assert "'x'" in check_arguments({"n": 1, "x": 0}, schema)
    assert check_call(_call('{"expression": "1"}'), [CALC]) is None


def test_an_invalid_schema_falls_back_to_the_plain_checks():
    bad = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "minProperties": "two"}
    assert check_arguments({"n": 1}, bad) is None
    assert "required property 'n'" in check_arguments({}, bad)


def test_to_openai_and_call_schema():
    assert to_openai([ToolCall(id="c1", name="f", arguments="{}")]) == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    other = {"type": "function", "function": {"name": "search", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
    named = call_schema(Prompt(messages=[_user()], tools=[CALC, other], tool_choice=NAMED))
    assert named["properties"]["name"] == {"type": "string", "enum": ["calculator"]}
    assert named["properties"]["arguments"] == CALC["function"]["parameters"]
    required = call_schema(Prompt(messages=[_user()], tools=[CALC, other], tool_choice="required"))
    assert [o["properties"]["name"]["enum"] for o in required["anyOf"]] == [["calculator"], ["search"]]
    for choice in ("auto", "none", None):
        assert call_schema(Prompt(messages=[_user()], tools=[CALC], tool_choice=choice)) is None


# -- rendering ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    from ttc.models import bundled_model_path

    return AutoTokenizer.from_pretrained(bundled_model_path())


def _conversation(**kw):  # type: ignore[no-untyped-def]
    return Prompt(messages=[
        Message(role="system", content="Be brief."), _user(),
        Message(role="assistant", content="", tool_calls=[ToolCall(id="c1", name="calculator",
                                                                   arguments='{"expression": "6*7"}')]),
        Message(role="tool", content="42", tool_call_id="c1"), Message(role="tool", content="ok", tool_call_id="c1"),
        _user("And plus one?")], **kw)


def test_a_template_without_tools_gets_the_hermes_rendering(tokenizer):
    from engines.chat import render, template_renders_tools

    assert template_renders_tools(tokenizer) == (False, False)  # SmolLM2: role and content only
    text, templated = render(tokenizer, _conversation(tools=[CALC], tool_choice=NAMED))
    assert templated
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nBe brief.\n\n# Tools") and '"name": "calculator"' in system
    assert "<tool_call>" in system and "You must call the function 'calculator'." in system
    assert '<|im_start|>assistant\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n' \
           "</tool_call><|im_end|>" in text
    # consecutive results are one user turn
    assert "<|im_start|>user\n<tool_response>\n42\n</tool_response>\n<tool_response>\nok\n</tool_response>" in text
    assert text.endswith("<|im_start|>assistant\n")
    # tool_choice="none": the earlier turns are still rendered, the schemas are not offered
    none = render(tokenizer, _conversation(tools=[CALC], tool_choice="none"))[0]
    assert "# Tools" not in none and "<tool_response>" in none


def test_a_template_with_tools_renders_them_itself(tokenizer):
    from engines.chat import render, template_renders_tools

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = (
        "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}\n{% endif %}"
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}"
        "{% for c in m.tool_calls or [] %}CALL {{ c.function.name }} {{ c.function.arguments }}{% endfor %}"
        "{% if m.tool_call_id %} (for {{ m.tool_call_id }}){% endif %}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")
    assert template_renders_tools(tok) == (True, True)
    text = render(tok, _conversation(tools=[CALC]))[0]
    assert text.startswith("TOOLS:calculator;<system>Be brief.")  # HF templates trim block newlines
    assert '<assistant>CALL calculator {"expression": "6*7"}' in text and "<tool>42 (for c1)" in text
    assert "<tool_call>" not in text
    assert not render(tok, _conversation(tools=[CALC], tool_choice="none"))[0].startswith("TOOLS")


# -- the OpenAI wire -------------------------------------------------------------------------
def _wire():  # type: ignore[no-untyped-def]
    from engines.openai_wire import OpenAIWire

    return OpenAIWire("m", endpoint="chat", prefill="continue_final_message", tokenizer=None, template_tokens=64,
                      continuous_usage_stats=False)


def test_openai_body_carries_tools_and_tool_messages():
    from ttc.types import SamplingParams

    p = _conversation(tools=[CALC], tool_choice=NAMED)
    body = _wire().body(p, SamplingParams(max_tokens=64), stream=False)
    assert body["tools"] == [CALC] and body["tool_choice"] == NAMED
    assert body["messages"][2] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'}}]}
    assert body["messages"][3] == {"role": "tool", "content": "42", "tool_call_id": "c1"}
    plain = _wire().body(Prompt.of("hi"), SamplingParams(), stream=False)
    assert "tools" not in plain and "tool_choice" not in plain
    # the prompt bound without a tokenizer grows with the schemas and the earlier calls
    w = _wire()
    assert w.count_prompt_tokens(p) >= w.count_prompt_tokens(_conversation()) + len(json.dumps(CALC))


def test_openai_replies_tool_calls_are_read():
    from engines.openai_wire import parse_choices

    wire_call = {"id": "call_9", "type": "function", "function": {"name": "calculator", "arguments": '{"expression":"1"}'}}
    (text, finish, _, _, calls), = parse_choices(
        [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [wire_call]},
          "finish_reason": "tool_calls"}], "chat")
    assert (text, finish) == ("", "stop") and calls == [ToolCall.model_validate(wire_call)]
    # no tool_calls field: read from the text only when the prompt wants calls
    hermes = [{"index": 0, "message": {"content": '<tool_call>{"name": "f", "arguments": {}}</tool_call>'},
               "finish_reason": "stop"}]
    assert parse_choices(hermes, "chat")[0][4] is None
    assert parse_choices(hermes, "chat", text_calls=True)[0][4][0].name == "f"
    with pytest.raises(TypeError):
        parse_choices([{"message": {"content": None, "tool_calls": "f()"}}], "chat")
    # token counts share the billed total by what each choice generated, calls included
    gens = _wire().generations({"choices": [
        {"index": 0, "message": {"content": None, "tool_calls": [wire_call]}, "finish_reason": "tool_calls"},
        {"index": 1, "message": {"content": "x"}, "finish_reason": "stop"}]}, "chat",
        None, 64)
    assert gens[0].num_tokens > gens[1].num_tokens and gens[0].tool_calls[0].id == "call_9"


def test_openai_streamed_tool_call_fragments_are_joined():
    from engines.openai_wire import StreamState
    from ttc.types import Usage

    st = StreamState("chat", Usage(prompt_tokens=10, completion_tokens=64), _wire())

    def chunk(delta, finish=None):  # type: ignore[no-untyped-def]
        return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    ds = [st.delta(chunk({"role": "assistant", "tool_calls": [
              {"index": 0, "id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": ""}}]})),
          st.delta(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"expression": '}}]})),
          st.delta(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"6*7"}'}}]})),
          st.delta(chunk({"tool_calls": [{"index": 1, "id": "call_2", "function": {"name": "g", "arguments": "{}"}}]})),
          st.delta(chunk({}, "tool_calls"))]
    assert all(d is not None for d in ds) and sum(d.num_tokens for d in ds) == 4
    assert ds[-1].finish_reason == "stop"
    assert [(c.id, c.name, c.arguments) for c in st.tool_calls()] == [
        ("call_1", "calculator", '{"expression": "6*7"}'), ("call_2", "g", "{}")]
    assert st.text_bytes >= len('calculator{"expression": "6*7"}g{}')
    with pytest.raises(ValueError, match="index"):
        st.delta(chunk({"tool_calls": [{"index": 10_000, "function": {"arguments": "x"}}]}))
    # text calls (a server without a tool parser) when the prompt wants them
    st2 = StreamState("chat", Usage(prompt_tokens=10, completion_tokens=64), _wire(), text_calls=True)
    st2.delta(chunk({"content": '<tool_call>{"name": "f", '}))
    st2.delta(chunk({"content": '"arguments": {"a": 1}}</tool_call>'}, "stop"))
    assert [(c.name, c.arguments) for c in st2.tool_calls()] == [("f", '{"a": 1}')]


# -- engines and strategies ----------------------------------------------------------------------
CALL_42 = '<tool_call>{"name": "calculator", "arguments": {"expression": "6*7"}}</tool_call>'
CALL_42_SPACED = '<tool_call>\n{"arguments": {"expression":"6*7"}, "name": "calculator"}\n</tool_call>'
CALL_43 = '<tool_call>{"name": "calculator", "arguments": {"expression": "6*8"}}</tool_call>'
CALL_BAD = '<tool_call>{"name": "calculator", "arguments": "6*7"}</tool_call>'


def _tool_prompt(choice="required"):  # type: ignore[no-untyped-def]
    return Prompt(messages=[_user()], tools=[CALC], tool_choice=choice)


async def test_scripted_engine_reports_scripted_calls_generated_and_streamed():
    from ttc.engines import ScriptedEngine
    from ttc.types import SamplingParams

    e = ScriptedEngine([CALL_42, "The answer is 42."])
    assert e.capabilities.tools
    r = await e.generate(_tool_prompt(), SamplingParams(n=2))
    assert r.generations[0].tool_calls[0].name == "calculator" and r.generations[1].tool_calls is None
    deltas = [d async for d in e.stream(_tool_prompt(), SamplingParams())]
    assert deltas[-1].tool_calls[0].arguments == '{"expression": "6*7"}'
    assert all(d.tool_calls is None for d in deltas[:-1])
    r = await e.generate(Prompt(messages=[_user()]), SamplingParams())  # no tools: text only
    assert r.generations[0].tool_calls is None


async def test_an_engine_without_tools_refuses_them():
    from ttc.engine import Capabilities
    from ttc.engines import ScriptedEngine
    from ttc.types import SamplingParams

    e = ScriptedEngine(["x"])
    e.capabilities = Capabilities()
    with pytest.raises(ValueError, match="prompt.tools"):
        await e.generate(_tool_prompt(), SamplingParams())


async def test_with_tool_calls_marks_the_last_delta_and_closes_the_source():
    from engines.outputs import with_tool_calls

    closed = []

    async def source():  # type: ignore[no-untyped-def]
        try:
            yield StreamDelta(text='{"name": "f", ', num_tokens=3)
            yield StreamDelta(text='"arguments": {}}', num_tokens=3, finish_reason="stop")
        finally:
            closed.append(True)

    out = [d async for d in with_tool_calls(source())]
    assert out[0].tool_calls is None and out[1].tool_calls[0].name == "f" and closed
    it = with_tool_calls(source())
    await it.__anext__()
    await it.aclose()
    assert len(closed) == 2


def test_self_consistency_votes_on_tool_calls():
    """Canonical arguments vote together, malformed calls abstain, and the chosen sample
    keeps its calls."""
    from ttc.engines import ScriptedEngine
    from ttc.registry import build_from_spec

    e = ScriptedEngine([CALL_BAD, CALL_43, CALL_42, CALL_BAD, CALL_42_SPACED, CALL_BAD])
    r = build_from_spec("sc:rule=fixed_n,max=6").run_sync(_tool_prompt(), e, seed=0)
    assert len(r.samples) == 6 and r.answer is not None and is_vote_key(r.answer)
    assert r.chosen.tool_calls is not None and r.chosen.tool_calls[0].name == "calculator"
    assert json.loads(r.chosen.tool_calls[0].arguments) == {"expression": "6*7"}
    assert r.meta["votes"] and sum(r.meta["votes"].values()) == 3  # the 3 malformed ones cast no vote
    assert [s.answer for s in r.samples if s.tool_calls[0].arguments == "6*7"] == [None] * 3


def test_tool_calls_checked_against_the_schema_when_voting():
    """A call that fails the tool's schema casts no vote, even when it is the majority."""
    from ttc.engines import ScriptedEngine
    from ttc.registry import build_from_spec

    wrong_type = '<tool_call>{"name": "calculator", "arguments": {"expression": 42}}</tool_call>'
    e = ScriptedEngine([wrong_type, wrong_type, CALL_43])
    r = build_from_spec("sc:rule=fixed_n,max=3").run_sync(_tool_prompt(), e, seed=0)
    assert r.chosen.tool_calls[0].arguments == '{"expression": "6*8"}' and r.confidence == 1.0


def test_best_of_n_with_the_tool_schema_verifier_picks_a_valid_call():
    from ttc.engines import ScriptedEngine
    from ttc.registry import build

    e = ScriptedEngine([CALL_BAD, "I think it is 42.", CALL_43, CALL_BAD])
    bon = build("best_of_n", {"n": 4, "verifier": "tool_schema"})
    r = bon.run_sync(_tool_prompt(), e, seed=0)
    assert r.chosen.tool_calls[0].arguments == '{"expression": "6*8"}'
    assert sorted(s.score for s in r.samples) == [0.0, 0.0, 0.0, 1.0]
    assert build("tool_schema", {"no_call": 0.5}).describe() == {
        "name": "tool_schema", "valid": 1.0, "invalid": 0.0, "no_call": 0.5}


async def test_the_tool_schema_verifier_scores_form():
    from verifiers.tool_schema import ToolSchemaCheck

    v = ToolSchemaCheck(no_call=0.25)
    other = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}
    p = Prompt(messages=[_user()], tools=[CALC, other], tool_choice=NAMED)

    def s(calls):  # type: ignore[no-untyped-def]
        return Sample(index=0, text="", num_tokens=1, tool_calls=calls)

    got = await v.score(None, p, [s([_call('{"expression": "1"}')]), s([_call("{}", "search")]),
                                  s([_call('{"expression": 1}')]), s(None)])  # type: ignore[arg-type]
    assert got == [1.0, 0.0, 0.0, 0.25]
    assert "tool_choice asks for 'calculator'" in v.problem(p, s([_call("{}", "search")]))
    with pytest.raises(ValueError, match="valid"):
        ToolSchemaCheck(valid=2.0)


# -- the tool-call benchmark's data and score ---------------------------------------------------
def test_glaive_conversations_become_cases(tmp_path):
    from ttc.bench.tool_call_eval import exact, load_glaive

    fn = {"name": "get_weather", "description": "Weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    call = json.dumps({"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}})
    records = [
        {"tools": json.dumps([fn]), "conversations": [
            {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
            {"from": "human", "value": "Weather in Paris?"}, {"from": "function_call", "value": call},
            {"from": "observation", "value": "{\"t\": 20}"}, {"from": "gpt", "value": "20 C"}]},
        {"tools": "[]", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        {"tools": json.dumps([{"name": "bad name!"}]), "conversations": [
            {"from": "human", "value": "x"}, {"from": "function_call", "value": call}]},
    ]
    path = tmp_path / "glaive.json"
    path.write_text(json.dumps(records))
    cases, skipped = load_glaive(path)
    assert skipped == 1 and len(cases) == 1
    (c,) = cases
    assert [m.role for m in c.prompt.messages] == ["user", "assistant", "user"]
    assert c.prompt.tool_choice == "required" and c.prompt.tool_names == ["get_weather"]
    assert c.reference.name == "get_weather"

    def s(args, name="get_weather"):  # type: ignore[no-untyped-def]
        return Sample(index=0, text="", num_tokens=1, tool_calls=[ToolCall(id="a", name=name, arguments=args)])

    assert exact(s('{"unit":"C", "city":"Paris"}'), c.reference)
    assert not exact(s('{"city": "paris", "unit": "C"}'), c.reference)
    assert not exact(s('{"city": "Paris", "unit": "C"}', "get_time"), c.reference)
    assert not exact(s('{"city": "Paris", "unit": "C"'), c.reference)
    assert not exact(None, c.reference) and not exact(Sample(index=0, text="x", num_tokens=1), c.reference)


# -- the real engines (SmolLM2-135M: what it computes is not graded, only the call's form) -----------
def _real_prompt():  # type: ignore[no-untyped-def]
    return Prompt(messages=[_user("What is 23 times 17? Use the calculator.")], tools=[CALC], tool_choice=NAMED)


@pytest.mark.real
async def test_vllm_engine_named_tool_choice_returns_calls(vllm_engine):
    """Structured outputs constrain the text to a call of the named function: every
    sample is a call that parses (the arguments fit the schema's shape)."""
    from ttc.types import SamplingParams

    r = await vllm_engine.generate(_real_prompt(), SamplingParams(temperature=0.8, max_tokens=64, n=4))
    for g in r.generations:
        assert g.tool_calls and g.tool_calls[0].name == "calculator", g.text
        if g.finish_reason == "stop":
            assert check_call(g.tool_calls[0], [CALC]) is None, g.text
    deltas = [d async for d in vllm_engine.stream(_real_prompt(), SamplingParams(temperature=0, max_tokens=64))]
    assert deltas[-1].finish_reason is not None and deltas[-1].tool_calls[0].name == "calculator"
    # self-consistency votes on them and keeps the chosen sample's calls
    from ttc.registry import build

    sc = build("self_consistency", {"rule": {"name": "fixed_n", "n": 4}, "batch_sizes": [4],
                                    "params": {"temperature": 0.8, "max_tokens": 64}})
    res = await sc.run(_real_prompt(), vllm_engine, seed=0)
    assert res.chosen is None or (is_vote_key(res.answer) and res.chosen.tool_calls)


@pytest.mark.real
async def test_openai_engine_named_tool_choice_returns_calls(openai_engine):
    """The vLLM server (hermes parser) answers a named tool_choice with message.tool_calls;
    streamed, the fragments join into the same shape."""
    from ttc.types import SamplingParams

    r = await openai_engine.generate(_real_prompt(), SamplingParams(temperature=0.8, max_tokens=64, n=2))
    for g in r.generations:
        assert g.tool_calls and g.tool_calls[0].name == "calculator", g
        assert g.tool_calls[0].id  # the server's call id
    deltas = [d async for d in openai_engine.stream(_real_prompt(), SamplingParams(temperature=0, max_tokens=64))]
    assert deltas[-1].tool_calls and deltas[-1].tool_calls[0].name == "calculator"
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens > 0
