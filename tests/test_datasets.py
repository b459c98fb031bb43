"""Dataset loaders (ttc JSONL, GSM8K, MATH-500, multiple choice), their errors, and
the seeded generators."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttc.answers import Equivalence
from ttc.bench import datasets as ds


def _write(path: Path, rows: list) -> Path:  # type: ignore[type-arg]
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_round_trip_and_defaults(tmp_path: Path) -> None:
    exs = ds.word_problems(6, seed=1)
    path = ds.save_jsonl(exs, tmp_path / "sub" / "wp.jsonl")
    assert ds.load_jsonl(path) == exs
    p2 = _write(tmp_path / "min.jsonl",
                [{"question": "1+1?", "answer": 2}, "", {"question": "q", "answer": "x"}])
    loaded = ds.load_jsonl(p2)
    assert [(e.id, e.answer) for e in loaded] == [("0", "2"), ("2", "x")]


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    p = _write(tmp_path / "bad.jsonl", [{"question": "a", "answer": "1"}, "{not json"])
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not JSON"):
        ds.load_jsonl(p)
    p = _write(tmp_path / "bad2.jsonl", [{"question": "a", "answer": "1"}, {"question": "b"}])
    with pytest.raises(ValueError, match=r"bad2\.jsonl:2: needs 'question' and 'answer'"):
        ds.load_jsonl(p)


def test_gsm8k_loader(tmp_path: Path) -> None:
    p = _write(tmp_path / "gsm.jsonl", [
        {"question": "Tom has 3 apples and buys 1,200 more.",
         "answer": "3 + 1200 = <<3+1200=1203>>1203\n#### 1,203"},
        {"question": "Q2", "answer": "work\n#### -4"},
    ])
    exs = ds.load_gsm8k(p)
    assert [e.answer for e in exs] == ["1203", "-4"]
    assert exs[0].meta["solution"].startswith("3 + 1200")
    assert exs[1].id == "1"
    bad = _write(tmp_path / "gsm_bad.jsonl",
                 [{"question": "a", "answer": "1 #### 1"}, {"question": "b", "answer": "2"}])
    with pytest.raises(ValueError, match=r"gsm_bad\.jsonl:2: GSM8K answer has no '####'"):
        ds.load_gsm8k(bad)
    bad = _write(tmp_path / "gsm_bad2.jsonl", [{"question": "a", "answer": "#### 1"}, "]["])
    with pytest.raises(ValueError, match=r"gsm_bad2\.jsonl:2: not JSON"):
        ds.load_gsm8k(bad)
    bad = _write(tmp_path / "gsm_bad3.jsonl", [{"answer": "#### 1"}])
    with pytest.raises(ValueError, match=r"gsm_bad3\.jsonl:1: missing field\(s\) \['question'\]"):
        ds.load_gsm8k(bad)


def test_math500_loader_boxed(tmp_path: Path) -> None:
    p = _write(tmp_path / "math.jsonl", [
        {"problem": "Simplify.", "solution": "So it is $\\boxed{\\frac{1}{2}}$.", "level": "Level 3",
         "subject": "Algebra", "unique_id": "test/algebra/1.json"},
        {"problem": "Nested.", "solution": "\\boxed{\\sqrt{x^{2}}}", "answer": "|x|"},
        {"problem": "Only solution.", "solution": "first \\boxed{1} then \\boxed{2}"},
    ])
    exs = ds.load_math500(p)
    assert exs[0].answer == "\\frac{1}{2}" and exs[0].difficulty == 3 and exs[0].category == "Algebra"
    assert exs[0].id == "test/algebra/1.json"
    assert exs[1].answer == "|x|"  # an explicit answer wins over the boxed one
    assert exs[2].answer == "2"  # the last boxed
    assert Equivalence()(exs[0].answer, "0.5")
    bad = _write(tmp_path / "math_bad.jsonl", [{"problem": "x", "solution": "no box"}])
    with pytest.raises(ValueError, match=r"math_bad\.jsonl:1: no 'answer' and no \\boxed"):
        ds.load_math500(bad)


def test_multiple_choice_loader(tmp_path: Path) -> None:
    p = _write(tmp_path / "mc.jsonl", [
        {"question": "Sky?", "choices": ["green", "blue", "red"], "answer": "b"},
        {"question": "Two?", "options": ["1", "2"], "answer": 1},
    ])
    exs = ds.load_multiple_choice(p)
    assert [e.answer for e in exs] == ["B", "B"]
    assert exs[0].prompt("direct").splitlines()[1:4] == ["(A) green", "(B) blue", "(C) red"]
    bad = _write(tmp_path / "mc_bad.jsonl", [{"question": "a", "choices": ["x", "y"], "answer": "A"},
                                              {"question": "b", "choices": ["x", "y"], "answer": "D"}])
    with pytest.raises(ValueError, match=r"mc_bad\.jsonl:2: answer 'D' is not one of the 2 choices"):
        ds.load_multiple_choice(bad)
    bad = _write(tmp_path / "mc_bad2.jsonl", [{"question": "a", "answer": "A"}])
    with pytest.raises(ValueError, match=r"mc_bad2\.jsonl:1: no 'choices'"):
        ds.load_multiple_choice(bad)


@pytest.mark.parametrize("name", sorted(ds.GENERATORS))
def test_generators_are_seeded(name: str) -> None:
    gen = ds.GENERATORS[name]
    a, b, c = gen(30, seed=5), gen(30, seed=5), gen(30, seed=6)
    assert a == b
    assert [e.question for e in a] != [e.question for e in c]
    assert len({e.id for e in a}) == 30


def test_generated_answers_are_right() -> None:
    for e in ds.addition(50, seed=2, digits=2):
        x, y = e.meta["a"], e.meta["b"]
        assert 10 <= x <= 99 and 10 <= y <= 99 and int(e.answer) == x + y
    for e in ds.word_problems(40, seed=3):
        x = int(e.question.split(" has ")[1].split()[0])
        for op, y in e.meta["ops"]:
            x = x + y if op == "+" else x - y if op == "-" else x * y
        assert str(x) == e.answer and e.difficulty == len(e.meta["ops"])
    mix = ds.router_mix(40, seed=4)
    assert sorted({e.category for e in mix}) == ["direct", "reason"]
    assert sum(e.category == "reason" for e in mix) == 20


def test_generator_bad_arguments() -> None:
    with pytest.raises(ValueError, match="addition"):
        ds.addition(0)
    with pytest.raises(ValueError, match="word_problems"):
        ds.word_problems(3, steps=())
    with pytest.raises(ValueError, match="router_mix"):
        ds.router_mix(1)


def test_bad_rows_and_duplicate_ids_are_errors_naming_the_line(tmp_path: Path) -> None:
    cases = [
        ({"question": "q", "answer": None}, r":1: 'answer' is null"),
        ({"question": "q", "answer": False}, r":1: 'answer' must be a string or a number"),
        ({"question": "q", "answer": [1]}, r":1: 'answer' must be a string or a number"),
        ({"question": "q", "answer": " "}, r":1: 'answer' is empty"),
        ({"question": 3, "answer": "1"}, r":1: 'question' must be a string"),
        ({"question": "q", "answer": "1", "id": None}, r":1: 'id' must be a string or an integer"),
        ({"question": "q", "answer": "1", "difficulty": "hard"}, r":1: difficulty"),
        ({"question": "q", "answer": "1", "colour": "red"}, r":1: colour"),
    ]
    for row, message in cases:
        p = _write(tmp_path / "bad.jsonl", [row])
        with pytest.raises(ValueError, match=message):
            ds.load_jsonl(p)
    p = _write(tmp_path / "dup.jsonl", [{"id": 7, "question": "a", "answer": "1"},
                                         {"id": "7", "question": "b", "answer": "2"}])
    with pytest.raises(ValueError, match=r"dup\.jsonl:2: duplicate id '7' \(first on line 1\)"):
        ds.load_jsonl(p)
    p = _write(tmp_path / "gsm_dup.jsonl", [{"id": "x", "question": "a", "answer": "#### 1"},
                                             {"id": "x", "question": "b", "answer": "#### 2"}])
    with pytest.raises(ValueError, match="duplicate id 'x'"):
        ds.load_gsm8k(p)
    with pytest.raises(ValueError, match="duplicate id 'q'"):
        ds.check_unique_ids([ds.Example(id="q", question="a", answer="1")] * 2, "mine")
    with pytest.raises(ValueError, match="no such file"):
        ds.load_jsonl(tmp_path / "missing.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b'{"question": "a", "answer": "1"}\n\xff\xfe\n')
    with pytest.raises(ValueError, match=r"bin\.jsonl:2: not UTF-8"):
        ds.load_jsonl(tmp_path / "bin.jsonl")
    # numbers are kept as their text; a UTF-8 byte-order mark is not data
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"question": "a", "answer": 2.5}\n')
    assert ds.load_jsonl(tmp_path / "bom.jsonl")[0].answer == "2.5"


def test_math500_null_answer_falls_back_to_the_boxed_one(tmp_path: Path) -> None:
    p = _write(tmp_path / "m.jsonl", [{"problem": "x", "answer": None, "solution": "so \\boxed{3}"}])
    assert ds.load_math500(p)[0].answer == "3"
    p = _write(tmp_path / "m2.jsonl", [{"problem": "x", "answer": None}])
    with pytest.raises(ValueError, match="no 'answer' and no"):
        ds.load_math500(p)
