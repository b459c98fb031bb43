"""Budgets that hold: limits, a meter that reserves the worst case before a request
is sent and charges the real usage as it comes back, and sub-budgets.

Invariant (tested with hypothesis in ``tests/test_budget.py`` on a scripted engine and
in ``tests/test_untrusted_server.py`` against a faulty HTTP server): for every limited
quantity, ``spent + reserved <= limit`` at all times, hence ``spent <= limit`` (plus
what :attr:`Meter.overspent` records); and ``spent`` equals the sum of the usages the
engine billed. A request whose worst
case does not fit is refused with :class:`BudgetExhausted` *before* it is sent.

Every attempt is reserved: an engine that sends a request again (a retry, a fall-back
to several calls) first extends the request's hold with :meth:`Reservation.extend`, which
raises :class:`BudgetExhausted` when the next attempt's worst case does not fit. A
server that bills more than a request's worst case (it ignored ``max_tokens``) is still
charged what it billed; the excess over the hold is recorded in :attr:`Meter.overspent`
(and ``StrategyResult.overspent``), the one way ``spent`` can pass a limit.

Wall seconds are a deadline, not a sum: ``elapsed()`` since the meter started.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from .types import Usage

COUNTED = ("prompt_tokens", "completion_tokens", "cached_prompt_tokens", "calls", "generations")
#: The usage fields a hold covers (what :attr:`Meter.overspent` is counted in).
HELD = ("prompt_tokens", "completion_tokens", "calls", "generations")


class Budget(BaseModel):
    """Limits on what a strategy may spend. ``None`` means unlimited.

    ``total_tokens`` counts prompt plus completion tokens.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    completion_tokens: int | None = Field(None, gt=0)
    total_tokens: int | None = Field(None, gt=0)
    generations: int | None = Field(None, gt=0)
    calls: int | None = Field(None, gt=0)
    wall_seconds: float | None = Field(None, gt=0)

    @classmethod
    def unlimited(cls) -> Budget:
        return cls()

    def limits(self) -> dict[str, float]:
        """The limited quantities and their limits (a new dict each call)."""
        return dict(_limits_of(self))


@functools.lru_cache(maxsize=4096)
def _limits_of(budget: Budget) -> tuple[tuple[str, float], ...]:
    """A frozen budget's set limits, computed once per distinct budget (meters read them
    on every reservation and charge)."""
    return tuple((k, v) for k, v in budget.model_dump().items() if v is not None)


class BudgetExhausted(Exception):
    """Raised by :meth:`Meter.reserve` when a request's worst case does not fit.

    Strategies never let it escape: :class:`ttc.strategy.Strategy` turns it into
    ``stop_reason="budget"`` with every sample drawn so far kept. ``generations``:
    complete generations a call had received and paid for when its next attempt did
    not fit (kept as samples by the run context).
    """

    def __init__(self, limit: str, needed: float, available: float):
        self.limit = limit
        self.needed = needed
        self.available = available
        self.generations: list = []
        super().__init__(f"budget exhausted: {limit} needs {needed:g}, {available:g} left")


def call_usage(prompt_tokens: int, completion_tokens: int, n: int, *, native_n: bool) -> Usage:
    """What one call for ``n`` generations bills: an engine with native ``n`` reads the
    prompt once in one call; otherwise it sends ``n`` single requests, each reading it."""
    per_call = 1 if native_n else n
    return Usage(prompt_tokens=prompt_tokens * per_call, completion_tokens=completion_tokens,
                 calls=per_call, generations=n)


def worst_case(prompt_tokens: int, n: int, max_tokens: int, *, native_n: bool) -> Usage:
    """The most one call for ``n`` generations of at most ``max_tokens`` can bill: what a
    meter holds before the call is sent (every generation runs to ``max_tokens``)."""
    return call_usage(prompt_tokens, n * max_tokens, n, native_n=native_n)


def _quantities(u: Usage) -> dict[str, float]:
    return {
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "generations": u.generations,
        "calls": u.calls,
    }


@dataclass
class Reservation:
    """A hold on the worst case of one request. The engine bills real usage into it
    (:meth:`bill`, possibly several times: retries, partial work of a cancelled
    request) and extends the hold before every attempt after the first
    (:meth:`extend`); :meth:`close` charges what was billed and releases the rest.
    """

    meter: Meter
    worst: Usage
    kind: str
    billed: Usage = field(default_factory=Usage)
    closed: bool = False
    held: Usage = field(init=False)  # worst, plus every extension

    def __post_init__(self) -> None:
        self.held = self.worst

    def bill(self, usage: Usage) -> None:
        if self.closed:
            # Late billing (e.g. a stream's final usage after close): still charged.
            self.meter._charge(usage, self.kind)
            return
        self.billed = self.billed + usage

    def extend(self, extra: Usage) -> None:
        """Hold ``extra`` more for this request, on the meter and every ancestor, or
        raise :class:`BudgetExhausted` (nothing more is held then). Engines call it
        before sending an attempt the current hold does not cover: a retry after an
        attempt that billed usage, or ``n`` single requests instead of one."""
        if self.closed:
            raise RuntimeError("reservation: extended after it was closed")
        if extra == Usage():
            return
        self.meter._hold(extra)
        self.held = self.held + extra

    def close(self) -> Usage:
        if not self.closed:
            self.closed = True
            self.meter._settle(self)
        return self.billed

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Meter:
    """Meters spending against a :class:`Budget`; hands out sub-budgets.

    A child meter's reservations and charges also reserve and charge in its parent,
    so a child can never spend what its parent does not have.
    """

    def __init__(self, budget: Budget | None = None, *, parent: Meter | None = None, name: str = "root"):
        self.budget = budget or Budget()
        self.parent = parent
        self.name = name
        self.started = time.monotonic()
        self.spent = Usage()
        self.by_kind: dict[str, Usage] = {}
        self._reserved: dict[str, float] = {k: 0.0 for k in ("completion_tokens", "total_tokens", "generations", "calls")}
        self.overshoot: dict[str, float] = {}
        #: Usage billed beyond the holds of the requests that billed it, per field (a
        #: server that ignored ``max_tokens``): charged, and the only way past a limit.
        self.overspent: dict[str, int] = {}

    # -- queries ---------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def deadline_left(self) -> float | None:
        """Seconds left before the tightest wall-clock limit on this meter's chain."""
        lefts = []
        m: Meter | None = self
        while m is not None:
            if m.budget.wall_seconds is not None:
                lefts.append(m.budget.wall_seconds - m.elapsed())
            m = m.parent
        return min(lefts) if lefts else None

    def remaining(self) -> dict[str, float]:
        """What is left of each limited quantity (after reservations), over the chain."""
        out: dict[str, float] = {}
        m: Meter | None = self
        while m is not None:
            spent = _quantities(m.spent)
            for k, lim in _limits_of(m.budget):
                if k == "wall_seconds":
                    left = lim - m.elapsed()
                else:
                    left = lim - spent[k] - m._reserved[k]
                out[k] = min(out.get(k, float("inf")), left)
            m = m.parent
        return out

    def can_afford(self, worst: Usage) -> bool:
        try:
            self._check(worst)
        except BudgetExhausted:
            return False
        return True

    def usage(self) -> Usage:
        """What this meter has been charged; wall_seconds = elapsed time."""
        return self.spent.model_copy(update={"wall_seconds": self.elapsed()})

    # -- reservations ------------------------------------------------------------
    def _chain(self) -> Iterator[Meter]:
        m: Meter | None = self
        while m is not None:
            yield m
            m = m.parent

    def _check(self, worst: Usage) -> None:
        need = _quantities(worst)
        for m in self._chain():
            lims = _limits_of(m.budget)
            if not lims:
                continue
            wall = m.budget.wall_seconds
            if wall is not None and m.elapsed() >= wall:
                raise BudgetExhausted("wall_seconds", m.elapsed(), wall)
            spent = _quantities(m.spent)
            for k, lim in lims:
                if k == "wall_seconds" or need[k] == 0:
                    continue
                left = lim - spent[k] - m._reserved[k]
                if need[k] > left:
                    raise BudgetExhausted(k, need[k], max(left, 0))

    def reserve(self, worst: Usage, kind: str = "generate") -> Reservation:
        """Hold ``worst`` on this meter and every ancestor, or raise BudgetExhausted."""
        self._hold(worst)
        return Reservation(self, worst, kind)

    def _hold(self, usage: Usage) -> None:
        self._check(usage)
        need = _quantities(usage)
        for m in self._chain():
            for k in m._reserved:
                m._reserved[k] += need[k]

    def _settle(self, r: Reservation) -> None:
        need = _quantities(r.held)
        for m in self._chain():
            for k in m._reserved:
                m._reserved[k] -= need[k]
        excess = {k: getattr(r.billed, k) - getattr(r.held, k) for k in HELD}
        for m in self._chain():
            for k, v in excess.items():
                if v > 0:
                    m.overspent[k] = m.overspent.get(k, 0) + v
        self._charge(r.billed, r.kind)

    def _charge(self, usage: Usage, kind: str) -> None:
        tokens = usage.model_copy(update={"wall_seconds": 0.0}) if usage.wall_seconds else usage
        for m in self._chain():
            m.spent = m.spent + tokens
            m.by_kind[kind] = m.by_kind.get(kind, Usage()) + usage
            lims = _limits_of(m.budget)
            if not lims:
                continue
            spent = _quantities(m.spent)
            for k, lim in lims:
                if k != "wall_seconds" and spent[k] > lim:
                    m.overshoot[k] = spent[k] - lim

    def charge(self, usage: Usage, kind: str = "generate") -> None:
        """Charge usage that was not reserved (e.g. a verifier billed after the fact)."""
        self._charge(usage, kind)

    # -- sub-budgets -------------------------------------------------------------
    def child(self, budget: Budget | None = None, name: str = "child") -> Meter:
        return Meter(budget, parent=self, name=name)

    def split(self, fraction: float, name: str = "child") -> Meter:
        """A child limited to ``fraction`` of what is left here of each quantity."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction: must be in (0, 1], got {fraction}")
        rem = self.remaining()
        lim: dict[str, float] = {}
        for k, v in rem.items():
            if v <= 0:
                raise BudgetExhausted(k, 1, 0)
            lim[k] = v * fraction if k == "wall_seconds" else max(1, int(v * fraction))
        return self.child(Budget(**lim), name=name)
