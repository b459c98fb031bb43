"""Throughput of a RayEngine pool with 1, 2 and 4 replicas of a latency-bound engine.

Each replica is a scripted engine that sleeps per token (``token_delay``) and runs at most
``--slots`` calls at once (a GPU's batch slots), so a replica serves ``slots / latency``
requests per second whatever the cores: throughput can only grow with replicas, and the
driver's own cost shows as the gap to the ideal. The load: self-consistency with 8 draws
per question over many questions at once, under one shared completion-token budget that
binds (the run stops on it), so the budget's overshoot is measured on a full pool.

Prints per pool size: requests/s, the speed-up over one replica, the driver's CPU time per
request (strategy, metering and Ray calls: the process's CPU time, Ray's threads included,
over requests sent) and the overshoot of the budget (spent minus limit, must be 0).

    .venv/bin/python benchmarks/ray_scaling.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import ray

from ttc import Budget, Meter, SamplingParams
from ttc.engine import Engine
from ttc.engines import RayEngine, ScriptedEngine
from ttc.strategies import FixedN, SelfConsistency

TEXT = " ".join(f"t{k}" for k in range(40)) + " so the answer is \\boxed{7}."
TOKENS = len(TEXT.split())  # 45 whitespace tokens, the scripted engine's
DRAWS, MAX_TOKENS = 8, 64


async def measure(engine: Engine, questions: int, at_once: int) -> dict[str, float]:
    """Self-consistency (8 draws) over ``questions``, ``at_once`` questions at a time, under
    a shared budget that covers 90% of the draws: the run ends on it."""
    sc = SelfConsistency(FixedN(DRAWS), params=SamplingParams(temperature=0.8, max_tokens=MAX_TOKENS))
    limit = int(questions * DRAWS * TOKENS * 0.9)
    meter = Meter(Budget(completion_tokens=limit))
    qs = [f"Question {i}: what is 3 + 4?" for i in range(questions)]
    requests0 = engine.stats().get("requests", engine.stats().get("calls", 0))
    t0, c0 = time.perf_counter(), time.process_time()
    await sc.run_many(qs, engine, meter, seed=0, concurrency=at_once)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    requests = engine.stats().get("requests", engine.stats().get("calls", 0)) - requests0
    await engine.aclose()
    return {"requests": requests, "req_s": requests / wall, "wall": wall, "cpu_ms": 1000 * cpu / requests,
            "overshoot": max(0, meter.spent.completion_tokens - limit) + sum(meter.overspent.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer questions (about a minute in all)")
    ap.add_argument("--slots", type=int, default=8, help="calls one replica runs at once")
    ap.add_argument("--token-delay", type=float, default=0.01, help="seconds per token in a replica")
    args = ap.parse_args()
    questions, at_once = (48, 8) if args.quick else (160, 16)
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    latency = TOKENS * args.token_delay
    print(f"replica: {args.slots} slots x {latency:.2f} s per request = {args.slots / latency:.1f} req/s at most; "
          f"{questions} questions, {at_once} at a time, {DRAWS} draws each")
    local = asyncio.run(measure(ScriptedEngine([TEXT]), questions, at_once))
    print(f"driver CPU per request on a local scripted engine (no Ray, no delay): {local['cpu_ms']:.2f} ms")
    print(f"{'replicas':>8} {'requests':>8} {'wall s':>7} {'req/s':>7} {'speed-up':>8} {'driver CPU ms/req':>17} "
          f"{'overshoot':>9}")
    base = None
    spec = {"kind": "scripted", "script": [TEXT], "token_delay": args.token_delay}
    for n in (1, 2, 4):
        async def run(n: int = n) -> dict[str, float]:
            engine = await RayEngine(spec, n, replica_concurrency=args.slots, actor_options={"num_cpus": 0}).start()
            return await measure(engine, questions, at_once)

        r = asyncio.run(run())
        base = base or r["req_s"]
        print(f"{n:>8} {r['requests']:>8} {r['wall']:>7.2f} {r['req_s']:>7.1f} {r['req_s'] / base:>7.2f}x "
              f"{r['cpu_ms']:>17.2f} {r['overshoot']:>9}")
    ray.shutdown()


if __name__ == "__main__":
    main()
