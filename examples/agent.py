"""A small tool-using agent on the plain ``openai`` SDK, against ``ttc serve``.

The agent solves two-step word problems with a calculator tool: it sends the conversation
with ``tools=[calculator]``, runs every call the model makes and sends the results back as
``"tool"`` messages, until the model answers in prose (the first turn asks for a call with
``tool_choice="required"``, later turns leave it to the model with ``"auto"``, the last
turn forbids calls with ``"none"``). Nothing in it knows about ttc except the model id:
the same loop runs once with ``passthrough`` (one plain generation per turn) and once with
``sc`` (self-consistency: every turn samples several answers and votes; for tool calls the
vote is by function name and canonical JSON arguments, so a malformed call cannot win).
It prints accuracy and the tokens the server reports (its ``usage``: every sample counted).

    python examples/agent.py                      # starts `ttc serve` on the bundled model
    python examples/agent.py --base-url http://127.0.0.1:8000/v1 --n 5

The bundled model (SmolLM2-135M-Instruct) is far too weak for this: expect it to call
the calculator with odd expressions and to answer few problems right. The loop, the
tools round trip and the token accounting are the point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from ttc.answers import extract_answer, grade_number
from ttc.safe_math import Refused, check_bounds, parse_plain

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression such as (24 + 18) / 6 and return the number.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                       "required": ["expression"]},
    },
}
SYSTEM = ("Solve the problem. Use the calculator tool for arithmetic, then give the final answer "
          "as 'The answer is N.'")
PROBLEMS = [
    ("A baker makes 24 muffins in the morning and 18 in the afternoon. He packs them in boxes of 6. "
     "How many boxes does he fill?", "7"),
    ("Tom buys 12 pencils at 3 dollars each and pays with a 50 dollar bill. How much change does he get?", "14"),
    ("A train travels at 60 km per hour for 3 hours, then 45 km more. How many km does it travel?", "225"),
    ("Sara has 5 bags with 8 apples in each. She gives away 13 apples. How many apples are left?", "27"),
    ("A ticket costs 15 dollars. A family buys 4 tickets and one 7 dollar snack. How much do they spend?", "67"),
]


def calculator(arguments: str) -> str:
    """Run the tool on the model's arguments (JSON text: data, never code): the safe
    parser of :mod:`ttc.safe_math`, size bounds checked before evaluating."""
    try:
        args = json.loads(arguments)
        expr = str(args["expression"]) if isinstance(args, dict) else ""
        tree = parse_plain(expr)
        check_bounds(tree)
        value = float(tree.evalf())
    except (ValueError, KeyError, TypeError, Refused, RecursionError) as e:
        return f"error: {type(e).__name__}: {str(e)[:80]}"
    return str(int(value)) if value.is_integer() else f"{value:.6g}"


def _choice(turn: int, turns: int) -> str:
    return "required" if turn == 0 else "none" if turn == turns - 1 else "auto"


async def solve(client: AsyncOpenAI, model: str, question: str, *, turns: int = 3, max_tokens: int = 64
                ) -> dict[str, Any]:
    """One problem: the tool loop; the final text, its answer, tokens and calls made."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    tokens = calls = 0
    text = ""
    for turn in range(turns):
        r = await client.chat.completions.create(model=model, messages=messages, tools=[CALCULATOR],  # type: ignore[arg-type]
                                                 tool_choice=_choice(turn, turns), max_tokens=max_tokens)
        tokens += r.usage.total_tokens if r.usage else 0
        msg = r.choices[0].message
        if not msg.tool_calls:
            text = msg.content or ""
            break
        messages.append({"role": "assistant", "content": msg.content or "",
                         "tool_calls": [tc.model_dump(include={"id", "type", "function"}) for tc in msg.tool_calls]})
        for tc in msg.tool_calls:
            calls += 1
            messages.append({"role": "tool", "tool_call_id": tc.id, "content": calculator(tc.function.arguments)})
    return {"text": text, "answer": extract_answer(text) if text else None, "tokens": tokens, "calls": calls}


async def evaluate(client: AsyncOpenAI, model: str, problems: list[tuple[str, str]], **kw: Any) -> dict[str, Any]:
    """Every problem with ``model``: accuracy, tokens and calls per problem."""
    t0 = time.monotonic()
    runs = await asyncio.gather(*(solve(client, model, q, **kw) for q, _ in problems))
    n = max(len(problems), 1)
    right = sum(grade_number(r["answer"], ref) for r, (_, ref) in zip(runs, problems))
    return {"model": model, "accuracy": right / n, "tokens": sum(r["tokens"] for r in runs) / n,
            "calls": sum(r["calls"] for r in runs) / n, "seconds": time.monotonic() - t0, "runs": runs}


def start_server(port: int) -> subprocess.Popen[bytes]:
    """``ttc serve`` on the bundled model, on 127.0.0.1:``port`` (returns once it answers)."""
    import httpx

    ttc = Path(sys.executable).with_name("ttc")
    proc = subprocess.Popen([str(ttc), "serve", "--port", str(port)])
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"ttc serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.terminate()
    raise SystemExit("ttc serve did not come up in 600 s")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", help="a running ttc serve (default: start one on the bundled model)")
    ap.add_argument("--n", type=int, default=len(PROBLEMS), help="problems to run (at most 5)")
    ap.add_argument("--models", default="passthrough,sc", help="model ids (strategies) to compare")
    a = ap.parse_args()
    proc = None
    base = a.base_url
    if base is None:
        from ttc.engines.vllm_server import free_port

        port = free_port()
        proc = start_server(port)
        base = f"http://127.0.0.1:{port}/v1"
    try:
        client = AsyncOpenAI(base_url=base, api_key="none", max_retries=0, timeout=600)
        print("| model | accuracy | tokens / problem | calculator calls / problem | seconds |\n|---|---|---|---|---|")
        for model in a.models.split(","):
            s = await evaluate(client, model, PROBLEMS[: a.n])
            print(f"| {model} | {s['accuracy']:.0%} | {s['tokens']:.0f} | {s['calls']:.1f} | {s['seconds']:.0f} |")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)


if __name__ == "__main__":
    asyncio.run(main())
