"""Client CPU of self-consistency: the strategy's own cost per question, no HTTP.

Self-consistency at N = 8 (``SelfConsistency(FixedN(8), batch_sizes=(8,))``: one batch
of 8 draws, which goes as one request for ``n = 8`` since the rule cannot stop before the
eighth sample; the rule's check, then the majority vote) runs against an instant in-process :class:`~ttc.bench.replay.ReplayEngine` serving
recorded answer texts, one question at a time, and the CPU time of this process
(``time.process_time``: the event loop and the grading threads) is divided by the
number of questions. Two answer sets:

- ``addition``: the bundled pool ``benchmarks/pools/addition_200x32.jsonl.gz``
  (SmolLM2-135M-Instruct's answers to one-digit additions: prose with numbers);
- ``word problems``: SVAMP/GSM8K-style worked answers generated from templates with a
  fixed seed: "The answer is 18.", "#### 1,240", "$18.00", "\\boxed{\\frac{3}{4}}",
  "18 apples", a wrong number, an answer with no number; correct answers dominate.

The first question's CPU (imports, the first grouping) is reported apart and left out of
the per-question figure; a warm-up pass over other questions runs first. The grading
worker processes (symbolic checks) are other processes: their CPU is not counted here,
the number of checks sent to them is reported (wall time includes waiting for them).

    python benchmarks/client_cpu.py                 # 60 questions per set, N = 8
    python benchmarks/client_cpu.py --quick         # 12 questions per set
    python benchmarks/client_cpu.py --profile       # cProfile of the word-problem run
    python benchmarks/client_cpu.py --http          # also over HTTP: OpenAIEngine to the fault server

With ``--http`` the same strategy also runs through :class:`~ttc.engines.openai_engine.OpenAIEngine`
against the fault server in a subprocess (no latency, every answer "The answer is 4."), once
per ``http_backend``: the client CPU a question costs with the HTTP client included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path

POOL = Path(__file__).resolve().parent / "pools" / "addition_200x32.jsonl.gz"

_NAMES = ["Paul", "Jake", "Mary", "Ana", "Sam", "Lena"]
_THINGS = ["apples", "marbles", "books", "cookies", "stickers", "pencils"]


def word_problem_answers(n_questions: int, per_question: int, seed: int) -> dict[str, list[str]]:
    """SVAMP/GSM8K-like completions: question text -> worked answers in mixed formats."""
    rng = random.Random(seed)
    out: dict[str, list[str]] = {}
    for q in range(n_questions):
        name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
        a, b = rng.randint(2, 400), rng.randint(2, 400)
        right = a + b if q % 3 else a * b
        wrongs = [right + rng.choice([-10, -1, 1, 2, 10]), abs(a - b), right * 2]
        texts = []
        for _ in range(per_question):
            v = right if rng.random() < 0.65 else rng.choice(wrongs)
            style = rng.randrange(9)
            work = f"{name} has {a} {thing} and gets {b} more. So {a} + {b} = {a + b}. "
            if style == 0:
                texts.append(f"{work}The answer is {v}.")
            elif style == 1:
                texts.append(f"{work}\n#### {v:,}")
            elif style == 2:
                texts.append(f"{work}So {name} has ${v}.00 in total. The answer is ${v}.00.")
            elif style == 3:
                texts.append(f"{work}Therefore the final answer is $\\boxed{{{v}}}$.")
            elif style == 4:
                texts.append(f"{work}The answer is {v} {thing}.")
            elif style == 5:
                texts.append(f"{work}Half of that is \\boxed{{\\frac{{{2 * v}}}{{2}}}}.")
            elif style == 6:
                texts.append(f"{work}Answer: {v}")
            elif style == 7:
                texts.append(f"Let me think step by step. {work}{name} ends with {v} {thing}.")
            else:
                texts.append(f"{name} cannot tell how many {thing} there are without more information.")
        out[f"Word problem {q}: {name}, {a} and {b} {thing}?"] = texts
    return out


async def measure(strategy_factory, engine, questions: list[str], warmup: list[str]) -> dict[str, float]:
    """Per-question CPU (ms) over ``questions``, after a first question and a warm-up."""
    cpu0 = time.process_time()
    await strategy_factory().run(warmup[0], engine, seed=0)
    first = time.process_time() - cpu0
    for q in warmup[1:]:
        await strategy_factory().run(q, engine, seed=0)
    answered = 0
    checks0 = _symbolic_checks()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i, q in enumerate(questions):
        r = await strategy_factory().run(q, engine, seed=i)
        answered += r.answer is not None
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    return {"first_ms": first * 1000, "cpu_ms": cpu / len(questions) * 1000,
            "wall_ms": wall / len(questions) * 1000, "answered": answered,
            "checks": _symbolic_checks() - checks0}


async def measure_http(sc, n: int, backends: list[str]) -> list[tuple[str, dict[str, float]]]:
    """Self-consistency through OpenAIEngine against the fault server, per backend."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from openai_concurrency import start_server

    from ttc.engines.openai_engine import OpenAIEngine

    proc, url = start_server(0.0)
    rows = []
    try:
        for backend in backends:
            async with OpenAIEngine(url, "fake", http_backend=backend) as eng:  # type: ignore[arg-type]
                qs = [f"What is {i} + 2?" for i in range(n + 6)]
                rows.append((backend, await measure(sc, eng, qs[6:], qs[:6])))
    finally:
        proc.terminate()
        proc.wait(10)
    return rows


def _symbolic_checks() -> int:
    from ttc import grading

    return int(getattr(grading._POOL, "checks", 0))


async def main_async(n: int, samples: int, profile: bool, http: bool) -> None:
    t_imp = time.process_time()
    from ttc.bench.pool import Pool
    from ttc.bench.replay import ReplayEngine
    from ttc.strategies import FixedN, SelfConsistency
    from ttc.types import Generation
    import_ms = (time.process_time() - t_imp) * 1000

    def sc():
        return SelfConsistency(FixedN(samples), batch_sizes=(samples,))

    pool = Pool.load(POOL)
    add_engine = ReplayEngine(pool, seed=0)
    add_qs = [q.key for q in pool.questions]
    words = word_problem_answers(n + 6, 32, seed=7)
    word_engine = ReplayEngine(
        {k: [Generation(text=t, num_tokens=max(1, len(t) // 4)) for t in v] for k, v in words.items()}, seed=0
    )
    word_qs = list(words)
    rows = []
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
    for name, engine, qs in (("word problems", word_engine, word_qs), ("addition", add_engine, add_qs)):
        if prof is not None and name == "word problems":
            prof.enable()
        r = await measure(sc, engine, qs[6 : 6 + n], qs[:6])
        if prof is not None and name == "word problems":
            prof.disable()
        rows.append((name, r))
    print(f"## client_cpu: self-consistency N={samples}, {n} questions per set, instant replay engine\n")
    print(f"python {sys.version.split()[0]}, pid {os.getpid()}; ttc imports: {import_ms:.0f} ms CPU\n")
    print("| answer set | questions | first question CPU ms (imports, first grouping) | client CPU ms/question "
          "| wall ms/question | answered | symbolic checks (worker process) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {n} | {r['first_ms']:.0f} | {r['cpu_ms']:.2f} | {r['wall_ms']:.2f} | "
              f"{r['answered']}/{n} | {r['checks']} |")
    print(f"\nsympy imported in this process: {'yes' if 'sympy' in sys.modules else 'no'} "
          "(symbolic checks run in the grading worker processes)")
    if http:
        print(f"\n### over HTTP: OpenAIEngine -> fault server subprocess (its CPU not counted), {n} questions\n")
        print("| http_backend | first question CPU ms | client CPU ms/question | wall ms/question |")
        print("|---|---:|---:|---:|")
        for backend, r in await measure_http(sc, n, ["direct", "aiohttp", "httpx"]):
            print(f"| {backend} | {r['first_ms']:.0f} | {r['cpu_ms']:.2f} | {r['wall_ms']:.2f} |")
    if prof is not None:
        import pstats

        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=int, default=60)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="12 questions per set")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the word-problem run")
    ap.add_argument("--http", action="store_true", help="also run over HTTP (OpenAIEngine, fault server)")
    a = ap.parse_args()
    if a.questions < 1 or a.samples < 1:
        ap.error("--questions and --samples must be >= 1")
    asyncio.run(main_async(12 if a.quick else a.questions, a.samples, a.profile, a.http))


if __name__ == "__main__":
    main()
