"""The OpenAI-compatible ASGI app: ``create_app(engine, strategies)`` (FastAPI).

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``
(``passthrough`` and every configured strategy), ``GET /health`` (open, for liveness
probes), ``GET /metrics`` (Prometheus text, :mod:`ttc.serve.metrics`; behind the key when
keys are set, so a scraper sends it as a bearer token). A request goes through, in order: the API key
(``Authorization: Bearer``, when keys are set: 401 otherwise), the body (at most
``max_body_bytes``: 413; JSON: 400), the fields (:mod:`ttc.serve.schemas`: 400 naming the
field), the model (a configured strategy, ``passthrough``, or an ad-hoc ``ttc.strategy`` when
allowed), the per-request budget and the key's budget (one call's worst case must fit:
400 for the request's own budget, 429 with the reset time for the key's), then the bounded
queue (503 with ``Retry-After`` when full). Then the strategy runs exactly as in the library
(:mod:`ttc.serve.calls`); a non-streamed request whose client disconnects is cancelled
(checked every ``disconnect_poll`` seconds), and so is a stream
(:mod:`ttc.serve.streaming`). Keys and prompts are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ttc.budget import Budget, BudgetExhausted, Meter
from ttc.engine import Engine, EngineError
from ttc.strategy import Strategy
from ttc.types import SamplingParams, StrategyResult, Usage

from .calls import Call, run
from .catalog import PASSTHROUGH, Catalog, Passthrough, single_trace
from .convert import chat_prompt, completion_prompt, passthrough_params, sampling_overrides
from .errors import ApiError, bad_request, dotted, first_error
from .gate import Gate
from .limits import KeyBudgets, ServeLimits, key_digest, key_refusal, request_budget
from .metrics import ServeMetrics
from .responses import Shape
from .schemas import ChatRequest, CompletionRequest, TTCOptions, unsupported
from .streaming import Events, SSEResponse

log = logging.getLogger("ttc.serve")
ANONYMOUS = "anonymous"


class Disconnected(Exception):
    """The client went away before the answer was ready."""


def _need(w: Usage) -> dict[str, float]:
    return {"completion_tokens": w.completion_tokens, "total_tokens": w.prompt_tokens + w.completion_tokens,
            "generations": w.generations, "calls": w.calls}


def check_fits(meter: Meter, worst: Usage) -> None:
    """Raise :class:`BudgetExhausted` naming the first limit of ``meter``'s chain that cannot hold
    ``worst`` now (nothing is held)."""
    need = _need(worst)
    for k, left in meter.remaining().items():
        if k == "wall_seconds":
            if left <= 0:
                raise BudgetExhausted(k, 0, 0)
        elif need[k] > left:
            raise BudgetExhausted(k, need[k], max(left, 0))


class Server:
    """Everything one app holds: engine, catalog, limits, key meters, metrics, queue."""

    def __init__(self, engine: Engine, catalog: Catalog, limits: ServeLimits, api_keys: Sequence[str],
                 keys: KeyBudgets | None, keepalive: float, disconnect_poll: float):
        self.engine = engine
        self.catalog = catalog
        self.limits = limits
        self.key_digests = [key_digest(k) for k in api_keys]
        self.keys = keys
        self.keepalive = keepalive
        self.disconnect_poll = disconnect_poll
        self.metrics = ServeMetrics()
        self.gate = Gate(limits.max_concurrent, limits.max_queue, limits.retry_after, self.metrics)

    # -- checks ---------------------------------------------------------------------------
    def auth(self, request: Request) -> str:
        """The caller's key digest (``anonymous`` on a server without keys); 401 otherwise."""
        if not self.key_digests:
            return ANONYMOUS
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key")
        digest = key_digest(token.strip())
        if not any(hmac.compare_digest(digest, d) for d in self.key_digests):
            raise ApiError(401, "invalid API key", code="invalid_api_key")
        return digest

    async def read_json(self, request: Request) -> dict[str, Any]:
        cap = self.limits.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            raise ApiError(413, f"request body: {int(length)} bytes, more than this server takes ({cap})",
                           code="body_too_large")
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > cap:
                raise ApiError(413, f"request body: more than this server takes ({cap} bytes)", code="body_too_large")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
            raise ApiError(400, f"request body: malformed JSON{where} ({getattr(e, 'msg', e)})",
                           code="invalid_json") from None
        if not isinstance(data, dict):
            raise bad_request(f"request body: expected a JSON object, got {type(data).__name__}")
        return data

    # -- preparing a call -----------------------------------------------------------------
    def parse(self, data: dict[str, Any], endpoint: str) -> ChatRequest | CompletionRequest:
        cls = ChatRequest if endpoint == "chat" else CompletionRequest
        try:
            req = cls.model_validate(data)
        except ValidationError as e:
            err = first_error(e.errors())
            param = dotted(err["loc"]) or None
            msg = "unknown field" if err["type"] == "extra_forbidden" else str(err["msg"]).removeprefix("Value error, ")
            raise bad_request(f"{param}: {msg}" if param else msg, param) from None
        bad = unsupported(req)
        if bad is not None:
            raise bad_request(f"{bad[0]}: {bad[1]}", bad[0], "unsupported_parameter")
        if req.n > self.limits.max_n:
            raise bad_request(f"n: {req.n} is more than this server allows ({self.limits.max_n})", "n")
        return req

    async def prepare(self, request: Request, data: dict[str, Any], endpoint: str, digest: str) -> Call:
        req = self.parse(data, endpoint)
        opts = req.ttc or TTCOptions()
        label, strategy = self.catalog.resolve(req.model, opts.strategy)
        prompt = chat_prompt(req, self.limits) if isinstance(req, ChatRequest) else completion_prompt(req)
        if strategy is None:
            params = passthrough_params(req, self.limits)
            strategy = Passthrough(params)
        else:
            strategy = self.catalog.with_params(strategy, sampling_overrides(req, self.limits))
            own = getattr(strategy, "params", None)
            params = own if isinstance(own, SamplingParams) else SamplingParams()
        passthrough = label == PASSTHROUGH
        live = self._live(req, passthrough, strategy, params)
        budget = request_budget(opts.budget, request.headers.get("x-ttc-budget"), self.limits.max_request_budget)
        call = Call(endpoint=endpoint, model=req.model, label=label, strategy=strategy, passthrough=passthrough,
                    prompt=prompt, meter=Meter(budget, name="request"), seed=req.seed, n=req.n,
                    return_samples=opts.return_samples, progress=opts.progress,
                    include_usage=bool(req.stream_options and req.stream_options.include_usage), live=live,
                    stream=req.stream)
        if self.keys is not None:
            key_meter, resets = self.keys.meter(digest)
            call.meter = key_meter.child(budget, name="request")
            call.key = (self.keys, digest, resets)
        await self._precheck(call, params.model_copy(update={"n": req.n if passthrough else 1}), budget)
        return call

    def _live(self, req: ChatRequest | CompletionRequest, passthrough: bool, strategy: Strategy,
              params: SamplingParams) -> SamplingParams | None:
        if not req.stream:
            return None
        if passthrough:
            if req.n > 1:
                raise bad_request("n: a streamed passthrough takes n=1 (or stream=false for n choices)", "n")
            return params
        return single_trace(strategy)

    async def _precheck(self, call: Call, probe: SamplingParams, budget: Budget) -> None:
        """One call's worst case must fit the request's budget (else 400) and the key's (else 429)."""
        field = "messages" if call.endpoint == "chat" else "prompt"
        try:
            self.engine.check(call.prompt, probe)
            worst = await self.engine.worst_case(call.prompt, probe)
        except (ValueError, EngineError) as e:
            msg = " ".join(str(e).split())
            named = re.match(r"prompt\.(tools|tool_choice)\b", msg)
            if named:
                raise bad_request(msg.removeprefix("prompt."), named.group(1), "unsupported_parameter") from None
            raise bad_request(f"{field}: {msg}", field) from None
        try:
            check_fits(Meter(budget), worst)
        except BudgetExhausted as e:
            self.metrics.refusals.labels("request", e.limit).inc()
            raise bad_request(f"ttc.budget.{e.limit}: the request's budget cannot afford one call (worst case "
                              f"{e.needed:g}, budget {e.available:g}: {worst.prompt_tokens} prompt tokens + "
                              f"{probe.n} x max_tokens {probe.max_tokens}); raise it or lower max_tokens",
                              f"ttc.budget.{e.limit}", "budget_too_small") from None
        if call.key is not None and call.meter.parent is not None:
            try:
                check_fits(call.meter.parent, worst)
            except BudgetExhausted as e:
                self.metrics.refusals.labels("key", e.limit).inc()
                raise key_refusal(e, call.key[2], call.key[0].clock()) from None

    # -- running ----------------------------------------------------------------------------
    async def handle(self, request: Request, endpoint: str) -> Response:
        t0 = time.monotonic()
        label = "unknown"
        try:
            digest = self.auth(request)
            call = await self.prepare(request, await self.read_json(request), endpoint, digest)
            label = call.label
            await self.gate.enter()
        except ApiError as e:
            self._count(label, endpoint, e.status, t0, False)
            return e.response()
        shape = Shape(endpoint, call.model)
        if call.stream:
            events = Events(call, self.engine, shape, keepalive=self.keepalive,
                            on_done=lambda r, status: self._done(call, r, status, t0, True))
            return SSEResponse(events)
        result: StrategyResult | None = None
        status = 200
        try:
            result = await self._watched(call, request)
            choices = call.choices(result)
            if not choices:
                err = call.refusal(result)
                status = err.status
                return err.response()
            return JSONResponse(shape.full(choices, result.usage, call.ttc(result)))
        except Disconnected:
            status = 499
            return Response(status_code=499)
        except ValueError as e:
            status = 400
            return bad_request(f"request: {' '.join(str(e).split())}").response()
        except Exception as e:  # noqa: BLE001 - answered in the OpenAI shape, logged without the prompt
            log.error("request failed: %s", type(e).__name__)
            status = 500
            return ApiError(500, f"internal error: {type(e).__name__}").response()
        finally:
            self._done(call, result, status, t0, False)

    async def _watched(self, call: Call, request: Request) -> StrategyResult:
        task = asyncio.create_task(run(call, self.engine))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.disconnect_poll)
                if done:
                    return task.result()
                if await request.is_disconnected():
                    raise Disconnected()
        finally:
            if not task.done():
                task.cancel()  # every engine request of the call is aborted

    def _count(self, label: str, endpoint: str, status: int, t0: float, stream: bool) -> None:
        self.metrics.requests.labels(label, endpoint, str(status)).inc()
        self.metrics.latency.labels(label, endpoint, str(stream).lower()).observe(time.monotonic() - t0)

    def _done(self, call: Call, result: StrategyResult | None, status: int, t0: float, stream: bool) -> None:
        self.gate.leave()
        self._count(call.label, call.endpoint, status, t0, stream)
        if result is not None:
            self.metrics.result(call.label, result)
            if status == 429:
                scope = "key" if call.key is not None and "key" in str(call.refusal(result).code) else "request"
                self.metrics.refusals.labels(scope, result.budget_detail or "budget").inc()
        else:
            self.metrics.usage(call.label, dict(call.meter.by_kind))


def create_app(
    engine: Engine,
    strategies: Mapping[str, Strategy] | Catalog | None = None,
    *,
    limits: ServeLimits | None = None,
    api_keys: Sequence[str] = (),
    key_budget: Budget | None = None,
    key_budget_period: float = 86_400.0,
    allow_specs: bool = False,
    keepalive: float = 1.0,
    disconnect_poll: float = 0.25,
    close_engine: bool = False,
) -> FastAPI:
    """The ASGI app serving ``strategies`` (label -> strategy; default
    :data:`~ttc.serve.catalog.DEFAULT_SPECS`; or a :class:`~ttc.serve.catalog.Catalog`) on
    ``engine``. ``api_keys``: Bearer keys accepted (none: no key needed). ``key_budget``: a
    budget per key (or for all callers on a server without keys) renewed every
    ``key_budget_period`` seconds. ``allow_specs``: requests may name ad-hoc registry specs in
    ``ttc.strategy``. ``close_engine``: close the engine when the app shuts down."""
    catalog = strategies if isinstance(strategies, Catalog) else Catalog(strategies, allow_specs=allow_specs)
    keys = KeyBudgets(key_budget, key_budget_period) if key_budget is not None else None
    server = Server(engine, catalog, limits or ServeLimits(), api_keys, keys, keepalive, disconnect_poll)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if close_engine:
            await engine.aclose()

    app = FastAPI(title="ttc serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}").response()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await server.handle(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await server.handle(request, "completions")

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        try:
            server.auth(request)
        except ApiError as e:
            return e.response()
        created = int(time.time())
        data = [{"id": m, "object": "model", "created": created, "owned_by": "ttc", "ttc": catalog.describe(m)}
                for m in catalog.model_ids()]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/health")
    async def health() -> Response:
        return JSONResponse({"status": "ok", "engine": engine.name, "running": server.gate.running,
                             "waiting": server.gate.waiting})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        try:  # counts by strategy and key limits are the operator's business: behind the key when keys are set
            server.auth(request)
        except ApiError as e:
            return e.response()
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    return app
