"""Offline sweep of the Beta stopping rule's threshold and batch schedule on a recorded pool.

Replays each question's recorded samples in order (no engine): for every schedule and
threshold, the rule (``ttc.strategies.BetaRule``, capped at ``--max`` samples) is checked
after each batch, the majority answer at the stop is graded, and the completion tokens
of the samples drawn are summed. Prints accuracy and tokens relative to fixed N = ``--max``
on the same samples, i.e. how far adaptive stopping can cut tokens on this model
(the adaptive-sampling goal: the accuracy of fixed N = 16 with <= 40% of its tokens).

    python benchmarks/stopping_sweep.py --pool benchmarks/pools/addition_200x32.jsonl.gz
"""

from __future__ import annotations

import argparse

import numpy as np

from ttc.answers import DEFAULT_EQUIVALENCE, extract_answer
from ttc.bench.metrics import wilson_interval
from ttc.bench.pool import Pool
from ttc.strategies import BetaRule
from ttc.strategies.voting import vote
from ttc.types import Sample

SCHEDULES = {"4,2,2,4,4 (default)": (4, 2, 2, 4, 4), "3,1,1,1,2,2,4": (3, 1, 1, 1, 2, 2, 4),
             "2,1,1,1,1,2,2,4": (2, 1, 1, 1, 1, 2, 2, 4), "1 (after every sample)": (1,)}
THRESHOLDS = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7)


def run(questions: list[tuple[list[Sample], str]], rule: BetaRule | None, schedule: tuple[int, ...], cap: int,
        seed: int) -> tuple[int, int]:
    rng = np.random.default_rng(seed)
    correct = tokens = 0
    for samples, ref in questions:
        k = 0
        for i in range(cap):
            k = min(k + (schedule[i] if i < len(schedule) else schedule[-1]), cap)
            if rule is None or k >= cap or rule.check(samples[:k]).stop:
                break
        d = vote(samples[:k], rng)
        correct += d.answer is not None and bool(DEFAULT_EQUIVALENCE(d.answer, ref))
        tokens += sum(s.num_tokens for s in samples[:k])
    return correct, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--max", type=int, default=16, help="the fixed N (and the rule's cap)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    pool = Pool.load(a.pool)
    if pool.k < a.max:
        raise SystemExit(f"--max {a.max}: the pool has only {pool.k} samples per question")
    qs = [([Sample(index=i, text=g.text, num_tokens=g.num_tokens, answer=extract_answer(g.text))
            for i, g in enumerate(pq.samples[: a.max])], pq.answer) for pq in pool.questions]
    n = len(qs)
    fc, ft = run(qs, None, (a.max,), a.max, a.seed)
    lo, hi = wilson_interval(fc, n)
    print(f"## Beta-rule sweep on {a.pool} ({n} questions, the first {a.max} recorded samples each)\n")
    print(f"fixed N={a.max}: accuracy {fc / n:.3f} [95% CI {lo:.3f}, {hi:.3f}], {ft / n:.0f} tokens/question\n")
    print("| schedule | threshold | accuracy | in fixed-N CI | tokens vs fixed N |")
    print("|---|---|---|---|---|")
    for name, sched in SCHEDULES.items():
        for th in THRESHOLDS:
            c, t = run(qs, BetaRule(th, min_samples=1, max_samples=a.max), sched, a.max, a.seed)
            inside = "yes" if lo <= c / n <= hi else "no"
            print(f"| {name} | {th} | {c / n:.3f} | {inside} | {t / ft:.0%} |")


if __name__ == "__main__":
    main()
