"""Runs inside its_hub's virtual environment (``its_hub_venv.py``): a JSON job on stdin, a
JSON result on stdout. No ttc import: the answer key its_hub votes with
(``ttc/bench/side_by_side.py``, standard library only) is loaded by path.

Jobs:

- ``{"mode": "live", "method": "sc" | "adaptive" | "beta", "budget": 8, "threshold": ...,
  "base_url", "model", "prompts": [...], "temperature", "max_tokens",
  "questions_in_flight", "request_concurrency"}``: its_hub's method on every prompt
  against an OpenAI-compatible server through its ``OpenAICompatibleLanguageModel`` and
  ``LMOrchestrator``; per question the voted answer key, the responses it kept and the
  tokens it metered; the wall and CPU seconds of the whole run (imports excluded).
- ``{"mode": "cpu", "samples": 8, "sets": [{"name", "questions": [{"prompt", "texts"}],
  "warmup": k}]}``: its ``SelfConsistency`` with ``budget = samples`` over canned
  answer texts from a stub language model that answers at once (no HTTP): the CPU of
  the first question (the first call's cost) apart, then ``k`` warm-up questions, then
  ``time.process_time`` per question over the rest, one question at a time; with
  :func:`answer_key` and with its_hub's default projection (the stripped text).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _answer_key():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("ttc_side_by_side", ROOT / "ttc" / "bench" / "side_by_side.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = mod  # type: ignore[union-attr]  # dataclasses look the module up
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.answer_key


def _algorithm(method: str, threshold: float | None, projection, orchestrator):  # type: ignore[no-untyped-def]
    from its_hub import AdaptiveSelfConsistency, BetaSelfConsistency, SelfConsistency

    kw = {"consistency_space_projection_func": projection, "orchestrator": orchestrator}
    if method == "sc":
        return SelfConsistency(**kw)
    if method == "adaptive":
        return AdaptiveSelfConsistency(threshold=threshold or 0.75, **kw)
    if method == "beta":
        return BetaSelfConsistency(confidence_threshold=threshold or 0.95, **kw)
    raise SystemExit(f"its_hub_runner: unknown method {method!r} (sc, adaptive, beta)")


def _content(message: dict) -> str:
    c = message.get("content")
    return c if isinstance(c, str) else ""


async def live(job: dict) -> dict:
    from its_hub import LMOrchestrator, OpenAICompatibleLanguageModel

    key = _answer_key()
    lm = OpenAICompatibleLanguageModel(endpoint=job["base_url"], api_key="none", model_name=job["model"],
                                       max_completion_tokens=job["max_tokens"], temperature=job["temperature"])
    algo = _algorithm(job["method"], job.get("threshold"), key, LMOrchestrator(job["request_concurrency"]))
    gate = asyncio.Semaphore(job["questions_in_flight"])

    async def one(prompt: str) -> dict:
        async with gate:
            r = await algo.ainfer(lm, prompt, job["budget"], return_response_only=False)
        texts = [_content(m) for m in r.responses]
        return {"key": key(_content(r.the_one)), "responses": len(r.responses),
                "prompt_tokens": r.usage.prompt_tokens, "completion_tokens": r.usage.completion_tokens,
                "calls": r.usage.num_calls, "texts": texts}

    cpu0, t0 = time.process_time(), time.perf_counter()
    rows = await asyncio.gather(*(one(p) for p in job["prompts"]))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await lm.close()
    return {"rows": rows, "wall_s": wall, "cpu_s": cpu}


def _stub(texts: dict[str, list[str]], seed: int):  # type: ignore[no-untyped-def]
    from its_hub import AbstractLanguageModel

    class CannedLM(AbstractLanguageModel):
        """Answers at once with the question's next recorded text (a seeded shuffle)."""

        def __init__(self) -> None:
            self.order: dict[str, list[str]] = {}
            self.rng = random.Random(seed)

        async def agenerate(self, messages, stop=None, **kwargs):  # type: ignore[no-untyped-def]
            raise NotImplementedError("the orchestrator calls agenerate_single")

        async def agenerate_single(self, messages, stop=None, **kwargs):  # type: ignore[no-untyped-def]
            q = messages[-1].content
            left = self.order.get(q)
            if not left:
                left = self.order[q] = self.rng.sample(texts[q], len(texts[q]))
            text = left.pop()
            acc = kwargs.get("usage_accumulator")
            if acc is not None:
                acc.add(len(q) // 4, max(1, len(text) // 4))
            return {"role": "assistant", "content": text}

    return CannedLM()


async def _cpu_set(questions: list[dict], warmup: int, samples: int, projection) -> dict:  # type: ignore[no-untyped-def]
    from its_hub import SelfConsistency

    lm = _stub({q["prompt"]: q["texts"] for q in questions}, seed=0)
    prompts = [q["prompt"] for q in questions]

    async def run(p: str) -> None:
        await SelfConsistency(consistency_space_projection_func=projection).ainfer(lm, p, samples)

    cpu0 = time.process_time()
    await run(prompts[0])
    first = time.process_time() - cpu0
    for p in prompts[1:warmup]:
        await run(p)
    timed = prompts[warmup:]
    cpu0, t0 = time.process_time(), time.perf_counter()
    for p in timed:
        await run(p)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    return {"first_ms": first * 1e3, "cpu_ms": cpu / len(timed) * 1e3, "wall_ms": wall / len(timed) * 1e3,
            "questions": len(timed)}


async def cpu(job: dict) -> dict:
    import its_hub  # noqa: F401  imports before the clock

    key = _answer_key()
    out = []
    for s in job["sets"]:
        for proj_name, proj in (("answer key", key), ("whole text (its default)", None)):
            r = await _cpu_set(s["questions"], s["warmup"], job["samples"], proj)
            out.append({"set": s["name"], "projection": proj_name, **r})
    return {"sets": out}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    job = json.load(sys.stdin)
    from its_hub import __version__

    fn = {"live": live, "cpu": cpu}.get(job.get("mode"))
    if fn is None:
        raise SystemExit(f"its_hub_runner: unknown mode {job.get('mode')!r} (live, cpu)")
    result = asyncio.run(fn(job))
    result["its_hub_version"] = __version__
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
