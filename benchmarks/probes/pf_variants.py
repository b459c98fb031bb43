"""Particle-filtering settings side by side on one question set, against weighted best-of-N:
weight temperature, the paper's softmax weights, and the final rule, with the grounded step
check plus outcome checks that benchmarks/stepwise_search.py uses (``--grounded --outcome``).

    python benchmarks/probes/pf_variants.py [questions] [seed] [n] [variants]
    # defaults: 160 2 8 all; variants: comma-separated names from VARIANTS below

Meant as a *tuning* run (seed 2 by default): a setting picked here is then to be checked on
fresh questions (another seed) by the benchmark. Printed per variant: accuracy of its own final rule,
tokens/question, coverage (a right answer among the final candidates), and the accuracy of
three votes over the same final candidates (particle weights, the verifier's rewards,
count); then each variant paired with weighted best-of-N (McNemar exact p).
"""
import asyncio
import os
import sys
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from stepwise_search import _parse, search_setup

from ttc import Budget
from ttc.bench.compare import grade, rule_rights
from ttc.bench.datasets import word_problems
from ttc.bench.metrics import discordant, mcnemar_p
from ttc.models import bundled_model_path
from ttc.strategies import BestOfN, ParticleFiltering
from ttc.verifiers import ProcessAsOutcome

NQ = int(sys.argv[1]) if len(sys.argv) > 1 else 160
SEED = int(sys.argv[2]) if len(sys.argv) > 2 else 2
N = int(sys.argv[3]) if len(sys.argv) > 3 else 8
PICK = sys.argv[4].split(",") if len(sys.argv) > 4 else None

VARIANTS = {
    "default": {},  # logit weights, T=1, resample when ESS < N/2, vote by particle weights
    "T=2": {"temperature": 2.0},
    "T=4": {"temperature": 4.0},
    "softmax": {"weighting": "softmax"},
    "always T=2": {"resample": "always", "temperature": 2.0},
}


async def main() -> None:
    from ttc.engines.vllm_engine import VLLMEngine

    eng = VLLMEngine(bundled_model_path(), max_model_len=2048, kv_cache_gib=2, seed=SEED, enforce_eager=True)
    # the benchmark's settings (its defaults, with --grounded --outcome)
    args = _parse(["--grounded", "--outcome"])
    ex = word_problems(NQ, seed=SEED, steps=tuple(int(x) for x in args.steps.split(",")))
    policy, params, full, v = search_setup(args)
    strategies = {name: ParticleFiltering(N, v, policy=policy, params=params, **{"final": "vote", **kw})
                  for name, kw in VARIANTS.items() if PICK is None or name in PICK}
    strategies["weighted best-of-N"] = BestOfN(N, ProcessAsOutcome(v, policy.separator), weighted=True, params=full)
    correct: dict[str, list[bool]] = {}
    rows = []
    try:
        for name, strat in strategies.items():
            t = time.time()
            res = await asyncio.gather(*(strat.run(e.prompt(args.style), eng, Budget(), seed=SEED + i)
                                         for i, e in enumerate(ex)))
            correct[name], cover = grade(res, ex)
            tok = sum(r.usage.completion_tokens for r in res) / NQ
            rules = ""
            if name != "weighted best-of-N":
                rules = " | ".join(str(c) for c in rule_rights(res, ex, SEED).values())
            rows.append((name, sum(correct[name]), tok, cover, rules or "- | - | -", time.time() - t))
            print(f"  {name}: right {sum(correct[name])}/{NQ} tokens/q {tok:.0f} ({time.time() - t:.0f}s)", flush=True)
    finally:
        await eng.aclose()
    print(f"\n{NQ} questions, seed {SEED}, N={N}; right answers (of {NQ})\n")
    print("| variant | right | tokens/q | coverage | vote by weights | by rewards | by count | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, right, tok, cover, rules, wall in rows:
        print(f"| {name} | {right} | {tok:.0f} | {cover} | {rules} | {wall:.0f} |")
    base = correct["weighted best-of-N"]
    print()
    for name, c in correct.items():
        if name == "weighted best-of-N":
            continue
        b, d = discordant(c, base)
        print(f"- {name} vs weighted best-of-N: only PF right {b}, only wBoN right {d}, p = {mcnemar_p(b, d):.2f}")


if __name__ == "__main__":
    asyncio.run(main())
