"""Safe resume: ``ttc run`` / ``ttc record`` / ``ttc replay`` outputs start with a header
holding the configuration; resuming with another one exits 2 naming each difference;
torn records are repaired (with a warning), damage with readable records after it is
reported, never a crash. Runs go through the real HTTP stack against the local
fault-injecting OpenAI-compatible server."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttc.bench.cli import app
from ttc.bench.pool import Pool, recover
from ttc.testing.fault_server import FaultConfig, FaultServer

runner = CliRunner()


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer(FaultConfig()) as srv:  # answers "The answer is 4." to everything
        yield srv


def _dataset(path: Path, n: int = 5, answer: str = "4") -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is 2 + 2? (#{i})", "answer": answer})
                            + "\n" for i in range(n)))
    return path


def _rows(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run(server: FaultServer, ds: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["run", "--dataset", str(ds), "--engine", "openai", "--base-url", server.base_url,
                               "--out", str(out), "--strategy", "majority:n=2,max_tokens=16", *extra])


def _error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, output
    return lines[0]


def test_run_writes_a_header_and_resumes_only_with_the_same_configuration(server: FaultServer,
                                                                          tmp_path: Path) -> None:
    ds, out = _dataset(tmp_path / "ds.jsonl"), tmp_path / "out.jsonl"
    res = _run(server, ds, out, "--limit", "3", "--budget", "calls=4")
    assert res.exit_code == 0, res.output
    rows = _rows(out)
    head = rows[0]
    assert head["type"] == "header" and head["kind"] == "run"
    assert head["strategy"] == {"name": "best_of_n", "n": 2, "verifier": None, "weighted": False,
                                "params": {"temperature": 0.8, "max_tokens": 16}}
    assert head["spec"] == "majority:n=2,max_tokens=16" and head["budget"] == {"calls": 4}
    assert head["engine"] == "openai" and head["model"] == "default" and head["seed"] == 0
    assert head["prompt_style"] == "plain" and head["suffix"] == "" and len(head["dataset_hash"]) == 64
    assert sorted(r["id"] for r in rows[1:]) == ["q0", "q1", "q2"] and all(r["correct"] for r in rows[1:])
    before = out.read_bytes()

    changes = {
        ("--strategy", "majority:n=3,max_tokens=16"): "'strategy'",
        ("--budget", "calls=5"): "'budget'",
        ("--seed", "7"): "'seed'",
        ("--prompt-style", "cot"): "'prompt_style'",
        ("--suffix", " Be brief."): "'suffix'",
        ("--model", "other"): "'model'",
    }
    for (opt, value), named in changes.items():
        args = ["--limit", "3", "--budget", "calls=4", opt, value]
        res = _run(server, ds, out, *args)
        line = _error_line(res.output)
        assert res.exit_code == 2 and named in line and "another configuration" in line, (opt, res.output)
        assert str(out) in line
    # the dataset's content changed under the same name
    _dataset(ds, answer="5")
    res = _run(server, ds, out, "--limit", "3", "--budget", "calls=4")
    assert res.exit_code == 2 and "'dataset_hash'" in _error_line(res.output)
    assert out.read_bytes() == before  # nothing was written by the refused runs
    # same content again, the spec written another way, more questions: resumes, runs only the new ones
    _dataset(ds)
    server.reset_stats()
    res = runner.invoke(app, ["run", "--dataset", str(ds), "--engine", "openai", "--base-url", server.base_url,
                              "--out", str(out), "--strategy", "best_of_n:max_tokens=16,n=2", "--budget", "calls=4"])
    assert res.exit_code == 0, res.output
    rows = _rows(out)
    assert sorted(r["id"] for r in rows[1:]) == ["q0", "q1", "q2", "q3", "q4"]
    assert out.read_bytes().startswith(before)
    assert server.stats.requests == 2  # two new questions, one call each (native n)


def test_run_into_a_file_without_a_run_header_is_refused(server: FaultServer, tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds.jsonl")
    legacy = tmp_path / "legacy.jsonl"  # results written by an older ttc: no header
    legacy.write_text(json.dumps({"type": "result", "id": "q0", "correct": True, "usage": {}}) + "\n")
    res = _run(server, ds, legacy)
    assert res.exit_code == 2 and "does not start with a ttc run header" in _error_line(res.output)
    replay_out = tmp_path / "replay.jsonl"
    replay_out.write_text(json.dumps({"type": "header", "kind": "replay", "seeds": 2}) + "\n")
    res = _run(server, ds, replay_out)
    assert res.exit_code == 2 and "'replay' header" in _error_line(res.output)


@pytest.mark.parametrize("torn", [b'{"type": "hea', b'{"type": "header", "kind": "run", "strategy": "maj'])
def test_a_torn_first_record_is_repaired(server: FaultServer, tmp_path: Path, torn: bytes) -> None:
    ds, out = _dataset(tmp_path / "ds.jsonl", n=2), tmp_path / "out.jsonl"
    out.write_bytes(torn)  # killed while writing the header
    res = _run(server, ds, out)
    assert res.exit_code == 0, res.output
    assert "repaired: dropped the torn record at line 1" in res.output
    rows = _rows(out)
    assert rows[0]["type"] == "header" and sorted(r["id"] for r in rows[1:]) == ["q0", "q1"]
    res = _run(server, ds, out)  # and resumes cleanly afterwards
    assert res.exit_code == 0 and len(_rows(out)) == 3


def test_a_torn_last_record_is_repaired_and_redone(server: FaultServer, tmp_path: Path) -> None:
    ds, out = _dataset(tmp_path / "ds.jsonl", n=3), tmp_path / "out.jsonl"
    assert _run(server, ds, out, "--limit", "2").exit_code == 0
    with out.open("a") as f:
        f.write('{"type": "result", "id": "q2", "corr')
    res = _run(server, ds, out)
    assert res.exit_code == 0, res.output
    assert "repaired: dropped the torn record at line 4" in res.output
    ids = [r.get("id") for r in _rows(out)]
    assert ids[0] is None and sorted(ids[1:3]) == ["q0", "q1"] and ids[3] == "q2"


def test_damage_inside_a_results_file_is_reported_not_repaired(server: FaultServer, tmp_path: Path) -> None:
    ds, out = _dataset(tmp_path / "ds.jsonl", n=3), tmp_path / "out.jsonl"
    assert _run(server, ds, out, "--limit", "2").exit_code == 0
    lines = out.read_text().splitlines()
    lines[1] = lines[1][:40]  # a record cut mid-file: not what a kill leaves
    out.write_text("\n".join(lines) + "\n")
    before = out.read_bytes()
    res = _run(server, ds, out)
    line = _error_line(res.output)
    assert res.exit_code == 2 and f"{out}: damaged record at line 2" in line
    assert out.read_bytes() == before


def test_report_reads_a_run_with_its_header(server: FaultServer, tmp_path: Path) -> None:
    ds, out = _dataset(tmp_path / "ds.jsonl", n=3), tmp_path / "out.jsonl"
    assert _run(server, ds, out).exit_code == 0
    res = runner.invoke(app, ["report", str(out)])
    assert res.exit_code == 0 and "| majority:n=2,max_tokens=16 | - | 1.000" in res.output, res.output


# -- ttc record ---------------------------------------------------------------------------------
def _record(server: FaultServer, ds: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["record", "--dataset", str(ds), "--engine", "openai", "--base-url",
                               server.base_url, "--out", str(out), "--k", "3", "--max-tokens", "16",
                               "--logprobs", "2", *extra])


def test_record_resume_checks_its_header_and_repairs_a_torn_first_record(server: FaultServer,
                                                                         tmp_path: Path) -> None:
    ds, out = _dataset(tmp_path / "ds.jsonl", n=4), tmp_path / "pool.jsonl.gz"
    out.write_bytes(gzip.compress(b'{"type": "header", "version": 1}\n')[:12])  # torn first member
    res = _record(server, ds, out, "--limit", "2")
    assert res.exit_code == 0, res.output
    assert "repaired: dropped the torn record at line 1" in res.output
    pool = Pool.load(out)
    assert len(pool) == 2 and pool.k == 3 and pool.header["dataset_hash"]
    for opt, value, named in (("--temperature", "0.5", "'params'"), ("--k", "4", "'k'"),
                              ("--suffix", "!", "'suffix'"), ("--prompt-style", "cot", "'prompt_style'")):
        args = [a for a in ("--k", "3") if opt != "--k"] if opt == "--k" else []
        res = _record(server, ds, out, *args, opt, value)
        line = _error_line(res.output)
        assert res.exit_code == 2 and f"different {named}" in line, (opt, res.output)
    _dataset(ds, n=4, answer="5")
    res = _record(server, ds, out)
    assert res.exit_code == 2 and "different 'dataset_hash'" in _error_line(res.output)
    _dataset(ds, n=4)
    res = _record(server, ds, out)  # same settings: records the 2 missing questions
    assert res.exit_code == 0, res.output
    assert sorted(q.id for q in Pool.load(out).questions) == ["q0", "q1", "q2", "q3"]


def test_record_on_a_benchmark_file_uses_its_prompt_and_grader(server: FaultServer, tmp_path: Path) -> None:
    """A GSM8K file is recorded with GSM8K's prompt template and names the number grader
    (replay then judges by it); ``--suffix`` replaces the template."""
    from ttc.bench.datasets import NUMBER_SUFFIX

    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("".join(json.dumps({"question": f"Tom has {i} apples. How many?", "answer": f"He has.\n#### {i}"})
                           + "\n" for i in range(2)))
    out = tmp_path / "gsm_pool.jsonl"
    assert _record(server, Path(f"gsm8k:{gsm}"), out).exit_code == 0
    pool = Pool.load(out)
    assert pool.header["suffix"] == NUMBER_SUFFIX and pool.header["grader"] == "number" and pool.grader == "number"
    assert all(q.prompt.question.endswith(NUMBER_SUFFIX) and q.answer == q.id[-1] for q in pool.questions)
    plain = tmp_path / "plain_pool.jsonl"
    assert _record(server, Path(f"gsm8k:{gsm}"), plain, "--suffix", "").exit_code == 0
    assert all(q.prompt.question.endswith("How many?") for q in Pool.load(plain).questions)


def test_sigterm_stops_a_command_like_ctrl_c_and_it_resumes(tmp_path: Path) -> None:
    """``kill`` (SIGTERM) unwinds the command through its ``finally`` blocks (which close the
    engine: an in-process vLLM engine's processes exit with it) instead of ending the process
    on the spot; what was recorded stays and a rerun completes it."""
    import subprocess
    import sys
    import time

    ds, out = _dataset(tmp_path / "ds.jsonl", n=40), tmp_path / "pool.jsonl"
    with FaultServer(FaultConfig(latency=0.3)) as slow:
        cmd = [sys.executable, "-m", "ttc.bench.cli", "record", "--dataset", str(ds), "--engine", "openai",
               "--base-url", slow.base_url, "--out", str(out), "--k", "1", "--max-tokens", "16",
               "--logprobs", "0", "--concurrency", "1"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count('"type": "question"') < 2):
            time.sleep(0.1)
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 130, (proc.returncode, output[-2000:])  # Ctrl-C's code; killed outright: -15
        kept = len(Pool.load(out))
        assert 2 <= kept < 40
        res = _record(slow, ds, out, "--k", "1", "--logprobs", "0")
    assert res.exit_code == 0, res.output
    assert len(Pool.load(out)) == 40


# -- ttc replay ---------------------------------------------------------------------------------
def test_replay_resume_checks_seeds_and_pool(server: FaultServer, tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds.jsonl", n=3)
    pool_a, pool_b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl"
    assert _record(server, ds, pool_a).exit_code == 0
    assert _record(server, ds, pool_b, "--suffix", " Answer briefly.").exit_code == 0
    out = tmp_path / "replay.jsonl"
    base = ["replay", "-s", "majority:n=B", "--budgets", "1,2", "--out", str(out)]
    res = runner.invoke(app, [*base, "--pool", str(pool_a), "--seeds", "2"])
    assert res.exit_code == 0, res.output
    head = _rows(out)[0]
    assert head["kind"] == "replay" and head["seeds"] == 2 and len(head["pool_hash"]) == 64
    res = runner.invoke(app, [*base, "--pool", str(pool_a), "--seeds", "3"])
    assert res.exit_code == 2 and "'seeds': 3 (recorded: 2)" in _error_line(res.output)
    res = runner.invoke(app, [*base, "--pool", str(pool_b), "--seeds", "2"])
    assert res.exit_code == 2 and "'pool_hash'" in _error_line(res.output)
    # the same pool under another name, more budgets and another strategy: resumes
    copy = tmp_path / "copy.jsonl.gz"
    copy.write_bytes(pool_a.read_bytes())
    n_before = len(_rows(out))
    res = runner.invoke(app, ["replay", "-s", "majority:n=B;sc:rule=fixed,n=B", "--budgets", "1,2,3",
                              "--out", str(out), "--pool", str(copy), "--seeds", "2"])
    assert res.exit_code == 0, res.output
    rows = _rows(out)
    assert len(rows) > n_before and sum(r["type"] == "header" for r in rows) == 1
    replays = {(r["strategy"], r["budget"]) for r in rows if r["type"] == "replay"}
    assert replays == {(s, b) for s in ("majority:n=B", "sc:rule=fixed,n=B") for b in (1, 2, 3)}


def test_recover_leaves_a_file_with_mid_file_damage_alone(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n{"b": \n{"c": 3}\n')
    before = p.read_bytes()
    with pytest.raises(ValueError, match=r"x\.jsonl: damaged record at line 2: not JSON"):
        recover(p)
    assert p.read_bytes() == before
    p.write_text('{"a": 1}\n{"b": 2}')  # a complete last record without its newline
    assert recover(p) == [{"a": 1}, {"b": 2}]
    assert p.read_text() == '{"a": 1}\n{"b": 2}\n'  # appendable again
