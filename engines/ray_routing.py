"""Which replica of a :class:`~engines.ray_engine.RayEngine` gets a request.

**Affinity by question.** A request's key is its prompt without the partial answer
(``Prompt.text`` or ``Prompt.messages`` and the tools; not ``assistant_prefix``), so every
call about one question (its samples, re-asks, the continuations of a step-wise search,
early-exit probes that continue a partial answer) has the same key. The key picks a
replica by rendezvous hashing (highest random weight: Thaler and Ravishankar, "Using
name-based mappings to increase hit rates", IEEE/ACM ToN 1998): each live replica scores
``hash(key, replica)`` and the highest score wins. When a replica leaves the pool only
its keys move, each to its next-highest replica; the others keep theirs (and their
replicas' prefix caches).

**Load.** Affinity yields to load when the affine replica has more than ``slack``
requests in flight beyond the least loaded live replica: the request then goes to the
least loaded one (lowest index on ties). The default, 64, is a fraction of what one
replica batches (vLLM runs up to 256 sequences at once): affinity yields only when its
replica is clearly the one holding the run back, since a request sent elsewhere reads its
whole prefix again. ``slack=None`` never yields (strict affinity: results on scripted
replicas then match one local engine call for call).

**Failures.** A replica that fails ``max_failures`` calls in a row (lost to a crash, or a
retryable engine error) leaves the pool; a success resets its count. A replica whose
actor Ray reports dead for good leaves at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ttc.types import Prompt


def affinity_key(prompt: Prompt) -> int:
    """A 64-bit key for the question of ``prompt`` (its text or messages and tools, not
    its partial answer)."""
    body = prompt.model_dump_json(include={"text", "messages", "tools"})
    return int.from_bytes(hashlib.blake2b(body.encode(), digest_size=8).digest(), "little")


class NoReplica(Exception):
    """No live replica is left to send a request to."""


@dataclass(eq=False)
class Slot:
    """A replica as the driver sees it: its actor and the driver's counters."""

    index: int
    actor: Any
    requests: int = 0
    in_flight: int = 0
    failures: int = 0
    failures_in_row: int = 0
    lost: int = 0  # attempts lost with the replica (crash, kill)
    removed: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def score(self, key: int) -> int:
        return hash((key, self.index, 0x9E3779B97F4A7C15))


class Router:
    """Rendezvous affinity with a load slack over the live slots (see the module doc)."""

    def __init__(self, slots: list[Slot], *, slack: int | None = 64, max_failures: int = 3):
        if not slots:
            raise ValueError("replicas: need at least one")
        if slack is not None and slack < 0:
            raise ValueError(f"slack: must be >= 0 or None, got {slack}")
        if max_failures < 1:
            raise ValueError(f"max_failures: must be >= 1, got {max_failures}")
        self.slots = slots
        self.slack = slack
        self.max_failures = max_failures
        self.rerouted = 0  # requests that left their affine replica for load

    def live(self) -> list[Slot]:
        return [s for s in self.slots if not s.removed]

    def affine(self, key: int, exclude: frozenset[int] = frozenset()) -> list[Slot]:
        """Live slots not in ``exclude``, best first for ``key``."""
        cands = [s for s in self.slots if not s.removed and s.index not in exclude]
        return sorted(cands, key=lambda s: s.score(key), reverse=True)

    def pick(self, key: int, exclude: frozenset[int] = frozenset()) -> Slot:
        """The slot for a request with ``key``, avoiding the slots in ``exclude`` (those
        that already failed this call) while another is live."""
        cands = self.affine(key, exclude) or self.affine(key)
        if not cands:
            raise NoReplica("no live replica left in the pool")
        best = cands[0]
        if self.slack is None:
            return best
        least = min(cands, key=lambda s: (s.in_flight, s.index))
        if best.in_flight - least.in_flight > self.slack:
            self.rerouted += 1
            return least
        return best

    def succeeded(self, slot: Slot) -> None:
        slot.failures_in_row = 0

    def failed(self, slot: Slot, *, dead: bool = False) -> None:
        slot.failures += 1
        slot.failures_in_row += 1
        if dead or slot.failures_in_row >= self.max_failures:
            slot.removed = True
