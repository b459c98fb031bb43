"""Damaged pool files are errors naming the file and the record: a truncated or
mid-file corrupted ``.jsonl.gz``, a bad line in a plain pool, a question record with
missing or ill-typed fields. ``--allow-partial`` (``Pool.load(allow_partial=True)``)
replays the readable questions and says how many it kept."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttc.bench.cli import app
from ttc.bench.datasets import Example
from ttc.bench.pool import DamagedFile, Pool, read_records, record_pool, scan_records
from ttc.engines import ScriptedEngine
from ttc.sync import run_sync
from ttc.types import SamplingParams

runner = CliRunner()
N = 20


@pytest.fixture(scope="module")
def pool_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("pool") / "pool.jsonl.gz"
    exs = [Example(id=f"q{i}", question=f"What is {i} + 2?", answer=str(i + 2)) for i in range(N)]
    eng = ScriptedEngine(lambda p, i, rng: f"I add. The answer is {int(p.question.split()[2]) + 2}.",
                         confidence=lambda t, j: 0.7)
    run_sync(record_pool(eng, exs, path, k=4, logprobs=2, params=SamplingParams(max_tokens=16), concurrency=1,
                         progress=False))  # one at a time: line i + 2 holds question q{i}
    return path.read_bytes()


def _members(data: bytes) -> list[int]:
    """Byte offsets of the gzip members (one record each)."""
    return [i for i in range(len(data)) if data.startswith(b"\x1f\x8b\x08\x00", i)
            and _decodes(data[i:])]


def _decodes(rest: bytes) -> bool:
    import zlib

    d = zlib.decompressobj(wbits=31)
    try:
        d.decompress(rest)
    except zlib.error:
        return False
    return d.eof


def _replay(path: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["replay", "--pool", str(path), "-s", "majority:n=B", "--budgets", "1,2",
                               "--seeds", "1", "--out", str(out), *extra])


def test_a_truncated_pool_is_an_error_naming_file_and_record(pool_bytes: bytes, tmp_path: Path) -> None:
    starts = _members(pool_bytes)
    assert len(starts) == N + 1  # header + one member per question
    cut = starts[11] + 20  # inside the member of line 12 (the 11th question)
    path = tmp_path / "trunc.jsonl.gz"
    path.write_bytes(pool_bytes[:cut])
    with pytest.raises(DamagedFile, match=rf"trunc\.jsonl\.gz: damaged record at line 12 \(byte {starts[11]}\): "
                                          r"truncated gzip data.*10 readable question"):
        Pool.load(path)
    res = _replay(path, tmp_path / "r.jsonl")
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1
    assert f"error: {path}: damaged record at line 12" in lines[0] and "--allow-partial" in lines[0]
    assert not (tmp_path / "r.jsonl").exists()
    # accepted explicitly: replays the 10 readable questions and says so
    res = _replay(path, tmp_path / "r.jsonl", "--allow-partial")
    assert res.exit_code == 0, res.output
    assert "kept 10 readable question(s)" in res.output and "1 record(s) skipped" in res.output
    rows = [json.loads(ln) for ln in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows if r["type"] == "replay"} == {f"q{i}" for i in range(10)}


def test_mid_file_corruption_is_an_error_and_partial_keeps_the_rest(pool_bytes: bytes, tmp_path: Path) -> None:
    starts = _members(pool_bytes)
    bad = bytearray(pool_bytes)
    mid = (starts[5] + starts[6]) // 2  # inside the compressed data of line 6 (question q4)
    bad[mid : mid + 6] = b"\x00" * 6
    path = tmp_path / "mid.jsonl.gz"
    path.write_bytes(bytes(bad))
    with pytest.raises(DamagedFile, match=rf"mid\.jsonl\.gz: damaged record at line 6 \(byte {starts[5]}\): "
                                          r"corrupt gzip data"):
        Pool.load(path)
    res = _replay(path, tmp_path / "r.jsonl")
    assert res.exit_code == 2 and "damaged record at line 6" in res.output
    pool = Pool.load(path, allow_partial=True)
    assert [q.id for q in pool.questions] == [f"q{i}" for i in range(N) if i != 4]
    assert len(pool.damage) == 1 and pool.damage[0].line == 6 and not pool.damage[0].tail
    res = _replay(path, tmp_path / "r.jsonl", "--allow-partial")
    assert res.exit_code == 0 and f"kept {N - 1} readable question(s)" in res.output


def test_plain_pool_with_a_bad_line(pool_bytes: bytes, tmp_path: Path) -> None:
    lines = gzip.decompress(pool_bytes).decode().splitlines()
    lines[3] = lines[3][: len(lines[3]) // 2]  # a half line in the middle
    path = tmp_path / "pool.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DamagedFile, match=r"pool\.jsonl: damaged record at line 4: not JSON"):
        Pool.load(path)
    assert len(Pool.load(path, allow_partial=True)) == N - 1


@pytest.mark.parametrize("field,value,message", [
    ("answer", None, "answer: expected a string or a number"),
    ("samples", "text", "samples: expected a list"),
    ("prompt_tokens", -3, "prompt_tokens: expected an integer >= 0"),
    ("id", ["x"], "id: expected a string or an integer"),
    ("prompt", {"text": ""}, "prompt"),
    ("samples", [{"text": "a", "num_tokens": -1}], "num_tokens"),
    ("samples", [{"text": "a", "num_tokens": 1, "logprobs": [["a"]]}], "bad pool record"),
    ("samples", [{"num_tokens": 1}], "missing field 'text'"),
    ("type", "questoin", "unknown record type 'questoin'"),
])
def test_a_bad_question_record_names_its_line_and_field(pool_bytes: bytes, tmp_path: Path, field: str,
                                                        value: object, message: str) -> None:
    rows = [json.loads(ln) for ln in gzip.decompress(pool_bytes).decode().splitlines()]
    rows[7][field] = value
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DamagedFile, match=r"line 8") as ei:
        Pool.load(path)
    assert message in str(ei.value)
    assert len(Pool.load(path, allow_partial=True)) == N - 1


def test_duplicate_question_ids_and_missing_header(pool_bytes: bytes, tmp_path: Path) -> None:
    rows = [json.loads(ln) for ln in gzip.decompress(pool_bytes).decode().splitlines()]
    path = tmp_path / "dup.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, rows[3]]))
    with pytest.raises(DamagedFile, match=r"line 22.*duplicate question id 'q2' \(first at line 4\)"):
        Pool.load(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[1:]))
    with pytest.raises(ValueError, match="not a ttc pool"):
        Pool.load(path, allow_partial=True)


def test_read_records_tolerates_only_a_torn_tail(pool_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl.gz"
    path.write_bytes(pool_bytes[: _members(pool_bytes)[-1] + 15])  # the last record is cut
    assert len(list(read_records(path))) == N  # tail tolerated: header + 19 questions
    with pytest.raises(DamagedFile, match="line 21"):
        list(read_records(path, tolerate_truncation=False))
    path.write_bytes(pool_bytes[:-7])  # only the last member's checksum trailer is cut: its line is whole
    assert len(list(read_records(path))) == N + 1
    with pytest.raises(DamagedFile, match="line 22 .*truncated gzip data"):
        Pool.load(path)  # but a pool is strict: it says so
    bad = bytearray(pool_bytes)
    i = _members(pool_bytes)[2] + 30
    bad[i : i + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(bad))
    with pytest.raises(DamagedFile, match="line 3"):
        list(read_records(path))  # mid-file damage is never tolerated


def test_random_damage_never_escapes_as_another_exception(pool_bytes: bytes, tmp_path: Path) -> None:
    """Truncations and byte flips anywhere: the pool loads identically (the flip hit bytes
    that carry no data, e.g. a gzip header's timestamp) or the load raises ValueError."""
    ref_path = tmp_path / "ref.jsonl.gz"
    ref_path.write_bytes(pool_bytes)
    ref = [(q.id, [g.text for g in q.samples]) for q in Pool.load(ref_path).questions]
    rng = random.Random(0)
    path = tmp_path / "x.jsonl.gz"
    outcomes = {"same": 0, "error": 0}
    for trial in range(150):
        data = bytearray(pool_bytes)
        if trial % 3 == 0:
            data = data[: rng.randrange(1, len(data))]
        else:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:
            pool = Pool.load(path)
        except ValueError as e:
            assert str(path) in str(e)
            outcomes["error"] += 1
            partial = Pool.load(path, allow_partial=True) if "not a ttc pool" not in str(e) else None
            if partial is not None:
                assert {q.id for q in partial.questions} <= {i for i, _ in ref}
            continue
        assert [(q.id, [g.text for g in q.samples]) for q in pool.questions] == ref
        outcomes["same"] += 1
    assert outcomes["error"] > 100


def test_scan_reports_where_the_damage_is(pool_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl.gz"
    path.write_bytes(pool_bytes + b"\x1f\x8b\x08\x00garbage")  # a member torn at the end
    scan = scan_records(path)
    assert len(scan.records) == N + 1 and len(scan.damage) == 1
    d = scan.damage[0]
    assert d.tail and d.line == N + 2 and d.offset == len(pool_bytes)
