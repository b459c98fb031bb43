"""Overhead of ttc's in-process vLLM engine against vLLM's own offline API.

The same sampling workload (default 32 questions x 16 samples, temperature 0.8,
max_tokens 64; ``--quick``: 8 x 4) runs twice on the bundled SmolLM2-135M-Instruct:

* **ttc**: :class:`ttc.engines.VLLMEngine`, every question in flight at once, each through
  a :class:`ttc.context.RunContext` (so reservation, metering and the loop bridge count);
* **raw**: ``vllm.LLM(...).generate`` on the same token ids with the same parameters and
  the same engine settings (dtype chosen for the machine as ttc's ``dtype="auto"`` does,
  eager, 32-token KV blocks and 512 sequence slots on CPU).

Each side runs in its own subprocess (one engine at a time; memory is freed between them),
after one warm-up request. Prints completion tokens/s of both and the ratio ttc/raw (goal
>= 0.95) as a markdown table. Sampling is random, so the two sides draw different
completions; tokens/s is the comparable quantity.

Run: ``python benchmarks/engine_overhead.py [--quick] [--dtype float32|bfloat16]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SEED = 0


def questions(n: int) -> list[str]:
    import numpy as np

    rng = np.random.default_rng(SEED)
    out = []
    for _ in range(n):
        a, b = (int(x) for x in rng.integers(10, 99, size=2))
        out.append(
            f"A shop sells {a} apples in the morning and {b} in the afternoon. How many apples in total?"
        )
    return out


def run_ttc(args: argparse.Namespace) -> dict:
    import asyncio

    from ttc.budget import Meter
    from ttc.context import RunContext
    from ttc.engines.vllm_engine import VLLMEngine
    from ttc.types import Prompt, SamplingParams

    engine = VLLMEngine.bundled(max_model_len=2048, kv_cache_gib=args.kv_cache_gib, seed=SEED, dtype=args.dtype)
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens, n=args.samples)
    prompts = [Prompt.of(q) for q in questions(args.questions)]

    async def main() -> dict:
        await engine.generate(Prompt.of("Hello"), SamplingParams(max_tokens=8))  # warm-up
        meter = Meter()
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(RunContext(engine, meter.child()).generate(p, params) for p in prompts)
        )
        wall = time.perf_counter() - t0
        tokens = sum(g.num_tokens for gens in results for g in gens)
        assert tokens == meter.usage().completion_tokens, "metered tokens differ from generated tokens"
        dtype = engine.stats()["dtype"]
        await engine.aclose()
        return {"wall": wall, "tokens": tokens, "samples": sum(len(r) for r in results), "dtype": dtype}

    return asyncio.run(main())


def run_raw(args: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from ttc.engines.dtype import resolve_dtype
    from ttc.models import bundled_model_path

    model = str(bundled_model_path())
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(args.kv_cache_gib))
    tok = AutoTokenizer.from_pretrained(model)
    ids = [
        tok(
            tok.apply_chat_template(
                [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
            ),
            add_special_tokens=False,
        )["input_ids"]
        for q in questions(args.questions)
    ]
    from vllm.platforms import current_platform

    cpu = {"enforce_eager": True, "block_size": 32, "max_num_seqs": 512} if current_platform.is_cpu() else {}
    dtype = resolve_dtype(args.dtype, model=model, on_cpu=current_platform.is_cpu())
    llm = LLM(model=model, max_model_len=2048, enable_prefix_caching=True, seed=SEED, dtype=dtype, **cpu)
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens, n=args.samples)
    llm.generate([{"prompt_token_ids": ids[0]}], SamplingParams(max_tokens=8), use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=False)
    wall = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    samples = sum(len(o.outputs) for o in outs)
    loaded = str(llm.llm_engine.vllm_config.model_config.dtype).removeprefix("torch.")
    llm.llm_engine.engine_core.shutdown()
    return {"wall": wall, "tokens": tokens, "samples": samples, "dtype": loaded}


def worker(side: str, args: argparse.Namespace) -> dict:
    """Run one side in a fresh subprocess; its last stdout line is the JSON result."""
    cmd = [sys.executable, __file__, "--worker", side, *forward(args)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{side} worker failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def forward(args: argparse.Namespace) -> list[str]:
    return [
        f"--questions={args.questions}",
        f"--samples={args.samples}",
        f"--max-tokens={args.max_tokens}",
        f"--temperature={args.temperature}",
        f"--kv-cache-gib={args.kv_cache_gib}",
        f"--dtype={args.dtype}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 questions x 4 samples")
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--kv-cache-gib", type=int, default=2)
    ap.add_argument("--dtype", default="auto", help="auto (float32 on CPUs without native bf16), float32, bfloat16")
    ap.add_argument("--worker", choices=["ttc", "raw"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.questions, args.samples = 8, 4
    if args.worker:
        res = run_ttc(args) if args.worker == "ttc" else run_raw(args)
        print(json.dumps(res))
        return

    rows = {side: worker(side, args) for side in ("ttc", "raw")}
    tps = {side: r["tokens"] / r["wall"] for side, r in rows.items()}
    print(
        f"\nengine overhead: {args.questions} questions x {args.samples} samples, "
        f"temperature {args.temperature}, max_tokens {args.max_tokens}\n"
    )
    print("| engine | dtype | samples | completion tokens | wall s | tokens/s |")
    print("|---|---|---:|---:|---:|---:|")
    for side, label in (("ttc", "ttc VLLMEngine (RunContext)"), ("raw", "vllm.LLM.generate")):
        r = rows[side]
        print(f"| {label} | {r['dtype']} | {r['samples']} | {r['tokens']} | {r['wall']:.2f} | {tps[side]:.1f} |")
    ratio = tps["ttc"] / tps["raw"]
    print(
        f"\nratio ttc/raw tokens/s: **{ratio:.3f}** (goal >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
