"""The server's limits, per-request budgets and per-key budgets.

- :class:`ServeLimits`: the size of what a request may ask (body bytes, messages,
  ``max_tokens``, ``n``), the largest per-request budget, and the bounded queue (requests
  running at once, requests waiting beyond them).
- :func:`request_budget`: the per-request :class:`~ttc.budget.Budget` from the body
  (``ttc.budget``) or the ``X-TTC-Budget`` header (``key=value,...`` or a JSON object),
  with the same keys and checks as :class:`~ttc.budget.Budget`. It is enforced exactly as in
  the library: the request runs on a meter whose every reservation must fit.
- :class:`KeyBudgets`: one long-lived :class:`~ttc.budget.Meter` per API key
  (``--key-budget``), renewed every ``period`` seconds (a fixed window from the key's first
  request), so that one cap holds across an agent's many calls: every request of the key runs
  on a child meter of it. A request that cannot afford one call on that meter is refused
  with 429 naming the limit and when the window resets. A request already running when the
  window renews finishes on the old meter.

Keys are held as SHA-256 digests, never as given, and never appear in a log or a metric.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from ttc.budget import Budget, BudgetExhausted, Meter
from ttc.types import Usage

from .errors import ApiError, bad_request, dotted

BUDGET_KEYS = tuple(Budget.model_fields)


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask, and how many run and wait at once."""

    max_body_bytes: int = 1_000_000
    max_messages: int = 256
    max_tokens: int = 4096
    default_max_tokens: int = 256
    max_n: int = 8
    max_request_budget: Budget = field(default_factory=Budget)
    max_concurrent: int = 64
    max_queue: int = 256
    retry_after: int = 1

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_messages", "max_tokens", "default_max_tokens", "max_n",
                     "max_concurrent", "retry_after"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        if isinstance(self.max_queue, bool) or not isinstance(self.max_queue, int) or self.max_queue < 0:
            raise ValueError(f"max_queue: expected an int >= 0, got {self.max_queue!r}")
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(f"default_max_tokens: {self.default_max_tokens} > max_tokens {self.max_tokens}")


def parse_budget_text(text: str, where: str) -> Budget:
    """A budget from ``key=value,...`` or a JSON object; 400 naming the key at fault."""
    text = text.strip()
    if not text:
        raise bad_request(f"{where}: empty; give e.g. total_tokens=2000,calls=8", where)
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise bad_request(f"{where}: not valid JSON ({e.msg})", where) from None
        if not isinstance(data, dict):
            raise bad_request(f"{where}: expected a JSON object of limits", where)
    else:
        data = {}
        for part in text.split(","):
            key, eq, value = (s.strip() for s in part.partition("="))
            if not eq or not key or not value:
                raise bad_request(f"{where}: expected key=value, got {part.strip()!r}", where)
            if key in data:
                raise bad_request(f"{where}.{key}: given twice", f"{where}.{key}")
            data[key] = _number(value, f"{where}.{key}")
    return budget_of(data, where)


def _number(text: str, where: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        v = float(text)
    except ValueError:
        raise bad_request(f"{where}: expected a number, got {text!r}", where) from None
    if not math.isfinite(v):
        raise bad_request(f"{where}: expected a finite number, got {text!r}", where)
    return v


def budget_of(data: dict, where: str) -> Budget:
    try:
        return Budget(**data)
    except ValidationError as e:
        err = e.errors()[0]
        param = f"{where}.{dotted(err['loc'])}" if err["loc"] else where
        known = f" (limits: {', '.join(BUDGET_KEYS)})" if err["type"] == "extra_forbidden" else ""
        raise bad_request(f"{param}: {err['msg']}{known}", param) from None
    except TypeError as e:
        raise bad_request(f"{where}: {e}", where) from None


def request_budget(body: Budget | None, header: str | None, cap: Budget) -> Budget:
    """The request's budget (the body's ``ttc.budget`` or the ``X-TTC-Budget`` header, not
    both), each limit at most the server's cap; no limit given: the cap's."""
    if body is not None and header is not None:
        raise bad_request("ttc.budget: given both in the body and in the X-TTC-Budget header; give one",
                          "ttc.budget")
    if header is not None:
        budget, where = parse_budget_text(header, "X-TTC-Budget"), "X-TTC-Budget"
    else:
        budget, where = body or Budget(), "ttc.budget"
    merged = dict(cap.limits())
    for k, v in budget.limits().items():
        if k in merged and v > merged[k]:
            raise bad_request(f"{where}.{k}: {v:g} is more than this server allows per request ({merged[k]:g})",
                              f"{where}.{k}")
        merged[k] = v
    return Budget(**merged)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyBudgets:
    """A long-lived meter per API key, renewed every ``period`` seconds."""

    def __init__(self, budget: Budget, period: float = 86_400.0, *, clock=time.time):  # type: ignore[no-untyped-def]
        if not budget.limits():
            raise ValueError("key budget: give at least one limit (e.g. total_tokens=1000000)")
        if "wall_seconds" in budget.limits():
            raise ValueError("key budget: wall_seconds is a per-request deadline; the key budget's window is its period")
        if not (isinstance(period, (int, float)) and math.isfinite(period) and period > 0):
            raise ValueError(f"key budget period: expected seconds > 0, got {period!r}")
        self.budget = budget
        self.period = float(period)
        self.clock = clock
        self._meters: dict[str, tuple[float, Meter]] = {}

    def meter(self, digest: str) -> tuple[Meter, float]:
        """The key's meter and when (epoch seconds) its window resets."""
        now = self.clock()
        start, meter = self._meters.get(digest, (None, None))
        if meter is None or start is None or now >= start + self.period:
            start, meter = now, Meter(self.budget, name="key")
            self._meters[digest] = (start, meter)
        return meter, start + self.period

    def usage(self, digest: str) -> Usage | None:
        entry = self._meters.get(digest)
        return None if entry is None else entry[1].usage()


def key_refusal(e: BudgetExhausted, resets_at: float, now: float | None = None) -> ApiError:
    """429 for a key whose budget cannot afford the request: which limit, when it resets."""
    now = time.time() if now is None else now
    wait = max(1, math.ceil(resets_at - now))
    when = datetime.fromtimestamp(resets_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ApiError(429, f"API key budget exhausted: {e.limit} needs {e.needed:g}, {e.available:g} left in this "
                         f"window; the key's budget resets at {when} (in {wait} s)",
                    param=f"key_budget.{e.limit}", code="key_budget_exhausted", headers={"Retry-After": str(wait)})
