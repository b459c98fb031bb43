"""The step policy: delimiters, EOS, answer markers, exact max_steps, empty steps."""

from __future__ import annotations

import pytest

from ttc import Budget, Generation, SamplingParams
from ttc.engines import ScriptedEngine
from ttc.strategies import ParticleFiltering, StepPolicy, Trajectory
from ttc.verifiers import ArithmeticStepCheck


def _steps_in(prefix: str) -> int:
    return prefix.count("\n\n")


def test_params_add_delimiter_and_step_cap() -> None:
    pol = StepPolicy(delimiter="\n\n", max_step_tokens=17)
    p = pol.params(SamplingParams(stop=["<end>"], temperature=0.5), n=3)
    assert p.stop == ["<end>", "\n\n"] and p.max_tokens == 17 and p.n == 3 and p.temperature == 0.5
    tok = StepPolicy(step_tokens=5).params(SamplingParams())
    assert tok.max_tokens == 5 and tok.stop == []


def test_bad_fields_are_named() -> None:
    with pytest.raises(ValueError, match="max_steps"):
        StepPolicy(max_steps=0)
    with pytest.raises(ValueError, match="delimiter"):
        StepPolicy(delimiter="")
    with pytest.raises(ValueError, match="step_tokens"):
        StepPolicy(step_tokens=0)


def test_apply_delimiter_eos_marker_empty() -> None:
    pol = StepPolicy(max_steps=10)
    t = Trajectory()
    a = pol.apply(t, Generation(text="2 + 2 = 4", num_tokens=5, stop_reason="\n\n"))
    assert a.steps == ["2 + 2 = 4\n\n"] and not a.finished and a.parent == t.uid  # delimiter re-appended
    b = pol.apply(a, Generation(text="so 4 more", num_tokens=3, stop_reason="eos"))
    assert b.finished and b.finish == "eos" and b.text == "2 + 2 = 4\n\nso 4 more"
    c = pol.apply(a, Generation(text="The answer is 4.", num_tokens=4, stop_reason="\n\n"))
    assert c.finished and c.finish == "answer"
    d = pol.apply(a, Generation(text="  \n", num_tokens=1, stop_reason="\n\n"))
    assert d.finished and d.finish == "empty" and d.steps == a.steps
    e = pol.apply(a, Generation(text="x" * 3, num_tokens=3, finish_reason="length"))
    assert not e.finished and e.steps[-1] == "xxx"  # a long step, no delimiter added
    with pytest.raises(ValueError, match="finished"):
        pol.apply(b, Generation(text="more", num_tokens=1))


def test_the_delimiter_keeps_the_whitespace_its_token_held() -> None:
    """A token "\n\n   " stops on "\n\n": the step keeps the spaces (the prefix stays the
    model's tokens); anything but whitespace past the delimiter is not the model's next step."""
    pol = StepPolicy()
    a = pol.apply(Trajectory(), Generation(text="1 + 1 = 2", num_tokens=6, stop_reason="\n\n",
                                           stop_text="\n\n   "))
    assert a.steps == ["1 + 1 = 2\n\n   "] and not a.finished
    b = pol.apply(a, Generation(text="so", num_tokens=2, stop_reason="\n\n", stop_text="\n\nThe"))
    assert b.steps[-1] == "so\n\n"
    c = pol.apply(a, Generation(text="so", num_tokens=2, stop_reason="\n\n", stop_text="\n\n"))
    assert c.steps[-1] == "so\n\n" and c.text == "1 + 1 = 2\n\n   so\n\n"


def test_unknown_stop_reason_falls_back_to_delimiter() -> None:
    pol = StepPolicy()
    a = pol.apply(Trajectory(), Generation(text="step one", num_tokens=2, stop_reason=None))
    assert not a.finished and a.steps == ["step one\n\n"]
    b = pol.apply(a, Generation(text="", num_tokens=0, stop_reason=None))
    assert b.finished and b.finish == "empty"


def test_exact_max_steps_and_call_count() -> None:
    eng = ScriptedEngine(lambda p, i, rng: f"1 + {_steps_in(p.assistant_prefix)} = {1 + _steps_in(p.assistant_prefix)}"
                         "\n\nmore text")
    pf = ParticleFiltering(3, ArithmeticStepCheck(), policy=StepPolicy(max_steps=4))
    r = pf.run_sync("q", eng, seed=0)
    finals = [s for s in r.samples]
    assert all(s.meta["steps"] == 4 and s.meta["finish"] == "max_steps" for s in finals)
    assert all(s.text.count("\n\n") == 4 for s in finals)
    assert eng.samples_served == 3 * 4  # one step per particle per step, never a 5th step
    assert eng.calls == 4  # identical particles share one request (n=3) per step


def test_empty_step_ends_the_trajectory() -> None:
    def script(p, i, rng):  # type: ignore[no-untyped-def]
        return "3 * 2 = 6\n\n" if _steps_in(p.assistant_prefix) == 0 else "\n\nnext"

    eng = ScriptedEngine(script)
    r = ParticleFiltering(2, ArithmeticStepCheck(), policy=StepPolicy(max_steps=8)).run_sync("q", eng, seed=0)
    assert eng.samples_served == 4  # step 1, then one empty step each; no loop
    assert all(s.meta["finish"] == "empty" and s.meta["steps"] == 1 for s in r.samples)
    assert r.answer == "6"


def test_eos_ends_and_continuation_uses_prefix() -> None:
    def script(p, i, rng):  # type: ignore[no-untyped-def]
        return "4 + 4 = 8\n\n" if _steps_in(p.assistant_prefix) == 0 else "so we get 8"

    eng = ScriptedEngine(script)
    r = ParticleFiltering(2, ArithmeticStepCheck()).run_sync("What is 4 + 4?", eng, seed=0)
    assert all(s.meta["finish"] == "eos" and s.meta["steps"] == 2 for s in r.samples)
    second = [p for p in eng.prompts if p.assistant_prefix]
    assert second and all(p.assistant_prefix == "4 + 4 = 8\n\n" for p in second)
    assert all(p.question == "What is 4 + 4?" for p in eng.prompts)


def test_token_count_steps() -> None:
    eng = ScriptedEngine(["a b c d e f g h i j k l m n o p"])
    pol = StepPolicy(step_tokens=3, max_steps=2)
    r = ParticleFiltering(2, ArithmeticStepCheck(), policy=pol).run_sync("q", eng, seed=0)
    for s in r.samples:
        assert s.meta["steps"] == 2 and s.num_tokens == 6 and s.meta["finish"] == "max_steps"


def test_trajectory_prefix_keeps_prefix_scores() -> None:
    pol = StepPolicy()
    t = Trajectory()
    for k in range(3):
        t = pol.apply(t, Generation(text=f"s{k}", num_tokens=1, stop_reason="\n\n"))
        t.agg_history.append(0.1 * (k + 1))
    p2 = t.prefix(2)
    assert p2.steps == t.steps[:2] and p2.score == pytest.approx(0.2) and not p2.finished
    assert p2.uid == t.lineage[2] and p2.parent == t.lineage[1]


def test_prefix_of_a_trajectory_whose_last_step_came_back_empty_keeps_its_real_parent() -> None:
    """An empty step takes its parent's lineage slot; the prefix that ends on it (particle Gibbs'
    reference) must name that node's real parent and its (empty) added text, so the genealogy
    gets no second, shorter path to it."""
    pol = StepPolicy()
    a = pol.apply(Trajectory(), Generation(text="3 + 4 = 7", num_tokens=5, stop_reason="\n\n"))
    e = pol.apply(a, Generation(text=" ", num_tokens=1, stop_reason="\n\n"))
    assert e.finish == "empty" and e.lineage[-1] == e.uid and e.parent == a.uid
    p = e.prefix(1)
    assert p.uid == e.uid and p.parent == a.uid and p.added == "" and p.finished
    assert a.prefix(1).parent == a.lineage[0] and a.prefix(1).added == a.steps[0]


def test_budget_is_the_run_budget() -> None:
    eng = ScriptedEngine(["1 + 1 = 2\n\n"])
    r = ParticleFiltering(4, ArithmeticStepCheck(), policy=StepPolicy(max_steps=5)).run_sync(
        "q", eng, Budget(generations=6), seed=0)
    assert r.stop_reason == "budget" and r.usage.generations <= 6


@pytest.mark.parametrize("native_n", [True, False])
async def test_extend_all_shares_one_request_between_identical_prefixes(native_n: bool) -> None:
    from ttc.budget import Meter
    from ttc.context import RunContext
    from ttc.strategies.steps import extend_all
    from ttc.types import Prompt

    eng = ScriptedEngine(lambda p, i, rng: f"step {i}\n\n", native_n=native_n)
    ctx = RunContext(eng, Meter(), seed=0)
    same = [Trajectory(steps=["a = 1\n\n"]) for _ in range(3)]
    other = Trajectory(steps=["b = 2\n\n"])
    out, err = await extend_all(ctx, Prompt.of("q"), StepPolicy(), SamplingParams(temperature=0.8), [*same, other])
    assert err is None
    assert [len(c) for c in out] == [1, 1, 1, 1]
    assert eng.samples_served == 4
    # the three copies: one request with n=3 (distinct children); the other its own request
    assert eng.calls == (2 if native_n else 4)
    kids = [c[0] for c in out]
    assert len({k.uid for k in kids}) == 4 and [k.parent for k in kids] == [t.uid for t in [*same, other]]
    assert len({k.text for k in kids[:3]}) == 3  # independent samples, not one sample copied
    assert all(k.text.startswith("a = 1\n\n") for k in kids[:3]) and kids[3].text.startswith("b = 2\n\n")


async def test_extend_all_releases_what_the_step_will_not_continue_before_calling() -> None:
    """The scope hears the step's prompts (with how many continuations each) before any
    call is made, then the sweep after them."""
    from ttc.budget import Meter
    from ttc.context import RunContext
    from ttc.engine import ContinuationScope
    from ttc.strategies.steps import extend_all
    from ttc.types import Prompt

    eng = ScriptedEngine(lambda p, i, rng: f"step {i}\n\n")
    events: list[object] = []

    class Recording(ContinuationScope):
        async def generate(self, prompt, params, billing):  # type: ignore[no-untyped-def]
            events.append(("call", prompt.assistant_prefix, params.n))
            return await super().generate(prompt, params, billing)

        async def release_unneeded(self, calls):  # type: ignore[no-untyped-def]
            events.append(("release", sorted((p.assistant_prefix, sp.n) for p, sp in calls)))

        async def sweep(self) -> None:
            events.append("sweep")

    eng.continuation_scope = lambda: Recording(eng)  # type: ignore[method-assign]
    ctx = RunContext(eng, Meter(), seed=0)
    trajs = [Trajectory(steps=["a = 1\n\n"]), Trajectory(steps=["a = 1\n\n"]), Trajectory(steps=["b = 2\n\n"])]
    async with ctx.continuations():
        out, err = await extend_all(ctx, Prompt.of("q"), StepPolicy(), SamplingParams(temperature=0.8), trajs, n=2)
    assert err is None and [len(c) for c in out] == [2, 2, 2]
    assert events[0] == ("release", [("a = 1\n\n", 4), ("b = 2\n\n", 2)])
    assert sorted(events[1:3]) == [("call", "a = 1\n\n", 4), ("call", "b = 2\n\n", 2)]  # type: ignore[type-var]
    assert events[3:] == ["sweep"]
