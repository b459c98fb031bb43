"""Run an app on the current event loop: ``async with serving(app) as url``.

For notebooks, tests and agent code that want ``ttc serve`` beside them in one process (so
the server shares the engine already loaded): uvicorn's ``Server.serve()`` runs as a task on
the running loop, bound to 127.0.0.1 on a free port unless told otherwise, and is shut down
when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ttc.engines.vllm_server import free_port


@contextlib.asynccontextmanager
async def serving(app: Any, *, host: str = "127.0.0.1", port: int | None = None,
                  shutdown_timeout: float = 10.0) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn while the block runs; yields its base URL (``http://HOST:PORT``)."""
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # start-up failed: raise its error
                raise RuntimeError(f"uvicorn stopped before it started on {host}:{port}")
            await asyncio.sleep(0.05)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, shutdown_timeout)
