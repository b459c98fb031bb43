"""Process verifiers: aggregates, rule step check, LLM judge (scripted engine), the remote
PRM client (against a local HTTP server speaking vLLM's pooling/classify format), and the
transformers PRM on a tiny randomly initialised model built here."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ttc import Budget, BudgetExhausted, Meter, Prompt, Sample
from ttc.context import RunContext
from ttc.engines import ScriptedEngine
from ttc.strategies import BestOfN, ParticleFiltering, StepPolicy
from ttc.verifiers import (
    ArithmeticStepCheck,
    LLMJudgeStepVerifier,
    ProcessAsOutcome,
    RemotePRM,
)
from ttc.verifiers.process import aggregate_scores

Q = Prompt.of("Ann has 3 apples and gets 4 more. How many?")


def _ctx(engine=None, budget=None) -> RunContext:  # type: ignore[no-untyped-def]
    return RunContext(engine or ScriptedEngine(["Yes"]), Meter(budget), seed=0)


def test_aggregates() -> None:
    s = [0.9, 0.5, 0.8]
    assert aggregate_scores(s, "last") == 0.8
    assert aggregate_scores(s, "min") == 0.5
    assert aggregate_scores(s, "product") == pytest.approx(0.36)
    with pytest.raises(ValueError, match="aggregate"):
        aggregate_scores(s, "mean")
    with pytest.raises(ValueError, match="aggregate"):
        ArithmeticStepCheck(aggregate="mean")  # type: ignore[arg-type]


async def test_arithmetic_step_check_and_aggregate_modes() -> None:
    steps = ["3 + 4 = 7\n\n", "7 * 2 = 15\n\n", "So she has some."]
    for agg, expected in (("last", 0.6), ("min", 0.05), ("product", 0.9 * 0.05 * 0.6)):
        v = ArithmeticStepCheck(aggregate=agg)  # type: ignore[arg-type]
        [r] = await v.score(_ctx(), Q, [steps], "\n\n")
        assert r.steps == pytest.approx([0.9, 0.05, 0.6]) and r.aggregate == pytest.approx(expected)
    # "model": the whole prefix as one step (1 of 2 equations right)
    [r] = await ArithmeticStepCheck(aggregate="model").score(_ctx(), Q, [steps], "\n\n")
    assert len(r.steps) == 1 and r.aggregate == pytest.approx(0.05 + 0.85 * 0.5)


async def test_separator_follows_policy() -> None:
    seen = []

    class Spy(ArithmeticStepCheck):
        async def step_scores(self, ctx, prompt, batch, separator):  # type: ignore[no-untyped-def]
            seen.append((list(map(list, batch)), separator))
            return await super().step_scores(ctx, prompt, batch, separator)

    eng = ScriptedEngine(["1 + 1 = 2<STEP>"])
    pol = StepPolicy(delimiter="<STEP>", max_steps=2)
    await ParticleFiltering(2, Spy(aggregate="model"), policy=pol).run("q", eng, seed=0)
    assert seen and all(sep == "<STEP>" for _, sep in seen)
    # model mode joins the steps with the policy's delimiter; delimiters stripped from the ends
    assert seen[-1][0][0] == ["1 + 1 = 2<STEP>1 + 1 = 2"]


async def test_llm_judge_reads_p_yes_and_is_charged() -> None:
    def conf(tok: str, j: int) -> float:
        return 0.8

    eng = ScriptedEngine(lambda p, i, rng: "Yes" if "= 7" in p.question.split("Latest step:")[1] else "No", confidence=conf)
    judge = LLMJudgeStepVerifier(aggregate="min", top_logprobs=3)
    ctx = _ctx(eng)
    res = await judge.score(ctx, Q, [["3 + 4 = 7"], ["3 + 4 = 8"], ["3 + 4 = 7", "3 + 4 = 8"]], "\n\n")
    assert res[0].steps == [1.0] and res[1].steps == [0.0]
    assert res[2].steps == [1.0, 0.0] and res[2].aggregate == 0.0
    assert eng.calls == 3  # (3+4=7), (3+4=8), (3+4=7 | 3+4=8): the shared first step judged once
    assert ctx.meter.by_kind["verify"].calls == 3
    # the prompt shows the previous steps joined with the separator, then the latest step
    last = eng.prompts[-1].question
    assert "Latest step:\n3 + 4 = 8" in last and "Solution so far:\n3 + 4 = 7" in last
    # cached prefixes cost nothing more
    await judge.score(ctx, Q, [["3 + 4 = 7", "3 + 4 = 8"]], "\n\n")
    assert eng.calls == 3


def test_judge_probability_mixing() -> None:
    from ttc.types import TopLogprob

    j = LLMJudgeStepVerifier()
    top = [TopLogprob(token=" Yes", logprob=math.log(0.6)), TopLogprob(token="No", logprob=math.log(0.2)),
           TopLogprob(token="Maybe", logprob=math.log(0.2))]
    assert j.read_probability(top) == pytest.approx(0.75)
    assert j.read_probability([TopLogprob(token="Hmm", logprob=0.0)]) == 0.5


async def test_llm_judge_budget() -> None:
    eng = ScriptedEngine(["Yes"])
    ctx = _ctx(eng, Budget(calls=1))
    with pytest.raises(BudgetExhausted):
        await LLMJudgeStepVerifier().score(ctx, Q, [["a", "b"]], "\n\n")


async def test_process_as_outcome_for_weighted_bon() -> None:
    v = ProcessAsOutcome(ArithmeticStepCheck(aggregate="min"), "\n\n")
    samples = [Sample(index=0, text="3 + 4 = 7\n\nThe answer is 7.", num_tokens=5),
               Sample(index=1, text="3 + 4 = 8\n\nThe answer is 8.", num_tokens=5)]
    assert await v.score(_ctx(), Q, samples) == pytest.approx([0.6, 0.05])
    eng = ScriptedEngine(["3 + 4 = 8\n\nThe answer is 8.", "3 + 4 = 7\n\nThe answer is 7."])
    r = await BestOfN(4, v, weighted=True).run(Q, eng, seed=0)
    assert r.answer == "7"


# -- remote PRM -----------------------------------------------------------------------------------
class _PRMHandler(BaseHTTPRequestHandler):
    requests: list[tuple[str, dict]] = []  # noqa: RUF012

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, body))
        text = body["messages"][-1]["content"] if "messages" in body else body["input"]
        steps = text.split("<extra_0>")[:-1]
        # a step containing "wrong" is bad; vLLM's STEP pooler returns [p_neg, p_pos] per step token
        rows = [[0.9, 0.1] if "wrong" in s else [0.2, 0.8] for s in steps]
        if self.path.endswith("/pooling"):
            out = {"object": "list", "data": [{"index": 0, "object": "pooling", "data": rows}],
                   "usage": {"prompt_tokens": 10 * len(steps), "total_tokens": 10 * len(steps)}}
        else:
            out = {"object": "list", "data": [{"index": 0, "label": "LABEL_1", "probs": rows[-1],
                                               "num_classes": 2}], "usage": {"prompt_tokens": 7}}
        raw = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *a) -> None:  # type: ignore[no-untyped-def]
        pass


@pytest.fixture(scope="module")
def prm_server():  # type: ignore[no-untyped-def]
    srv = HTTPServer(("127.0.0.1", 0), _PRMHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


async def test_remote_prm_pooling(prm_server) -> None:  # type: ignore[no-untyped-def]
    _PRMHandler.requests.clear()
    prm = RemotePRM(prm_server, "qwen-prm", aggregate="min", endpoint="pooling")
    ctx = _ctx()
    res = await prm.score(ctx, Q, [["3 + 4 = 7\n\n", "wrong step"], ["fine"]], "\n\n")
    assert res[0].steps == pytest.approx([0.8, 0.1]) and res[0].aggregate == pytest.approx(0.1)
    assert res[1].steps == pytest.approx([0.8])
    assert all(p == "/v1/pooling" and b["model"] == "qwen-prm" for p, b in _PRMHandler.requests)
    contents = sorted(b["messages"][-1]["content"] for _, b in _PRMHandler.requests)
    assert contents == ["3 + 4 = 7<extra_0>wrong step<extra_0>", "fine<extra_0>"]  # delimiter stripped
    body = _PRMHandler.requests[0][1]
    assert body["messages"][1]["content"] == Q.question
    assert ctx.meter.by_kind["verify"].calls == 2 and ctx.meter.by_kind["verify"].prompt_tokens == 30


async def test_remote_prm_classify(prm_server) -> None:  # type: ignore[no-untyped-def]
    _PRMHandler.requests.clear()
    prm = RemotePRM(prm_server, "qwen-prm", endpoint="classify", aggregate="product")
    [r] = await prm.score(_ctx(), Q, [["ok", "wrong", "ok"]], "\n\n")
    assert r.steps == pytest.approx([0.8, 0.1, 0.8]) and r.aggregate == pytest.approx(0.064)
    assert len(_PRMHandler.requests) == 3 and all(p == "/v1/classify" for p, _ in _PRMHandler.requests)


async def test_remote_prm_charged_and_refused_without_budget(prm_server) -> None:  # type: ignore[no-untyped-def]
    prm = RemotePRM(prm_server, "qwen-prm")
    with pytest.raises(BudgetExhausted):
        await prm.score(_ctx(budget=Budget(calls=1)), Q, [["a"], ["b"]], "\n\n")


# -- transformers PRM on a tiny model ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForTokenClassification

    from ttc.models import bundled_model_path

    tok = AutoTokenizer.from_pretrained(str(bundled_model_path()))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512, num_labels=2,
                      pad_token_id=tok.pad_token_id)
    return tok, LlamaForTokenClassification(cfg), LlamaForCausalLM(cfg)


async def test_transformers_prm_token_classification(tiny) -> None:  # type: ignore[no-untyped-def]
    import torch

    from ttc.verifiers.prm import TransformersPRM

    tok, clf, _ = tiny
    prm = TransformersPRM(clf, tok, step_token="<repo_name>", aggregate="min")
    ctx = _ctx()
    steps = ["3 + 4 = 7\n\n", "7 * 2 = 14\n\n", "The answer is 14."]
    res = await prm.score(ctx, Q, [steps, steps[:1], steps[:2]], "\n\n")
    assert len(res[0].steps) == 3 and all(0 < s < 1 for s in res[0].steps)
    assert res[0].aggregate == pytest.approx(min(res[0].steps))
    # causal model, right padding: a step's score depends only on its prefix
    assert res[1].steps[0] == pytest.approx(res[0].steps[0], abs=1e-5)
    assert res[2].steps == pytest.approx(res[0].steps[:2], abs=1e-5)
    # the same as reading the model by hand at the step-token positions
    text = prm.format(Q.question, ["3 + 4 = 7", "7 * 2 = 14", "The answer is 14."])
    ids = tok.encode(text, add_special_tokens=False)
    with torch.no_grad():
        logits = clf(input_ids=torch.tensor([ids])).logits[0]
    pos = [j for j, t in enumerate(ids) if t == prm.step_token_id]
    manual = torch.softmax(logits[pos], -1)[:, 1].tolist()
    assert res[0].steps == pytest.approx(manual, abs=1e-5)
    assert "<|im_start|>assistant" in text  # the tokenizer's chat template
    assert ctx.meter.by_kind["verify"].calls == 1 and ctx.meter.by_kind["verify"].prompt_tokens > len(ids)


async def test_transformers_prm_lm_head(tiny) -> None:  # type: ignore[no-untyped-def]
    import torch

    from ttc.verifiers.prm import TransformersPRM

    tok, _, lm = tiny
    prm = TransformersPRM(lm, tok, head="lm", step_token="<repo_name>", good="+", bad="-",
                          use_chat_template=False, aggregate="product")
    [r] = await prm.score(_ctx(), Q, [["a step", "another"]], "\n\n")
    ids = tok.encode(f"{Q.question}\na step<repo_name>another<repo_name>", add_special_tokens=False)
    with torch.no_grad():
        lg = lm(input_ids=torch.tensor([ids])).logits[0]
    pos = [j for j, t in enumerate(ids) if t == prm.step_token_id]
    manual = torch.softmax(lg[pos][:, [prm.good_id, prm.bad_id]], -1)[:, 0].tolist()
    assert r.steps == pytest.approx(manual, abs=1e-5) and r.aggregate == pytest.approx(manual[0] * manual[1])


def test_transformers_prm_validation(tiny) -> None:  # type: ignore[no-untyped-def]
    from ttc.verifiers.prm import TransformersPRM

    tok, clf, _ = tiny
    with pytest.raises(ValueError, match="step_token"):
        TransformersPRM(clf, tok, step_token="ки")
    with pytest.raises(ValueError, match="head"):
        TransformersPRM(clf, tok, head="bogus")  # type: ignore[arg-type]


async def test_pf_with_tiny_prm(tiny) -> None:  # type: ignore[no-untyped-def]
    from ttc.verifiers.prm import TransformersPRM

    tok, clf, _ = tiny
    prm = TransformersPRM(clf, tok, step_token="<repo_name>")
    eng = ScriptedEngine(lambda p, i, rng: f"step {i}\n\n" if p.assistant_prefix.count("\n\n") < 2
                         else "The answer is 3.")
    r = await ParticleFiltering(3, prm, policy=StepPolicy(max_steps=4)).run(Q, eng, seed=0)
    assert r.answer == "3" and r.usage_by_kind["verify"].calls == 3


async def test_step_check_reads_equations_inside_prose() -> None:
    [r] = await ArithmeticStepCheck().score(_ctx(), Q, [["so they have 3 x 4 = 12 apples.", "then 12 + 1 = 14"]], "\n\n")
    assert r.steps == pytest.approx([0.9, 0.05])


@pytest.mark.parametrize(("text", "expected"), [
    ("2 + 3 = 5", (1, 1, 5.0)),
    ("(2 + 3) * 4 = 20, then 20 / 4 = 6", (2, 1, 20.0)),
    ("3 x 4 = 12 and 12,000 / 4 = 3,000.", (2, 2, 3000.0)),
    ("so 7 - -3 = 10", (1, 1, 10.0)),
    ("1.5 + 2.25 = 3.75.", (1, 1, 3.75)),
    ("- 5 + 3 = 8", (1, 1, 8.0)),  # a list item: the dash is a bullet, not a sign
    ("-5 + 3 = -2", (1, 1, -2.0)),
    ("x = 4 and 12 = 12", (0, 0, None)),  # no operator: not an equation
])
def test_check_equations_reads_what_the_model_wrote(text: str, expected: tuple) -> None:  # type: ignore[type-arg]
    from ttc.verifiers import check_equations

    assert check_equations(text) == expected


def test_check_equations_is_linear_on_long_chains_without_a_result() -> None:
    """A repeating small model writes "1 + 1 + 1 + ..." with no "=": the earlier pattern
    backtracked exponentially there (14 terms: 80 s, with the event loop blocked). A hang
    guard with a wide margin (these take milliseconds), not a speed target."""
    import time

    from ttc.verifiers import check_equations

    t0 = time.perf_counter()
    assert check_equations("1 + " * 2000 + "1.") == (0, 0, None)
    assert check_equations("1  +  " * 500 + "1 = 501") == (1, 1, 501.0)
    assert check_equations("(2 * (" * 300 + "3") == (0, 0, None)
    assert time.perf_counter() - t0 < 10.0


def test_equations_report_operands_value_and_result_in_order() -> None:
    from ttc.verifiers import Equation, equations

    assert equations("so 5 + 3 = 8, then 8 * 2 = 17 and 1,200 - 200 = 1,000.") == [
        Equation((5.0, 3.0), 8.0, 8.0, True),
        Equation((8.0, 2.0), 16.0, 17.0, False),
        Equation((1200.0, 200.0), 1000.0, 1000.0, True),
    ]
    assert equations("no equation here, just 12 apples") == []


def test_numbers_in_reads_numerals_and_number_words() -> None:
    from ttc.verifiers import numbers_in

    assert numbers_in("Lea has 10 cards. Then Lea doubles the cards. A friend gives her three more.") == {10.0, 2.0, 3.0}
    assert numbers_in("Ivo triples 1,500 shells") == {1500.0, 3.0}
    assert numbers_in("none") == set() and numbers_in("someone") == set()  # whole words only


async def test_grounded_step_check_counts_made_up_operands_as_wrong() -> None:
    """Operands must be stated in the question, results of earlier right equations (of any
    earlier step), or constants; a right equation of made-up numbers scores as a wrong one."""
    q = Prompt.of("Gus has 15 marbles. Gus gets 11 more. Then Gus doubles the marbles. How many?")
    steps = [
        "Gus has 15 + 11 = 26 marbles.",  # both from the question
        "He doubles them: 26 * 2 = 52.",  # 26 from step 1, 2 from "doubles"
        "So 52 + 1 = 53? No: 11 + 11 = 22.",  # 1 is a constant; 22 made up from 11 + 11 is grounded, right
        "Then 22 + 7 = 29.",  # 7 is nowhere: ungrounded
    ]
    plain = ArithmeticStepCheck(aggregate="last")
    grounded = ArithmeticStepCheck(aggregate="last", grounded=True)
    [p] = await plain.score(_ctx(), q, [steps], "\n\n")
    [g] = await grounded.score(_ctx(), q, [steps], "\n\n")
    assert p.steps == pytest.approx([0.9, 0.9, 0.9, 0.9])
    assert g.steps == pytest.approx([0.9, 0.9, 0.9, 0.05])
    # a step's own earlier results count; a made-up operand is charged once, where it appears
    # (the result of a right equation joins the known numbers even if its operands were made up:
    # "9 - 3 = 6" is charged, "6 + 15 = 21" after it is not)
    [g2] = await grounded.score(_ctx(), q, [["15 + 11 = 26 and 26 + 4 = 30", "30 - 4 = 26", "9 - 3 = 6, 6 + 15 = 21"]], "\n\n")
    assert g2.steps == pytest.approx([0.05 + 0.85 * 0.5, 0.05, 0.05 + 0.85 * 0.5])
    assert ArithmeticStepCheck(grounded=True, constants=()).score_step("1 + 1 = 2", set()) == pytest.approx(0.05)


def test_arithmetic_check_scales_by_mismatch_unless_the_answer_is_the_last_right_result() -> None:
    from ttc.verifiers import ArithmeticCheck
    from ttc.verifiers.rules import answer_is_value

    v = ArithmeticCheck(no_equation=0.5, mismatch=0.25)
    text = "3 + 4 = 7, then 7 * 2 = 15, then 7 * 2 = 14"
    assert v.score_text(text, "14") == pytest.approx(2 / 3)  # the last right result
    assert v.score_text(text, "1,4") == pytest.approx(2 / 3 * 0.25)  # not a number equal to it
    assert v.score_text(text, "7") == pytest.approx(2 / 3 * 0.25)  # right, but not the last right result
    assert v.score_text(text, None) == pytest.approx(2 / 3 * 0.25)
    assert v.score_text("no equations", "14") == 0.5
    assert answer_is_value("$14.0$", 14.0) and not answer_is_value("14", None) and not answer_is_value("x", 14.0)


async def test_outcome_checks_scale_complete_trajectories_only() -> None:
    """outcome=True: a complete trajectory's aggregate is scaled by the share of the
    question's numerals used (floor ``unused``) and by ``mismatch`` when its answer is not the
    last right result; step scores and partial trajectories are left alone."""
    q = Prompt.of("Ann has 12 books. She buys 5 more and gives away 3. How many books now?")
    v = ArithmeticStepCheck(aggregate="min", grounded=True, outcome=True, unused=0.3, mismatch=0.5)
    full = ["12 + 5 = 17", "17 - 3 = 14", "The answer is 14."]
    skips = ["12 + 5 = 17", "The answer is 17."]  # 3 never used: share 2/3
    wrong_answer = ["12 + 5 = 17", "17 - 3 = 14", "The answer is 15."]
    res = await v.score(_ctx(), q, [full, skips, wrong_answer, skips], "\n\n", finished=[True, True, True, False])
    assert [r.steps for r in res[:3]] == [[0.9, 0.9, 0.6], [0.9, 0.6], [0.9, 0.9, 0.6]]
    assert res[0].aggregate == pytest.approx(0.6)  # every numeral used, consistent: x 1
    assert res[1].aggregate == pytest.approx(0.6 * (0.3 + 0.7 * 2 / 3))
    assert res[2].aggregate == pytest.approx(0.6 * 0.5)
    assert res[3].aggregate == pytest.approx(0.6)  # partial: not scaled
    # finished=None means complete (scoring full answers); outcome=False never scales
    [r] = await v.score(_ctx(), q, [skips], "\n\n")
    assert r.aggregate == pytest.approx(res[1].aggregate)
    [r] = await ArithmeticStepCheck(grounded=True).score(_ctx(), q, [skips], "\n\n", finished=[True])
    assert r.aggregate == pytest.approx(0.6)
    # weighted best-of-N's scorer treats every sample as complete
    [w] = await ProcessAsOutcome(v).score(_ctx(), q, [Sample(index=0, text="\n\n".join(skips), num_tokens=0)])
    assert w == pytest.approx(res[1].aggregate)
    with pytest.raises(ValueError, match="mismatch"):
        ArithmeticStepCheck(mismatch=1.5)
    with pytest.raises(ValueError, match="finished: 1 flags for 2 trajectories"):
        await v.score(_ctx(), q, [full, skips], "\n\n", finished=[True])


async def test_searches_pass_finished_flags_to_the_verifier() -> None:
    """score_trajectories tells the verifier which prefixes are complete: the same steps,
    once partial and once finished, are scored separately."""
    seen: list[list[bool]] = []

    class Spy(ArithmeticStepCheck):
        async def score(self, ctx, prompt, batch, separator="\n\n", finished=None):  # type: ignore[no-untyped-def]
            seen.append(list(finished))
            return await super().score(ctx, prompt, batch, separator, finished)

    eng = ScriptedEngine(lambda p, i, rng: "The answer is 2." if p.assistant_prefix else "1 + 1 = 2<STEP>")
    pol = StepPolicy(delimiter="<STEP>", max_steps=3)
    res = await ParticleFiltering(2, Spy(outcome=True), policy=pol).run("What is 1 + 1?", eng, seed=0)
    assert seen == [[False], [True]]  # the same first step of both particles, scored once, partial; then finished
    assert res.answer == "2"
