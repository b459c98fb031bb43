"""Per-request prompt work of 8 full completions and of a particle-filtering run (N=8), all
questions concurrent, attributed to questions; turns marked F (plain request), N (new resumable
request) or R (resumed request), and the work summed by kind: step1 (the first step's requests),
R (resumed), dup (a new or plain request for ids another turn of the same step also
continues: a resampled copy, which needs its own KV tail), orphan (a new or plain request
for ids nothing else continues: its parent's request was not kept).

    python benchmarks/probes/turn_work.py [ess|always] [questions]
"""
import asyncio
import collections
import os
import sys

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
from ttc import Prompt, SamplingParams
from ttc.bench.datasets import word_problems
from ttc.models import bundled_model_path
from ttc.strategies import ParticleFiltering, StepPolicy
from ttc.verifiers import ArithmeticStepCheck

MODE = sys.argv[1] if len(sys.argv) > 1 else "ess"
NQ = int(sys.argv[2]) if len(sys.argv) > 2 else 30

async def main():
    from ttc.engines import vllm_sessions as vs
    from ttc.engines.vllm_engine import VLLMEngine
    eng = VLLMEngine(bundled_model_path(), max_model_len=2048, kv_cache_gib=2, enforce_eager=True, count_scheduled_tokens=True)
    qs = {}
    log = []
    def qid(ids):
        for k, v in qs.items():
            if tuple(ids[:len(k)]) == k:
                return v
        return -1
    orig_turn = vs.VLLMContinuationScope._turn
    async def turn(self, ids, st, plain, params, billing):
        resumed = tuple(ids) in self._idle
        r = await orig_turn(self, ids, st, plain, params, billing)
        log.append((qid(ids), "R" if resumed else "N", len(ids), r.usage.prompt_tokens - r.usage.cached_prompt_tokens, hash(tuple(ids)), eng.requests.open_sessions))
        return r
    vs.VLLMContinuationScope._turn = turn
    orig_home = eng.requests.generate
    async def home(ids, sp, params, billing):
        r = await orig_home(ids, sp, params, billing)
        log.append((qid(ids), "F", len(ids), r.usage.prompt_tokens - r.usage.cached_prompt_tokens, hash(tuple(ids)), eng.requests.open_sessions))
        return r
    eng.requests.generate = home
    ex = word_problems(NQ, seed=0, steps=(1, 2))
    policy = StepPolicy(max_steps=4, max_step_tokens=32)
    params = SamplingParams(temperature=0.5, top_p=0.95)
    full = params.model_copy(update={"max_tokens": 128})
    v = ArithmeticStepCheck(aggregate="min")
    pf = ParticleFiltering(8, v, policy=policy, params=params, resample=MODE)
    for tag in ("full", "pf"):
        prompts = [f"[{tag}] " + e.prompt("plain") for e in ex]
        for i, q in enumerate(prompts):
            qs[tuple(eng.encode(Prompt.of(q)))] = i
        b = eng.stats()
        log.clear()
        if tag == "full":
            await asyncio.gather(*(eng.generate(Prompt.of(q), full) for q in prompts for _ in range(8)))
        else:
            await asyncio.gather(*(pf.run(q, eng, seed=1000 + i) for i, q in enumerate(prompts)))
        await asyncio.sleep(0.5)
        a = eng.stats()
        d = {k: a[k] - b[k] for k in ("scheduled_prefill_tokens", "stop_head_resumes", "resumed_turns", "requests")}
        print(tag, d, "work", d["scheduled_prefill_tokens"] - d["stop_head_resumes"], "logged", sum(x[3] for x in log), flush=True)
        cnt = collections.Counter(x[4] for x in log)
        cat: collections.Counter = collections.Counter()
        work: collections.Counter = collections.Counter()
        plen = {v: len(k) for k, v in qs.items()}
        for q, k, n, c, h, _o in log:
            if n == plen.get(q):
                key = "step1-" + k
            elif k == "R":
                key = "R"
            else:
                key = k + ("-dup" if cnt[h] > 1 else "-orphan")
            cat[key] += 1
            work[key] += c
        print("  categories", dict(cat), "work", dict(work), "max open", max(x[5] for x in log), flush=True)
        per = collections.defaultdict(list)
        for q, k, n, c, _h, _o in log:
            per[q].append(f"{k}{n}:{c}")
        for q in sorted(per)[:8]:
            print("  ", q, sum(int(x.split(":")[1]) for x in per[q]), " ".join(per[q]), flush=True)
    await eng.aclose()

if __name__ == "__main__":
    asyncio.run(main())
