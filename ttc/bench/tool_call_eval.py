"""Tool-call accuracy on function-calling conversations: greedy vs tool-call voting.

**Data.** Glaive function-calling conversations in ShareGPT form (LLaMA-Factory's
``glaive_toolcall_en_demo.json``): each record has ``tools`` (a JSON *string* holding a
list of function schemas ``{"name", "description", "parameters"}``) and
``conversations``, turns ``{"from", "value"}`` with ``from`` one of ``human``, ``gpt``,
``function_call`` (``value``: JSON ``{"name", "arguments"}``) and ``observation`` (the
function's result). :func:`load_glaive` takes each conversation whose assistant makes a
call and cuts it right before its **first** ``function_call`` turn: the messages up to
there are the prompt (with the tools, wrapped as OpenAI function tools), that call is the
reference. One case per conversation, so cases are independent. Records whose tools fail
:class:`~ttc.types.Prompt`'s checks are skipped and counted.

**Ask.** ``tool_choice="required"`` (not a named choice: the function is part of what is
scored, though most conversations offer one tool). **Score** (:func:`exact`): the chosen
sample's first call has the reference's function name and its arguments equal the
reference's as canonical JSON (:func:`ttc.tool_calls.canonical_arguments`: keys sorted,
so key order and spacing do not matter; values must match exactly, ``"5"`` is not ``5``).
Also reported: the share of answers whose call is well formed (parses and fits the
schema) and whose function name is right.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ttc.budget import Budget
from ttc.engine import Engine
from ttc.strategy import Strategy
from ttc.tool_calls import canonical_arguments, check_call
from ttc.types import Message, Prompt, Sample, ToolCall

__all__ = ["ToolCase", "exact", "load_glaive", "run_tool_eval", "table"]

_ROLES = {"human": "user", "gpt": "assistant"}


@dataclass(frozen=True)
class ToolCase:
    """One conversation cut before its first call, and that call."""

    id: str
    prompt: Prompt
    reference: ToolCall


def _tools(raw: Any) -> list[dict[str, Any]]:
    fns = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(fns, list):
        raise ValueError("tools: not a list")
    return [{"type": "function", "function": f} for f in fns]


def _messages(turns: list[dict[str, Any]], tools: list[dict[str, Any]]) -> tuple[list[Message], ToolCall] | None:
    """The messages before the first function_call turn, and that call (None if none)."""
    msgs: list[Message] = []
    for t in turns:
        who, value = t.get("from"), t.get("value", "")
        if who == "function_call":
            call = json.loads(value)
            ref = ToolCall(id="ref", name=call["name"], arguments=json.dumps(call.get("arguments", {})))
            return (msgs, ref) if msgs else None
        if who == "observation":  # an observation before any call: not this format
            return None
        if who not in _ROLES:
            raise ValueError(f"turn 'from': unknown {who!r}")
        msgs.append(Message(role=_ROLES[who], content=value))  # type: ignore[arg-type]
    return None


def load_glaive(path: str | Path, n: int | None = None) -> tuple[list[ToolCase], int]:
    """The cases of the module doc (the first ``n``), and how many records were skipped
    for tools or turns that fail the checks."""
    records = json.loads(Path(path).read_text())
    cases: list[ToolCase] = []
    skipped = 0
    for i, r in enumerate(records):
        try:
            tools = _tools(r["tools"])
            cut = _messages(r["conversations"], tools)
            if cut is None:
                continue
            prompt = Prompt(messages=cut[0], tools=tools, tool_choice="required")
        except (ValueError, KeyError, TypeError, ValidationError):
            skipped += 1
            continue
        cases.append(ToolCase(id=f"glaive-{i}", prompt=prompt, reference=cut[1]))
        if n is not None and len(cases) >= n:
            break
    return cases, skipped


def exact(sample: Sample | None, ref: ToolCall) -> bool:
    """The sample's first call is the reference: same name, equal canonical arguments."""
    if sample is None or not sample.tool_calls:
        return False
    c = sample.tool_calls[0]
    got = canonical_arguments(c.arguments)
    return c.name == ref.name and got is not None and got == canonical_arguments(ref.arguments)


async def run_tool_eval(engine: Engine, cases: Sequence[ToolCase], strategies: dict[str, Strategy], *,
                        concurrency: int = 8, seed: int = 0, budget: Budget | None = None) -> list[dict[str, Any]]:
    """One row per strategy: exact-match accuracy, well-formed and right-name shares,
    completion tokens and seconds per case."""
    rows = []
    for label, strategy in strategies.items():
        t0 = time.monotonic()
        batch = await strategy.run_many([c.prompt for c in cases], engine, budget, concurrency=concurrency,
                                        seed=seed)
        secs = time.monotonic() - t0
        n = max(len(cases), 1)
        chosen = [r.chosen for r in batch.results]
        rows.append({
            "strategy": label,
            "exact": sum(exact(s, c.reference) for s, c in zip(chosen, cases)) / n,
            "well_formed": sum(bool(s and s.tool_calls) and all(check_call(x, c.prompt.tools) is None
                                                                for x in s.tool_calls or [])
                               for s, c in zip(chosen, cases)) / n,
            "right_name": sum(bool(s and s.tool_calls) and s.tool_calls[0].name == c.reference.name  # type: ignore[index]
                              for s, c in zip(chosen, cases)) / n,
            "tokens": batch.usage.completion_tokens / n,
            "seconds": secs / n,
            "cases": len(cases),
        })
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    out = ["| strategy | exact call | well-formed | right function | completion tokens / case | seconds / case |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['strategy']} | {r['exact']:.1%} | {r['well_formed']:.1%} | {r['right_name']:.1%} "
                   f"| {r['tokens']:.0f} | {r['seconds']:.2f} |")
    return "\n".join(out)
