"""The strategies a server offers, by model id.

A model id names a configured strategy (``--config FILE``: each label of the YAML/TOML
file of :func:`ttc.registry.load_config`; without one, :data:`DEFAULT_SPECS`), plus
``passthrough`` (:class:`Passthrough`: one plain engine call with the request's own sampling
parameters, the server as a metered proxy). With ``allow_specs`` a request may name an
ad-hoc strategy in ``ttc.strategy`` (``"sc:rule=beta,max=16"``), built through
:func:`ttc.registry.build_from_spec`.

One strategy instance serves every concurrent request (strategies are re-entrant: nothing
of a run lives on the instance). A request's sampling fields (``max_tokens``,
``temperature``, ``top_p``, ``stop``) replace those of the strategy's ``params``: the
strategy is rebuilt from its description with those params (:meth:`Catalog.with_params`,
cached by description); a strategy without ``params`` refuses them with a 400 naming the
field. Greedy keeps temperature 0 whatever the request says: that is what greedy means.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ttc import registry
from ttc.context import RunContext
from ttc.strategy import Decision, Run, Strategy
from ttc.types import Prompt, SamplingParams

from .errors import bad_request

PASSTHROUGH = "passthrough"
ADHOC = "adhoc"
#: The strategies served without ``--config``.
DEFAULT_SPECS = {"greedy": "greedy", "sc": "sc:rule=beta,max=8", "majority": "majority:n=4"}
#: The request fields that go into a strategy's sampling parameters.
SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "stop")


class Passthrough(Strategy):
    """One engine call with the request's sampling parameters: its ``n`` generations are the
    samples, the first is the answer."""

    name = PASSTHROUGH

    def __init__(self, params: SamplingParams | None = None, **kw: Any):
        super().__init__(**kw)
        self.params = params or SamplingParams()

    async def _run(self, ctx: RunContext, prompt: Prompt, run: Run) -> str:
        for g in await ctx.generate(prompt, self.params):
            run.samples.add(g)
        return "done"

    def decide(self, ctx: RunContext, prompt: Prompt, run: Run) -> Decision:
        if not len(run.samples):
            return Decision(answer=None)
        s = run.samples.items[0]
        return Decision(answer=s.answer, chosen=s)


def single_trace(strategy: Strategy | None) -> SamplingParams | None:
    """The sampling parameters of a strategy that is one engine call (greedy), which a stream
    serves token by token as generated; ``None`` for strategies that choose among samples."""
    if strategy is not None and strategy.describe().get("name") == "greedy":
        params = getattr(strategy, "params", None)
        return params if isinstance(params, SamplingParams) else None
    return None


class Catalog:
    """Model ids to strategy instances; ad-hoc specs and sampling variants, cached."""

    def __init__(self, strategies: Mapping[str, Strategy] | None = None, *, allow_specs: bool = False,
                 cache_size: int = 256):
        strategies = dict(strategies) if strategies is not None else default_strategies()
        if PASSTHROUGH in strategies:
            raise ValueError(f"strategies: {PASSTHROUGH!r} is built in; give the configured strategy another label")
        for label, s in strategies.items():
            if not isinstance(s, Strategy):
                raise TypeError(f"strategies.{label}: expected a ttc Strategy (one question per call), "
                                f"got {type(s).__name__}")
        self.strategies = strategies
        self.allow_specs = allow_specs
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Strategy] = OrderedDict()

    @classmethod
    def from_config(cls, path: str, *, allow_specs: bool = False) -> Catalog:
        return cls(registry.load_config(path), allow_specs=allow_specs)

    def model_ids(self) -> list[str]:
        return [PASSTHROUGH, *self.strategies]

    def describe(self, model: str) -> dict[str, Any]:
        if model == PASSTHROUGH:
            return {"name": PASSTHROUGH}
        return self.strategies[model].describe()

    def resolve(self, model: str, spec: str | None) -> tuple[str, Strategy | None]:
        """(metrics label, strategy) for a request; ``None`` is passthrough."""
        if spec is not None:
            if not self.allow_specs:
                raise bad_request("ttc.strategy: ad-hoc strategies are not enabled on this server "
                                  "(start it with --allow-specs); name a model from GET /v1/models",
                                  "ttc.strategy", "adhoc_disabled")
            return ADHOC, self._cached(f"spec:{spec}", lambda: self._build_spec(spec))
        if model == PASSTHROUGH:
            return PASSTHROUGH, None
        if model not in self.strategies:
            raise bad_request(f"model: unknown model {model!r}; this server offers {self.model_ids()}",
                              "model", "model_not_found")
        return model, self.strategies[model]

    def _build_spec(self, spec: str) -> Strategy:
        try:
            s = registry.build_from_spec(spec, kinds=("strategy",))
        except (ValueError, TypeError, KeyError) as e:
            raise bad_request(f"ttc.strategy: {registry.one_line(e)}", "ttc.strategy", "bad_strategy") from None
        return s

    def with_params(self, strategy: Strategy, overrides: dict[str, Any]) -> Strategy:
        """``strategy`` with the request's sampling fields in its ``params``."""
        if not overrides:
            return strategy
        base = getattr(strategy, "params", None)
        desc = strategy.describe()
        if not isinstance(base, SamplingParams) or "params" not in desc:
            field = next(iter(overrides))
            raise bad_request(f"{field}: strategy {desc.get('name')!r} takes no sampling parameters; leave "
                              f"{', '.join(overrides)} out", field, "unsupported_parameter")
        desc["params"] = {**base.model_dump(), **overrides}
        key = json.dumps(desc, sort_keys=True, default=repr)
        return self._cached(key, lambda: self._build_variant(desc, overrides))

    @staticmethod
    def _build_variant(desc: dict[str, Any], overrides: dict[str, Any]) -> Strategy:
        try:
            return registry.build(desc)
        except (ValueError, TypeError, KeyError) as e:
            field = next(iter(overrides))
            raise bad_request(f"{field}: {registry.one_line(e)}", field, "unsupported_parameter") from None

    def _cached(self, key: str, make: Any) -> Strategy:
        s = self._cache.get(key)
        if s is None:
            s = make()
            self._cache[key] = s
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return s


def default_strategies() -> dict[str, Strategy]:
    return {label: registry.build_from_spec(spec) for label, spec in DEFAULT_SPECS.items()}
