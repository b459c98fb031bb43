"""Accuracy-versus-compute plots and markdown tables (matplotlib, Agg canvas).

:func:`table_rows` turns ``ttc replay`` rows (or ``ttc run`` rows, one point per
strategy spec) into one row per (strategy, budget) with 95% intervals;
:func:`plot_pareto` draws each strategy's accuracy-vs-cost curve with error bars and
the Pareto front over all points; :func:`markdown_table` renders the table.

Plots are drawn on a :class:`matplotlib.figure.Figure` with its own Agg canvas, not
through ``pyplot``'s global figure manager, and under one process-wide lock: matplotlib
is not thread-safe (its mathtext parser, used by log-scale tick labels, keeps parse
state on a shared instance), and sweeps write their reports from worker threads, two
at once when two sweeps share an event loop.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .metrics import pareto_front, summarize_replay, summarize_runs

_PLOT_LOCK = threading.Lock()


def table_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Summary rows (strategy, budget, accuracy [lo, hi], tokens, ...) from result rows."""
    if any(r.get("type") in ("replay", "estimate") for r in rows):
        return summarize_replay(rows)
    by_spec: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("type", "result") == "result":
            by_spec[r.get("spec") or r.get("strategy", "?")].append(r)
    if not by_spec:
        raise ValueError("results: no replay, estimate or result rows")
    out = []
    for spec, rs in sorted(by_spec.items()):
        s = summarize_runs(rs)
        s.update({"strategy": spec, "budget": 0, "questions": s.pop("n"), "kind": "run"})
        out.append(s)
    return out


def _ci(r: dict[str, Any], key: str, fmt: str) -> str:
    lo, hi = r.get(key + "_lo"), r.get(key + "_hi")
    v = format(r[key], fmt)
    if lo is None or hi is None or lo == hi:
        return v
    return f"{v} [{format(lo, fmt)}, {format(hi, fmt)}]"


def markdown_table(table: Sequence[dict[str, Any]], *, x: str = "completion_tokens") -> str:
    """A markdown table; rows on the Pareto front over all strategies (estimator rows
    excluded) are marked *."""
    idx = [i for i, r in enumerate(table) if r.get("kind") != "estimate"]  # oracles are not strategies
    front = {idx[j] for j in pareto_front([table[i][x] for i in idx], [table[i]["accuracy"] for i in idx])}
    lines = [
        "| strategy | budget | accuracy [95% CI] | completion tokens/q | total tokens/q | generations/q | "
        "calls/q | questions | Pareto |",
        "|---|---:|---|---:|---:|---:|---:|---:|:-:|",
    ]
    for i, r in enumerate(table):
        lines.append(
            f"| {r['strategy']} | {r['budget'] or '-'} | {_ci(r, 'accuracy', '.3f')} | "
            f"{r['completion_tokens']:.1f} | {r['total_tokens']:.1f} | {r['generations']:.2f} | "
            f"{r['calls']:.2f} | {r['questions']} | {'*' if i in front else ''} |"
        )
    return "\n".join(lines)


def plot_pareto(
    table: Sequence[dict[str, Any]], path: str | Path, *, x: str = "completion_tokens",
    title: str | None = None, logx: bool = True,
) -> Path:
    """Accuracy vs ``x`` per strategy (error bars: 95% CI) plus the Pareto front; saved as PNG.
    Safe to call from several threads at once (see the module docstring)."""
    with _PLOT_LOCK:
        return _draw_pareto(table, Path(path), x=x, title=title, logx=logx)


def _draw_pareto(
    table: Sequence[dict[str, Any]], path: Path, *, x: str, title: str | None, logx: bool,
) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in table:
        series[r["strategy"]].append(r)
    fig = Figure(figsize=(9, 6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    markers = "osD^v<>pPhX*"
    for j, (name, rs) in enumerate(sorted(series.items())):
        rs = sorted(rs, key=lambda r: r[x])
        xs = [r[x] for r in rs]
        ys = [r["accuracy"] for r in rs]
        err = [[max(0.0, r["accuracy"] - r.get("accuracy_lo", r["accuracy"])) for r in rs],
               [max(0.0, r.get("accuracy_hi", r["accuracy"]) - r["accuracy"]) for r in rs]]
        dashed = rs[0].get("kind") == "estimate"
        ax.errorbar(xs, ys, yerr=err, marker=markers[j % len(markers)], ms=5, capsize=2, lw=1.3,
                    ls="--" if dashed else "-", alpha=0.85, label=name)
        for r in rs:
            if r.get("budget"):
                ax.annotate(str(r["budget"]), (r[x], r["accuracy"]), textcoords="offset points",
                            xytext=(3, 3), fontsize=6, alpha=0.7)
    pts = [r for r in table if r.get("kind") != "estimate"]  # oracles are not achievable strategies
    if pts:
        front = pareto_front([r[x] for r in pts], [r["accuracy"] for r in pts])
        # a staircase: the best accuracy any strategy reaches at a cost <= x
        ax.plot([pts[i][x] for i in front], [pts[i]["accuracy"] for i in front], color="black", lw=2.5,
                alpha=0.35, zorder=0, drawstyle="steps-post", label="Pareto front (strategies)")
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(f"{x.replace('_', ' ')} per question (mean)")
    ax.set_ylabel("accuracy (95% CI over questions)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title or "accuracy vs compute")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
