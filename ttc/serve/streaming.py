"""Server-sent events (the OpenAI streaming format): what streams live and what cannot.

- **Single-trace calls stream live**: ``passthrough`` (``n=1``) and ``greedy`` are one engine
  call, streamed token by token as the engine generates them (:func:`ttc.serve.calls.run_live`).
- **Strategies that choose among samples** (self-consistency, best-of-N, DeepConf, searches,
  early exit, ...) cannot show text before they have chosen: while they sample, the stream
  sends SSE comments (``: keep-alive``, ignored by SSE clients) every ``keepalive`` seconds,
  or, with ``ttc.progress``, ``event: ttc.progress`` events with the tokens and calls metered
  so far; the chosen text is sent as soon as the decision is made.

The last content chunk carries the ``ttc`` object; with ``stream_options.include_usage`` a
final chunk carries ``usage`` (the metered total). An error after the stream started is sent
as ``data: {"error": {...}}`` (the ``openai`` SDK raises it), then ``data: [DONE]``.

The work runs in a task of its own, feeding a queue the response drains: a client that
disconnects cancels the response, which cancels that task, and the cancellation reaches
every engine request of the call (each engine aborts what it has in flight).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse

from ttc.engine import Engine
from ttc.types import StrategyResult

from .calls import Call, run, run_live
from .errors import ApiError
from .responses import Shape, finish_of, tool_calls_of

log = logging.getLogger("ttc.serve")
DONE = "data: [DONE]\n\n"
PIECE = 64  # characters per content chunk of a decided text


def sse(obj: Any, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(obj, separators=(',', ':'))}\n\n"


class Events:
    """The SSE body of one streamed call."""

    def __init__(self, call: Call, engine: Engine, shape: Shape, *, keepalive: float,
                 on_done: Callable[[StrategyResult | None, int], None]):
        self.call = call
        self.engine = engine
        self.shape = shape
        self.keepalive = keepalive
        self.on_done = on_done
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.result: StrategyResult | None = None
        self.status = 200
        self._task: asyncio.Task[None] | None = None
        self._done = False

    def finish(self) -> None:
        """Stop the work if it still runs and report the outcome, once (also when the response
        ended before its body was iterated)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the client went away: every engine request of the call is aborted
            self.status = 499
        if self._task is None:
            self.status = 499
        if not self._done:
            self._done = True
            self.on_done(self.result, self.status)

    def put(self, item: str) -> None:
        self.queue.put_nowait(item)

    async def _emit(self, text: str) -> None:
        self.put(sse(self.shape.chunk(0, text=text)))

    async def produce(self) -> None:
        call, shape = self.call, self.shape
        try:
            if shape.chat:
                self.put(sse(shape.chunk(0, role=True, text="")))
            if call.live is not None:
                result = await run_live(call, self.engine, self._emit)
                self.result = result
                if result.stop_reason == "engine_error":
                    self.status = 502
                    self.put(sse(call.refusal(result).body()))
                else:
                    chosen = result.chosen
                    finish = finish_of(chosen) if chosen is not None else "length"
                    last = shape.chunk(0, finish=finish, tool_calls=tool_calls_of(chosen) or None)
                    self.put(sse({**last, "ttc": call.ttc(result)}))
            else:
                result = await run(call, self.engine)
                self.result = result
                self._decided(result)
            if call.include_usage:
                self.put(sse(shape.usage_chunk(result.usage, None)))
        except ApiError as e:
            self.status = e.status
            self.put(sse(e.body()))
        except Exception as e:  # noqa: BLE001 - reported to the client, logged without the prompt
            log.error("stream failed: %s", type(e).__name__)
            self.status = 500
            self.put(sse(ApiError(500, f"internal error: {type(e).__name__}").body()))
        finally:
            self.put(DONE)
            self.queue.put_nowait(None)

    def _decided(self, result: StrategyResult) -> None:
        call, shape = self.call, self.shape
        choices = call.choices(result)
        if not choices:
            err = call.refusal(result)
            self.status = err.status
            self.put(sse(err.body()))
            return
        for i, (s, conf) in enumerate(choices):
            if shape.chat and i > 0:
                self.put(sse(shape.chunk(i, role=True, text="")))
            for k in range(0, len(s.text), PIECE):
                self.put(sse(shape.chunk(i, text=s.text[k:k + PIECE])))
            last = shape.chunk(i, finish=finish_of(s), tool_calls=tool_calls_of(s) or None)
            last["choices"][0]["ttc"] = {"confidence": conf, "answer": s.answer, "sample": s.index}
            if i == len(choices) - 1:
                last["ttc"] = call.ttc(result)
            self.put(sse(last))

    def _idle(self) -> str:
        if not self.call.progress:
            return ": keep-alive\n\n"
        spent = self.call.meter.usage()
        return sse({"object": "ttc.progress", "completion_tokens": spent.completion_tokens,
                    "prompt_tokens": spent.prompt_tokens, "calls": spent.calls,
                    "elapsed": round(spent.wall_seconds, 3)}, event="ttc.progress")

    async def __aiter__(self) -> AsyncIterator[str]:
        self._task = task = asyncio.create_task(self.produce())
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self.queue.get(), self.keepalive)
                except TimeoutError:
                    yield self._idle()
                    continue
                if item is None:
                    break
                yield item
            await task
        finally:
            self.finish()


class SSEResponse(StreamingResponse):
    """A streaming response that reports its call's outcome however it ends."""

    media_type = "text/event-stream"

    def __init__(self, events: Events):
        super().__init__(events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.events = events

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.events.finish()
