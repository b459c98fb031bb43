"""A fault-injecting OpenAI-compatible HTTP server, for tests and benchmarks.

It serves ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models`` on the
loopback interface with a deterministic fake model (it answers ``"The answer is 4."``
by default, with synthetic logprobs), and injects faults per request, chosen by a
seeded RNG at a configurable rate, or from a fixed script for the first requests:

===================  ==============================================================
``slow``             answers after ``slow_delay`` extra seconds
``drop``             closes the connection without an answer
``429``              ``429 Too Many Requests`` with a ``Retry-After`` header
``500`` / ``503``    server errors
``malformed``        ``200`` with a body that is not JSON
``truncate``         a stream (or a body) cut off mid-way; no final usage
``short``            ``200`` with fewer ``choices`` than ``n`` (half, rounded down),
                     billed for those; a stream that ends before any output
``no_usage``         a normal answer without any ``usage``
``lie_negative``     usage says ``completion_tokens: -100000``
``lie_huge``         usage says ``completion_tokens: 1e30``
``overbill``         ignores ``max_tokens``: 8 tokens more, billed as generated
===================  ==============================================================

The first seven are what an honest server under load does (``FAULT_KINDS`` are the
transport-level ones, ``HONEST_KINDS`` all of them); the last three lie about usage or
ignore the request (``LYING_KINDS``).

Further knobs: a fixed ``latency`` per request (the concurrency benchmark),
``token_delay`` between streamed tokens, ``reject_n`` (400 on ``n > 1``, like a
server without ``n``), ``api_key`` (401 on a wrong key), ``max_model_len`` (vLLM's
context-length 400). It counts requests in flight (and the most at once), total
requests, the faults it injected, and the usage it *billed*: the last usage object it
delivered to the client for each request (the final usage of a complete answer, or
the running usage of a stream, which it sends in every chunk when the client asks for
``stream_options.continuous_usage_stats`` like vLLM does; for a lie, the true count;
for a reply it cut short, what the whole reply would have billed: it ran the request).
A test can therefore assert that an engine's metered usage equals what the server
billed. ``Stats.by_question`` splits that per question (the first user message, or
the raw prompt), with the samples it delivered: the choices of every complete answer
and every stream that sent at least one token, counted apart for continuations of a
partial assistant answer (probes), and the tokens it generated for it whether or not
their usage reached the client (``work_*``). ``Stats.abandoned`` counts slow requests whose
client closed the connection before the answer was ready; ``Stats.events`` logs
``(what, time, open)``: a request's arrival (``open``: how many earlier requests still
had their connection open then) and a client leaving one.

Bounded: it binds 127.0.0.1 only and stops itself after ``lifetime`` seconds.
Use it in-process (``with FaultServer(FaultConfig(...)) as srv: srv.base_url``; it
runs on its own thread and event loop) or as a subprocess
(``python -m ttc.testing.fault_server --port 0 --latency 0.05``, which prints
``READY <base_url>``; ``GET /stats`` returns the counters as JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from .tokens import whitespace_tokens as _tokens  # the same tokens as ScriptedEngine

FAULT_KINDS = ("slow", "drop", "429", "500", "503", "malformed", "truncate")
HONEST_KINDS = (*FAULT_KINDS, "short", "no_usage")
LYING_KINDS = ("lie_negative", "lie_huge", "overbill")
ALL_KINDS = (*HONEST_KINDS, *LYING_KINDS)


@dataclass
class FaultConfig:
    """What the fake server does. ``rate`` of requests get a fault drawn uniformly
    from ``kinds`` (seeded); the first requests take their fault from ``script``
    (``"ok"`` = no fault) before the rate applies."""

    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    script: tuple[str, ...] = ()
    seed: int = 0
    latency: float = 0.0
    slow_delay: float = 1.0
    token_delay: float = 0.0
    retry_after: float = 0.2
    reject_n: bool = False
    api_key: str | None = None
    max_model_len: int = 4096
    answers: tuple[str, ...] = ("The answer is 4.",)
    report_usage: bool = True  # False: answers carry no usage (some servers), so nothing is billed
    lifetime: float = 600.0

    def __post_init__(self) -> None:
        bad = [k for k in (*self.kinds, *self.script) if k not in (*ALL_KINDS, "ok")]
        if bad:
            raise ValueError(f"kinds/script: unknown fault kind(s) {bad}; known: {ALL_KINDS}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate: must be in [0, 1], got {self.rate}")


@dataclass
class Stats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    completed: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    billed_prompt_tokens: int = 0
    billed_completion_tokens: int = 0
    billed_calls: int = 0
    n_requested: list[int] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    abandoned: int = 0
    events: list[tuple[str, float, int]] = field(default_factory=list)
    by_question: dict[str, QuestionStats] = field(default_factory=dict)


@dataclass
class QuestionStats:
    """What the server did for one question (see the module docstring)."""

    requests: int = 0
    faults: int = 0
    billed_prompt_tokens: int = 0
    billed_completion_tokens: int = 0
    billed_calls: int = 0
    # what it generated, whether or not the usage reached the client (no_usage, cut replies);
    # like vLLM it drops the work of a request whose client left before the answer
    work_prompt_tokens: int = 0
    work_completion_tokens: int = 0
    work_calls: int = 0
    samples: int = 0  # choices delivered to requests that start an answer
    probe_samples: int = 0  # choices delivered to continuations of a partial answer

    def work(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.work_prompt_tokens += prompt_tokens
        self.work_completion_tokens += completion_tokens
        self.work_calls += 1



def _logprob(tok: str, j: int) -> float:
    return math.log(0.9 - 0.1 * ((len(tok) + j) % 3))


class _App:
    def __init__(self, cfg: FaultConfig):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.stats = Stats()
        self._answer_i = 0
        self._ids = 0
        self._live: set[Any] = set()

    # -- helpers ----------------------------------------------------------------------
    def _fault(self) -> str:
        i = self.stats.requests - 1
        if i < len(self.cfg.script):
            kind = self.cfg.script[i]
        elif self.cfg.rate and self.rng.random() < self.cfg.rate:
            kind = self.rng.choice(self.cfg.kinds)
        else:
            kind = "ok"
        if kind != "ok":
            self.stats.faults[kind] = self.stats.faults.get(kind, 0) + 1
        return kind

    def _answer(self) -> str:
        a = self.cfg.answers[self._answer_i % len(self.cfg.answers)]
        self._answer_i += 1
        return a

    def _bill(self, usage: dict[str, int] | None, q: QuestionStats | None = None) -> None:
        if usage:
            self.stats.billed_prompt_tokens += usage["prompt_tokens"]
            self.stats.billed_completion_tokens += usage["completion_tokens"]
            self.stats.billed_calls += 1
            if q is not None:
                q.billed_prompt_tokens += usage["prompt_tokens"]
                q.billed_completion_tokens += usage["completion_tokens"]
                q.billed_calls += 1

    def _event(self, what: str, open_others: int = 0) -> None:
        if len(self.stats.events) < 10_000:
            self.stats.events.append((what, time.monotonic(), open_others))

    @staticmethod
    def _told(usage: dict[str, int], kind: str) -> dict[str, Any]:
        """The usage as the server reports it: the truth, or a lie."""
        if kind == "lie_negative":
            return {**usage, "completion_tokens": -100000}
        if kind == "lie_huge":
            return {**usage, "completion_tokens": 1e30}
        return usage

    def _question(self, body: dict[str, Any], chat: bool) -> QuestionStats:
        if chat:
            key = next((str(m.get("content", "")) for m in body.get("messages", []) if m.get("role") == "user"), "")
        else:
            key = str(body.get("prompt", ""))
        return self.stats.by_question.setdefault(key, QuestionStats())

    @staticmethod
    def _is_continuation(body: dict[str, Any], chat: bool) -> bool:
        msgs = body.get("messages") or []
        return bool(chat and msgs and msgs[-1].get("role") == "assistant")

    def _overlong(self, body: dict[str, Any]) -> tuple[list[str], str]:
        """An answer that ignores ``max_tokens``: 8 tokens more than it allows."""
        mt = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        toks: list[str] = []
        while len(toks) < mt + 8:
            toks += _tokens(" " + self._answer())
        return toks[: mt + 8], "length"

    @staticmethod
    def _error(status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None):
        body = {"error": {"message": message, "type": "BadRequestError" if status == 400 else "error",
                          "param": param, "code": status}}
        return web.json_response(body, status=status, headers=headers)

    @staticmethod
    def _prompt_tokens(body: dict[str, Any], chat: bool) -> int:
        if chat:
            return sum(len(_tokens(str(m.get("content", "")))) + 4 for m in body.get("messages", [])) + 2
        return len(_tokens(str(body.get("prompt", "")))) + 1

    def _cut(self, text: str, body: dict[str, Any]) -> tuple[list[str], str]:
        finish = "stop"
        for s in body.get("stop") or []:
            k = text.find(s)
            if k >= 0:
                text = text[:k]
        toks = _tokens(text)
        mt = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        if len(toks) > mt:
            toks, finish = toks[:mt], "length"
        return toks, finish

    def _logprobs(self, toks: list[str], k: int, chat: bool, offset: int = 0) -> dict[str, Any]:
        alts = [f"<alt{m}>" for m in range(1, max(k, 1))]
        lps = [_logprob(t, j + offset) for j, t in enumerate(toks)]
        if chat:
            content = []
            for t, lp in zip(toks, lps):
                top = [{"token": t, "logprob": lp, "bytes": list(t.encode())}]
                top += [{"token": a, "logprob": lp - 2.0 - m, "bytes": list(a.encode())} for m, a in enumerate(alts)]
                content.append({"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": top[:k]})
            return {"content": content, "refusal": None}
        tops = []
        for t, lp in zip(toks, lps):
            d = {t: lp}
            d.update({a: lp - 2.0 - m for m, a in enumerate(alts)})
            tops.append(dict(list(d.items())[: max(k, 1)]))
        return {"tokens": toks, "token_logprobs": lps, "top_logprobs": tops, "text_offset": [0] * len(toks)}

    # -- handlers ---------------------------------------------------------------------
    async def models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "ttc"}]})

    async def stats_handler(self, request: web.Request) -> web.StreamResponse:
        d = asdict(self.stats)
        d.pop("bodies")
        d.pop("events")
        return web.json_response(d)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _complete(self, request: web.Request, chat: bool) -> web.StreamResponse:
        st = self.stats
        st.requests += 1
        st.in_flight += 1
        st.max_in_flight = max(st.max_in_flight, st.in_flight)
        # how many earlier requests still have their connection open as this one arrives
        self._event("arrive", sum(1 for t in self._live if not t.is_closing()))
        transport = request.transport
        if transport is not None:
            self._live.add(transport)
        try:
            return await self._serve(request, chat)
        finally:
            st.in_flight -= 1
            self._live.discard(transport)

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        kind = self._fault()
        if self.cfg.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.cfg.api_key}":
            return self._error(401, "Incorrect API key provided.")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._error(400, "request body is not JSON")
        self.stats.n_requested.append(int(body.get("n") or 1))
        if len(self.stats.bodies) < 1000:
            self.stats.bodies.append(body)
        q = self._question(body, chat)
        q.requests += 1
        q.faults += kind != "ok"
        if self.cfg.latency:
            await asyncio.sleep(self.cfg.latency)
        failed = await self._inject(request, kind)
        if failed is not None:
            return failed
        n = int(body.get("n") or 1)
        prompt_tokens = self._prompt_tokens(body, chat)
        refused = self._refusal(body, n, prompt_tokens)
        if refused is not None:
            return refused
        k = body.get("top_logprobs") if chat else body.get("logprobs")
        want_lp = bool(body.get("logprobs")) if chat else body.get("logprobs") is not None
        k = int(k or 0)
        self._ids += 1
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{self._ids}"
        probe = self._is_continuation(body, chat)
        if body.get("stream"):
            return await self._stream(request, body, chat, rid, n, prompt_tokens, want_lp, k, kind, q, probe)
        return await self._reply(request, body, chat, rid, n, prompt_tokens, want_lp, k, kind, q, probe)

    async def _inject(self, request: web.Request, kind: str) -> web.StreamResponse | None:
        """The transport-level fault ``kind``: its response (None: answer, after a slow wait)."""
        cfg = self.cfg
        if kind == "slow":
            end = time.monotonic() + cfg.slow_delay
            while time.monotonic() < end:  # notice a client that gives up (closes the connection)
                await asyncio.sleep(min(0.01, max(end - time.monotonic(), 0)))
                if request.transport is None or request.transport.is_closing():
                    self.stats.abandoned += 1
                    self._event("left")
                    return web.Response(status=499)
        elif kind == "drop":
            assert request.transport is not None
            request.transport.close()
            raise web.HTTPInternalServerError()  # never reaches the client: the socket is closed
        elif kind == "429":
            return self._error(429, "Rate limit reached; slow down.", headers={"Retry-After": f"{cfg.retry_after:g}"})
        elif kind in ("500", "503"):
            return self._error(int(kind), f"injected {kind}")
        elif kind == "malformed":
            return web.Response(status=200, text='{"id": "x", "choices": [{"inde', content_type="application/json")
        return None

    def _refusal(self, body: dict[str, Any], n: int, prompt_tokens: int) -> web.StreamResponse | None:
        """The 400 of a server without ``n``, or of a request over the context length."""
        if self.cfg.reject_n and n > 1:
            return self._error(400, "n > 1 is not supported by this server", param="n")
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        if prompt_tokens + max_tokens > self.cfg.max_model_len:
            return self._error(
                400,
                f"This model's maximum context length is {self.cfg.max_model_len} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
                "completion). Please reduce the length of the messages or completion.",
                param="input_tokens",
            )
        return None

    async def _reply(self, request, body, chat, rid, n, prompt_tokens, want_lp, k, kind, q, probe):  # type: ignore[no-untyped-def]
        """A whole (non-streamed) answer, billed when delivered (or cut short: it ran)."""
        cfg = self.cfg
        choices = []
        completion = 0
        for i in range(n // 2 if kind == "short" else n):
            toks, finish = self._overlong(body) if kind == "overbill" else self._cut(self._answer(), body)
            completion += len(toks)
            text = "".join(toks)
            c: dict[str, Any] = {"index": i, "finish_reason": finish,
                                 "logprobs": self._logprobs(toks, k, chat) if want_lp else None}
            if chat:
                c["message"] = {"role": "assistant", "content": text}
            else:
                c["text"] = text
            choices.append(c)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                 "total_tokens": prompt_tokens + completion}
        resp = {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": body.get("model", "fake"), "choices": choices}
        reported = cfg.report_usage and kind != "no_usage"
        if reported:
            resp["usage"] = self._told(usage, kind)
        data = json.dumps(resp).encode()
        if kind == "truncate":  # it ran the request and charges it; the usage is in the half never sent
            q.work(prompt_tokens, completion)
            self._bill(usage if reported else None, q)
            r = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                        "Content-Length": str(len(data))})
            await r.prepare(request)
            await r.write(data[: len(data) // 2])
            assert request.transport is not None
            request.transport.close()
            return r
        if request.transport is None or request.transport.is_closing():
            self._event("left")
            return web.Response(status=499)  # the client left (e.g. timed out): nothing delivered, nothing billed
        q.work(prompt_tokens, completion)
        self._bill(usage if reported else None, q)
        if probe:
            q.probe_samples += len(choices)
        else:
            q.samples += len(choices)
        self.stats.completed += 1
        return web.Response(body=data, content_type="application/json")

    async def _stream(self, request, body, chat, rid, n, prompt_tokens, want_lp, k, kind, q, probe):  # type: ignore[no-untyped-def]
        opts = body.get("stream_options") or {}
        reported = self.cfg.report_usage and kind != "no_usage"
        continuous = bool(opts.get("continuous_usage_stats")) and reported
        include_usage = (bool(opts.get("include_usage")) or continuous) and reported
        r = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await r.prepare(request)
        obj = "chat.completion.chunk" if chat else "text_completion"
        delivered: dict[str, int] | None = None
        if kind == "short":
            per_choice: list[tuple[list[str], str]] = []
        elif kind == "overbill":
            per_choice = [self._overlong(body) for _ in range(n)]
        else:
            per_choice = [self._cut(self._answer(), body) for _ in range(n)]
        total = sum(len(t) for t, _ in per_choice)
        cut_at = max(1, total // 2) if kind == "truncate" else None
        sent = 0
        try:
            for i, (toks, finish) in enumerate(per_choice):
                for j, t in enumerate(toks):
                    if cut_at is not None and sent >= cut_at:
                        assert request.transport is not None
                        request.transport.close()
                        return r
                    if cfg_delay := self.cfg.token_delay:
                        await asyncio.sleep(cfg_delay)
                    last = j == len(toks) - 1
                    c: dict[str, Any] = {"index": i, "finish_reason": finish if last else None,
                                         "logprobs": self._logprobs([t], k, chat, j) if want_lp else None}
                    if chat:
                        c["delta"] = {"role": "assistant", "content": t} if j == 0 else {"content": t}
                    else:
                        c["text"] = t
                    chunk: dict[str, Any] = {"id": rid, "object": obj, "created": 0, "model": "fake",
                                             "choices": [c]}
                    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": sent + 1,
                             "total_tokens": prompt_tokens + sent + 1}
                    if continuous:
                        chunk["usage"] = self._told(usage, kind)
                    await r.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    sent += 1
                    if sent == 1:
                        if probe:
                            q.probe_samples += 1
                        else:
                            q.samples += 1
                    if continuous:
                        delivered = usage
            if include_usage:
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": sent,
                         "total_tokens": prompt_tokens + sent}
                chunk = {"id": rid, "object": obj, "created": 0, "model": "fake", "choices": [],
                         "usage": self._told(usage, kind)}
                await r.write(f"data: {json.dumps(chunk)}\n\n".encode())
                delivered = usage
            await r.write(b"data: [DONE]\n\n")
            self.stats.completed += 1
            return r
        except ConnectionResetError:  # the client left (closed the stream): stop generating
            self._event("left")
            return r
        finally:  # a client that left (reset, cancelled handler) is billed what it was sent
            self._bill(delivered, q)
            q.work(prompt_tokens, sent)


class FaultServer:
    """Runs the fake server on a background thread (own event loop) on 127.0.0.1.

    ``with FaultServer(FaultConfig(rate=0.2)) as srv: engine = OpenAIEngine(srv.base_url, "fake")``.
    ``srv.stats`` holds the live counters. The server stops on exit or after
    ``config.lifetime`` seconds, whichever comes first.
    """

    def __init__(self, config: FaultConfig | None = None, *, port: int = 0):
        self.config = config or FaultConfig()
        self.port = port
        self.app = _App(self.config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def stats(self) -> Stats:
        return self.app.stats

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset_stats(self) -> None:
        self.app.stats = Stats()

    async def wait_for_abandoned(self, n: int = 1, timeout: float = 2.5) -> int:
        """``stats.abandoned`` once it reaches ``n`` or ``timeout`` seconds have passed. The
        server notices a client that closed its connection on its next 10 ms poll, in its own
        thread: on a loaded machine that can come after the client has already gone on."""
        deadline = time.monotonic() + timeout
        while self.stats.abandoned < n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.stats.abandoned

    def configure(self, config: FaultConfig) -> None:
        """Serve with ``config`` from now on (fresh counters, fault script and RNG);
        call it between requests, e.g. between hypothesis examples."""
        self.config = config
        self.app.cfg = config
        self.app.rng = random.Random(config.seed)
        self.app._answer_i = 0
        self.app.stats = Stats()

    async def _main(self) -> None:
        runner = await _start(self.app, self.port)
        self.port = runner.addresses[0][1]
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            await asyncio.wait_for(self._stop.wait(), self.config.lifetime)
        except TimeoutError:
            pass
        finally:
            await runner.cleanup()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread
            self._error = e
            self._ready.set()
        finally:
            self._loop.close()

    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self._run, name="fault-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"fault server did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultServer:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _start(app: _App, port: int) -> web.AppRunner:
    wa = web.Application(client_max_size=64 * 1024 * 1024)
    wa.router.add_post("/v1/chat/completions", app.chat)
    wa.router.add_post("/v1/completions", app.completions)
    wa.router.add_get("/v1/models", app.models)
    wa.router.add_get("/stats", app.stats_handler)
    wa.router.add_get("/health", lambda r: web.Response(text="ok"))
    runner = web.AppRunner(wa, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    return runner


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="fault-injecting OpenAI-compatible test server (loopback only)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--kinds", default=",".join(FAULT_KINDS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lifetime", type=float, default=600.0)
    a = p.parse_args(argv)
    cfg = FaultConfig(rate=a.rate, kinds=tuple(k for k in a.kinds.split(",") if k), seed=a.seed,
                      latency=a.latency, lifetime=a.lifetime)
    app = _App(cfg)

    async def run() -> None:
        runner = await _start(app, a.port)
        print(f"READY http://127.0.0.1:{runner.addresses[0][1]}/v1", flush=True)
        try:
            await asyncio.sleep(cfg.lifetime)
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
