"""Outcome verifiers: LLM judge (pointwise / pairwise, P(yes) from logprobs), self-certainty,
mean-logprob, the remote reward model (against a local HTTP server speaking vLLM's
/classify and /pooling response shapes) and the local transformers reward model (on a
tiny randomly initialised sequence-classification model)."""

from __future__ import annotations

import math

import pytest

from ttc.budget import Budget, BudgetExhausted, Meter
from ttc.context import RunContext
from ttc.engine import EngineError
from ttc.engines import ScriptedEngine
from ttc.types import Generation, Prompt, Sample, TokenLogprob, TopLogprob
from ttc.verifiers import LLMJudge, LocalRewardModel, MeanLogprob, RemoteRewardModel, SelfCertainty, p_yes
from ttc.verifiers.self_certainty import self_certainty

Q = Prompt.of("What is 3 + 4?")


def samples(*texts: str) -> list[Sample]:
    return [Sample(index=i, text=t, num_tokens=len(t.split()), answer=None) for i, t in enumerate(texts)]


# -- LLM judge --------------------------------------------------------------------------------
def test_p_yes_sums_yes_like_and_no_like_mass() -> None:
    top = [(" Yes", 0.5), ("yes", 0.1), ("TRUE", 0.05), (" No", 0.2), ("no.", 0.05), ("Maybe", 0.1)]
    g = Generation(
        text=" Yes", num_tokens=1,
        logprobs=[TokenLogprob(token=" Yes", logprob=math.log(0.5),
                               top=[TopLogprob(token=t, logprob=math.log(p)) for t, p in top])],
    )
    assert p_yes(g) == pytest.approx(0.65 / 0.9)
    g2 = g.model_copy(update={"logprobs": [TokenLogprob(token="Hm", logprob=-0.1,
                                                        top=[TopLogprob(token="Hm", logprob=-0.1)])]})
    assert p_yes(g2) == 0.5
    with pytest.raises(ValueError, match="logprobs"):
        p_yes(Generation(text="Yes", num_tokens=1))


async def test_pointwise_judge_charges_verify_calls() -> None:
    def script(p, i, rng):  # type: ignore[no-untyped-def]
        return "Yes" if "answer is 7" in p.question else "No"

    eng = ScriptedEngine(script, confidence=lambda t, j: 0.8)
    ctx = RunContext(eng, Meter(Budget(calls=10)), seed=0)
    scores = await LLMJudge().score(ctx, Q, samples("The answer is 7.", "The answer is 9."))
    assert scores == [1.0, 0.0]
    assert ctx.meter.by_kind["verify"].calls == 2
    p = eng.prompts[0]
    assert "Is the proposed answer correct?" in p.question and "What is 3 + 4?" in p.question
    # Budget: 3 samples with 2 calls left -> refused before sending.
    with pytest.raises(BudgetExhausted):
        await LLMJudge().score(ctx, Q, samples("a", "b", "c") * 3)


async def test_pairwise_judge_round_robin() -> None:
    def script(p, i, rng):  # type: ignore[no-untyped-def]
        q = p.question
        a = q.split("Answer A:")[1].split("Answer B:")[0]
        return "A" if "is 7" in a else "B"

    eng = ScriptedEngine(script)
    ctx = RunContext(eng, seed=0)
    s = samples("The answer is 9.", "The answer is 7.", "The answer is 8.")
    scores = await LLMJudge("pairwise").score(ctx, Q, s)
    assert scores[1] == 1.0 and scores[1] > scores[0] and scores[1] > scores[2]
    assert ctx.meter.by_kind["verify"].calls == 6  # both orders of 3 pairs
    assert await LLMJudge("pairwise").prefer(ctx, Q, "The answer is 7.", "The answer is 9.") == 1.0


async def test_judge_with_separate_engine_charges_same_meter() -> None:
    gen_eng = ScriptedEngine(["The answer is 7."])
    judge_eng = ScriptedEngine(["Yes"])
    ctx = RunContext(gen_eng, seed=0)
    await LLMJudge(engine=judge_eng).score(ctx, Q, samples("x"))
    assert judge_eng.calls == 1 and gen_eng.calls == 0 and ctx.meter.by_kind["verify"].calls == 1


# -- self-certainty / mean logprob --------------------------------------------------------------
def _tok(ps: list[float]) -> TokenLogprob:
    return TokenLogprob(token="x", logprob=math.log(ps[0]),
                        top=[TopLogprob(token=f"t{j}", logprob=math.log(p)) for j, p in enumerate(ps)])


async def test_self_certainty_and_mean_logprob_values() -> None:
    t1, t2 = _tok([0.7, 0.2, 0.1]), _tok([0.4, 0.3, 0.3])
    kl1 = -(math.log(0.7) + math.log(0.2) + math.log(0.1)) / 3 - math.log(3)
    kl2 = -(math.log(0.4) + 2 * math.log(0.3)) / 3 - math.log(3)
    assert self_certainty([t1, t2]) == pytest.approx((kl1 + kl2) / 2)
    assert kl1 > kl2 > 0
    s = [Sample(index=0, text="a", num_tokens=2, logprobs=[t1, t2]),
         Sample(index=1, text="b", num_tokens=2, logprobs=[t2, t2])]
    ctx = RunContext(ScriptedEngine(["x"]), seed=0)
    sc = await SelfCertainty().score(ctx, Q, s)
    assert sc[0] > sc[1] and sc[1] == pytest.approx(kl2)
    ml = await MeanLogprob().score(ctx, Q, s)
    assert ml[0] == pytest.approx(math.exp((math.log(0.7) + math.log(0.4)) / 2))
    assert (await MeanLogprob(raw=True).score(ctx, Q, s))[1] == pytest.approx(math.log(0.4))
    assert ctx.meter.usage().calls == 0
    with pytest.raises(ValueError, match="logprobs"):
        await SelfCertainty().score(ctx, Q, samples("no logprobs"))


# -- remote reward model against a local HTTP server ------------------------------------------------
@pytest.fixture
async def rm_server():  # type: ignore[no-untyped-def]
    from aiohttp import web

    seen: list[dict] = []

    async def classify(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        data = []
        for i, text in enumerate(body["input"]):
            p = 0.9 if "is 7" in text else 0.2
            data.append({"index": i, "label": "LABEL_1" if p > 0.5 else "LABEL_0", "probs": [1 - p, p],
                         "num_classes": 2})
        n = sum(len(t.split()) for t in body["input"])
        return web.json_response({"id": "classify-1", "object": "list", "created": 0, "model": body["model"],
                                  "data": data, "usage": {"prompt_tokens": n, "total_tokens": n,
                                                          "completion_tokens": 0}})

    async def pooling(request: web.Request) -> web.Response:
        body = await request.json()
        data = [{"index": i, "object": "pooling", "data": [[0.0], [2.0 if "is 7" in t else -2.0]]}
                for i, t in enumerate(body["input"])]
        return web.json_response({"id": "pool-1", "object": "list", "created": 0, "model": body["model"],
                                  "data": data, "usage": {"prompt_tokens": 3, "total_tokens": 3}})

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    app = web.Application()
    app.router.add_post("/v1/classify", classify)
    app.router.add_post("/v1/pooling", pooling)
    app.router.add_post("/bad/v1/classify", broken)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_remote_reward_model_classify(rm_server) -> None:  # type: ignore[no-untyped-def]
    url, seen = rm_server
    ctx = RunContext(ScriptedEngine(["x"]), Meter(Budget(calls=5)), seed=0)
    rm = RemoteRewardModel(url + "/v1", "rm", batch_size=2)
    scores = await rm.score(ctx, Q, samples("The answer is 7.", "The answer is 9.", "It is 7"))
    assert scores == pytest.approx([0.9, 0.2, 0.9])
    assert len(seen) == 2 and seen[0]["model"] == "rm" and seen[0]["input"][0].startswith("Question: What is 3 + 4?")
    v = ctx.meter.by_kind["verify"]
    assert v.calls == 2 and v.prompt_tokens > 0
    with pytest.raises(BudgetExhausted):  # 3 calls left, 4 needed
        await rm.score(ctx, Q, samples(*["a"] * 8))


async def test_remote_reward_model_pooling_and_errors(rm_server) -> None:  # type: ignore[no-untyped-def]
    url, _ = rm_server
    ctx = RunContext(ScriptedEngine(["x"]), seed=0)
    rm = RemoteRewardModel(url, "rm", endpoint="pooling")
    scores = await rm.score(ctx, Q, samples("The answer is 7.", "The answer is 9."))
    assert scores == pytest.approx([1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))])
    raw = await RemoteRewardModel(url, "rm", endpoint="pooling", raw=True).score(ctx, Q, samples("is 7"))
    assert raw == [2.0]
    with pytest.raises(EngineError, match="500"):
        await RemoteRewardModel(url + "/bad", "rm").score(ctx, Q, samples("a"))
    with pytest.raises(ValueError, match="endpoint"):
        RemoteRewardModel(url, "rm", endpoint="score")  # type: ignore[arg-type]


# -- local transformers reward model on a tiny random model -----------------------------------------
@pytest.fixture(scope="module")
def tiny_rm():  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from ttc.models import bundled_model_path

    tok = AutoTokenizer.from_pretrained(str(bundled_model_path()))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, num_labels=2,
                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    return LlamaForSequenceClassification(cfg).eval(), tok


async def test_local_reward_model_matches_direct_forward(tiny_rm) -> None:  # type: ignore[no-untyped-def]
    import torch

    model, tok = tiny_rm
    rm = LocalRewardModel(model, tok, batch_size=2)
    s = samples("The answer is 7.", "The answer is nine, I think.", "7")
    ctx = RunContext(ScriptedEngine(["x"]), Meter(Budget(calls=1)), seed=0)
    scores = await rm.score(ctx, Q, s)
    for sample, score in zip(s, scores):
        enc = tok(f"Question: {Q.question}\nAnswer: {sample.text}", return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[0]
        assert score == pytest.approx(float(torch.softmax(logits, -1)[-1]), abs=1e-4)
    assert all(0 <= x <= 1 for x in scores) and len(set(scores)) == 3
    v = ctx.meter.by_kind["verify"]
    assert v.calls == 1 and v.prompt_tokens > 10
    with pytest.raises(BudgetExhausted):
        await rm.score(ctx, Q, s)
    raw = await LocalRewardModel(model, tok, raw=True, positive_index=0).score(RunContext(ScriptedEngine(["x"])), Q, s[:1])
    assert isinstance(raw[0], float)
