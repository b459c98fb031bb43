"""``ttc bench``: strategies at matched budgets over a benchmark on one engine
(:mod:`ttc.bench.sweep`): the table's figures, resuming, refusing a changed
configuration, config files, every registered strategy, the command line's checks, and
(``real``) GSM8K and MATH-500 questions on the bundled model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ttc import registry
from ttc.bench import cli
from ttc.bench import datasets as ds
from ttc.bench.metrics import wilson_interval
from ttc.bench.runner import ConfigMismatch
from ttc.bench.sweep import check_sweep_resume, item_path, markdown_report, run_config, run_sweep, sweep_items
from ttc.engines import ScriptedEngine
from ttc.types import Prompt

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"

QUESTIONS = [("Halve one.", "\\frac{1}{2}"), ("One plus two.", "3"), ("Two plus two.", "4"), ("Angle?", "90^\\circ")]


def _bench() -> ds.Benchmark:
    exs = [ds.Example(id=f"q{i}", question=q, answer=a) for i, (q, a) in enumerate(QUESTIONS)]
    return ds.benchmark("math500", exs, name="tiny-math")


# Per question, the k-th request for it gets SCRIPT[question][k % 3]: greedy (run first)
# gets sample 0, right on q0 (as 0.5) and q3 (as 90); a majority of three then sees all three
# forms: right on q0 (0.5, \frac12, \dfrac{1}{2} are one answer), q1 and q3; q2 is never right.
SCRIPT = {
    "Halve one.": ["\\boxed{0.5}", "\\boxed{\\frac12}", "\\boxed{\\dfrac{1}{2}}"],
    "One plus two.": ["\\boxed{4}", "\\boxed{3}", "\\boxed{3.0}"],
    "Two plus two.": ["\\boxed{5}", "\\boxed{6}", "\\boxed{7}"],
    "Angle?": ["\\boxed{90}", "\\boxed{90^\\circ}", "\\boxed{90^{\\circ}}"],
}


def _question(prompt: Prompt) -> str:
    text = prompt.messages[-1].content
    assert text.endswith(ds.BOXED_SUFFIX), "the benchmark's prompt suffix is sent"
    return text[: -len(ds.BOXED_SUFFIX)]


def _engine() -> ScriptedEngine:
    seen: dict[str, int] = {}

    def script(prompt: Prompt, i: int, rng: Any) -> str:
        q = _question(prompt)
        k = seen[q] = seen.get(q, -1) + 1
        return f"Reasoning step. So the answer is {SCRIPT[q][k % 3]}."

    return ScriptedEngine(script)


async def test_sweep_table_figures(tmp_path: Path) -> None:
    bench = _bench()
    items = sweep_items(["greedy:max_tokens=32", "majority:n=3,max_tokens=32"], [200])
    engine = _engine()
    table = await run_sweep(bench, items, engine, tmp_path, progress=False)
    by = {r["strategy"]: r for r in table}
    g, m = by["greedy:max_tokens=32"], by["majority:n=3,max_tokens=32"]
    assert (g["questions"], g["correct"], g["samples"], g["pass_at_k"]) == (4, 2, 1.0, None)
    assert (g["accuracy_lo"], g["accuracy_hi"]) == pytest.approx(wilson_interval(2, 4))
    # majority@3: q0, q1 and q3 right by vote (0.5, \frac12 and \dfrac{1}{2} are one answer); q2 never
    assert (m["correct"], m["samples"], m["pass_at_k"]) == (3, 3.0, 0.75)
    assert m["budget"] == 200 and m["name"] == "best_of_n" and g["name"] == "greedy"
    assert m["stop_reasons"] == {"done": 4}
    assert m["completion_tokens"] > g["completion_tokens"] > 0
    md = (tmp_path / "results.md").read_text()
    assert "Floor (greedy): 0.500 at budget 200." in md
    assert "| majority:n=3,max_tokens=32 | 200 | 4 | 0.750 [" in md and "| 0.750 | 3.00 |" in md
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["strategy"] for r in saved] == [r["strategy"] for r in table]
    header = json.loads(item_path(tmp_path, items[1]).read_text().splitlines()[0])
    assert header["grader"] == "latex" and header["budget"] == {"completion_tokens": 200}
    assert header["suffix"] == ds.BOXED_SUFFIX and header["dataset"] == "tiny-math"


async def test_matched_budget_holds_and_short_budgets_show_in_stop_reasons(tmp_path: Path) -> None:
    items = sweep_items(["majority:n=3,max_tokens=32", "sc:rule=beta,max=8,max_tokens=32"], [40, 400])
    table = await run_sweep(_bench(), items, _engine(), tmp_path, progress=False)
    for r in table:
        rows = [json.loads(x) for x in item_path(tmp_path, next(i for i in items if i.label == r["strategy"]
                                                                and i.budget == r["budget"])).read_text().splitlines()]
        assert all(x["usage"]["completion_tokens"] <= r["budget"] for x in rows if x["type"] == "result")
    small = {r["strategy"]: r for r in table if r["budget"] == 40}
    assert small["sc:rule=beta,max=8,max_tokens=32"]["stop_reasons"] == {"budget": 4}
    assert small["sc:rule=beta,max=8,max_tokens=32"]["samples"] == 1.0  # one 32-token request fits in 40


async def test_sweep_resumes_and_refuses_another_configuration(tmp_path: Path) -> None:
    bench = _bench()
    items = sweep_items(["greedy:max_tokens=32", "majority:n=3,max_tokens=32"], [200])
    e1 = _engine()
    await run_sweep(bench, items, e1, tmp_path, limit=2, progress=False)
    first_calls = e1.calls
    assert first_calls > 0
    e2 = _engine()
    again = await run_sweep(bench, items, e2, tmp_path, limit=2, progress=False)
    assert e2.calls == 0 and [r["questions"] for r in again] == [2, 2]  # all resumed from the files
    e3 = _engine()
    more = await run_sweep(bench, items, e3, tmp_path, progress=False)
    assert [r["questions"] for r in more] == [4, 4]
    assert 0 < e3.calls < first_calls * 2 + 1  # only the two new questions ran
    cfg = run_config(bench, None, {"engine": "scripted"})
    with pytest.raises(ConfigMismatch, match="seed"):
        check_sweep_resume(bench, items, tmp_path, seed=1, config=cfg)
    other = ds.benchmark("gsm8k", bench.examples, name="tiny-math")  # same questions, other grader and prompt
    with pytest.raises(ConfigMismatch, match="grader"):
        await run_sweep(other, items, _engine(), tmp_path, progress=False)


async def test_failed_questions_keep_the_rest_and_fail_at_the_end(tmp_path: Path) -> None:
    def script(prompt: Prompt, i: int, rng: Any) -> str:
        if "Two plus two." in prompt.messages[-1].content:
            raise RuntimeError("engine broke")
        return f"So the answer is {SCRIPT[_question(prompt)][0]}."

    items = sweep_items(["greedy:max_tokens=32", "majority:n=3,max_tokens=32"], [200])
    with pytest.raises(RuntimeError, match=r"2 item\(s\) had failed questions.*rerun to retry"):
        await run_sweep(_bench(), items, ScriptedEngine(script), tmp_path, progress=False)
    table = json.loads((tmp_path / "results.json").read_text())
    assert [r["questions"] for r in table] == [3, 3]  # the other questions are saved and in the table
    fixed = await run_sweep(_bench(), items, _engine(), tmp_path, progress=False)
    assert [r["questions"] for r in fixed] == [4, 4]


def test_config_file_labels(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("floor:\n  strategy: greedy\nvote:\n  strategy: majority\n  n: 3\n")
    items = sweep_items([], [100, 200], cfg)
    assert [(i.label, i.budget) for i in items] == [("floor", 100), ("floor", 200), ("vote", 100), ("vote", 200)]
    assert items[2].make().describe() == registry.build("best_of_n", {"n": 3}).describe()
    assert [i.label for i in sweep_items(["vote"], [None], cfg)] == ["vote"]
    with pytest.raises(ValueError, match="no strategy labelled 'nope'"):
        sweep_items(["nope"], [None], cfg)
    with pytest.raises(ValueError, match="given twice"):
        sweep_items(["greedy", "greedy"], [None])
    with pytest.raises(ValueError, match="at least one strategy"):
        sweep_items([], [None])


async def test_every_registered_strategy_runs_in_a_sweep(tmp_path: Path) -> None:
    names = registry.list_names(registry.RUNNABLE)
    assert len(names) >= 16
    exs = [ds.Example(id="q0", question="Angle?", answer="90^\\circ")]
    bench = ds.benchmark("math500", exs, name="one")
    engine = ScriptedEngine(lambda p, i, rng: "Step 1: 2 + 3 = 5.\nSo the answer is \\boxed{90}.")
    table = await run_sweep(bench, sweep_items(names, [600]), engine, tmp_path, progress=False)
    assert [r["strategy"] for r in table] == names
    for r in table:
        assert r["questions"] == 1 and r["completion_tokens"] <= 600, r
    assert "| greedy | 600 | 1 | 1.000 [" in markdown_report(table)


def test_markdown_report_marks_the_pareto_front() -> None:
    rows = [{"strategy": s, "name": s, "budget": 100, "questions": 10, "correct": int(a * 10), "accuracy": a,
             "accuracy_lo": 0.0, "accuracy_hi": 1.0, "pass_at_k": None, "samples": 1.0, "completion_tokens": t,
             "seconds": 0.1, "stop_reasons": {"done": 10}} for s, a, t in
            (("greedy", 0.2, 50.0), ("a", 0.1, 80.0), ("b", 0.5, 300.0))]
    lines = markdown_report(rows).splitlines()
    marks = {line.split("|")[1].strip(): line.rstrip("| ").endswith("*") for line in lines if line.startswith("| ")
             and not line.startswith("| strategy")}
    assert marks == {"greedy": True, "a": False, "b": True}
    assert lines[0] == "Floor (greedy): 0.200 at budget 100."


def test_pareto_plots_drawn_from_many_threads_at_once(tmp_path: Path) -> None:
    """Sweeps write reports from worker threads, two at once when they share a loop;
    matplotlib's shared mathtext parser (log-scale tick labels) must not be entered by
    two of them together."""
    from concurrent.futures import ThreadPoolExecutor

    from ttc.bench.plots import plot_pareto

    table = [{"strategy": s, "budget": b, "accuracy": a, "accuracy_lo": 0.0, "accuracy_hi": 1.0,
              "completion_tokens": float(b * k)} for s, k in (("x", 1), ("y", 3))
             for b, a in ((16, 0.1), (64, 0.3), (256, 0.5))]
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda i: plot_pareto(table, tmp_path / f"p{i}.png"), range(24)))
    assert all(p.stat().st_size > 10_000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)


# -- the command line ----------------------------------------------------------------------
@pytest.fixture()
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: Any, **kw: Any) -> Any:
        raise AssertionError("an engine was started")

    monkeypatch.setattr(cli, "make_engine", refuse)


def _math_file(tmp_path: Path) -> Path:
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps({"problem": q, "solution": f"\\boxed{{{a}}}", "answer": a}) + "\n"
                         for q, a in QUESTIONS))
    return p


@pytest.mark.parametrize(("args", "message"), [
    (["-s", "nosuch"], "unknown"),
    ([], "--strategy: give at least one strategy spec"),
    (["-s", "greedy", "--budgets", "0"], "--budgets: 0 is not >= 1"),
    (["-s", "greedy", "--limit", "0"], "--limit: must be >= 1"),
    (["-s", "greedy", "--dataset", "math500:/nonexistent.jsonl"], "no such file"),
    (["-s", "greedy", "--engine", "openai"], "--base-url: required"),
    (["-s", "greedy", "--config", "/nonexistent.yaml"], "--config: no such file"),
])
def test_cli_bad_input_fails_before_any_engine(tmp_path: Path, no_engine: None, args: list[str], message: str) -> None:
    base = ["bench", "--dataset", f"math500:{_math_file(tmp_path)}", "--out", str(tmp_path / "out")]
    if "--dataset" in args:
        base = ["bench", "--out", str(tmp_path / "out")]
    r = CliRunner().invoke(cli.app, base + args)
    assert r.exit_code == 2, r.output
    assert message in r.output


def test_cli_out_must_be_a_folder(tmp_path: Path, no_engine: None) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    r = CliRunner().invoke(cli.app, ["bench", "--dataset", f"math500:{_math_file(tmp_path)}", "-s", "greedy",
                                     "--out", str(f)])
    assert r.exit_code == 2 and "is a file; give a folder" in r.output


def test_cli_bench_runs_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engines: list[ScriptedEngine] = []

    def make(*a: Any, **kw: Any) -> ScriptedEngine:
        engines.append(_engine())
        return engines[-1]

    monkeypatch.setattr(cli, "make_engine", make)
    args = ["bench", "--dataset", f"math500:{_math_file(tmp_path)}", "-s", "greedy:max_tokens=32",
            "-s", "majority:n=3,max_tokens=32", "--budgets", "100,200", "--out", str(tmp_path / "out")]
    r = CliRunner().invoke(cli.app, args)
    assert r.exit_code == 0, r.output
    assert "[4/4] majority:n=3,max_tokens=32 at budget 200" in r.output
    assert "| majority:n=3,max_tokens=32 | 200 | 4 | 0.750 [" in r.output
    assert sorted(p.name for p in (tmp_path / "out" / "runs").iterdir()) == [
        "greedy_max_tokens=32@100.jsonl", "greedy_max_tokens=32@200.jsonl",
        "majority_n=3,max_tokens=32@100.jsonl", "majority_n=3,max_tokens=32@200.jsonl"]
    r2 = CliRunner().invoke(cli.app, args)
    assert r2.exit_code == 0 and engines[1].calls == 0
    r3 = CliRunner().invoke(cli.app, args + ["--seed", "3"])
    assert r3.exit_code == 2 and "another configuration" in r3.output and len(engines) == 2


# -- the real model ------------------------------------------------------------------------
@pytest.mark.real
@pytest.mark.skipif(not (DATA / "gsm8k_test.jsonl").exists(), reason="no ../shared/data")
async def test_real_bench_on_gsm8k_and_math500(vllm_engine: Any, tmp_path: Path) -> None:
    """5 GSM8K and 5 MATH-500 questions through greedy, majority@2 and adaptive
    self-consistency (at most 3 samples) at a matched budget of 48 completion tokens per
    question, on the bundled model with short samples (16 tokens); the two sweeps share
    the engine at once."""
    import asyncio

    from ttc.bench.specs import load_benchmark

    specs = ["greedy:max_tokens=16", "majority:n=2,max_tokens=16", "sc:rule=beta,max=3,max_tokens=16"]
    kinds = (("gsm8k", "gsm8k_test.jsonl"), ("math500", "math500_test.jsonl"))
    benches = [load_benchmark(f"{kind}:{DATA / name}") for kind, name in kinds]
    tables = await asyncio.gather(*(
        run_sweep(b, sweep_items(specs, [48]), vllm_engine, tmp_path / kind, limit=5, concurrency=5,
                  progress=False, config={"engine": "vllm"})
        for b, (kind, _) in zip(benches, kinds)))
    for (kind, _), table in zip(kinds, tables):
        out = tmp_path / kind
        assert [r["strategy"] for r in table] == specs
        for r in table:
            assert r["questions"] == 5
            assert 0 < r["completion_tokens"] <= 48
            assert 0.0 <= r["accuracy_lo"] <= r["accuracy"] <= r["accuracy_hi"] <= 1.0
            assert sum(r["stop_reasons"].values()) == 5
        assert table[0]["samples"] == 1.0 and table[0]["pass_at_k"] is None
        assert table[1]["samples"] == 2.0 and table[1]["pass_at_k"] >= table[1]["accuracy"]
        assert 1.0 <= table[2]["samples"] <= 3.0
        rows = [json.loads(x) for x in item_path(out, sweep_items(specs[:1], [48])[0]).read_text().splitlines()[1:]]
        assert all(r["samples"][0]["num_tokens"] <= 16 for r in rows)
        assert np.mean([r["correct"] for r in rows]) == table[0]["accuracy"]
        md = (out / "results.md").read_text()
        assert md.count("\n| ") == 4 and "Floor (greedy)" in md
        assert (out / "pareto.png").stat().st_size > 1000


# -- a numeric benchmark reads numbers ----------------------------------------------------------------
def test_numeric_benchmarks_read_answers_with_the_number_extractor() -> None:
    from ttc.bench.specs import with_extractor, with_extractor_config

    exs = [ds.Example(id="q0", question="Seven?", answer="7")]
    assert ds.benchmark("gsm8k", exs).extractor == "number"
    assert ds.benchmark("math500", exs).extractor == "default"
    assert with_extractor("sc:rule=beta,max=8", "number") == "sc:rule=beta,max=8,extractor=number"
    assert with_extractor("greedy", "number") == "greedy:extractor=number"
    assert with_extractor("sc:rule=beta,max=B", "number") == "sc:rule=beta,max=B,extractor=number"  # B: a replay grid
    assert with_extractor("sc:extractor=boxed", "number") == "sc:extractor=boxed"  # the spec's own choice wins
    assert with_extractor("router", "number") == "router"  # its routes' strategies read the answers
    assert with_extractor("sc:rule=beta", "default") == "sc:rule=beta"
    assert with_extractor_config({"name": "greedy"}, "number") == {"name": "greedy", "extractor": "number"}
    assert with_extractor_config({"name": "greedy", "extractor": "boxed"}, "number")["extractor"] == "boxed"


async def test_a_gsm8k_sweep_votes_on_the_stated_numbers(tmp_path: Path) -> None:
    """Samples that echo the template's "The answer is N." after working the sum out: the
    default extractor votes for "N", a GSM8K benchmark's runs for the number."""
    exs = [ds.Example(id="q0", question="Three plus four?", answer="7")]
    bench = ds.benchmark("gsm8k", exs, name="tiny-gsm8k")
    texts = ["3 + 4 = 7. The answer is N."] * 2 + ["The answer is 8."]
    items = sweep_items(["majority:n=3,max_tokens=32"], [None], extractor=bench.extractor)
    table = await run_sweep(bench, items, ScriptedEngine(texts), tmp_path, progress=False)
    assert table[0]["strategy"] == "majority:n=3,max_tokens=32" and table[0]["correct"] == 1
    plain = sweep_items(["majority:n=3,max_tokens=32"], [None])
    table = await run_sweep(bench, plain, ScriptedEngine(texts), tmp_path / "plain", progress=False)
    assert table[0]["correct"] == 0
