"""The ttc command line, the strategy registry, and resumable runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ttc.bench import datasets as ds
from ttc.bench.cli import app, build_strategy, load_dataset
from ttc.bench.pool import record_pool
from ttc.bench.runner import run_dataset
from ttc.budget import Budget
from ttc.engines import ScriptedEngine
from ttc.types import Prompt, SamplingParams

runner = CliRunner()


def _answer_script(p_correct: float = 0.6):  # type: ignore[no-untyped-def]
    def f(prompt: Prompt, i: int, rng: np.random.Generator) -> str:
        q = prompt.question
        a, b = int(q.split()[2]), int(q.split()[4].rstrip("?"))
        ans = a + b if rng.random() < p_correct else a + b + int(rng.integers(1, 3))
        return f"{a} + {b} = {ans}"

    return f


def test_data_command_writes_a_loadable_dataset(tmp_path: Path) -> None:
    out = tmp_path / "wp.jsonl"
    res = runner.invoke(app, ["data", "--generator", "word_problems", "--n", "12", "--seed", "3",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote 12 examples" in res.output
    assert ds.load_jsonl(out) == ds.word_problems(12, seed=3)
    res = runner.invoke(app, ["data", "--generator", "addition", "--n", "5", "--options", "digits=3",
                              "--out", str(out)])
    assert res.exit_code == 0 and all(len(e.answer) >= 3 for e in ds.load_jsonl(out))
    res = runner.invoke(app, ["data", "--generator", "nope", "--out", str(out)])
    assert res.exit_code == 2 and "--generator: expected one of" in res.output and "'nope'" in res.output


def test_dataset_specs(tmp_path: Path) -> None:
    assert load_dataset("generator:addition:7:2:digits=1") == ds.addition(7, seed=2, digits=1)
    assert load_dataset("generator:word_problems:4:1:steps=2") == ds.word_problems(4, seed=1, steps=(2,))
    p = tmp_path / "g.jsonl"
    p.write_text(json.dumps({"question": "q", "answer": "x #### 5"}) + "\n")
    assert load_dataset(f"gsm8k:{p}")[0].answer == "5"
    with pytest.raises(ValueError, match="no such file"):
        load_dataset(str(tmp_path / "missing.jsonl"))


def test_strategy_registry() -> None:
    s = build_strategy("majority:n=B,temperature=0.7", budget=4)
    assert s.n == 4 and s.params.temperature == 0.7  # type: ignore[attr-defined]
    assert build_strategy("greedy").params.temperature == 0.0  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown 'nope'"):
        build_strategy("nope")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus'\]"):
        build_strategy("majority:bogus=1")
    with pytest.raises(ValueError, match="uses B but no budget"):
        build_strategy("majority:n=B")
    with pytest.raises(ValueError, match="key=value"):
        build_strategy("majority:8")


def test_registered_sc_and_deepconf_when_importable() -> None:
    pytest.importorskip("ttc.strategies.self_consistency")
    s = build_strategy("sc:rule=beta,max=B", budget=2)  # budget below the rule's minimum of 4
    assert s.max_samples == 2  # type: ignore[attr-defined]
    assert build_strategy("sc:rule=esc,max=B", budget=16).max_samples == 16  # type: ignore[attr-defined]
    pytest.importorskip("ttc.strategies.deepconf")
    d = build_strategy("deepconf:mode=offline,max=B", budget=8)
    assert d.max_traces == 8  # type: ignore[attr-defined]


class _StallsAfter(ScriptedEngine):
    """Answers its first ``n`` calls, then never answers (until cancelled): a run on it
    cannot finish before the test cancels it, however loaded the machine is."""

    def __init__(self, n: int, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.n, self.started = n, 0

    async def _generate(self, prompt, params, billing):  # type: ignore[no-untyped-def]
        self.started += 1
        if self.started > self.n:
            await asyncio.Event().wait()
        return await super()._generate(prompt, params, billing)


async def test_run_resumes_after_cancellation(tmp_path: Path) -> None:
    exs = ds.addition(12, seed=0, digits=1)
    out = tmp_path / "results.jsonl"
    eng = _StallsAfter(6, _answer_script(), delay=0.05)
    strat = lambda: build_strategy("majority:n=3")  # noqa: E731
    task = asyncio.ensure_future(run_dataset(strat, exs, eng, Budget(generations=3), out, concurrency=2,
                                             progress=False))
    while not out.exists() or len(out.read_text().splitlines()) < 4:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    first = [json.loads(line) for line in out.read_text().splitlines()]
    # the header records what the strategy is (its description), not how it was written
    assert first[0]["type"] == "header" and first[0]["strategy"] == build_strategy("best_of_n:n=3").describe()
    assert 4 <= len(first) - 1 < 12
    # a kill mid-write leaves a torn line: it is dropped, its question redone
    with out.open("a") as f:
        f.write('{"type": "result", "id": "add-0-11", "corr')
    eng2 = ScriptedEngine(_answer_script(), delay=0.0)
    rows = await run_dataset(strat, exs, eng2, Budget(generations=3), out, concurrency=3, progress=False)
    assert eng2.calls == 12 - (len(first) - 1)  # only the missing questions ran
    final = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in final[1:]) == sorted(e.id for e in exs)  # each exactly once
    assert final[: len(first)] == first  # nothing computed was lost or rewritten
    assert len(rows) == 12
    for r in final[1:]:
        assert r["correct"] == (r["answer"] == r["reference"])
        assert len(r["samples"]) == 3 and r["usage"]["generations"] == 3


async def test_run_progress_bar_and_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exs = ds.addition(4, seed=1, digits=1)

    def script(prompt: Prompt, i: int, rng: np.random.Generator) -> str:
        if i == 1:  # the second question served fails
            raise RuntimeError("boom")
        return _answer_script(1.0)(prompt, i, rng)

    out = tmp_path / "r.jsonl"
    with pytest.raises(RuntimeError, match=r"1 question\(s\) failed \(first: add-1-1.* 3 results are saved"):
        await run_dataset(build_strategy("greedy"), exs, ScriptedEngine(script), None, out, concurrency=1,
                          progress=True)
    err = capsys.readouterr().err
    assert "greedy" in err and "acc=1.000" in err and "tokens=" in err
    assert len(out.read_text().splitlines()) == 1 + 3  # the header, then the results


async def test_replay_and_report_commands(tmp_path: Path) -> None:
    pytest.importorskip("ttc.strategies.self_consistency")
    exs = ds.addition(6, seed=0, digits=1)
    pool_path = tmp_path / "pool.jsonl.gz"
    await record_pool(ScriptedEngine(_answer_script(0.5), confidence=lambda t, j: 0.8), exs, pool_path, k=8,
                      params=SamplingParams(max_tokens=16), logprobs=2, progress=False)
    out = tmp_path / "replay.jsonl"
    args = ["replay", "--pool", str(pool_path), "-s", "majority:n=B;sc:rule=beta,max=B", "--budgets", "1,4,8",
            "--seeds", "2", "--out", str(out)]
    res = await asyncio.to_thread(runner.invoke, app, args)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["type"] == "header" and rows[0]["seeds"] == 2
    rows = rows[1:]
    replays = [r for r in rows if r["type"] == "replay"]
    assert len(replays) == 2 * 3 * 6
    assert {r["strategy"] for r in rows} == {"majority:n=B", "sc:rule=beta,max=B", "pass@k (oracle)",
                                             "best-of-k (mean logprob)"}
    assert all(r["generations"] <= r["budget"] for r in replays)
    # resuming a finished replay does nothing new
    res = await asyncio.to_thread(runner.invoke, app, args)
    assert res.exit_code == 0 and len(out.read_text().splitlines()) == 1 + len(rows)
    png, md = tmp_path / "pareto.png", tmp_path / "table.md"
    res = await asyncio.to_thread(runner.invoke, app,
                                  ["report", str(out), "--png", str(png), "--md", str(md)])
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
    table = md.read_text()
    assert "| majority:n=B | 8 |" in table and "pass@k (oracle)" in table
    # too large a budget for the pool is refused with a clear message
    res = await asyncio.to_thread(runner.invoke, app, ["replay", "--pool", str(pool_path),
                                                       "-s", "majority:n=B",
                                                       "--budgets", "16", "--out", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2 and "more than the pool's 8 samples" in res.output


def test_report_on_run_results(tmp_path: Path) -> None:
    rows = [{"type": "result", "id": str(i), "spec": "majority:n=3", "correct": i % 2 == 0, "latency_s": 0.1,
             "usage": {"prompt_tokens": 10, "completion_tokens": 30, "calls": 1, "generations": 3}}
            for i in range(10)]
    p = tmp_path / "results.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = runner.invoke(app, ["report", str(p)])
    assert res.exit_code == 0, res.output
    assert "| majority:n=3 | - | 0.500 [0.237, 0.763] | 30.0 |" in res.output
