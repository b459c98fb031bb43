"""Text specs as written on the command line: strategies (``--strategy``), datasets
(``--dataset``) and budgets (``--budget``).

Strategies are built by the registry (:func:`ttc.registry.build_from_spec`): every
registered name, its aliases, dotted keys into parts, and the historical keys of the
first command-line names (``sc:rule=beta,max=16``). The ``key=value`` parsing is the
registry's (:mod:`ttc.configs`), strict, and every error is one ``ValueError`` line
naming the spec and the key:

- every key must be known for what it configures, and may appear once;
- every value has a type: integers (``8``; not ``8.0``), numbers (finite: no
  ``nan``/``inf``), booleans (exactly ``true/false/1/0/yes/no``), or one of a fixed
  set of words; and a range (e.g. ``temperature`` in [0, 2], as the OpenAI API
  documents it);
- an empty key or value, or a part without ``=``, is an error.

In ``ttc replay`` an integer value written ``B`` is replaced by each budget of the grid.

Dataset specs: a ttc JSONL file; ``gsm8k:FILE``, ``math500:FILE``, ``aime:FILE``,
``amc:FILE`` (each with its prompt and grader), ``mc:FILE``, ``jsonl:FILE``;
``hf:NAME[:CONFIG]:SPLIT`` for the Hugging Face hub (``hf:openai/gsm8k:main:test``,
``hf:HuggingFaceH4/MATH-500:test``; the ``hf`` extra); or ``generator:NAME:N[:SEED[:key=value,...]]`` for the generators of
:mod:`ttc.bench.datasets`, whose options and their types come from the generator's signature.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ttc import registry
from ttc.budget import Budget
from ttc.configs import MAX_COUNT, MAX_TOKENS, Opt, one_line, parse_kv, typed_options

from . import datasets as ds


# -- strategies ---------------------------------------------------------------------------------
def strategy_entry(spec: str) -> registry.Entry:
    """The registry entry a strategy spec names (``ValueError`` if none)."""
    if not isinstance(spec, str):
        raise TypeError(f"strategy: expected a spec string, got {type(spec).__name__}")
    return registry.lookup(spec.partition(":")[0].strip(), registry.RUNNABLE)


def strategy_options(spec: str, budget: int | None = None) -> tuple[str, dict[str, Any]]:
    """(primary name, config) of a strategy spec; raises ``ValueError`` naming the key."""
    entry, cfg = registry.spec_config(spec, budget=budget)
    return entry.name, cfg


def build_strategy(spec: str, budget: int | None = None) -> Any:
    """A strategy (or batch strategy) from ``NAME[:key=value,...]``; values ``B`` become
    ``budget``."""
    return registry.build_from_spec(spec, budget=budget)


def with_extractor(spec: str, extractor: str | None) -> str:
    """``spec`` reading answers with ``extractor`` (a name in :data:`ttc.answers.EXTRACTORS`,
    a dataset's :attr:`~ttc.bench.datasets.Benchmark.extractor`) when the spec names none
    and its strategy takes one; else ``spec`` as it is (``default`` changes nothing)."""
    if extractor in (None, "default"):
        return spec
    name, _, rest = spec.partition(":")
    if "extractor" in parse_kv(rest, f"strategy {name.strip()!r}") or not _takes_extractor(strategy_entry(spec)):
        return spec
    return f"{name}:{rest},extractor={extractor}" if rest.strip() else f"{name}:extractor={extractor}"


def with_extractor_config(described: dict[str, Any], extractor: str | None) -> dict[str, Any]:
    """A described strategy (``{"name": ..., ...}``) reading answers with ``extractor``,
    as :func:`with_extractor` does for a spec."""
    if extractor in (None, "default") or "extractor" in described or \
            not _takes_extractor(registry.lookup(described["name"], registry.RUNNABLE)):
        return described
    return {**described, "extractor": extractor}


def _takes_extractor(entry: registry.Entry) -> bool:
    return any(p.name == "extractor" for p in entry.params())


def canonical_spec(spec: str, budget: int | None = None) -> str:
    """The strategy a spec builds, as canonical JSON (its ``describe()``, keys sorted): two
    specs with the same canonical form build equal strategies (``best_of_n:n=2`` and
    ``majority:n=2``; ``temperature=1`` and ``temperature=1.0``)."""
    return json.dumps(build_strategy(spec, budget).describe(), sort_keys=True)


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
    "gsm8k": ds.load_gsm8k, "math500": ds.load_math500, "aime": ds.load_aime, "amc": ds.load_amc,
    "mc": ds.load_multiple_choice, "jsonl": ds.load_jsonl,
}
DATASET_FORMS = ("FILE, gsm8k:FILE, math500:FILE, aime:FILE, amc:FILE, mc:FILE, jsonl:FILE, "
                 "hf:NAME[:CONFIG]:SPLIT or generator:NAME:N[:SEED[:key=value,...]]")


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


def parse_hf(spec: str) -> tuple[str, str | None, str]:
    """(name, config, split) of ``hf:NAME[:CONFIG]:SPLIT``."""
    parts = [p.strip() for p in spec.split(":")[1:]]
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"dataset: expected hf:NAME[:CONFIG]:SPLIT (e.g. hf:openai/gsm8k:main:test), got {spec!r}")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else (parts[0], None, parts[1])


def load_benchmark(spec: str) -> ds.Benchmark:
    """A :class:`~ttc.bench.datasets.Benchmark` from a dataset spec (see the module
    docstring): GSM8K, MATH-500, AIME and AMC files and ``hf:`` datasets come with their
    prompt and grader, the other forms with none and ttc's default grading. Every error
    is a ``ValueError`` naming the spec (and, for files, the file, line and field); an
    empty dataset and duplicate ids are errors."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"dataset: empty spec (expected {DATASET_FORMS})")
    head, _, rest = spec.partition(":")
    if spec.startswith("generator:"):
        bench = ds.Benchmark(spec, _generator(spec))
    elif head == "hf":
        name, config, split = parse_hf(spec)
        bench = ds.load_hf(name, split, config)
    elif rest and head in LOADERS:
        _check_file(rest, f"dataset {head}")
        exs = LOADERS[head](rest)
        bench = ds.benchmark(head, exs, name=rest) if head in ds.FORMATS else ds.Benchmark(rest, exs)
    else:
        _check_file(spec, "dataset")
        bench = ds.Benchmark(spec, ds.load_jsonl(spec))
    if not bench.examples:
        raise ValueError(f"dataset {bench.name}: no examples")
    ds.check_unique_ids(bench.examples, bench.name)
    return bench


def load_dataset(spec: str) -> list[ds.Example]:
    """The examples of :func:`load_benchmark`."""
    return load_benchmark(spec).examples


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
    return one_line(e)


__all__: Sequence[str] = (
    "MAX_COUNT", "MAX_TOKENS", "Opt", "build_strategy", "canonical_spec", "with_extractor",
    "with_extractor_config", "dataset_hash", "load_benchmark",
    "load_dataset", "parse_hf",
    "parse_budget", "parse_kv", "strategy_entry", "strategy_options", "typed_options", "one_line",
)
