"""Tool calls: the core types (messages, tools, tool_choice, calls on generations and samples)."""

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
