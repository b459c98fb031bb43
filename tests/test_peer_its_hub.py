"""The side-by-side comparison with its_hub (:mod:`ttc.bench.side_by_side`): the answer key
its_hub votes with, the peer runner's rows, the table and the goal's verdict. Offline: no
its_hub install, no server (the real run is ``benchmarks/peer_its_hub.py``)."""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path

import pytest

from ttc.answers import extract_answer, grade_number, normalize, to_number
from ttc.bench.metrics import wilson_interval
from ttc.bench.side_by_side import (
    MethodRun,
    QuestionRow,
    answer_key,
    best,
    client_cpu_figures,
    cpu_table,
    method_table,
    number_key,
    peer_rows,
    seconds,
    verdict,
)

ROOT = Path(__file__).resolve().parents[1]
POOL = ROOT / "benchmarks" / "pools" / "addition_200x32.jsonl.gz"


@pytest.mark.parametrize(("text", "key"), [
    ("To calculate 6 + 6, we add them: 6 + 6 = 12.", "12"),
    ("3 + 4 = 7. The answer is 7.", "7"),
    ("The answer is 1,240.", "1240"),
    ("So Ana has $18.00 in total. The answer is $18.00.", "18"),
    ("Step 1 gives 5 = 5.\n#### 1,240", "1240"),
    ("Therefore the final answer is $\\boxed{42}$. I hope it is correct.", "42"),
    ("The answer is 12, since 5 + 7 = 12 and 2 + 2 = 4.", "12"),  # "the answer is" before "="
    ("x = -3.50", "-3.5"),
    ("Answer: 7", "7"),
    ("  I cannot tell without more information.  ", "I cannot tell without more information."),
])
def test_answer_key_follows_ttcs_extraction_order(text: str, key: str) -> None:
    assert answer_key(text) == key
    ttc = normalize(extract_answer(text))
    if to_number(ttc or "") is not None:
        assert float(key) == to_number(ttc)


def _pool_texts() -> list[str]:
    """The answer texts of the recorded pool (read directly: texts only, no logprobs)."""
    with gzip.open(POOL, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [s["text"] for r in rows if r.get("type") == "question" for s in r["samples"]]


def test_answer_key_agrees_with_ttc_on_the_recorded_pool() -> None:
    """On the 6,400 recorded answers of the bundled model, an answer ttc reads as a number
    gets the same number as its_hub's key, but for at most 1 in 1,000 (a fraction "6/6":
    ttc reads it as one number, the key as the last one)."""
    numbers = differ = 0
    for text in _pool_texts():
        want = to_number(normalize(extract_answer(text)) or "")
        if want is None:
            continue
        numbers += 1
        got = number_key(answer_key(text))
        differ += got is None or float(got) != want
    assert numbers > 5000
    assert differ <= numbers // 1000, f"{differ} of {numbers} answers keyed differently from ttc"


def test_texts_without_an_answer_agree_only_when_equal() -> None:
    assert answer_key("no idea") == answer_key("no idea \n")
    assert answer_key("no idea") != answer_key("not sure")


@pytest.mark.parametrize(("raw", "key"), [("1,240", "1240"), ("1240.00", "1240"), ("$12", "12"), ("-0.50", "-0.5"),
                                          ("-0", "0"), ("0.0", "0"), ("7.", "7"), ("12 apples", None), ("", None),
                                          ("1/2", None)])
def test_number_key(raw: str, key: str | None) -> None:
    assert number_key(raw) == key


def _peer_out(keys: list[str | None], tokens: int = 40) -> dict:
    return {"rows": [{"key": k, "responses": 8, "completion_tokens": tokens, "prompt_tokens": 30, "calls": 8}
                     for k in keys], "wall_s": 2.5, "cpu_s": 0.5}


def test_peer_rows_are_graded_against_the_references_in_order() -> None:
    rows = peer_rows(_peer_out(["7", "9", None]), ["7", "8", "1"], grade_number)
    assert [r.correct for r in rows] == [True, False, False]
    assert [r.answer for r in rows] == ["7", "9", None]
    assert rows[0].completion_tokens == 40 and rows[0].samples == 8


@pytest.mark.parametrize(("out", "match"), [
    ([], "expected an object with a list 'rows'"),
    ({"rows": {}}, "expected an object with a list 'rows'"),
    ({"rows": [{"key": "7", "responses": 8, "completion_tokens": 1}]}, "1 rows for 2 questions"),
    ({"rows": [{"key": "7", "responses": 8, "completion_tokens": -1}] * 2}, "row 0: 'completion_tokens'"),
    ({"rows": [{"key": "7", "responses": True, "completion_tokens": 3}] * 2}, "row 0: 'responses'"),
    ({"rows": [{"key": 7, "responses": 8, "completion_tokens": 3}] * 2}, "row 0: 'key' must be a string"),
    ({"rows": ["7", "8"]}, "row 0: expected an object"),
])
def test_malformed_peer_output_is_an_error_naming_what_is_wrong(out: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        peer_rows(out, ["7", "8"], grade_number)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), True, "3", None])
def test_seconds_must_be_a_non_negative_number(bad: object) -> None:
    with pytest.raises(ValueError, match="'wall_s'"):
        seconds({"wall_s": bad}, "wall_s")
    assert seconds({"wall_s": 3}, "wall_s") == 3.0


def _run(label: str, lib: str, correct: list[bool], tokens: int, wall: float, server: float | None = None) -> MethodRun:
    rows = [QuestionRow(c, tokens, 4) for c in correct]
    return MethodRun(label, lib, rows, wall, 0.25, server_completion_tokens=server)


def test_a_run_reports_accuracy_interval_and_tokens_per_question() -> None:
    r = _run("m", "ttc", [True, True, False, True], 30, 5.0, server=200.0)
    assert (r.n, r.correct, r.accuracy) == (4, 3, 0.75)
    assert r.interval() == wilson_interval(3, 4)
    assert (r.tokens, r.server_tokens, r.samples) == (30.0, 50.0, 4.0)
    assert _run("m", "ttc", [True], 30, 1.0).server_tokens is None


def test_the_table_has_one_row_per_method_with_its_figures() -> None:
    runs = [_run("AdaptiveSelfConsistency", "its_hub", [True, False], 40, 12.0, server=100.0),
            _run("vote share", "ttc", [True, True], 30, 9.5)]
    lines = method_table(runs).splitlines()
    assert len(lines) == 4 and lines[0].count("|") == lines[2].count("|") == lines[3].count("|")
    lo, hi = wilson_interval(1, 2)
    assert lines[2] == (f"| its_hub | AdaptiveSelfConsistency | 0.500 (1/2) | [{lo:.2f}, {hi:.2f}] | 4.00 | 40.0 | 50.0 "
                        "| 12.0 | 0.25 |")
    assert "| ttc | vote share | 1.000 (2/2) |" in lines[3] and "| n/a |" in lines[3]


def test_best_is_the_most_accurate_then_the_cheapest_then_the_fastest() -> None:
    a = _run("a", "its_hub", [True, False, False], 10, 1.0, server=30.0)
    b = _run("b", "its_hub", [True, True, False], 50, 9.0, server=150.0)
    c = _run("c", "its_hub", [True, True, False], 40, 9.5, server=120.0)
    d = _run("d", "its_hub", [True, True, False], 40, 9.0, server=120.0)
    assert best([a, b]) is b
    assert best([a, b, c]) is c
    assert best([a, b, c, d]) is d
    with pytest.raises(ValueError, match="no runs"):
        best([])


def test_the_verdict_needs_accuracy_tokens_and_wall_time() -> None:
    theirs = _run("Adaptive", "its_hub", [True, True, False, False], 40, 10.0, server=200.0)
    met, line = verdict(_run("share", "ttc", [True, True, True, False], 30, 8.0, server=150.0), theirs)
    assert met and line.endswith("-> MET") and "+25.0 pp" in line and "only-ours 1 / only-theirs 0" in line
    met, line = verdict(_run("share", "ttc", [True, False, False, False], 30, 8.0, server=150.0), theirs)
    assert not met and "0.250 vs 0.500" in line and ") NOT;" in line
    met, line = verdict(_run("share", "ttc", [True, True, False, False], 30, 8.0, server=210.0), theirs)
    assert not met and "tokens/q 52.5 vs 50.0 (105%) NOT" in line  # the server's count decides
    met, line = verdict(_run("share", "ttc", [True, True, False, False], 30, 10.5, server=150.0), theirs)
    assert not met and "wall 10.5 s vs 10.0 s (105%) NOT" in line
    with pytest.raises(ValueError, match="has 1 questions"):
        verdict(_run("share", "ttc", [True], 30, 1.0), theirs)


CLIENT_CPU_OUTPUT = """## client_cpu: self-consistency N=8, 12 questions per set, instant replay engine

python 3.11.7, pid 8352; ttc imports: 674 ms CPU

| answer set | questions | first question CPU ms (imports, first grouping) | client CPU ms/question | wall ms/question | answered |
|---|---:|---:|---:|---:|---:|
| word problems | 12 | 4 | 1.68 | 1.71 | 12/12 |
| addition | 12 | 2 | 2.88 | 4.69 | 12/12 |
"""


def test_ttcs_client_cpu_figures_are_read_from_its_table_by_column_name() -> None:
    assert client_cpu_figures(CLIENT_CPU_OUTPUT) == {"word problems": 1.68, "addition": 2.88}
    swapped = CLIENT_CPU_OUTPUT.replace("| client CPU ms/question | wall ms/question |",
                                        "| wall ms/question | client CPU ms/question |")
    assert client_cpu_figures(swapped) == {"word problems": 1.71, "addition": 4.69}
    assert client_cpu_figures("no table here\n| a | b |\n|---|---|\n| x | 1 |") == {}


def test_the_cpu_table_lists_each_library_and_set() -> None:
    text = cpu_table([("its_hub (answer key)", "addition", {"first_ms": 3.2, "cpu_ms": 0.494, "questions": 60})])
    assert text.splitlines()[-1] == "| its_hub (answer key) | addition | 60 | 3 | 0.49 |"


def test_the_answer_key_module_runs_on_the_standard_library_alone() -> None:
    """The its_hub runner loads side_by_side.py by path into an environment without ttc:
    its module-level imports must be standard library only."""
    tree = ast.parse((ROOT / "ttc" / "bench" / "side_by_side.py").read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= {"__future__", "math", "re", "collections", "dataclasses", "typing"}, names


def test_analyse_votes_the_kept_samples_again(tmp_path: Path) -> None:
    """``--analyse`` on a run's ``--out``: the same texts voted by its_hub's key and by ttc's
    vote with each extractor (the default one reads the template's echoed "N"), and
    per-sample accuracy per library."""
    import subprocess
    import sys

    from ttc.bench.datasets import addition

    exs = addition(2, seed=11, digits=1)
    right = [f"{e.meta['a']} + {e.meta['b']} = {e.answer}. The answer is N." for e in exs]
    texts = [[right[i]] * 4 + ["The answer is 99."] * 2 + [f"The answer is {e.answer}."] * 2
             for i, e in enumerate(exs)]
    run = {"label": "fixed", "rows": [{"correct": True}, {"correct": False}], "extra": {"texts": texts}}
    path = tmp_path / "runs.json"
    path.write_text(json.dumps([{**run, "library": "its_hub"}, {**run, "library": "ttc"}]))
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "peer_its_hub.py"), "--analyse", str(path),
                          "--questions", "2"], capture_output=True, text=True, timeout=300, check=True).stdout
    # its_hub's key and the number extractor read six of eight samples as the sum; the default
    # extractor reads four as "N", which then wins the vote
    assert "| its_hub | fixed | 1 | 2 | 2 | 0 |" in out and "| ttc | fixed | 1 | 2 | 2 | 0 |" in out
    assert "Per-sample accuracy (its_hub's key): its_hub 0.750 (16 samples), ttc 0.750 (16)" in out
