"""Session counters of 30 concurrent particle-filtering runs (N=8): turns resumed, cut at a stop
string found in the stream, and sub-turns after a stop string's head, resampling every step vs on ESS.

    python benchmarks/probes/stop_turns.py
"""
import asyncio
import os

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
from ttc import SamplingParams
from ttc.bench.datasets import word_problems
from ttc.models import bundled_model_path
from ttc.strategies import ParticleFiltering, StepPolicy
from ttc.verifiers import ArithmeticStepCheck


async def main():
    from ttc.engines.vllm_engine import VLLMEngine
    eng = VLLMEngine(bundled_model_path(), max_model_len=2048, kv_cache_gib=2, enforce_eager=True, count_scheduled_tokens=True)
    ex = word_problems(30, seed=0, steps=(1, 2))
    policy = StepPolicy(max_steps=4, max_step_tokens=32)
    params = SamplingParams(temperature=0.5, top_p=0.95)
    v = ArithmeticStepCheck(aggregate="min")
    for tag, kw in [("always", {"resample": "always"}), ("ess", {"resample": "ess"})]:
        pf = ParticleFiltering(8, v, policy=policy, params=params, **kw)
        b = eng.stats()
        res = await asyncio.gather(*(pf.run(f"[{tag}] " + e.prompt("plain"), eng, seed=1000 + i) for i, e in enumerate(ex)))
        await asyncio.sleep(0.5)
        a = eng.stats()
        d = {k: a[k] - b[k] for k in a if isinstance(a[k], int)}
        resamples = sum(sum(1 for ev in r.trace if ev.kind == "pf_step" and ev.data["resampled"]) for r in res)
        print(tag, d, "calls", sum(r.usage.calls for r in res), "resample events", resamples, flush=True)
    await eng.aclose()

if __name__ == "__main__":
    asyncio.run(main())
