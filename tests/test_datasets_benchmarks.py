"""Reasoning benchmarks as datasets: the AIME and AMC loaders, every format as a
:class:`Benchmark` with its prompt and grader, the dataset specs of the command line,
``hf:NAME[:CONFIG]:SPLIT`` through the Hugging Face ``datasets`` library (on local files of
the same schemas, no network), and errors naming the file, line and field."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from ttc.bench import datasets as ds
from ttc.bench.specs import load_benchmark, load_dataset, parse_hf

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GSM_ROWS = [{"question": "Tom has 3 apples and buys 1,200 more. How many?",
             "answer": "3 + 1200 = <<3+1200=1203>>1203\n#### 1,203"},
            {"question": "Q2", "answer": "work\n#### -4"}]
MATH_ROWS = [{"problem": "Simplify 2/4.", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "answer": "\\frac{1}{2}",
              "subject": "Algebra", "level": 2, "unique_id": "test/algebra/1.json"},
             {"problem": "Angle?", "solution": "$\\boxed{90^\\circ}$", "answer": "90^\\circ",
              "subject": "Geometry", "level": 1, "unique_id": "test/geometry/2.json"}]
AIME_ROWS = [{"id": 60, "problem": "Find x.", "question": "Find x.", "solution": "...", "answer": "025",
              "url": "https://example.org/1"},
             {"id": 61, "problem": "Find y.", "answer": "204"}]
AMC_ROWS = [{"id": 0, "question": "How many miles?", "problem": "How many miles?", "answer": 27.0},
            {"id": 1, "problem": "Half of one?", "answer": 0.5}]


def test_aime_and_amc_loaders(tmp_path: Path) -> None:
    aime = ds.load_aime(_write(tmp_path / "aime.jsonl", AIME_ROWS))
    assert [(e.id, e.question, e.answer, e.category) for e in aime] == [
        ("60", "Find x.", "025", "aime"), ("61", "Find y.", "204", "aime")]
    assert aime[0].meta == {"solution": "...", "url": "https://example.org/1"}
    amc = ds.load_amc(_write(tmp_path / "amc.jsonl", AMC_ROWS))
    assert [(e.id, e.question, e.answer) for e in amc] == [("0", "How many miles?", "27"), ("1", "Half of one?", "0.5")]


@pytest.mark.parametrize(("rows", "loader", "message"), [
    ([{"id": 1, "answer": "3"}], ds.load_aime, r"aime\.jsonl:1: missing field 'problem' or 'question'"),
    ([{"id": 1, "problem": "p"}], ds.load_aime, r"aime\.jsonl:1: missing field\(s\) \['answer'\]"),
    ([{"id": 1, "problem": "p", "answer": None}], ds.load_aime, r"aime\.jsonl:1: 'answer' is null"),
    ([{"id": 1, "problem": "p", "answer": True}], ds.load_aime, r"aime\.jsonl:1: 'answer' must be a string or a number"),
    ([{"problem": 5, "answer": "1"}], ds.load_aime, r"aime\.jsonl:1: 'problem' must be a string"),
    ([{"id": 1, "question": "q", "answer": 1}, {"id": 1, "question": "r", "answer": 2}], ds.load_amc,
     r"duplicate id '1'"),
    ([{"question": "q", "answer": float("nan")}], ds.load_amc, r"amc\.jsonl:1: 'answer' is not a finite number"),
    ([{"question": "q", "answer": "1"}, "{oops"], ds.load_amc, r"amc\.jsonl:2: not JSON"),
    ([{"problem": "p", "solution": 3}], ds.load_math500, r"math\.jsonl:1: 'solution' must be a string"),
    ([{"problem": "p", "answer": "1", "subject": 4}], ds.load_math500, r"math\.jsonl:1: 'subject' must be a string"),
    ([{"question": "q", "answer": 12}], ds.load_gsm8k, r"gsm\.jsonl:1: GSM8K 'answer' must be a string"),
    ([{"question": "q", "answer": "x ####  "}], ds.load_gsm8k, r"gsm\.jsonl:1: GSM8K answer is empty after"),
])
def test_bad_rows_name_the_file_line_and_field(tmp_path: Path, rows: list[Any], loader: Any, message: str) -> None:
    name = {ds.load_aime: "aime", ds.load_amc: "amc", ds.load_math500: "math", ds.load_gsm8k: "gsm"}[loader]
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, allow_nan=True)) + "\n" for r in rows))
    with pytest.raises(ValueError, match=message):
        loader(path)


def test_specs_give_each_benchmark_its_prompt_and_grader(tmp_path: Path) -> None:
    files = {"gsm8k": _write(tmp_path / "g.jsonl", GSM_ROWS), "math500": _write(tmp_path / "m.jsonl", MATH_ROWS),
             "aime": _write(tmp_path / "a.jsonl", AIME_ROWS), "amc": _write(tmp_path / "c.jsonl", AMC_ROWS)}
    for kind, path in files.items():
        b = load_benchmark(f"{kind}:{path}")
        assert b.name == str(path) and len(b.examples) == 2
        assert (b.suffix, b.grader) == ds.FORMATS[kind]
        assert load_dataset(f"{kind}:{path}") == b.examples
    assert "\\boxed{}" in ds.FORMATS["math500"][0] and ds.FORMATS["math500"][1] == "latex"
    assert "The answer is N" in ds.FORMATS["gsm8k"][0] and ds.FORMATS["gsm8k"][1] == "number"
    g = load_benchmark(f"gsm8k:{files['gsm8k']}")
    assert g.grade("1203 apples", g.examples[0].answer)  # the answer's last number
    assert not g.grade("1203 apples, 7 left", g.examples[0].answer)
    assert g.grade("1,203", g.examples[0].answer) and not g.grade("1200", g.examples[0].answer)
    m = load_benchmark(f"math500:{files['math500']}")
    assert m.grade("0.5", m.examples[0].answer) and m.grade("90", m.examples[1].answer)
    assert not m.grade("0.25", m.examples[0].answer)
    gen = load_benchmark("generator:addition:3:0")
    assert (gen.suffix, gen.grader) == ("", "default") and len(gen.examples) == 3
    with pytest.raises(ValueError, match=r"dataset aime: no such file"):
        load_benchmark(f"aime:{tmp_path / 'missing.jsonl'}")
    with pytest.raises(ValueError, match=r"empty spec"):
        load_benchmark(" ")


def test_hf_spec_parsing() -> None:
    assert parse_hf("hf:openai/gsm8k:main:test") == ("openai/gsm8k", "main", "test")
    assert parse_hf("hf:HuggingFaceH4/MATH-500:test") == ("HuggingFaceH4/MATH-500", None, "test")
    for bad in ("hf:", "hf:name", "hf:a:b:c:d", "hf::test", "hf:name: "):
        with pytest.raises(ValueError, match=r"expected hf:NAME\[:CONFIG\]:SPLIT"):
            parse_hf(bad)


@pytest.fixture()
def hf_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The datasets library offline, its cache in a temporary folder."""
    pytest.importorskip("datasets")
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda *a, **kw: real(*a, **{**kw, "cache_dir": str(cache)}))
    return cache


@pytest.mark.parametrize(("rows", "kind", "answers"), [
    (GSM_ROWS, "gsm8k", ["1203", "-4"]),
    (MATH_ROWS, "math500", ["\\frac{1}{2}", "90^\\circ"]),
    ([{"problem": r["problem"], "answer": r["answer"]} for r in AIME_ROWS], "aime", ["025", "204"]),
])
def test_hf_loader_on_local_files_of_the_same_schema(tmp_path: Path, hf_offline: Path, rows: list[Any], kind: str,
                                                     answers: list[str]) -> None:
    path = _write(tmp_path / f"{kind}.jsonl", rows)
    b = ds.load_hf("json", "train", data_files=str(path))
    assert b.name == "hf:json:train"
    assert [e.answer for e in b.examples] == answers
    assert (b.suffix, b.grader) == ds.FORMATS[kind]
    assert b.examples[0].question == rows[0].get("question", rows[0].get("problem"))


def test_hf_spec_goes_through_datasets_load_dataset(tmp_path: Path, hf_offline: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``hf:openai/gsm8k:main:test`` calls ``datasets.load_dataset("openai/gsm8k", "main",
    split="test")``; here that call is answered from a local file of GSM8K's schema."""
    import datasets

    path = _write(tmp_path / "gsm.jsonl", GSM_ROWS)
    json_loader = datasets.load_dataset
    calls = []

    def fake_hub(name: str, config: str | None = None, **kw: Any) -> Any:
        calls.append((name, config, kw.get("split")))
        return json_loader("json", data_files=str(path), split="train")

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    b = load_benchmark("hf:openai/gsm8k:main:test")
    assert calls == [("openai/gsm8k", "main", "test")]
    assert b.grader == "number" and [e.answer for e in b.examples] == ["1203", "-4"]
    assert b.name == "hf:openai/gsm8k:main:test"

    # a hub name says the format even when the columns would not
    path_m = _write(tmp_path / "m.jsonl", [{"problem": "p", "answer": "\\frac12"}])
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: json_loader("json", data_files=str(path_m),
                                                                                  split="train"))
    m = load_benchmark("hf:HuggingFaceH4/MATH-500:test")
    assert m.grader == "latex" and m.examples[0].answer == "\\frac12"


def test_hf_errors_are_one_line_naming_the_dataset(tmp_path: Path, hf_offline: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "odd.jsonl", [{"text": "a", "label": 1}])
    with pytest.raises(ValueError, match=r"hf:json:train: columns \['label', 'text'\] match no known format"):
        ds.load_hf("json", "train", data_files=str(path))
    bad = _write(tmp_path / "bad.jsonl", [{"question": "q", "answer": "#### 1"}, {"question": "r", "answer": "2"}])
    with pytest.raises(ValueError, match=r"hf:json:train: row 1: GSM8K answer has no '####'"):
        ds.load_hf("json", "train", data_files=str(bad))
    with pytest.raises(ValueError, match=r"hf:json:train: unknown format 'nope'"):
        ds.load_hf("json", "train", data_files=str(path), kind="nope")
    with pytest.raises(ValueError, match=r"hf:json:train: cannot load"):
        ds.load_hf("json", "train", data_files=str(tmp_path / "missing.jsonl"))


def test_hf_without_the_datasets_library_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(ValueError, match=r"hf:openai/gsm8k:main:test: needs the Hugging Face 'datasets' library "
                                         r"\(pip install 'ttc\[hf\]'\)"):
        load_benchmark("hf:openai/gsm8k:main:test")


def test_hf_kind_detection() -> None:
    assert ds.hf_kind("openai/gsm8k", [], None) == "gsm8k"
    assert ds.hf_kind("math-ai/aime24", [], None) == "aime"
    assert ds.hf_kind("someone/amc23-eval", [], None) == "amc"
    assert ds.hf_kind("x/y", ["problem", "solution", "answer"], {}) == "math500"
    assert ds.hf_kind("x/y", ["question", "answer"], {"answer": "... #### 3"}) == "gsm8k"
    assert ds.hf_kind("x/y", ["question", "answer"], {"answer": "3"}) == "aime"


@pytest.mark.skipif(not (DATA / "aime24_test.jsonl").exists(), reason="no ../shared/data")
def test_the_shared_reference_files_load() -> None:
    sizes = {"gsm8k": ("gsm8k_test.jsonl", 1319), "math500": ("math500_test.jsonl", 500),
             "aime": ("aime24_test.jsonl", 30), "amc": ("amc23_test.jsonl", 40)}
    for kind, (name, n) in sizes.items():
        b = load_benchmark(f"{kind}:{DATA / name}")
        assert len(b.examples) == n, kind
    amc = load_benchmark(f"amc:{DATA / 'amc23_test.jsonl'}")
    assert amc.examples[0].answer == "27"  # 27.0 in the file
    m = load_benchmark(f"math500:{DATA / 'math500_test.jsonl'}")
    assert m.examples[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)" and m.examples[0].difficulty == 2
