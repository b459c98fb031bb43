"""Integration tests of the router with the real bundled models: the all-MiniLM-L6-v2
encoder, a classifier trained on router_mix, and routing to SmolLM2 on vLLM."""

from __future__ import annotations

import numpy as np
import pytest

from ttc.bench.datasets import router_mix
from ttc.routers import (
    CategoryRoute,
    EncodedClassifier,
    EntropyBandPolicy,
    LogisticRegression,
    NearestPrototype,
    Route,
    SemanticRouter,
    SentenceTransformerEncoder,
    calibrate,
    prompt_options,
)
from ttc.strategies.simple import Greedy
from ttc.types import SamplingParams

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def encoder() -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder()


@pytest.fixture(scope="module")
def trained(encoder):  # type: ignore[no-untyped-def]
    train = router_mix(60, seed=1)
    clf = LogisticRegression().fit(encoder.encode([e.question for e in train]), [e.category for e in train])
    return EncodedClassifier(encoder, clf)


def test_bundled_encoder_shapes_and_similarity(encoder):
    e = encoder.encode([
        "What is the capital of France?",
        "Which city is the capital of France?",
        "Ann has 5 apples and buys 3 more. How many apples does she have?",
    ])
    assert e.shape == (3, 384) and encoder.dim == 384
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-4)
    sims = e @ e.T
    assert sims[0, 1] > 0.8 and sims[0, 1] > sims[0, 2] + 0.3


def test_classifier_on_router_mix_separates_held_out(encoder, trained):
    test = router_mix(40, seed=2)
    X = encoder.encode([e.question for e in test])
    y = [e.category for e in test]
    assert trained.classifier.accuracy(X, y) >= 0.95
    assert NearestPrototype().fit(encoder.encode([e.question for e in router_mix(60, seed=1)]),
                                  [e.category for e in router_mix(60, seed=1)]).accuracy(X, y) >= 0.9
    p = trained.predict_proba(["Dev has 4 cards. Dev gets 3 more. Then Dev doubles the cards. How many cards?"])
    assert trained.classes[int(p[0].argmax())] == "reason"


async def test_routing_to_the_real_model_end_to_end(real_engine, trained):
    reason = Route(name="cot", reasoning=True, strategy=Greedy(SamplingParams(max_tokens=48)))
    direct = Route(name="direct", strategy=Greedy(SamplingParams(max_tokens=12)))
    policy = EntropyBandPolicy({"reason": CategoryRoute(reasoning=True, on=reason, off=direct),
                                "direct": CategoryRoute(reasoning=False, on=reason, off=direct)})
    router = SemanticRouter(trained, policy)
    r1 = await router.run("Ann has 6 coins. Ann gets 5 more. Then Ann doubles the coins. How many coins?",
                          real_engine, seed=0)
    assert r1.meta["routing"]["route"] == "cot" and r1.meta["routing"]["reasoning"]
    assert len(r1.samples) == 1 and 0 < r1.usage.completion_tokens <= 48
    assert r1.samples[0].text.strip() and r1.usage.prompt_tokens > 0
    r2 = await router.run("What is the capital of Japan?", real_engine, seed=0)
    assert r2.meta["routing"]["route"] == "direct" and not r2.meta["routing"]["reasoning"]
    assert 0 < r2.usage.completion_tokens <= 12
    assert any(e.kind == "route" for e in r2.trace)


async def test_calibration_on_the_real_model(vllm_engine):
    data = router_mix(8, seed=3)
    options = prompt_options(reason_tokens=48, direct_tokens=12)
    table = await calibrate(data, options, vllm_engine, token_price=0.001)
    cells = {(m.category, m.option): m for m in table.measurements}
    assert set(table.categories) == {"reason", "direct"}
    for c in ("reason", "direct"):
        assert 0 < cells[(c, "direct")].completion_tokens <= 12
        assert 0 < cells[(c, "reason")].completion_tokens <= 48
        e = table.categories[c]
        best = max((cells[(c, o)] for o in ("reason", "direct")), key=lambda m: m.utility(0.001))
        assert e.utility == pytest.approx(best.utility(0.001))
