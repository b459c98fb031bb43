"""Particle filtering (resample when ESS < N/2) vs weighted best-of-N at N=8 on 30 word problems: accuracy, any-correct,
how particles finished, and a few sample texts.

    python benchmarks/probes/pf_vs_bon.py
"""
import asyncio
import collections
import os

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
from ttc import Budget, SamplingParams
from ttc.answers import same_answer
from ttc.bench.datasets import word_problems
from ttc.models import bundled_model_path
from ttc.strategies import BestOfN, ParticleFiltering, StepPolicy
from ttc.verifiers import ArithmeticStepCheck, ProcessAsOutcome


async def main():
    from ttc.engines.vllm_engine import VLLMEngine
    eng = VLLMEngine(bundled_model_path(), max_model_len=2048, kv_cache_gib=2, enforce_eager=True)
    ex = word_problems(30, seed=0, steps=(1, 2))
    policy = StepPolicy(max_steps=4, max_step_tokens=32)
    params = SamplingParams(temperature=0.5, top_p=0.95)
    v = ArithmeticStepCheck(aggregate="min")
    pf = ParticleFiltering(8, v, policy=policy, params=params, final="vote", resample="ess")
    bon = BestOfN(8, ProcessAsOutcome(v, policy.separator), weighted=True, params=params.model_copy(update={"max_tokens": 128}))
    rp = await asyncio.gather(*(pf.run(e.prompt("plain"), eng, Budget(), seed=i) for i, e in enumerate(ex)))
    rb = await asyncio.gather(*(bon.run(e.prompt("plain"), eng, Budget(), seed=i) for i, e in enumerate(ex)))
    fin = collections.Counter(s.meta["finish"] for r in rp for s in r.samples)
    print("PF finish", fin)
    anyok_pf = sum(any(same_answer(s.answer, e.answer) for s in r.samples) for r, e in zip(rp, ex))
    anyok_b = sum(any(same_answer(s.answer, e.answer) for s in r.samples) for r, e in zip(rb, ex))
    print("any-correct PF", anyok_pf, "BoN", anyok_b)
    print("acc PF", sum(same_answer(r.answer, e.answer) for r, e in zip(rp, ex)), "BoN", sum(same_answer(r.answer, e.answer) for r, e in zip(rb, ex)))
    none_pf = sum(s.answer is None for r in rp for s in r.samples)
    none_b = sum(s.answer is None for r in rb for s in r.samples)
    print("no answer PF", none_pf, "BoN", none_b)
    for r, e in list(zip(rp, ex))[:3]:
        print("Q", e.prompt("plain")[:150].replace("\n", " "), "| gold", e.answer)
        for s in r.samples[:4]:
            print("   ", s.meta["finish"], s.answer, repr(s.text[:200]))
    for r in rb[:2]:
        for s in r.samples[:3]:
            print("  BoN", s.answer, repr(s.text[:200]))
    await eng.aclose()

if __name__ == "__main__":
    asyncio.run(main())
