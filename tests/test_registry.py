"""The registry: every registered name builds from a config with non-default values, and
``build(**obj.describe())`` gives an equal object (through JSON, as a file or a server would
carry it); aliases; spec strings (dotted keys, part names, the historical command-line keys
and defaults); config files; errors naming the key; describe() refusing what is not data."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttc import registry
from ttc.configs import ConfigError, ConfigTypeError
from ttc.strategy import Describable, DescribeError


# -- fixtures: files some entries read, a stand-in for transformers --------------------------------
@pytest.fixture()
def classifier_file(tmp_path: Path) -> str:
    from ttc.routers.classifiers import NearestPrototype

    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    return str(NearestPrototype().fit(x, ["a", "a", "b", "b"]).save(tmp_path / "cls.npz"))


@pytest.fixture()
def routing_table(tmp_path: Path) -> str:
    from ttc.routers.calibrate import CategoryEntry, RoutingTable

    entry = CategoryEntry(reasoning=True, option="think", on="think", off="quick", utility=0.5)
    table = RoutingTable(token_price=0.001, categories={"math": entry}, default=entry, measurements=[])
    return str(table.save(tmp_path / "table.json"))


class _Fake:
    """Enough of a transformers model/tokenizer for the constructors."""

    pad_token = "<pad>"
    eos_token = "<eos>"
    pad_token_id = 0
    chat_template = None

    def __init__(self, *a: Any, **k: Any) -> None:
        self.config = types.SimpleNamespace(pad_token_id=0)

    @classmethod
    def from_pretrained(cls, *a: Any, **k: Any) -> _Fake:
        return cls()

    def to(self, device: str) -> _Fake:
        return self

    def eval(self) -> _Fake:
        return self

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [1]


@pytest.fixture()
def fake_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("transformers")
    for name in ("AutoTokenizer", "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
                 "AutoModelForCausalLM", "AutoModel"):
        setattr(mod, name, _Fake)
    monkeypatch.setitem(sys.modules, "transformers", mod)


URL = "http://127.0.0.1:9/v1"  # never contacted: these constructors connect lazily


def cases(classifier_file: str, routing_table: str) -> dict[str, dict[str, Any]]:
    """A config with non-default values for every registered name."""
    keyword = {"name": "keyword", "patterns": {"math": [r"\d"]}, "default": "chat", "smoothing": 0.2}
    return {
        "allocator": {"initial_k": 2, "batch": 1, "max_samples": 8, "threshold": 0.9, "verifier": "arith",
                      "gain": {"method": "dirichlet", "draws": 500}, "flaws": {"population": [[0.5, 0.1, 1.0]]},
                      "params": {"temperature": 0.6, "max_tokens": 32}},
        "arithmetic_check": {"no_equation": 0.4, "mismatch": 0.2},
        "arithmetic_step_check": {"aggregate": "product", "grounded": True, "constants": [1.0, 2.0],
                                  "outcome": True},
        "beam_search": {"n": 4, "m": 2, "verifier": {"name": "arith_step", "aggregate": "min"},
                        "policy": {"delimiter": "\n", "max_steps": 3}, "final": "vote"},
        "best_of_n": {"n": 3, "verifier": "arith", "weighted": True, "params": {"temperature": 0.5}},
        "beta": {"threshold": 0.9, "min_samples": 2, "max_samples": 10},
        "certaindex": {"threshold": 0.7, "max_samples": 12},
        "classifier_file": {"path": classifier_file},
        "complexity_voting": {"n": 6, "top_k": 2, "max_samples": 6},
        "compute_optimal": {"policy": {"probe": 2, "verifier": "arithmetic_check", "budget_per_question": 40.0,
                                       "bins": {"verified": {"method": "probe", "max_samples": 2},
                                                "agree": {"method": "vote", "max_samples": 4},
                                                "split": {"method": "verified", "max_samples": 8},
                                                "unparsed": {"method": "probe", "max_samples": 2}}},
                            "batch": 1, "params": {"max_tokens": 32}},
        "deepconf": {"mode": "offline", "max_traces": 8, "eta": 50.0, "window": 8},
        "deepconf_consensus": {"tau": 0.9},
        "dirichlet": {"threshold": 0.9, "draws": 100, "seed": 3},
        "dvts": {"n": 4, "m": 2, "final": "vote", "verifier": "arith_step"},
        "dynasor_cot": {"preset": "eager", "max_tokens": 64, "probe": "answer_is"},
        "early_exit": {"preset": "mild", "k": 2, "mode": "stream", "hesitation": ["wait"]},
        "early_exit_self_consistency": {"rule": {"name": "fixed_n", "n": 3},
                                        "early_exit": {"name": "early_exit", "preset": "eager"}, "max_samples": 3},
        "encoded_classifier": {"encoder": {"name": "vllm_embedding", "base_url": URL, "model": "emb"},
                               "classifier": {"name": "classifier_file", "path": classifier_file}},
        "entropy_band_policy": {"routes": {"a": {"name": "x", "reasoning": True, "strategy": "greedy",
                                                 "budget": {"completion_tokens": 64}}},
                                "default": {"name": "d"}, "confidence_threshold": 0.5, "bands": [0.3, 0.5, 0.7]},
        "esc": {"w": 3, "L": 12},
        "fixed_n": {"n": 5},
        "greedy": {"params": {"max_tokens": 32}},
        "keyword_classifier": {k: v for k, v in keyword.items() if k != "name"},
        "llm_judge": {"mode": "pairwise", "top_k": 5, "both_orders": False},
        "llm_judge_step": {"aggregate": "min", "top_logprobs": 5, "yes": ["y"]},
        "local_reward_model": {"model": "fake/rm", "positive_index": 0, "batch_size": 2},
        "mean_logprob": {"raw": True},
        "particle_filtering": {"n": 4, "verifier": {"name": "arith_step", "grounded": True},
                               "resampling": "multinomial", "resample": "always", "tempering": [1.0, 2.0],
                               "final": "vote"},
        "particle_gibbs": {"n": 4, "sweeps": 3, "weighting": "softmax"},
        "perplexity_consistency": {"n": 6, "prune": False, "params": {"temperature": 0.7}},
        "plain_sampler": {},  # no options
        "rpc_voter": {"prune": False},
        "complexity_voter": {"top_k": 3},
        "process_as_outcome": {"verifier": {"name": "arith_step"}, "separator": "\n"},
        "remote_prm": {"base_url": URL, "model": "prm", "endpoint": "classify", "aggregate": "min"},
        "remote_reward_model": {"base_url": URL, "model": "rm", "endpoint": "pooling", "raw": True},
        "routing_table": {"path": routing_table, "options": {"think": {"name": "think", "reasoning": True},
                                                             "quick": {"name": "quick"}}},
        "self_certainty": {"k": 5},
        "self_consistency": {"rule": {"name": "beta", "threshold": 0.9}, "verifier": "arith", "weighting": "score",
                             "max_samples": 12, "batch_sizes": [2, 4], "params": {"temperature": 0.6},
                             "voter": {"name": "complexity_voter", "top_k": 2},
                             "sampler": {"name": "early_exit", "preset": "eager"}},
        "self_eval_gate": {"threshold": 0.3, "max_samples": 8, "growth": 3,
                           "evaluator": {"question": "Sure?", "top_k": 5}, "select": "best"},
        "self_eval_pruning": {"n": 4, "prefix_tokens": 16, "keep_fraction": 0.5, "max_tokens": 64},
        "semantic_router": {"classifier": keyword, "policy": {
            "name": "entropy_band", "routes": {"math": {"name": "r", "reasoning": True,
                                                        "strategy": {"name": "sc", "max_samples": 3}}},
            "default": {"name": "d"}}},
        "sentence_transformer_encoder": {"model_path": "some/encoder", "batch_size": 8},
        "tool_schema": {"valid": 0.9, "invalid": 0.1, "no_call": 0.5},
        "transformers_prm": {"model": "fake/prm", "aggregate": "min", "step_token": "<s>"},
        "verified": {"k": 2, "pass_threshold": 0.7},
        "vllm_embedding_encoder": {"base_url": URL, "model": "emb", "timeout": 5.0},
    }


NAMES = registry.list_names()


def test_every_registered_name_has_a_case() -> None:
    assert set(cases("f", "t")) == set(NAMES)
    assert {"greedy", "best_of_n", "self_consistency", "deepconf", "particle_filtering", "semantic_router",
            "allocator"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_describe_then_build_gives_an_equal_object(name: str, classifier_file: str, routing_table: str,
                                                   fake_transformers: None) -> None:
    cfg = cases(classifier_file, routing_table)[name]
    obj = registry.build(name, cfg)
    d = registry.describe(obj)  # obj.describe(); a fitted classifier read from a file describes as that read
    assert d["name"] == name
    carried = json.loads(json.dumps(d))  # as a file or a request would carry it
    again = registry.build(**carried)
    assert type(again) is type(obj) and registry.describe(again) == d
    if isinstance(obj, Describable):
        assert again == obj and hash(again) == hash(obj) and registry.build(carried) == obj
    try:
        bare = registry.build(name)
    except ConfigError:  # required options (a path, a URL, a model)
        return
    if cfg:
        assert bare != obj and bare.describe() != d  # the non-default values were kept


@pytest.mark.parametrize("name", NAMES)
def test_every_alias_builds_its_entry(name: str, classifier_file: str, routing_table: str,
                                      fake_transformers: None) -> None:
    entry = registry.lookup(name)
    cfg = cases(classifier_file, routing_table)[name]
    for alias in entry.aliases:
        assert registry.build(alias, cfg) == registry.build(name, cfg)
        assert registry.lookup(alias) is entry


def test_config_models_are_strict_pydantic_models_with_a_schema() -> None:
    for name in NAMES:
        schema = registry.config_model(name).model_json_schema()
        assert schema.get("additionalProperties") is False, name
    info = registry.describe_registry()
    json.dumps(info)
    assert info["self_consistency"]["aliases"] == ["sc"] and info["self_consistency"]["replay"]
    assert info["particle_filtering"]["why_not_replay"] and info["allocator"]["needs"] == ["questions"]
    assert info["self_consistency"]["options"]["eq"]["configurable"] is False
    assert info["fixed_n"]["options"]["n"]["required"] and not info["particle_filtering"]["options"]["verifier"][
        "required"]
    assert registry.list_names("rule") == ["beta", "certaindex", "deepconf_consensus", "dirichlet", "esc",
                                           "fixed_n", "verified"]
    assert "sc" in registry.list_names(registry.RUNNABLE, aliases=True)


# -- equality ------------------------------------------------------------------------------------------
def test_equality_is_by_description() -> None:
    from ttc.strategies import BetaRule, SelfConsistency

    a = SelfConsistency(BetaRule(0.9), max_samples=8)
    assert a == SelfConsistency(BetaRule(threshold=0.9), max_samples=8)
    assert a != SelfConsistency(BetaRule(0.8), max_samples=8)
    assert len({a, SelfConsistency(BetaRule(0.9), max_samples=8)}) == 1
    assert registry.build(**a.describe()) == a


# -- spec strings ------------------------------------------------------------------------------------
def test_specs_take_part_names_dotted_keys_lists_and_the_budget() -> None:
    pf = registry.build_from_spec("pf:n=8,verifier=arith_step,verifier.grounded=yes,tempering=1|2,"
                                  "params.temperature=0.5")
    assert pf == registry.build("particle_filtering", {"n": 8, "verifier": {"name": "arithmetic_step_check",
                                                                            "grounded": True},
                                                       "tempering": [1.0, 2.0], "params": {"temperature": 0.5}})
    sc = registry.build_from_spec("sc:rule=esc,rule.w=3,max_samples=B,batch_sizes=2|4", budget=12)
    assert sc.rule.w == 3 and sc.max_samples == 12 and list(sc.batch_sizes) == [2, 4]
    # a dotted key into a part the entry gives by default
    assert registry.build_from_spec("router:policy.top1_threshold=0.7").policy.top1_threshold == 0.7
    assert registry.build_from_spec("sc:rule=beta,rule.max_samples=none,max_samples=9").rule.max_samples is None


def test_historical_spec_keys_and_defaults_are_kept() -> None:
    b = registry.build_from_spec
    assert b("majority:n=B,temperature=0.7", budget=4) == registry.build(
        "best_of_n", n=4, params={"temperature": 0.7})
    sc = b("sc:rule=beta,max=B", budget=2)  # the budget caps the rule's minimum too
    assert sc.max_samples == 2 and sc.rule.min_samples == 2 and sc.rule.max_samples == 2
    esc = b("sc:rule=esc,max=B", budget=16)
    assert esc.max_samples == 16 and esc.rule.L == 16 and esc.rule.w == 5
    assert b("sc:rule=fixed,max=B", budget=6).rule.n == 6 and b("sc:rule=fixed").rule.n == 8
    assert b("sc:rule=dirichlet,threshold=0.9,max=12,batch=3").batch_sizes == [3]
    d = b("deepconf:mode=offline,max=B", budget=8)
    assert (d.mode, d.max_traces, d.n_init, d.eta, d.window) == ("offline", 8, 8, 90.0, 16)
    on = b("deepconf:mode=online,max=32")
    assert (on.n_init, on.max_traces) == (16, 32)
    assert b("rpc:prune=no,n=4").voter is not None and b("rpc:prune=no,n=4").describe()["prune"] is False
    assert b("greedy:max_tokens=16").params.max_tokens == 16
    assert b("sc").max_samples == 40  # the bare historical name runs (Beta rule, its cap)


@pytest.mark.parametrize(("spec", "key", "words"), [
    ("nope", "name", "unknown 'nope'"),
    ("", "", "empty strategy name"),
    ("majority:n=8,n=2", "n", "n given twice"),
    ("majority:bogus=1", "bogus", "unknown option(s) ['bogus']"),
    ("majority:n=2.5", "", "n: expected an integer"),
    ("majority:n=B", "", "uses B but no budget"),
    ("majority:8", "", "expected key=value"),
    ("greedy:temperature=0.5", "temperature", "unknown option(s) ['temperature']"),
    ("sc:rule=nope", "rule", "rule: expected one of"),
    ("sc:rule=beta,w=3", "w", "['w'] do not apply with rule=beta"),
    ("sc:rule=beta,threshold=1.5", "rule.threshold", "rule.threshold: must be in (0, 1)"),
    ("sc:rule.threshold=0.9", "rule.threshold", "give rule=NAME"),
    ("sc:rule=beta,rule.bogus=1", "rule.bogus", "rule.bogus"),
    ("sc:rule=beta,rule.threshold=x", "rule.threshold", "rule.threshold: expected a number"),
    ("sc:temperature=0.5,params.temperature=0.7", "temperature", "given twice"),
    ("pf:n=3.5", "n", "n: expected an integer"),
    ("pf:verifier=arith", "verifier", "verifier: expected one of"),  # an outcome verifier where steps are scored
    ("pf:params.bogus=1", "params.bogus", "params.bogus"),
    ("pf:verifier.right=2", "verifier.right", "verifier.right: must be in [0, 1]"),
    ("pf:eq=x", "eq", "eq"),
    ("deepconf:max=8,n=8", "max", "max or n"),
    ("rule=beta", "name", "unknown 'rule=beta'"),
])
def test_spec_errors_name_the_key(spec: str, key: str, words: str) -> None:
    with pytest.raises(ValueError) as info:
        registry.build_from_spec(spec)
    assert words in str(info.value) and "\n" not in str(info.value)
    if key and isinstance(info.value, ConfigError):
        assert info.value.key == key


def test_rules_and_verifiers_are_not_strategies() -> None:
    with pytest.raises(ConfigError, match="unknown 'beta'"):
        registry.build_from_spec("beta")
    assert registry.build_from_spec("beta:threshold=0.9", kinds=("rule",)).threshold == 0.9


# -- config errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "cfg", "key", "error"), [
    ("sc", {"bogus": 1}, "bogus", ConfigError),
    ("sc", {"max_samples": "8"}, "max_samples", ConfigTypeError),
    ("sc", {"max_samples": 8.0}, "max_samples", ConfigTypeError),
    ("sc", {"max_samples": True}, "max_samples", ConfigTypeError),
    ("best_of_n", {"weighted": "yes"}, "weighted", ConfigTypeError),
    ("sc", {"rule": {"name": "beta", "threshold": "high"}}, "rule.threshold", ConfigTypeError),
    ("sc", {"rule": {"name": "beta", "threshold": 2.0}}, "rule.threshold", ConfigError),
    ("sc", {"rule": {"threshold": 0.9}}, "rule", ConfigError),
    ("sc", {"rule": {"name": "nope"}}, "rule", ConfigError),
    ("sc", {"params": {"temperature": 0.5, "bogus": 1}}, "params.bogus", ConfigError),
    ("sc", {"params": {"temperature": -1.0}}, "params.temperature", ConfigError),
    ("sc", {"eq": "exact"}, "eq", ConfigError),
    ("pf", {"verifier": {"name": "arith_step", "aggregate": "median"}}, "verifier.aggregate", ConfigError),
    ("pf", {"policy": {"max_steps": 0}}, "policy", ConfigError),
    ("router", {"policy": {"name": "entropy_band", "routes": {"math": {"name": "r", "strategy": {
        "name": "sc", "max_samples": "x"}}}}}, "policy.routes.math.strategy.max_samples", ConfigTypeError),
    ("allocator", {"gain": {"method": "beta", "calibration": "x"}}, "gain.calibration", ConfigError),
])
def test_config_errors_name_the_key(name: str, cfg: dict[str, Any], key: str, error: type) -> None:
    with pytest.raises(error) as info:
        registry.build(name, cfg)
    assert info.value.key == key, str(info.value)
    assert key in str(info.value) and "\n" not in str(info.value)


def test_unknown_names_and_twice_given_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown 'nope'; known: \["):
        registry.build("nope")
    with pytest.raises(ConfigError, match="n: given twice"):
        registry.build("best_of_n", {"n": 2}, n=3)


# -- describe refuses what is not data -----------------------------------------------------------------
def test_describe_names_the_argument_that_is_not_data() -> None:
    from ttc.engines import ScriptedEngine
    from ttc.strategies import Greedy, SelfConsistency
    from ttc.verifiers import LLMJudge

    with pytest.raises(DescribeError, match="extractor: a function"):
        Greedy(extractor=lambda text: text).describe()
    with pytest.raises(DescribeError, match="voter: a function"):
        SelfConsistency(voter=lambda s, r, e: None, max_samples=4).describe()
    with pytest.raises(DescribeError, match="self_consistency: verifier: llm_judge: engine: a ScriptedEngine"):
        SelfConsistency(max_samples=4, verifier=LLMJudge(engine=ScriptedEngine(["x"]))).describe()
    # not data but the parameter's own default: left out, the constructor picks it again
    class Scaled(Describable):
        def __init__(self, k: int = 2, fn: Any = abs):
            self.k, self.fn = k, fn

    assert Scaled(3).describe() == Scaled(3, fn=abs).describe() == {"name": "scaled", "k": 3}
    with pytest.raises(DescribeError, match="scaled: fn: a function"):
        Scaled(fn=round).describe()
    # such objects compare by identity
    a = Greedy(extractor=str.strip)
    assert a == a and a != Greedy(extractor=str.strip)


# -- files ---------------------------------------------------------------------------------------------
def test_load_config_reads_yaml_and_toml(tmp_path: Path) -> None:
    y = tmp_path / "s.yaml"
    y.write_text("fast:\n  strategy: sc\n  max_samples: 4\n  rule: {name: beta, threshold: 0.9}\n"
                 "search:\n  strategy: pf\n  n: 4\n  verifier: arith_step\n")
    t = tmp_path / "s.toml"
    t.write_text('[fast]\nstrategy = "sc"\nmax_samples = 4\nrule = { name = "beta", threshold = 0.9 }\n\n'
                 '[search]\nstrategy = "pf"\nn = 4\nverifier = "arith_step"\n')
    a, b = registry.load_config(y), registry.load_config(t)
    assert a == b and set(a) == {"fast", "search"}
    assert a["fast"] == registry.build("sc", {"max_samples": 4, "rule": {"name": "beta", "threshold": 0.9}})


@pytest.mark.parametrize(("text", "suffix", "words"), [
    ("a:\n  strategy: sc\n  max_samples: 4\n  max_samples: 5\n", ".yaml", "max_samples given twice"),
    ("a:\n  strategy: sc\n  max_samples: four\n", ".yaml", "a: strategy 'sc': max_samples"),
    ("a:\n  max_samples: 4\n", ".yaml", "a: needs 'strategy: NAME'"),
    ("a: 3\n", ".yaml", "a: expected a mapping"),
    ("[a]\nstrategy = 'nope'\n", ".toml", "a: strategy/batch: unknown 'nope'"),
    ("[a]\nstrategy = 'sc'\nrule = {name = 'beta', bogus = 1}\n", ".toml", "rule.bogus"),
    ("a = [", ".toml", "s.toml"),
    ("x", ".json", "expected a .yaml, .yml or .toml file"),
])
def test_config_file_errors_name_the_file_label_and_key(tmp_path: Path, text: str, suffix: str, words: str) -> None:
    p = tmp_path / f"s{suffix}"
    p.write_text(text)
    with pytest.raises(ValueError) as info:
        registry.load_config(p)
    assert words in str(info.value) and str(p) in str(info.value)


# -- random configs ----------------------------------------------------------------------------------
_rules = st.one_of(
    st.builds(lambda t, lo: {"name": "beta", "threshold": t, "min_samples": lo},
              st.floats(0.51, 0.99), st.integers(1, 8)),
    st.builds(lambda n: {"name": "fixed_n", "n": n}, st.integers(1, 64)),
    st.builds(lambda w, k: {"name": "esc", "w": w, "L": w * k}, st.integers(1, 8), st.integers(1, 5)),
    st.builds(lambda t: {"name": "certaindex", "threshold": t}, st.floats(0.05, 1.0)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=_rules, cap=st.one_of(st.none(), st.integers(1, 64)), temp=st.floats(0.0, 2.0),
       batches=st.one_of(st.none(), st.lists(st.integers(1, 16), min_size=1, max_size=4)))
def test_random_self_consistency_configs_round_trip(rule: dict[str, Any], cap: int | None, temp: float,
                                                    batches: list[int] | None) -> None:
    cfg: dict[str, Any] = {"rule": rule, "params": {"temperature": temp}, "batch_sizes": batches}
    if cap is not None:
        cfg["max_samples"] = cap
    s = registry.build("sc", cfg)
    assert registry.build(**json.loads(json.dumps(s.describe()))) == s
    assert s.params.temperature == temp and s.rule.describe()["name"] == rule["name"]


# -- answer extractors by name ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["greedy", "sc", "majority", "rpc", "deepconf", "dynasor", "early_exit_sc", "pf",
                                  "beam", "dvts", "self_eval", "allocator", "compute_optimal"])
def test_every_sampling_strategy_reads_answers_with_a_named_extractor(name: str) -> None:
    from ttc.answers import extract_number

    built = registry.build(name, extractor="number")
    assert built.extractor is extract_number
    again = registry.build(json.loads(json.dumps(built.describe())))
    assert again.describe()["extractor"] == "number" and again.extractor is extract_number
    with pytest.raises(ConfigError, match="extractor: .*'number'.*got 'numbers'"):
        registry.build(name, extractor="numbers")


def test_a_spec_names_the_extractor_and_the_vote_follows_it() -> None:
    from ttc.engines import ScriptedEngine

    texts = ["3 + 4 = 7. The answer is N."] * 3 + ["The answer is 8."] * 2
    by_default = registry.build_from_spec("sc:rule=fixed,n=5").run_sync("Compute 3 + 4.", ScriptedEngine(texts))
    by_number = registry.build_from_spec("sc:rule=fixed,n=5,extractor=number").run_sync(
        "Compute 3 + 4.", ScriptedEngine(texts))
    assert by_default.answer == "n"  # the template's placeholder, echoed three times, wins the default vote
    assert by_number.answer == "7"
