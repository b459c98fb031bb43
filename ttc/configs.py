"""Configs from constructor signatures: the typed, strict machinery under :mod:`ttc.registry`.

A constructor's parameters and type hints become a pydantic model (``extra="forbid"``,
``strict=True``: ``"8"`` is not an integer, ``1`` is not a boolean) whose values are plain
data (what JSON, YAML and TOML hold), and a *spec* per parameter that turns such data
back into the constructor's arguments. The choices:

- **Parts** (a parameter whose hint is a registered base class: a stopping rule, a
  verifier, a strategy, ...) are given as ``{"name": REGISTERED_NAME, **its config}`` or,
  where the hint admits no plain string, just as ``"NAME"``; they are built through the
  registry, recursively, with error paths such as ``rule.threshold``.
- **Values** (pydantic models and dataclasses such as ``SamplingParams`` or
  ``StepPolicy``) are given as dicts of their fields, checked by a strict mirror model
  and built by the real type (whose own validators then run).
- **Sequences** are lists (a ``tuple`` hint gets a tuple); **mappings** are dicts.
- What cannot be written as data (a function, an engine, an array, a protocol) is not
  configurable: the parameter may only be left out or given as ``None``, and giving
  anything else is an error naming it.

Text values (spec strings, ``key=value``) are parsed by type with the strict rules of
:class:`Opt`: integers (not ``8.0``), finite numbers, booleans as exactly
``true/false/1/0/yes/no``, ``none`` for an optional value, part names for parts, and
``a|b|c`` for a list. An integer written ``B`` is the replay budget.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo

from .checks import parse_bool

#: The largest number of samples/questions a spec may ask for: above it a spec is more
#: likely a typo than a plan, and nothing is allocated per requested item anyway.
MAX_COUNT = 1_000_000
MAX_TOKENS = 10_000_000

STRICT = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)


class ConfigError(ValueError):
    """A config or spec that does not build; ``key`` is the dotted path of the key at
    fault (``""`` for the whole config)."""

    def __init__(self, message: str, key: str = ""):
        super().__init__(message)
        self.key = key


class ConfigTypeError(ConfigError, TypeError):
    """A value of the wrong type (both a ``ValueError`` and a ``TypeError``)."""


# -- text values ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Opt:
    """The type and range of one text option."""

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
            raise ConfigError(f"{what}: expected key=value, got {part!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        if not k:
            raise ConfigError(f"{what}: empty key in {part!r}")
        if not v:
            raise ConfigError(f"{what}: {k}: empty value", k)
        if k in out:
            raise ConfigError(f"{what}: {k} given twice ({out[k]!r} and {v!r})", k)
        out[k] = v
    return out


def parse_opt(opt: Opt, text: str, where: str, budget: int | None, spec: str = "") -> Any:
    """``text`` by ``opt``; ``B`` (integer options only) is ``budget``."""
    if text == "B":
        if opt.kind != "int":
            raise ConfigError(f"{where}: B stands for the budget (an integer); this is {opt.describe()}")
        if budget is None:
            raise ConfigError(f"{where}: {spec or 'the spec'!r} uses B but no budget grid is given (B is for ttc replay)")
        return int(opt.check(budget, where))
    return opt.parse(text, where)


def typed_options(
    raw: dict[str, str], schema: dict[str, Opt], what: str, *, budget: int | None = None, spec: str = ""
) -> dict[str, Any]:
    """Check ``raw`` against ``schema`` and convert each value; ``B`` (integer options
    only) becomes ``budget``."""
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise ConfigError(f"{what}: unknown option(s) {unknown}; known: {sorted(schema)}", unknown[0])
    return {k: parse_opt(schema[k], v, f"{what}: {k}", budget, spec) for k, v in raw.items()}


def one_line(e: BaseException) -> str:
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


def validation_error(e: ValidationError, prefix: str = "") -> ConfigError:
    """One :class:`ConfigError` line from a pydantic error, each problem led by its dotted
    key (under ``prefix``); a wrong type is a :class:`ConfigTypeError`."""
    items = e.errors()
    parts = []
    for it in items:
        key = ".".join(str(x) for x in (*([prefix] if prefix else []), *it.get("loc", ()))) or "value"
        got = f" (got {it['input']!r:.80})" if "input" in it and not isinstance(it["input"], (dict, BaseModel)) else ""
        msg = str(it.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{key}: {msg}{got}")
    first = items[0] if items else {}
    typ = str(first.get("type", ""))
    cls = ConfigTypeError if typ.endswith(("_type", "_parsing")) or typ in ("is_instance_of", "model_type") \
        else ConfigError
    key = ".".join(str(x) for x in (*([prefix] if prefix else []), *first.get("loc", ())))
    return cls("; ".join(parts), key)


# -- specs of parameters ----------------------------------------------------------------------
BuildPart = Callable[[tuple[str, ...], dict[str, Any], str], Any]


class Spec:
    """How one parameter is written as data and built back."""

    def annotation(self) -> Any:
        raise NotImplementedError

    def materialize(self, value: Any, path: str, build: BuildPart) -> Any:
        return value

    def from_text(self, text: str, where: str, budget: int | None) -> Any:
        raise ConfigError(f"{where}: cannot be given in a spec string; use a config file (or dotted keys)",
                          where.rsplit(": ", 1)[-1])

    def configurable(self) -> bool:
        return True


@dataclass(frozen=True)
class Scalar(Spec):
    hint: Any  # int, float, bool, str, a Literal, or one of those with pydantic constraints

    def annotation(self) -> Any:
        return self.hint

    def opt(self) -> Opt:
        base = typing.get_args(self.hint)[0] if typing.get_origin(self.hint) is Annotated else self.hint
        if typing.get_origin(base) is Literal:
            values = typing.get_args(base)
            if all(isinstance(v, str) for v in values):
                return Opt("str", choices=tuple(values))
            base = type(values[0])
        kind = {int: "int", float: "float", bool: "bool", str: "str"}.get(base, "str")
        return Opt(kind)  # type: ignore[arg-type]

    def from_text(self, text: str, where: str, budget: int | None) -> Any:
        value = parse_opt(self.opt(), text, where, budget)
        base = typing.get_args(self.hint)[0] if typing.get_origin(self.hint) is Annotated else self.hint
        if typing.get_origin(base) is Literal and not isinstance(value, str):
            if value not in typing.get_args(base):
                raise ConfigError(f"{where}: expected one of {list(typing.get_args(base))}, got {text!r}")
        return value


@dataclass(frozen=True)
class AnyValue(Spec):
    def annotation(self) -> Any:
        return Any

    def from_text(self, text: str, where: str, budget: int | None) -> Any:
        return text


@dataclass(frozen=True)
class Fixed(Spec):
    """Not configurable (a function, an engine, ...): only ``None`` may be given."""

    what: str

    def annotation(self) -> Any:
        what = self.what

        def only_none(v: Any) -> Any:
            if v is not None:
                raise ValueError(f"{what} cannot be given in a config; leave it out (or set it in Python)")
            return v

        return Annotated[Any, AfterValidator(only_none)]

    def configurable(self) -> bool:
        return False

    def from_text(self, text: str, where: str, budget: int | None) -> Any:
        if text.lower() in ("none", "null"):
            return None
        raise ConfigError(f"{where}: {self.what} cannot be given in a spec", where.rsplit(": ", 1)[-1])


def _as_part(v: Any) -> Any:
    return {"name": v} if isinstance(v, str) else v


def _named(v: Any) -> Any:
    if not isinstance(v.get("name"), str) or not v["name"]:
        raise ValueError("a part is {'name': NAME, ...options}: 'name' is missing")
    return v


@dataclass(frozen=True)
class Part(Spec):
    """A registered part (kinds: the registry kinds it may be); ``{"name": ..., ...}``."""

    kinds: tuple[str, ...]
    bare_name: bool = True  # a plain string is a part name (no str alternative in the hint)

    def annotation(self) -> Any:
        if self.bare_name:
            return Annotated[dict[str, Any], BeforeValidator(_as_part), AfterValidator(_named)]
        return Annotated[dict[str, Any], AfterValidator(_named)]

    def materialize(self, value: Any, path: str, build: BuildPart) -> Any:
        return build(self.kinds, dict(value), path)

    def from_text(self, text: str, where: str, budget: int | None) -> Any:
        return {"name": text}


@dataclass(frozen=True)
class ListOf(Spec):
    item: Spec
    as_tuple: bool = False

    def annotation(self) -> Any:
        return list[self.item.annotation()]  # type: ignore[misc]

    def materialize(self, value: Any, path: str, build: BuildPart) -> Any:
        out = [self.item.materialize(v, f"{path}[{i}]", build) for i, v in enumerate(value)]
        return tuple(out) if self.as_tuple else out

    def from_text(self, text: str, where: str, budget: int | None) -> Any:
        return [self.item.from_text(t.strip(), where, budget) for t in text.split("|")]


@dataclass(frozen=True)
class DictOf(Spec):
    key: Any
    item: Spec

    def annotation(self) -> Any:
        return dict[self.key, self.item.annotation()]  # type: ignore[name-defined]

    def materialize(self, value: Any, path: str, build: BuildPart) -> Any:
        return {k: self.item.materialize(v, f"{path}.{k}", build) for k, v in value.items()}


@dataclass(frozen=True)
class Value(Spec):
    """A pydantic model or a dataclass, given as a dict of its fields."""

    real: type
    fields: tuple[tuple[str, Spec, Any], ...]  # (name, spec, default or dataclasses.MISSING)
    model: type[BaseModel]

    def annotation(self) -> Any:
        return self.model

    def materialize(self, value: Any, path: str, build: BuildPart) -> Any:
        specs = {n: s for n, s, _ in self.fields}
        kw = {k: specs[k].materialize(getattr(value, k), f"{path}.{k}", build) for k in value.model_fields_set}
        try:
            if issubclass(self.real, BaseModel):
                return self.real.model_validate(kw)
            return self.real(**kw)
        except ValidationError as e:
            raise validation_error(e, path) from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{path}: {one_line(e)}", path) from None

    def field(self, name: str) -> Spec | None:
        return next((s for n, s, _ in self.fields if n == name), None)


@dataclass(frozen=True)
class OneOf(Spec):
    members: tuple[Spec, ...]
    optional: bool

    def annotation(self) -> Any:
        anns = tuple(m.annotation() for m in self.members) + ((type(None),) if self.optional else ())
        return anns[0] if len(anns) == 1 else Union[anns]  # noqa: UP007

    def materialize(self, value: Any, path: str, build: BuildPart) -> Any:
        if value is None:
            return None
        for m in self.members:
            if _matches(m, value):
                return m.materialize(value, path, build)
        return value

    def from_text(self, text: str, where: str, budget: int | None) -> Any:
        if self.optional and text.lower() in ("none", "null"):
            return None
        order = sorted(self.members, key=lambda m: (not isinstance(m, Scalar), not isinstance(m, ListOf)))
        errors = []
        for m in order:
            try:
                return m.from_text(text, where, budget)
            except (ValueError, TypeError) as e:
                errors.append(e)
        raise errors[0] if errors else ConfigError(f"{where}: cannot be given in a spec")

    def parts(self) -> list[Part]:
        return [m for m in self.members if isinstance(m, Part)]


def _matches(spec: Spec, value: Any) -> bool:
    if isinstance(spec, Part):
        return isinstance(value, dict) and "name" in value
    if isinstance(spec, Value):
        return isinstance(value, spec.model)
    if isinstance(spec, ListOf):
        return isinstance(value, list)
    if isinstance(spec, DictOf):
        return isinstance(value, dict)
    return not isinstance(value, (dict, list, BaseModel))


# -- hints -> specs -----------------------------------------------------------------------------
PartKind = Callable[[type], "str | None"]
_SEQUENCES = (list, tuple, set, frozenset, cabc.Sequence, cabc.Set, cabc.Collection, cabc.Iterable)
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)
_MIRRORS: dict[tuple[type, tuple[tuple[str, str], ...]], Value] = {}


class Hints:
    """Turns type hints into :class:`Spec` trees; ``part_kind`` says which classes are
    registered parts (and of which kind), ``overrides`` gives field hints by type for
    value types whose own hints are too loose (e.g. ``Route.strategy: Any``)."""

    def __init__(self, part_kind: PartKind, overrides: dict[type, dict[str, Any]] | None = None,
                 specs: dict[Any, Spec] | None = None):
        self.part_kind = part_kind
        self.overrides = overrides or {}
        self.specs = specs or {}  # hints (a protocol, a callable alias) that stand for registered parts

    def spec(self, hint: Any) -> Spec:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if isinstance(hint, Spec):
            return hint
        try:
            known = self.specs.get(hint)
        except TypeError:  # an unhashable hint
            known = None
        if known is not None:
            return known
        if hint is Any or hint is object:
            return AnyValue()
        if origin is Annotated:
            inner = self.spec(args[0])
            return Scalar(hint) if isinstance(inner, Scalar) else inner
        if origin in (Union, types.UnionType):
            return self._union(args)
        if origin is Literal or hint in (int, float, bool, str):
            return Scalar(hint)
        if origin in _SEQUENCES or hint in _SEQUENCES:
            item = args[0] if args and not (origin is tuple and len(args) > 1 and args[1] is not Ellipsis) else (
                args[0] if args else Any)
            inner = self.spec(item)
            return ListOf(inner, as_tuple=origin is tuple or hint is tuple) if inner.configurable() else Fixed(
                "a sequence of things that are not data")
        if origin in _MAPPINGS or hint in _MAPPINGS:
            key, val = (args + (Any, Any))[:2] if args else (Any, Any)
            inner = self.spec(val)
            if not inner.configurable() or key not in (str, int, Any):
                return Fixed("a mapping of things that are not data")
            return DictOf(str if key is Any else key, inner)
        if origin is not None and origin in (cabc.Callable,) or hint is cabc.Callable:
            return Fixed("a function")
        if isinstance(hint, type):
            return self._class(hint)
        return Fixed(f"a {getattr(hint, '__name__', hint)!s}")

    def _union(self, args: tuple[Any, ...]) -> Spec:
        optional = type(None) in args
        members = [self.spec(a) for a in args if a is not type(None)]
        keep = [m for m in members if m.configurable()]
        if not keep:
            return Fixed(next((m.what for m in members if isinstance(m, Fixed)), "not data"))
        has_str = any(isinstance(m, Scalar) and m.opt().kind == "str" and not m.opt().choices for m in keep)
        keep = [Part(m.kinds, bare_name=not has_str) if isinstance(m, Part) else m for m in keep]
        parts = [m for m in keep if isinstance(m, Part)]
        if len(parts) > 1:  # several part kinds: one part of any of them
            keep = [m for m in keep if not isinstance(m, Part)] + [
                Part(tuple(k for p in parts for k in p.kinds), bare_name=not has_str)]
        if len(keep) == 1 and not optional:
            return keep[0]
        return OneOf(tuple(keep), optional)

    def _class(self, cls: type) -> Spec:
        kind = self.part_kind(cls)
        if kind is not None:
            return Part((kind,))
        if (issubclass(cls, BaseModel) or dataclasses.is_dataclass(cls)) and not _is_protocol(cls):
            return self.value(cls)
        return Fixed(f"a {cls.__name__}")

    def value(self, cls: type) -> Spec:
        key = (cls, tuple(sorted((k, repr(v)) for k, v in self.overrides.get(cls, {}).items())))
        if key in _MIRRORS:
            return _MIRRORS[key]
        over = self.overrides.get(cls, {})
        fields: list[tuple[str, Spec, Any, FieldInfo | None]] = []
        if issubclass(cls, BaseModel):
            for name, fi in cls.model_fields.items():
                default = dataclasses.MISSING if fi.is_required() else fi
                fields.append((name, self.spec(over.get(name, fi.annotation)), default, fi))
        else:
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                if not f.init:
                    continue
                default: Any = f.default if f.default is not dataclasses.MISSING else (
                    _Factory(f.default_factory) if f.default_factory is not dataclasses.MISSING
                    else dataclasses.MISSING)
                fields.append((f.name, self.spec(over.get(f.name, hints.get(f.name, Any))), default, None))
        if any(not s.configurable() and d is dataclasses.MISSING for _, s, d, _ in fields):
            return Fixed(f"a {cls.__name__} (it holds a value that is not data)")
        model = create_model(  # type: ignore[call-overload]
            f"{cls.__name__}Config", __config__=STRICT,
            **{n: _field(s, d, fi) for n, s, d, fi in fields},
        )
        spec = Value(cls, tuple((n, s, d) for n, s, d, _ in fields), model)
        _MIRRORS[key] = spec
        return spec


@dataclass(frozen=True)
class _Factory:
    fn: Callable[[], Any]


def _is_protocol(cls: type) -> bool:
    return bool(getattr(cls, "_is_protocol", False))


def _field(spec: Spec, default: Any, fi: FieldInfo | None) -> tuple[Any, Any]:
    ann = spec.annotation()
    if fi is not None and isinstance(spec, Scalar) and fi.metadata:
        ann = Annotated[(ann, *fi.metadata)]
    if default is dataclasses.MISSING:
        return ann, ...
    if isinstance(default, FieldInfo):
        if default.default_factory is not None:
            return ann, FieldInfo(annotation=ann, default_factory=default.default_factory, description=default.description)
        return ann, FieldInfo(annotation=ann, default=default.default, description=default.description)
    if isinstance(default, _Factory):  # a dataclass default_factory
        return ann, FieldInfo(annotation=ann, default_factory=default.fn)
    return ann, FieldInfo(annotation=ann, default=_data_default(default))


def _data_default(default: Any) -> Any:
    """A default shown in the config model (and its schema): data as is, tuples as lists,
    anything else as None (the constructor's own default applies when a key is left out)."""
    if default is None or isinstance(default, (bool, int, float, str)):
        return default
    if isinstance(default, (list, tuple)) and all(isinstance(x, (bool, int, float, str)) for x in default):
        return list(default)
    return None


# -- signatures -> config models ------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    name: str
    spec: Spec
    default: Any  # inspect.Parameter.empty when required


def signature_params(fn: Callable[..., Any], hints: Hints, *, skip_first: bool,
                     overrides: dict[str, Any] | None = None, kwargs_from: Callable[..., Any] | None = None,
                     drop: tuple[str, ...] = (), hint_sources: tuple[Callable[..., Any], ...] = ()
                     ) -> list[Param]:
    """The parameters of ``fn`` as :class:`Param` (hints resolved in ``fn``'s module); a
    ``**kw`` takes the parameters of ``kwargs_from`` (those ``fn`` does not name itself);
    ``drop``: parameters left out (set by ``fn`` itself). An unannotated parameter takes the
    hint of the parameter of the same name in ``kwargs_from`` or ``hint_sources`` (the
    parents' constructors it stands for)."""
    fn = inspect.unwrap(fn)
    sig = inspect.signature(fn)
    th = _type_hints(fn)
    for source in (*hint_sources, *((kwargs_from,) if kwargs_from is not None else ())):
        th = {**_type_hints(inspect.unwrap(source)), **th}
    overrides = overrides or {}
    out: list[Param] = []
    own: set[str] = set()
    for i, p in enumerate(sig.parameters.values()):
        if skip_first and i == 0:
            continue
        own.add(p.name)
        if p.kind is p.VAR_POSITIONAL or p.name in drop:
            continue
        if p.kind is p.VAR_KEYWORD:
            if kwargs_from is not None:
                out += [q for q in signature_params(kwargs_from, hints, skip_first=True, overrides=overrides,
                                                    drop=drop) if q.name not in own]
            continue
        hint = overrides.get(p.name, th.get(p.name, Any))
        out.append(Param(p.name, hints.spec(hint), p.default))
    unique: dict[str, Param] = {}
    for q in out:
        unique.setdefault(q.name, q)
    return list(unique.values())


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # noqa: BLE001 - hints that do not resolve are treated as Any
        return {}


def config_model(name: str, params: list[Param]) -> type[BaseModel]:
    """The strict pydantic model of a parameter list."""
    fields = {}
    for p in params:
        default = dataclasses.MISSING if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = _field(p.spec, default, None)
    return create_model(f"{name}Config", __config__=STRICT, **fields)  # type: ignore[call-overload]
