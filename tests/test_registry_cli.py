"""``ttc run --strategy NAME`` for every registered strategy name (the bare name and a small
config), in process on a ScriptedEngine, and through the HTTP stack for a few; ``ttc
replay`` for every name that can run on a pool, and a one-line refusal naming the reason
for the others; ``--config`` files; ``ttc strategies``."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ttc import registry
from ttc.bench import cli
from ttc.bench import datasets as ds
from ttc.bench.pool import record_pool
from ttc.engines import ScriptedEngine
from ttc.types import Prompt, SamplingParams

runner = CliRunner()
RUNNABLE = registry.list_names(registry.RUNNABLE)
REPLAYABLE = [n for n in RUNNABLE if registry.lookup(n).replay]

#: A small configuration of every runnable name (few samples, short generations): the
#: scripted runs here and the real-engine runs of ``test_registry_real.py``.
SMALL: dict[str, str] = {
    "allocator": "allocator:max_samples=2,initial_k=2,params.max_tokens=16",
    "beam_search": "beam:n=2,m=1,params.max_tokens=16,policy.max_steps=2,policy.max_step_tokens=8",
    "best_of_n": "majority:n=2,max_tokens=16",
    "complexity_voting": "complexity:n=2,params.max_tokens=16",
    "compute_optimal": "compute_optimal:params.max_tokens=16,batch=1",
    "deepconf": "deepconf:mode=offline,max=2,max_tokens=16,window=4",
    "dvts": "dvts:n=2,m=1,params.max_tokens=16,policy.max_steps=2,policy.max_step_tokens=8",
    "dynasor_cot": "dynasor:max_tokens=16,chunk_tokens=8,k=2,probe_max_tokens=4",
    "early_exit_self_consistency": "early_exit_sc:rule=fixed,rule.n=2,max_samples=2,early_exit=early_exit,"
                                   "early_exit.max_tokens=16,early_exit.chunk_tokens=8,early_exit.probe_max_tokens=4",
    "greedy": "greedy:max_tokens=16",
    "particle_filtering": "pf:n=2,params.max_tokens=16,policy.max_steps=2,policy.max_step_tokens=8",
    "particle_gibbs": "pg:n=2,sweeps=2,params.max_tokens=16,policy.max_steps=2,policy.max_step_tokens=8",
    "perplexity_consistency": "rpc:n=2,max_tokens=16",
    "self_consistency": "sc:max=2,max_tokens=16",
    "self_eval_gate": "self_eval:max_samples=2,params.max_tokens=16",
    "self_eval_pruning": "self_eval_pruning:n=2,prefix_tokens=8,max_tokens=16",
    "semantic_router": "router:policy.routes.math.strategy.max_samples=2,"
                       "policy.routes.math.strategy.params.max_tokens=16,"
                       "policy.routes.other.strategy=greedy,policy.routes.other.strategy.params.max_tokens=16",
}


def _answer(prompt: Prompt, i: int, rng: np.random.Generator) -> str:
    nums = [int(x) for x in re.findall(r"\d+", prompt.question)[:2]]
    total = sum(nums) if nums else 0
    if rng.random() < 0.3:
        total += 1
    return f"{' + '.join(map(str, nums)) or '0'} = {total}.\n\nThe answer is {total}."


@pytest.fixture()
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ScriptedEngine]]:
    """``ttc run`` on a ScriptedEngine instead of vLLM (the engine options are still checked)."""
    made: list[ScriptedEngine] = []

    def start(*args: Any, **kwargs: Any) -> ScriptedEngine:
        made.append(ScriptedEngine(_answer, seed=len(made)))
        return made[-1]

    monkeypatch.setattr(cli, "_start_engine", start)
    yield made


def _run(tmp_path: Path, spec: str, *extra: str, tag: str = "out") -> tuple[Any, list[dict[str, Any]]]:
    out = tmp_path / f"{tag}.jsonl"
    res = runner.invoke(cli.app, ["run", "--dataset", "generator:addition:3:0", "--strategy", spec, "--out", str(out),
                                  "--concurrency", "3", *extra])
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return res, rows


def test_the_small_table_covers_every_runnable_name() -> None:
    assert set(SMALL) == set(RUNNABLE)
    for name, spec in SMALL.items():
        assert registry.build_from_spec(spec).describe()["name"] == name


#: The scripted engine gives every distinct text the same probability, so RPC's probability
#: mass is equal across answers here and its vote is a tie broken at random.
COIN_FLIP = {"perplexity_consistency"}


@pytest.mark.parametrize("name", RUNNABLE)
def test_ttc_run_every_registered_name(name: str, scripted: list[ScriptedEngine], tmp_path: Path) -> None:
    for tag, spec, budget in (("bare", name, "completion_tokens=4000"), ("small", SMALL[name], "calls=64")):
        res, rows = _run(tmp_path, spec, "--budget", budget, tag=tag)
        assert res.exit_code == 0, (spec, res.output)
        head, results = rows[0], rows[1:]
        assert head["type"] == "header" and head["strategy"]["name"] == name and head["spec"] == spec
        assert registry.build(head["strategy"]) == registry.build_from_spec(spec)  # the header rebuilds it
        assert sorted(r["id"] for r in results) == ["add-0-0", "add-0-1", "add-0-2"]
        assert all(r["samples"] and r["usage"]["completion_tokens"] > 0 for r in results), spec
        if name not in COIN_FLIP:
            assert sum(r["correct"] for r in results) >= 1, (spec, [r["answer"] for r in results])
        assert f"{spec}: accuracy" in res.output


def test_the_allocator_runs_the_dataset_as_one_batch(scripted: list[ScriptedEngine], tmp_path: Path) -> None:
    res, rows = _run(tmp_path, "allocator:max_samples=6,initial_k=2", "--budget", "generations=3")
    assert res.exit_code == 0, res.output
    results = rows[1:]
    # one shared budget of 3 x 3 generations, given by expected gain: no question above its cap
    assert sum(r["usage"]["generations"] for r in results) <= 9
    assert all(1 <= len(r["samples"]) <= 6 for r in results)
    assert len({r["latency_s"] for r in results}) == 1  # one batch
    # a rerun resumes: nothing left to do
    res, again = _run(tmp_path, "allocator:max_samples=6,initial_k=2", "--budget", "generations=3")
    assert res.exit_code == 0 and again == rows


def test_run_from_a_config_file(scripted: list[ScriptedEngine], tmp_path: Path) -> None:
    conf = tmp_path / "strategies.yaml"
    conf.write_text("vote:\n  strategy: sc\n  max_samples: 3\n  rule: {name: fixed_n, n: 3}\n"
                    "search:\n  strategy: pf\n  n: 2\n  policy: {max_steps: 2}\n")
    res, rows = _run(tmp_path, "vote", "--config", str(conf))
    assert res.exit_code == 0, res.output
    assert rows[0]["strategy"] == registry.load_config(conf, "vote").describe() and rows[0]["spec"] == "vote"
    assert all(len(r["samples"]) == 3 for r in rows[1:])
    res, _ = _run(tmp_path, "nope", "--config", str(conf), tag="x")
    assert res.exit_code == 2 and "no strategy labelled 'nope'; labels: ['search', 'vote']" in res.output
    conf.write_text("vote:\n  strategy: sc\n  max_samples: lots\n")
    res, _ = _run(tmp_path, "vote", "--config", str(conf), tag="y")
    assert res.exit_code == 2 and "vote: strategy 'sc': max_samples: " in res.output


@pytest.mark.parametrize(("spec", "words"), [
    ("nope", "unknown 'nope'"),
    ("beta", "unknown 'beta'"),  # a stopping rule is not a strategy
    ("pf:verifier=arith", "verifier: expected one of"),
    ("sc:rule=beta,rule.threshold=2", "rule.threshold: must be in (0, 1)"),
    ("router:policy.routes.math.strategy=nope", "policy.routes.math.strategy: expected one of"),
])
def test_bad_strategies_are_one_line_and_exit_2(spec: str, words: str, scripted: list[ScriptedEngine],
                                                tmp_path: Path) -> None:
    res, rows = _run(tmp_path, spec)
    assert res.exit_code == 2 and words in res.output and not rows and not scripted
    assert len([ln for ln in res.output.splitlines() if ln.startswith("error: ")]) == 1


def test_ttc_run_through_the_http_stack(tmp_path: Path) -> None:
    from ttc.testing.fault_server import FaultConfig, FaultServer

    ds_path = tmp_path / "ds.jsonl"
    ds_path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is 2 + 2? (#{i})", "answer": "4"}) + "\n"
                               for i in range(2)))
    with FaultServer(FaultConfig()) as srv:  # answers "The answer is 4." to everything
        for name in ("best_of_n", "particle_filtering", "semantic_router", "allocator", "deepconf"):
            out = tmp_path / f"{name}.jsonl"
            res = runner.invoke(cli.app, ["run", "--dataset", str(ds_path), "--engine", "openai", "--base-url",
                                          srv.base_url, "--strategy", SMALL[name], "--out", str(out)])
            assert res.exit_code == 0, (name, res.output)
            rows = [json.loads(line) for line in out.read_text().splitlines()][1:]
            assert [r["correct"] for r in rows] == [True, True], name


# -- replay ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pool") / "pool.jsonl.gz"
    exs = ds.addition(4, seed=0, digits=1)
    asyncio.run(record_pool(ScriptedEngine(_answer, confidence=lambda t, j: 0.8), exs, path, k=6,
                            params=SamplingParams(max_tokens=16), logprobs=2, progress=False))
    return path


def test_replayable_names() -> None:
    assert set(REPLAYABLE) == {"allocator", "best_of_n", "complexity_voting", "deepconf", "greedy",
                               "perplexity_consistency", "self_consistency"}


def _replay_spec(name: str) -> str:
    return {"allocator": "allocator:max_samples=B", "best_of_n": "majority:n=B", "complexity_voting": "complexity:n=B",
            "deepconf": "deepconf:mode=offline,max=B", "greedy": "greedy", "perplexity_consistency": "rpc:n=B",
            "self_consistency": "sc:rule=beta,max=B"}[name]


def test_ttc_replay_every_replayable_name(pool: Path, tmp_path: Path) -> None:
    specs = [_replay_spec(n) for n in REPLAYABLE]
    out = tmp_path / "replay.jsonl"
    res = runner.invoke(cli.app, ["replay", "--pool", str(pool), "-s", ";".join(specs), "--budgets", "2,4",
                                  "--seeds", "2", "--out", str(out), "--no-estimators"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()][1:]
    got = {(r["strategy"], r["budget"]) for r in rows}
    assert got == {(s, b) for s in specs for b in (2, 4)}
    assert len(rows) == len(specs) * 2 * 4  # a row per (spec, budget, question)
    alloc = [r for r in rows if r["strategy"] == "allocator:max_samples=B"]
    for b in (2, 4):  # the batch shares B generations per question on average
        assert sum(r["generations"] for r in alloc if r["budget"] == b) <= 4 * b + 1e-9
    # the pool's answers are right 70% of the time (a deterministic pool and replay order)
    assert np.mean([r["accuracy"] for r in rows if r["budget"] == 4]) >= 0.5


@pytest.mark.parametrize("name", sorted(set(RUNNABLE) - set(REPLAYABLE)))
def test_replay_refuses_what_cannot_run_on_a_pool(name: str, pool: Path, tmp_path: Path) -> None:
    res = runner.invoke(cli.app, ["replay", "--pool", str(pool), "-s", SMALL[name], "--budgets", "2",
                                  "--out", str(tmp_path / "r.jsonl")])
    assert res.exit_code == 2, res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("error: "))
    assert f"{name} cannot replay on a pool: " in line and registry.lookup(name).why_not_replay in line


def test_the_strategies_command_lists_the_registry() -> None:
    res = runner.invoke(cli.app, ["strategies"])
    assert res.exit_code == 0
    for name in RUNNABLE:
        assert f"| {name} |" in res.output
    res = runner.invoke(cli.app, ["strategies", "--kind", "rule", "--json"])
    assert res.exit_code == 0 and set(json.loads(res.output)) == set(registry.list_names("rule"))
    res = runner.invoke(cli.app, ["strategies", "--kind", "nope"])
    assert res.exit_code == 2


def test_the_reentrancy_test_covers_every_registered_strategy() -> None:
    """A strategy added to the registry must also show that one instance serves concurrent
    runs (tests/test_reentrancy.py; the allocator, a batch, has its own test there)."""
    from test_reentrancy import strategies

    covered = {type(s) for s in strategies().values()}
    missing = [n for n in registry.list_names("strategy") if registry.lookup(n).factory not in covered]
    assert not missing, f"not in the re-entrancy test: {missing}"
