"""The registry: every strategy and every part of one, by name, and the one way to build them.

``build("pf", {"n": 8, "verifier": "arith_step"})``,
``build_from_spec("pf:n=8,verifier=arith_step")`` and ``load_config("strategies.yaml")``
make strategies (and stopping rules, verifiers, router parts, the allocator) from data;
``strategy.describe()`` is the data back, and ``build(**strategy.describe())`` an equal
strategy. The command line, the benchmarks and the servers build through here.

- **Names.** Each entry has a primary name (the one ``describe()`` writes: the class's
  own ``name``, else its snake-case class name) and short aliases (``sc``, ``pf``,
  ``majority``, ...). :func:`list_names` and :func:`describe_registry` list them with
  their kind (see :data:`KINDS`), options and defaults.
- **Configs.** An entry's options are its constructor's parameters, typed by its hints
  (:mod:`ttc.configs`): a strict pydantic model per entry (:func:`config_model`), unknown
  keys, wrong types and bad values are errors naming the dotted key
  (:class:`~ttc.configs.ConfigError`, a ``ValueError``; wrong types are also
  ``TypeError``). Parts nest: ``{"name": "sc", "rule": {"name": "beta", "threshold":
  0.9}, "verifier": "arith"}``. A key left out keeps the constructor's default, except
  where an entry gives a default of its own so that the bare name runs (the step-wise
  searches get the rule-based ``arithmetic_step_check`` verifier, the router a keyword
  classifier and two routes on the run's engine).
- **Spec strings** (``--strategy``): ``NAME[:key=value,...]`` with the same keys, dotted
  keys into parts (``rule.threshold=0.9``, ``params.temperature=0.7``), part names as
  values (``verifier=arith_step``), ``a|b`` for lists, ``none`` for an optional value left
  empty, and ``B`` for the replay budget.
  The historical command-line names keep their historical keys and defaults in spec
  strings (``sc:rule=beta,max=16``, ``majority:n=8,temperature=0.7``,
  ``deepconf:mode=offline,max=B`` with eta 90 and 16-token windows): see
  :class:`Shorthands`.
- **Files**: :func:`load_config` reads YAML or TOML ``{label: {strategy: NAME, ...}}``.

This module imports the leaves (strategies, verifiers, routers), lazily, so it is not
part of the core: the core and the leaves never import it; the bench layer and servers do.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .configs import (
    MAX_COUNT,
    MAX_TOKENS,
    ConfigError,
    ConfigTypeError,
    DictOf,
    Hints,
    OneOf,
    Opt,
    Param,
    Part,
    Spec,
    Value,
    one_line,
    parse_kv,
    parse_opt,
    signature_params,
    validation_error,
)
from .configs import config_model as _model_of
from .strategy import Describable, DescribeError, config_name, describe_value

KINDS: dict[str, str] = {
    "strategy": "a strategy: run(question, engine, budget) -> StrategyResult",
    "batch": "a batch strategy: run(questions, engine, budget) shares one budget across many questions",
    "rule": "a stopping rule of sampling strategies",
    "verifier": "an outcome verifier: scores complete samples",
    "process_verifier": "a process verifier: scores the steps of step-wise searches",
    "early_exit": "an early-exit trace generator (certainty probes); also a sampler of self-consistency",
    "sampler": "how self-consistency draws one sample",
    "voter": "how self-consistency votes over its samples",
    "classifier": "a router classifier: texts -> class probabilities",
    "encoder": "a query encoder: texts -> embeddings",
    "embedding_classifier": "a fitted classifier over embeddings",
    "policy": "a routing policy: class probabilities -> route",
}
#: The kinds ``ttc run`` and the servers accept as a strategy.
RUNNABLE = ("strategy", "batch")

_BASES: dict[str, str | tuple[str, ...]] = {
    "strategy": "ttc.strategy:Strategy",
    "batch": ("ttc.strategy:BatchStrategy", "ttc.strategies.allocator:Allocator"),
    "rule": "ttc.strategies.stopping:StoppingRule",
    "verifier": "ttc.verifiers.base:OutcomeVerifier",
    "process_verifier": "ttc.verifiers.process:ProcessVerifier",
    "early_exit": "ttc.strategies.early_exit:EarlyExit",
    "classifier": "ttc.routers.encoders:ProbabilisticClassifier",
    "encoder": "ttc.routers.encoders:QueryEncoder",
    "embedding_classifier": "ttc.routers.classifiers:EmbeddingClassifier",
    "policy": "ttc.routers.policy:EntropyBandPolicy",
}


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@functools.cache
def _bases() -> tuple[tuple[str, type], ...]:
    return tuple((kind, _load(t)) for kind, targets in _BASES.items()
                 for t in (targets if isinstance(targets, tuple) else (targets,)))


def _part_kind(cls: type) -> str | None:
    for kind, base in _bases():
        if isinstance(cls, type) and issubclass(cls, base):
            return kind
    return None


def _passes_kwargs(init: Callable[..., Any]) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(inspect.unwrap(init)).parameters.values())


@functools.cache
def _hints() -> Hints:
    from ttc.strategy import Strategy

    route = _load("ttc.routers.routes:Route")
    sc = "ttc.strategies.self_consistency"
    # self-consistency's voter (a function type) and sampler (a protocol) are parts when registered
    return Hints(_part_kind, overrides={route: {"strategy": Strategy | None}},
                 specs={_load(f"{sc}:Voter"): Part(("voter",)), _load(f"{sc}:Sampler"): Part(("sampler", "early_exit"))})


# -- shorthands: the historical spec keys -------------------------------------------------------
@dataclass(frozen=True)
class Shorthands:
    """Flat spec keys of an entry kept from the historical command line: ``options`` (their
    types and ranges) and ``expand(values, config) -> config``, which writes them (and the
    historical defaults of that name) into the entry's config. Keys of the config given
    too win over a shorthand's default; giving a shorthand and the key it stands for is an
    error. Spec strings only: configs and files use the constructor's keys."""

    options: dict[str, Opt]
    expand: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


def _count(lo: int = 1) -> Opt:
    return Opt("int", lo=lo, hi=MAX_COUNT)


SAMPLING: dict[str, Opt] = {
    "temperature": Opt("float", lo=0.0, hi=2.0),
    "max_tokens": Opt("int", lo=1, hi=MAX_TOKENS),
    "top_p": Opt("float", lo=0.0, hi=1.0, lo_open=True),
}
DEEPCONF_METRICS = ("lowest_group", "mean", "bottom_10", "tail")


def _put(cfg: dict[str, Any], key: str, value: Any, short: str, where: str = "") -> None:
    if key in cfg:
        raise ConfigError(f"{short}: given twice (as {short} and as {where}{key})", short)
    cfg[key] = value


def _sampling(vals: dict[str, Any], cfg: dict[str, Any], temperature: float | None = 0.8) -> None:
    """``temperature``/``max_tokens``/``top_p`` into ``params`` (the historical base:
    temperature 0.8, as the sampling strategies default to)."""
    given = {k: vals[k] for k in SAMPLING if k in vals}
    if not given:
        return
    params = cfg.get("params") or {}
    if not isinstance(params, dict):
        raise ConfigError("params: give either params or temperature/max_tokens/top_p", "params")
    for k, v in given.items():
        if k in params:
            raise ConfigError(f"{k}: given twice (as {k} and as params.{k})", k)
        params[k] = v
    if temperature is not None:
        params.setdefault("temperature", temperature)
    cfg["params"] = params


def _expand_greedy(vals: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    _sampling(vals, cfg, temperature=None)
    return cfg


def _expand_best_of_n(vals: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    _sampling(vals, cfg)
    for k in ("n", "prune"):
        if k in vals:
            _put(cfg, k, vals[k], k)
    return cfg


def _fit_rule(rule: dict[str, Any], fields: dict[str, Param], m: int) -> None:
    """Fit a stopping rule into ``m`` samples (the historical ``max``): its caps (``max_samples``,
    ESC's ``L``, ``FixedN``'s ``n``) become ``m`` unless given, its minimums
    (``min_samples``, ESC's window ``w``) at most ``m``."""
    for k in ("max_samples", "L", "n"):
        if k in fields:
            rule.setdefault(k, m)
    for k in ("min_samples", "w"):
        if k in fields:
            have = rule.get(k, fields[k].default)
            if isinstance(have, int) and have > m:
                rule[k] = m


def _expand_sc(vals: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """``sc:rule=beta,threshold=0.9,max=16,batch=4``: ``rule`` (default ``beta``),
    ``threshold``/``w``/``n`` for the rule, ``max`` caps the strategy and fits the rule into
    it, ``batch`` is a constant batch size."""
    _sampling(vals, cfg)
    rule = cfg.get("rule") or {"name": "beta"}
    rule = dict(rule) if isinstance(rule, dict) else {"name": rule}
    entry = lookup(rule["name"], ("rule",), key="rule")
    fields = {p.name: p for p in entry.params()}
    unused = []
    for short in ("threshold", "w", "n"):
        if short in vals:
            if short not in fields:
                unused.append(short)
            else:
                _put(rule, short, vals[short], short, "rule.")
    if unused:
        raise ConfigError(f"option(s) {sorted(unused)} do not apply with rule={rule['name']}", unused[0])
    if "max" in vals:
        _put(cfg, "max_samples", vals["max"], "max")
        _fit_rule(rule, fields, vals["max"])
    if "n" in fields and "n" not in rule:
        rule["n"] = 8  # the historical fixed-N default
    if "batch" in vals:
        _put(cfg, "batch_sizes", [vals["batch"]], "batch")
    cfg["rule"] = rule
    return cfg


def _expand_deepconf(vals: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """The historical ``deepconf`` spec: offline by default, ``max``/``n`` traces (16),
    eta 90, 16-token windows, ``n_init`` = all traces offline or min(16, max) online."""
    _sampling(vals, cfg)
    if "max" in vals and "n" in vals:
        raise ConfigError("give max or n (the same option), not both", "max")
    for k in ("mode", "n_init", "eta", "window", "tau", "metric", "top_k", "parallelism"):
        if k in vals:
            _put(cfg, k, vals[k], k)
    if "max" in vals or "n" in vals:
        _put(cfg, "max_traces", vals.get("max", vals.get("n")), "max")
    mode = cfg.setdefault("mode", "offline")
    mx = cfg.setdefault("max_traces", 16)
    if isinstance(mx, int):
        n_init = cfg.get("n_init", mx if mode == "offline" else min(16, mx))
        cfg["n_init"] = min(n_init, mx) if isinstance(n_init, int) else n_init
    cfg.setdefault("eta", 90.0)
    cfg.setdefault("window", 16)
    return cfg


GREEDY = Shorthands({"max_tokens": SAMPLING["max_tokens"]}, _expand_greedy)
BEST_OF_N = Shorthands({**SAMPLING, "n": _count()}, _expand_best_of_n)
RPC = Shorthands({**SAMPLING, "n": _count(), "prune": Opt("bool")}, _expand_best_of_n)
SC = Shorthands(
    {**SAMPLING, "threshold": Opt("float"), "max": _count(), "batch": _count(), "w": _count(), "n": _count()},
    _expand_sc,
)
DEEPCONF = Shorthands(
    {**SAMPLING, "mode": Opt("str", choices=("offline", "online")), "max": _count(), "n": _count(),
     "n_init": _count(), "eta": Opt("float", lo=0.0, hi=100.0, lo_open=True), "window": _count(),
     "tau": Opt("float", lo=0.0, hi=1.0, lo_open=True), "metric": Opt("str", choices=DEEPCONF_METRICS),
     "top_k": Opt("int", lo=0, hi=20), "parallelism": _count()},
    _expand_deepconf,
)


# -- entries ------------------------------------------------------------------------------------
@dataclass
class Entry:
    """One registered name.

    ``target``: ``"module:attr"`` of a class (whose ``config_name`` must be ``name``) or a
    factory function (its result then describes itself as this entry and its arguments).
    ``defaults``: options used when left out (so the bare name runs). ``overrides``:
    parameter hints replacing the constructor's where those are too loose (a function of
    nothing, called when the entry is first used). ``kwargs_from``: whose parameters a
    ``**kw`` of the constructor takes; ``drop``: parameters of ``kwargs_from`` the
    constructor sets itself (not options). ``replay``: runs on a recorded pool (``ttc
    replay``); ``why_not_replay`` says why not. ``needs``: run inputs besides a question,
    an engine and a budget (``"questions"``: a batch).
    """

    name: str
    kind: str
    target: str
    aliases: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    overrides: Callable[[], dict[str, Any]] | None = None
    kwargs_from: str | None = None
    shorthands: Shorthands | None = None
    replay: bool = False
    why_not_replay: str = ""
    needs: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()

    @functools.cached_property
    def factory(self) -> Any:
        obj = _load(self.target)
        if isinstance(obj, type) and config_name(obj) != self.name:
            raise RuntimeError(f"registry: {self.target} describes itself as {config_name(obj)!r}, "
                               f"registered as {self.name!r}")
        return obj

    def params(self) -> list[Param]:
        return self._params

    @functools.cached_property
    def _params(self) -> list[Param]:
        obj = self.factory
        is_class = isinstance(obj, type)
        kwargs_from = _load(self.kwargs_from) if self.kwargs_from else None
        if isinstance(kwargs_from, type):
            kwargs_from = kwargs_from.__init__
        parents = tuple(c.__dict__["__init__"] for c in obj.__mro__[1:] if "__init__" in c.__dict__) \
            if is_class else ()
        params = signature_params(obj.__init__ if is_class else obj, _hints(), skip_first=is_class,
                                  overrides=self.overrides() if self.overrides else None, kwargs_from=kwargs_from,
                                  drop=self.drop, hint_sources=parents)
        if self.kind == "strategy" and is_class and not any(p.name == "extractor" for p in params) \
                and _passes_kwargs(obj.__init__):
            # a strategy whose ``**kw`` reaches Strategy.__init__: its answer extractor is an option
            base = _load("ttc.strategy:Strategy").__init__
            params += [p for p in signature_params(base, _hints(), skip_first=True) if p.name == "extractor"]
        return params

    @functools.cached_property
    def model(self) -> type[BaseModel]:
        """The strict pydantic model of this entry's config (without ``name``)."""
        camel = "".join(w.capitalize() for w in self.name.split("_"))
        return _model_of(camel, self.params())

    def doc(self) -> str:
        text = (getattr(self.factory, "__doc__", None) or "").strip()
        return " ".join(text.split("\n\n")[0].split())

    def build(self, config: Mapping[str, Any], path: str = "") -> Any:
        """The object of ``config`` (its keys without ``name``); errors name the dotted key
        under ``path``."""
        full = {**json.loads(json.dumps(self.defaults)), **config}
        try:
            cfg = self.model.model_validate(full)
        except ValidationError as e:
            raise validation_error(e, path) from None
        specs = {p.name: p.spec for p in self.params()}
        kwargs = {k: specs[k].materialize(getattr(cfg, k), _join(path, k), _build_part)
                  for k in cfg.model_fields_set}
        try:
            obj = self.factory(**kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise _constructor_error(e, path, specs) from None
        if not isinstance(self.factory, type):
            data = cfg.model_dump(include=cfg.model_fields_set)
            try:
                obj.__dict__["_described_as"] = json.loads(json.dumps({"name": self.name, **data}))
            except (AttributeError, TypeError):
                pass
        return obj


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _constructor_error(e: BaseException, path: str, specs: Mapping[str, Spec]) -> ConfigError:
    """A constructor's ``"arg: message"`` as ``"path.arg: message"``."""
    msg = one_line(e)
    head, sep, rest = msg.partition(": ")
    if sep and head in specs:
        key, msg = _join(path, head), f"{_join(path, head)}: {rest}"
    else:
        key, msg = path, (f"{path}: {msg}" if path else msg)
    return (ConfigTypeError if isinstance(e, TypeError) else ConfigError)(msg, key)


def _build_part(kinds: tuple[str, ...], config: dict[str, Any], path: str) -> Any:
    cfg = dict(config)
    name = cfg.pop("name")
    return lookup(name, kinds, key=path).build(cfg, path)


def _entries() -> list[Entry]:
    S, V, R = "ttc.strategies", "ttc.verifiers", "ttc.routers"
    sc = f"{S}.self_consistency:SelfConsistency"
    pf = f"{S}.particle_filter:ParticleFiltering"
    step_default = {"verifier": {"name": "arithmetic_step_check"}}
    continuation = "it continues partial answers, which a pool of complete samples cannot"
    return [
        # strategies
        Entry("greedy", "strategy", f"{S}.simple:Greedy", shorthands=GREEDY, replay=True),
        Entry("best_of_n", "strategy", f"{S}.simple:BestOfN", ("majority", "bon"), shorthands=BEST_OF_N,
              replay=True),
        Entry("self_consistency", "strategy", sc, ("sc",), shorthands=SC, replay=True),
        Entry("perplexity_consistency", "strategy", f"{S}.rpc:PerplexityConsistency", ("rpc",), kwargs_from=sc,
              shorthands=RPC, replay=True, drop=("voter",)),
        Entry("complexity_voting", "strategy", f"{S}.rpc:ComplexityVoting", ("complexity",), kwargs_from=sc,
              replay=True, drop=("voter",)),
        Entry("deepconf", "strategy", f"{S}.deepconf:DeepConf", shorthands=DEEPCONF, replay=True),
        Entry("dynasor_cot", "strategy", f"{S}.early_exit:DynasorCoT", ("dynasor",),
              kwargs_from=f"{S}.early_exit:EarlyExit", why_not_replay=f"its probes are prompts of their own and {continuation}"),
        Entry("early_exit_self_consistency", "strategy", f"{S}.early_exit:EarlyExitSelfConsistency",
              ("early_exit_sc",), kwargs_from=sc, drop=("sampler",),
              why_not_replay=f"its probes are prompts of their own and {continuation}"),
        Entry("particle_filtering", "strategy", pf, ("pf",), defaults=step_default, why_not_replay=continuation),
        Entry("particle_gibbs", "strategy", f"{S}.particle_filter:ParticleGibbs", ("pg",), defaults=step_default,
              kwargs_from=pf, why_not_replay=continuation),
        Entry("beam_search", "strategy", f"{S}.tree_search:BeamSearch", ("beam",), defaults=step_default,
              why_not_replay=continuation),
        Entry("dvts", "strategy", f"{S}.tree_search:DVTS", defaults=step_default, why_not_replay=continuation),
        Entry("self_eval_gate", "strategy", f"{S}.self_eval:SelfEvalGate", ("self_eval",),
              why_not_replay="it asks the model about each sample with a prompt of its own"),
        Entry("self_eval_pruning", "strategy", f"{S}.self_eval:SelfEvalPruning",
              why_not_replay=f"it asks the model about each sample with a prompt of its own, and {continuation}"),
        Entry("semantic_router", "strategy", f"{R}.router:SemanticRouter", ("router",), defaults=ROUTER_DEFAULTS,
              why_not_replay="its routes rewrite the prompt (reasoning on/off), which a pool did not record"),
        Entry("allocator", "batch", f"{S}.allocator:Allocator", ("allocate",), replay=True, needs=("questions",),
              overrides=lambda: {"gain": _load(f"{S}.allocator:VotePosteriorGain") | None}),
        Entry("compute_optimal", "batch", f"{S}.compute_optimal:ComputeOptimal", needs=("questions",),
              why_not_replay="its policy is fitted for one token budget; benchmarks/compute_optimal.py replays it"),
        # stopping rules
        Entry("fixed_n", "rule", f"{S}.stopping:FixedN", ("fixed",)),
        Entry("beta", "rule", f"{S}.stopping:BetaRule"),
        Entry("dirichlet", "rule", f"{S}.stopping:DirichletRule"),
        Entry("esc", "rule", f"{S}.stopping:ESCWindow"),
        Entry("certaindex", "rule", f"{S}.stopping:CertaindexEntropy", ("certainty", "entropy")),
        Entry("deepconf_consensus", "rule", f"{S}.stopping:DeepConfConsensus"),
        Entry("verified", "rule", f"{S}.stopping:VerifiedAnswer"),
        # outcome verifiers
        Entry("arithmetic_check", "verifier", f"{V}.rules:ArithmeticCheck", ("arith",)),
        Entry("self_certainty", "verifier", f"{V}.self_certainty:SelfCertainty"),
        Entry("mean_logprob", "verifier", f"{V}.self_certainty:MeanLogprob"),
        Entry("llm_judge", "verifier", f"{V}.judge:LLMJudge", ("judge",)),
        Entry("remote_reward_model", "verifier", f"{V}.reward_model:RemoteRewardModel", ("remote_rm",)),
        Entry("local_reward_model", "verifier", f"{V}.reward_model:LocalRewardModel", ("local_rm",),
              overrides=lambda: {"model": str, "tokenizer": str | None}),
        Entry("process_as_outcome", "verifier", f"{V}.process:ProcessAsOutcome", ("process",)),
        Entry("tool_schema", "verifier", f"{V}.tool_schema:ToolSchemaCheck"),
        # process verifiers
        Entry("arithmetic_step_check", "process_verifier", f"{V}.process:ArithmeticStepCheck", ("arith_step",)),
        Entry("llm_judge_step", "process_verifier", f"{V}.process:LLMJudgeStepVerifier", ("judge_step",)),
        Entry("remote_prm", "process_verifier", f"{V}.process:RemotePRM"),
        Entry("transformers_prm", "process_verifier", f"{V}.prm:TransformersPRM", ("prm",),
              overrides=lambda: {"model": str, "tokenizer": str | None}),
        # self-consistency's parts
        Entry("early_exit", "early_exit", f"{S}.early_exit:EarlyExit"),
        Entry("plain_sampler", "sampler", f"{S}.self_consistency:PlainSampler", ("plain",)),
        Entry("rpc_voter", "voter", f"{S}.rpc:RPCVoter"),
        Entry("complexity_voter", "voter", f"{S}.rpc:ComplexityVoter"),
        # router parts
        Entry("keyword_classifier", "classifier", f"{R}.encoders:KeywordClassifier", ("keyword",)),
        Entry("encoded_classifier", "classifier", f"{R}.encoders:EncodedClassifier", ("encoded",),
              overrides=lambda: {"classifier": _load(f"{R}.classifiers:EmbeddingClassifier")}),
        Entry("sentence_transformer_encoder", "encoder", f"{R}.encoders:SentenceTransformerEncoder",
              ("sentence_transformer",)),
        Entry("vllm_embedding_encoder", "encoder", f"{R}.encoders:VLLMEmbeddingEncoder", ("vllm_embedding",)),
        Entry("classifier_file", "embedding_classifier", f"{R}.classifiers:load_classifier"),
        Entry("entropy_band_policy", "policy", f"{R}.policy:EntropyBandPolicy", ("entropy_band",)),
        Entry("routing_table", "policy", "ttc.registry:routing_table_policy"),
    ]


#: The default router: questions that look like arithmetic reason (self-consistency over a
#: chain of thought), the others answer directly; both on the run's engine.
ROUTER_DEFAULTS: dict[str, Any] = {
    "classifier": {"name": "keyword_classifier",
                   "patterns": {"math": [r"\d", r"[-+*/×÷=]", r"\bhow (many|much)\b", r"\b(sum|total|product)\b"]},
                   "default": "other"},
    "policy": {"name": "entropy_band_policy", "routes": {
        "math": {"name": "reason", "reasoning": True,
                 "strategy": {"name": "self_consistency", "max_samples": 4}},
        "other": {"name": "direct", "reasoning": False},
    }},
}


def routing_table_policy(
    path: str,
    options: dict[str, Any],
    *,
    confidence_threshold: float | None = None,
    top1_threshold: float = 0.6,
    complexity_margin: float | None = None,
) -> Any:
    """The policy of a calibrated routing table (``python -m ttc.routers.calibrate ...
    --out table.json``): ``options`` are the routes the table names, by name."""
    from ttc.routers.calibrate import RoutingTable

    return RoutingTable.load(path).policy(options, confidence_threshold=confidence_threshold,
                                          top1_threshold=top1_threshold, complexity_margin=complexity_margin)


def _fix_routing_table_hints() -> None:
    from ttc.routers.routes import Route

    routing_table_policy.__annotations__["options"] = dict[str, Route]


@functools.cache
def _table() -> dict[str, Entry]:
    _fix_routing_table_hints()
    table: dict[str, Entry] = {}
    for e in _entries():
        if e.kind not in KINDS:
            raise RuntimeError(f"registry: {e.name}: unknown kind {e.kind!r}")
        for n in (e.name, *e.aliases):
            if n in table:
                raise RuntimeError(f"registry: {n!r} registered twice")
            table[n] = e
    return table


# -- public API -------------------------------------------------------------------------------
def lookup(name: str, kinds: tuple[str, ...] | None = None, *, key: str = "") -> Entry:
    """The entry of ``name`` (or an alias), of one of ``kinds``. An unknown name is a
    :class:`~ttc.configs.ConfigError` listing the known ones (naming ``key`` for a part)."""
    table = _table()
    if not isinstance(name, str):
        raise ConfigTypeError(f"{key or 'name'}: expected a registered name, got {name!r}", key)
    e = table.get(name)
    if e is not None and (kinds is None or e.kind in kinds):
        return e
    known = sorted(n for n, x in table.items() if kinds is None or x.kind in kinds)
    if key:
        raise ConfigError(f"{key}: expected one of {known}, got {name!r}", key)
    what = "/".join(kinds) if kinds else "name"
    raise ConfigError(f"{what}: unknown {name!r}; known: {known}", "name")


def build(name: str | Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None,
          **options: Any) -> Any:
    """The object registered as ``name`` with ``config`` (and/or ``options``): ``build("sc",
    {"max_samples": 8})``, ``build("sc", max_samples=8)``, ``build(**obj.describe())`` or
    ``build(obj.describe())``. Errors are :class:`~ttc.configs.ConfigError` (a
    ``ValueError``; wrong types also ``TypeError``), one line naming the key."""
    if isinstance(name, Mapping):
        if config is not None:
            raise ConfigError("give the config once: build(config) or build(name, config)")
        config = {k: v for k, v in name.items() if k != "name"}
        name = name.get("name")  # type: ignore[assignment]
    cfg = dict(config or {})
    for k, v in options.items():
        if k in cfg:
            raise ConfigError(f"{k}: given twice", k)
        cfg[k] = v
    return _build_named(name, cfg, None)  # type: ignore[arg-type]


def _build_named(name: str, cfg: dict[str, Any], kinds: tuple[str, ...] | None) -> Any:
    entry = lookup(name, kinds)
    return _labelled(entry, name, lambda: entry.build(cfg))


def _labelled(entry: Entry, name: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ConfigError as e:
        raise type(e)(f"{entry.kind} {name!r}: {e}", e.key) from None


def spec_config(spec: str, *, budget: int | None = None, kinds: tuple[str, ...] | None = RUNNABLE
                ) -> tuple[Entry, dict[str, Any]]:
    """(entry, config) of a spec string ``NAME[:key=value,...]`` (see the module doc);
    ``B`` values are ``budget``."""
    if not isinstance(spec, str):
        raise ConfigTypeError(f"strategy: expected a spec string, got {type(spec).__name__}")
    name, _, rest = spec.partition(":")
    name = name.strip()
    what = "/".join(kinds) if kinds else "name"
    if not name:
        raise ConfigError(f"{what}: empty strategy name in {spec!r}; known: {list_names(kinds, aliases=True)}")
    entry = lookup(name, kinds)
    label = f"{entry.kind} {name!r}"
    raw = parse_kv(rest, label)
    short = entry.shorthands.options if entry.shorthands else {}
    fields = {p.name: p.spec for p in entry.params()}
    unknown = sorted(k for k in raw if k not in short and k.split(".")[0] not in fields)
    if unknown:
        raise ConfigError(f"{label}: unknown option(s) {unknown}; known: {sorted(set(fields) | set(short))}",
                          unknown[0])
    values = {k: parse_opt(short[k], v, f"{label}: {k}", budget, spec) for k, v in raw.items() if k in short}
    cfg: dict[str, Any] = json.loads(json.dumps(entry.defaults))  # dotted keys may set options of a default part
    for key in sorted((k for k in raw if k not in short), key=lambda k: k.count(".")):
        _set_text(cfg, fields, key, raw[key], budget, label, spec)
    if entry.shorthands is not None:
        cfg = _labelled(entry, name, lambda: entry.shorthands.expand(values, cfg))  # type: ignore[union-attr]
    return entry, cfg


def _set_text(cfg: dict[str, Any], fields: dict[str, Spec], key: str, text: str, budget: int | None,
              label: str, spec_text: str) -> None:
    """Write the text value of dotted ``key`` into ``cfg``, typed by the spec at that path."""
    segs = key.split(".")
    node, spec, cur = cfg, fields[segs[0]], segs[0]
    for seg in segs[1:]:
        spec = _container(spec, node.get(cur))
        if isinstance(spec, Part):
            have = node.get(cur)
            if isinstance(have, str):
                have = node[cur] = {"name": have}
            if have is None:
                raise ConfigError(f"{label}: {key}: give {cur}=NAME too (which {'/'.join(spec.kinds)} to set "
                                  f"{seg} of)", key)
            options = {p.name: p.spec for p in lookup(have["name"], spec.kinds, key=cur).params()}
        elif isinstance(spec, Value):
            node.setdefault(cur, {})
            options = {n: s for n, s, _ in spec.fields}
        elif isinstance(spec, DictOf):  # a key of a mapping (e.g. a route's category)
            node.setdefault(cur, {})
            options = {seg: spec.item}
        else:
            raise ConfigError(f"{label}: {key}: {cur} has no options of its own", key)
        if seg not in options:
            raise ConfigError(f"{label}: unknown option(s) [{key!r}]; {cur} has {sorted(options)}", key)
        node, spec, cur = node[cur], options[seg], seg
    try:
        value = spec.from_text(text, f"{label}: {key}", budget)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(one_line(e).replace("the spec", repr(spec_text)), key) from None
    if isinstance(spec, OneOf) and isinstance(value, str) and _names_part(spec, value):
        value = {"name": value}  # a registered name where text is also allowed: the part
    node[cur] = value


def _names_part(spec: OneOf, text: str) -> bool:
    kinds = tuple(k for p in spec.parts() for k in p.kinds)
    return bool(kinds) and text in list_names(kinds, aliases=True)


def _container(spec: Spec, have: Any) -> Spec:
    if isinstance(spec, OneOf):
        parts = spec.parts()
        values = [m for m in spec.members if isinstance(m, Value)]
        if parts and (isinstance(have, dict) and "name" in have or isinstance(have, str) and _names_part(spec, have)):
            return parts[0]
        if values:
            return values[0]
        if parts:
            return parts[0]
        dicts = [m for m in spec.members if isinstance(m, DictOf)]
        if dicts:
            return dicts[0]
    return spec


def build_from_spec(spec: str, *, budget: int | None = None, kinds: tuple[str, ...] | None = RUNNABLE) -> Any:
    """The object of a spec string: ``build_from_spec("pf:n=8,verifier=arith_step")``,
    ``build_from_spec("sc:rule=beta,max=B", budget=16)``."""
    entry, cfg = spec_config(spec, budget=budget, kinds=kinds)
    name = spec.partition(":")[0].strip()
    return _labelled(entry, name, lambda: entry.build(cfg))


def load_config(path: str | Path, label: str | None = None) -> Any:
    """Named strategies from a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file: a mapping
    ``{label: {strategy: NAME, ...config}}``; returns ``{label: built object}``, or with
    ``label`` that one object. Errors name the file, the label and the key."""
    configs = read_config(path)
    if label is not None:
        if label not in configs:
            raise ConfigError(f"{path}: no strategy labelled {label!r}; labels: {sorted(configs)}", label)
        configs = {label: configs[label]}
    built = {name: _labelled_file(path, name, lambda c=c: _build_named(
                 c["strategy"], {k: v for k, v in c.items() if k != "strategy"}, RUNNABLE))
             for name, c in configs.items()}
    return built[label] if label is not None else built


def _labelled_file(path: str | Path, label: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ConfigError as e:
        raise type(e)(f"{path}: {label}: {e}", e.key) from None


def read_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """The configs of a YAML or TOML file of named strategies, checked for shape (a mapping of
    labels to mappings with a ``strategy`` name) but not built. A key written twice in
    the file is an error (TOML forbids it; the YAML reader here refuses it too)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = _yaml(text)
        else:
            raise ConfigError(f"{path}: expected a .yaml, .yml or .toml file")
    except (tomllib.TOMLDecodeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{path}: {one_line(e)}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: expected a mapping of labels to strategy configs")
    for label, c in data.items():
        if not isinstance(c, dict):
            raise ConfigTypeError(f"{path}: {label}: expected a mapping with a 'strategy' key, got {c!r:.60}", str(label))
        if not isinstance(c.get("strategy"), str):
            raise ConfigError(f"{path}: {label}: needs 'strategy: NAME' (one of {list_names(RUNNABLE)})",
                              f"{label}.strategy")
    return {str(k): v for k, v in data.items()}


def _yaml(text: str) -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for k_node, v_node in node.value:
            k = loader.construct_object(k_node, deep=deep)
            if k in out:
                raise ValueError(f"line {k_node.start_mark.line + 1}: {k} given twice")
            out[k] = loader.construct_object(v_node, deep=deep)
        return out

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ValueError(" ".join(str(e).split())) from None


def list_names(kinds: str | tuple[str, ...] | None = None, *, aliases: bool = False) -> list[str]:
    """Registered names (of ``kinds``), sorted; with ``aliases`` the short names too."""
    if isinstance(kinds, str):
        kinds = (kinds,)
    return sorted(n for n, e in _table().items()
                  if (kinds is None or e.kind in kinds) and (aliases or n == e.name))


def config_model(name: str) -> type[BaseModel]:
    """The pydantic model of ``name``'s config (JSON schema: ``.model_json_schema()``)."""
    return lookup(name).model


def describe_registry(kinds: str | tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """Every entry (of ``kinds``): kind, aliases, one-line doc, options (type, default,
    required), defaults of its own, whether it replays on a pool (and why not), and what
    else it needs to run."""
    out = {}
    for name in list_names(kinds):
        e = lookup(name)
        schema = e.model.model_json_schema()
        props = schema.get("properties", {})
        options = {}
        for p in e.params():
            options[p.name] = {
                "type": _type_name(props.get(p.name, {})), "configurable": p.spec.configurable(),
                "required": p.name in schema.get("required", []) and p.name not in e.defaults,
                **({"default": props[p.name]["default"]} if "default" in props.get(p.name, {}) else {}),
            }
        out[name] = {
            "kind": e.kind, "aliases": list(e.aliases), "doc": e.doc(), "options": options,
            "defaults": e.defaults, "spec_shorthands": sorted(e.shorthands.options) if e.shorthands else [],
            "replay": e.replay, **({"why_not_replay": e.why_not_replay} if not e.replay else {}),
            "needs": list(e.needs),
        }
    return out


def _type_name(prop: dict[str, Any]) -> str:
    if "anyOf" in prop:
        return " | ".join(_type_name(p) for p in prop["anyOf"])
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1].removesuffix("Config")
    if prop.get("type") == "array":
        return f"list[{_type_name(prop.get('items', {}))}]"
    if "enum" in prop:
        return " | ".join(repr(v) for v in prop["enum"])
    if "const" in prop:
        return repr(prop["const"])
    return str(prop.get("type", "any"))


def describe(obj: Any) -> dict[str, Any]:
    """``obj.describe()`` for a registered object (:class:`~ttc.strategy.Describable`)."""
    if not isinstance(obj, Describable):
        return describe_value(obj, type(obj).__name__)
    return obj.describe()


__all__ = [
    "KINDS", "RUNNABLE", "ConfigError", "ConfigTypeError", "DescribeError", "Entry", "Shorthands", "build",
    "build_from_spec", "config_model", "describe", "describe_registry", "list_names", "load_config", "lookup",
    "read_config", "routing_table_policy", "spec_config",
]
