"""Compute-optimal policy: fitted on one split, evaluated on another, against fixed strategies.

Everything is replayed from recorded pools (``ttc record``): no model runs. The split is
made here: each distinct question text goes to the fit or the eval side by a hash of the
text (:func:`ttc.bench.compute_optimal.side`), the same for every pool, so with
``--eval-pool`` (another generator seed) the policy is fitted on the fit side of the first
pool and evaluated on fresh samples of questions it never saw (the eval side of the
second); without it, both sides come from one pool. Fit and eval never share a question.

Printed (95% intervals: percentile bootstrap over eval questions, paired where a
difference is shown; each question's result is its mean over ``--seeds`` draw orders):

1. Tokens to reach fixed-16 self-consistency accuracy: the policy is fitted for a
   fraction f of fixed-16's completion tokens per question (as measured on the fit side)
   and run on the eval side under one batch budget of f times fixed-16's eval tokens;
   the smallest f whose accuracy reaches fixed-16's (goal: <= 20%).
2. Accuracy at the token budget of fixed-8 self-consistency, against the best fixed
   strategy (majority of N, self-consistency with the Beta stop, the verified-answer
   stop, verifier-weighted best-of-N; every N) that spends no more on the eval side
   (goal: >= +5 pp). The best fixed strategy is picked on the eval side itself, which
   favours it.
3. The learned policy (bins, share, choice, fitted accuracy and tokens per bin).

    python benchmarks/compute_optimal.py \\
        --fit-pool benchmarks/pools/addition_200x32.jsonl.gz \\
        --eval-pool benchmarks/pools/addition_200x32_seed1.jsonl.gz --seeds 4
    python benchmarks/compute_optimal.py --quick     # a few seconds (the test suite runs it)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ttc.bench.compute_optimal import (
    Outcome,
    diff_ci,
    difficulty_signals,
    expected,
    fit_policy,
    fixed_strategies,
    items_of,
    mean_ci,
    run_fixed,
    run_policy,
    split_keys,
)
from ttc.bench.pool import Pool
from ttc.strategies.compute_optimal import Policy
from ttc.types import SamplingParams

ROOT = Path(__file__).resolve().parent
DEFAULT_POOL = ROOT / "pools" / "addition_200x32.jsonl.gz"
QUICK_POOL = ROOT / "pools" / "addition_quick_40x16.jsonl.gz"  # 40 questions x 16 samples of DEFAULT_POOL
FRACTIONS = (0.1, 0.125, 0.15, 0.175, 0.2, 0.225, 0.25, 0.275, 0.3, 0.325, 0.35, 0.4, 0.5, 0.75, 1.0)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def acc_cell(per_q: np.ndarray) -> str:
    lo, hi = mean_ci(per_q)
    return f"{per_q.mean():.3f} [{lo:.3f}, {hi:.3f}]"


def diff_cell(a: np.ndarray, b: np.ndarray) -> str:
    lo, hi = diff_ci(a, b)
    return f"{100 * (a.mean() - b.mean()):+.1f} pp [{100 * lo:+.1f}, {100 * hi:+.1f}]"


@dataclass
class Setup:
    """The split, the fixed strategies' outcomes and the fitting cache of one run."""

    a: argparse.Namespace
    fit: list
    ev: list
    params: SamplingParams
    caps: list[int]
    seeds: list[int]
    fit16: Outcome
    fit8: Outcome
    ev_fixed: dict[str, Outcome]
    info: dict
    measured: dict = field(default_factory=dict)

    async def policy_at(self, fit_tokens: float, eval_tokens: float) -> tuple[Policy, Outcome]:
        """The policy fitted for ``fit_tokens`` per question, run on the eval side under a
        batch budget of ``eval_tokens`` per question."""
        pol = await fit_policy(self.fit, self.params, fit_tokens, probes=self.a.probes, caps=self.caps,
                               seeds=self.seeds, measured=self.measured, fit_info=self.info)
        out = await run_policy(pol, self.ev, self.seeds, self.params, budget_tokens=int(eval_tokens * len(self.ev)))
        return pol, out


async def setup(a: argparse.Namespace) -> Setup:
    fit_pool = Pool.load(a.fit_pool)
    eval_pool = Pool.load(a.eval_pool) if a.eval_pool else fit_pool
    fit_items, eval_items = items_of(fit_pool), items_of(eval_pool)
    if a.limit:
        fit_items, eval_items = fit_items[: a.limit], eval_items[: a.limit]
    fit, ev = split_keys(fit_items, eval_items)
    hp = fit_pool.header.get("params", {})
    params = SamplingParams(temperature=hp.get("temperature", 0.8), max_tokens=hp.get("max_tokens", 32))
    k = min(len(i.samples) for i in fit + ev)
    caps = [c for c in a.caps if c <= k]
    seeds = list(range(a.seeds))
    print(f"fit: {len(fit)} questions of {a.fit_pool} ({fit_pool.header.get('dataset')}); eval: {len(ev)} questions "
          f"of {a.eval_pool or a.fit_pool} ({eval_pool.header.get('dataset')}); no question text on both sides; "
          f"{len(seeds)} draw orders per question; caps {caps}; probes {a.probes}; replay of recorded samples, "
          f"completion tokens as recorded.\n")
    # fixed-8/16 on the fit side (the budgets the policy is fitted for); every fixed strategy on the eval side
    fixed = fixed_strategies(params, [c for c in (1, 2, 4, 8, 16, 32) if c <= k])
    fit16 = await run_fixed(fixed["fixed-16 self-consistency"], fit, seeds)
    fit8 = await run_fixed(fixed["fixed-8 self-consistency"], fit, seeds)
    ev_fixed = {name: await run_fixed(make, ev, seeds) for name, make in fixed.items()}
    info = {"pool": Path(a.fit_pool).name, "dataset": fit_pool.header.get("dataset"),
            "split": "sha256 of the question text: the fit side"}
    return Setup(a, fit, ev, params, caps, seeds, fit16, fit8, ev_fixed, info)


async def row1(r: Setup) -> None:
    """Tokens to reach fixed-16 self-consistency accuracy."""
    ref16 = r.ev_fixed["fixed-16 self-consistency"]
    print("## 1. Tokens to reach fixed-16 self-consistency accuracy (goal: <= 20% of its tokens)\n")
    print(f"fixed-16 self-consistency on the eval side: accuracy {acc_cell(ref16.per_question())}, "
          f"{ref16.tokens_per_question:.1f} completion tokens/question.\n")
    print("| budget (of fixed-16's tokens) | policy accuracy [95% CI] | tokens used/q (of fixed-16's) "
          "| policy - fixed-16 [95% CI] | expected on the fit side (acc, tokens/q) |")
    print("|---|---|---|---|---|")
    reached = None
    for f in r.a.fractions:
        pol, out = await r.policy_at(f * r.fit16.tokens_per_question, f * ref16.tokens_per_question)
        e_acc, e_tok = expected(pol)
        print(f"| {pct(f)} | {acc_cell(out.per_question())} | {out.tokens_per_question:.1f} "
              f"({pct(out.tokens_per_question / ref16.tokens_per_question)}) "
              f"| {diff_cell(out.per_question(), ref16.per_question())} | {e_acc:.3f}, {e_tok:.1f} |", flush=True)
        if reached is None and out.accuracy >= ref16.accuracy:
            reached = (f, out)
    if reached:
        f, out = reached
        used = out.tokens_per_question / ref16.tokens_per_question
        print(f"\nRow 1: the policy reaches fixed-16's accuracy ({out.accuracy:.3f} >= {ref16.accuracy:.3f}) at a "
              f"budget of {pct(f)} of its tokens, spending {pct(used)} of them "
              f"(goal <= 20%: {'met' if used <= 0.2 else 'not met'}).")
    else:
        print(f"\nRow 1: the policy does not reach fixed-16's accuracy within {pct(max(r.a.fractions))} of its "
              "tokens (goal <= 20%: not met).")


async def row2(r: Setup) -> Policy:
    """Accuracy at fixed-8's budget against the best fixed strategy within it; returns the policy."""
    b8 = r.ev_fixed["fixed-8 self-consistency"].tokens_per_question
    pol8, out8 = await r.policy_at(r.fit8.tokens_per_question, b8)
    within = {n: o for n, o in r.ev_fixed.items() if o.tokens_per_question <= b8 + 1e-9}
    best_name = max(within, key=lambda n: (within[n].accuracy, -within[n].tokens_per_question))
    best = within[best_name]
    print(f"\n## 2. Accuracy at the token budget of fixed-8 self-consistency ({b8:.1f} completion tokens/question)\n")
    print("| method | accuracy [95% CI] | tokens/q |")
    print("|---|---|---|")
    print(f"| compute-optimal policy | {acc_cell(out8.per_question())} | {out8.tokens_per_question:.1f} |")
    for n, o in sorted(within.items(), key=lambda t: -t[1].accuracy)[:6]:
        print(f"| {n} | {acc_cell(o.per_question())} | {o.tokens_per_question:.1f} |")
    gain = out8.accuracy - best.accuracy
    print(f"\nRow 2: policy - best fixed strategy at that budget ({best_name}): "
          f"{diff_cell(out8.per_question(), best.per_question())} (goal >= +5 pp: {'met' if gain >= 0.05 else 'not met'}).")
    print(f"\n## 3. The learned policy (fitted for fixed-8's budget, {r.fit8.tokens_per_question:.1f} tokens/question "
          f"on the fit side)\n")
    print("\n".join(pol8.lines()))
    print("\nBins of the eval questions (all draw orders): "
          + json.dumps({b: sum(row.count(b) for row in out8.bins) for b in sorted({b for row in out8.bins for b in row})}))
    return pol8


async def main(a: argparse.Namespace) -> None:
    t0 = time.monotonic()
    r = await setup(a)
    await row1(r)
    pol8 = await row2(r)
    print("\nEvery fixed strategy on the eval side (accuracy @ tokens/question): " + "; ".join(
        f"{n} {o.accuracy:.3f} @ {o.tokens_per_question:.0f}" for n, o in r.ev_fixed.items()))
    if not a.quick:
        sig = difficulty_signals(r.fit, r.ev)
        print(f"\nDifficulty signals on the eval side (Pearson r with each question's pass@1): ridge on MiniLM "
              f"embeddings of the question, fitted on the fit side: {sig['embedding_r']:.2f}; the question's rate of "
              f"samples passing arithmetic_check: {sig['verified_rate_r']:.2f}.")
    if a.policy_out:
        pol8.save(a.policy_out)
        print(f"\npolicy written to {a.policy_out}")
    print(f"\nwall time {time.monotonic() - t0:.0f} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit-pool", help=f"pool whose fit side calibrates the policy (default {DEFAULT_POOL.name}; "
                                       f"--quick: {QUICK_POOL.name})")
    ap.add_argument("--eval-pool", help="pool whose eval side evaluates it (default: the fit pool's eval side)")
    ap.add_argument("--seeds", type=int, default=4, help="draw orders per question")
    ap.add_argument("--caps", type=int, nargs="+", default=[2, 4, 8, 16, 32], help="candidate sample caps")
    ap.add_argument("--probes", type=int, nargs="+", default=[1, 2], help="probe sizes to fit")
    ap.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS),
                    help="budgets (fractions of fixed-16's tokens) for row 1")
    ap.add_argument("--limit", type=int, help="only the first N distinct questions of each pool")
    ap.add_argument("--policy-out", help="write the learned policy (JSON) here")
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_POOL.name} (40 questions x 16 samples), 2 draw orders, caps up to 16, one probe size")
    a = ap.parse_args(argv)
    if a.quick:
        a.fit_pool = a.fit_pool or str(QUICK_POOL)
        a.seeds, a.caps, a.probes, a.fractions = 2, [2, 4, 8, 16], [1], [0.2, 0.4, 0.6]
    a.fit_pool = a.fit_pool or str(DEFAULT_POOL)
    return a


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
