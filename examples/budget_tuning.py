# %% [markdown]
# # Budget tuning on a recorded pool
#
# Sampling is the expensive part of test-time compute; deciding *how* to spend a budget
# (plain majority vote? an adaptive stopping rule? confidence-weighted voting?) should
# not need new samples for every idea. This notebook-style script (cells are `# %%`;
# open it in VS Code / Jupyter, or run it with `python examples/budget_tuning.py`):
#
# 1. records a pool of K samples per question with logprobs on the bundled
#    SmolLM2-135M-Instruct (or loads the recorded pool in `benchmarks/pools/` if present),
# 2. replays five strategies over budgets 1 to 32 samples per question, offline, with
#    the replay engine (each strategy runs unchanged; samples are drawn without
#    replacement per question, several draw orders per question),
# 3. adds the exact pass@k and best-of-k estimators, and
# 4. draws accuracy against completion tokens with the Pareto front.
#
# `--quick` replays a few questions with one draw order (used by the tests).

# %%
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ttc.bench.plots import markdown_table, plot_pareto, table_rows
from ttc.bench.pool import Pool, record_pool
from ttc.bench.runner import replay_grid
from ttc.bench.specs import build_strategy, load_dataset
from ttc.sync import run_sync  # works in scripts and inside Jupyter's running loop
from ttc.types import SamplingParams

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "benchmarks" / "pools" / "addition_200x32.jsonl.gz"
SUFFIX = " Answer with just the number."

STRATEGIES = [
    "majority:n=B",  # fixed-N self-consistency (Wang et al. 2023)
    "sc:rule=beta,max=B",  # Adaptive-Consistency's Beta stopping rule (Aggarwal et al. 2023)
    "sc:rule=esc,max=B",  # Early-Stopping Self-Consistency windows (Li et al. 2024)
    "deepconf:mode=offline,max=B",  # DeepConf offline confidence-filtered vote (Fu et al. 2025)
    "rpc:n=B",  # perplexity consistency + reasoning pruning (Zhou et al. 2025)
]
BUDGETS = [1, 2, 4, 8, 16, 32]


# %%
def record_small_pool(engine, path: Path, n: int = 20, k: int = 32):  # type: ignore[no-untyped-def]
    """Record ``k`` samples with top-5 logprobs for ``n`` one-digit additions."""
    examples = load_dataset(f"generator:addition:{n}:0:digits=1")
    return run_sync(record_pool(engine, examples, path, k=k, logprobs=5, suffix=SUFFIX,
                                   params=SamplingParams(temperature=0.8, max_tokens=32)))


def get_pool(path: Path | None, out_dir: Path, n: int, k: int) -> Pool:
    """The pool at ``path``, else the recorded one, else a fresh small pool on the bundled model."""
    for p in (path, RECORDED):
        if p is not None and Path(p).exists():
            return Pool.load(p)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from ttc.engines import VLLMEngine

    engine = VLLMEngine.bundled()
    try:
        return record_small_pool(engine, out_dir / "pool.jsonl.gz", n=n, k=k)
    finally:
        engine.close()


# %%
def tune(pool: Pool, out_dir: Path, *, questions: int | None, seeds: int, budgets: list[int]) -> str:
    """Replay the five strategies on ``pool``; write the table and the Pareto plot to ``out_dir``."""
    if questions:
        pool.questions = pool.questions[:questions]
    budgets = [b for b in budgets if b <= pool.k]
    out = out_dir / "replay.jsonl"
    rows = run_sync(replay_grid(pool, STRATEGIES, budgets, seeds=seeds, out=out, build=build_strategy))
    table = table_rows(rows)
    text = markdown_table(table)
    (out_dir / "table.md").write_text(text + "\n")
    plot_pareto(table, out_dir / "pareto.png",
                title=f"{len(pool)} questions x {pool.k} samples: accuracy vs completion tokens")
    return text


# %%
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pool", type=Path, default=None, help="a recorded pool (default: benchmarks/pools/...)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "budget_tuning")  # /runs/ is git-ignored
    ap.add_argument("--quick", action="store_true", help="8 questions, 1 draw order")
    ap.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pool = get_pool(args.pool, args.out, n=8 if args.quick else 20, k=32)
    source = pool.header.get("model") or pool.header["engine"]
    print(f"pool: {len(pool)} questions x {pool.k} samples ({source})")
    text = tune(pool, args.out, questions=8 if args.quick else None, seeds=1 if args.quick else args.seeds,
                budgets=BUDGETS)
    print(text)
    print(f"plot: {args.out / 'pareto.png'}")


if __name__ == "__main__":
    main()
