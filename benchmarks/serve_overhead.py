"""What ``ttc serve`` costs and whether it tells the truth, on the bundled model.

One vLLM OpenAI server (SmolLM2-135M-Instruct) and one ``ttc serve --upstream`` subprocess in
front of it. Printed from one run:

(a) ``passthrough`` through the server vs the vLLM server directly: the same requests
    (one-digit additions, ``max_tokens`` 16, temperature 0) at concurrency 32, alternating
    direct/served rounds after a warm-up with every request (so every round finds the prompts
    in vLLM's prefix cache); wall-time ratio (goal <= 1.05), added median latency (goal <= 5 ms),
    and vLLM's own count of the tokens each side made it process (must be equal).
(b) majority vote over N = 8 samples through the server vs the library in process (an
    ``OpenAIEngine`` on the same vLLM server), same questions, greedy samples (vLLM on CPU takes
    no per-request seeds, so only greedy samples repeat): same answers, identical metered usage.
(c) the usage the server reported, summed over its requests, vs the vLLM server's own
    ``/metrics`` counters (``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``) over
    the served requests only.

    flock /tmp/ttc-vllm.lock python benchmarks/serve_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

from ttc import registry
from ttc.bench.datasets import addition
from ttc.engines.openai_engine import OpenAIEngine
from ttc.engines.vllm_server import VLLMServer, free_port
from ttc.models import bundled_model_path

# Temperature 0: vLLM on CPU takes no per-request seeds (they crashed its worker under load),
# so only greedy samples are the same in two runs; the 8 samples are 8 requests either way.
SC8 = "sc8:\n  strategy: best_of_n\n  n: 8\n  params: {temperature: 0.0, max_tokens: 48}\n"


def prompts(n: int) -> list[str]:
    return [f"Compute {e.meta['a']} + {e.meta['b']}. Answer with the number." for e in addition(n, seed=0, digits=1)]


async def load(base: str, model: str, qs: list[str], conc: int, **extra: object) -> tuple[float, list[float], list[dict]]:
    """POST every question (chat) at ``conc`` in flight: wall seconds, latencies, response bodies
    (in question order)."""
    gate, lat, bodies = asyncio.Semaphore(conc), [], [{} for _ in qs]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as s:
        async def one(i: int, q: str) -> None:
            async with gate:
                t = time.perf_counter()
                async with s.post(f"{base}/chat/completions", json={"model": model, "messages": [
                        {"role": "user", "content": q}], **extra}) as r:
                    bodies[i] = await r.json()
                    assert r.status == 200, bodies[i]
                lat.append(time.perf_counter() - t)
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, q) for i, q in enumerate(qs)))
    return time.perf_counter() - t0, lat, bodies


def vllm_tokens(vs: VLLMServer) -> tuple[float, float]:
    m = vs.metrics()
    return m.get("vllm:prompt_tokens_total", 0.0), m.get("vllm:generation_tokens_total", 0.0)


def usage_sum(bodies: list[dict]) -> tuple[int, int]:
    return sum(b["usage"]["prompt_tokens"] for b in bodies), sum(b["usage"]["completion_tokens"] for b in bodies)


async def overhead(vs: VLLMServer, served: str, qs: list[str], rounds: int) -> tuple[dict, tuple[int, int], tuple]:
    """(a), with the served rounds' usage and vLLM counter deltas for (c)."""
    out = {"direct": ([], []), "served": ([], [])}
    used, seen, work = [0, 0], [0.0, 0.0], {"direct": [0.0, 0.0], "served": [0.0, 0.0]}
    # Warm-up with every question: vLLM's prefix cache then holds all prompts before the first
    # measured round, so no side pays the prefill the other gets from the cache.
    await load(vs.base_url, "smollm2", qs, 32, max_tokens=16, temperature=0)
    for _ in range(rounds):
        for name, base, model in (("direct", vs.base_url, "smollm2"), ("served", served, "passthrough")):
            before = vllm_tokens(vs)
            wall, lat, bodies = await load(base, model, qs, 32, max_tokens=16, temperature=0)
            out[name][0].append(wall)
            out[name][1].extend(lat)
            after = vllm_tokens(vs)
            work[name] = [w + a - b for w, a, b in zip(work[name], after, before)]
            if name == "served":
                used = [a + b for a, b in zip(used, usage_sum(bodies))]
                seen = [s + a - b for s, a, b in zip(seen, after, before)]
    out["work"] = work  # type: ignore[assignment]
    return out, tuple(used), tuple(seen)


async def votes(vs: VLLMServer, served: str, qs: list[str], config: Path) -> tuple[list, list, tuple, tuple]:
    """(b): the server's answers and usages, the library's, and (c)'s counts for these requests."""
    before = vllm_tokens(vs)
    _, _, bodies = await load(served, "sc8", qs, 8)
    after = vllm_tokens(vs)
    server = [(b["ttc"]["answer"], b["usage"]["prompt_tokens"], b["usage"]["completion_tokens"],
               b["ttc"]["usage"]["calls"]) for b in bodies]
    strategy = registry.load_config(config, "sc8")
    async with OpenAIEngine(vs.base_url, model="smollm2") as eng:
        results = await asyncio.gather(*(strategy.run(q, eng) for q in qs))
    lib = [(r.answer, r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.calls) for r in results]
    return server, lib, usage_sum(bodies), (after[0] - before[0], after[1] - before[1])


def start_serve(upstream: str, config: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    exe = Path(sys.executable).parent / "ttc"
    proc = subprocess.Popen([str(exe), "serve", "--upstream", upstream, "--port", str(port), "--config", str(config),
                             "--max-concurrent", "64"], stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("ttc serve did not start")


def report_a(a: dict) -> None:
    dw, sw = sum(a["direct"][0]), sum(a["served"][0])
    dm, sm = statistics.median(a["direct"][1]), statistics.median(a["served"][1])
    n = len(a["direct"][1])
    print(f"(a) passthrough, {n} requests per side at concurrency 32, {len(a['direct'][0])} alternating rounds")
    print(f"    wall: direct {dw:.2f} s, served {sw:.2f} s, ratio {sw / dw:.3f} (goal <= 1.05)")
    print(f"    median latency: direct {dm * 1e3:.1f} ms, served {sm * 1e3:.1f} ms, added {(sm - dm) * 1e3:.1f} ms "
          "(goal <= 5 ms)")
    (dp, dg), (sp, sg) = a["work"]["direct"], a["work"]["served"]
    print(f"    vLLM's own count of the work: direct {dp:.0f} prompt + {dg:.0f} generated tokens, served "
          f"{sp:.0f} + {sg:.0f}", flush=True)


def report(b: tuple, c: list[tuple]) -> None:
    server, lib = b[0], b[1]
    same_a = sum(x[0] == y[0] for x, y in zip(server, lib))
    same_u = sum(x[1:] == y[1:] for x, y in zip(server, lib))
    print(f"(b) majority of N=8 (temperature 0), {len(lib)} questions: same answers {same_a}/{len(lib)}, identical usage "
          f"(prompt, completion, calls) {same_u}/{len(lib)}")
    print(f"    server total {sum(x[1] for x in server)}+{sum(x[2] for x in server)} tokens, library "
          f"{sum(x[1] for x in lib)}+{sum(x[2] for x in lib)}")
    for name, used, seen in c:
        print(f"(c) {name}: server-reported prompt {used[0]}, completion {used[1]}; vLLM /metrics prompt "
              f"{seen[0]:.0f}, generation {seen[1]:.0f}; match: {tuple(used) == tuple(int(x) for x in seen)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 requests per side, 6 questions")
    args = ap.parse_args()
    n, rounds, nq = (100, 1, 6) if args.quick else (250, 2, 12)
    with tempfile.TemporaryDirectory() as tmp, VLLMServer(bundled_model_path(), served_name="smollm2",
                                                          kv_cache_gib=2) as vs:
        config = Path(tmp) / "serve.yaml"
        config.write_text(SC8)
        proc, served = start_serve(vs.base_url, config)
        try:
            a, used, seen = asyncio.run(overhead(vs, served, prompts(n), rounds))
            report_a(a)
            server, lib, used_b, seen_b = asyncio.run(votes(vs, served, prompts(nq), config))
        finally:
            proc.terminate()
            proc.wait(15)
    report((server, lib), [("passthrough rounds", used, seen), ("majority N=8", used_b, seen_b)])


if __name__ == "__main__":
    main()
