"""The bounded queue: at most ``max_concurrent`` requests run, ``max_queue`` more wait for a
slot, and a request beyond both is refused at once with 503 and ``Retry-After`` (the
overload answer of RFC 9110, section 15.6.4), so a burst cannot pile unbounded work on the
engine."""

from __future__ import annotations

import asyncio

from .errors import ApiError
from .metrics import ServeMetrics


class Gate:
    def __init__(self, max_concurrent: int, max_queue: int, retry_after: int, metrics: ServeMetrics):
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.retry_after = retry_after
        self.metrics = metrics
        self.running = 0
        self.waiting = 0
        self._sem: asyncio.Semaphore | None = None

    async def enter(self) -> None:
        if self.running + self.waiting >= self.max_concurrent + self.max_queue:
            self.metrics.overloads.inc()
            raise ApiError(503, f"server busy: {self.running} requests running and {self.waiting} waiting (at most "
                                f"{self.max_concurrent} run and {self.max_queue} wait); retry after "
                                f"{self.retry_after} s", code="server_busy",
                           headers={"Retry-After": str(self.retry_after)})
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.max_concurrent)
        self.waiting += 1
        self.metrics.queued.set(self.waiting)
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
            self.metrics.queued.set(self.waiting)
        self.running += 1
        self.metrics.in_flight.set(self.running)

    def leave(self) -> None:
        self.running -= 1
        self.metrics.in_flight.set(self.running)
        assert self._sem is not None
        self._sem.release()
