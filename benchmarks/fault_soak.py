"""Fault soak: budgets, paid samples and metering through a server that fails 30% of requests.

Five strategies (greedy, best-of-N, self-consistency, DeepConf online, DynasorCoT in
stream mode) each answer ``--questions`` distinct questions, every question on its own
budget, through one :class:`~ttc.engines.openai_engine.OpenAIEngine` against the fault
server (:mod:`ttc.testing.fault_server`, in-process on 127.0.0.1). ``--rate`` (30%) of
requests get a fault drawn uniformly from: dropped connection, 429, 500, 503, malformed
JSON, a reply or stream cut mid-way, fewer choices than asked, no usage. The server's
usage is honest. Per question, the server's own counts (what it delivered, billed and
generated) are compared with the strategy's result, and one row per strategy is printed:

* **paid samples lost**: the choices the server delivered for the question (every
  complete reply's choices and every stream that sent a token; probes apart) minus the
  samples in its result. Must be 0.
* **overshoot**: how far any question's metered usage, or the tokens the server
  generated for it, passed one of its limits (tokens, calls). Must be 0.
* **metered / billed / generated tokens**: what the meters charged, what the server
  reported in usage, what it generated. Metered >= billed: a reply without usage is
  charged an estimate that errs high, and one that could not be read its worst case.

    python benchmarks/fault_soak.py            # 48 questions per strategy (about 1,250 requests)
    python benchmarks/fault_soak.py --quick    # 6 per strategy (a smoke run)

Bounded: at most ``--questions`` x 5 runs, each request retried at most 5 times, and the
whole soak is stopped after ``--time-limit`` seconds (default 600).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

from ttc.budget import Budget
from ttc.engines.openai_engine import OpenAIEngine
from ttc.strategies.deepconf import DeepConf
from ttc.strategies.early_exit import DynasorCoT
from ttc.strategies.self_consistency import SelfConsistency
from ttc.strategies.simple import BestOfN, Greedy
from ttc.strategies.stopping import FixedN
from ttc.strategy import Strategy
from ttc.testing.fault_server import FAULT_KINDS, FaultConfig, FaultServer, QuestionStats
from ttc.types import SamplingParams, StrategyResult

KINDS = (*(k for k in FAULT_KINDS if k != "slow"), "short", "no_usage")
REASONING = " ".join(f"step{i}" for i in range(28))
ANSWERS = tuple(f"{REASONING} The answer is {a}." for a in ("4", "4", "5", "4"))


def strategies() -> dict[str, tuple[Strategy, Budget]]:
    """Each strategy with the budget one question runs on (tight enough that retries and
    faults meet the limits)."""
    p = SamplingParams(temperature=0.8, max_tokens=48)
    return {
        "greedy": (Greedy(SamplingParams(max_tokens=48)), Budget(completion_tokens=96, calls=2)),
        "best_of_n": (BestOfN(8, params=p), Budget(completion_tokens=600, calls=3)),
        "self_consistency": (SelfConsistency(FixedN(8), batch_sizes=(4,), params=p), Budget(completion_tokens=330)),
        "deepconf_online": (DeepConf("online", n_init=4, max_traces=10, window=8, eta=90, parallelism=2, params=p),
                            Budget(completion_tokens=420)),
        "dynasor_stream": (DynasorCoT("eager", mode="stream", max_tokens=48, probe="answer_is"),
                           Budget(total_tokens=1500, calls=8)),
    }


def overshoot(budget: Budget, used: dict[str, int]) -> int:
    return max([int(used[k] - lim) for k, lim in budget.limits().items() if k in used] + [0])


def row(name: str, budget: Budget, runs: list[tuple[StrategyResult, QuestionStats]]) -> dict[str, Any]:
    out: Counter[str] = Counter()
    for r, q in runs:
        out["requests"] += q.requests
        out["faults"] += q.faults
        out["kept"] += len(r.samples)
        out["paid"] += q.samples
        out["lost"] += max(q.samples - len(r.samples), 0)
        out["extra"] += max(len(r.samples) - q.samples, 0)
        metered = {"completion_tokens": r.usage.completion_tokens, "total_tokens": r.usage.total_tokens,
                   "calls": r.usage.calls}
        work = {"completion_tokens": q.work_completion_tokens,
                "total_tokens": q.work_prompt_tokens + q.work_completion_tokens, "calls": q.work_calls}
        out["over_metered"] = max(out["over_metered"], overshoot(budget, metered))
        out["over_server"] = max(out["over_server"], overshoot(budget, work))
        out["metered"] += r.usage.total_tokens
        out["billed"] += q.billed_prompt_tokens + q.billed_completion_tokens
        out["generated"] += q.work_prompt_tokens + q.work_completion_tokens
        out["overspent"] += sum(r.overspent.values())
    stops = Counter(r.stop_reason for r, _ in runs)
    return {"strategy": name, "questions": len(runs), "stops": ", ".join(f"{k} {v}" for k, v in stops.most_common()),
            **out}


async def soak(n: int, rate: float, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    cfg = FaultConfig(rate=rate, kinds=KINDS, seed=seed, retry_after=0.02, answers=ANSWERS, token_delay=0.002,
                      lifetime=900)
    with FaultServer(cfg) as srv:
        async with OpenAIEngine(srv.base_url, "fake", max_concurrency=32, timeout=10, backoff_base=0.01,
                                backoff_max=0.1, max_retry_after=0.05) as eng:
            sem = asyncio.Semaphore(16)

            async def one(name: str, strat: Strategy, budget: Budget, i: int) -> tuple[str, StrategyResult, str]:
                question = f"[{name}] Question {i}: what is {i} + 2?"
                async with sem:
                    return name, await strat.run(question, eng, budget, seed=i), question

            plan = strategies()
            done = await asyncio.gather(*[one(name, s, b, i) for name, (s, b) in plan.items() for i in range(n)])
        await asyncio.sleep(0.3)  # the server thread finishes the handlers of requests the client left
        by_q = srv.stats.by_question
        rows = [row(name, b, [(r, by_q.get(q, QuestionStats())) for n2, r, q in done if n2 == name])
                for name, (_, b) in plan.items()]
        return rows, {"requests": srv.stats.requests, "faults": dict(srv.stats.faults)}


def table(rows: list[dict[str, Any]], total: dict[str, Any], rate: float, took: float) -> str:
    head = ("| strategy | questions | requests | faults | stop reasons | samples kept | paid samples | "
            "**paid samples lost** | **overshoot (metered)** | **overshoot (server)** | metered tokens | "
            "server-billed tokens | server-generated tokens | overspent |")
    lines = [f"## fault_soak: {total['requests']} requests, {rate:.0%} faults "
             f"({', '.join(f'{k} {v}' for k, v in sorted(total['faults'].items()))}), {took:.1f} s\n",
             head, "|" + "---|" * 2 + "---:|" * 2 + "---|" + "---:|" * 9]
    for r in [*rows, {"strategy": "**all**", "questions": sum(x["questions"] for x in rows), "stops": "",
                      **{k: (max if k.startswith("over_") else sum)(x[k] for x in rows)
                         for k in rows[0] if k not in ("strategy", "questions", "stops")}}]:
        lines.append(f"| {r['strategy']} | {r['questions']} | {r['requests']} | {r['faults']} | {r['stops']} | "
                     f"{r['kept']} | {r['paid']} | {r['lost']} | {r['over_metered']} | {r['over_server']} | "
                     f"{r['metered']} | {r['billed']} | {r['generated']} | {r['overspent']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=int, default=48, help="questions per strategy")
    ap.add_argument("--rate", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=600.0)
    ap.add_argument("--quick", action="store_true", help="6 questions per strategy")
    a = ap.parse_args()
    t0 = time.monotonic()
    rows, total = asyncio.run(asyncio.wait_for(soak(6 if a.quick else a.questions, a.rate, a.seed), a.time_limit))
    print(table(rows, total, a.rate, time.monotonic() - t0))
    bad = sum(r["lost"] + r["extra"] + r["over_metered"] + r["over_server"] + r["overspent"] for r in rows)
    print(f"\n{'OK' if not bad else 'FAILED'}: paid samples lost, samples unaccounted for, budget overshoot and "
          "overspent are all 0" + ("" if not bad else " (they are not)"))
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
