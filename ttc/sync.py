"""The shared event loop: a thin sync facade over the async API, and the bridge to it.

All sync calls run on one shared event loop in a daemon thread, so an engine
created through the facade keeps living on the loop that created it across calls,
and the facade works the same inside Jupyter (whose own loop is already running in
the main thread) and outside one. Library code never calls ``run_until_complete``.

An engine bound to the loop it was created on (vLLM's async engine: its output task
and sockets live there) is built on the shared loop and driven from it; async callers
on any other loop reach it through :func:`run_on` and :func:`iterate_on`, which run a
coroutine (an async iterator) on that loop and hand the outcome back to the caller's
loop, cancellation included. Called on the loop itself, they run directly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def shared_loop() -> asyncio.AbstractEventLoop:
    """The facade's event loop (started on first use)."""
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            ready = threading.Event()

            def _serve() -> None:
                asyncio.set_event_loop(_loop)
                _loop.call_soon(ready.set)  # type: ignore[union-attr]
                _loop.run_forever()  # type: ignore[union-attr]

            _thread = threading.Thread(target=_serve, name="ttc-loop", daemon=True)
            _thread.start()
            ready.wait()
        return _loop


def run_sync(aw: Coroutine[Any, Any, T] | Awaitable[T], timeout: float | None = None) -> T:
    """Run ``aw`` on the shared loop and block until it is done.

    Refuses to be called from the shared loop's own thread (that would deadlock):
    async code should ``await`` instead.
    """
    loop = shared_loop()
    if threading.current_thread() is _thread:
        raise RuntimeError("run_sync called from the ttc loop itself: await the coroutine instead")

    async def _wrap() -> T:
        return await aw

    fut = asyncio.run_coroutine_threadsafe(_wrap(), loop)
    try:
        return fut.result(timeout)
    except BaseException:
        fut.cancel()
        raise


def sync(fn: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    """Make a blocking twin of an async function."""

    def _f(*args: Any, **kwargs: Any) -> T:
        return run_sync(fn(*args, **kwargs))

    _f.__name__ = getattr(fn, "__name__", "sync_fn")
    _f.__doc__ = f"Blocking version of {_f.__name__} (see ttc.sync)."
    return _f


# -- the bridge to a loop in another thread --------------------------------------------------
def running_on(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the calling code runs on ``loop``."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
        pass


async def run_on(loop: asyncio.AbstractEventLoop, make: Callable[[], Awaitable[T]]) -> T:
    """Await ``make()`` on ``loop`` (directly when already on it). Cancelling the caller
    cancels it there and waits until it has cleaned up (e.g. aborted a request and billed
    its partial work) before the caller's cancellation goes on."""
    if running_on(loop):
        return await make()
    caller = asyncio.get_running_loop()
    out: asyncio.Future[T] = caller.create_future()
    task: list[asyncio.Task[T]] = []

    def settle(t: asyncio.Task[T]) -> None:
        if out.done():
            return
        if t.cancelled():
            out.cancel()
        elif t.exception() is not None:
            out.set_exception(t.exception())  # type: ignore[arg-type]
        else:
            out.set_result(t.result())

    def start() -> None:
        t: asyncio.Task[T] = loop.create_task(make())  # type: ignore[arg-type]
        task.append(t)
        t.add_done_callback(lambda t: _call_soon(caller, settle, t))

    loop.call_soon_threadsafe(start)
    try:
        return await asyncio.shield(out)
    except asyncio.CancelledError:
        if not out.done():
            loop.call_soon_threadsafe(lambda: task[0].cancel())  # start() ran first (FIFO)
            await asyncio.wait([out])
        if not out.cancelled():
            out.exception()  # retrieved: the caller was cancelled, its outcome is moot
        raise


class _End:
    """End-of-iteration marker passed across loops (carries the error, if any)."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


async def iterate_on(loop: asyncio.AbstractEventLoop, make: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
    """Iterate ``make()`` on ``loop`` (directly when already on it); closing this iterator
    closes that one there, and waits until it has finished."""
    if running_on(loop):
        inner = make()
        try:
            async for item in inner:
                yield item
        finally:
            await inner.aclose()  # type: ignore[attr-defined]
        return
    caller = asyncio.get_running_loop()
    queue: asyncio.Queue[T | _End] = asyncio.Queue()
    task: list[asyncio.Task[None]] = []

    async def pump() -> None:
        agen = make()
        try:
            async for item in agen:
                _call_soon(caller, queue.put_nowait, item)
        finally:
            await agen.aclose()  # type: ignore[attr-defined]

    def finished(t: asyncio.Task[None]) -> None:
        # A done callback, so the end marker also comes for a task cancelled before it ran.
        err = None if t.cancelled() else t.exception()
        _call_soon(caller, queue.put_nowait, _End(err))

    def start() -> None:
        t = loop.create_task(pump())
        t.add_done_callback(finished)
        task.append(t)

    loop.call_soon_threadsafe(start)
    ended = False
    try:
        while True:
            got = await queue.get()
            if isinstance(got, _End):
                ended = True
                if got.error is not None and not isinstance(got.error, asyncio.CancelledError):
                    raise got.error
                return
            yield got
    finally:
        if not ended:
            loop.call_soon_threadsafe(lambda: task[0].cancel())
            while not isinstance(await asyncio.shield(queue.get()), _End):
                pass
