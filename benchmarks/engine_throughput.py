"""Throughput of the in-process engine on the bundled model, per dtype, against raw vLLM
and against a roofline of this machine.

For each dtype (float32, bfloat16) the same sampling workload (default 8 questions x 8
samples x 48 tokens, temperature 0.8) runs through ttc's ``VLLMEngine`` and through
``vllm.LLM.generate`` with the same engine settings, each in its own subprocess
(``engine_overhead.py``'s workers), alternating, ``--repeats`` times; the best run of each
side counts, since the machine may be shared. The roofline is the simple one: this machine's measured
matmul rate (GFLOP/s, all cores, in that dtype, on a decode-shaped product) and memory
bandwidth (GB/s, a large copy), and the model's FLOPs per token (2 x the parameters each
token multiplies, lm_head included, attention over the mean context) and weight bytes read
per decode step. A decode step of B sequences takes at least max(B x FLOPs/token / rate,
weight bytes / bandwidth); the roofline tokens/s is B over that.

Run: ``python benchmarks/engine_throughput.py [--quick]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from engine_overhead import worker

DTYPES = ("float32", "bfloat16")


def matmul_gflops(dtype: torch.dtype, m: int, k: int, n: int, seconds: float = 1.5) -> float:
    """Sustained rate of a linear layer (m x k input, n x k weight) on all cores: the
    op, and so the kernel, the model's projections run through."""
    a, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    for _ in range(3):
        torch.nn.functional.linear(a, w)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.nn.functional.linear(a, w)
        reps += 1
    return 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9


def memory_gbps(mib: int = 512, seconds: float = 1.5) -> float:
    """Copy bandwidth (bytes read + written) on a buffer far larger than the caches."""
    src = torch.ones(mib << 18, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        dst.copy_(src)
        reps += 1
    return 2 * src.numel() * 4 * reps / (time.perf_counter() - t0) / 1e9


def model_cost(model: Path, context: float) -> dict[str, float]:
    """FLOPs per token and parameters read per decode step, from a Llama-style config."""
    c = json.loads((model / "config.json").read_text())
    h, inter, layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = h * c.get("num_key_value_heads", c["num_attention_heads"]) // c["num_attention_heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * inter  # q, o, k, v projections; gated MLP
    matmul_params = layers * per_layer + vocab * h  # lm_head (tied or not, it is multiplied)
    attention = layers * 2 * 2 * context * h  # scores and weighted sum over the context
    stored = matmul_params if c.get("tie_word_embeddings", False) else matmul_params + vocab * h
    return {"flops_per_token": 2 * matmul_params + attention, "params_read": stored}


def roofline(rate_gflops: float, bw_gbps: float, cost: dict[str, float], batch: int, bytes_per: int) -> float:
    step = max(batch * cost["flops_per_token"] / (rate_gflops * 1e9), cost["params_read"] * bytes_per / (bw_gbps * 1e9))
    return batch / step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 questions x 4 samples x 24 tokens")
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--repeats", type=int, default=2, help="runs of each side per dtype; the best one counts")
    args = ap.parse_args()
    if args.quick:
        args.questions, args.samples, args.max_tokens = 4, 4, 24
    from ttc.models import bundled_model_path

    torch.set_num_threads(os.cpu_count() or 1)
    batch = args.questions * args.samples
    cost = model_cost(bundled_model_path(), context=40 + args.max_tokens / 2)
    bw, rows = 0.0, []
    for name in args.dtypes.split(","):
        dt = getattr(torch, name)
        run = argparse.Namespace(questions=args.questions, samples=args.samples, max_tokens=args.max_tokens,
                                 temperature=0.8, kv_cache_gib=2, dtype=name)
        # The machine is shared: each figure is the best of its repeats, the sides alternate,
        # and the limits are measured between the runs (their best, as limits are).
        tps, rate, loaded = {"ttc": 0.0, "raw": 0.0}, 0.0, ""
        for _ in range(args.repeats):
            for side in ("ttc", "raw"):
                rate, bw = max(rate, matmul_gflops(dt, batch, 576, 1536)), max(bw, memory_gbps())
                r = worker(side, run)
                tps[side] = max(tps[side], r["tokens"] / r["wall"])
                loaded = r["dtype"] if side == "ttc" else loaded
        rows.append((name, loaded, tps["ttc"], tps["raw"], rate, roofline(rate, bw, cost, batch, dt.itemsize)))
    print(f"\nengine throughput: bundled model, {args.questions} questions x {args.samples} samples x "
          f"{args.max_tokens} tokens, {os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}; "
          f"memory {bw:.1f} GB/s; {cost['flops_per_token'] / 1e6:.0f} MFLOP/token\n")
    print("| dtype | loaded | ttc tokens/s | raw vLLM tokens/s | ttc / raw | matmul GFLOP/s | roofline tokens/s | ttc / roofline |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, loaded, t, r, rate, roof in rows:
        print(f"| {name} | {loaded} | {t:.1f} | {r:.1f} | **{t / r:.3f}** | {rate:.1f} | {roof:.0f} | {t / roof:.2f} |")
    if len(rows) == 2:
        print(f"\nfloat32 / bfloat16 (ttc): **{rows[0][2] / rows[1][2]:.2f}x**")


if __name__ == "__main__":
    main()
