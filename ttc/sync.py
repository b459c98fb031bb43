"""A thin sync facade over the async API, for scripts and notebooks.

All sync calls run on one shared event loop in a daemon thread, so an engine
created through the facade keeps living on the loop that created it across calls,
and the facade works the same inside Jupyter (whose own loop is already running in
the main thread) and outside one. Library code never calls ``run_until_complete``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
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
