"""Running strategies over datasets: live (:func:`run_dataset`) and offline on a
recorded pool over a grid of budgets (:func:`replay_grid`).

Both append one JSON line per finished unit of work as soon as it finishes and skip,
on a rerun, the units already in the output file: a killed run resumes where it
stopped and nothing computed is lost (a line torn by the kill is dropped, with a
warning).

Resuming is safe: an output file starts with a header record holding the run's
configuration (:func:`run_header`, :func:`replay_header`), and a rerun into the same
file with a different configuration raises :class:`ConfigMismatch` naming each
difference before anything runs. What a run is keyed by: the strategy (its
description, ``describe()``: two specs that build equal strategies, ``majority:n=2`` and
``best_of_n:n=2``, resume each other's runs), budget, seed, engine, model, prompt style,
suffix, and whatever the caller adds (``ttc run`` adds the dataset's content hash, dtype
and tokenizer). Not compared: the spec text (``spec``), the dataset spec text (the content
hash is), ``--limit`` (a rerun may cover more or fewer questions), concurrency and
timeouts. A file with results but no header (older ttc) cannot be resumed.

Batch strategies (the allocator: ``run(questions, engine, budget)``) run the questions
still to do as one batch whose budget is the per-question budget times their number
(``wall_seconds`` bounds the whole batch); in a replay they get the budget grid's
generations per question times the pool's questions, on an engine serving the whole pool.
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

from ttc import registry
from ttc.answers import DEFAULT_EQUIVALENCE
from ttc.answers import grader as answer_grader
from ttc.budget import Budget
from ttc.checks import check_int
from ttc.engine import Engine
from ttc.grading import off_loop
from ttc.questions import Example
from ttc.strategy import BatchStrategy, DescribeError, Strategy
from ttc.types import StrategyResult

from .pool import Pool, PoolQuestion, RecordWriter, check_prompt_style, config_diff, question_prompt, recover

RUN_VERSION = 1
#: Header keys that describe a run but do not change its results.
INFORMATIONAL = ("dataset", "limit", "pool", "spec")


class ConfigMismatch(ValueError):
    """Resuming into an output file whose header records another configuration."""


def strategy_record(strategy: Any) -> Any:
    """What a header records of a strategy (or of the spec it is built from): its
    description (``describe()``); the text as given for a spec that does not build, the
    name for a strategy that cannot be described (a custom function among its arguments)."""
    if isinstance(strategy, str):
        try:
            strategy = registry.build_from_spec(strategy)
        except (ValueError, TypeError):
            return strategy
    try:
        return strategy.describe()
    except (AttributeError, DescribeError):
        return getattr(strategy, "name", type(strategy).__name__)


def is_batch(strategy: Any) -> bool:
    """A batch strategy: ``run(questions, engine, budget)`` over many questions at once."""
    return isinstance(strategy, BatchStrategy) or (
        not isinstance(strategy, Strategy) and callable(getattr(strategy, "run", None)))


def batch_budget(budget: Budget | None, n: int) -> Budget:
    """The budget of a batch of ``n`` questions: each count limit times ``n``;
    ``wall_seconds`` bounds the whole batch."""
    b = budget or Budget()
    scaled = {k: v * n for k, v in b.limits().items() if k != "wall_seconds"}
    return Budget(**scaled, wall_seconds=b.wall_seconds)


def run_header(
    strategy: Any, budget: Budget | None, *, seed: int, prompt_style: str, suffix: str,
    engine: Engine | None = None, config: dict[str, Any] | None = None, spec: str | None = None,
) -> dict[str, Any]:
    """The header record of a ``ttc run`` output: the configuration a resume must match.
    ``strategy``: the strategy or its spec (see :func:`strategy_record`); ``spec``: the
    text it was given as (recorded, not compared). ``engine`` gives ``engine`` and
    ``model`` (``config`` may set them instead, e.g. before the engine is built);
    ``config`` adds or overrides keys."""
    h: dict[str, Any] = {
        "type": "header", "kind": "run", "version": RUN_VERSION, "strategy": strategy_record(strategy),
        "spec": spec if spec is not None else (strategy if isinstance(strategy, str) else None),
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


Grade = Callable[[Any, str], bool]


def result_row(e: Example, r: StrategyResult, *, spec: str, seed: int, latency: float,
               grade: Grade | None = None) -> dict[str, Any]:
    """The JSON line ``ttc run`` writes for one question (every sample kept, logprobs dropped);
    ``correct`` by ``grade(answer, reference)`` (default: :data:`~ttc.answers.DEFAULT_EQUIVALENCE`)."""
    grade = grade or DEFAULT_EQUIVALENCE
    return {
        "type": "result", "id": e.id, "question": e.question, "reference": e.answer,
        "category": e.category, "difficulty": e.difficulty, "strategy": r.strategy, "spec": spec,
        "seed": seed, "answer": r.answer, "correct": bool(grade(r.answer, e.answer)),
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
    grade: Grade | None = None,
) -> list[dict[str, Any]]:
    """Run ``strategy`` on every example (``concurrency`` at a time) with a progress bar
    (questions done, accuracy so far, tokens, ETA); append each result to ``out`` as it
    finishes; skip examples whose id is already in ``out``. Returns every result row
    (old and new; not the header). Questions whose strategy raised are not written (a
    rerun retries them); if any failed, ``RuntimeError`` is raised after the others
    finished.

    ``out`` starts with :func:`run_header` (``config`` adds keys to it); resuming with
    another configuration raises :class:`ConfigMismatch`, and duplicate example ids
    raise ``ValueError``, both before anything runs. ``grade(answer, reference)`` decides
    ``correct`` (a benchmark's grader; default :data:`~ttc.answers.DEFAULT_EQUIVALENCE`):
    record its name in ``config`` so a resume keeps it.
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
    first = make()  # type: ignore[operator]
    name = spec or getattr(first, "name", None) or type(first).__name__
    rows: list[dict[str, Any]] = []
    writer = None
    if out is not None:
        header = run_header(first, budget, seed=seed, prompt_style=prompt_style, suffix=suffix, engine=engine,
                            config=config, spec=spec)
        old = check_resume(out, header, kind="run")
        writer = RecordWriter(out)
        if old is None:
            writer.write(header)
        rows = [r for r in old or [] if r.get("type") == "result"]
    done = {r["id"] for r in rows}
    if is_batch(first):
        todo = [e for e in examples if e.id not in done]
        new = await run_batch(first, todo, engine, budget, seed=seed, prompt_style=prompt_style, suffix=suffix,
                              spec=name, progress=progress, grade=grade)
        for row in new:
            if writer is not None:
                writer.write(row)
        return rows + new
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
            row = await off_loop(result_row, e, r, spec=name, seed=s, latency=time.monotonic() - t0, grade=grade)
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


async def run_batch(
    batch: Any, examples: Sequence[Example], engine: Engine, budget: Budget | None, *, seed: int = 0,
    prompt_style: str = "plain", suffix: str = "", spec: str = "", progress: bool = True, grade: Grade | None = None,
) -> list[dict[str, Any]]:
    """Run a batch strategy on ``examples`` as one batch (budget: :func:`batch_budget`);
    one result row per example, as :func:`result_row` writes them (``latency_s``: the
    batch's). A batch that raises saves nothing: ``RuntimeError``."""
    from tqdm.auto import tqdm

    if not examples:
        return []
    bar = tqdm(total=len(examples), desc=spec, disable=not progress, dynamic_ncols=True)
    t0 = time.monotonic()
    s = _seed(seed, "batch")
    try:
        res = await batch.run([question_prompt(e, prompt_style, suffix) for e in examples], engine,
                              batch_budget(budget, len(examples)), seed=s)
    except Exception as exc:  # noqa: BLE001 - one line for the command line
        raise RuntimeError(f"the batch of {len(examples)} question(s) failed ({exc!r}); nothing was saved") from exc
    finally:
        bar.update(len(examples))
        bar.close()
    latency = time.monotonic() - t0
    name = getattr(batch, "name", None) or batch.describe()["name"]
    detail = getattr(res, "budget_detail", None)
    return [await off_loop(batch_row, e, q, name=name, spec=spec, seed=s, latency=latency, detail=detail,
                           grade=grade)
            for e, q in zip(examples, batch_results(res))]


def batch_results(res: Any) -> list[Any]:
    """The per-question results of a batch run, in question order (a
    :class:`~ttc.strategy.BatchResult`'s ``results``, an allocation's ``questions``)."""
    items = getattr(res, "results", None)
    return list(items if items is not None else res.questions)


def batch_row(e: Example, q: Any, *, name: str, spec: str, seed: int, latency: float,
              detail: str | None = None, grade: Grade | None = None) -> dict[str, Any]:
    """The JSON line of one question of a batch (its StrategyResult-like record)."""
    grade = grade or DEFAULT_EQUIVALENCE
    return {
        "type": "result", "id": e.id, "question": e.question, "reference": e.answer,
        "category": e.category, "difficulty": e.difficulty, "strategy": name, "spec": spec,
        "seed": seed, "answer": q.answer, "correct": bool(grade(q.answer, e.answer)),
        "confidence": q.confidence, "stop_reason": q.stop_reason,
        "budget_detail": getattr(q, "budget_detail", None) or detail,
        "usage": q.usage.model_dump(), "latency_s": round(latency, 4),
        "samples": [
            {"text": s.text, "answer": s.answer, "num_tokens": s.num_tokens, "finish_reason": s.finish_reason,
             "score": s.score, "weight": s.weight}
            for s in q.samples
        ],
    }


# -- replay ----------------------------------------------------------------------------------
def _mean_logprob(g: Any) -> float:
    lp = g.mean_logprob
    return -1e9 if lp is None else lp


def estimator_rows(q: PoolQuestion, budgets: Sequence[int], grade: Grade | None = None) -> list[dict[str, Any]]:
    """Exact (unbiased) values for one question: pass@k (an oracle upper bound) and
    best-of-k selected by mean token logprob, for every k in ``budgets`` up to the pool size;
    samples judged by ``grade`` (default :data:`~ttc.answers.DEFAULT_EQUIVALENCE`)."""
    from ttc.answers import extract_answer

    from .metrics import expected_best_of_k, pass_at_k

    grade = grade or DEFAULT_EQUIVALENCE
    n = len(q.samples)
    correct = np.array([grade(extract_answer(g.text), q.answer) for g in q.samples],
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
    top_k: int | None = None, grade: Grade | None = None,
) -> dict[str, Any]:
    """``seeds`` replays of ``spec`` at ``budget`` generations on question ``q``, each
    with its own draw order; the row holds the means over the replays. Answers are judged
    by ``grade`` (default :data:`~ttc.answers.DEFAULT_EQUIVALENCE`)."""
    grade = grade or DEFAULT_EQUIVALENCE
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
        acc.append(float(await off_loop(grade, r.answer, q.answer)))
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


async def replay_batch(pool: Pool, spec: str, budget: int, seeds: int, build: Callable[[str, int], Any],
                       grade: Grade | None = None) -> list[dict[str, Any]]:
    """``seeds`` replays of the batch strategy ``spec`` over the whole pool with ``budget``
    generations per question on average (:func:`batch_budget`), on an engine serving every
    question of the pool; one row per question, as :func:`replay_one` writes them. The
    strategy's ``max_samples`` is capped at the pool's samples per question (a question
    cannot be served more than were recorded)."""
    from .replay import ReplayEngine

    check_int("seeds", seeds, lo=1)
    grade = grade or DEFAULT_EQUIVALENCE
    qs = pool.questions
    acc: dict[str, list[float]] = {q.id: [] for q in qs}
    usage: dict[str, list[Any]] = {q.id: [] for q in qs}
    stops: dict[str, dict[str, float]] = {q.id: {} for q in qs}
    for s in range(seeds):
        batch = build(spec, budget)
        if getattr(batch, "max_samples", 0) > pool.k:
            batch = registry.build({**batch.describe(), "max_samples": pool.k})
        engine = ReplayEngine(pool, seed=_seed(s, "order"))
        res = await batch.run([q.prompt for q in qs], engine, Budget(generations=budget * len(qs)),
                              seed=_seed(s, spec))
        for q, r in zip(qs, batch_results(res)):
            acc[q.id].append(float(await off_loop(grade, r.answer, q.answer)))
            usage[q.id].append(r.usage)
            stops[q.id][r.stop_reason] = stops[q.id].get(r.stop_reason, 0) + 1 / seeds
    return [{
        "type": "replay", "strategy": spec, "budget": budget, "id": q.id, "seeds": seeds,
        "accuracy": float(np.mean(acc[q.id])),
        "completion_tokens": float(np.mean([u.completion_tokens for u in usage[q.id]])),
        "total_tokens": float(np.mean([u.total_tokens for u in usage[q.id]])),
        "generations": float(np.mean([u.generations for u in usage[q.id]])),
        "calls": float(np.mean([u.calls for u in usage[q.id]])), "stop_reasons": stops[q.id],
    } for q in qs]


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
    grade = answer_grader(pool.grader)

    def emit(row: dict[str, Any]) -> None:
        if writer is not None:
            writer.write(row)
        rows.append(row)

    if estimators:
        for q in pool.questions:
            for row in await off_loop(estimator_rows, q, budgets, grade):
                if ("estimate", row["strategy"], row["budget"], row["id"]) not in done:
                    emit(row)
    work = [(spec, b, q) for spec in specs for b in budgets for q in pool.questions
            if ("replay", spec, b, q.id) not in done]
    bar = tqdm(total=len(work), desc="replay", disable=not progress, dynamic_ncols=True)

    def done_one(row: dict[str, Any]) -> None:
        emit(row)
        bar.update(1)

    try:
        await _replay_work(pool, work, seeds, build, top_k, budgets[0], done_one, grade)
    finally:
        bar.close()
    return rows


async def _replay_work(pool: Pool, work: list[tuple[str, int, PoolQuestion]], seeds: int,
                       build: Callable[[str, int], Any], top_k: int | None, any_budget: int,
                       emit: Callable[[dict[str, Any]], None], grade: Grade | None = None) -> None:
    """The (spec, budget, question) replays of ``work``: batch strategies once per (spec,
    budget) over the whole pool (the rows of the questions still to do kept), the others
    question by question."""
    batches = {spec for spec in {w[0] for w in work} if is_batch(build(spec, any_budget))}
    for spec, b in dict.fromkeys((spec, b) for spec, b, _ in work if spec in batches):
        missing = {q.id for s, bb, q in work if (s, bb) == (spec, b)}
        for row in await replay_batch(pool, spec, b, seeds, build, grade):
            if row["id"] in missing:
                emit(row)
    for spec, b, q in work:
        if spec not in batches:
            emit(await replay_one(q, spec, b, seeds, build, top_k, grade))
