"""Hostile answers through grading: code executed (must be 0), time limits, event-loop stalls.

Every payload of ``tests/data/hostile_answers.jsonl`` (code that tries to create
``/tmp/ttc_hostile_marker``, and resource bombs; ``--payloads`` for another file) is
graded three ways: ``Equivalence`` against a reference (the raw text and its extracted
answer), ``group_answers`` in a vote with right answers, and a ``SelfConsistency`` run
on a ``ScriptedEngine`` answering it while a heartbeat task sleeps 10 ms in a loop on
the event loop. Prints one markdown row per way: payloads tried, code executed (the
marker file), the slowest grading against its limit, and the longest heartbeat delay.

    python benchmarks/hostile_inputs.py [--limit 2.0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from ttc import grading
from ttc.answers import Equivalence, extract_answer, group_answers
from ttc.engines import ScriptedEngine
from ttc.strategies.self_consistency import SelfConsistency
from ttc.strategies.stopping import FixedN

MARKER = Path("/tmp/ttc_hostile_marker")
DEFAULT_PAYLOADS = Path(__file__).resolve().parents[1] / "tests" / "data" / "hostile_answers.jsonl"
REFERENCE = "42"


def load(path: Path) -> list[tuple[str, str]]:
    """(name, text); a ``build`` row is ``left * n + mid + right * n``."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            b = r.get("build")
            out.append((r["name"], r["text"] if b is None else b["left"] * b["n"] + b["mid"] + b["right"] * b["n"]))
    return out


def served(text: str) -> str:
    return text if ("\\boxed" in text or "answer is" in text.lower()) else f"\\boxed{{{text}}}"


def timed(fn, *args) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    fn(*args)
    return time.monotonic() - t0


async def vote_run(text: str, limit: float) -> tuple[float, float]:
    """(seconds, worst heartbeat delay) of one SelfConsistency run holding ``text``."""
    loop, worst = asyncio.get_running_loop(), [0.0]

    async def beat() -> None:
        while True:
            t = loop.time()
            await asyncio.sleep(0.01)
            worst[0] = max(worst[0], loop.time() - t - 0.01)

    hb = asyncio.ensure_future(beat())
    eng = ScriptedEngine([served(text), f"\\boxed{{{REFERENCE}}}", f"The answer is {REFERENCE}."])
    t0 = time.monotonic()
    await SelfConsistency(FixedN(3), eq=Equivalence(sympy_timeout=limit), batch_sizes=(1,)).run("q", eng)
    took = time.monotonic() - t0
    hb.cancel()
    return took, worst[0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--payloads", type=Path, default=DEFAULT_PAYLOADS)
    ap.add_argument("--limit", type=float, default=2.0, help="symbolic time limit per check (s)")
    args = ap.parse_args(argv)
    payloads = load(args.payloads)
    MARKER.unlink(missing_ok=True)
    grading.default_pool().warm_up()
    eq_s = [max(timed(Equivalence(sympy_timeout=args.limit), a, REFERENCE) for a in (t, extract_answer(t)))
            for _, t in payloads]
    vote_s = [timed(group_answers, [extract_answer(served(t)), REFERENCE, REFERENCE], Equivalence(sympy_timeout=args.limit))
              for _, t in payloads]
    sc = [asyncio.run(vote_run(t, args.limit)) for _, t in payloads]
    code = int(MARKER.exists())
    print("| grading path | payloads tried | code executed | slowest grading (s) | limit (s) | longest event-loop stall (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| Equivalence vs reference | {len(payloads)} | {code} | {max(eq_s):.3f} | {args.limit:g} | n/a (no loop) |")
    print(f"| group_answers vote | {len(payloads)} | {code} | {max(vote_s):.3f} | {args.limit:g} | n/a (no loop) |")
    print(f"| SelfConsistency run (loop) | {len(payloads)} | {code} | {max(s for s, _ in sc):.3f} | {args.limit:g} | "
          f"{1000 * max(w for _, w in sc):.1f} |")
    slow = max(range(len(payloads)), key=lambda i: max(eq_s[i], vote_s[i], sc[i][0]))
    print(f"\nslowest payload: {payloads[slow][0]}; worker kills at the limit: {grading.default_pool().kills}")


if __name__ == "__main__":
    main()
