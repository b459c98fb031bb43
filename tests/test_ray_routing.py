"""Routing of RayEngine requests (no Ray needed): rendezvous affinity by question, the load
slack, and replicas leaving the pool after failing in a row."""

from __future__ import annotations

import pytest

from ttc import Prompt
from ttc.engines.ray_routing import NoReplica, Router, Slot, affinity_key
from ttc.types import Message


def _router(n: int = 4, **kw) -> Router:  # type: ignore[no-untyped-def]
    return Router([Slot(i, actor=None) for i in range(n)], **kw)


def test_the_key_is_the_question_not_the_partial_answer() -> None:
    q = [Message(role="user", content="What is 2 + 2?")]
    assert affinity_key(Prompt(messages=q)) == affinity_key(Prompt(messages=q, assistant_prefix="First, 2"))
    assert affinity_key(Prompt(messages=q)) != affinity_key(Prompt(messages=[Message(role="user", content="3 + 3?")]))
    assert affinity_key(Prompt(text="a", assistant_prefix="b")) == affinity_key(Prompt(text="a"))


def test_rendezvous_spreads_questions_and_moves_only_a_dead_replicas_keys() -> None:
    r = _router(4, slack=None)
    keys = [affinity_key(Prompt(text=f"question {i}")) for i in range(400)]
    before = {k: r.pick(k).index for k in keys}
    counts = [sum(v == i for v in before.values()) for i in range(4)]
    assert min(counts) > 60, counts  # about 100 each
    r.failed(r.slots[2], dead=True)
    after = {k: r.pick(k).index for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved and all(before[k] == 2 for k in moved)
    assert all(after[k] != 2 for k in keys)


def test_affinity_yields_to_the_least_loaded_replica_beyond_the_slack() -> None:
    r = _router(3, slack=4)
    key = affinity_key(Prompt(text="q"))
    home = r.pick(key)
    home.in_flight = 4
    assert r.pick(key) is home  # 4 more than the idle ones: within the slack
    home.in_flight = 5
    other = r.pick(key)
    assert other is not home and other.in_flight == 0 and r.rerouted == 1
    assert r.pick(key, exclude=frozenset({home.index})) is not home


def test_a_replica_failing_in_a_row_leaves_and_an_empty_pool_says_so() -> None:
    r = _router(2, max_failures=2)
    a, b = r.slots
    r.failed(a)
    r.succeeded(a)
    r.failed(a)
    assert not a.removed  # the success reset the count
    r.failed(a)
    assert a.removed and r.live() == [b]
    r.failed(b, dead=True)
    with pytest.raises(NoReplica):
        r.pick(1)
    with pytest.raises(ValueError, match="slack"):
        _router(2, slack=-1)
    with pytest.raises(ValueError, match="replicas"):
        Router([])
