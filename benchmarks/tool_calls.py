"""Tool-call accuracy of greedy vs tool-call voting on Glaive function-calling conversations.

Each conversation is cut before its first function call and asked with
``tool_choice="required"``; a case is right when the chosen call has the reference's name
and canonical JSON arguments (:mod:`ttc.bench.tool_call_eval`). Strategies: greedy;
self-consistency over 8 samples voting by call (name + canonical arguments, malformed
calls cast no vote); best-of-8 scored by the tool_schema verifier.

    python benchmarks/tool_calls.py --n 40
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from ttc.bench.tool_call_eval import load_glaive, run_tool_eval, table
from ttc.registry import build

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "glaive_toolcall_en_demo.json"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--n", type=int, default=40, help="conversations (the first n with a call)")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--no-constrain", action="store_true", help="no structured outputs under tool_choice")
    ap.add_argument("--quick", action="store_true", help="4 conversations, 4 samples")
    a = ap.parse_args()
    n, k = (4, 4) if a.quick else (a.n, a.samples)
    cases, skipped = load_glaive(a.data, n)
    sampled = {"temperature": 0.8, "max_tokens": a.max_tokens}
    strategies = {
        "greedy": build("greedy", {"params": {"temperature": 0.0, "max_tokens": a.max_tokens}}),
        f"self-consistency, N={k}, vote by call": build(
            "self_consistency", {"rule": {"name": "fixed_n", "n": k}, "params": sampled, "batch_sizes": [k]}),
        f"best-of-{k}, tool_schema verifier": build(
            "best_of_n", {"n": k, "verifier": "tool_schema", "params": sampled}),
    }
    from ttc.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine.bundled(constrain_tool_calls=not a.no_constrain)
    try:
        rows = await run_tool_eval(engine, cases, strategies)
    finally:
        await engine.aclose()
    print(f"{len(cases)} conversations ({skipped} skipped), tool_choice=required, "
          f"structured outputs {'off' if a.no_constrain else 'on'}, max_tokens {a.max_tokens}\n")
    print(table(rows))


if __name__ == "__main__":
    asyncio.run(main())
