"""``examples/agent.py`` against ``ttc serve`` on the bundled model: the tool loop runs with
``passthrough`` and with self-consistency through the plain ``openai`` client.

The server is started in-process (uvicorn on the session's event loop, serving the
session's ``vllm_engine``), as the serve tests do. SmolLM2-135M's answers are not graded:
the test checks the loop's round trips (a call on the first turn, its result sent back,
tokens reported)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "agent.py"


def _agent() -> Any:
    spec = importlib.util.spec_from_file_location("agent_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_calculator_tool_never_evaluates_code() -> None:
    calc = _agent().calculator
    assert calc('{"expression": "(24 + 18) / 6"}') == "7"
    assert calc('{"expression": "1/3"}') == "0.333333"
    for bad in ('{"expression": "__import__(\'os\')"}', '{"expression": "9^9^9"}', '"23"', "{", "[23]"):
        assert calc(bad).startswith("error:"), bad


@pytest.fixture(scope="module")
async def agent_server(vllm_engine: Any) -> Any:
    from ttc import registry
    from ttc.serve import create_app, serving

    app = create_app(vllm_engine, {"sc": registry.build_from_spec("sc:rule=fixed_n,n=3,max=3")})
    async with serving(app) as url:
        yield f"{url}/v1"


@pytest.mark.real
async def test_agent_loop_runs_with_passthrough_and_voting(agent_server: str) -> None:
    from openai import AsyncOpenAI

    agent = _agent()
    client = AsyncOpenAI(base_url=agent_server, api_key="none", max_retries=0, timeout=300)
    problems = agent.PROBLEMS[:2]
    for model in ("passthrough", "sc"):
        s = await agent.evaluate(client, model, problems, max_tokens=48)
        assert 0.0 <= s["accuracy"] <= 1.0 and s["tokens"] > 0
        # the first turn requires a call: every problem made at least one, and its result went back
        assert all(r["calls"] >= 1 for r in s["runs"]), s["runs"]
