"""Running strategies over datasets: live (:func:`run_dataset`) and offline on a
recorded pool over a grid of budgets (:func:`replay_grid`).

Both append one JSON line per finished unit of work as soon as it finishes and skip,
on a rerun, the units already in the output file: a killed run resumes where it
stopped and nothing computed is lost (a line torn by the kill is dropped).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .answers import DEFAULT_EQUIVALENCE
from .budget import Budget
from .datasets import Example
from .engine import Engine
from .pool import Pool, PoolQuestion, RecordWriter, question_prompt, recover
from .strategy import Strategy
from .types import StrategyResult


def _seed(seed: int, *parts: Any) -> int:
    h = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(h[:4], "little")


def result_row(e: Example, r: StrategyResult, *, spec: str, seed: int, latency: float) -> dict[str, Any]:
    """The JSON line ``ttc run`` writes for one question (every sample kept, logprobs dropped)."""
    return {
        "type": "result", "id": e.id, "question": e.question, "reference": e.answer,
        "category": e.category, "difficulty": e.difficulty, "strategy": r.strategy, "spec": spec,
        "seed": seed, "answer": r.answer, "correct": bool(DEFAULT_EQUIVALENCE(r.answer, e.answer)),
        "confidence": r.confidence, "stop_reason": r.stop_reason, "budget_detail": r.budget_detail,
        "usage": r.usage.model_dump(), "latency_s": round(latency, 4),
        "samples": [
            {"text": s.text, "answer": s.answer, "num_tokens": s.num_tokens, "finish_reason": s.finish_reason,
             "score": s.score, "weight": s.weight}
            for s in r.samples
        ],
    }


async def run_dataset(
    strategy: Strategy | Callable[[], Strategy],
    examples: Sequence[Example],
    engine: Engine,
    budget: Budget | None = None,
    out: str | Path | None = None,
    *,
    concurrency: int = 4,
    seed: int = 0,
    prompt_style: str = "plain",
    suffix: str = "",
    spec: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run ``strategy`` on every example (``concurrency`` at a time) with a progress bar
    (questions done, accuracy so far, tokens, ETA); append each result to ``out`` as it
    finishes; skip examples whose id is already in ``out``. Returns every result row
    (old and new). Questions whose strategy raised are not written (a rerun retries
    them); if any failed, ``RuntimeError`` is raised after the others finished.
    """
    from tqdm.auto import tqdm

    make = strategy if callable(strategy) and not isinstance(strategy, Strategy) else (lambda: strategy)
    rows: list[dict[str, Any]] = []
    writer = None
    if out is not None:
        rows = [r for r in recover(out) if r.get("type") == "result"]
        writer = RecordWriter(out)
    done = {r["id"] for r in rows}
    todo = [e for e in examples if e.id not in done]
    name = spec or make().name  # type: ignore[operator]
    stats = {"correct": sum(bool(r["correct"]) for r in rows), "n": len(rows),
             "tokens": sum(r["usage"]["completion_tokens"] for r in rows)}
    bar = tqdm(total=len(examples), initial=len(examples) - len(todo), desc=name, disable=not progress,
               dynamic_ncols=True)
    sem = asyncio.Semaphore(max(1, concurrency))
    errors: list[tuple[str, BaseException]] = []

    async def one(e: Example) -> None:
        async with sem:
            s = _seed(seed, e.id)
            t0 = time.monotonic()
            try:
                r = await make().run(question_prompt(e, prompt_style, suffix), engine, budget, seed=s)  # type: ignore[operator]
            except Exception as exc:  # noqa: BLE001 - reported after the others finish
                errors.append((e.id, exc))
                return
            row = result_row(e, r, spec=name, seed=s, latency=time.monotonic() - t0)
        if writer is not None:
            writer.write(row)
        rows.append(row)
        stats["n"] += 1
        stats["correct"] += row["correct"]
        stats["tokens"] += row["usage"]["completion_tokens"]
        bar.set_postfix(acc=f"{stats['correct'] / stats['n']:.3f}", tokens=stats["tokens"], refresh=False)
        bar.update(1)

    try:
        await asyncio.gather(*(one(e) for e in todo))
    finally:
        bar.close()
    if errors:
        first = errors[0]
        raise RuntimeError(
            f"{len(errors)} question(s) failed (first: {first[0]}: {first[1]!r}); "
            f"{len(rows)} results are saved{f' in {out}' if out else ''}: rerun to retry the failed ones"
        )
    return rows


# -- replay ----------------------------------------------------------------------------------
def _mean_logprob(g: Any) -> float:
    lp = g.mean_logprob
    return -1e9 if lp is None else lp


def estimator_rows(q: PoolQuestion, budgets: Sequence[int]) -> list[dict[str, Any]]:
    """Exact (unbiased) values for one question: pass@k (an oracle upper bound) and
    best-of-k selected by mean token logprob, for every k in ``budgets`` up to the pool size."""
    from .answers import extract_answer
    from .metrics import expected_best_of_k, pass_at_k

    n = len(q.samples)
    correct = np.array([DEFAULT_EQUIVALENCE(extract_answer(g.text), q.answer) for g in q.samples],
                       dtype=float)
    tokens = np.array([g.num_tokens for g in q.samples], dtype=float)
    has_lp = all(g.logprobs is not None for g in q.samples)
    scores = [_mean_logprob(g) for g in q.samples]
    out = []
    for k in budgets:
        if k > n:
            continue
        base = {"type": "estimate", "budget": k, "id": q.id, "completion_tokens": k * float(tokens.mean()),
                "total_tokens": k * float(tokens.mean()) + q.prompt_tokens, "generations": k, "calls": 1}
        out.append({**base, "strategy": "pass@k (oracle)", "accuracy": pass_at_k(n, int(correct.sum()), k)})
        if has_lp:
            out.append({**base, "strategy": "best-of-k (mean logprob)",
                        "accuracy": expected_best_of_k(scores, k, values=correct)})
    return out


async def replay_one(
    q: PoolQuestion, spec: str, budget: int, seeds: int, build: Callable[[str, int], Strategy],
    top_k: int | None = None,
) -> dict[str, Any]:
    """``seeds`` replays of ``spec`` at ``budget`` generations on question ``q``, each
    with its own draw order; the row holds the means over the replays."""
    if budget > len(q.samples):
        raise ValueError(
            f"budgets: {budget} is more than the {len(q.samples)} samples question {q.id!r} has in the pool"
        )
    acc, ctoks, ttoks, gens, calls = [], [], [], [], []
    stops: dict[str, float] = {}
    for s in range(seeds):
        engine = _replay_engine(q, _seed(s, q.id, "order"), top_k)
        r = await build(spec, budget).run(q.prompt, engine, Budget(generations=budget),
                                          seed=_seed(s, q.id, spec))
        acc.append(float(DEFAULT_EQUIVALENCE(r.answer, q.answer)))
        ctoks.append(r.usage.completion_tokens)
        ttoks.append(r.usage.total_tokens)
        gens.append(r.usage.generations)
        calls.append(r.usage.calls)
        stops[r.stop_reason] = stops.get(r.stop_reason, 0) + 1 / seeds
    return {
        "type": "replay", "strategy": spec, "budget": budget, "id": q.id, "seeds": seeds,
        "accuracy": float(np.mean(acc)), "completion_tokens": float(np.mean(ctoks)),
        "total_tokens": float(np.mean(ttoks)), "generations": float(np.mean(gens)),
        "calls": float(np.mean(calls)), "stop_reasons": stops,
    }


def _replay_engine(q: PoolQuestion, seed: int, top_k: int | None) -> Engine:
    from ttc.engines.replay import ReplayEngine

    return ReplayEngine.for_question(q, seed=seed, top_k=top_k)


async def replay_grid(
    pool: Pool,
    specs: Sequence[str],
    budgets: Sequence[int],
    *,
    seeds: int = 4,
    out: str | Path | None = None,
    estimators: bool = True,
    build: Callable[[str, int], Strategy] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Every strategy spec at every budget (generations per question; ``B`` in a spec is
    replaced by it) on every pool question, ``seeds`` draw orders each. Rows are
    appended to ``out`` as each (spec, budget, question) finishes; a rerun skips the
    rows already there. With ``estimators``, also the exact pass@k and best-of-k rows."""
    from tqdm.auto import tqdm

    if build is None:
        from .cli import build_strategy as build
    assert build is not None
    if not budgets or min(budgets) < 1:
        raise ValueError("budgets: need at least one budget >= 1")
    if max(budgets) > pool.k:
        raise ValueError(f"budgets: {max(budgets)} is more than the pool's {pool.k} samples per question")
    rows: list[dict[str, Any]] = []
    writer = None
    if out is not None:
        rows = list(recover(out))
        writer = RecordWriter(out)
    done = {(r.get("type"), r.get("strategy"), r.get("budget"), r.get("id")) for r in rows}
    top_k = pool.header.get("logprobs")

    def emit(row: dict[str, Any]) -> None:
        if writer is not None:
            writer.write(row)
        rows.append(row)

    if estimators:
        for q in pool.questions:
            for row in estimator_rows(q, budgets):
                if ("estimate", row["strategy"], row["budget"], row["id"]) not in done:
                    emit(row)
    work = [(spec, b, q) for spec in specs for b in budgets for q in pool.questions
            if ("replay", spec, b, q.id) not in done]
    bar = tqdm(total=len(work), desc="replay", disable=not progress, dynamic_ncols=True)
    try:
        for spec, b, q in work:
            emit(await replay_one(q, spec, b, seeds, build, top_k))
            bar.update(1)
    finally:
        bar.close()
    return rows
