"""Quickstart: 30 two-number additions on the bundled SmolLM2-135M-Instruct through the
in-process vLLM engine; greedy versus multi-sample strategies under per-question budgets.

    make demo            # or: .venv/bin/python examples/quickstart.py [--questions 30]

Prints a table of accuracy, tokens per question and seconds per question.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from ttc.engines import VLLMEngine
from ttc.strategies import BestOfN, Greedy
from ttc.strategies.self_consistency import SelfConsistency
from ttc.strategies.stopping import BetaRule, VerifiedAnswer
from ttc.verifiers import ArithmeticCheck

from ttc import Budget, SamplingParams, Strategy
from ttc.answers import same_answer
from ttc.bench.datasets import addition
from ttc.models import bundled_model_path


def strategies() -> dict[str, tuple[Strategy, Budget]]:
    sp = SamplingParams(temperature=0.8, max_tokens=64)
    out: dict[str, tuple[Strategy, Budget]] = {
        "greedy": (Greedy(params=sp), Budget(completion_tokens=64)),
        "majority vote, N=8": (BestOfN(8, params=sp), Budget(completion_tokens=8 * 64)),
        "best-of-8, equation check": (BestOfN(8, ArithmeticCheck(), params=sp), Budget(completion_tokens=8 * 64)),
        "weighted best-of-8, equation check": (
            BestOfN(8, ArithmeticCheck(), weighted=True, params=sp), Budget(completion_tokens=8 * 64)),
    }
    out["self-consistency, adaptive Beta stop (max 16)"] = (
        SelfConsistency(rule=BetaRule(max_samples=16), params=sp), Budget(completion_tokens=16 * 64))
    # adaptive and verified: stop at the first sample whose equations all check out
    out["self-consistency, verified-answer stop (max 16)"] = (
        SelfConsistency(rule=VerifiedAnswer(max_samples=16, pass_threshold=1.0), params=sp, weighting=ArithmeticCheck()),
        Budget(completion_tokens=16 * 64))
    return out


async def main(n_questions: int, seed: int) -> None:
    questions = addition(n_questions, seed=seed)
    t0 = time.monotonic()
    engine = VLLMEngine(bundled_model_path(), max_model_len=2048, kv_cache_gib=2)
    print(f"engine ready in {time.monotonic() - t0:.0f}s ({len(questions)} questions)\n")
    rows = []
    try:
        for name, (strategy, budget) in strategies().items():
            t = time.monotonic()
            results = await asyncio.gather(
                *(strategy.run(q.prompt(), engine, budget, seed=seed + i) for i, q in enumerate(questions))
            )
            secs = time.monotonic() - t
            correct = sum(same_answer(r.answer, q.answer) for r, q in zip(results, questions))
            tokens = sum(r.usage.completion_tokens for r in results)
            samples = sum(len(r.samples) for r in results)
            rows.append((name, correct / len(questions), tokens / len(questions), samples / len(questions),
                         secs / len(questions)))
    finally:
        await engine.aclose()
    print("| strategy | accuracy | completion tokens / q | samples / q | seconds / q |")
    print("|---|---|---|---|---|")
    for name, acc, tok, smp, sec in rows:
        print(f"| {name} | {acc:.1%} | {tok:.0f} | {smp:.1f} | {sec:.2f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--questions", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    asyncio.run(main(args.questions, args.seed))
