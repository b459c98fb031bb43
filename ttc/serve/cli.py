"""The ``ttc serve`` command: the OpenAI-compatible server on uvicorn.

Backends: no engine option serves the bundled model (SmolLM2-135M-Instruct) through the
in-process vLLM engine; ``--engine vllm --model DIR`` a local model the same way;
``--upstream URL`` (repeatable: replicas of one model, routed with the OpenAI engine's
least-in-flight choice and cool-down of failing endpoints) fronts OpenAI-compatible servers.
``--config FILE`` (YAML/TOML, :func:`ttc.registry.load_config`) names the strategies offered;
without it: ``greedy``, ``sc`` and ``majority`` (plus ``passthrough`` always).

Safety: binds 127.0.0.1 by default; binding any other address needs ``--api-key``. Keys
(``--api-key``, repeatable, or ``TTC_SERVE_API_KEYS`` comma-separated) are never logged,
nor are prompts; uvicorn's access log (method, path, status) is off unless asked.
Every check runs before an engine starts; a bad option ends with ``error: ...`` and exit 2.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, NoReturn

import typer

ENGINES = ("vllm", "openai")


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def upstream_model(url: str, timeout: float = 10.0) -> str:
    """The first model id an OpenAI-compatible server lists (exit 2 when it does not answer)."""
    import httpx

    try:
        r = httpx.get(url.rstrip("/") + "/models", timeout=timeout)
        r.raise_for_status()
        return str(r.json()["data"][0]["id"])
    except (httpx.HTTPError, KeyError, IndexError, ValueError, TypeError) as e:
        _fail(f"--upstream: cannot list the models of {url} ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
              "is the server up? (or give --upstream-model)")


def _budget(text: str | None, option: str) -> Any:
    from .errors import ApiError
    from .limits import parse_budget_text

    if text is None:
        return None
    try:
        return parse_budget_text(text, option)
    except ApiError as e:
        _fail(e.message)


def _engine(engine: str | None, model: str | None, upstream: list[str], upstream_model_name: str | None,
            tokenizer: str | None, dtype: str, kv_cache_gib: float, max_model_len: int, max_concurrent: int,
            ray: str | None = None, replicas: int = 1) -> Any:
    """The engine the options describe; with ``ray``, ``replicas`` of it on Ray (``local``
    starts a local instance, ``auto`` joins a running cluster, else a cluster address)."""
    from ttc.models import bundled_model_path

    if upstream:
        name = upstream_model_name or upstream_model(upstream[0])
        if tokenizer == "bundled":
            tokenizer = str(bundled_model_path())
        spec: dict[str, Any] = {"kind": "openai", "base_url": upstream, "model": name, "tokenizer": tokenizer,
                                "max_concurrency": max(64, max_concurrent)}
    else:
        spec = {"kind": "vllm", "model": str(model or bundled_model_path()), "kv_cache_gib": kv_cache_gib,
                "max_model_len": max_model_len, "dtype": dtype}
    if ray is not None:
        from ttc.engines import RayEngine

        return RayEngine(spec, replicas, address=None if ray == "local" else ray)
    from ttc.engines.specs import build_engine

    return build_engine(spec)


def _check(host: str, port: int, api_key: list[str], engine: str | None, model: str | None, upstream: list[str],
           tokenizer: str | None, config: Path | None) -> str:
    if not _loopback(host) and not api_key:
        _fail(f"--host {host}: binding beyond this machine needs --api-key (clients then send "
              "'Authorization: Bearer KEY')")
    if not 0 <= port <= 65535:
        _fail(f"--port: expected 0-65535, got {port}")
    if any(not k.strip() for k in api_key):
        _fail("--api-key: empty key")
    kind = engine or ("openai" if upstream else "vllm")
    if kind not in ENGINES:
        _fail(f"--engine: expected one of {list(ENGINES)}, got {kind!r}")
    if kind == "openai" and not upstream:
        _fail("--engine openai: give the server with --upstream URL")
    if kind == "vllm" and upstream:
        _fail("--upstream: fronts an OpenAI-compatible server; it does not go with --engine vllm")
    if upstream and model is not None:
        _fail("--model: a local model folder (--engine vllm); for an upstream's model name use --upstream-model")
    if model is not None and not Path(model).expanduser().exists():
        _fail(f"--model: no such folder {model!r}")
    if tokenizer is not None and not upstream:
        _fail("--tokenizer: applies to --upstream only")
    if config is not None and not config.is_file():
        _fail(f"--config: no such file {str(config)!r}")
    return kind


def serve(
    host: str = typer.Option("127.0.0.1", help="address to bind (beyond loopback needs --api-key)"),
    port: int = typer.Option(8000, help="port (0: any free port)"),
    config: Path | None = typer.Option(None, help="YAML/TOML file of named strategies: each label is a model id"),
    allow_specs: bool = typer.Option(False, help="let requests name ad-hoc strategies in ttc.strategy"),
    engine: str | None = typer.Option(None, help="vllm (in-process; default) or openai (needs --upstream)"),
    model: str | None = typer.Option(None, help="model folder for --engine vllm (default: the bundled model)"),
    upstream: list[str] = typer.Option([], help="OpenAI-compatible base URL to front (repeat for replicas)"),
    upstream_model_name: str | None = typer.Option(None, "--upstream-model", help="model name on the upstream "
                                                   "(default: the first it lists)"),
    tokenizer: str | None = typer.Option(None, help="tokenizer folder (or 'bundled') for exact prompt counts "
                                         "with --upstream"),
    dtype: str = typer.Option("auto", help="model dtype for --engine vllm"),
    kv_cache_gib: float = typer.Option(2.0, help="KV cache size for --engine vllm on CPU"),
    max_model_len: int = typer.Option(2048, help="context length for --engine vllm"),
    api_key: list[str] = typer.Option([], help="accepted Bearer key (repeatable; also TTC_SERVE_API_KEYS)"),
    key_budget: str | None = typer.Option(None, help="budget per API key per period, e.g. total_tokens=1000000"),
    key_budget_period: float = typer.Option(86_400.0, help="seconds after which a key's budget renews"),
    max_request_budget: str | None = typer.Option(None, help="the most one request may ask, e.g. total_tokens=50000"),
    max_body_bytes: int = typer.Option(1_000_000, help="largest request body"),
    max_messages: int = typer.Option(256, help="most messages in a conversation"),
    max_tokens: int = typer.Option(4096, help="largest max_tokens a request may ask"),
    max_n: int = typer.Option(8, help="largest n a request may ask"),
    max_concurrent: int = typer.Option(64, help="requests running at once"),
    max_queue: int = typer.Option(256, help="requests waiting beyond those (then 503 + Retry-After)"),
    keepalive: float = typer.Option(1.0, help="seconds between SSE keep-alive comments while a strategy samples"),
    access_log: bool = typer.Option(False, help="uvicorn's access log (method, path, status; never bodies)"),
    log_level: str = typer.Option("warning", help="uvicorn log level"),
    ray: str | None = typer.Option(None, "--ray", help="run --replicas copies of the engine on Ray: 'local', "
                                   "'auto' (join a running cluster) or a cluster address"),
    replicas: int = typer.Option(2, "--replicas", help="engine replicas with --ray"),
) -> None:
    """Serve strategies behind the OpenAI API (chat and completions, streaming, budgets, metrics)."""
    keys = list(api_key) + [k for k in os.environ.get("TTC_SERVE_API_KEYS", "").split(",") if k.strip()]
    _check(host, port, keys, engine, model, upstream, tokenizer, config)
    if ray is not None and (not ray.strip() or not 1 <= replicas <= 4096):
        _fail("--ray: give 'local', 'auto' or a cluster address" if not ray.strip()
              else f"--replicas: expected 1-4096, got {replicas}")
    import uvicorn

    from ttc.budget import Budget

    from .app import create_app
    from .catalog import Catalog
    from .limits import ServeLimits

    try:
        limits = ServeLimits(max_body_bytes=max_body_bytes, max_messages=max_messages, max_tokens=max_tokens,
                             default_max_tokens=min(256, max_tokens), max_n=max_n,
                             max_request_budget=_budget(max_request_budget, "--max-request-budget") or Budget(),
                             max_concurrent=max_concurrent, max_queue=max_queue)
        kb = _budget(key_budget, "--key-budget")
        catalog = Catalog.from_config(str(config), allow_specs=allow_specs) if config else Catalog(allow_specs=allow_specs)
        if kb is not None:
            from .limits import KeyBudgets

            KeyBudgets(kb, key_budget_period)  # checked before the engine starts
    except (ValueError, TypeError) as e:
        _fail(" ".join(str(e).split()))
    eng = _engine(engine, model, upstream, upstream_model_name, tokenizer, dtype, kv_cache_gib, max_model_len,
                  max_concurrent, ray=ray, replicas=replicas)
    app = create_app(eng, catalog, limits=limits, api_keys=keys, key_budget=kb, key_budget_period=key_budget_period,
                     keepalive=keepalive, close_engine=True)
    typer.echo(f"ttc serve: http://{host}:{port}/v1 models {catalog.model_ids()} engine {eng.name}", err=True)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                                  timeout_graceful_shutdown=5)).run()
