"""The ``ttc`` command line (typer).

- ``ttc data``    write a generated dataset as JSONL.
- ``ttc run``     a strategy over a dataset on an engine, with a progress bar; results
                  are appended as JSONL as they finish and a rerun resumes.
- ``ttc record``  draw a pool of K samples per question with logprobs.
- ``ttc replay``  evaluate strategies offline on a recorded pool over a grid of budgets.
- ``ttc report``  tables (markdown) and plots (PNG) from replay or run results.

Datasets (``--dataset``): a ttc JSONL file; ``gsm8k:FILE``, ``math500:FILE``, ``mc:FILE``
for the common formats; or ``generator:NAME:N:SEED[:key=value,...]`` for the generators
in :mod:`ttc.datasets` (e.g. ``generator:addition:200:0:digits=1``).

Strategy specs (``--strategy``): ``NAME[:key=value,...]`` from :data:`STRATEGIES`, e.g.
``greedy``, ``majority:n=8``, ``sc:rule=beta,max=16``. In ``ttc replay`` a value ``B`` is
replaced by each budget of the grid (``sc:rule=beta,max=B``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from . import datasets as ds
from .budget import Budget
from .strategy import Strategy
from .types import SamplingParams

app = typer.Typer(add_completion=False, no_args_is_help=True, help="ttc: test-time compute benchmarks.")


# -- datasets ---------------------------------------------------------------------------
def _coerce(v: str) -> Any:
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return v


def _kv(text: str, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ValueError(f"{what}: expected key=value, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = _coerce(v.strip())
    return out


def load_dataset(spec: str) -> list[ds.Example]:
    """Examples from a dataset spec (see the module docstring)."""
    if spec.startswith("generator:"):
        parts = spec.split(":", 4)
        if len(parts) < 3:
            raise ValueError(f"dataset: expected generator:NAME:N[:SEED[:k=v,...]], got {spec!r}")
        name = parts[1]
        if name not in ds.GENERATORS:
            raise ValueError(f"dataset: unknown generator {name!r}; known: {sorted(ds.GENERATORS)}")
        n = int(parts[2])
        seed = int(parts[3]) if len(parts) > 3 and parts[3] else 0
        kw = _kv(parts[4], "dataset") if len(parts) > 4 else {}
        if "steps" in kw and isinstance(kw["steps"], int):
            kw["steps"] = (kw["steps"],)
        return ds.GENERATORS[name](n, seed=seed, **kw)
    loaders: dict[str, Callable[[str], list[ds.Example]]] = {
        "gsm8k": ds.load_gsm8k, "math500": ds.load_math500, "mc": ds.load_multiple_choice,
        "jsonl": ds.load_jsonl,
    }
    head, _, rest = spec.partition(":")
    if rest and head in loaders:
        return loaders[head](rest)
    if not Path(spec).exists():
        raise ValueError(f"dataset: no such file {spec!r} (or use generator:NAME:N:SEED)")
    return ds.load_jsonl(spec)


# -- strategies -----------------------------------------------------------------------------
def _sampling(kw: dict[str, Any], default_temp: float = 0.8) -> SamplingParams:
    return SamplingParams(
        temperature=kw.pop("temperature", default_temp),
        max_tokens=kw.pop("max_tokens", 256),
        top_p=kw.pop("top_p", 1.0),
    )


def _greedy(kw: dict[str, Any]) -> Strategy:
    from ttc.strategies import Greedy

    return Greedy(params=_sampling(kw, 0.0))


def _majority(kw: dict[str, Any]) -> Strategy:
    from ttc.strategies import BestOfN

    p = _sampling(kw)
    s = BestOfN(n=int(kw.pop("n", 8)), params=p)
    s.name = "majority"
    return s


def _rule(kw: dict[str, Any]) -> Any:
    from ttc.strategies import stopping as st

    name = str(kw.pop("rule", "beta"))
    mx = int(kw["max"]) if kw.get("max") is not None else None
    lo = min(4, mx) if mx else 4  # a budget below the rule's minimum caps the minimum too
    if name == "beta":
        return st.BetaRule(threshold=float(kw.pop("threshold", 0.95)), min_samples=lo, max_samples=mx)
    if name == "dirichlet":
        return st.DirichletRule(threshold=float(kw.pop("threshold", 0.95)), min_samples=lo, max_samples=mx)
    if name == "esc":
        L = int(mx or 40)
        return st.ESCWindow(w=min(int(kw.pop("w", 5)), L), L=L)
    if name in ("fixed", "fixed_n"):
        return st.FixedN(int(kw.pop("n", mx or 8)))
    if name in ("certainty", "entropy", "certaindex"):
        cls = getattr(st, "CertaindexEntropy", None)
        if cls is None:
            raise ValueError("rule: no certainty rule in ttc.strategies.stopping")
        return cls(threshold=float(kw.pop("threshold", 0.7)), max_samples=mx)
    raise ValueError(f"rule: unknown stopping rule {name!r} (beta, dirichlet, esc, fixed, certainty)")


def _sc(kw: dict[str, Any]) -> Strategy:
    from ttc.strategies.self_consistency import SelfConsistency

    p = _sampling(kw)
    rule = _rule(kw)
    mx = kw.pop("max", None)
    batch = kw.pop("batch", None)
    return SelfConsistency(rule, max_samples=int(mx) if mx else None, params=p,
                           batch_sizes=(int(batch),) if batch else None)


def _deepconf(kw: dict[str, Any]) -> Strategy:
    from ttc.strategies.deepconf import DeepConf

    p = _sampling(kw)
    mode = str(kw.pop("mode", "offline"))
    mx = int(kw.pop("max", kw.pop("n", 16)))
    n_init = int(kw.pop("n_init", mx if mode == "offline" else min(16, mx)))
    return DeepConf(mode, max_traces=mx, n_init=min(n_init, mx), eta=float(kw.pop("eta", 90)),
                    window=int(kw.pop("window", 16)), params=p,
                    **{k: kw.pop(k) for k in ("tau", "metric", "top_k", "parallelism") if k in kw})


def _rpc(kw: dict[str, Any]) -> Strategy:
    from ttc.strategies.rpc import PerplexityConsistency

    p = _sampling(kw)
    return PerplexityConsistency(n=int(kw.pop("n", 16)), params=p, prune=bool(kw.pop("prune", True)))


#: name -> builder(kwargs) -> Strategy. Builders import lazily: a strategy module that is
#: missing or broken only fails when that strategy is asked for.
STRATEGIES: dict[str, Callable[[dict[str, Any]], Strategy]] = {
    "greedy": _greedy,
    "majority": _majority,
    "best_of_n": _majority,
    "sc": _sc,
    "self_consistency": _sc,
    "deepconf": _deepconf,
    "rpc": _rpc,
}


def build_strategy(spec: str, budget: int | None = None) -> Strategy:
    """A strategy from ``NAME[:key=value,...]``; values ``B`` become ``budget``."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if name not in STRATEGIES:
        raise ValueError(f"strategy: unknown {name!r}; known: {sorted(STRATEGIES)}")
    kw = _kv(rest, "strategy")
    for k, v in kw.items():
        if v == "B":
            if budget is None:
                raise ValueError(f"strategy: {spec!r} uses B but no budget grid is given")
            kw[k] = budget
    try:
        s = STRATEGIES[name](kw)
    except ImportError as e:
        raise ValueError(f"strategy: {name!r} is not available ({e})") from None
    if kw:
        raise ValueError(f"strategy: unknown option(s) {sorted(kw)} for {name!r}")
    return s


def available_strategies() -> list[str]:
    """The registered names whose modules import."""
    import importlib

    mods = {"sc": "ttc.strategies.self_consistency", "self_consistency": "ttc.strategies.self_consistency",
            "deepconf": "ttc.strategies.deepconf", "rpc": "ttc.strategies.rpc"}
    ok = []
    for name in STRATEGIES:
        try:
            if name in mods:
                importlib.import_module(mods[name])
            ok.append(name)
        except Exception:
            pass
    return ok


# -- engines -------------------------------------------------------------------------------
def make_engine(engine: str, model: str | None, base_url: str | None, kv_cache_gib: float,
                max_model_len: int, tokenizer: str | None = None, timeout: float = 600.0) -> Any:
    """``vllm``: the in-process engine (default model: the bundled SmolLM2); ``openai``: any
    OpenAI-compatible server (``tokenizer`` a local folder, or ``bundled``, makes prompt
    token counts exact)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(max(1, kv_cache_gib))))
    if engine == "vllm":
        from ttc.engines import VLLMEngine
        from ttc.models import bundled_model_path

        return VLLMEngine(model or bundled_model_path(), kv_cache_gib=kv_cache_gib,
                          max_model_len=max_model_len)
    if engine == "openai":
        from ttc.engines.openai_engine import OpenAIEngine

        if not base_url:
            raise typer.BadParameter("--base-url is required with --engine openai")
        if tokenizer == "bundled":
            from ttc.models import bundled_model_path

            tokenizer = str(bundled_model_path())
        return OpenAIEngine(base_url, model=model or "default", tokenizer=tokenizer, timeout=timeout)
    raise typer.BadParameter(f"--engine: expected vllm or openai, got {engine!r}")


def _budget(spec: str | None) -> Budget:
    if not spec:
        return Budget()
    try:
        return Budget(**_kv(spec, "budget"))
    except Exception as e:
        raise typer.BadParameter(f"--budget: {e}") from None


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2)


# -- commands ------------------------------------------------------------------------------
@app.command()
def data(
    generator: str = typer.Option(..., help=f"one of {sorted(ds.GENERATORS)}"),
    n: int = typer.Option(200, help="number of examples"),
    seed: int = typer.Option(0),
    options: str = typer.Option("", help="generator options, key=value,... (e.g. digits=1)"),
    out: Path = typer.Option(..., help="output JSONL"),
) -> None:
    """Write a generated dataset as ttc JSONL."""
    try:
        exs = load_dataset(f"generator:{generator}:{n}:{seed}" + (f":{options}" if options else ""))
    except ValueError as e:
        _fail(e)
    ds.save_jsonl(exs, out)
    typer.echo(f"wrote {len(exs)} examples to {out}")


@app.command()
def run(
    dataset: str = typer.Option(..., help="FILE, gsm8k:FILE, math500:FILE, mc:FILE or generator:NAME:N:SEED"),
    strategy: str = typer.Option("greedy", help="strategy spec, e.g. sc:rule=beta,max=16"),
    engine: str = typer.Option("vllm", help="vllm (in-process, bundled model) or openai"),
    model: str | None = typer.Option(None, help="model folder (vllm) or served name (openai)"),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible base URL (--engine openai)"),
    tokenizer: str | None = typer.Option(None, help="tokenizer folder or 'bundled' (--engine openai)"),
    budget: str | None = typer.Option(
        None, help="per-question budget, e.g. completion_tokens=2000,calls=16"
    ),
    out: Path = typer.Option(..., help="results JSONL (appended; a rerun resumes)"),
    concurrency: int = typer.Option(4, help="questions in flight"),
    seed: int = typer.Option(0),
    prompt_style: str = typer.Option("plain", help="plain, cot or direct"),
    suffix: str = typer.Option("", help="text appended to every question"),
    limit: int | None = typer.Option(None, help="only the first N questions"),
    kv_cache_gib: float = typer.Option(2.0),
    max_model_len: int = typer.Option(2048),
) -> None:
    """Run a strategy over a dataset; progress bar; JSONL results; resumable."""
    from .metrics import summarize_runs
    from .runner import run_dataset
    from .sync import run_sync

    try:
        exs = load_dataset(dataset)[:limit]
        build_strategy(strategy)  # fail fast on a bad spec
    except ValueError as e:
        _fail(e)
    eng = make_engine(engine, model, base_url, kv_cache_gib, max_model_len, tokenizer)
    try:
        rows = run_sync(run_dataset(lambda: build_strategy(strategy), exs, eng, _budget(budget), out,
                                    concurrency=concurrency, seed=seed, prompt_style=prompt_style,
                                    suffix=suffix, spec=strategy))
    finally:
        _close(eng)
    s = summarize_runs(rows)
    typer.echo(
        f"{strategy}: accuracy {s['accuracy']:.3f} [{s['accuracy_lo']:.3f}, {s['accuracy_hi']:.3f}] "
        f"on {s['n']} questions; completion tokens/question {s['completion_tokens']:.1f}; results in {out}"
    )


@app.command()
def record(
    dataset: str = typer.Option(..., help="FILE, gsm8k:FILE, ... or generator:NAME:N:SEED[:k=v]"),
    k: int = typer.Option(32, help="samples per question"),
    out: Path = typer.Option(..., help="pool file (.jsonl or .jsonl.gz); a rerun resumes"),
    engine: str = typer.Option("vllm"),
    model: str | None = typer.Option(None),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible base URL (--engine openai)"),
    tokenizer: str | None = typer.Option(None, help="tokenizer folder or 'bundled' (--engine openai)"),
    temperature: float = typer.Option(0.8),
    top_p: float = typer.Option(1.0),
    max_tokens: int = typer.Option(64),
    logprobs: int = typer.Option(5, help="top-k logprobs stored per token (0-20)"),
    prompt_style: str = typer.Option("plain"),
    suffix: str = typer.Option("", help="text appended to every question"),
    concurrency: int = typer.Option(8, help="questions in flight"),
    limit: int | None = typer.Option(None),
    kv_cache_gib: float = typer.Option(2.0),
    max_model_len: int = typer.Option(2048),
) -> None:
    """Record a pool of K samples per question (with logprobs) for offline replay."""
    from .pool import record_pool
    from .sync import run_sync

    try:
        exs = load_dataset(dataset)[:limit]
    except ValueError as e:
        _fail(e)
    params = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
    eng = make_engine(engine, model, base_url, kv_cache_gib, max_model_len, tokenizer)
    try:
        pool = run_sync(record_pool(eng, exs, out, k=k, params=params, logprobs=logprobs,
                                    prompt_style=prompt_style, suffix=suffix, concurrency=concurrency,
                                    header_extra={"dataset": dataset}))
    except ValueError as e:
        _fail(e)
    finally:
        _close(eng)
    tokens = sum(g.num_tokens for q in pool.questions for g in q.samples)
    typer.echo(f"pool {out}: {len(pool)} questions x {pool.k} samples, {tokens} completion tokens")


@app.command()
def replay(
    pool: Path = typer.Option(..., help="recorded pool"),
    strategies: list[str] = typer.Option(
        ..., "--strategies", "-s", help="strategy spec (repeat, or ';'-separated); B = the budget"
    ),
    budgets: str = typer.Option("1,2,4,8,16,32", help="budgets: generations per question"),
    seeds: int = typer.Option(4, help="replays (draw orders) per question"),
    out: Path = typer.Option(..., help="replay results JSONL"),
    limit: int | None = typer.Option(None, help="only the first N questions"),
    estimators: bool = typer.Option(True, help="also write pass@k and expected best-of-k rows"),
) -> None:
    """Evaluate strategies and stopping rules offline on a pool over a grid of budgets."""
    from .pool import Pool
    from .runner import replay_grid
    from .sync import run_sync

    try:
        p = Pool.load(pool)
        specs = [s.strip() for item in strategies for s in item.split(";") if s.strip()]
        grid = [int(b) for b in budgets.split(",") if b.strip()]
        for spec in specs:
            build_strategy(spec, grid[0])
    except ValueError as e:
        _fail(e)
    if limit:
        p.questions = p.questions[:limit]
    try:
        rows = run_sync(replay_grid(p, specs, grid, seeds=seeds, out=out, estimators=estimators,
                                    build=build_strategy))
    except ValueError as e:
        _fail(e)
    typer.echo(f"wrote {len(rows)} rows to {out}")


@app.command()
def report(
    results: Path = typer.Argument(..., help="replay.jsonl (ttc replay) or results.jsonl (ttc run)"),
    png: Path | None = typer.Option(None, help="accuracy-vs-tokens plot with Pareto front"),
    md: Path | None = typer.Option(None, help="markdown table"),
    x: str = typer.Option("completion_tokens", help="cost: completion_tokens, total_tokens, generations"),
    title: str | None = typer.Option(None),
) -> None:
    """Tables and plots from replay or run results."""
    from .metrics import load_results
    from .plots import markdown_table, plot_pareto, table_rows

    try:
        rows = load_results(results)
        table = table_rows(rows)
    except ValueError as e:
        _fail(e)
    text = markdown_table(table, x=x)
    typer.echo(text)
    if md:
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(text + "\n")
    if png:
        plot_pareto(table, png, x=x, title=title or f"accuracy vs {x.replace('_', ' ')} ({results.name})")
        typer.echo(f"plot: {png}")


def _close(engine: Any) -> None:
    close = getattr(engine, "close", None)
    if callable(close):
        close()
        return
    from .sync import run_sync

    run_sync(engine.aclose())


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
