"""Quickstart: 20 two-digit additions on the bundled SmolLM2-135M-Instruct through the
in-process vLLM engine; greedy versus multi-sample strategies under per-question budgets.

    make demo            # or: .venv/bin/python examples/quickstart.py [--questions 20] [--verbose]

Prints each strategy's row of accuracy, tokens, samples and seconds per question as soon as
it finishes, with a progress bar while it runs; vLLM's own log goes to a file unless
``--verbose``. About 5 minutes on 2 busy CPU cores; 20 questions give wide intervals
(one question is 5 points), so read the rows as a demonstration, not a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ttc import Budget, SamplingParams, Strategy
from ttc.answers import same_answer
from ttc.bench.datasets import addition
from ttc.models import bundled_model_path
from ttc.strategies import BestOfN, Greedy
from ttc.strategies.self_consistency import SelfConsistency
from ttc.strategies.stopping import BetaRule, VerifiedAnswer
from ttc.verifiers import ArithmeticCheck


def strategies() -> dict[str, tuple[Strategy, Budget]]:
    sp = SamplingParams(temperature=0.8, max_tokens=64)
    ex = "number"  # the answers are numbers: each sample's answer is the number it states
    out: dict[str, tuple[Strategy, Budget]] = {
        "greedy": (Greedy(params=sp, extractor=ex), Budget(completion_tokens=64)),
        "majority vote, N=8": (BestOfN(8, params=sp, extractor=ex), Budget(completion_tokens=8 * 64)),
        "best-of-8, equation check": (
            BestOfN(8, ArithmeticCheck(), params=sp, extractor=ex), Budget(completion_tokens=8 * 64)),
        "weighted best-of-8, equation check": (
            BestOfN(8, ArithmeticCheck(), weighted=True, params=sp, extractor=ex), Budget(completion_tokens=8 * 64)),
    }
    # Adaptive stops draw a few samples at a time, so they run longer than one batch of 8:
    # capped at 8 samples the demo stays near 5 minutes on 2 busy cores.
    out["self-consistency, adaptive Beta stop (max 8)"] = (
        SelfConsistency(rule=BetaRule(max_samples=8), params=sp, extractor=ex), Budget(completion_tokens=8 * 64))
    # adaptive and verified: stop at the first sample whose equations all check out
    out["self-consistency, verified-answer stop (max 8)"] = (
        SelfConsistency(rule=VerifiedAnswer(max_samples=8, pass_threshold=1.0), params=sp, weighting=ArithmeticCheck(),
                        extractor=ex),
        Budget(completion_tokens=8 * 64))
    return out


@contextlib.contextmanager
def _stderr_to(path: Path | None) -> Iterator[Path | None]:
    """Send this process's stderr (file descriptor 2) to ``path`` while the block runs; the
    vLLM engine-core process started inside it keeps writing its log there afterwards."""
    if path is None:
        yield None
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield path
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


async def main(n_questions: int, seed: int, verbose: bool) -> None:
    from tqdm import tqdm

    from ttc.engines import VLLMEngine

    questions = addition(n_questions, seed=seed)
    t0 = time.monotonic()
    print("starting the in-process vLLM engine on the bundled SmolLM2-135M-Instruct ...", flush=True)
    with _stderr_to(None if verbose else Path(tempfile.gettempdir()) / "ttc-demo-vllm.log") as log:
        engine = VLLMEngine(bundled_model_path(), max_model_len=2048, kv_cache_gib=2)
    print(f"engine ready in {time.monotonic() - t0:.0f}s, dtype {engine.stats()['dtype']}; "
          f"{len(questions)} two-digit additions per strategy" + (f"; vLLM's log: {log}" if log else "") + "\n",
          flush=True)
    print("| strategy | accuracy | completion tokens / q | samples / q | seconds / q |")
    print("|---|---|---|---|---|", flush=True)
    try:
        for name, (strategy, budget) in strategies().items():
            t = time.monotonic()
            runs = [strategy.run(q.prompt(), engine, budget, seed=seed + i) for i, q in enumerate(questions)]
            results = [r for r in await _with_progress(runs, name, tqdm)]
            secs = time.monotonic() - t
            correct = sum(same_answer(r.answer, q.answer) for r, q in zip(results, questions))
            tokens = sum(r.usage.completion_tokens for r in results)
            samples = sum(len(r.samples) for r in results)
            n = len(questions)
            print(f"| {name} | {correct / n:.1%} | {tokens / n:.0f} | {samples / n:.1f} | {secs / n:.2f} |", flush=True)
    finally:
        await engine.aclose()
    print(f"\ndone in {time.monotonic() - t0:.0f}s")


async def _with_progress(coros: list, label: str, tqdm) -> list:  # type: ignore[no-untyped-def]
    """Run ``coros`` concurrently behind a progress bar (on stderr, cleared when done);
    results in the order given."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    with tqdm(total=len(tasks), desc=label, unit="q", leave=False, file=sys.stderr) as bar:
        for fut in asyncio.as_completed(tasks):
            await fut
            bar.update()
    return [t.result() for t in tasks]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", action="store_true", help="show vLLM's own log lines")
    args = ap.parse_args()
    if not args.verbose:
        # Before vLLM is imported: its logger reads this once (the engine-core child inherits it).
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        logging.getLogger("ttc").setLevel(logging.WARNING)
    # A plain SIGTERM would end this process without shutting vLLM down, and its engine-core
    # process would keep running: exit through the normal path instead.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(main(args.questions, args.seed, args.verbose))
