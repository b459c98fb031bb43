"""Early exit on certainty (Dynasor-CoT probes) on the real bundled model.

Chain-of-thought prompts on multi-step word problems (``ttc.bench.datasets.word_problems``,
fixed seed): for each configuration, tokens per question (trace + probe completion
tokens, the cost that matters for decode-bound serving; prompt tokens reported apart)
and accuracy, each with a 95% interval, against the no-exit baseline (the same
greedy trace without probes, up to ``--max-tokens``). Goal: >= 30% fewer
tokens at an accuracy inside the baseline's 95% interval.

Also measures the self-evaluation signal (Manvi et al.) of the un-tuned model:
AUROC of P(No) to "Would you do better if you started over?" against correctness.

With ``--sc N`` it measures early exit combined with self-consistency instead, against
fixed self-consistency at the same cap of N sampled traces (``--temperature``): each
sample exits on its probes, and the vote stops early on a board shared by the traces
(``EarlyExitSelfConsistency(board=True)``: the leader is decided, the stopping rule fires
on the votes, or with shared probes on the votes plus the running traces' probe answers;
``agree``: a trace stops on a probe other traces agree with). ``--deepconf`` adds DeepConf
online (consensus stop at tau) and offline at the same cap, in the same run.

    python benchmarks/early_exit.py            # full run, in-process vLLM (use realslot)
    python benchmarks/early_exit.py --quick    # smoke size
    python benchmarks/early_exit.py --base-url http://127.0.0.1:18000/v1   # an OpenAI server instead
    python benchmarks/early_exit.py --sc 8 --n 60 --steps 1,2 --probes boxed_fast --presets eager --deepconf
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
    from collections import Counter

    from ttc.answers import DEFAULT_EQUIVALENCE

    strat = make_strategy()
    t0 = time.monotonic()
    results = await asyncio.gather(*(strat.run(e.prompt("cot"), engine, budget, seed=i) for i, e in enumerate(examples)))
    wall = time.monotonic() - t0
    rows = []
    for e, r in zip(examples, results):
        gen = r.usage_by_kind.get("generate")
        probe = r.usage_by_kind.get("probe")
        exits = Counter(s.meta.get("exit", "-") for s in r.samples)
        rows.append({
            "correct": bool(DEFAULT_EQUIVALENCE(r.answer, e.answer)),
            "tokens": r.usage.completion_tokens,
            "trace": gen.completion_tokens if gen else r.usage.completion_tokens,
            "probe": probe.completion_tokens if probe else 0,
            "prompt": r.usage.prompt_tokens,
            "exit": r.samples[0].meta.get("exit", "-") if r.samples else "-",
            "exits": exits,
            "samples": len(r.samples),
            "stop": r.stop_reason,
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
                                                              mode=args.mode, probe_max_tokens=args.probe_max_tokens)),
            ))
    return out


def sc_configs(args: argparse.Namespace) -> list[tuple[str, object]]:
    """Fixed self-consistency at the cap (the baseline), then each saver alone and combined."""
    from ttc.strategies.deepconf import DeepConf
    from ttc.strategies.early_exit import PRESETS, EarlyExit, EarlyExitSelfConsistency
    from ttc.strategies.self_consistency import SelfConsistency
    from ttc.strategies.stopping import BetaRule, FixedN
    from ttc.types import SamplingParams

    n = args.sc
    p = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
    preset = (args.presets or "eager").split(",")[0]
    style = args.probes.split(",")[0]
    tag = f"{preset} (chunk {PRESETS[preset].chunk_tokens}, k={PRESETS[preset].k}), {style}"

    def ee(probe_max_tokens: int = args.probe_max_tokens) -> EarlyExit:
        return EarlyExit(preset, max_tokens=args.max_tokens, probe=style, mode=args.mode,
                         probe_max_tokens=probe_max_tokens)

    def combined(probe_max_tokens: int = args.probe_max_tokens, **kw):  # type: ignore[no-untyped-def]
        return lambda: EarlyExitSelfConsistency(BetaRule(args.beta, max_samples=n), early_exit=ee(probe_max_tokens),
                                                params=p, board=True, **kw)

    out: list[tuple[str, object]] = [
        (f"fixed SC-{n} (no exit)", lambda: SelfConsistency(FixedN(n), params=p, batch_sizes=(n,))),
        (f"SC-{n}, each sample exits: {tag}",
         lambda: EarlyExitSelfConsistency(FixedN(n), early_exit=ee(), params=p, batch_sizes=(n,))),
        (f"Beta stop ({args.beta}, max {n}), no exit",
         lambda: SelfConsistency(BetaRule(args.beta, max_samples=n), params=p)),
        (f"combined: exit + board (decided, Beta {args.beta})", combined()),
        ("combined + shared probes", combined(share_probes=True)),
        (f"combined + shared probes + agree={args.agree}", combined(share_probes=True, agree=args.agree)),
    ]
    if args.short_probe:
        out.append((f"combined + shared probes + agree={args.agree}, probes <= {args.short_probe} tokens",
                    combined(args.short_probe, share_probes=True, agree=args.agree)))
    if args.deepconf:
        w = args.window
        out += [
            (f"DeepConf online (n_init {n // 2}, max {n}, eta 90, tau {args.tau}, window {w})",
             lambda: DeepConf("online", n_init=max(n // 2, 1), max_traces=n, eta=90, tau=args.tau, window=w,
                              parallelism=max(n // 2, 1), params=p)),
            (f"DeepConf offline (max {n}, eta 50, window {w})",
             lambda: DeepConf("offline", max_traces=n, eta=50, window=w, params=p)),
        ]
    if args.rows:
        keep = args.rows.split(",")
        out = out[:1] + [c for c in out[1:] if any(k in c[0] for k in keep)]
    return out


def _exits(rows) -> str:  # type: ignore[no-untyped-def]
    """Single traces: certain/finished/max exits. Votes: every sample's exit, then the
    vote's stop reasons."""
    from collections import Counter

    if all(r["samples"] <= 1 for r in rows):
        ex = [r["exit"] for r in rows]
        return f"{ex.count('certain')}/{ex.count('finished')}/{ex.count('max_tokens')}" if ex[0] != "-" else "-"
    per_sample: Counter[str] = Counter()
    for r in rows:
        per_sample.update(r["exits"])
    stops = Counter(r["stop"] for r in rows)
    samples = ", ".join(f"{k} {v}" for k, v in per_sample.most_common() if k != "-")
    return (f"{samples or '-'}; samples/q {np.mean([r['samples'] for r in rows]):.1f}; stops "
            + ", ".join(f"{k} {v}" for k, v in stops.most_common()))


def print_table(table, n: int) -> None:  # type: ignore[no-untyped-def]
    """Accuracy and tokens of every configuration against the first (the baseline)."""
    print("| config | accuracy [95% CI] | tokens/q (trace+probe) [95% CI] | trace | probe | saved | "
          "prompt tok/q | exits (certain/finished/max; SC: per sample, and the vote's stops) | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    base_rows = table[0][1]
    base_tok = float(np.mean([r["tokens"] for r in base_rows]))
    base_ci = wilson(sum(r["correct"] for r in base_rows), n)
    for name, rows, wall in table:
        k = sum(r["correct"] for r in rows)
        lo, hi = wilson(k, n)
        m, tlo, thi = mean_ci([r["tokens"] for r in rows])
        saved = 1 - m / base_tok if base_tok else 0.0
        exits = _exits(rows)
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
        for name, make in (sc_configs(args) if args.sc else configs(args)):
            rows, wall = await run_config(engine, examples, make)
            table.append((name, rows, wall))
            print(f"[{time.monotonic() - t_all:.0f}s] {name}: acc {np.mean([r['correct'] for r in rows]):.3f}, "
                  f"tokens/q {np.mean([r['tokens'] for r in rows]):.1f}", file=sys.stderr, flush=True)
        print(f"\n## Early exit on certainty: {engine_name}\n")
        sampling = f"T={args.temperature}, cap {args.sc} traces" if args.sc else "greedy"
        print(f"word_problems(n={n}, seed={args.seed}, steps={steps}), Example.prompt('cot'), {sampling}, "
              f"max_tokens={args.max_tokens}, mode={args.mode}\n")
        print_table(table, n)
        if not args.skip_self_eval and not args.sc:
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
    ap.add_argument("--sc", type=int, default=0, metavar="N",
                    help="early exit combined with self-consistency, against fixed SC at a cap of N traces")
    ap.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the --sc rows")
    ap.add_argument("--beta", type=float, default=0.95, help="Beta rule threshold of the --sc rows")
    ap.add_argument("--agree", type=int, default=2, help="agreement exit of the last --sc row")
    ap.add_argument("--deepconf", action="store_true", help="with --sc: DeepConf online and offline rows")
    ap.add_argument("--tau", type=float, default=0.95, help="DeepConf online consensus threshold")
    ap.add_argument("--window", type=int, default=32, help="DeepConf group window (tokens)")
    ap.add_argument("--probe-max-tokens", type=int, default=20, help="tokens a probe may generate")
    ap.add_argument("--short-probe", type=int, default=8,
                    help="with --sc: one more combined row with probes of at most this many tokens (0: none)")
    ap.add_argument("--rows", default="", help="with --sc: keep the baseline and the rows naming these substrings")
    asyncio.run(main(ap.parse_args()))
