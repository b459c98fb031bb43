"""Adaptive sampling benchmark: accuracy vs tokens of parallel-sampling strategies.

On the real bundled model (SmolLM2-135M-Instruct) through the in-process vLLM engine,
on arithmetic questions generated with a fixed seed (answers known). For each strategy:
accuracy with a 95% Wilson interval, mean samples, mean completion tokens, and tokens
relative to fixed-N self-consistency at N = 16. The goal (Adaptive-Consistency, DeepConf):
an adaptive rule matches fixed N = 16 accuracy (within the interval) with <= 40% of its tokens.

Every strategy draws its own samples (no sharing of samples across rows); adaptive
rules are capped at 16 samples so the fixed-16 row is their ceiling. All questions of
one strategy run concurrently, so vLLM batches them.

    python benchmarks/adaptive_sampling.py            # 100 questions
    python benchmarks/adaptive_sampling.py --quick    # 12 questions, smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable

from ttc.answers import normalize
from ttc.bench.metrics import wilson_interval
from ttc.strategies import (
    BestOfN,
    BetaRule,
    CertaindexEntropy,
    DeepConf,
    DirichletRule,
    ESCWindow,
    FixedN,
    Greedy,
    SelfConsistency,
    VerifiedAnswer,
)
from ttc.strategy import Strategy
from ttc.types import SamplingParams
from ttc.verifiers import ArithmeticCheck

PROMPT = "Compute {a} + {b}. End with 'The answer is N.'"


def questions(n: int, seed: int, digits: int) -> list[tuple[str, str]]:
    try:
        from ttc.bench.datasets import addition

        exs = addition(n, seed=seed, digits=digits)
        return [(PROMPT.format(a=e.meta["a"], b=e.meta["b"]), e.answer) for e in exs]
    except ImportError:  # pragma: no cover - datasets module not present
        import random

        rng = random.Random(seed)
        lo, hi = (10 ** (digits - 1) if digits > 1 else 0), 10**digits - 1
        out = []
        for _ in range(n):
            a, b = rng.randint(lo, hi), rng.randint(lo, hi)
            out.append((PROMPT.format(a=a, b=b), str(a + b)))
        return out


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson interval (``ttc.bench.metrics.wilson_interval``)."""
    return wilson_interval(k, n)


def strategies(p: SamplingParams, window: int) -> dict[str, Callable[[], Strategy]]:
    return {
        "greedy": lambda: Greedy(p),
        "sc fixed N=16": lambda: SelfConsistency(FixedN(16), params=p, batch_sizes=(16,)),
        "sc beta (0.95)": lambda: SelfConsistency(BetaRule(0.95, max_samples=16), params=p),
        # a lower threshold: stops at 4 samples on a 3:1 split (P(p1 > p2) = 0.81)
        "sc beta (0.8)": lambda: SelfConsistency(BetaRule(0.8, max_samples=16), params=p),
        "sc dirichlet (0.95)": lambda: SelfConsistency(DirichletRule(0.95, max_samples=16), params=p),
        "sc esc (w=4, L=16)": lambda: SelfConsistency(ESCWindow(w=4, L=16), params=p),
        "sc esc (w=3, L=16)": lambda: SelfConsistency(ESCWindow(w=3, L=16), params=p),
        "sc certaindex (0.7)": lambda: SelfConsistency(CertaindexEntropy(0.7, max_samples=16), params=p),
        "deepconf online": lambda: DeepConf(
            "online", n_init=4, max_traces=16, eta=90, tau=0.95, window=window, parallelism=4, params=p
        ),
        "deepconf offline": lambda: DeepConf("offline", max_traces=16, eta=50, window=window, params=p),
        "best-of-8 arith": lambda: BestOfN(8, ArithmeticCheck(), params=p),
        # adaptive, settled by verification: stop at the first sample whose equations all check
        # out and agree with its answer (score 1.0; 0.5 = no equation, unknown)
        "sc verified (arith, max 16)": lambda: SelfConsistency(
            VerifiedAnswer(max_samples=16, pass_threshold=1.0), params=p, weighting=ArithmeticCheck()
        ),
        "weighted bo-8 arith": lambda: BestOfN(8, ArithmeticCheck(), weighted=True, params=p),
    }


async def run_strategy(make: Callable[[], Strategy], engine, qs, seed: int, conc: int) -> dict:  # type: ignore[no-untyped-def]
    sem = asyncio.Semaphore(conc)

    async def one(i: int, q: str, ans: str):  # type: ignore[no-untyped-def]
        async with sem:
            r = await make().run(q, engine, seed=seed + i)
        return normalize(r.answer) == normalize(ans), len(r.samples), r.usage.completion_tokens, r.stop_reason

    t0 = time.monotonic()
    rows = await asyncio.gather(*(one(i, q, a) for i, (q, a) in enumerate(qs)))
    n = len(rows)
    k = sum(r[0] for r in rows)
    return {
        "acc": k / n, "ci": wilson(k, n), "samples": sum(r[1] for r in rows) / n,
        "tokens": sum(r[2] for r in rows) / n, "secs": time.monotonic() - t0,
        "stops": {s: sum(1 for r in rows if r[3] == s) for s in {r[3] for r in rows}},
    }


async def main(args: argparse.Namespace) -> None:
    from ttc.engines.vllm_engine import VLLMEngine

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    qs = questions(args.questions, args.seed, args.digits)
    p = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
    engine = VLLMEngine.bundled(max_model_len=2048, seed=args.seed)
    table = {}
    try:
        for name, make in strategies(p, args.window).items():
            if args.only and not any(o in name for o in args.only.split(",")):
                continue
            table[name] = await run_strategy(make, engine, qs, args.seed, args.concurrency)
            t = table[name]
            print(f"# {name}: acc={t['acc']:.3f} samples={t['samples']:.2f} tokens={t['tokens']:.1f} "
                  f"({t['secs']:.0f}s) stops={t['stops']}", flush=True)
    finally:
        await engine.aclose()
    ref = table.get("sc fixed N=16", {}).get("tokens")
    print(f"\nSmolLM2-135M-Instruct, vLLM CPU, {len(qs)} {args.digits}-digit additions (seed {args.seed}), "
          f"T={args.temperature}, max_tokens={args.max_tokens}, DeepConf window={args.window}\n")
    print("| strategy | accuracy | 95% CI | mean samples | mean completion tokens | tokens vs SC N=16 | stops |")
    print("|---|---|---|---|---|---|---|")
    for name, t in table.items():
        rel = f"{t['tokens'] / ref:.0%}" if ref else "n/a"
        stops = ", ".join(f"{k}:{v}" for k, v in sorted(t["stops"].items()))
        print(f"| {name} | {t['acc']:.2f} | [{t['ci'][0]:.2f}, {t['ci'][1]:.2f}] | {t['samples']:.1f} | "
              f"{t['tokens']:.0f} | {rel} | {stops} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="12 questions (smoke test)")
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--digits", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=25, help="questions in flight at once")
    ap.add_argument("--only", default="", help="comma-separated substrings of strategy names")
    a = ap.parse_args()
    if a.quick:
        a.questions = 12
    from ttc.sync import run_sync

    run_sync(main(a))
