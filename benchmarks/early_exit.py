"""Early exit on certainty (Dynasor-CoT probes) on the real bundled model.

Chain-of-thought prompts on multi-step word problems (``ttc.bench.datasets.word_problems``,
fixed seed): for each configuration, tokens per question (trace + probe completion
tokens, the cost that matters for decode-bound serving; prompt tokens reported apart)
and accuracy, each with a 95% interval, against the no-exit baseline (the same
greedy trace without probes, up to ``--max-tokens``). Goal: >= 30% fewer
tokens at an accuracy inside the baseline's 95% interval.

Also measures the self-evaluation signal (Manvi et al.) of the un-tuned model:
AUROC of P(No) to "Would you do better if you started over?" against correctness.

    python benchmarks/early_exit.py            # full run, in-process vLLM (use realslot)
    python benchmarks/early_exit.py --quick    # smoke size
    python benchmarks/early_exit.py --base-url http://127.0.0.1:18000/v1   # an OpenAI server instead
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time

import numpy as np

from ttc.bench.metrics import wilson_interval

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson interval (``ttc.bench.metrics.wilson_interval``)."""
    return wilson_interval(k, n)


def mean_ci(xs: list[float], z: float = 1.96) -> tuple[float, float, float]:
    a = np.asarray(xs, dtype=float)
    m = float(a.mean())
    h = z * float(a.std(ddof=1)) / math.sqrt(len(a)) if len(a) > 1 else 0.0
    return m, m - h, m + h


async def run_config(engine, examples, make_strategy, budget=None):  # type: ignore[no-untyped-def]
    from ttc.answers import DEFAULT_EQUIVALENCE

    strat = make_strategy()
    t0 = time.monotonic()
    results = await asyncio.gather(*(strat.run(e.prompt("cot"), engine, budget, seed=i) for i, e in enumerate(examples)))
    wall = time.monotonic() - t0
    rows = []
    for e, r in zip(examples, results):
        gen = r.usage_by_kind.get("generate")
        probe = r.usage_by_kind.get("probe")
        rows.append({
            "correct": bool(DEFAULT_EQUIVALENCE(r.answer, e.answer)),
            "tokens": r.usage.completion_tokens,
            "trace": r.samples[0].num_tokens if r.samples else 0,
            "generate": gen.completion_tokens if gen else 0,
            "probe": probe.completion_tokens if probe else 0,
            "prompt": r.usage.prompt_tokens,
            "exit": r.samples[0].meta.get("exit", "-") if r.samples else "-",
            "answer": r.answer,
            "text": r.samples[0].text if r.samples else "",
        })
    return rows, wall


async def self_eval_signal(engine, examples, rows):  # type: ignore[no-untyped-def]
    """P(No) of the greedy CoT sample vs its correctness (AUROC)."""
    from ttc.budget import Meter
    from ttc.context import RunContext
    from ttc.strategies.self_eval import SelfEvaluator, auroc
    from ttc.types import Prompt

    ev = SelfEvaluator()
    ctx = RunContext(engine, Meter())
    p_no = await asyncio.gather(*(ev.p_no(ctx, Prompt.of(e.prompt("cot")), r["text"]) for e, r in zip(examples, rows)))
    labels = [r["correct"] for r in rows]
    return auroc(p_no, labels), p_no, labels


def make_engine(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ttc.models import bundled_model_path

    if args.base_url:
        from ttc.engines.openai_engine import OpenAIEngine

        return (OpenAIEngine(args.base_url, model=args.model, tokenizer=str(bundled_model_path())),
                f"OpenAIEngine({args.base_url})")
    from ttc.engines import VLLMEngine

    return (VLLMEngine(bundled_model_path(), max_model_len=2048, kv_cache_gib=2),
            "VLLMEngine (in-process, bundled SmolLM2-135M-Instruct)")


def configs(args: argparse.Namespace) -> list[tuple[str, object]]:
    """The no-exit baseline, then every preset with every probe style."""
    from ttc.strategies.early_exit import PRESETS, DynasorCoT, EarlyExit
    from ttc.strategies.simple import Greedy
    from ttc.types import SamplingParams

    greedy = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    out: list[tuple[str, object]] = [("no exit (greedy CoT)", lambda: Greedy(greedy))]
    presets = ["aggressive"] if args.quick else (args.presets.split(",") if args.presets else list(PRESETS))
    for style in args.probes.split(","):
        for p in presets:
            out.append((
                f"{p} (chunk {PRESETS[p].chunk_tokens}, k={PRESETS[p].k}, probe {style})",
                lambda p=p, style=style: DynasorCoT(EarlyExit(p, max_tokens=args.max_tokens, probe=style,
                                                              mode=args.mode)),
            ))
    return out


def print_table(table, n: int) -> None:  # type: ignore[no-untyped-def]
    """Accuracy and tokens of every configuration against the first (the baseline)."""
    print("| config | accuracy [95% CI] | tokens/q (trace+probe) [95% CI] | trace | probe | saved | "
          "prompt tok/q | exits (certain/finished/max) | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    base_rows = table[0][1]
    base_tok = float(np.mean([r["tokens"] for r in base_rows]))
    base_ci = wilson(sum(r["correct"] for r in base_rows), n)
    for name, rows, wall in table:
        k = sum(r["correct"] for r in rows)
        lo, hi = wilson(k, n)
        m, tlo, thi = mean_ci([r["tokens"] for r in rows])
        saved = 1 - m / base_tok if base_tok else 0.0
        ex = [r["exit"] for r in rows]
        exits = f"{ex.count('certain')}/{ex.count('finished')}/{ex.count('max_tokens')}" if ex[0] != "-" else "-"
        inside = "" if rows is base_rows else (" (in base CI)" if base_ci[0] <= k / n <= base_ci[1] else " (OUT)")
        print(f"| {name} | {k / n:.3f} [{lo:.3f}, {hi:.3f}]{inside} | {m:.1f} [{tlo:.1f}, {thi:.1f}] | "
              f"{np.mean([r['trace'] for r in rows]):.1f} | {np.mean([r['probe'] for r in rows]):.1f} | "
              f"{saved:+.1%} | {np.mean([r['prompt'] for r in rows]):.0f} | {exits} | {wall:.1f} |")
    print("\ntokens = completion tokens billed (trace chunks, including the aborted in-flight chunk, + probes); "
          "'saved' = 1 - tokens / baseline tokens; accuracy CI: Wilson; tokens CI: normal approximation.")


async def print_self_eval(engine, examples, base_rows) -> None:  # type: ignore[no-untyped-def]
    au, p_no, labels = await self_eval_signal(engine, examples, base_rows)
    pos = [p for p, y in zip(p_no, labels) if y]
    neg = [p for p, y in zip(p_no, labels) if not y]
    print("\n## Self-evaluation signal (un-tuned model)\n")
    print("| questions | correct | mean P(No) correct | mean P(No) wrong | AUROC P(No) vs correct |")
    print("|---|---|---|---|---|")
    fmt = lambda xs: f"{np.mean(xs):.3f}" if xs else "-"
    print(f"| {len(examples)} | {sum(labels)} | {fmt(pos)} | {fmt(neg)} | {au if au is None else f'{au:.3f}'} |")


async def main(args: argparse.Namespace) -> None:
    from ttc.bench.datasets import word_problems

    engine, engine_name = make_engine(args)
    n = 8 if args.quick else args.n
    steps = tuple(int(s) for s in args.steps.split(","))
    examples = word_problems(n, seed=args.seed, steps=steps)
    t_all = time.monotonic()
    table = []
    try:
        for name, make in configs(args):
            rows, wall = await run_config(engine, examples, make)
            table.append((name, rows, wall))
            print(f"[{time.monotonic() - t_all:.0f}s] {name}: acc {np.mean([r['correct'] for r in rows]):.3f}, "
                  f"tokens/q {np.mean([r['tokens'] for r in rows]):.1f}", file=sys.stderr, flush=True)
        print(f"\n## Early exit on certainty: {engine_name}\n")
        print(f"word_problems(n={n}, seed={args.seed}, steps={steps}), Example.prompt('cot'), greedy, "
              f"max_tokens={args.max_tokens}, mode={args.mode}\n")
        print_table(table, n)
        if not args.skip_self_eval:
            await print_self_eval(engine, examples, table[0][1])
        print(f"\ntotal wall time {time.monotonic() - t_all:.0f} s")
    finally:
        await engine.aclose()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 questions, aggressive preset only")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", default="1,2,3")
    ap.add_argument("--max-tokens", type=int, default=384)
    ap.add_argument("--probes", default="boxed", help="comma-separated probe styles (boxed, answer_is)")
    ap.add_argument("--presets", default=None, help="comma-separated presets (default: all of PRESETS)")
    ap.add_argument("--mode", default="continuation", choices=["continuation", "stream"])
    ap.add_argument("--base-url", default=None, help="use OpenAIEngine on this server instead of in-process vLLM")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--skip-self-eval", action="store_true")
    asyncio.run(main(ap.parse_args()))
