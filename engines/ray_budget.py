"""One budget shared by several drivers: a ledger actor that hands out chunked leases.

A run too large for one driver process (see ``docs/ray.md``: a driver spends a few
milliseconds of CPU per request, so past a few hundred requests per second it is the
bottleneck) is split into shards of questions, one driver each, all under one global
:class:`~ttc.budget.Budget`. Each driver leases a chunk of the budget from the ledger,
runs a batch of its questions under a :class:`~ttc.budget.Meter` limited to the chunk,
and settles: it reports what the meter spent and the rest of the chunk returns to the
ledger. The ledger grants only what is neither spent nor leased, so the sum of what every
driver can spend never passes the global limit: ``spent <= limit`` holds exactly, as on
one meter (plus what a server billed beyond a request's hold, which each driver's meter
records in ``overspent`` and the settlement reports).

The ledger is touched once per chunk, not per request (one actor call per batch of
questions), so it is never the bottleneck; the price of chunking is that a driver's
unspent lease is idle until it settles (lease what a batch can spend, settle promptly).
Limits on ``completion_tokens``, ``total_tokens``, ``generations`` and ``calls`` are
shared; ``wall_seconds`` is each driver's own deadline and is not leased.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ttc.budget import Budget, Meter
from ttc.types import Usage

QUANTITIES = ("completion_tokens", "total_tokens", "generations", "calls")


def _amounts(u: Usage) -> dict[str, int]:
    return {"completion_tokens": u.completion_tokens, "total_tokens": u.prompt_tokens + u.completion_tokens,
            "generations": u.generations, "calls": u.calls}


class BudgetLedger:
    """The actor (``ray.remote(BudgetLedger)``; :class:`SharedBudget` creates it): the
    global limits, what is spent and what is leased out now."""

    def __init__(self, limits: dict[str, int]):
        self.limits = dict(limits)
        self.spent = dict.fromkeys(QUANTITIES, 0)
        self.leased = dict.fromkeys(QUANTITIES, 0)
        self.overspent = dict.fromkeys(QUANTITIES, 0)
        self.leases = 0

    def lease(self, want: dict[str, int], least: dict[str, int] | None = None) -> dict[str, int] | None:
        """Grant up to ``want`` of each limited quantity (what is free when less is left);
        ``None`` when a limited quantity has less than ``least`` of it (default 1) left."""
        missing = sorted(set(self.limits) - set(want))
        if missing:
            raise ValueError(f"chunk: the shared budget limits {missing}; the chunk must ask for them too")
        grant = {}
        for k, lim in self.limits.items():
            free = lim - self.spent[k] - self.leased[k]
            if free < max(1, (least or {}).get(k, 1)):
                return None
            grant[k] = min(free, want.get(k, free))
        for k, v in grant.items():
            self.leased[k] += v
        self.leases += 1
        return grant

    def settle(self, grant: dict[str, int], spent: dict[str, int]) -> None:
        """A lease comes back: what it spent is charged, the rest is free again."""
        for k in QUANTITIES:
            self.leased[k] -= grant.get(k, 0)
            self.spent[k] += spent.get(k, 0)
            if k in grant:
                self.overspent[k] += max(0, spent.get(k, 0) - grant[k])

    def state(self) -> dict[str, Any]:
        return {"limits": self.limits, "spent": self.spent, "leased": self.leased, "overspent": self.overspent,
                "leases": self.leases}


class SharedBudget:
    """A driver's handle on the ledger. ``SharedBudget.create(budget, name=...)`` starts
    the ledger (a Ray actor, named if ``name`` is given); other drivers on the cluster find it
    with ``SharedBudget.connect(name)``. ``async with shared.lease(chunk) as meter`` runs a
    batch under a meter limited to the granted chunk (``meter`` is None when the global
    budget is exhausted) and settles on leaving."""

    def __init__(self, actor: Any):
        self.actor = actor

    @classmethod
    def create(cls, budget: Budget, *, name: str | None = None) -> SharedBudget:
        import ray

        limits = {k: int(v) for k, v in budget.limits().items() if k != "wall_seconds"}
        if not limits:
            raise ValueError("budget: a shared budget needs a limit on completion_tokens, total_tokens, "
                             "generations or calls")
        opts: dict[str, Any] = {"num_cpus": 0}
        if name is not None:
            opts["name"] = name
        return cls(ray.remote(BudgetLedger).options(**opts).remote(limits))

    @classmethod
    def connect(cls, name: str) -> SharedBudget:
        import ray

        return cls(ray.get_actor(name))

    @contextlib.asynccontextmanager
    async def lease(self, chunk: Budget, least: Budget | None = None) -> AsyncIterator[Meter | None]:
        """A meter limited to up to ``chunk`` of the shared budget (None: less than ``least``
        is left, e.g. one request's worst case: a smaller lease could buy nothing)."""
        want = {k: int(v) for k, v in chunk.limits().items() if k != "wall_seconds"}
        floor = {k: int(v) for k, v in (least or Budget()).limits().items() if k != "wall_seconds"}
        grant = await self.actor.lease.remote(want, floor)
        if grant is None:
            yield None
            return
        meter = Meter(Budget(**grant, wall_seconds=chunk.wall_seconds), name="lease")
        try:
            yield meter
        finally:
            await self.actor.settle.remote(grant, _amounts(meter.spent))

    async def state(self) -> dict[str, Any]:
        """The ledger's limits, spent, leased out now, overspent and number of leases."""
        return await self.actor.state.remote()
