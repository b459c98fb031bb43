"""Bad input, table-driven: every case on the command line exits with code 2 and one line
``error: ...`` naming the option or key (typer's own parse errors: exit 2 naming the
option), with no traceback; every bad constructor argument in the API raises
``TypeError``/``ValueError`` naming the argument. No engine is ever built here: a case
that got past the checks would fail the test instead of starting vLLM."""

from __future__ import annotations

import gzip
import json
import math
import socket
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ttc.bench import cli
from ttc.bench import datasets as ds
from ttc.bench.pool import record_pool
from ttc.bench.replay import ReplayEngine
from ttc.bench.runner import replay_grid, run_dataset
from ttc.budget import Budget
from ttc.engines import ScriptedEngine
from ttc.routers.classifiers import KNN, LogisticRegression, NearestPrototype
from ttc.strategies.deepconf import DeepConf
from ttc.strategies.particle_filter import ParticleFiltering
from ttc.strategies.rpc import ComplexityVoting, PerplexityConsistency
from ttc.strategies.self_consistency import SelfConsistency
from ttc.strategies.self_eval import SelfEvalGate, SelfEvalPruning
from ttc.strategies.simple import BestOfN, Greedy
from ttc.strategies.stopping import BetaRule, CertaindexEntropy, DirichletRule, ESCWindow, FixedN
from ttc.strategies.tree_search import BeamSearch
from ttc.sync import run_sync
from ttc.types import SamplingParams
from ttc.verifiers.judge import LLMJudge
from ttc.verifiers.reward_model import RemoteRewardModel
from ttc.verifiers.rules import ArithmeticCheck
from ttc.verifiers.self_certainty import MeanLogprob, SelfCertainty

runner = CliRunner()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad")

    def jl(name: str, rows: list[Any]) -> str:
        p = d / name
        p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
        return str(p)

    f = {
        "ok": jl("ok.jsonl", [{"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)}
                               for i in range(3)]),
        "null": jl("null.jsonl", [{"question": "q", "answer": None}]),
        "dup": jl("dup.jsonl", [{"id": "a", "question": "q", "answer": "1"}, {"id": "a", "question": "r", "answer": "2"}]),
        "boolans": jl("boolans.jsonl", [{"question": "q", "answer": True}]),
        "listq": jl("listq.jsonl", [{"question": ["q"], "answer": "1"}]),
        "notjson": jl("notjson.jsonl", [{"question": "q", "answer": "1"}, "{oops"]),
        "array": jl("array.jsonl", [[1, 2]]),
        "empty": jl("empty.jsonl", []),
        "extra": jl("extra.jsonl", [{"question": "q", "answer": "1", "colour": "red"}]),
        "emptyq": jl("emptyq.jsonl", [{"question": "  ", "answer": "1"}]),
        "gsm_noh": jl("gsm.jsonl", [{"question": "q", "answer": "no hashes"}]),
        "mc_bad": jl("mc.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 7}]),
        "results_empty": jl("results_empty.jsonl", []),
        "dir": str(d / "adir"),
        "pool": str(d / "pool.jsonl.gz"),
        "trunc": str(d / "trunc.jsonl.gz"),
        "closed": str(_closed_port()),
    }
    (d / "adir").mkdir()
    (d / "binary.jsonl").write_bytes(b"\xff\xfe\x00\x01\n")
    f["binary"] = str(d / "binary.jsonl")
    exs = [ds.Example(id=f"q{i}", question=f"What is {i} + 1?", answer=str(i + 1)) for i in range(4)]
    run_sync(record_pool(ScriptedEngine(["The answer is 2."]), exs, f["pool"], k=4, logprobs=2,
                         params=SamplingParams(max_tokens=8), progress=False))
    data = Path(f["pool"]).read_bytes()
    Path(f["trunc"]).write_bytes(data[: len(data) // 2])
    return f


@pytest.fixture(autouse=True)
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: Any, **k: Any) -> None:
        raise AssertionError("a bad input got as far as building an engine")

    monkeypatch.setattr(cli, "make_engine", refuse)


OUT = "--out={dir}/../o.jsonl"
RUN = ["run", "--dataset={ok}", OUT]
OPENAI = ["--engine=openai", "--base-url=http://127.0.0.1:{closed}/v1"]
REC = ["record", "--dataset={ok}", "--out={dir}/../p.jsonl"]
REPLAY = ["replay", "--pool={pool}", "-s", "majority:n=B", "--budgets=1,2", "--out={dir}/../r.jsonl"]

#: (arguments, what the error must name). Options parsed by typer itself are marked
#: with a leading "typer:" in the expectation.
CASES: list[tuple[list[str], str]] = [
    # ttc data
    (["data", "--generator=nope", OUT], "--generator"),
    (["data", "--generator=addition", "--n=0", OUT], "--n"),
    (["data", "--generator=addition", "--n=-5", OUT], "--n"),
    (["data", "--generator=addition", "--seed=-1", OUT], "--seed"),
    (["data", "--generator=addition", "--options=bogus=1", OUT], "bogus"),
    (["data", "--generator=addition", "--options=digits=0", OUT], "digits"),
    (["data", "--generator=addition", "--options=digits=abc", OUT], "digits"),
    (["data", "--generator=addition", "--options=digits=1.5", OUT], "digits"),
    (["data", "--generator=addition", "--options=digits", OUT], "key=value"),
    (["data", "--generator=addition", "--options=digits=1,digits=2", OUT], "digits given twice"),
    (["data", "--generator=addition", "--out={dir}"], "--out"),
    (["data", "--generator=word_problems", "--options=steps=0", OUT], "steps"),
    (["data", "--generator=addition", "--n=abc", OUT], "typer:--n"),
    # ttc run: datasets
    (["run", "--dataset=generator:addition:5:0:bogus=1", OUT], "bogus"),
    (["run", "--dataset=gsm8k:/missing", OUT], "no such file '/missing'"),
    (["run", "--dataset=/missing.jsonl", OUT], "no such file"),
    (["run", "--dataset=", OUT], "dataset: empty"),
    (["run", "--dataset=generator:nope:5", OUT], "unknown generator 'nope'"),
    (["run", "--dataset=generator:addition", OUT], "generator:NAME:N"),
    (["run", "--dataset=generator:addition:x", OUT], "N: expected an integer"),
    (["run", "--dataset=generator:addition:0", OUT], "N: expected an integer in [1"),
    (["run", "--dataset=generator:addition:5:-1", OUT], "SEED"),
    (["run", "--dataset=generator:addition:5:0:digits=99", OUT], "digits"),
    (["run", "--dataset={null}", OUT], "'answer' is null"),
    (["run", "--dataset={dup}", OUT], "duplicate id 'a'"),
    (["run", "--dataset={boolans}", OUT], "'answer' must be a string or a number"),
    (["run", "--dataset={listq}", OUT], "'question' must be a string"),
    (["run", "--dataset={notjson}", OUT], "notjson.jsonl:2: not JSON"),
    (["run", "--dataset={array}", OUT], "array.jsonl:1: expected a JSON object"),
    (["run", "--dataset={empty}", OUT], "no examples"),
    (["run", "--dataset={extra}", OUT], "colour"),
    (["run", "--dataset={emptyq}", OUT], "'question' is empty"),
    (["run", "--dataset={dir}", OUT], "is a directory"),
    (["run", "--dataset=gsm8k:{gsm_noh}", OUT], "no '####'"),
    (["run", "--dataset=mc:{mc_bad}", OUT], "answer 7 is not one of the 2 choices"),
    (["run", "--dataset=mc:{ok}", OUT], "no 'choices'"),
    (["run", "--dataset=math500:{ok}", OUT], "missing field(s) ['problem']"),
    (["run", "--dataset={binary}", OUT], "not UTF-8"),
    # ttc run: strategies
    ([*RUN, "--strategy=nope"], "unknown 'nope'"),
    ([*RUN, "--strategy="], "empty strategy name"),
    ([*RUN, "--strategy=majority:n=8,n=2"], "n given twice"),
    ([*RUN, "--strategy=majority:n=0"], "n: expected an integer in [1"),
    ([*RUN, "--strategy=majority:n=abc"], "n: expected an integer"),
    ([*RUN, "--strategy=majority:n=2.5"], "n: expected an integer"),
    ([*RUN, "--strategy=majority:n=B"], "uses B but no budget"),
    ([*RUN, "--strategy=majority:8"], "expected key=value"),
    ([*RUN, "--strategy=majority:temperature=1e9"], "temperature: expected a number in [0, 2]"),
    ([*RUN, "--strategy=majority:temperature=-0.1"], "temperature"),
    ([*RUN, "--strategy=majority:temperature=nan"], "temperature"),
    ([*RUN, "--strategy=majority:top_p=0"], "top_p"),
    ([*RUN, "--strategy=majority:max_tokens=0"], "max_tokens"),
    ([*RUN, "--strategy=majority:bogus=1"], "unknown option(s) ['bogus']"),
    ([*RUN, "--strategy=majority:n="], "n: empty value"),
    ([*RUN, "--strategy=majority:=3"], "empty key"),
    ([*RUN, "--strategy=rpc:prune=maybe"], "prune: expected true/false/1/0/yes/no"),
    ([*RUN, "--strategy=rpc:prune=B"], "prune"),
    ([*RUN, "--strategy=sc:rule=nope"], "rule: expected one of"),
    ([*RUN, "--strategy=sc:rule=beta,threshold=1.5"], "threshold"),
    ([*RUN, "--strategy=sc:rule=beta,w=3"], "['w'] do not apply with rule=beta"),
    ([*RUN, "--strategy=sc:max=0"], "max"),
    ([*RUN, "--strategy=sc:rule=fixed,n=0"], "n"),
    ([*RUN, "--strategy=deepconf:mode=sideways"], "mode"),
    ([*RUN, "--strategy=deepconf:eta=0"], "eta"),
    ([*RUN, "--strategy=deepconf:max=8,n=8"], "max or n"),
    ([*RUN, "--strategy=deepconf:metric=median"], "metric"),
    ([*RUN, "--strategy=greedy:temperature=0.5"], "unknown option(s) ['temperature']"),
    # ttc run: other options
    ([*RUN, "--prompt-style=bogus"], "--prompt-style"),
    ([*RUN, "--limit=-1"], "--limit"),
    ([*RUN, "--limit=0"], "--limit"),
    ([*RUN, "--concurrency=0"], "--concurrency"),
    ([*RUN, "--seed=-1"], "--seed"),
    ([*RUN, "--budget=bogus=1"], "--budget: unknown option(s) ['bogus']"),
    ([*RUN, "--budget=calls=0"], "calls"),
    ([*RUN, "--budget=calls=abc"], "calls"),
    ([*RUN, "--budget="], "--budget: empty"),
    ([*RUN, "--budget=wall_seconds=-1"], "wall_seconds"),
    ([*RUN, "--budget=calls=2,calls=3"], "calls given twice"),
    ([*RUN, "--engine=bogus"], "--engine"),
    ([*RUN, "--engine=openai"], "--base-url: required"),
    ([*RUN, "--engine=openai", "--base-url=notaurl"], "--base-url: expected an http(s) URL"),
    ([*RUN, *OPENAI], "--base-url: cannot connect"),
    ([*RUN, "--engine=openai", "--base-url=http://me:hunter2@127.0.0.1:{closed}/v1"], "--base-url: cannot connect"),
    ([*RUN, *OPENAI, "--request-timeout=0"], "--request-timeout"),
    ([*RUN, *OPENAI, "--request-timeout=-5"], "--request-timeout"),
    ([*RUN, *OPENAI, "--request-timeout=nan"], "--request-timeout"),
    ([*RUN, *OPENAI, "--dtype=float16"], "--dtype: applies to --engine vllm only"),
    ([*RUN, *OPENAI, "--tokenizer=/missing/tok"], "--tokenizer"),
    ([*RUN, "--dtype=fp64"], "dtype"),
    ([*RUN, "--base-url=http://127.0.0.1:1/v1"], "--base-url: applies to --engine openai only"),
    ([*RUN, "--request-timeout=10"], "--request-timeout: applies to --engine openai only"),
    ([*RUN, "--model=/missing/model"], "--model"),
    ([*RUN, "--kv-cache-gib=0"], "--kv-cache-gib"),
    ([*RUN, "--max-model-len=0"], "--max-model-len"),
    (["run", "--dataset={ok}", "--out={dir}"], "--out"),
    (["run", "--dataset={ok}", "--out={ok}/x.jsonl"], "--out"),
    (["run", "--dataset={ok}", "--out={pool}"], "does not start with a ttc run header"),
    ([*RUN, "--limit=abc"], "typer:--limit"),
    ([*RUN, "--concurrency=1.5"], "typer:--concurrency"),
    # ttc record
    ([*REC, "--temperature=-1"], "--temperature"),
    ([*REC, "--temperature=3"], "--temperature"),
    ([*REC, "--top-p=0"], "--top-p"),
    ([*REC, "--top-p=1.5"], "--top-p"),
    ([*REC, "--max-tokens=0"], "--max-tokens"),
    ([*REC, "--logprobs=21"], "--logprobs"),
    ([*REC, "--logprobs=-1"], "--logprobs"),
    ([*REC, "--k=0"], "--k"),
    ([*REC, "--concurrency=0"], "--concurrency"),
    ([*REC, "--prompt-style=bogus"], "--prompt-style"),
    ([*REC, "--limit=0"], "--limit"),
    (["record", "--dataset={dup}", "--out={dir}/../p.jsonl"], "duplicate id"),
    (["record", "--dataset={ok}", "--out={dir}/../o2.jsonl", *OPENAI], "--base-url: cannot connect"),
    # ttc replay
    (["replay", "--pool=/missing", "-s", "majority:n=B", "--out={dir}/../r.jsonl"], "--pool: no such file"),
    (["replay", "--pool={dir}", "-s", "majority:n=B", "--out={dir}/../r.jsonl"], "--pool"),
    ([*REPLAY, "--budgets="], "--budgets"),
    ([*REPLAY, "--budgets=a,b"], "--budgets: 'a' is not an integer"),
    ([*REPLAY, "--budgets=0,1"], "--budgets: 0 is not >= 1"),
    ([*REPLAY, "--budgets=1,1"], "--budgets: 1 given twice"),
    ([*REPLAY, "--budgets=1,,2"], "--budgets"),
    ([*REPLAY, "--budgets=64"], "more than the pool's 4 samples"),
    ([*REPLAY, "--seeds=0"], "--seeds"),
    ([*REPLAY, "--seeds=-2"], "--seeds"),
    ([*REPLAY, "--limit=0"], "--limit"),
    ([*REPLAY, "-s", "nope"], "unknown 'nope'"),
    ([*REPLAY, "-s", "majority:n=B,n=2"], "n given twice"),
    ([*REPLAY, "-s", "sc:rule=beta,max=B,temperature=high"], "temperature"),
    (["replay", "--pool={pool}", "-s", ";", "--out={dir}/../r.jsonl"], "--strategies: no strategy spec"),
    (["replay", "--pool={ok}", "-s", "majority:n=B", "--out={dir}/../r.jsonl"], "not a ttc pool"),
    (["replay", "--pool={trunc}", "-s", "majority:n=B", "--budgets=1", "--out={dir}/../r.jsonl"],
     "trunc.jsonl.gz: damaged record at line"),
    (["replay", "--pool={pool}", "-s", "majority:n=B", "--out={dir}"], "--out"),
    ([*REPLAY, "--seeds=x"], "typer:--seeds"),
    # ttc report
    (["report", "/missing.jsonl"], "no such file"),
    (["report", "{ok}", "--x=bogus"], "--x"),
    (["report", "{dir}"], "is a directory"),
    (["report", "{results_empty}"], "no results"),
    (["report", "{ok}"], "not a ttc run or replay row"),
    (["report", "{pool}"], "not a ttc run or replay row"),
    (["report", "{ok}", "--png={dir}"], "--png"),
]


@pytest.mark.parametrize("args,expect", CASES, ids=[" ".join(a)[:70] for a, _ in CASES])
def test_bad_cli_input_is_one_line_and_exit_2(args: list[str], expect: str, files: dict[str, str]) -> None:
    argv = [a.format(**files) for a in args]
    res = runner.invoke(cli.app, argv)
    out = res.output
    assert "Traceback" not in out and (res.exception is None or isinstance(res.exception, SystemExit)), out
    assert res.exit_code == 2, out
    if expect.startswith("typer:"):  # typer's own message box: the option is named
        assert expect[len("typer:"):] in " ".join(out.replace("│", " ").split()), out
        return
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    assert expect.format(**files) in lines[0], out
    assert "hunter2" not in out  # a password in a URL never shows


def test_the_table_covers_the_reported_inputs() -> None:
    """The inputs the issue lists are all in the table."""
    flat = {" ".join(a) for a, _ in CASES}
    for needle in ("generator:addition:5:0:bogus=1", "gsm8k:/missing", "--pool=/missing", "--budgets=",
                   "--temperature=-1", "--x=bogus", "--prompt-style=bogus", "--limit=-1", "--limit=0",
                   "--concurrency=0", "--seeds=0", "majority:n=8,n=2", "prune=maybe", "{null}", "{dup}",
                   "temperature=1e9"):
        assert any(needle in f for f in flat), needle
    assert len(CASES) >= 90


def test_rpc_prune_words_are_parsed_strictly() -> None:
    assert cli.build_strategy("rpc:prune=no,n=4").voter is not None  # type: ignore[attr-defined]
    from ttc.bench.specs import strategy_options

    for word, value in (("no", False), ("NO", False), ("0", False), ("false", False), ("yes", True),
                        ("1", True), ("True", True)):
        assert strategy_options(f"rpc:prune={word}")[1] == {"prune": value}
    for word in ("nope", "2", "on", "off", "y"):
        with pytest.raises(ValueError, match="prune: expected true/false"):
            strategy_options(f"rpc:prune={word}")


def test_equivalent_specs_have_one_canonical_form() -> None:
    from ttc.bench.specs import canonical_spec

    assert canonical_spec("best_of_n:max_tokens=16,n=2") == canonical_spec("majority:n=2,max_tokens=16")
    assert canonical_spec("majority:temperature=1") == canonical_spec("majority:temperature=1.0")
    assert canonical_spec("majority:n=2") != canonical_spec("majority:n=3")


# -- the API ------------------------------------------------------------------------------------
API_CASES: list[tuple[Any, type[Exception], str]] = [
    (lambda: BestOfN("8"), TypeError, "n: expected an integer"),
    (lambda: BestOfN(2.5), TypeError, "n: expected an integer"),
    (lambda: BestOfN(True), TypeError, "n: expected an integer"),
    (lambda: BestOfN(0), ValueError, "n: must be >= 1"),
    (lambda: BestOfN(4, params={"temperature": 1}), TypeError, "params"),
    (lambda: BestOfN(4, verifier="rm"), TypeError, "verifier"),
    (lambda: BestOfN(4, weighted="yes"), TypeError, "weighted"),
    (lambda: Greedy(params=SamplingParams), TypeError, "params"),
    (lambda: FixedN("3"), TypeError, "n: expected an integer"),
    (lambda: FixedN(0), ValueError, "n: must be >= 1"),
    (lambda: BetaRule(threshold=1.5), ValueError, "threshold"),
    (lambda: BetaRule(threshold=math.nan), ValueError, "threshold"),
    (lambda: BetaRule(threshold="0.9"), TypeError, "threshold"),
    (lambda: BetaRule(max_samples=2.0), TypeError, "max_samples"),
    (lambda: DirichletRule(draws=0), ValueError, "draws"),
    (lambda: ESCWindow(w=0), ValueError, "w"),
    (lambda: ESCWindow(w=5, L=3), ValueError, "L"),
    (lambda: CertaindexEntropy(threshold=0), ValueError, "threshold"),
    (lambda: SelfConsistency("beta"), TypeError, "rule"),
    (lambda: SelfConsistency(FixedN(4), max_samples=0), ValueError, "max_samples"),
    (lambda: SelfConsistency(FixedN(4), batch_sizes=(0,)), ValueError, "batch_sizes"),
    (lambda: SelfConsistency(FixedN(4), batch_sizes="4"), TypeError, "batch_sizes"),
    (lambda: SelfConsistency(FixedN(4), weighting="loudest"), ValueError, "weighting"),
    (lambda: SelfConsistency(FixedN(4), voter=3), TypeError, "voter"),
    (lambda: PerplexityConsistency(n="16"), TypeError, "n"),
    (lambda: PerplexityConsistency(prune="no"), TypeError, "prune"),
    (lambda: ComplexityVoting(top_k=0), ValueError, "top_k"),
    (lambda: DeepConf("sideways"), ValueError, "mode"),
    (lambda: DeepConf("online", parallelism=0), ValueError, "parallelism"),
    (lambda: DeepConf("online", eta=math.inf), ValueError, "eta"),
    (lambda: DeepConf("online", tau=2), ValueError, "tau"),
    (lambda: DeepConf("online", top_k=50), ValueError, "top_k"),
    (lambda: DeepConf("offline", max_traces="8"), TypeError, "max_traces"),
    (lambda: ReplayEngine(42), TypeError, "pool"),
    (lambda: ReplayEngine({"q": ["text"]}), TypeError, "pool"),
    (lambda: ReplayEngine({"q": []}, seed="1"), TypeError, "seed"),
    (lambda: ReplayEngine({"q": []}, delay=-1), ValueError, "delay"),
    (lambda: ds.addition(5, digits=0), ValueError, "digits"),
    (lambda: ds.addition("5"), TypeError, "n"),
    (lambda: ds.word_problems(5, steps=(0,)), ValueError, "steps"),
    (lambda: Budget(calls=0), ValueError, "calls"),
    (lambda: BeamSearch(n="8"), TypeError, "n: expected an integer"),
    (lambda: ParticleFiltering(2.0), TypeError, "n: expected an integer"),
    (lambda: ParticleFiltering(4, temperature=math.nan), ValueError, "temperature"),
    (lambda: SelfEvalGate(threshold="0.5"), TypeError, "threshold"),
    (lambda: SelfEvalPruning(n=0), ValueError, "n: must be >= 1"),
    (lambda: SelfCertainty(k=0), ValueError, "k: must be >= 1"),
    (lambda: MeanLogprob(raw="yes"), TypeError, "raw"),
    (lambda: ArithmeticCheck(mismatch=2), ValueError, "mismatch"),
    (lambda: LLMJudge(top_k=0), ValueError, "top_k"),
    (lambda: RemoteRewardModel("localhost:8000", "rm"), ValueError, "base_url"),
    (lambda: KNN(k=0.5), TypeError, "k: expected an integer"),
    (lambda: NearestPrototype(temperature=math.nan), ValueError, "temperature"),
    (lambda: LogisticRegression(max_iter=0), ValueError, "max_iter"),
]


@pytest.mark.parametrize("make,exc,name", API_CASES, ids=[c[2] + f"-{i}" for i, c in enumerate(API_CASES)])
def test_bad_api_argument_fails_at_construction(make: Any, exc: type[Exception], name: str) -> None:
    with pytest.raises(exc, match=name):
        make()


@pytest.mark.parametrize("budget", [{"completion_tokens": 100}, 100, "calls=3"])
async def test_a_budget_that_is_not_a_budget_is_a_type_error(budget: Any) -> None:
    with pytest.raises(TypeError, match="budget: expected a ttc.Budget"):
        await Greedy().run("What is 2 + 2?", ScriptedEngine(["4"]), budget)


async def test_entry_points_check_their_arguments(tmp_path: Path) -> None:
    exs = ds.addition(3, seed=0)
    eng = ScriptedEngine(["The answer is 4."])
    with pytest.raises(ValueError, match="concurrency"):
        await run_dataset(Greedy(), exs, eng, None, tmp_path / "o.jsonl", concurrency=0, progress=False)
    with pytest.raises(ValueError, match="prompt_style"):
        await run_dataset(Greedy(), exs, eng, None, tmp_path / "o.jsonl", prompt_style="bogus", progress=False)
    with pytest.raises(TypeError, match="budget"):
        await run_dataset(Greedy(), exs, eng, {"calls": 1}, tmp_path / "o.jsonl", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate id"):
        await run_dataset(Greedy(), exs + exs[:1], eng, None, tmp_path / "o.jsonl", progress=False)
    assert not (tmp_path / "o.jsonl").exists()  # nothing was written for bad input
    with pytest.raises(ValueError, match="k: must be >= 1"):
        await record_pool(eng, exs, tmp_path / "p.jsonl", k=0, progress=False)
    with pytest.raises(ValueError, match="duplicate id"):
        await record_pool(eng, exs + exs[:1], tmp_path / "p.jsonl", k=1, progress=False)
    pool = await record_pool(eng, exs, tmp_path / "p.jsonl", k=2, progress=False)
    with pytest.raises(ValueError, match="seeds: must be >= 1"):
        await replay_grid(pool, ["majority:n=B"], [1], seeds=0, progress=False)
    with pytest.raises(TypeError, match="budgets"):
        await replay_grid(pool, ["majority:n=B"], ["1"], progress=False)  # type: ignore[list-item]


async def test_huge_n_never_allocates_per_requested_sample() -> None:
    """SelfConsistency(FixedN(10**6)) on a 64-token budget draws what the budget holds, at
    once, without a task (or memory) per requested sample."""
    eng = ScriptedEngine(["The answer is 4."])
    sc = SelfConsistency(FixedN(10**6), params=SamplingParams(max_tokens=7))
    tracemalloc.start()
    try:
        t0 = time.monotonic()
        r = await sc.run("What is 2 + 2?", eng, Budget(completion_tokens=64))
        took = time.monotonic() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.stop_reason == "budget" and r.budget_detail == "completion_tokens"
    assert len(r.samples) == 64 // 7  # every draw whose worst case fits, no more
    assert r.usage.completion_tokens <= 64 and r.answer == "4"
    assert took < 2.0, took
    assert peak < 20e6, peak
    # unlimited budget: batches of at most 256 draws, each run to the end
    r = await SelfConsistency(FixedN(600), params=SamplingParams(max_tokens=7)).run("What is 2 + 2?", eng)
    assert len(r.samples) == 600 and r.meta["batches"] == [256, 256, 88]


async def test_huge_deepconf_offline_draws_only_what_the_budget_holds() -> None:
    eng = ScriptedEngine(["The answer is 4."], confidence=lambda t, j: 0.7)
    dc = DeepConf("offline", max_traces=10**6, n_init=10**6, params=SamplingParams(max_tokens=7))
    t0 = time.monotonic()
    r = await dc.run("What is 2 + 2?", eng, Budget(completion_tokens=64))
    assert time.monotonic() - t0 < 2.0
    assert r.stop_reason == "budget" and len(r.samples) == 64 // 7 and r.answer == "4"


def test_scripted_gzip_is_what_a_pool_is(files: dict[str, str]) -> None:
    """The fixture pool is a readable gzip file (guards the damage cases above)."""
    assert gzip.decompress(Path(files["pool"]).read_bytes()).count(b"\n") == 5
