"""The sync facade works outside an event loop and inside a running one (Jupyter)."""

import asyncio

import pytest

from ttc import Budget, run_sync
from ttc.engines import ScriptedEngine
from ttc.strategies import Greedy


def test_run_sync_outside_a_loop_reuses_one_loop():
    async def loop_id():  # type: ignore[no-untyped-def]
        return id(asyncio.get_running_loop())

    assert run_sync(loop_id()) == run_sync(loop_id())
    eng = ScriptedEngine(["The answer is 7."])
    res = Greedy().run_sync("What is 3+4?", eng, Budget(calls=1))
    assert res.answer == "7" and res.usage.calls == 1


def test_run_sync_inside_a_running_loop_like_jupyter():
    eng = ScriptedEngine(["The answer is 9."])

    async def notebook_cell():  # type: ignore[no-untyped-def]
        # A notebook cell runs with a loop already running; the facade must not deadlock.
        return Greedy().run_sync("What is 4+5?", eng)

    res = asyncio.run(notebook_cell())
    assert res.answer == "9"


def test_run_sync_propagates_errors():
    async def boom():  # type: ignore[no-untyped-def]
        raise KeyError("x")

    with pytest.raises(KeyError):
        run_sync(boom())
