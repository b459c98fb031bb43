"""Benchmark sweeps (``ttc bench``): several strategies at matched budgets over one benchmark
on one engine, resumable, with one table and one Pareto plot.

A sweep is a list of :class:`SweepItem` (a strategy, built fresh per question from a spec
or a config file's label, at a completion-token budget per question). Each item runs
through :func:`ttc.bench.runner.run_dataset` into its own JSONL file under
``OUT/runs/``, so an item resumes where it stopped (the run header keys the strategy,
budget, seed, engine, dataset content and grader: a rerun with other settings is refused
before anything runs). The benchmark's prompt suffix and grader
(:class:`ttc.bench.datasets.Benchmark`) apply to every item.

Matched budgets: every strategy gets the same ``Budget(completion_tokens=B)`` per question.
A budget refuses a request whose worst case (its ``max_tokens``) does not fit, so a
strategy whose samples are longer than the budget allows stops early with stop reason
``budget``: the stop-reasons column shows it.

The table (:func:`summarize_item`, :func:`markdown_report`) has, per (strategy, budget):
accuracy with its 95% Wilson interval (Wilson 1927) over questions; the pass@k ceiling
where a strategy drew several samples (the fraction of questions where any sample it drew
was right: an oracle, the most any selection among those samples could reach); samples,
completion tokens and latency per question (the mean seconds from a question's start to its
answer, with ``concurrency`` questions in flight: not a throughput); and the stop reasons. The floor is greedy's
accuracy when greedy is in the sweep. The plot is accuracy against completion tokens with
the Pareto front (:func:`ttc.bench.plots.plot_pareto`).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttc import registry
from ttc.answers import extract_answer
from ttc.budget import Budget
from ttc.grading import off_loop

from .datasets import Benchmark
from .metrics import wilson_interval
from .runner import check_resume, run_dataset, run_header
from .specs import build_strategy, dataset_hash, with_extractor, with_extractor_config

__all__ = [
    "SweepItem", "check_sweep_resume", "markdown_report", "run_sweep", "summarize_item", "sweep_items",
    "write_report",
]


@dataclass(frozen=True)
class SweepItem:
    """One strategy at one budget. ``make()`` builds a fresh strategy (one per question);
    ``budget``: completion tokens per question (None: unlimited)."""

    label: str
    make: Callable[[], Any]
    budget: int | None = None
    name: str = field(default="", compare=False)  # the registry name (``describe()["name"]``)

    @property
    def key(self) -> str:
        return f"{self.label}@{self.budget if self.budget is not None else 'unlimited'}"

    def budget_limits(self) -> Budget | None:
        return None if self.budget is None else Budget(completion_tokens=self.budget)


def _described_maker(described: dict[str, Any]) -> Callable[[], Any]:
    return lambda: registry.build(described)


def sweep_items(strategies: Sequence[str], budgets: Sequence[int | None], config_file: str | Path | None = None,
                *, extractor: str | None = None) -> list[SweepItem]:
    """Every strategy at every budget. ``strategies``: registry specs (``greedy``,
    ``majority:n=4,max_tokens=128``, any registered name), or with ``config_file`` labels of
    that YAML/TOML file (none: all its labels); each reads answers with ``extractor`` (the
    benchmark's, :attr:`~ttc.bench.datasets.Benchmark.extractor`) unless it names one. Each
    is built once here, so a bad spec or config raises ``ValueError`` before anything runs."""
    if not budgets:
        budgets = [None]
    makers: list[tuple[str, Callable[[], Any]]] = []
    if config_file is not None:
        labels = list(strategies) or list(registry.read_config(config_file))
        for label in labels:
            described = with_extractor_config(registry.describe(registry.load_config(config_file, label)), extractor)
            makers.append((label, _described_maker(described)))
    else:
        if not strategies:
            raise ValueError("--strategy: give at least one strategy spec (or --config FILE)")
        for label in strategies:
            spec = with_extractor(label, extractor)
            build_strategy(spec)
            makers.append((label, lambda spec=spec: build_strategy(spec)))
    labels_seen = [label for label, _ in makers]
    dup = sorted({x for x in labels_seen if labels_seen.count(x) > 1})
    if dup:
        raise ValueError(f"--strategy: {dup[0]!r} given twice")
    items = []
    for label, make in makers:
        name = _name_of(make())
        items.extend(SweepItem(label, make, b, name) for b in budgets)
    return items


def _name_of(strategy: Any) -> str:
    try:
        return str(strategy.describe().get("name", ""))
    except Exception:  # noqa: BLE001 - a strategy that cannot describe itself has no registry name
        return str(getattr(strategy, "name", ""))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,@-]+", "_", text)[:150]


def item_path(out_dir: str | Path, item: SweepItem) -> Path:
    """The JSONL file of one item's run."""
    return Path(out_dir) / "runs" / f"{_slug(item.key)}.jsonl"


def run_config(bench: Benchmark, limit: int | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What each item's run header records of the sweep (``extra``: the engine's options)."""
    return {"dataset": bench.name, "dataset_hash": dataset_hash(bench.examples), "grader": bench.grader,
            "limit": limit, **(extra or {})}


def check_sweep_resume(bench: Benchmark, items: Sequence[SweepItem], out_dir: str | Path, *, seed: int,
                       config: dict[str, Any]) -> None:
    """Raise :class:`~ttc.bench.runner.ConfigMismatch` when an item's run file under
    ``out_dir`` holds another configuration (before an engine starts)."""
    for item in items:
        path = item_path(out_dir, item)
        if path.exists():
            header = run_header(item.make(), item.budget_limits(), seed=seed, prompt_style="plain",
                                suffix=bench.suffix, config=config, spec=item.label)
            check_resume(path, header, kind="run")


def _sample_answer(s: dict[str, Any]) -> str | None:
    a = s.get("answer")
    return a if a is not None else extract_answer(s.get("text") or "")


def summarize_item(rows: Sequence[dict[str, Any]], bench: Benchmark, item: SweepItem,
                   wall_seconds: float | None = None) -> dict[str, Any]:
    """One table row from an item's result rows (see the module docstring). Blocking (the
    pass@k ceiling grades every sample): call it off the event loop."""
    n = len(rows)
    correct = sum(bool(r["correct"]) for r in rows)
    lo, hi = wilson_interval(correct, n)
    samples = [len(r.get("samples") or []) for r in rows]
    ceiling = None
    if n and max(samples) > 1:
        hits = sum(bool(r["correct"]) or any(bench.grade(_sample_answer(s), r["reference"]) for s in r["samples"])
                   for r in rows)
        ceiling = hits / n
    usage = [r.get("usage") or {} for r in rows]

    def mean(vals: Sequence[float]) -> float:
        return float(sum(vals) / len(vals)) if vals else float("nan")

    return {
        "strategy": item.label, "name": item.name, "budget": item.budget, "questions": n, "kind": "run",
        "correct": correct, "accuracy": correct / n if n else float("nan"), "accuracy_lo": lo, "accuracy_hi": hi,
        "pass_at_k": ceiling, "samples": mean(samples),
        "completion_tokens": mean([u.get("completion_tokens", 0) for u in usage]),
        "total_tokens": mean([u.get("prompt_tokens", 0) + u.get("completion_tokens", 0) for u in usage]),
        "generations": mean([u.get("generations", 0) for u in usage]),
        "calls": mean([u.get("calls", 0) for u in usage]),
        "seconds": mean([r.get("latency_s", 0.0) for r in rows]),
        "stop_reasons": dict(Counter(str(r.get("stop_reason")) for r in rows).most_common()),
        "wall_seconds": wall_seconds,
    }


def _stops(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"


def markdown_report(table: Sequence[dict[str, Any]], bench: Benchmark | None = None) -> str:
    """The sweep's table as markdown (rows on the Pareto front of accuracy vs completion
    tokens marked *), with the floor (greedy) above it when greedy ran."""
    from .metrics import pareto_front

    front = set(pareto_front([r["completion_tokens"] for r in table], [r["accuracy"] for r in table]))
    lines = []
    if bench is not None:
        lines.append(f"Dataset: `{bench.name}` ({table[0]['questions'] if table else 0} questions), "
                     f"grader `{bench.grader}`.")
    floor = [r for r in table if r.get("name") == "greedy"]
    if floor:
        lines.append("Floor (greedy): " + ", ".join(
            f"{r['accuracy']:.3f} at budget {r['budget'] or 'unlimited'}" for r in floor) + ".")
    if lines:
        lines.append("")
    lines += [
        "| strategy | budget (completion tokens/q) | questions | accuracy [95% CI] | pass@k ceiling | "
        "samples/q | completion tokens/q | latency s/q | stop reasons | Pareto |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|:-:|",
    ]
    for i, r in enumerate(table):
        ceiling = "-" if r.get("pass_at_k") is None else f"{r['pass_at_k']:.3f}"
        lines.append(
            f"| {r['strategy']} | {r['budget'] or 'unlimited'} | {r['questions']} | "
            f"{r['accuracy']:.3f} [{r['accuracy_lo']:.3f}, {r['accuracy_hi']:.3f}] | {ceiling} | "
            f"{r['samples']:.2f} | {r['completion_tokens']:.1f} | {r['seconds']:.2f} | "
            f"{_stops(r['stop_reasons'])} | {'*' if i in front else ''} |"
        )
    return "\n".join(lines)


def write_report(table: Sequence[dict[str, Any]], out_dir: str | Path, bench: Benchmark | None = None,
                 title: str | None = None) -> tuple[Path, Path | None]:
    """``results.md``, ``results.json`` and (with a row) ``pareto.png`` in ``out_dir``."""
    from .plots import plot_pareto

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "results.md"
    md.write_text(markdown_report(table, bench) + "\n")
    (out / "results.json").write_text(json.dumps(list(table), indent=1, default=str) + "\n")
    if not table:
        return md, None
    points = [{**r, "budget": r["budget"] or 0} for r in table]
    png = plot_pareto(points, out / "pareto.png", x="completion_tokens",
                      title=title or f"accuracy vs completion tokens ({bench.name if bench else 'sweep'})")
    return md, png


async def run_sweep(
    bench: Benchmark,
    items: Sequence[SweepItem],
    engine: Any,
    out_dir: str | Path,
    *,
    limit: int | None = None,
    concurrency: int = 4,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    title: str | None = None,
) -> list[dict[str, Any]]:
    """Run every item on the first ``limit`` questions of ``bench`` on ``engine``, one item
    after the other (each with its progress bar and ETA), resuming each from its file; write
    the table and plot after each item (:func:`write_report`). Returns the table rows.
    An item whose questions partly failed keeps its saved results and the sweep goes on;
    ``RuntimeError`` naming the failed items is raised at the end."""
    examples = bench.examples[:limit] if limit else bench.examples
    ids = {e.id for e in examples}
    cfg = run_config(bench, limit, config)
    table: list[dict[str, Any]] = []
    failed: list[str] = []
    for k, item in enumerate(items, 1):
        if echo is not None:
            echo(f"[{k}/{len(items)}] {item.label} at budget {item.budget or 'unlimited'}")
        t0 = time.monotonic()
        try:
            rows = await run_dataset(item.make, examples, engine, item.budget_limits(), item_path(out_dir, item),
                                     concurrency=concurrency, seed=seed, suffix=bench.suffix, spec=item.label,
                                     progress=progress, config=cfg, grade=bench.grade)
        except RuntimeError as e:
            failed.append(f"{item.key}: {e}")
            rows = _saved_rows(item_path(out_dir, item))
        rows = [r for r in rows if r.get("id") in ids]
        table.append(await off_loop(summarize_item, rows, bench, item, time.monotonic() - t0))
        await off_loop(write_report, table, out_dir, bench, title)
    if failed:
        raise RuntimeError(f"{len(failed)} item(s) had failed questions (rerun to retry them): " + "; ".join(failed))
    return table


def _saved_rows(path: Path) -> list[dict[str, Any]]:
    from .metrics import load_results

    try:
        return [r for r in load_results(path) if r.get("type") == "result"]
    except ValueError:
        return []
