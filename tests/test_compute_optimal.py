"""The compute-optimal policy: its file, its fit, its budget, its held-out split, its benchmark."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttc import registry
from ttc.bench.compute_optimal import (
    Item,
    choose,
    expected,
    fit_from,
    items_of,
    measure,
    run_policy,
    side,
    split_keys,
)
from ttc.bench.pool import Pool
from ttc.configs import ConfigError
from ttc.strategies.compute_optimal import BIN_NAMES, BinChoice, ComputeOptimal, CurvePoint, Policy, probe_bin
from ttc.types import Generation, Prompt, Sample, SamplingParams

ROOT = Path(__file__).resolve().parents[1]
PARAMS = SamplingParams(temperature=0.8, max_tokens=32)


def _policy(**bins: BinChoice) -> Policy:
    base = {b: BinChoice(method="probe", max_samples=1) for b in BIN_NAMES}
    return Policy(probe=1, verifier="arithmetic_check", budget_per_question=50.0, bins={**base, **bins})


# -- the policy file ---------------------------------------------------------------------------------
def test_policy_file_round_trip_and_describe(tmp_path: Path) -> None:
    pol = _policy(agree=BinChoice(method="verified", max_samples=8, share=0.6, accuracy=0.8, tokens=90.0,
                                  curve=[CurvePoint(method="verified", max_samples=8, accuracy=0.8, tokens=90.0)]),
                  split=BinChoice(method="vote", max_samples=16, threshold=0.9))
    path = pol.save(tmp_path / "policy.json")
    again = Policy.load(path)
    assert again == pol
    data = json.loads(path.read_text())
    assert data["format"] == "ttc.compute_optimal" and data["version"] == 1 and data["bins"]["split"]["threshold"] == 0.9
    s = registry.build_from_spec(f"compute_optimal:policy={path}")
    d = s.describe()
    assert d["name"] == "compute_optimal" and Policy.parse(d["policy"]) == pol  # describe shows the policy
    assert registry.build(**json.loads(json.dumps(d))) == s
    table = s.policy.table()
    assert table[BIN_NAMES.index("agree")].verified and table[BIN_NAMES.index("agree")].max_samples == 8
    assert table[BIN_NAMES.index("split")].verified is False and table[BIN_NAMES.index("split")].threshold == 0.9
    assert "| agree | 0.60 | verified max 8 | 0.800 | 90.0 | 1 |" in "\n".join(pol.lines())


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["bins"]["agree"].update(max_samples=0), "bins.agree.max_samples"),
    (lambda d: d["bins"]["split"].update(method="beam"), "bins.split.method"),
    (lambda d: d["bins"].pop("unparsed"), "no choice for bin 'unparsed'"),
    (lambda d: d["bins"].update(hard={"method": "probe", "max_samples": 1}), "unknown bin 'hard'"),
    (lambda d: d.update(verifier=None), "bins.verified.method: 'verified' needs the policy's verifier"),
    (lambda d: d.update(version=2), "version: this ttc reads policy version 1"),
    (lambda d: d.update(format="other"), "format: expected 'ttc.compute_optimal'"),
    (lambda d: d.update(probe=0), "probe"),
    (lambda d: d.update(colour="red"), "colour"),
    (lambda d: d["bins"]["agree"].update(method="probe", max_samples=4), "bins.agree.max_samples: method 'probe'"),
])
def test_policy_validation_names_the_bad_field(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    data = _policy(verified=BinChoice(method="verified", max_samples=4)).model_dump(mode="json")
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        Policy.load(path)
    assert str(path) in str(e.value)
    with pytest.raises(ConfigError):
        registry.build_from_spec(f"compute_optimal:policy={path}")


def test_policy_files_that_are_not_policies(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        Policy.load(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        Policy.load(bad)
    with pytest.raises(ConfigError, match="no such file"):
        Policy.load(tmp_path / "missing.json")


# -- bins ---------------------------------------------------------------------------------------------
def _s(text: str, answer: str | None, score: float | None = None) -> Sample:
    return Sample(index=0, text=text, num_tokens=3, answer=answer, score=score)


def test_probe_bins() -> None:
    assert probe_bin([_s("3 + 4 = 7", "7", 1.0)], 1, verifier=True) == "verified"
    assert probe_bin([_s("3 + 4 = 7", "7", 1.0)], 1, verifier=False) == "agree"
    assert probe_bin([_s("7", "7", 0.5), _s("seven", "7", 0.5)], 2, verifier=True) == "agree"
    assert probe_bin([_s("7", "7", 0.5), _s("8", "8", 0.5)], 2, verifier=True) == "split"
    assert probe_bin([_s("7", "7", 0.5), _s("hm", None)], 2, verifier=True) == "split"
    assert probe_bin([_s("hm", None), _s("no", None)], 2, verifier=True) == "unparsed"
    # only the probe's samples count
    assert probe_bin([_s("7", "7", 0.5), _s("3 + 4 = 7", "7", 1.0)], 1, verifier=True) == "agree"


# -- fitting --------------------------------------------------------------------------------------------
def _item(i: int, a: int, b: int, texts: list[str], prefix: str = "What is") -> Item:
    q = f"{prefix} {a} + {b}?"
    gens = [Generation(text=t, num_tokens=5 + len(t) // 4) for t in texts]
    return Item(key=q, id=f"q{i}", prompt=Prompt.of(q), answer=str(a + b), samples=gens, prompt_tokens=10)


def _calibration() -> list[Item]:
    """Easy questions: every sample shows its (right) equation, so the first one passes the
    verifier. Hard ones: bare numbers (never verified), right 9 times in 16 with the wrong
    answers spread, first sample wrong in half of them: one sample is a coin flip, a vote of
    16 is right."""
    items = []
    for i in range(8):
        a, b = i + 1, 2
        items.append(_item(i, a, b, [f"{a} + {b} = {a + b}"] * 16))
    for i in range(8):
        a, b = i + 1, 5
        right, wrong = str(a + b), [str(a + b + d) for d in (1, 2, 3, 4, 5, 6, 7)]
        texts = [right] * 9 + wrong
        if i % 2:
            texts = wrong[:1] + [right] * 9 + wrong[1:]
        items.append(_item(8 + i, a, b, texts, prefix="Compute"))
    return items


def test_fit_takes_the_cheap_method_where_it_is_as_good_and_the_strong_one_where_it_gains() -> None:
    items = _calibration()
    m = asyncio.run(measure(items, PARAMS, probe=1, caps=(2, 4, 8, 16), verifier=True, seeds=(0, 1)))
    share_v, pts_v = m.curve("verified")
    share_a, pts_a = m.curve("agree")
    assert share_v == pytest.approx(0.5) and share_a == pytest.approx(0.5)
    assert all(p.accuracy == 1.0 for p in pts_v)  # every method is right on the easy half
    rich = fit_from(m, budget_per_question=1000.0)
    assert rich.bins["verified"].method == "probe"  # ... so the cheapest is chosen there
    single = next(p for p in pts_a if p.method == "probe")
    chosen = rich.bins["agree"]
    assert chosen.method == "vote" and chosen.accuracy > single.accuracy + 0.2  # voting gains on the hard half
    assert chosen.max_samples >= 8
    poor = fit_from(m, budget_per_question=1.0)  # nothing but the probe fits
    assert all(c.method == "probe" for c in poor.bins.values())
    acc, tok = expected(rich)
    assert acc > expected(poor)[0] and tok <= 1000.0


def test_choose_is_a_budgeted_knapsack_over_bins() -> None:
    def pt(t: float, a: float) -> CurvePoint:
        return CurvePoint(method="vote", max_samples=2, accuracy=a, tokens=t)

    curves = {"agree": (0.5, [pt(10, 0.5), pt(20, 0.5), pt(40, 0.9)]),  # the 20-token point gains nothing
              "split": (0.5, [pt(10, 0.2), pt(30, 0.3)])}
    assert choose(curves, 10.0) == {"agree": 0, "split": 0}
    assert choose(curves, 25.0) == {"agree": 2, "split": 0}  # +0.4 for 30 tokens beats +0.1 for 20
    assert choose(curves, 35.0) == {"agree": 2, "split": 1}


# -- the budget ------------------------------------------------------------------------------------------
choices = st.one_of(
    st.builds(lambda c: BinChoice(method="vote", max_samples=c), st.integers(2, 16)),
    st.builds(lambda c: BinChoice(method="verified", max_samples=c), st.integers(2, 16)),
    st.just(BinChoice(method="probe", max_samples=1)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bins=st.fixed_dictionaries({b: choices for b in BIN_NAMES}), budget=st.integers(1, 2500),
       seed=st.integers(0, 3))
def test_the_batch_budget_is_never_exceeded(bins: dict[str, BinChoice], budget: int, seed: int) -> None:
    pol = Policy(probe=1, verifier="arithmetic_check", bins=bins)
    items = _calibration()
    out = asyncio.run(run_policy(pol, items, [seed], PARAMS, budget_tokens=budget))
    assert out.tokens.sum() <= budget


def test_run_uses_the_policy_budget_when_given_none() -> None:
    from ttc.bench.compute_optimal import engine_for

    items = _calibration()
    pol = _policy(agree=BinChoice(method="vote", max_samples=16)).model_copy(update={"budget_per_question": 12.0})
    prompts = {i.id: i.prompt for i in items}
    res = asyncio.run(ComputeOptimal(pol, params=PARAMS, prompt_fn=lambda e: prompts[e.id]).run(
        [i.example() for i in items], engine_for(items, 0)))
    assert res.strategy == "compute_optimal" and res.budget.completion_tokens == 12 * len(items)
    assert res.usage.completion_tokens <= 12 * len(items)
    assert sum(res.meta["bins"].values()) == len(items)


# -- the held-out split ----------------------------------------------------------------------------------
def test_held_out_split_never_shares_questions() -> None:
    a = [_item(i, i % 10, i // 10, ["1"]) for i in range(100)]
    b = [_item(100 + i, (i * 7) % 10, (i * 3) % 10, ["1"]) for i in range(100)]  # the same texts, other ids
    fit, ev = split_keys(a, b)
    assert fit and ev and not ({i.key for i in fit} & {i.key for i in ev})
    assert all(side(i.key) == "fit" for i in fit) and all(side(i.key) == "eval" for i in ev)
    assert 30 <= len(fit) <= 70  # about half
    pool = items_of(Pool.load(ROOT / "benchmarks" / "pools" / "addition_quick_40x16.jsonl.gz"))
    fit, ev = split_keys(pool, pool)
    assert len(fit) + len(ev) == len(pool) and not ({i.key for i in fit} & {i.key for i in ev})
    with pytest.raises(ValueError, match="both sides need questions"):
        split_keys(fit, fit)


# -- the benchmark -----------------------------------------------------------------------------------------
def test_quick_benchmark_prints_the_goal_rows_and_the_policy(tmp_path: Path) -> None:
    out = tmp_path / "policy.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compute_optimal.py"), "--quick",
                        "--policy-out", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert "no question text on both sides" in text
    assert "Row 1: the policy" in text and "Row 2: policy - best fixed strategy" in text
    assert "fixed-16 self-consistency on the eval side: accuracy" in text and "pp [" in text
    for b in BIN_NAMES:
        assert f"| {b} |" in text
    pol = Policy.load(out)
    assert pol.budget_per_question and pol.fit["questions"] == 20


def test_one_batch_settles_some_bins_by_the_verifier_and_others_by_the_vote() -> None:
    from ttc.bench.compute_optimal import engine_for

    items = _calibration()  # 8 easy (verified at once), 8 bare numbers (bin "agree")
    pol = _policy(agree=BinChoice(method="vote", max_samples=16),
                  split=BinChoice(method="verified", max_samples=16))
    prompts = {i.id: i.prompt for i in items}
    res = asyncio.run(ComputeOptimal(pol, params=PARAMS, prompt_fn=lambda e: prompts[e.id]).run(
        [i.example() for i in items], engine_for(items, 0)))
    easy, hard = res.questions[:8], res.questions[8:]
    assert all(q.bin == BIN_NAMES.index("verified") and q.num_samples == 1 and q.correct for q in easy)
    assert all("passed" in q.meta for q in easy)  # answered among the passing samples
    assert all(q.bin == BIN_NAMES.index("agree") and "votes" in q.meta and "passed" not in q.meta for q in hard)
    assert sum(q.num_samples for q in hard) > 8 and sum(bool(q.correct) for q in hard) >= 6  # the vote works
