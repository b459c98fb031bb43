"""Text specs, parsed strictly in one place: datasets (``--dataset``), strategies
(``--strategy``) and budgets (``--budget``).

A spec's options are ``key=value`` pairs separated by commas. Parsing is strict, and
every error is one ``ValueError`` line naming the spec and the key:

- every key must be known for what it configures, and may appear once;
- every value has a type: integers (``8``; not ``8.0``), numbers (finite: no
  ``nan``/``inf``), booleans (exactly ``true/false/1/0/yes/no``), or one of a fixed
  set of words; and a range (e.g. ``temperature`` in [0, 2], as the OpenAI API
  documents it);
- an empty key or value, or a part without ``=``, is an error.

In ``ttc replay`` an integer value written ``B`` is replaced by each budget of the grid.

Dataset specs: a ttc JSONL file; ``gsm8k:FILE``, ``math500:FILE``, ``mc:FILE``,
``jsonl:FILE``; or ``generator:NAME:N[:SEED[:key=value,...]]`` for the generators of
:mod:`ttc.bench.datasets`, whose options and their types come from the generator's signature.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import datasets as ds
from ttc.budget import Budget
from ttc.checks import parse_bool
from ttc.strategy import Strategy
from ttc.types import SamplingParams

#: The largest number of samples/questions a spec may ask for: above it a spec is more
#: likely a typo than a plan, and nothing is allocated per requested item anyway.
MAX_COUNT = 1_000_000
MAX_TOKENS = 10_000_000


# -- key=value options ----------------------------------------------------------------------
@dataclass(frozen=True)
class Opt:
    """The type and range of one option."""

    kind: Literal["int", "float", "bool", "str"]
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] | None = None

    def describe(self) -> str:
        if self.choices:
            return f"one of {list(self.choices)}"
        if self.kind == "bool":
            return "true/false/1/0/yes/no"
        what = {"int": "an integer", "float": "a number", "str": "text"}[self.kind]
        if self.lo is None and self.hi is None:
            return what
        left = "(" if self.lo_open else "["
        right = ")" if self.hi_open else "]"
        lo = "-inf" if self.lo is None else _num(self.lo)
        hi = "inf" if self.hi is None else _num(self.hi)
        return f"{what} in {left}{lo}, {hi}{right}"

    def parse(self, text: str, where: str) -> Any:
        if self.kind == "bool":
            return parse_bool(where, text)
        if self.kind == "str":
            if self.choices is not None and text not in self.choices:
                raise ValueError(f"{where}: expected one of {list(self.choices)}, got {text!r}")
            return text
        try:
            value: float = int(text, 10) if self.kind == "int" else float(text)
        except ValueError:
            raise ValueError(f"{where}: expected {self.describe()}, got {text!r}") from None
        return self.check(value, where)

    def check(self, value: float, where: str) -> float:
        if not math.isfinite(value):
            raise ValueError(f"{where}: expected a finite number, got {value}")
        low_bad = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        high_bad = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if low_bad or high_bad:
            raise ValueError(f"{where}: expected {self.describe()}, got {_num(value)}")
        return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def parse_kv(text: str, what: str) -> dict[str, str]:
    """``key=value,...`` -> {key: raw value}: no empty or duplicate keys, no part without ``=``."""
    out: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"{what}: expected key=value, got {part!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        if not k:
            raise ValueError(f"{what}: empty key in {part!r}")
        if not v:
            raise ValueError(f"{what}: {k}: empty value")
        if k in out:
            raise ValueError(f"{what}: {k} given twice ({out[k]!r} and {v!r})")
        out[k] = v
    return out


def typed_options(
    raw: dict[str, str], schema: dict[str, Opt], what: str, *, budget: int | None = None, spec: str = ""
) -> dict[str, Any]:
    """Check ``raw`` against ``schema`` and convert each value; ``B`` (integer options
    only) becomes ``budget``."""
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise ValueError(f"{what}: unknown option(s) {unknown}; known: {sorted(schema)}")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        opt = schema[k]
        if v == "B":
            if opt.kind != "int":
                raise ValueError(f"{what}: {k}: B stands for the budget (an integer); {k} is {opt.describe()}")
            if budget is None:
                raise ValueError(f"{what}: {spec or k!r} uses B but no budget grid is given (B is for ttc replay)")
            out[k] = int(opt.check(budget, f"{what}: {k}"))
            continue
        out[k] = opt.parse(v, f"{what}: {k}")
    return out


# -- strategies ---------------------------------------------------------------------------------
def _count(lo: int = 1) -> Opt:
    return Opt("int", lo=lo, hi=MAX_COUNT)


SAMPLING: dict[str, Opt] = {
    "temperature": Opt("float", lo=0.0, hi=2.0),
    "max_tokens": Opt("int", lo=1, hi=MAX_TOKENS),
    "top_p": Opt("float", lo=0.0, hi=1.0, lo_open=True),
}
RULES = ("beta", "dirichlet", "esc", "fixed", "fixed_n", "certainty", "entropy", "certaindex")
DEEPCONF_METRICS = ("lowest_group", "mean", "bottom_10", "tail")


def _sampling(kw: dict[str, Any], default_temp: float = 0.8) -> SamplingParams:
    return SamplingParams(
        temperature=kw.pop("temperature", default_temp),
        max_tokens=kw.pop("max_tokens", 256),
        top_p=kw.pop("top_p", 1.0),
    )


def _greedy(kw: dict[str, Any]) -> Strategy:
    from ttc.strategies import Greedy

    return Greedy(params=SamplingParams(temperature=0.0, max_tokens=kw.pop("max_tokens", 256)))


def _majority(kw: dict[str, Any]) -> Strategy:
    from ttc.strategies import BestOfN

    p = _sampling(kw)
    s = BestOfN(n=kw.pop("n", 8), params=p)
    s.name = "majority"
    return s


def _rule(kw: dict[str, Any]) -> Any:
    from ttc.strategies import stopping as st

    name = kw.pop("rule", "beta")
    mx = kw.get("max")
    lo = min(4, mx) if mx else 4  # a budget below the rule's minimum caps the minimum too
    if name == "beta":
        return st.BetaRule(threshold=kw.pop("threshold", 0.95), min_samples=lo, max_samples=mx)
    if name == "dirichlet":
        return st.DirichletRule(threshold=kw.pop("threshold", 0.95), min_samples=lo, max_samples=mx)
    if name == "esc":
        L = int(mx or 40)
        return st.ESCWindow(w=min(kw.pop("w", 5), L), L=L)
    if name in ("fixed", "fixed_n"):
        return st.FixedN(kw.pop("n", mx or 8))
    return st.CertaindexEntropy(threshold=kw.pop("threshold", 0.7), max_samples=mx)


def _sc(kw: dict[str, Any]) -> Strategy:
    from ttc.strategies.self_consistency import SelfConsistency

    p = _sampling(kw)
    rule_name = kw.get("rule", "beta")
    rule = _rule(kw)
    mx = kw.pop("max", None)
    batch = kw.pop("batch", None)
    if kw:
        raise ValueError(f"option(s) {sorted(kw)} do not apply with rule={rule_name}")
    return SelfConsistency(rule, max_samples=mx, params=p, batch_sizes=(batch,) if batch else None)


def _deepconf(kw: dict[str, Any]) -> Strategy:
    from ttc.strategies.deepconf import DeepConf

    p = _sampling(kw)
    mode = kw.pop("mode", "offline")
    if "max" in kw and "n" in kw:
        raise ValueError("give max or n (the same option), not both")
    mx = kw.pop("max", kw.pop("n", 16))
    n_init = kw.pop("n_init", mx if mode == "offline" else min(16, mx))
    return DeepConf(mode, max_traces=mx, n_init=min(n_init, mx), eta=kw.pop("eta", 90.0),
                    window=kw.pop("window", 16), params=p,
                    **{k: kw.pop(k) for k in ("tau", "metric", "top_k", "parallelism") if k in kw})


def _rpc(kw: dict[str, Any]) -> Strategy:
    from ttc.strategies.rpc import PerplexityConsistency

    p = _sampling(kw)
    return PerplexityConsistency(n=kw.pop("n", 16), params=p, prune=kw.pop("prune", True))


@dataclass(frozen=True)
class StrategyEntry:
    """A registered strategy: its builder (typed options -> Strategy), its options, and the
    module it needs (imported lazily: a missing module only fails when asked for)."""

    build: Callable[[dict[str, Any]], Strategy]
    options: dict[str, Opt]
    module: str


_MAJORITY = StrategyEntry(_majority, {**SAMPLING, "n": _count()}, "ttc.strategies.simple")
_SC = StrategyEntry(
    _sc,
    {**SAMPLING, "rule": Opt("str", choices=RULES), "threshold": Opt("float"), "max": _count(),
     "batch": _count(), "w": _count(), "n": _count()},
    "ttc.strategies.self_consistency",
)

#: name -> entry. Aliases share an entry.
STRATEGIES: dict[str, StrategyEntry] = {
    "greedy": StrategyEntry(_greedy, {"max_tokens": SAMPLING["max_tokens"]}, "ttc.strategies.simple"),
    "majority": _MAJORITY,
    "best_of_n": _MAJORITY,
    "sc": _SC,
    "self_consistency": _SC,
    "deepconf": StrategyEntry(
        _deepconf,
        {**SAMPLING, "mode": Opt("str", choices=("offline", "online")), "max": _count(), "n": _count(),
         "n_init": _count(), "eta": Opt("float", lo=0.0, hi=100.0, lo_open=True), "window": _count(),
         "tau": Opt("float", lo=0.0, hi=1.0, lo_open=True), "metric": Opt("str", choices=DEEPCONF_METRICS),
         "top_k": Opt("int", lo=0, hi=20), "parallelism": _count()},
        "ttc.strategies.deepconf",
    ),
    "rpc": StrategyEntry(_rpc, {**SAMPLING, "n": _count(), "prune": Opt("bool")}, "ttc.strategies.rpc"),
}


def split_spec(spec: str) -> tuple[str, str]:
    if not isinstance(spec, str):
        raise TypeError(f"strategy: expected a spec string, got {type(spec).__name__}")
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"strategy: empty strategy name in {spec!r}; known: {sorted(STRATEGIES)}")
    if name not in STRATEGIES:
        raise ValueError(f"strategy: unknown {name!r}; known: {sorted(STRATEGIES)}")
    return name, rest


def strategy_options(spec: str, budget: int | None = None) -> tuple[str, dict[str, Any]]:
    """(name, typed options) of a strategy spec; raises ``ValueError`` naming the key."""
    name, rest = split_spec(spec)
    what = f"strategy {name!r}"
    return name, typed_options(parse_kv(rest, what), STRATEGIES[name].options, what, budget=budget, spec=spec)


def build_strategy(spec: str, budget: int | None = None) -> Strategy:
    """A strategy from ``NAME[:key=value,...]``; values ``B`` become ``budget``."""
    name, kw = strategy_options(spec, budget)
    try:
        s = STRATEGIES[name].build(kw)
    except ImportError as e:
        raise ValueError(f"strategy {name!r}: not available ({e})") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"strategy {name!r}: {_one_line(e)}") from None
    if kw:
        raise ValueError(f"strategy {name!r}: option(s) {sorted(kw)} do not apply")
    return s


def canonical_spec(spec: str) -> str:
    """A spec written one way: alias resolved (``best_of_n`` -> ``majority``,
    ``self_consistency`` -> ``sc``), options sorted, values in their parsed form. Two specs
    with the same canonical form build the same strategy."""
    name, rest = split_spec(spec)
    entry = STRATEGIES[name]
    name = next(n for n, e in STRATEGIES.items() if e is entry)
    raw = parse_kv(rest, f"strategy {name!r}")
    kw = {k: (v if v == "B" else entry.options[k].parse(v, k)) if k in entry.options else v for k, v in raw.items()}
    return name + "".join((":" if i == 0 else ",") + f"{k}={kw[k]}" for i, k in enumerate(sorted(kw)))


def available_strategies() -> list[str]:
    """The registered names whose modules import."""
    import importlib

    ok = []
    for name, entry in STRATEGIES.items():
        try:
            importlib.import_module(entry.module)
            ok.append(name)
        except Exception:  # noqa: BLE001 - a broken optional module only hides its strategy
            pass
    return ok


# -- budgets -----------------------------------------------------------------------------------
BUDGET_OPTIONS: dict[str, Opt] = {
    "completion_tokens": Opt("int", lo=1, hi=10**12),
    "total_tokens": Opt("int", lo=1, hi=10**12),
    "generations": Opt("int", lo=1, hi=10**9),
    "calls": Opt("int", lo=1, hi=10**9),
    "wall_seconds": Opt("float", lo=0.0, hi=10**7, lo_open=True),
}


def parse_budget(text: str | None, what: str = "--budget") -> Budget:
    """A :class:`~ttc.budget.Budget` from ``key=value,...`` (None: no limits; an empty
    string is an error rather than a silent "unlimited")."""
    if text is None:
        return Budget()
    if not text.strip():
        raise ValueError(f"{what}: empty; omit it for no limits, or give e.g. completion_tokens=2000,calls=16")
    return Budget(**typed_options(parse_kv(text, what), BUDGET_OPTIONS, what))


# -- datasets ----------------------------------------------------------------------------------
LOADERS: dict[str, Callable[[str], list[ds.Example]]] = {
    "gsm8k": ds.load_gsm8k, "math500": ds.load_math500, "mc": ds.load_multiple_choice, "jsonl": ds.load_jsonl,
}
DATASET_FORMS = "FILE, gsm8k:FILE, math500:FILE, mc:FILE, jsonl:FILE or generator:NAME:N[:SEED[:key=value,...]]"


def generator_options(name: str) -> dict[str, Opt]:
    """The options of generator ``name``: its keyword parameters besides ``n`` and ``seed``
    (an ``int`` parameter takes an integer; a ``tuple[int, ...]`` one takes one integer)."""
    fn = ds.GENERATORS[name]
    hints = typing.get_type_hints(fn)
    out: dict[str, Opt] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("n", "seed"):
            continue
        hint = hints.get(p.name)
        if hint is float:
            out[p.name] = Opt("float")
        elif hint is bool:
            out[p.name] = Opt("bool")
        elif hint is str:
            out[p.name] = Opt("str")
        else:  # int, tuple[int, ...]
            out[p.name] = Opt("int")
    return out


def _generator(spec: str) -> list[ds.Example]:
    parts = spec.split(":", 4)
    if len(parts) < 3 or not parts[2].strip():
        raise ValueError(f"dataset: expected generator:NAME:N[:SEED[:key=value,...]], got {spec!r}")
    name = parts[1].strip()
    if name not in ds.GENERATORS:
        raise ValueError(f"dataset: unknown generator {name!r}; known: {sorted(ds.GENERATORS)}")
    what = f"dataset generator {name!r}"
    n = int(Opt("int", lo=1, hi=MAX_COUNT).parse(parts[2].strip(), f"{what}: N"))
    seed = int(Opt("int", lo=0).parse(parts[3].strip(), f"{what}: SEED")) if len(parts) > 3 and parts[3].strip() else 0
    schema = generator_options(name)
    kw = typed_options(parse_kv(parts[4], what), schema, what) if len(parts) > 4 else {}
    hints = typing.get_type_hints(ds.GENERATORS[name])
    for k, v in kw.items():
        if typing.get_origin(hints.get(k)) is tuple:
            kw[k] = (v,)
    try:
        return ds.GENERATORS[name](n, seed=seed, **kw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: {_one_line(e)}") from None


def _check_file(path: str, what: str) -> None:
    p = Path(path)
    if not path.strip():
        raise ValueError(f"{what}: empty file name (expected {DATASET_FORMS})")
    if not p.exists():
        raise ValueError(f"{what}: no such file {path!r} (expected {DATASET_FORMS})")
    if p.is_dir():
        raise ValueError(f"{what}: {path!r} is a directory, not a JSONL file")


def load_dataset(spec: str) -> list[ds.Example]:
    """Examples from a dataset spec (see the module docstring). Every error is a
    ``ValueError`` naming the spec (and, for files, the file and line); an empty dataset
    and duplicate ids are errors."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"dataset: empty spec (expected {DATASET_FORMS})")
    if spec.startswith("generator:"):
        exs = _generator(spec)
        where = spec
    else:
        head, _, rest = spec.partition(":")
        if rest and head in LOADERS:
            _check_file(rest, f"dataset {head}")
            exs, where = LOADERS[head](rest), rest
        else:
            _check_file(spec, "dataset")
            exs, where = ds.load_jsonl(spec), spec
    if not exs:
        raise ValueError(f"dataset {where}: no examples")
    ds.check_unique_ids(exs, where)
    return exs


def dataset_hash(examples: Iterable[ds.Example]) -> str:
    """SHA-256 of the examples' content (id, question, answer, every field): the same
    examples give the same hash whichever file or generator they came from."""
    h = hashlib.sha256()
    for e in examples:
        h.update(e.model_dump_json().encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


# -- helpers ---------------------------------------------------------------------------------------
def _one_line(e: BaseException) -> str:
    """An exception's message on one line (pydantic lists its errors on several)."""
    errors = getattr(e, "errors", None)
    if callable(errors):
        try:
            items = errors()
        except Exception:  # noqa: BLE001 - not a pydantic error after all
            items = None
        if items:
            return "; ".join(
                f"{'.'.join(str(x) for x in it.get('loc', ())) or 'value'}: {it.get('msg', '')}"
                + (f" (got {it['input']!r})" if "input" in it and not isinstance(it["input"], dict) else "")
                for it in items
            )
    return " ".join(str(e).split())


def one_line(e: BaseException) -> str:
    """Public alias of the one-line formatter (the CLI prints every error with it)."""
    return _one_line(e)


__all__: Sequence[str] = (
    "STRATEGIES", "Opt", "available_strategies", "build_strategy", "canonical_spec", "dataset_hash",
    "load_dataset", "parse_budget", "parse_kv", "strategy_options", "typed_options",
)
