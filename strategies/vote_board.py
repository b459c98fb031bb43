"""The shared board of a vote over early-exit traces: when the vote is decided, and
when one trace may stop because others already hold its answer.

Every trace of the vote runs with certainty probes (:class:`~ttc.strategies.early_exit.EarlyExit`).
The board holds, per trace, its final answer once it has finished (a *vote*) and, while
it runs, the answer of its latest probe (a *provisional* answer; an empty or hesitant
probe clears it). Three choices read it:

- **The leader is decided** (always on): the leading answer among the votes is ahead of
  the runner-up by more than the traces that can still vote (``cap`` minus the votes
  and the traces that ended without one). No later vote can change a majority vote at
  the cap, so stopping here gives the fixed-cap vote's answer on the same traces, with
  fewer tokens.
- **The stopping rule** (Adaptive-Consistency's Beta rule, ESC, Certaindex, ...) on the
  votes, and with ``share_probes`` on the votes *plus* the provisional answers: the
  probes of all parallel traces are read together, as Dynasor's Certaindex reads the
  probed answers of a program's parallel branches (Fu et al. 2024, "Efficiently Serving
  LLM Reasoning Programs with Certaindex"). The rule's own ``max_samples`` is not a
  decision here (the cap is the strategy's).
- **Agreement exit** (``agree``): a trace whose latest probe answer is held by at least
  ``agree`` *other* traces (their votes or provisional answers) stops on that answer.
  Its own probes need not have agreed ``k`` times: the other traces are the
  confirmation.

Answers are grouped with the vote's equivalence (:func:`ttc.strategies.stats.class_counts`).
The board is plain data; the strategy snapshots it before a check runs off the event
loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ttc.checks import check_int
from ttc.types import Sample

from .stats import Equiv, class_counts
from .stopping import FixedN, StopCheck, StoppingRule


@dataclass(frozen=True)
class BoardView:
    """A snapshot of the board: the votes in arrival order, the provisional answers (trace,
    answer), and how many traces can still vote."""

    votes: tuple[str | None, ...]
    provisional: tuple[tuple[int, str], ...]
    open_slots: int


class VoteBoard:
    """What the traces of one vote have said so far (see the module docstring).

    Args:
        cap: the most traces that vote (the strategy's ``max_samples``).
        share_probes: the stopping rule also counts the provisional answers.
        agree: agreement exit threshold (0 = off).
    """

    def __init__(self, cap: int, *, share_probes: bool = False, agree: int = 0):
        self.cap = check_int("cap", cap, lo=1)
        self.share_probes = share_probes
        self.agree = check_int("agree", agree, lo=0)
        self.votes: dict[int, str | None] = {}
        self.order: list[int] = []
        self.latest: dict[int, str] = {}
        self.dropped: set[int] = set()

    # -- updates -----------------------------------------------------------------------
    def probe(self, i: int, answer: str | None) -> None:
        """Trace ``i``'s latest probe said ``answer`` (None: the probe does not count)."""
        if i in self.votes or i in self.dropped:
            return
        if answer is None:
            self.latest.pop(i, None)
        else:
            self.latest[i] = answer

    def finish(self, i: int, answer: str | None) -> None:
        """Trace ``i`` ended with a vote for ``answer`` (None: unparseable, still a vote)."""
        if i in self.votes:
            raise ValueError(f"trace {i}: already voted")
        self.latest.pop(i, None)
        self.votes[i] = answer
        self.order.append(i)

    def drop(self, i: int) -> None:
        """Trace ``i`` ended without a vote (cut by the budget, failed, halted)."""
        self.latest.pop(i, None)
        self.dropped.add(i)

    # -- reads -------------------------------------------------------------------------
    def view(self) -> BoardView:
        return BoardView(
            votes=tuple(self.votes[i] for i in self.order),
            provisional=tuple((i, self.latest[i]) for i in sorted(self.latest)),
            open_slots=max(self.cap - len(self.votes) - len(self.dropped), 0),
        )

    def support(self, i: int, answer: str, eq: Equiv) -> int:
        """How many traces other than ``i`` hold ``answer``: votes and provisional answers."""
        held = [a for a in self.votes.values() if a is not None]
        held += [a for j, a in self.latest.items() if j != i]
        return sum(1 for a in held if eq(a, answer))


def _samples(answers: tuple[str | None, ...] | list[str | None]) -> list[Sample]:
    return [Sample(index=i, text="", num_tokens=0, answer=a) for i, a in enumerate(answers)]


def leader_decided(votes: tuple[str | None, ...], open_slots: int, eq: Equiv) -> StopCheck | None:
    """The leading vote when no ``open_slots`` later votes can overtake or tie it
    (``v1 - v2 > open_slots``), else None."""
    counts = class_counts(_samples(votes), eq)
    if not counts:
        return None
    v1 = counts[0][1]
    v2 = counts[1][1] if len(counts) > 1 else 0.0
    if v1 - v2 > open_slots:
        return StopCheck(True, v1 / len(votes), "decided", {"top": counts[0][0], "v1": v1, "v2": v2,
                                                             "open": open_slots})
    return None


def board_decision(view: BoardView, rule: StoppingRule, eq: Equiv, share_probes: bool) -> StopCheck | None:
    """Whether the vote can stop now (pure: runs off the event loop). The rule's
    ``max_samples`` stop is not a decision, nor is :class:`FixedN` (the strategy's cap
    ends the vote: with FixedN only the decided leader stops it early)."""
    decided = leader_decided(view.votes, view.open_slots, eq)
    if decided is not None:
        return decided
    answers: list[str | None] = list(view.votes) + ([a for _, a in view.provisional] if share_probes else [])
    if not answers or isinstance(rule, FixedN):  # a fixed count is the cap, not a decision
        return None
    res = rule.check(_samples(answers), eq)
    if res.stop and res.reason != "max_samples":
        detail: dict[str, Any] = dict(res.detail)
        detail.update(votes=len(view.votes), provisional=len(answers) - len(view.votes))
        return StopCheck(True, res.confidence, res.reason, detail)
    return None
