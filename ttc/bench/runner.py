"""Running strategies over datasets: live (:func:`run_dataset`) and offline on a
recorded pool over a grid of budgets (:func:`replay_grid`).

Both append one JSON line per finished unit of work as soon as it finishes and skip,
on a rerun, the units already in the output file: a killed run resumes where it
stopped and nothing computed is lost (a line torn by the kill is dropped, with a
warning).

Resuming is safe: an output file starts with a header record holding the run's
configuration (:func:`run_header`, :func:`replay_header`), and a rerun into the same
file with a different configuration raises :class:`ConfigMismatch` naming each
difference before anything runs. What a run is keyed by: the strategy spec (in its
canonical form), budget, seed, engine, model, prompt style, suffix, and whatever the
caller adds (``ttc run`` adds the dataset's content hash, dtype and tokenizer). Not
compared: the dataset spec text (the content hash is), ``--limit`` (a rerun may cover
more or fewer questions), concurrency and timeouts. A file with results but no header
(older ttc) cannot be resumed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ttc.answers import DEFAULT_EQUIVALENCE
from ttc.budget import Budget
from ttc.questions import Example
from ttc.engine import Engine
from ttc.grading import off_loop
from ttc.checks import check_int
from .pool import Pool, PoolQuestion, RecordWriter, check_prompt_style, config_diff, question_prompt, recover
from ttc.strategy import Strategy
from ttc.types import StrategyResult

RUN_VERSION = 1
#: Header keys that describe a run but do not change its results.
INFORMATIONAL = ("dataset", "limit", "pool")


class ConfigMismatch(ValueError):
    """Resuming into an output file whose header records another configuration."""


def _canonical(spec: str) -> str:
    try:
        from .specs import canonical_spec

        return canonical_spec(spec)
    except (ValueError, TypeError):
        return spec


def run_header(
    strategy: str, budget: Budget | None, *, seed: int, prompt_style: str, suffix: str,
    engine: Engine | None = None, config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The header record of a ``ttc run`` output: the configuration a resume must match.
    ``engine`` gives ``engine`` and ``model`` (``config`` may set them instead, e.g. before
    the engine is built); ``config`` adds or overrides keys."""
    h: dict[str, Any] = {
        "type": "header", "kind": "run", "version": RUN_VERSION, "strategy": _canonical(strategy),
        "budget": (budget or Budget()).limits(), "seed": seed, "prompt_style": prompt_style,
        "suffix": suffix,
    }
    if engine is not None:
        model = getattr(engine, "model", None)
        h.update({"engine": engine.name, "model": None if model is None else str(model)})
    h.update(config or {})
    h["created"] = time.time()
    return json.loads(json.dumps(h, default=str))


def check_resume(
    out: str | Path, header: dict[str, Any], *, kind: str, warn: Callable[[str], None] | None = None
) -> list[dict[str, Any]] | None:
    """The records after the header of ``out`` (after repairing a torn tail), once that
    header is checked against ``header``; None when ``out`` holds no record yet. A
    different configuration raises :class:`ConfigMismatch` naming every difference; a
    file without a ``kind`` header raises ``ValueError``. ``warn`` gets repair messages
    (see :func:`ttc.bench.pool.recover`)."""
    rows = recover(out, warn)
    if not rows:
        return None
    old = rows[0]
    if old.get("type") != "header" or old.get("kind") != kind:
        what = "a header" if old.get("type") != "header" else f"a {old.get('kind') or 'pool'!r} header"
        raise ValueError(
            f"{out}: exists but does not start with a ttc {kind} header (it has {what}; written by an "
            f"older ttc or another command): resuming into it could mix configurations; use a new --out"
        )
    diff = config_diff(old, header, ignore=INFORMATIONAL)
    if diff:
        raise ConfigMismatch(
            f"{out}: holds a {kind} with another configuration: " + "; ".join(diff)
            + "; rerun with the recorded settings to resume it, or use a new --out"
        )
    return rows[1:]


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
    config: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run ``strategy`` on every example (``concurrency`` at a time) with a progress bar
    (questions done, accuracy so far, tokens, ETA); append each result to ``out`` as it
    finishes; skip examples whose id is already in ``out``. Returns every result row
    (old and new; not the header). Questions whose strategy raised are not written (a
    rerun retries them); if any failed, ``RuntimeError`` is raised after the others
    finished.

    ``out`` starts with :func:`run_header` (``config`` adds keys to it); resuming with
    another configuration raises :class:`ConfigMismatch`, and duplicate example ids
    raise ``ValueError``, both before anything runs.
    """
    from tqdm.auto import tqdm

    from ttc.questions import check_unique_ids

    check_int("concurrency", concurrency, lo=1)
    check_int("seed", seed)
    check_prompt_style(prompt_style)
    if budget is not None and not isinstance(budget, Budget):
        raise TypeError(f"budget: expected a ttc.Budget or None, got {type(budget).__name__}")
    check_unique_ids(examples, "examples")
    make = strategy if callable(strategy) and not isinstance(strategy, Strategy) else (lambda: strategy)
    name = spec or make().name  # type: ignore[operator]
    rows: list[dict[str, Any]] = []
    writer = None
    if out is not None:
        header = run_header(name, budget, seed=seed, prompt_style=prompt_style, suffix=suffix, engine=engine,
                            config=config)
        old = check_resume(out, header, kind="run")
        writer = RecordWriter(out)
        if old is None:
            writer.write(header)
        rows = [r for r in old or [] if r.get("type") == "result"]
    done = {r["id"] for r in rows}
    todo = [e for e in examples if e.id not in done]
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
            row = await off_loop(result_row, e, r, spec=name, seed=s, latency=time.monotonic() - t0)
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
    from ttc.answers import extract_answer
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
    check_int("seeds", seeds, lo=1)
    check_int("budget", budget, lo=1)
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
        acc.append(float(await off_loop(DEFAULT_EQUIVALENCE, r.answer, q.answer)))
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
    from .replay import ReplayEngine

    return ReplayEngine.for_question(q, seed=seed, top_k=top_k)


def pool_digest(pool: Pool) -> str:
    """SHA-256 over a pool's recording settings and every question's id, answer, prompt
    and samples (text, tokens, finish reason): two pools with the same digest replay the
    same. The header's ``created`` time does not count."""
    h = hashlib.sha256()
    head = {k: v for k, v in pool.header.items() if k != "created"}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for q in pool.questions:
        h.update(json.dumps([q.id, q.answer, q.prompt.model_dump(), q.prompt_tokens,
                             [[g.text, g.num_tokens, g.finish_reason] for g in q.samples]]).encode())
    return h.hexdigest()


def replay_header(pool: Pool, *, seeds: int, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The header of a ``ttc replay`` output: the pool's digest (see :func:`pool_digest`;
    ``config`` may give ``pool_hash`` instead) and the number of seeds. Specs and
    budgets are not part of it: each row names its own, so a rerun may add more."""
    h: dict[str, Any] = {"type": "header", "kind": "replay", "version": RUN_VERSION, "seeds": seeds}
    h.update(config or {})
    if "pool_hash" not in h:
        h["pool_hash"] = pool_digest(pool)
    h["created"] = time.time()
    return json.loads(json.dumps(h, default=str))


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
    config: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every strategy spec at every budget (generations per question; ``B`` in a spec is
    replaced by it) on every pool question, ``seeds`` draw orders each. Rows are
    appended to ``out`` as each (spec, budget, question) finishes; a rerun skips the
    rows already there. With ``estimators``, also the exact pass@k and best-of-k rows.

    ``out`` starts with :func:`replay_header` (``config`` adds keys); resuming with
    other seeds or another pool raises :class:`ConfigMismatch`. Returns the rows, not
    the header."""
    from tqdm.auto import tqdm

    if build is None:
        from .specs import build_strategy as build
    assert build is not None
    check_int("seeds", seeds, lo=1)
    budgets = [check_int("budgets", b, lo=1) for b in budgets]
    if not budgets:
        raise ValueError("budgets: need at least one budget >= 1")
    if not specs:
        raise ValueError("specs: need at least one strategy spec")
    if not pool.questions:
        raise ValueError("pool: has no questions")
    if max(budgets) > pool.k:
        raise ValueError(f"budgets: {max(budgets)} is more than the pool's {pool.k} samples per question")
    rows: list[dict[str, Any]] = []
    writer = None
    if out is not None:
        header = replay_header(pool, seeds=seeds, config=config)
        old = check_resume(out, header, kind="replay")
        writer = RecordWriter(out)
        if old is None:
            writer.write(header)
        rows = list(old or [])
    done = {(r.get("type"), r.get("strategy"), r.get("budget"), r.get("id")) for r in rows}
    top_k = pool.header.get("logprobs")

    def emit(row: dict[str, Any]) -> None:
        if writer is not None:
            writer.write(row)
        rows.append(row)

    if estimators:
        for q in pool.questions:
            for row in await off_loop(estimator_rows, q, budgets):
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
