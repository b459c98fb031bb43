"""The calibrated semantic reasoning router on the real bundled model.

A labelled mixed set (``ttc.bench.datasets.router_mix``, fixed seed): multi-step word problems,
where chain-of-thought may help, and capital cities, copying a word and one-step sums,
where it only costs tokens. It is split into a calibration half and a test half with a
fixed seed. On the calibration half:

- the classifier (bundled all-MiniLM-L6-v2 embeddings + logistic regression) is fit on the
  question kinds (``multi_step``, ``capital``, ``copy``, ``one_step``, read off the
  generator's templates);
- calibration runs every kind with reasoning on (chain-of-thought prompt, ``--reason-tokens``)
  and off (direct-answer prompt, ``--direct-tokens``) and writes the routing table that
  maximises ``accuracy - token_price * completion tokens``.

On the test half it prints accuracy (95% Wilson interval), completion/prompt tokens and
latency per question for always-reason, never-reason and the calibrated router
(:class:`ttc.routers.SemanticRouter`, entropy-banded policy on the calibrated table).
Goal: accuracy at least that of always-reason with >= 40% fewer tokens.

    python benchmarks/router.py            # full run, in-process vLLM (use realslot)
    python benchmarks/router.py --quick    # smoke size
    python benchmarks/router.py --base-url http://127.0.0.1:18000/v1   # an OpenAI server instead
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time

import numpy as np

from ttc.bench.metrics import wilson_interval

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson interval (``ttc.bench.metrics.wilson_interval``)."""
    return wilson_interval(k, n)


def kind_of(e) -> str:  # type: ignore[no-untyped-def]
    """The question's kind, from router_mix's templates."""
    if e.category == "reason":
        return "multi_step"
    if e.question.startswith("What is the capital"):
        return "capital"
    if e.question.startswith("Repeat this word"):
        return "copy"
    if re.fullmatch(r"What is \d+ \+ \d+\?", e.question):
        return "one_step"
    raise ValueError(f"unknown router_mix template: {e.question!r}")


async def run_system(name, run_one, examples, concurrency):  # type: ignore[no-untyped-def]
    from ttc.routers import default_grader

    sem = asyncio.Semaphore(concurrency)

    async def one(i, e):  # type: ignore[no-untyped-def]
        async with sem:
            t0 = time.monotonic()
            r = await run_one(i, e)
            return r, time.monotonic() - t0

    t0 = time.monotonic()
    out = await asyncio.gather(*(one(i, e) for i, e in enumerate(examples)))
    wall = time.monotonic() - t0
    rows = []
    for e, (r, dt) in zip(examples, out):
        routing = r.meta.get("routing") or {}
        rows.append({
            "kind": kind_of(e), "correct": default_grader(e, r), "tokens": r.usage.completion_tokens,
            "prompt": r.usage.prompt_tokens, "latency": dt, "reasoning": routing.get("reasoning"),
            "routed": routing.get("top_category"),
        })
    return name, rows, wall


def make_engine(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ttc.models import bundled_model_path

    if args.base_url:
        from ttc.engines.openai_engine import OpenAIEngine

        return (OpenAIEngine(args.base_url, model=args.model, tokenizer=str(bundled_model_path()),
                             timeout=args.timeout, max_attempts=2), f"OpenAIEngine({args.base_url})")
    from ttc.engines import VLLMEngine

    return (VLLMEngine(bundled_model_path(), max_model_len=2048, kv_cache_gib=2),
            "VLLMEngine (in-process, bundled SmolLM2-135M-Instruct)")


def split(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """router_mix, split into a calibration half and a test half (fixed seeds)."""
    from ttc.bench.datasets import router_mix

    data = router_mix(24 if args.quick else args.n, seed=args.seed)
    perm = np.random.default_rng(args.split_seed).permutation(len(data))
    return [data[i] for i in perm[: len(data) // 2]], [data[i] for i in perm[len(data) // 2 :]]


def fit_classifier(calib, test):  # type: ignore[no-untyped-def]
    """The question-kind classifier on the calibration half: (encoder, classifier, held-out
    accuracy, seconds including the model load)."""
    from ttc.routers import LogisticRegression, SentenceTransformerEncoder

    enc = SentenceTransformerEncoder()
    t0 = time.monotonic()
    clf = LogisticRegression().fit(enc.encode([e.question for e in calib]), [kind_of(e) for e in calib])
    clf_acc = clf.accuracy(enc.encode([e.question for e in test]), [kind_of(e) for e in test])
    return enc, clf, clf_acc, time.monotonic() - t0


async def compare_systems(args, engine, options, router, test):  # type: ignore[no-untyped-def]
    """Always-reason, never-reason and the calibrated router on the test half."""
    from ttc.routers.routes import run_route_once

    return [
        await run_system(f"always reason (CoT, {args.reason_tokens} tok)",
                         lambda i, e: _first(run_route_once(options["reason"], e.question, engine, seed=i)),
                         test, args.concurrency),
        await run_system(f"never reason (direct, {args.direct_tokens} tok)",
                         lambda i, e: _first(run_route_once(options["direct"], e.question, engine, seed=i)),
                         test, args.concurrency),
        await run_system("calibrated semantic router",
                         lambda i, e: router.run(e.question, engine, seed=i), test, args.concurrency),
    ]


def print_calibration(args, table, t_cal: float) -> None:  # type: ignore[no-untyped-def]
    from ttc.routers import choose_routes

    print(f"### Calibration (calibration half, {t_cal:.0f} s)\n")
    print(table.markdown())
    flags = ", ".join(f"{c}: {'reason' if e.reasoning else 'direct'}" for c, e in table.categories.items())
    print(f"\nCalibrated flags: {flags} (default: {table.default.option})\n")
    sweep = []
    for price in (0.0, 1e-4, 3e-4, args.token_price, 3e-3):
        t = choose_routes(table.measurements, token_price=price)
        sweep.append(f"| {price:g} | " + ", ".join(c for c, e in t.categories.items() if e.reasoning) + " |")
    print("Flags the same measurements give at other token prices (no new runs):\n")
    print("| token price | kinds that reason |\n|---|---|\n" + "\n".join(sweep) + "\n")


def print_test(args, systems, n_test: int) -> None:  # type: ignore[no-untyped-def]
    print(f"### Test half ({n_test} questions)\n")
    print("| system | accuracy [95% CI] | completion tok/q | vs always-reason | prompt tok/q | "
          "latency s/q | reasoned | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    base_tok = float(np.mean([r["tokens"] for r in systems[0][1]]))
    for name, rows, wall in systems:
        k, m = sum(r["correct"] for r in rows), len(rows)
        lo, hi = wilson(k, m)
        tok = float(np.mean([r["tokens"] for r in rows]))
        reasoned = [r["reasoning"] for r in rows if r["reasoning"] is not None]
        rs = f"{sum(reasoned)}/{len(reasoned)}" if reasoned else ("all" if "always" in name else "none")
        print(f"| {name} | {k / m:.3f} [{lo:.3f}, {hi:.3f}] | {tok:.1f} | {tok / base_tok - 1:+.1%} | "
              f"{np.mean([r['prompt'] for r in rows]):.0f} | {np.mean([r['latency'] for r in rows]):.2f} | "
              f"{rs} | {wall:.1f} |")
    print("\n#### Accuracy by kind (test half)\n")
    kinds = sorted({r["kind"] for r in systems[0][1]})
    print("| system | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for name, rows, _ in systems:
        cells = []
        for kd in kinds:
            rr = [r for r in rows if r["kind"] == kd]
            cells.append(f"{sum(r['correct'] for r in rr)}/{len(rr)}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    router_rows = systems[2][1]
    acc = [sum(r["correct"] for r in rows) / len(rows) for _, rows, _ in systems]
    saved = 1 - float(np.mean([r["tokens"] for r in router_rows])) / base_tok
    print(f"\nGoal (accuracy >= always-reason and >= 40% fewer tokens): accuracy {acc[2]:.3f} vs {acc[0]:.3f}, "
          f"tokens {saved:.1%} fewer -> {'MET' if acc[2] >= acc[0] and saved >= 0.4 else 'NOT MET'}")
    print("\ntokens = completion tokens billed per question; latency = wall seconds per question with "
          f"{args.concurrency} in flight; accuracy CI: Wilson; grading: ttc.routers.default_grader.")


async def main(args: argparse.Namespace) -> None:
    from ttc.routers import EncodedClassifier, SemanticRouter, calibrate, prompt_options

    t_all = time.monotonic()
    engine, engine_name = make_engine(args)
    calib, test = split(args)
    try:
        # 1. classifier on the calibration half
        enc, clf, clf_acc, t_clf = fit_classifier(calib, test)
        # 2. calibration: every kind with reasoning on and off
        options = prompt_options(reason_tokens=args.reason_tokens, direct_tokens=args.direct_tokens)
        t0 = time.monotonic()
        table = await calibrate(calib, options, engine, token_price=args.token_price, category_of=kind_of,
                                concurrency=args.concurrency, seed=args.seed)
        t_cal = time.monotonic() - t0
        # 3. the test half: always-reason, never-reason, calibrated router
        router = SemanticRouter(EncodedClassifier(enc, clf), table.policy(options))
        systems = await compare_systems(args, engine, options, router, test)

        n = len(calib) + len(test)
        print(f"\n## Semantic reasoning router: {engine_name}\n")
        print(f"router_mix(n={n}, seed={args.seed}) split {len(calib)}/{len(test)} (split seed {args.split_seed}); "
              f"greedy; reason = CoT prompt, max_tokens={args.reason_tokens}; direct = direct prompt, "
              f"max_tokens={args.direct_tokens}; token price {args.token_price} accuracy/token\n")
        print(f"Classifier: all-MiniLM-L6-v2 + logistic regression on {len(calib)} questions "
              f"({len(clf.classes)} kinds), held-out accuracy {clf_acc:.3f} ({t_clf:.1f} s incl. model load)\n")
        print_calibration(args, table, t_cal)
        print_test(args, systems, len(test))
        print(f"\ntotal wall time {time.monotonic() - t_all:.0f} s")
    finally:
        await engine.aclose()


async def _first(aw):  # type: ignore[no-untyped-def]
    return (await aw)[0]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="24 questions")
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--token-price", type=float, default=0.001, help="accuracy (0-1) one completion token costs")
    ap.add_argument("--reason-tokens", type=int, default=256)
    ap.add_argument("--direct-tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--base-url", default=None, help="use OpenAIEngine on this server instead of in-process vLLM")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--timeout", type=float, default=900.0, help="per-request timeout with --base-url (s)")
    asyncio.run(main(ap.parse_args()))
