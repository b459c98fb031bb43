"""The ``ttc`` command line (typer).

- ``ttc data``    write a generated dataset as JSONL.
- ``ttc run``     a strategy over a dataset on an engine, with a progress bar; results
                  are appended as JSONL as they finish and a rerun resumes.
- ``ttc record``  draw a pool of K samples per question with logprobs.
- ``ttc replay``  evaluate strategies offline on a recorded pool over a grid of budgets.
- ``ttc report``  tables (markdown) and plots (PNG) from replay or run results.
- ``ttc bench``   several strategies at matched budgets over a benchmark (GSM8K, MATH-500,
                  AIME, AMC, ``hf:``): a resumable sweep, a results table and a Pareto plot.
- ``ttc strategies``  the registered strategies (and their parts), with their options.
- ``ttc serve``   an OpenAI-compatible server running any strategy (:mod:`ttc.serve.cli`).

Datasets (``--dataset``): a ttc JSONL file; ``gsm8k:FILE``, ``math500:FILE``, ``mc:FILE``
for the common formats; or ``generator:NAME:N:SEED[:key=value,...]`` for the generators
in :mod:`ttc.bench.datasets` (e.g. ``generator:addition:200:0:digits=1``).

Strategy specs (``--strategy``): ``NAME[:key=value,...]`` for any name of the registry
(:mod:`ttc.registry`; ``ttc strategies`` lists them), e.g. ``greedy``, ``majority:n=8``,
``sc:rule=beta,max=16``, ``pf:n=8,verifier=arith_step``, ``sc:rule=esc,rule.w=3``. With
``--config FILE`` (YAML or TOML, ``{label: {strategy: NAME, ...}}``) ``--strategy`` is a
label of that file. In ``ttc replay`` a value ``B`` is replaced by each budget of the grid
(``sc:rule=beta,max=B``); a strategy that cannot run on a pool (step-wise searches, early
exit, self-evaluation, the router: their registry entry says why) is refused there. A
batch strategy (the allocator) runs the dataset as one batch. Specs are parsed strictly:
unknown or repeated keys, wrong types and out-of-range values are errors.

Bad input: every check runs before an engine is built or a server is contacted, and a
bad input ends with one line ``error: <what is wrong>`` on stderr and exit code 2 (typer
itself reports malformed option values, also with exit code 2). Resuming into an output
file written with another configuration is such an error (:mod:`ttc.bench.runner`). With
``--engine openai`` the server must answer at ``--base-url`` before anything runs. A run
in which some questions failed ends with exit code 1 (the others are saved).
"""

from __future__ import annotations

import math
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import typer

from ttc import registry
from ttc.answers import grader as answer_grader
from ttc.serve.cli import serve as serve_command
from ttc.types import SamplingParams

from . import datasets as ds
from .pool import PROMPT_STYLES
from .specs import (
    build_strategy,
    dataset_hash,
    load_benchmark,
    load_dataset,
    one_line,
    parse_budget,
    strategy_entry,
    with_extractor,
    with_extractor_config,
)

__all__ = ["app", "build_strategy", "load_dataset", "main", "make_engine"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="ttc: test-time compute benchmarks.")

ENGINES = ("vllm", "openai")
REPORT_X = ("completion_tokens", "total_tokens", "generations", "calls")


# -- errors and checks -----------------------------------------------------------------------
def _fail(e: Exception | str, code: int = 2) -> NoReturn:
    """One line on stderr, then exit ``code`` (2: bad input)."""
    typer.echo(f"error: {e if isinstance(e, str) else one_line(e)}", err=True)
    raise typer.Exit(code)


@contextmanager
def _inputs() -> Iterator[None]:
    """Input checks: a ValueError, TypeError or OSError inside is a bad input (exit 2)."""
    try:
        yield
    except (ValueError, TypeError, OSError) as e:
        _fail(e)


def _warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


def _int(name: str, value: int | None, lo: int, hi: int | None = None) -> None:
    if value is None:
        return
    if value < lo:
        _fail(f"{name}: must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        _fail(f"{name}: must be <= {hi}, got {value}")


def _num(name: str, value: float | None, lo: float, hi: float, *, lo_open: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or (value <= lo if lo_open else value < lo) or value > hi:
        _fail(f"{name}: must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value:g}")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(f"{name}: expected one of {list(choices)}, got {value!r}")


def _out_path(name: str, path: Path) -> None:
    """``path`` can be written: not a directory, and its nearest existing parent is one."""
    if not str(path).strip():
        _fail(f"{name}: empty file name")
    if path.is_dir():
        _fail(f"{name}: {str(path)!r} is a directory; give a file name")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        _fail(f"{name}: {str(parent)!r} is not a directory")


def _in_file(name: str, path: Path) -> None:
    if not path.exists():
        _fail(f"{name}: no such file {str(path)!r}")
    if path.is_dir():
        _fail(f"{name}: {str(path)!r} is a directory, not a file")


def redact(url: str) -> str:
    """``url`` without a user name or password (error text must not leak them)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return parts._replace(netloc="***@" + host).geturl()


# -- engines -------------------------------------------------------------------------------
def engine_options(
    engine: str, model: str | None, base_url: str | None, tokenizer: str | None, dtype: str,
    request_timeout: float | None, kv_cache_gib: float, max_model_len: int,
) -> dict[str, Any]:
    """Check the engine options together (before anything is started) and return what
    the output header records about the engine: ``engine``, ``model`` (``"bundled"`` for
    vLLM's default, ``"default"`` for an OpenAI server's), ``dtype`` (vLLM) and
    ``tokenizer`` (OpenAI). Options that do not apply to the engine are errors."""
    _choice("--engine", engine, ENGINES)
    _num("--kv-cache-gib", kv_cache_gib, 0.0, 4096.0, lo_open=True)
    _int("--max-model-len", max_model_len, 16, 10_000_000)
    if model is not None and not model.strip():
        _fail("--model: empty")
    if engine == "vllm":
        for opt, value in (("--base-url", base_url), ("--tokenizer", tokenizer),
                           ("--request-timeout", request_timeout)):
            if value is not None:
                _fail(f"{opt}: applies to --engine openai only")
        from ttc.engines.dtype import resolve_dtype

        try:
            resolve_dtype(dtype, model="", on_cpu=False)
        except (TypeError, ValueError) as e:
            _fail(f"--{e}")
        if model is not None and (Path(model).expanduser().is_absolute() or model.startswith((".", "~"))) \
                and not Path(model).expanduser().exists():
            _fail(f"--model: no such folder {model!r}")
        return {"engine": engine, "model": model or "bundled", "dtype": dtype, "tokenizer": None}
    if dtype != "auto":
        _fail("--dtype: applies to --engine vllm only (an OpenAI-compatible server picks its own)")
    if not base_url:
        _fail("--base-url: required with --engine openai")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        _fail(f"--base-url: expected an http(s) URL such as http://127.0.0.1:8000/v1, got {redact(base_url)!r}")
    _num("--request-timeout", request_timeout, 0.0, 86_400.0, lo_open=True)
    if tokenizer is not None and tokenizer != "bundled" and not Path(tokenizer).expanduser().exists():
        _fail(f"--tokenizer: no such folder {tokenizer!r} (give a tokenizer folder or 'bundled')")
    return {"engine": engine, "model": model or "default", "dtype": None, "tokenizer": tokenizer}


def check_server(base_url: str, timeout: float = 10.0) -> None:
    """Fail with one line (exit 2) when nothing answers at ``base_url``: a refused
    connection, an unknown host, a connect timeout. Any HTTP answer, even an error
    status, or a slow one, counts as reachable: the engine reports those per request."""
    import httpx

    url = base_url.rstrip("/") + "/models"
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout, connect=timeout)) as c:
            c.get(url)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        if "refused" in reason.lower():
            reason = "connection refused"
        _fail(f"--base-url: cannot connect to {redact(base_url)} ({reason})")
    except httpx.HTTPError:
        pass  # connected; a slow or broken answer is the engine's to report per request


def make_engine(engine: str, model: str | None, base_url: str | None, kv_cache_gib: float,
                max_model_len: int, tokenizer: str | None = None, timeout: float | None = None,
                dtype: str = "auto", ray: str | None = None, replicas: int = 1) -> Any:
    """``vllm``: the in-process engine (default model: the bundled SmolLM2; ``dtype`` as
    :class:`~ttc.engines.VLLMEngine` takes it); ``openai``: any OpenAI-compatible server
    (``tokenizer`` a local folder, or ``bundled``, makes prompt token counts exact;
    ``timeout`` seconds per request, the engine's default when None). ``ray``: ``replicas``
    of that engine on Ray (:class:`~ttc.engines.RayEngine`; ``local`` starts a local
    cluster, ``auto`` joins a running one, else a cluster address)."""
    if ray is not None:
        return _ray_engine(engine, model, base_url, kv_cache_gib, max_model_len, tokenizer, timeout, dtype,
                           ray, replicas)
    if engine == "vllm":
        from ttc.engines import VLLMEngine
        from ttc.models import bundled_model_path

        return VLLMEngine(model or bundled_model_path(), kv_cache_gib=kv_cache_gib,
                          max_model_len=max_model_len, dtype=dtype)
    if engine == "openai":
        from ttc.engines.openai_engine import OpenAIEngine

        if not base_url:
            raise typer.BadParameter("--base-url is required with --engine openai")
        if tokenizer == "bundled":
            from ttc.models import bundled_model_path

            tokenizer = str(bundled_model_path())
        kw: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        return OpenAIEngine(base_url, model=model or "default", tokenizer=tokenizer, **kw)
    raise typer.BadParameter(f"--engine: expected vllm or openai, got {engine!r}")


def _ray_engine(engine: str, model: str | None, base_url: str | None, kv_cache_gib: float, max_model_len: int,
                tokenizer: str | None, timeout: float | None, dtype: str, ray: str, replicas: int) -> Any:
    """``replicas`` of the engine the options describe, on Ray (each built from one spec)."""
    from ttc.engines import RayEngine
    from ttc.models import bundled_model_path

    if engine == "vllm":
        spec: dict[str, Any] = {"kind": "vllm", "model": str(model or bundled_model_path()),
                                "kv_cache_gib": kv_cache_gib, "max_model_len": max_model_len, "dtype": dtype}
    else:
        if not base_url:
            raise typer.BadParameter("--base-url is required with --engine openai")
        spec = {"kind": "openai", "base_url": base_url, "model": model or "default",
                "tokenizer": str(bundled_model_path()) if tokenizer == "bundled" else tokenizer}
        if timeout is not None:
            spec["timeout"] = timeout
    return RayEngine(spec, replicas, address=None if ray == "local" else ray)


def _start_engine(opts: dict[str, Any], model: str | None, base_url: str | None, tokenizer: str | None,
                  request_timeout: float | None, kv_cache_gib: float, max_model_len: int,
                  ray: str | None = None, replicas: int = 1) -> Any:
    if opts["engine"] == "openai":
        assert base_url is not None
        check_server(base_url, timeout=min(10.0, request_timeout or 10.0))
    if ray is not None and (not ray.strip() or not 1 <= replicas <= 4096):
        _fail("--ray: give 'local', 'auto' or a cluster address" if not ray.strip()
              else f"--replicas: expected 1-4096, got {replicas}")
    try:
        return make_engine(opts["engine"], model, base_url, kv_cache_gib, max_model_len, tokenizer,
                           request_timeout, dtype=opts["dtype"] or "auto", ray=ray, replicas=replicas)
    except (ValueError, TypeError, OSError) as e:
        _fail(f"--engine {opts['engine']}: cannot start ({one_line(e)})")


# -- commands ------------------------------------------------------------------------------
# Engine options shared by the commands that start an engine.
DTYPE_OPTION = typer.Option("auto", help="model dtype (--engine vllm): auto, float32, bfloat16, float16")
REQUEST_TIMEOUT_OPTION = typer.Option(
    None, help="seconds per request before it is retried (--engine openai; default: the engine's)"
)
RAY_OPTION = typer.Option(None, "--ray", help="run --replicas copies of the engine on Ray: 'local' starts a "
                          "local cluster, 'auto' joins a running one, or a cluster address")
REPLICAS_OPTION = typer.Option(2, "--replicas", help="engine replicas with --ray")


@app.command()
def data(
    generator: str = typer.Option(..., help=f"one of {sorted(ds.GENERATORS)}"),
    n: int = typer.Option(200, help="number of examples"),
    seed: int = typer.Option(0),
    options: str = typer.Option("", help="generator options, key=value,... (e.g. digits=1)"),
    out: Path = typer.Option(..., help="output JSONL"),
) -> None:
    """Write a generated dataset as ttc JSONL."""
    with _inputs():
        _choice("--generator", generator, tuple(sorted(ds.GENERATORS)))
        _int("--n", n, 1, 1_000_000)
        _int("--seed", seed, 0)
        _out_path("--out", out)
        if options and ":" in options:
            _fail(f"--options: expected key=value,..., got {options!r}")
        exs = load_dataset(f"generator:{generator}:{n}:{seed}" + (f":{options}" if options else ""))
        ds.save_jsonl(exs, out)
    typer.echo(f"wrote {len(exs)} examples to {out}")


def _dataset(dataset: str, limit: int | None, suffix: str | None) -> tuple[list[ds.Example], str, str, str]:
    """(the first ``limit`` examples, the content hash of the whole dataset, the prompt
    suffix: ``suffix`` or else the dataset's template, the dataset's grader name)."""
    bench = load_benchmark(dataset)
    exs = bench.examples
    return exs[:limit] if limit else exs, dataset_hash(exs), bench.suffix if suffix is None else suffix, bench.grader


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
    out: Path = typer.Option(..., help="results JSONL (appended; a rerun with the same settings resumes)"),
    concurrency: int = typer.Option(4, help="questions in flight"),
    seed: int = typer.Option(0),
    prompt_style: str = typer.Option("plain", help="plain, cot or direct"),
    suffix: str | None = typer.Option(
        None, help="text appended to every question (default: the dataset's prompt template, e.g. GSM8K's "
        "'end with The answer is N.', MATH's boxed answer; none for plain files and generators)"
    ),
    limit: int | None = typer.Option(None, help="only the first N questions"),
    kv_cache_gib: float = typer.Option(2.0),
    max_model_len: int = typer.Option(2048),
    dtype: str = DTYPE_OPTION,
    request_timeout: float | None = REQUEST_TIMEOUT_OPTION,
    config_file: Path | None = typer.Option(
        None, "--config", help="YAML/TOML file of named strategy configs; --strategy is then a label of it"
    ),
    ray: str | None = RAY_OPTION,
    replicas: int = REPLICAS_OPTION,
) -> None:
    """Run a strategy over a dataset; progress bar; JSONL results; resumable."""
    from ttc.sync import run_sync

    from .metrics import summarize_runs
    from .runner import check_resume, run_dataset, run_header

    with _inputs():
        _int("--concurrency", concurrency, 1, 4096)
        _int("--seed", seed, 0)
        _int("--limit", limit, 1)
        _choice("--prompt-style", prompt_style, PROMPT_STYLES)
        opts = engine_options(engine, model, base_url, tokenizer, dtype, request_timeout, kv_cache_gib,
                              max_model_len)
        _out_path("--out", out)
        exs, digest, suffix, grader = _dataset(dataset, limit, suffix)
        make = _strategy_maker(strategy, config_file, ds.extractor_for(grader))
        first = make()  # a bad spec or config fails here, before any engine starts
        b = parse_budget(budget)
        config = {"dataset": dataset, "dataset_hash": digest, "limit": limit, "grader": grader, **opts}
        check_resume(out, run_header(first, b, seed=seed, prompt_style=prompt_style, suffix=suffix,
                                     config=config, spec=strategy), kind="run", warn=_warn)
    eng = _start_engine(opts, model, base_url, tokenizer, request_timeout, kv_cache_gib, max_model_len,
                        ray=ray, replicas=replicas)
    try:
        rows = run_sync(run_dataset(make, exs, eng, b, out,
                                    concurrency=concurrency, seed=seed, prompt_style=prompt_style,
                                    suffix=suffix, spec=strategy, config=config, grade=answer_grader(grader)))
    except RuntimeError as e:  # some questions failed; the rest are saved
        _fail(e, code=1)
    finally:
        _close(eng)
    s = summarize_runs(rows)
    typer.echo(
        f"{strategy}: accuracy {s['accuracy']:.3f} [{s['accuracy_lo']:.3f}, {s['accuracy_hi']:.3f}] "
        f"on {s['n']} questions; completion tokens/question {s['completion_tokens']:.1f}; results in {out}"
    )


def _strategy_maker(strategy: str, config_file: Path | None, extractor: str | None = None) -> Any:
    """A function building a fresh strategy per question: from the spec, or from the
    ``--config`` file's config labelled ``strategy``; reading answers with the dataset's
    ``extractor`` unless the spec or config names one."""
    if config_file is None:
        spec = with_extractor(strategy, extractor)
        return lambda: build_strategy(spec)
    _in_file("--config", config_file)
    described = registry.describe(registry.load_config(config_file, strategy))  # errors name file, label, key
    described = with_extractor_config(described, extractor)
    return lambda: registry.build(described)


@app.command()
def record(
    dataset: str = typer.Option(..., help="FILE, gsm8k:FILE, ... or generator:NAME:N:SEED[:k=v]"),
    k: int = typer.Option(32, help="samples per question"),
    out: Path = typer.Option(..., help="pool file (.jsonl or .jsonl.gz); a rerun with the same settings resumes"),
    engine: str = typer.Option("vllm"),
    model: str | None = typer.Option(None),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible base URL (--engine openai)"),
    tokenizer: str | None = typer.Option(None, help="tokenizer folder or 'bundled' (--engine openai)"),
    temperature: float = typer.Option(0.8, help="0 to 2"),
    top_p: float = typer.Option(1.0, help="in (0, 1]"),
    max_tokens: int = typer.Option(64),
    logprobs: int = typer.Option(5, help="top-k logprobs stored per token (0-20)"),
    prompt_style: str = typer.Option("plain", help="plain, cot or direct"),
    suffix: str | None = typer.Option(
        None, help="text appended to every question (default: the dataset's prompt template, e.g. GSM8K's "
        "'end with The answer is N.', MATH's boxed answer; none for plain files and generators)"
    ),
    concurrency: int = typer.Option(8, help="questions in flight"),
    limit: int | None = typer.Option(None, help="only the first N questions"),
    kv_cache_gib: float = typer.Option(2.0),
    max_model_len: int = typer.Option(2048),
    dtype: str = DTYPE_OPTION,
    request_timeout: float | None = REQUEST_TIMEOUT_OPTION,
    ray: str | None = RAY_OPTION,
    replicas: int = REPLICAS_OPTION,
) -> None:
    """Record a pool of K samples per question (with logprobs) for offline replay."""
    from ttc.sync import run_sync

    from .pool import check_pool_resume, pool_header, record_pool, recording_params

    with _inputs():
        _int("--k", k, 1, 100_000)
        _num("--temperature", temperature, 0.0, 2.0)
        _num("--top-p", top_p, 0.0, 1.0, lo_open=True)
        _int("--max-tokens", max_tokens, 1, 10_000_000)
        _int("--logprobs", logprobs, 0, 20)
        _int("--concurrency", concurrency, 1, 4096)
        _int("--limit", limit, 1)
        _choice("--prompt-style", prompt_style, PROMPT_STYLES)
        opts = engine_options(engine, model, base_url, tokenizer, dtype, request_timeout, kv_cache_gib,
                              max_model_len)
        _out_path("--out", out)
        exs, digest, suffix, grader = _dataset(dataset, limit, suffix)
        params = recording_params(SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens),
                                  logprobs)
        extra = {"dataset": dataset, "dataset_hash": digest, "grader": grader}
        if opts["engine"] == "vllm":
            extra["dtype"] = dtype
            if model is None:
                from ttc.models import bundled_model_path

                model_name: str | None = str(bundled_model_path())
            else:
                model_name = str(model)
        else:
            model_name = model or "default"
        check_pool_resume(out, pool_header(opts["engine"], model_name, params, k=k, logprobs=logprobs,
                                           prompt_style=prompt_style, suffix=suffix, extra=extra), _warn)
    eng = _start_engine(opts, model, base_url, tokenizer, request_timeout, kv_cache_gib, max_model_len,
                        ray=ray, replicas=replicas)
    try:
        pool = run_sync(record_pool(eng, exs, out, k=k, params=params, logprobs=logprobs,
                                    prompt_style=prompt_style, suffix=suffix, concurrency=concurrency,
                                    header_extra=extra))
    except ValueError as e:
        _fail(e)
    finally:
        _close(eng)
    tokens = sum(g.num_tokens for q in pool.questions for g in q.samples)
    typer.echo(f"pool {out}: {len(pool)} questions x {pool.k} samples, {tokens} completion tokens")


def parse_budgets(text: str) -> list[int]:
    """``--budgets``: comma-separated integers >= 1, each once."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise ValueError(f"--budgets: expected comma-separated integers >= 1 (e.g. 1,2,4,8), got {text!r}")
    out: list[int] = []
    for p in parts:
        try:
            b = int(p, 10)
        except ValueError:
            raise ValueError(f"--budgets: {p!r} is not an integer") from None
        if b < 1:
            raise ValueError(f"--budgets: {b} is not >= 1")
        if b in out:
            raise ValueError(f"--budgets: {b} given twice")
        out.append(b)
    return out


@app.command()
def replay(
    pool: Path = typer.Option(..., help="recorded pool"),
    strategies: list[str] = typer.Option(
        ..., "--strategies", "-s", help="strategy spec (repeat, or ';'-separated); B = the budget"
    ),
    budgets: str = typer.Option("1,2,4,8,16,32", help="budgets: generations per question"),
    seeds: int = typer.Option(4, help="replays (draw orders) per question"),
    out: Path = typer.Option(..., help="replay results JSONL (a rerun with the same pool and seeds resumes)"),
    limit: int | None = typer.Option(None, help="only the first N questions"),
    estimators: bool = typer.Option(True, help="also write pass@k and expected best-of-k rows"),
    allow_partial: bool = typer.Option(
        False, help="replay a damaged pool on the questions that can be read (says how many)"
    ),
) -> None:
    """Evaluate strategies and stopping rules offline on a pool over a grid of budgets."""
    from ttc.sync import run_sync

    from .pool import Pool
    from .runner import check_resume, pool_digest, replay_grid, replay_header

    with _inputs():
        _int("--seeds", seeds, 1, 100_000)
        _int("--limit", limit, 1)
        _in_file("--pool", pool)
        _out_path("--out", out)
        grid = parse_budgets(budgets)
        specs = [s.strip() for item in strategies for s in item.split(";") if s.strip()]
        if not specs:
            _fail("--strategies: no strategy spec given")
        for spec in specs:
            entry = strategy_entry(spec)
            if not entry.replay:
                _fail(f"--strategies: {spec!r}: {entry.name} cannot replay on a pool: {entry.why_not_replay}; "
                      f"use ttc run")
            for b in grid:
                build_strategy(spec, b)
        p = Pool.load(pool, allow_partial=allow_partial)
        extractor = ds.extractor_for(p.grader)
        if p.damage:
            typer.echo(
                f"warning: {pool} is damaged ({len(p.damage)} record(s) skipped, first: "
                f"{p.damage[0].describe()}); kept {len(p)} readable question(s)", err=True,
            )
        if not p.questions:
            _fail(f"--pool: {pool} has no readable questions")
        config = {"pool": str(pool), "pool_hash": pool_digest(p)}
        check_resume(out, replay_header(p, seeds=seeds, config=config), kind="replay", warn=_warn)
        if limit:
            p.questions = p.questions[:limit]
    try:
        rows = run_sync(replay_grid(p, specs, grid, seeds=seeds, out=out, estimators=estimators,
                                    build=lambda spec, b: build_strategy(with_extractor(spec, extractor), b),
                                    config=config))
    except ValueError as e:
        _fail(e)
    typer.echo(f"wrote {len(rows)} rows to {out}")


@app.command()
def report(
    results: Path = typer.Argument(..., help="replay.jsonl (ttc replay) or results.jsonl (ttc run)"),
    png: Path | None = typer.Option(None, help="accuracy-vs-tokens plot with Pareto front"),
    md: Path | None = typer.Option(None, help="markdown table"),
    x: str = typer.Option("completion_tokens", help=f"cost axis: {', '.join(REPORT_X)}"),
    title: str | None = typer.Option(None),
) -> None:
    """Tables and plots from replay or run results."""
    from .metrics import load_results
    from .plots import markdown_table, plot_pareto, table_rows

    with _inputs():
        _choice("--x", x, REPORT_X)
        _in_file("RESULTS", results)
        for name, path in (("--png", png), ("--md", md)):
            if path is not None:
                _out_path(name, path)
        rows = load_results(results)
        table = table_rows(rows)
    text = markdown_table(table, x=x)
    typer.echo(text)
    if md:
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(text + "\n")
    if png:
        plot_pareto(table, png, x=x, title=title or f"accuracy vs {x.replace('_', ' ')} ({results.name})")
        typer.echo(f"plot: {png}")


@app.command()
def strategies(
    kind: str | None = typer.Option(None, help=f"only this kind: {', '.join(registry.KINDS)}"),
    json_out: bool = typer.Option(False, "--json", help="everything the registry knows, as JSON"),
) -> None:
    """The registered names: kind, aliases, whether they replay on a pool, what they are."""
    import json

    with _inputs():
        if kind is not None:
            _choice("--kind", kind, tuple(registry.KINDS))
        info = registry.describe_registry(kind)
    if json_out:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    typer.echo("| name | kind | aliases | replay | what |\n|---|---|---|---|---|")
    for name, e in info.items():
        typer.echo(f"| {name} | {e['kind']} | {', '.join(e['aliases']) or '-'} | {'yes' if e['replay'] else 'no'} "
                   f"| {e['doc'][:100]} |")


@app.command()
def bench(
    dataset: str = typer.Option(..., help="gsm8k:FILE, math500:FILE, aime:FILE, amc:FILE, hf:NAME[:CONFIG]:SPLIT, "
                                          "FILE or generator:NAME:N:SEED"),
    strategy: list[str] = typer.Option(
        [], "--strategy", "-s", help="strategy spec (repeat); with --config, a label of the file"
    ),
    config_file: Path | None = typer.Option(
        None, "--config", help="YAML/TOML file of named strategy configs (all its labels unless --strategy)"
    ),
    budgets: str | None = typer.Option(
        None, help="completion-token budgets per question, comma-separated (e.g. 256,512); default: unlimited"
    ),
    out: Path = typer.Option(..., help="output folder: runs/*.jsonl (resumable), results.md, results.json, "
                                       "pareto.png"),
    limit: int | None = typer.Option(None, help="only the first N questions"),
    engine: str = typer.Option("vllm", help="vllm (in-process, bundled model) or openai"),
    model: str | None = typer.Option(None, help="model folder (vllm) or served name (openai)"),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible base URL (--engine openai)"),
    tokenizer: str | None = typer.Option(None, help="tokenizer folder or 'bundled' (--engine openai)"),
    concurrency: int = typer.Option(4, help="questions in flight"),
    seed: int = typer.Option(0),
    kv_cache_gib: float = typer.Option(2.0),
    max_model_len: int = typer.Option(2048),
    dtype: str = DTYPE_OPTION,
    request_timeout: float | None = REQUEST_TIMEOUT_OPTION,
    title: str | None = typer.Option(None, help="plot title"),
    ray: str | None = RAY_OPTION,
    replicas: int = REPLICAS_OPTION,
) -> None:
    """Several strategies at matched completion-token budgets over one benchmark on one
    engine: a progress bar per strategy, resumable, a results table (markdown) and a
    Pareto plot (PNG) in --out."""
    from ttc.sync import run_sync

    from .specs import load_benchmark
    from .sweep import check_sweep_resume, run_config, run_sweep, sweep_items

    with _inputs():
        _int("--concurrency", concurrency, 1, 4096)
        _int("--seed", seed, 0)
        _int("--limit", limit, 1)
        opts = engine_options(engine, model, base_url, tokenizer, dtype, request_timeout, kv_cache_gib,
                              max_model_len)
        if out.exists() and not out.is_dir():
            _fail(f"--out: {str(out)!r} is a file; give a folder")
        _out_path("--out", out / "results.md")
        if config_file is not None:
            _in_file("--config", config_file)
        grid: list[int | None] = list(parse_budgets(budgets)) if budgets is not None else [None]
        b = load_benchmark(dataset)
        items = sweep_items(strategy, grid, config_file, extractor=b.extractor)
        check_sweep_resume(b, items, out, seed=seed, config=run_config(b, limit, opts))
    eng = _start_engine(opts, model, base_url, tokenizer, request_timeout, kv_cache_gib, max_model_len,
                        ray=ray, replicas=replicas)
    try:
        run_sync(run_sweep(b, items, eng, out, limit=limit, concurrency=concurrency, seed=seed, config=opts,
                           echo=typer.echo, title=title))
    except RuntimeError as e:  # some questions failed; the rest are saved
        _fail(e, code=1)
    finally:
        _close(eng)
    typer.echo((out / "results.md").read_text())
    typer.echo(f"table: {out / 'results.md'}; plot: {out / 'pareto.png'}; runs: {out / 'runs'}")


app.command("serve")(serve_command)  # ttc.serve.cli: the OpenAI-compatible server


def _close(engine: Any) -> None:
    close = getattr(engine, "close", None)
    if callable(close):
        close()
        return
    from ttc.sync import run_sync

    run_sync(engine.aclose())


def _stop_like_ctrl_c_on_sigterm() -> None:
    """SIGTERM (``kill``, a scheduler stopping the job) ends a command as Ctrl-C does: the
    ``KeyboardInterrupt`` unwinds through the ``finally`` blocks that close the engine, so
    an in-process vLLM engine's engine-core and worker processes exit with the command
    instead of outliving it. Rows already written stay; every command resumes."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def main() -> None:
    _stop_like_ctrl_c_on_sigterm()
    app()


if __name__ == "__main__":
    sys.exit(main())
