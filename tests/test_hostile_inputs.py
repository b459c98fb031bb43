"""Hostile answers: no text is ever executed, time limits hold, the event loop never stalls.

Every payload of ``tests/data/hostile_answers.jsonl`` (a copy of the project's fuzz
file: code that tries to create a marker file, and resource bombs) plus a few of our
own goes through each way answer text reaches grading:

- ``Equivalence`` against a reference, the raw text and its extracted answer;
- a vote: ``group_answers`` and a ``SelfConsistency`` run on a ``ScriptedEngine``
  answering it, with a heartbeat task on the event loop;
- ``ttc run`` against a real local HTTP server (``FaultServer``) answering it;
- ``ttc replay`` on a pool file holding it.

Asserted: no marker file appears; each call returns within its limit + 0.5 s; the
heartbeat (10 ms sleeps) is never late by more than 100 ms while strategies grade.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttc import grading
from ttc.answers import DEFAULT_EQUIVALENCE, Equivalence, extract_answer, group_answers
from ttc.bench.cli import app
from ttc.bench.datasets import Example, save_jsonl
from ttc.bench.pool import record_pool
from ttc.engines import ScriptedEngine
from ttc.strategies.self_consistency import SelfConsistency
from ttc.strategies.stopping import FixedN
from ttc.testing.fault_server import FaultConfig, FaultServer
from ttc.types import SamplingParams

MARKER = Path("/tmp/ttc_hostile_marker")
DATA = Path(__file__).parent / "data" / "hostile_answers.jsonl"
LIMIT = 1.0  # the symbolic time limit the tests grade under (seconds)
SLACK = 0.5
REFERENCE = "42"


def _build(row: dict) -> str:
    """A payload's text: ``text``, or ``left * n + mid + right * n`` (the file's README)."""
    if "text" in row:
        return row["text"]
    b = row["build"]
    return b["left"] * b["n"] + b["mid"] + b["right"] * b["n"]


def _payloads() -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = [(r["name"], _build(r)) for r in rows]
    out += [  # ours: shapes the file does not hold
        ("ours_digits_1e6", "1" * 10**6),
        ("ours_unclosed_boxed_flood", "\\boxed{" * 20_000 + "1"),
        ("ours_neg_tower", "2^{-(2^{40})}"),
        ("ours_gamma", "\\Gamma(10^{9})"),
        ("ours_sum", "\\sum_{i=1}^{10^{12}} i!"),
        ("ours_zeros_matrix", "\\operatorname{zeros}(10^{5}, 10^{5})"),
        ("ours_deep_latex", "\\frac{" * 300 + "1" + "}{2}" * 300),
        ("ours_unicode_minus_tower", "9^9^9\u2212x"),
    ]
    return out


PAYLOADS = _payloads()
IDS = [name for name, _ in PAYLOADS]


def served(text: str) -> str:
    """What a hostile server or pool answers: the text itself when it already states an
    answer, else ``\\boxed{text}``."""
    return text if ("\\boxed" in text or "answer is" in text.lower()) else f"\\boxed{{{text}}}"


@pytest.fixture(scope="module", autouse=True)
def _marker_and_pool():  # type: ignore[no-untyped-def]
    MARKER.unlink(missing_ok=True)
    grading.default_pool().warm_up()  # the grading process starts once; limits count from then
    yield
    assert not MARKER.exists(), "a payload ran code"


def _no_code_ran() -> None:
    assert not MARKER.exists(), "a payload ran code"


class Heartbeat:
    """A task that sleeps 10 ms in a loop and records how late each wake-up is."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task | None = None

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, loop.time() - t - 0.01)

    async def __aenter__(self) -> Heartbeat:
        self._task = asyncio.ensure_future(self._beat())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.mark.parametrize("name,text", PAYLOADS, ids=IDS)
def test_equivalence_grades_within_its_limit(name: str, text: str) -> None:
    eq = Equivalence(sympy_timeout=LIMIT)
    for answer in (text, extract_answer(text)):
        t0 = time.monotonic()
        verdict = eq(answer, REFERENCE)
        elapsed = time.monotonic() - t0
        assert verdict is False, f"{name}: {answer[:60]!r} graded equal to {REFERENCE}"
        assert elapsed <= LIMIT + SLACK, f"{name}: {elapsed:.2f} s"
        _no_code_ran()


@pytest.mark.parametrize("name,text", PAYLOADS, ids=IDS)
def test_vote_grades_within_its_limit(name: str, text: str) -> None:
    eq = Equivalence(sympy_timeout=LIMIT)
    answer = extract_answer(served(text))
    t0 = time.monotonic()
    classes = group_answers([answer, REFERENCE, answer, REFERENCE, REFERENCE], eq)
    assert time.monotonic() - t0 <= LIMIT + SLACK
    assert [c.members for c in classes if c.answer == REFERENCE] == [[1, 3, 4]]
    _no_code_ran()


@pytest.mark.parametrize("name,text", PAYLOADS, ids=IDS)
async def test_self_consistency_grades_off_the_event_loop(name: str, text: str) -> None:
    """Stopping checks after each sample and the final vote: one symbolic check at most
    (the verdict and an unusable answer are remembered), never on the event loop."""
    eng = ScriptedEngine([served(text), f"\\boxed{{{REFERENCE}}}", f"The answer is {REFERENCE}."])
    sc = SelfConsistency(FixedN(3), eq=Equivalence(sympy_timeout=LIMIT), batch_sizes=(1,))
    async with Heartbeat() as hb:
        t0 = time.monotonic()
        res = await sc.run("q", eng)
        elapsed = time.monotonic() - t0
    assert res.answer == REFERENCE and len(res.samples) == 3
    assert elapsed <= LIMIT + SLACK, f"{name}: {elapsed:.2f} s"
    assert hb.worst <= 0.1, f"{name}: event loop stalled {hb.worst * 1000:.0f} ms"
    _no_code_ran()


async def test_hostile_questions_delay_only_themselves() -> None:
    """Every payload's question in flight at once, each also holding an answer whose
    comparison runs out the limit, and an honest question alongside: the honest one
    finishes in its own time and the loop keeps beating. (Answers arrive a few ms
    apart, as from a server: reading a megabyte answer on the loop takes ~10 ms, and
    thirty arriving in the same instant would queue behind each other whatever the
    grading does.)"""
    slow = "\\boxed{(x+y+z+1)^{40} - (x-y-z-1)^{40}}"  # passes the bounds; its comparisons run out

    async def hostile(i: int, text: str) -> None:
        eng = ScriptedEngine([served(text), "\\boxed{x+1}", slow], delay=0.02 * i)
        sc = SelfConsistency(FixedN(3), eq=Equivalence(sympy_timeout=0.5), batch_sizes=(3,))
        await sc.run("q", eng)

    async def honest() -> float:
        t0 = time.monotonic()
        res = await SelfConsistency(FixedN(4)).run("q", ScriptedEngine(["\\boxed{7}"], delay=0.05))
        assert res.answer == "7"
        return time.monotonic() - t0

    async with Heartbeat() as hb:
        tasks = [asyncio.ensure_future(hostile(i, t)) for i, (_, t) in enumerate(PAYLOADS)]
        await asyncio.sleep(0.05)
        honest_s = await honest()
        await asyncio.gather(*tasks)
    assert honest_s < 1.0, f"an honest question took {honest_s:.2f} s among hostile ones"
    assert hb.worst <= 0.1, f"event loop stalled {hb.worst * 1000:.0f} ms"
    _no_code_ran()


def test_a_check_past_its_limit_is_killed_and_replaced() -> None:
    pool = grading.GradingPool(max_workers=1)
    try:
        pool.warm_up()
        kills = pool.kills
        t0 = time.monotonic()
        res = pool.check("(x+y+z+1)^{40} - (x-y-z-1)^{40}", "x+1", timeout=0.2)
        assert res.timed_out and not res.equal and time.monotonic() - t0 <= 0.2 + SLACK
        assert pool.kills == kills + 1
        assert pool.check("x+1", "1+x", timeout=5).equal  # a fresh worker took its place
    finally:
        pool.shutdown()


def test_an_answer_that_timed_out_twice_is_not_checked_again() -> None:
    """A comparison that runs out the limit cannot say which side was slow: an answer in
    two such comparisons is set aside, so it costs a vote at most two time limits."""
    eq = Equivalence(sympy_timeout=0.2)
    bomb = "(x+y+z+1)^{40} - (x-y-z-1)^{40}"
    for other in ("x+1", "y+2"):
        t0 = time.monotonic()
        assert not eq(bomb, other)
        assert 0.2 <= time.monotonic() - t0 <= 0.2 + SLACK
    assert "time limit" in (eq.unusable(bomb) or "") and eq.unusable("x+1") is None
    t0 = time.monotonic()
    assert not eq(bomb, "z+3") and not eq(bomb, "w+4")
    assert time.monotonic() - t0 < 0.1
    assert eq("x+1", "1+x") and eq("y+2", "2+y")  # the partners are still checked


# -- the command line --------------------------------------------------------------------
runner = CliRunner()


def _cli_run(tmp: Path, tag: str, answers: list[str], reference: str) -> float:
    exs = [Example(id=f"{tag}{i}", question=f"Question {i}?", answer=reference) for i in range(len(answers))]
    data = save_jsonl(exs, tmp / f"{tag}.jsonl")
    out = tmp / f"{tag}_out.jsonl"
    with FaultServer(FaultConfig(answers=tuple(answers), lifetime=120)) as srv:
        t0 = time.monotonic()
        res = runner.invoke(app, ["run", "--dataset", str(data), "--strategy", "greedy", "--engine", "openai",
                                  "--base-url", srv.base_url, "--model", "fake", "--out", str(out),
                                  "--concurrency", "1"])
        elapsed = time.monotonic() - t0
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    results = [r for r in rows if r.get("type") == "result"]
    assert len(results) == len(answers)
    assert all(r["correct"] == (tag == "honest") for r in results), [r["answer"] for r in results]
    return elapsed


def test_ttc_run_against_a_server_answering_the_payloads(tmp_path: Path) -> None:
    """One ``ttc run`` over every payload (a question each, the server answering them in
    order) costs at most one time limit more than the same run on honest answers that
    also need a symbolic check."""
    n = len(PAYLOADS)
    honest = _cli_run(tmp_path, "honest", ["\\boxed{1+x}"] * n, "x+1")
    hostile = _cli_run(tmp_path, "hostile", [served(t) for _, t in PAYLOADS], REFERENCE)
    assert hostile <= honest + DEFAULT_EQUIVALENCE.sympy_timeout + SLACK, (honest, hostile)
    _no_code_ran()


def _pool_script(texts: dict[str, str]):  # type: ignore[no-untyped-def]
    def script(prompt, i, rng):  # type: ignore[no-untyped-def]
        q = prompt.question
        return texts[q] if i % 3 == 0 else f"\\boxed{{{REFERENCE if 'hostile' in q else '1+x'}}}"

    return script


async def _cli_replay(tmp: Path, tag: str, texts: list[str], reference: str) -> float:
    exs = [Example(id=f"{tag}{i}", question=f"{tag} question {i}?", answer=reference) for i in range(len(texts))]
    script = _pool_script({e.question: t for e, t in zip(exs, texts)})
    pool = tmp / f"{tag}.jsonl.gz"
    await record_pool(ScriptedEngine(script), exs, pool, k=3, params=SamplingParams(max_tokens=64),
                      logprobs=0, progress=False, concurrency=1)
    out = tmp / f"{tag}_replay.jsonl"
    args = ["replay", "--pool", str(pool), "-s", "majority:n=B", "--budgets", "3", "--seeds", "1",
            "--out", str(out)]
    t0 = time.monotonic()
    res = await asyncio.to_thread(runner.invoke, app, args)
    elapsed = time.monotonic() - t0
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    replays = [r for r in rows if r.get("type") == "replay"]
    assert len(replays) == len(texts) and all(r["accuracy"] == 1.0 for r in replays)
    return elapsed


async def test_ttc_replay_on_a_pool_holding_the_payloads(tmp_path: Path) -> None:
    """Each question's pool holds the payload and two right answers; majority votes over
    all three (one symbolic check each) and the right answer wins every time."""
    n = len(PAYLOADS)
    honest = await _cli_replay(tmp_path, "honest", ["\\boxed{(x+1)}"] * n, "x+1")
    hostile = await _cli_replay(tmp_path, "hostile", [served(t) for _, t in PAYLOADS], REFERENCE)
    assert hostile <= honest + DEFAULT_EQUIVALENCE.sympy_timeout + SLACK, (honest, hostile)
    _no_code_ran()


def test_the_test_data_is_the_fuzz_file() -> None:
    """The copy holds every case of the shared fuzz file when that file is present."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "fuzz" / "hostile_answers.jsonl"
    if not shared.exists():
        pytest.skip("the shared fuzz file is not beside this checkout")
    ours = {json.loads(line)["name"] for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()}
    theirs = {json.loads(line)["name"] for line in shared.read_text(encoding="utf-8").splitlines() if line.strip()}
    assert theirs <= ours


def test_marker_check_is_live(tmp_path: Path) -> None:
    """The marker assertion can fail: creating the file is seen (then it is removed)."""
    MARKER.touch()
    try:
        with pytest.raises(AssertionError):
            _no_code_ran()
    finally:
        MARKER.unlink()
