"""Early exit and the self-evaluation gate on the real bundled model, both engines."""

from __future__ import annotations

import pytest

from ttc.budget import Budget
from ttc.strategies.early_exit import DynasorCoT, EarlyExit
from ttc.strategies.self_eval import SelfEvalGate

pytestmark = pytest.mark.real

Q = "Ann has 5 apples. Ann gets 3 more. How many apples does Ann have now?\nThink step by step, then end with 'The answer is N.'"


@pytest.mark.parametrize("mode", ["continuation", "stream"])
async def test_dynasor_probes_on_real_model(real_engine, mode):
    ee = EarlyExit(chunk_tokens=16, k=2, max_tokens=96, probe_max_tokens=12, mode=mode)
    res = await DynasorCoT(ee).run(Q, real_engine, Budget(completion_tokens=2000))
    s = res.samples[0]
    assert s.meta["exit"] in ("certain", "finished", "max_tokens")
    gen, probe = res.usage_by_kind["generate"], res.usage_by_kind.get("probe")
    assert 0 < s.num_tokens <= 96
    assert s.num_tokens <= gen.completion_tokens  # an aborted chunk may bill extra trace-kind tokens
    if s.num_tokens >= 32 and s.meta["exit"] != "finished":
        assert s.meta["probes"]  # at least one probe went out while the trace ran
    if s.meta["probes"]:
        assert probe is not None and probe.calls == len(s.meta["probes"])
        assert probe.completion_tokens == s.meta["probe_tokens"]
    assert res.usage.completion_tokens == gen.completion_tokens + (probe.completion_tokens if probe else 0)
    if s.meta["exit"] == "certain":
        assert s.text.endswith(f"\\boxed{{{s.answer}}} \\]") and res.stop_reason == "certainty"
        assert s.num_tokens < 96


async def test_self_eval_gate_on_real_model(real_engine):
    res = await SelfEvalGate(threshold=0.5, max_samples=3).run(Q, real_engine, Budget(completion_tokens=1000))
    assert res.stop_reason in ("self_eval", "max_samples", "budget")
    assert res.samples and all(0.0 <= s.score <= 1.0 for s in res.samples if s.score is not None)
    assert res.usage_by_kind["self_eval"].completion_tokens == res.usage_by_kind["self_eval"].calls


async def test_early_exit_vote_on_a_shared_board_on_real_model(real_engine):
    """Early exit with self-consistency on the board: every trace probed, the vote stopped
    as the board decides, the running traces halted, and every token metered."""
    from ttc.strategies.early_exit import EarlyExitSelfConsistency
    from ttc.strategies.stopping import BetaRule
    from ttc.types import SamplingParams

    ee = EarlyExit("eager", max_tokens=96, probe="boxed_fast")
    sc = EarlyExitSelfConsistency(BetaRule(0.9, max_samples=4), early_exit=ee, board=True, share_probes=True,
                                  agree=2, params=SamplingParams(temperature=0.7))
    res = await sc.run(Q, real_engine, Budget(completion_tokens=3000), seed=0)
    assert res.stop_reason in ("decided", "beta", "max_samples")
    assert 1 <= len(res.samples) <= 4
    exits = {s.meta["exit"] for s in res.samples}
    assert exits <= {"certain", "agreed", "finished", "max_tokens", "halted"}
    assert all(0 < s.num_tokens <= 96 for s in res.samples)
    gen, probe = res.usage_by_kind["generate"], res.usage_by_kind.get("probe")
    assert res.usage.completion_tokens == gen.completion_tokens + (probe.completion_tokens if probe else 0)
    assert sum(s.num_tokens for s in res.samples) <= gen.completion_tokens
    voters = [s for s in res.samples if not s.meta.get("late")]
    if res.answer is not None:  # the vote answers with its class's normal form ("N" votes as "n")
        from ttc.answers import normalize

        assert any(normalize(s.answer) == res.answer for s in voters), (
            res.answer, [(s.answer, s.meta.get("exit")) for s in res.samples])
