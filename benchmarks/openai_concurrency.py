"""OpenAIEngine client overhead under concurrency.

Sends N requests (default 2,000) through one :class:`~ttc.engines.openai_engine.OpenAIEngine`
to the fault server (no faults) answering after a fixed latency (default 50 ms), with a
concurrency limit (default 64). The server runs in a *subprocess*, so the client's CPU time
(``time.process_time``) excludes the server's. Prints wall time against the ideal
``requests x latency / concurrency`` (goal: ratio <= 1.10) and client CPU time per request.

    python benchmarks/openai_concurrency.py            # 2,000 requests
    python benchmarks/openai_concurrency.py --quick    # 200 requests
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request

from ttc.engines.openai_engine import OpenAIEngine
from ttc.types import Prompt, SamplingParams


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` (Linux /proc), -1 elsewhere."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return -1.0


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ttc.testing.fault_server", "--port", "0", "--latency", str(latency),
         "--lifetime", "900"],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"fault server did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


async def run(n: int, latency: float, concurrency: int, base_url: str, backend: str | None = None
              ) -> dict[str, float]:
    async with OpenAIEngine(base_url, "fake", max_concurrency=concurrency, http_backend=backend) as eng:
        params = SamplingParams(temperature=0.8, max_tokens=16)
        prompts = [Prompt.of(f"What is {i} + 2?") for i in range(n)]
        await asyncio.gather(*[eng.generate(p, params) for p in prompts[: concurrency]])  # warm-up: connections
        cpu0, t0 = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*[eng.generate(p, params) for p in prompts])
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        assert len(results) == n and all(r.generations[0].text for r in results)
        return {"wall": wall, "cpu": cpu, "max_in_flight": eng.max_in_flight, "backend": eng.http_backend}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="200 requests")
    ap.add_argument("--uvloop", action="store_true", help="run the client on uvloop (pip install uvloop)")
    ap.add_argument("--backend", choices=["direct", "aiohttp", "httpx"], default=None,
                    help="OpenAIEngine's http_backend (default: the engine's default)")
    a = ap.parse_args()
    n = 200 if a.quick else a.requests
    proc, url = start_server(a.latency)
    try:
        s0 = proc_cpu(proc.pid)
        if a.uvloop:
            import uvloop

            r = uvloop.run(run(n, a.latency, a.concurrency, url, a.backend))
        else:
            r = asyncio.run(run(n, a.latency, a.concurrency, url, a.backend))
        server_cpu = proc_cpu(proc.pid) - s0
        with urllib.request.urlopen(url.removesuffix("/v1") + "/stats") as resp:
            stats = json.load(resp)
    finally:
        proc.terminate()
        proc.wait(10)
    ideal = n * a.latency / a.concurrency
    ratio = r["wall"] / ideal
    print(f"## openai_concurrency: {n} requests, {a.latency * 1000:g} ms latency, concurrency {a.concurrency}\n")
    print("| requests | concurrency | ideal s | wall s | ratio (goal <= 1.10) | client CPU ms/request "
          "| server CPU ms/request | server max in flight |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {n} | {a.concurrency} | {ideal:.3f} | {r['wall']:.3f} | {ratio:.2f} | "
          f"{r['cpu'] / n * 1000:.2f} | {server_cpu / (n + a.concurrency) * 1000:.2f} | {stats['max_in_flight']} |")
    print(f"\nclient: this process ({'uvloop' if a.uvloop else 'asyncio'} event loop, OpenAIEngine, openai SDK, "
          f"transport {r['backend']}); server: the fault server subprocess (its CPU includes the warm-up requests).")


if __name__ == "__main__":
    main()
