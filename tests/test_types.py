"""Core types: validation errors name the field; everything round-trips through JSON."""

import pydantic
import pytest

from ttc import Budget, Generation, Prompt, SamplingParams, StrategyResult, TokenLogprob, TopLogprob, Usage
from ttc.engines import ScriptedEngine


def _err(fn, field):  # type: ignore[no-untyped-def]
    with pytest.raises((pydantic.ValidationError, ValueError)) as ei:
        fn()
    assert field in str(ei.value), str(ei.value)


def test_bad_input_names_the_field():
    _err(lambda: Prompt(text=""), "prompt.text")
    _err(lambda: Prompt(text="   "), "prompt.text")
    _err(lambda: Prompt(messages=[]), "prompt.messages")
    _err(lambda: Prompt.of(""), "prompt.messages")
    _err(lambda: Prompt(), "prompt")
    _err(lambda: SamplingParams(n=0), "n")
    _err(lambda: SamplingParams(max_tokens=0), "max_tokens")
    _err(lambda: SamplingParams(temperature=-1), "temperature")
    _err(lambda: SamplingParams(logprobs=21), "logprobs")
    _err(lambda: SamplingParams(stop=[""]), "stop")
    _err(lambda: SamplingParams(bogus=1), "bogus")
    _err(lambda: Budget(completion_tokens=0), "completion_tokens")
    _err(lambda: Budget(total_tokens=-5), "total_tokens")
    _err(lambda: Budget(wall_seconds=0), "wall_seconds")
    _err(lambda: Budget(generations=-1), "generations")
    _err(lambda: Budget(tokens=5), "tokens")


async def test_unknown_engine_option_is_named():
    e = ScriptedEngine(["x"])
    with pytest.raises(ValueError, match="frobnicate"):
        await e.generate(Prompt.of("hi"), SamplingParams(extra={"frobnicate": 1}))


def test_prompt_coercion_and_continuation():
    p = Prompt.of("What is 2+2?")
    assert p.messages[0].role == "user" and p.question == "What is 2+2?"
    q = p.continued("Let me think.").continued(" 2+2=4.")
    assert q.assistant_prefix == "Let me think. 2+2=4." and p.assistant_prefix == ""
    with pytest.raises(ValueError, match="assistant"):
        Prompt(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    assert SamplingParams(stop="\n\n").stop == ["\n\n"]


def test_json_round_trip():
    g = Generation(text="4", num_tokens=1, logprobs=[TokenLogprob(token="4", logprob=-0.1,
                                                                 top=[TopLogprob(token="4", logprob=-0.1)])])
    r = StrategyResult(strategy="x", answer="4", usage=Usage(prompt_tokens=3, completion_tokens=1, calls=1))
    for obj in (g, r, SamplingParams(n=3, stop=["a"]), Prompt.of("hi").continued("yo"), Budget(calls=3)):
        assert type(obj).model_validate_json(obj.model_dump_json()) == obj
    assert (Usage(prompt_tokens=1, calls=1) + Usage(completion_tokens=2, calls=1)).total_tokens == 3
