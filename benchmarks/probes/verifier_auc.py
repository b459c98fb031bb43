"""How well the rule-based step check tells right samples from wrong ones, with and without
grounding (operands from the question or earlier results), on word problems the step-wise
benchmark does not use (questions 160.. of the same generator and seed).

    python benchmarks/probes/verifier_auc.py [questions] [offset]      # defaults: 120 160

Samples: 8 full completions per question, as weighted best-of-N draws them in
benchmarks/stepwise_search.py (plain prompt, T=0.5, top-p 0.95, 128 tokens), saved to
/tmp/ttc_verifier_auc_<offset>_<questions>.jsonl and reused on the next run. Printed per
variant and aggregate: the AUC of the score for "the sample's answer is right", the
accuracy of a reward-weighted vote over each question's 8 samples and of the top-scored
sample (the library's vote and tie rule: answer equivalence, ties at random, seed 0; the
rule scores take few distinct values, so ties are common and move these two columns by a
few points). The two outcome-level checks of ``ArithmeticStepCheck(outcome=True)`` are
measured on top of the grounded check, alone and together: the share of the question's
numerals used as operands, and whether the answer is the last right equation's result.
"""
import asyncio
import collections
import json
import math
import os
import sys

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
import numpy as np

from ttc import Prompt, Sample, SamplingParams
from ttc.answers import extract_answer, same_answer
from ttc.bench.datasets import word_problems
from ttc.models import bundled_model_path
from ttc.strategies.voting import pick_max, vote
from ttc.verifiers import ArithmeticStepCheck

NQ = int(sys.argv[1]) if len(sys.argv) > 1 else 120
OFF = int(sys.argv[2]) if len(sys.argv) > 2 else 160
PATH = f"/tmp/ttc_verifier_auc_{OFF}_{NQ}.jsonl"
SAMPLES: list[Sample] = []  # the rows as Samples, for the library's vote


async def dump() -> None:
    from ttc.engines.vllm_engine import VLLMEngine

    eng = VLLMEngine(bundled_model_path(), max_model_len=2048, kv_cache_gib=2, enforce_eager=True)
    ex = word_problems(OFF + NQ, seed=0, steps=(1, 2))[OFF:]
    full = SamplingParams(temperature=0.5, top_p=0.95, max_tokens=128, n=8)
    try:
        rs = await asyncio.gather(*(eng.generate(Prompt.of(e.prompt("plain")), full) for e in ex))
    finally:
        await eng.aclose()
    with open(PATH, "w") as f:
        for e, r in zip(ex, rs):
            for g in r.generations:
                a = extract_answer(g.text)
                f.write(json.dumps({"q": e.question, "gold": e.answer, "text": g.text, "answer": a,
                                    "correct": same_answer(a, e.answer)}) + "\n")


def auc(pos: list[float], neg: list[float]) -> float:
    if not pos or not neg:
        return float("nan")
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def report(name: str, rows: list[dict], scores: list[float]) -> None:
    byq: dict[str, list[int]] = collections.defaultdict(list)
    for i, r in enumerate(rows):
        byq[r["q"]].append(i)
    rng = np.random.default_rng(0)
    voted = top = 0
    for idx in byq.values():
        d = vote([SAMPLES[i] for i in idx], rng, weights=[scores[i] for i in idx])
        voted += same_answer(d.answer, rows[idx[0]]["gold"])
        top += rows[idx[pick_max([scores[i] for i in idx], rng)]]["correct"]
    pos = [s for s, r in zip(scores, rows) if r["correct"]]
    neg = [s for s, r in zip(scores, rows) if not r["correct"]]
    print(f"| {name} | {auc(pos, neg):.3f} | {voted / len(byq):.3f} | {top / len(byq):.3f} |")


def main() -> None:
    if not os.path.exists(PATH):
        asyncio.run(dump())
    rows = [json.loads(line) for line in open(PATH)]
    SAMPLES[:] = [Sample(index=i, text=r["text"], num_tokens=0, answer=r["answer"]) for i, r in enumerate(rows)]
    byq = collections.defaultdict(list)
    for r, smp in zip(rows, SAMPLES):
        byq[r["q"]].append((r, smp))
    rng = np.random.default_rng(0)
    counted = sum(same_answer(vote([smp for _, smp in v], rng).answer, v[0][0]["gold"]) for v in byq.values())
    print(f"{len(byq)} questions, {len(rows)} samples: sample accuracy {sum(r['correct'] for r in rows) / len(rows):.3f}, "
          f"a right answer among the 8 {sum(any(r['correct'] for r, _ in v) for v in byq.values()) / len(byq):.3f}, "
          f"count vote {counted / len(byq):.3f}\n")
    print("| step check, aggregate | AUC | weighted vote | top-1 |")
    print("|---|---|---|---|")
    per: dict[bool, list[list[float]]] = {}
    for grounded in (False, True):
        v = ArithmeticStepCheck(grounded=grounded)
        per[grounded] = [v.trajectory_scores(r["q"], r["text"].split("\n\n")) for r in rows]
        for agg, f in (("min", min), ("product", math.prod), ("last", lambda s: s[-1])):
            report(f"{'grounded' if grounded else 'plain'}, {agg}", rows, [f(s) for s in per[grounded]])

    g = [min(s) for s in per[True]]
    for name, kw in (("numerals used", dict(mismatch=1.0)), ("answer = last right result", dict(unused=1.0)),
                     ("both (outcome=True)", {})):
        v = ArithmeticStepCheck(grounded=True, outcome=True, **kw)
        report(f"grounded, min x outcome: {name}", rows, [s * v.outcome_factor(r["q"], r["text"]) for s, r in zip(g, rows)])

if __name__ == "__main__":
    main()
