"""Calibration: measure every route option per category on a labelled held-out set and
write the routing table that maximises ``accuracy - token_price * tokens``
(``- latency_price * seconds``).

"When to Reason: Semantic Router for vLLM" (Wang et al. 2025) ships hand-written
per-category reasoning flags; here they are fit from measured on/off deltas on a
held-out split instead (``shared/reference/algorithms.md``, Routing): reasoning is on
for a category exactly when its best reasoning option's accuracy gain beats its token
(and latency) cost.

API: :func:`measure` (run options, per-item records), :func:`summarise` (per category
and option), :func:`choose_routes` (pure arithmetic -> :class:`RoutingTable`),
:func:`calibrate` (all three). ``RoutingTable.save/load`` (JSON) and
``RoutingTable.policy(options)`` -> :class:`~ttc.routers.policy.EntropyBandPolicy`.

CLI::

    python -m ttc.routers.calibrate --data heldout.jsonl --token-price 0.001 --out table.json \
        [--base-url http://127.0.0.1:18000/v1 --model smollm2 | --vllm [MODEL_DIR]]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ttc.answers import DEFAULT_EQUIVALENCE, to_number
from ttc.engine import Engine
from ttc.questions import Example
from ttc.types import StrategyResult

from .policy import EntropyBandPolicy
from .routes import CategoryRoute, Route, run_route_once

Grader = Callable[[Example, StrategyResult], bool]
TokenMeasure = Literal["completion", "total"]


def default_grader(example: Example, result: StrategyResult) -> bool:
    """Correct if the extracted answer is equivalent to the reference; for a non-numeric
    reference, also if the chosen text contains it as a whole word (case-insensitive),
    e.g. "The capital of Egypt is Cairo." for "Cairo"."""
    if result.answer is not None and DEFAULT_EQUIVALENCE(result.answer, example.answer):
        return True
    ref = example.answer.strip()
    if not ref or to_number(ref) is not None:
        return False
    text = result.chosen.text if result.chosen is not None else (result.samples[0].text if result.samples else "")
    return re.search(rf"(?<![\w]){re.escape(ref)}(?![\w])", text, re.IGNORECASE) is not None


class ItemRecord(BaseModel):
    """One example run on one option."""

    model_config = ConfigDict(extra="forbid")

    id: str
    category: str
    option: str
    reasoning: bool
    correct: bool
    completion_tokens: int
    prompt_tokens: int
    latency: float
    answer: str | None = None


class Measurement(BaseModel):
    """One (category, option) cell: means over its items."""

    model_config = ConfigDict(extra="forbid")

    category: str
    option: str
    reasoning: bool
    n: int = Field(ge=1)
    accuracy: float = Field(ge=0, le=1)
    completion_tokens: float = Field(ge=0)
    total_tokens: float = Field(ge=0)
    latency: float = Field(0.0, ge=0)

    def tokens(self, measure: TokenMeasure) -> float:
        return self.completion_tokens if measure == "completion" else self.total_tokens

    def utility(self, token_price: float, latency_price: float = 0.0, measure: TokenMeasure = "completion") -> float:
        return self.accuracy - token_price * self.tokens(measure) - latency_price * self.latency


class CategoryEntry(BaseModel):
    """The calibrated choice for one category."""

    model_config = ConfigDict(extra="forbid")

    reasoning: bool
    option: str
    on: str | None
    off: str | None
    utility: float
    gain: float | None = Field(None, description="accuracy(best on) - accuracy(best off)")
    extra_tokens: float | None = Field(None, description="tokens(best on) - tokens(best off)")


class RoutingTable(BaseModel):
    """Category -> calibrated choice, with the measurements it came from."""

    model_config = ConfigDict(extra="forbid")

    token_price: float
    latency_price: float = 0.0
    token_measure: TokenMeasure = "completion"
    categories: dict[str, CategoryEntry]
    default: CategoryEntry
    measurements: list[Measurement]
    meta: dict[str, Any] = Field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> RoutingTable:
        return cls.model_validate_json(Path(path).read_text())

    def _category_route(self, entry: CategoryEntry, options: Mapping[str, Route]) -> CategoryRoute:
        for name in (entry.option, entry.on, entry.off):
            if name is not None and name not in options:
                raise KeyError(f"options: the routing table names option {name!r}; given {sorted(options)}")
        chosen = options[entry.option]
        on = options[entry.on] if entry.on else chosen.with_reasoning(True)
        off = options[entry.off] if entry.off else chosen.with_reasoning(False)
        return CategoryRoute(reasoning=entry.reasoning, on=on, off=off, source="calibrated")

    def routes(self, options: Mapping[str, Route]) -> dict[str, CategoryRoute]:
        """Category -> CategoryRoute, resolving option names against ``options``."""
        return {c: self._category_route(e, options) for c, e in self.categories.items()}

    def policy(self, options: Mapping[str, Route], **kw: Any) -> EntropyBandPolicy:
        """An :class:`EntropyBandPolicy` on these routes, with the pooled best as default."""
        return EntropyBandPolicy(self.routes(options), default=self._category_route(self.default, options), **kw)

    def markdown(self) -> str:
        rows = ["| category | option | reasoning | n | accuracy | tokens | latency s | utility |",
                "|---|---|---|---|---|---|---|---|"]
        for m in sorted(self.measurements, key=lambda m: (m.category, m.option)):
            mark = " **" if self.categories.get(m.category) and self.categories[m.category].option == m.option else ""
            rows.append(
                f"| {m.category} | {m.option}{mark} | {'on' if m.reasoning else 'off'} | {m.n} | {m.accuracy:.3f} | "
                f"{m.tokens(self.token_measure):.1f} | {m.latency:.2f} | "
                f"{m.utility(self.token_price, self.latency_price, self.token_measure):.3f} |"
            )
        return "\n".join(rows)


# -- arithmetic ----------------------------------------------------------------------------------
def summarise(records: Sequence[ItemRecord]) -> list[Measurement]:
    """Per (category, option) means of the item records."""
    cells: dict[tuple[str, str], list[ItemRecord]] = defaultdict(list)
    for r in records:
        cells[(r.category, r.option)].append(r)
    out = []
    for (cat, opt), rs in sorted(cells.items()):
        flags = {r.reasoning for r in rs}
        if len(flags) != 1:
            raise ValueError(f"records: option {opt!r} is recorded both with reasoning on and off")
        n = len(rs)
        out.append(Measurement(
            category=cat, option=opt, reasoning=rs[0].reasoning, n=n,
            accuracy=sum(r.correct for r in rs) / n,
            completion_tokens=sum(r.completion_tokens for r in rs) / n,
            total_tokens=sum(r.completion_tokens + r.prompt_tokens for r in rs) / n,
            latency=sum(r.latency for r in rs) / n,
        ))
    return out


def _best(cells: Sequence[Measurement], price: float, lat_price: float, measure: TokenMeasure) -> Measurement | None:
    if not cells:
        return None
    # Highest utility; ties -> fewer tokens, then reasoning off, then name (deterministic).
    return min(cells, key=lambda m: (-round(m.utility(price, lat_price, measure), 12), m.tokens(measure),
                                     m.reasoning, m.option))


def _entry(cells: Sequence[Measurement], price: float, lat_price: float, measure: TokenMeasure) -> CategoryEntry:
    best = _best(cells, price, lat_price, measure)
    assert best is not None
    on = _best([m for m in cells if m.reasoning], price, lat_price, measure)
    off = _best([m for m in cells if not m.reasoning], price, lat_price, measure)
    return CategoryEntry(
        reasoning=best.reasoning, option=best.option, on=on.option if on else None, off=off.option if off else None,
        utility=best.utility(price, lat_price, measure),
        gain=(on.accuracy - off.accuracy) if on and off else None,
        extra_tokens=(on.tokens(measure) - off.tokens(measure)) if on and off else None,
    )


def _pool(ms: Sequence[Measurement]) -> list[Measurement]:
    """Per option, the n-weighted mean over categories (for the default route)."""
    by_opt: dict[str, list[Measurement]] = defaultdict(list)
    for m in ms:
        by_opt[m.option].append(m)
    out = []
    for opt, cells in by_opt.items():
        n = sum(c.n for c in cells)
        avg = {f: sum(getattr(c, f) * c.n for c in cells) / n
               for f in ("accuracy", "completion_tokens", "total_tokens", "latency")}
        out.append(Measurement(category="*", option=opt, reasoning=cells[0].reasoning, n=n, **avg))
    return out


def choose_routes(
    measurements: Sequence[Measurement],
    token_price: float,
    *,
    latency_price: float = 0.0,
    token_measure: TokenMeasure = "completion",
    meta: dict[str, Any] | None = None,
) -> RoutingTable:
    """Per category, the option maximising ``accuracy - token_price * tokens -
    latency_price * latency``; the flag is that option's reasoning. Ties go to fewer
    tokens, then to reasoning off. The default entry is the best option pooled over
    categories (n-weighted)."""
    if token_price < 0 or latency_price < 0:
        raise ValueError(f"token_price/latency_price: must be >= 0, got {token_price}/{latency_price}")
    if not measurements:
        raise ValueError("measurements: empty")
    by_cat: dict[str, list[Measurement]] = defaultdict(list)
    for m in measurements:
        by_cat[m.category].append(m)
    cats = {c: _entry(cells, token_price, latency_price, token_measure) for c, cells in sorted(by_cat.items())}
    default = _entry(_pool(measurements), token_price, latency_price, token_measure)
    return RoutingTable(token_price=token_price, latency_price=latency_price, token_measure=token_measure,
                        categories=cats, default=default, measurements=list(measurements), meta=meta or {})


# -- measuring -----------------------------------------------------------------------------------
async def measure(
    examples: Sequence[Example],
    options: Mapping[str, Route],
    engine: Engine,
    *,
    engines: Mapping[str, Engine] | None = None,
    grader: Grader = default_grader,
    category_of: Callable[[Example], str] | None = None,
    concurrency: int = 16,
    seed: int = 0,
) -> list[ItemRecord]:
    """Run every example on every option (the option's strategy, prompt, switch and
    budget; its ``engine`` looked up in ``engines``), ``concurrency`` at a time.
    Latency is each run's wall time under that concurrency."""
    if not options:
        raise ValueError("options: empty")
    engines = dict(engines or {})
    cat = category_of or (lambda e: e.category or "default")
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(i: int, e: Example, name: str, route: Route) -> ItemRecord:
        eng = engine if route.engine is None else engines.get(route.engine)
        if eng is None:
            raise KeyError(f"option {name!r}: engine {route.engine!r} not in engines {sorted(engines)}")
        async with sem:
            res, dt = await run_route_once(route, e.prompt("plain"), eng, seed=seed + i)
        return ItemRecord(
            id=e.id, category=cat(e), option=name, reasoning=route.reasoning, correct=bool(grader(e, res)),
            completion_tokens=res.usage.completion_tokens, prompt_tokens=res.usage.prompt_tokens, latency=dt,
            answer=res.answer,
        )

    jobs = [one(i, e, name, r) for name, r in options.items() for i, e in enumerate(examples)]
    return list(await asyncio.gather(*jobs))


async def calibrate(
    examples: Sequence[Example],
    options: Mapping[str, Route],
    engine: Engine,
    *,
    token_price: float,
    latency_price: float = 0.0,
    token_measure: TokenMeasure = "completion",
    engines: Mapping[str, Engine] | None = None,
    grader: Grader = default_grader,
    category_of: Callable[[Example], str] | None = None,
    concurrency: int = 16,
    seed: int = 0,
) -> RoutingTable:
    """Measure ``options`` on ``examples`` and write the routing table (see module doc)."""
    records = await measure(examples, options, engine, engines=engines, grader=grader, category_of=category_of,
                            concurrency=concurrency, seed=seed)
    return choose_routes(summarise(records), token_price, latency_price=latency_price, token_measure=token_measure,
                         meta={"examples": len(examples), "options": sorted(options), "seed": seed})


def prompt_options(
    *, model: str | None = None, family: str | None = None, reason_tokens: int = 256, direct_tokens: int = 32,
    effort: str | None = None,
) -> dict[str, Route]:
    """The two basic options: ``reason`` (reasoning on, greedy, ``reason_tokens``) and
    ``direct`` (reasoning off, greedy, ``direct_tokens``)."""
    from ttc.strategies.simple import Greedy
    from ttc.types import SamplingParams

    return {
        "reason": Route(name="reason", model=model, family=family, reasoning=True, effort=effort,  # type: ignore[arg-type]
                        strategy=Greedy(SamplingParams(max_tokens=reason_tokens))),
        "direct": Route(name="direct", model=model, family=family, reasoning=False,  # type: ignore[arg-type]
                        strategy=Greedy(SamplingParams(max_tokens=direct_tokens))),
    }


# -- CLI -------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ttc.routers.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="labelled held-out set: ttc JSONL (question, answer, category)")
    p.add_argument("--out", required=True, help="where to write the routing table (JSON)")
    p.add_argument("--token-price", type=float, required=True, help="accuracy points (0-1) one token costs")
    p.add_argument("--latency-price", type=float, default=0.0, help="accuracy points one second costs")
    p.add_argument("--token-measure", choices=["completion", "total"], default="completion")
    p.add_argument("--base-url", help="OpenAI-compatible server (e.g. vLLM) to calibrate on")
    p.add_argument("--model", help="served model name (with --base-url) or model folder (with --vllm)")
    p.add_argument("--vllm", action="store_true", help="in-process vLLM engine on --model (default: bundled model)")
    p.add_argument("--family", choices=["qwen3", "deepseek", "openai", "plain"], default=None,
                   help="reasoning switch (default: detected from --model)")
    p.add_argument("--reason-tokens", type=int, default=256)
    p.add_argument("--direct-tokens", type=int, default=32)
    p.add_argument("--effort", choices=["low", "medium", "high"], default=None)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    return p


async def _amain(args: argparse.Namespace) -> RoutingTable:
    from ttc.questions import load_jsonl

    examples = load_jsonl(args.data)
    if args.base_url:
        if not args.model:
            raise SystemExit("--model: the served model name is required with --base-url")
        from ttc.engines.openai_engine import OpenAIEngine

        engine: Engine = OpenAIEngine(args.base_url, model=args.model)
    elif args.vllm:
        from ttc.engines.vllm_engine import VLLMEngine
        from ttc.models import bundled_model_path

        engine = VLLMEngine(args.model or bundled_model_path(), kv_cache_gib=2)
    else:
        raise SystemExit("choose an engine: --base-url URL --model NAME, or --vllm [--model DIR]")
    try:
        options = prompt_options(model=args.model, family=args.family, reason_tokens=args.reason_tokens,
                                 direct_tokens=args.direct_tokens, effort=args.effort)
        return await calibrate(examples, options, engine, token_price=args.token_price,
                               latency_price=args.latency_price, token_measure=args.token_measure,
                               concurrency=args.concurrency, seed=args.seed)
    finally:
        await engine.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.token_price < 0 or (isinstance(args.token_price, float) and math.isnan(args.token_price)):
        raise SystemExit("--token-price: must be >= 0")
    table = asyncio.run(_amain(args))
    path = table.save(args.out)
    print(table.markdown())
    print(json.dumps({c: e.model_dump() for c, e in table.categories.items()}, indent=2))
    print(f"routing table written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
