"""Step-wise search on the bundled model: particle filtering vs beam search, DVTS and
weighted best-of-N at equal N, with the same process verifier; and the engine's
prefill work of a particle-filtering run against N independent full completions.

    python benchmarks/stepwise_search.py            # 6 questions, N = 4, 8, 16
    python benchmarks/stepwise_search.py --quick    # 4 questions, N = 4, 8

Model: SmolLM2-135M-Instruct (bundled) in the in-process vLLM engine with prefix
caching. Questions: ``ttc.datasets.word_problems`` (multi-step arithmetic word
problems, fixed seed). Verifier: the rule-based arithmetic step check
(:class:`verifiers.process.ArithmeticStepCheck`, aggregate "min"), as a process
verifier for the searches and an outcome verifier (same scores over the answer's
steps) for weighted best-of-N. Tokens = completion tokens per question (the decode
work; prompt tokens are reported in the prefill table).

Prefill table: the prompt tokens vLLM's scheduler ran through the model
(``VLLMEngine(count_scheduled_tokens=True)``: per-iteration scheduler details, the ground
truth), next to the per-request counters (sent, served from the prefix cache or a resumed
request, computed = sent - cached), for N independent full completions of the same
questions (N requests of n=1), the same N completions as one request with n=N (vLLM runs
it as N child requests: the scheduler shows the prompt computed N times, the per-request
counter only once), and particle filtering at N with every step a new request (the
prefix comes from the prefix cache, the last partial KV block recomputed); with
``--resumable`` also with resumable steps (experimental, a continued particle resumes
its request; see engines/vllm_sessions.py for its known defect). Each phase tags its
questions with a distinct prefix so no phase reuses another's cache.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke size: 4 questions, N = 4, 8")
    ap.add_argument("--questions", type=int, default=None)
    ap.add_argument("--ns", type=str, default=None, help="comma-separated N values (default 4,8,16)")
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--step-tokens", type=int, default=32, help="max tokens of one step")
    ap.add_argument("--prefill-n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prefill-only", action="store_true", help="only the prefill table")
    ap.add_argument("--resumable", action="store_true",
                    help="add a particle-filtering row with resumable steps (experimental: on vllm-cpu 0.32.0 "
                         "a resumed request corrupts a prefix-cache block, see engines/vllm_sessions.py)")
    ap.add_argument("--block-size", type=int, default=None,
                    help="vLLM KV block size (default: the engine's; vllm-cpu takes multiples of 32 only)")
    ap.add_argument("--openai", type=str, default=None,
                    help="use an OpenAI-compatible vLLM server at this URL instead of the in-process engine "
                         "(prefill counters then come from Usage.cached_prompt_tokens)")
    ap.add_argument("--max-minutes", type=float, default=15.0,
                    help="skip the remaining accuracy rows once this much time has passed")
    return ap.parse_args()


async def _main(args: argparse.Namespace) -> None:
    from ttc.engines.vllm_engine import VLLMEngine
    from ttc.strategies import DVTS, BeamSearch, BestOfN, ParticleFiltering, StepPolicy
    from ttc.verifiers import ArithmeticStepCheck, ProcessAsOutcome

    from ttc import Budget, SamplingParams
    from ttc.answers import same_answer
    from ttc.datasets import word_problems
    from ttc.models import bundled_model_path

    nq = args.questions or (4 if args.quick else 6)
    ns = [int(x) for x in (args.ns or ("4,8" if args.quick else "4,8,16")).split(",")]
    examples = word_problems(nq, seed=args.seed, steps=(2, 3))
    policy = StepPolicy(max_steps=args.max_steps, max_step_tokens=args.step_tokens)
    params = SamplingParams(temperature=0.8, top_p=0.95)
    full = params.model_copy(update={"max_tokens": args.max_steps * args.step_tokens})
    verifier = ArithmeticStepCheck(aggregate="min")

    def methods(n: int) -> dict[str, object]:
        m = 2 if n <= 4 else 4
        return {
            "particle filtering": ParticleFiltering(n, verifier, policy=policy, params=params, final="vote"),
            f"beam search (M={m})": BeamSearch(n, verifier, m=m, policy=policy, params=params, final="vote"),
            f"DVTS (M={m})": DVTS(n, verifier, m=m, policy=policy, params=params, final="vote"),
            "weighted best-of-N": BestOfN(n, ProcessAsOutcome(verifier, policy.separator), weighted=True, params=full),
        }

    t0 = time.time()
    if args.openai:
        from ttc.engines.openai_engine import OpenAIEngine

        engine = OpenAIEngine(args.openai, model="smollm2", tokenizer=str(bundled_model_path()))
    else:
        # eager mode: no torch.compile at start-up (minutes on a loaded 2-core machine)
        kw = {"block_size": args.block_size} if args.block_size else {}
        engine = VLLMEngine(bundled_model_path(), max_model_len=2048, kv_cache_gib=2, seed=args.seed,
                            enforce_eager=True, count_scheduled_tokens=True, **kw)
    totals = {"prompt_tokens": 0, "cached_prompt_tokens": 0, "completion_tokens": 0}
    keys = ("prompt_tokens", "cached_prompt_tokens", "computed_prompt_tokens", "completion_tokens",
            "scheduled_prefill_tokens", "scheduled_decode_tokens")

    def stats() -> dict[str, int]:
        if hasattr(engine, "stats"):
            return engine.stats()
        return {**totals, "computed_prompt_tokens": totals["prompt_tokens"] - totals["cached_prompt_tokens"]}

    def note(u) -> None:  # type: ignore[no-untyped-def]
        for k in totals:
            totals[k] += getattr(u, k)
    rows = []
    try:
        # prefill work: PF at N vs N independent full completions (n=1 requests)
        n = args.prefill_n
        pre = []

        async def phase(tag: str, run, resumable: bool = False) -> None:  # type: ignore[no-untyped-def]
            if hasattr(engine, "resumable_steps"):
                engine.resumable_steps = resumable
            before = stats()
            await asyncio.gather(*(run(f"[{tag}] " + e.prompt("cot"), i) for i, e in enumerate(examples)))
            await asyncio.sleep(0.5)  # the last iterations' scheduler stats arrive after the outputs
            after = stats()
            d = {k: after[k] - before[k] for k in keys if k in after}
            pre.append((tag, d))
            print(f"  prefill {tag}: {d}", flush=True)

        pf = ParticleFiltering(n, verifier, policy=policy, params=params)

        async def run_pf(q: str, i: int) -> None:
            note((await pf.run(q, engine, seed=1000 + i)).usage)

        from ttc import Prompt

        async def run_full(q: str, i: int) -> None:
            p = Prompt.of(q)
            for g in await asyncio.gather(*(engine.generate(p, full) for _ in range(n))):
                note(g.usage)

        async def run_full_n(q: str, i: int) -> None:
            note((await engine.generate(Prompt.of(q), full.model_copy(update={"n": n}))).usage)

        await phase(f"{n} full completions (n=1 requests)", run_full)
        await phase(f"{n} full completions as one n={n} request", run_full_n)
        await phase(f"particle filtering N={n}, every step a new request", run_pf)
        if args.resumable:
            await phase(f"particle filtering N={n}, resumable steps (experimental)", run_pf, resumable=True)
            engine.resumable_steps = False
        for n in [] if args.prefill_only else ns:
            for label, strat in methods(n).items():
                if time.time() - t0 > args.max_minutes * 60:
                    print(f"  N={n} {label}: skipped (--max-minutes {args.max_minutes})", flush=True)
                    continue
                ts = time.time()
                res = await asyncio.gather(*(
                    strat.run(e.prompt("cot"), engine, Budget(), seed=args.seed + i)  # type: ignore[attr-defined]
                    for i, e in enumerate(examples)
                ))
                acc = sum(same_answer(r.answer, e.answer) for r, e in zip(res, examples)) / nq
                tok = sum(r.usage.completion_tokens for r in res) / nq
                ptok = sum(r.usage.prompt_tokens for r in res) / nq
                calls = sum(r.usage.calls for r in res) / nq
                rows.append((n, label, acc, tok, ptok, calls, time.time() - ts))
                print(f"  N={n} {label}: acc={acc:.3f} tokens={tok:.0f} ({time.time() - ts:.0f}s)", flush=True)

    finally:
        await engine.aclose()

    where = f"OpenAI engine on {args.openai}" if args.openai else "in-process vLLM CPU engine"
    print(f"\n### Step-wise search on {nq} word problems (2-3 steps, seed {args.seed}), SmolLM2-135M, {where}\n")
    print("verifier: arithmetic step check (min over steps); tokens = completion tokens per question\n")
    print("| N | method | accuracy | tokens/q | prompt tokens/q | calls/q | wall s |")
    print("|---|---|---|---|---|---|---|")
    for n, label, acc, tok, ptok, calls, wall in rows:
        print(f"| {n} | {label} | {acc:.3f} | {tok:.0f} | {ptok:.0f} | {calls:.1f} | {wall:.0f} |")
    print(f"\n### Prefill work ({nq} questions)\n")
    print("Per-request counters: prompt tokens sent, served from the prefix cache (or a resumed request), computed =")
    print("sent - cached. Scheduler: the prompt tokens vLLM's scheduler ran through the model (iteration details),")
    print("the ground truth (vLLM runs n=8 as 8 child requests; the per-request counter reports one).\n")
    print("| run | prompt tokens sent | cached | computed (per request) | computed (scheduler) | completion tokens |")
    print("|---|---|---|---|---|---|")
    for tag, d in pre:
        print(f"| {tag} | {d['prompt_tokens']} | {d['cached_prompt_tokens']} | {d['computed_prompt_tokens']} "
              f"| {d.get('scheduled_prefill_tokens', '-')} | {d['completion_tokens']} |")
    metric = "scheduled_prefill_tokens" if "scheduled_prefill_tokens" in pre[0][1] else "computed_prompt_tokens"
    base = pre[0][1][metric]
    if base > 0:
        for tag, d in pre[1:]:
            print(f"\n{tag}: prompt work / {pre[0][0]}' = {d[metric] / base:.2f}"
                  + (" (goal <= 1.3)" if tag.startswith("particle") else ""), end="")
        print(f"\n(prompt work = {metric})")
        sent = pre[0][1]["prompt_tokens"]
        for tag, d in pre[2:]:
            print(f"{tag}: prompt work / the prompt tokens of {pre[0][0]} without a prefix cache ({sent}) = "
                  f"{d[metric] / sent:.2f}")
    if hasattr(engine, "continuations"):
        print(f"token-exact continuations: {engine.continuations.hits} prompts reused generated token ids; "
              f"KV block size {engine.block_size}")
    print(f"\ntotal wall time {time.time() - t0:.0f}s")


if __name__ == "__main__":
    asyncio.run(_main(_parse()))
