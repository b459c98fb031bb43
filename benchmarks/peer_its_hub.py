"""Side by side with its_hub: its adaptive self-consistency and ttc's, on one vLLM server and
the same questions, in one run.

its_hub 1.2.0 (``its-hub[lm]==1.2.0``, installed into its own virtual environment under
``$TTC_CACHE/peers/`` by ``benchmarks/peers/its_hub_venv.py``; the benchmark skips with
pip's message when it cannot be installed) runs ``SelfConsistency``,
``AdaptiveSelfConsistency`` (2, 4, 8 samples, stop at 75% agreement, checked after each
round) and ``BetaSelfConsistency`` (all 8 requests at once, stop when the Beta posterior
reaches 0.95, cancel the rest) through its ``OpenAICompatibleLanguageModel`` and
``LMOrchestrator`` (``benchmarks/peers/its_hub_runner.py``, a subprocess in that
environment). ttc runs its equivalents from spec strings through an ``OpenAIEngine``, each
with ``extractor=number`` (the task's answers are numbers: a sample's answer is the number
it states, so "The answer is N." echoed from the prompt is passed over for the sum it
wrote, as its_hub's key does), and fixed N = 8 once more with the default extractor:

- fixed N = 8: ``sc:rule=fixed,n=8,batch=8,extractor=number``;
- its_hub's adaptive rule: the vote share of the top answer >= 0.75
  (``deepconf_consensus`` with unit weights) on batches of 2, 2, 4, checked as each sample
  arrives (its_hub checks once a round is complete);
- the Beta stop: ``sc:rule=beta,threshold=0.95,max=8`` (batches 4, 2, 2);
- the verified-answer stop: ``sc:rule=verified,rule.pass_threshold=1.0,max=8,weighting=arith``
  (stop at the first sample whose equations all check out, ``ArithmeticCheck``).

Same questions (one-digit additions, ``ttc.bench.datasets.addition`` with a seed no method
was tuned on), same chat prompt, temperature, ``max_tokens`` and budget of 8 samples, the
same number of questions in flight and request concurrency. its_hub votes with
:func:`ttc.bench.side_by_side.answer_key` (ttc's extraction order) instead of its default
whole-text match, so voting and stopping are compared, not extraction. Both answers are
graded by ``ttc.answers.grade_number``. Per method: accuracy with a 95% Wilson interval,
samples, completion tokens per question as the method metered them and as the server
counted them (``vllm:generation_tokens_total`` delta: cancelled requests' work included),
wall time and the client's CPU time. Methods alternate between the libraries.

Then the client CPU per question with no HTTP: its_hub's ``SelfConsistency`` N = 8 over
the answer texts of ``benchmarks/client_cpu.py`` (its word problems and the addition pool)
from a stub language model, printed beside the figure that script prints for ttc.

    flock /tmp/ttc-vllm.lock .venv/bin/python benchmarks/peer_its_hub.py            # 60 questions
    flock /tmp/ttc-vllm.lock .venv/bin/python benchmarks/peer_its_hub.py --quick    # 12
    .venv/bin/python benchmarks/peer_its_hub.py --cpu-only                          # no server
    .venv/bin/python benchmarks/peer_its_hub.py --analyse runs.json                 # a run's --out, voted again
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from ttc import registry
from ttc.answers import grade_number
from ttc.bench.datasets import addition
from ttc.bench.side_by_side import (
    MethodRun,
    QuestionRow,
    best,
    client_cpu_figures,
    cpu_table,
    method_table,
    peer_rows,
    seconds,
    verdict,
)
from ttc.engines.openai_engine import OpenAIEngine
from ttc.engines.vllm_server import VLLMServer
from ttc.models import bundled_model_path

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "peers" / "its_hub_runner.py"
PROMPT = "Compute {a} + {b}. End with 'The answer is N.'"
ITS_HUB = {"sc": ("SelfConsistency (N=8)", None), "adaptive": ("AdaptiveSelfConsistency (0.75; 2, 4, 8)", 0.75),
           "beta": ("BetaSelfConsistency (0.95, max 8)", 0.95)}
NUMBER = ",extractor=number"  # a numeric task: votes on the number each sample states, as its_hub's key does
TTC = {"fixed": ("fixed N=8", "sc:rule=fixed,n=8,batch=8" + NUMBER),
       "fixed_default": ("fixed N=8, default extractor", "sc:rule=fixed,n=8,batch=8"),
       "share": ("vote share 0.75, batches 2, 2, 4", "sc:rule=deepconf_consensus,rule.tau=0.75,rule.min_samples=2,"
                 "max=8,batch_sizes=2|2|4" + NUMBER),
       "beta": ("Beta 0.95, max 8", "sc:rule=beta,threshold=0.95,max=8" + NUMBER),
       "verified": ("verified answer (ArithmeticCheck), max 8",
                    "sc:rule=verified,rule.pass_threshold=1.0,max=8,weighting=arith" + NUMBER)}
ORDER = [("its_hub", "sc"), ("ttc", "fixed"), ("ttc", "fixed_default"), ("its_hub", "adaptive"), ("ttc", "share"),
         ("its_hub", "beta"), ("ttc", "beta"), ("ttc", "verified")]
ADAPTIVE = {"its_hub": ["adaptive", "beta"], "ttc": ["share", "beta", "verified"]}


def its_hub_python(path: str | None) -> Path:
    sys.path.insert(0, str(HERE / "peers"))
    setup = importlib.import_module("its_hub_venv")
    try:
        return setup.ensure(Path(path) if path else None)
    except setup.PeerUnavailable as e:
        sys.exit(f"SKIP: its_hub is not available: {e}")


async def peer(python: Path, job: dict) -> dict:
    proc = await asyncio.create_subprocess_exec(str(python), str(RUNNER), stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate(json.dumps(job).encode())
    if proc.returncode != 0:
        raise RuntimeError(f"its_hub runner failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    return json.loads(out)


async def idle_counts(vs: VLLMServer) -> tuple[float, float]:
    """(prompt, generation) token counters once the server has no request left (cancelled
    requests finish aborting first)."""
    for _ in range(100):
        m = vs.metrics()
        if m.get("vllm:num_requests_running", 0) + m.get("vllm:num_requests_waiting", 0) == 0:
            break
        await asyncio.sleep(0.1)
    return m.get("vllm:prompt_tokens_total", 0.0), m.get("vllm:generation_tokens_total", 0.0)


async def run_ttc(key: str, engine: OpenAIEngine, qs: list[tuple[str, str]], a: argparse.Namespace) -> MethodRun:
    label, spec = TTC[key]
    strategy = registry.build_from_spec(f"{spec},temperature={a.temperature},max_tokens={a.max_tokens}")
    gate = asyncio.Semaphore(a.questions_in_flight)

    texts: list[list[str]] = [[] for _ in qs]

    async def one(i: int, prompt: str, ref: str) -> QuestionRow:
        async with gate:
            r = await strategy.run(prompt, engine, seed=a.seed + i)
        texts[i] = [s.text for s in r.samples]
        return QuestionRow(grade_number(r.answer, ref), r.usage.completion_tokens, len(r.samples), r.answer)

    cpu0, t0 = time.process_time(), time.perf_counter()
    rows = await asyncio.gather(*(one(i, p, ref) for i, (p, ref) in enumerate(qs)))
    return MethodRun(label, "ttc", list(rows), time.perf_counter() - t0, time.process_time() - cpu0,
                     note=strategy.describe()["rule"]["name"], extra={"texts": texts})


async def run_its_hub(key: str, python: Path, vs: VLLMServer, qs: list[tuple[str, str]],
                      a: argparse.Namespace) -> MethodRun:
    label, threshold = ITS_HUB[key]
    job = {"mode": "live", "method": key, "budget": a.budget, "threshold": threshold, "base_url": vs.base_url,
           "model": "smollm2", "prompts": [p for p, _ in qs], "temperature": a.temperature,
           "max_tokens": a.max_tokens, "questions_in_flight": a.questions_in_flight,
           "request_concurrency": a.request_concurrency}
    out = await peer(python, job)
    rows = peer_rows(out, [ref for _, ref in qs], grade_number)
    return MethodRun(label, "its_hub", rows, seconds(out, "wall_s"), seconds(out, "cpu_s"),
                     extra={"texts": [r.get("texts") for r in out["rows"]]})


async def live(python: Path, a: argparse.Namespace) -> list[MethodRun]:
    qs = [(PROMPT.format(a=e.meta["a"], b=e.meta["b"]), e.answer) for e in addition(a.questions, seed=a.seed, digits=1)]
    runs = []
    with VLLMServer(bundled_model_path(), served_name="smollm2", kv_cache_gib=2) as vs:
        async with OpenAIEngine(vs.base_url, model="smollm2", max_concurrency=a.request_concurrency) as engine:
            await run_ttc("fixed", engine, qs[:4], a)  # warm-up, not reported
            for lib, key in ORDER:
                before = await idle_counts(vs)
                run = await (run_its_hub(key, python, vs, qs, a) if lib == "its_hub" else run_ttc(key, engine, qs, a))
                after = await idle_counts(vs)
                run.server_prompt_tokens, run.server_completion_tokens = after[0] - before[0], after[1] - before[1]
                run.extra["key"] = key
                print(f"# {lib} {run.label}: accuracy {run.accuracy:.3f}, {run.tokens:.1f} tokens/q metered, "
                      f"{run.server_tokens:.1f} by the server, {run.wall_s:.1f} s", flush=True)
                runs.append(run)
    return runs


def report(runs: list[MethodRun], a: argparse.Namespace) -> None:
    print(f"\n## its_hub 1.2.0 vs ttc: {a.questions} one-digit additions (seed {a.seed}), SmolLM2-135M-Instruct on "
          f"one vLLM server, T={a.temperature}, max_tokens={a.max_tokens}, at most {a.budget} samples, "
          f"{a.questions_in_flight} questions in flight, {a.request_concurrency} requests at most\n")
    print(method_table(runs))
    theirs = best([r for r in runs if r.library == "its_hub" and r.extra["key"] in ADAPTIVE["its_hub"]])
    print(f"\nGoal: vs its_hub's best adaptive self-consistency ({theirs.label}): equal or better accuracy "
          "with fewer tokens (server count) and less wall time")
    for r in runs:
        if r.library == "ttc" and r.extra["key"] in ADAPTIVE["ttc"]:
            print("- " + verdict(r, theirs)[1])


def cpu_sets(n: int) -> tuple[list[dict], Path | None]:
    """The answer sets of ``benchmarks/client_cpu.py`` (the addition pool; its word problems
    when that script is there), each ``n`` questions after 6 warm-up ones; and the script."""
    from ttc.bench.pool import Pool

    pool = Pool.load(HERE / "pools" / "addition_200x32.jsonl.gz")
    sets = [{"name": "addition", "warmup": 6, "questions": [
        {"prompt": q.key, "texts": [s.text for s in q.samples]} for q in pool.questions[: n + 6]]}]
    script = HERE / "client_cpu.py"
    if not script.exists():
        return sets, None
    spec = importlib.util.spec_from_file_location("client_cpu", script)
    ttc_cpu = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(ttc_cpu)  # type: ignore[union-attr]
    words = ttc_cpu.word_problem_answers(n + 6, 32, seed=7)
    sets.insert(0, {"name": "word problems", "warmup": 6,
                    "questions": [{"prompt": q, "texts": t} for q, t in words.items()]})
    return sets, script


def client_cpu(python: Path, n: int, repeats: int) -> None:
    """its_hub's client CPU per question (no HTTP) on client_cpu.py's answer sets, beside the
    figure that script prints for ttc (when it is there): ``repeats`` runs of each side,
    alternated, and the medians compared (one run's figure moves with the machine's load)."""
    sets, script = cpu_sets(n)
    ours: dict[str, list[float]] = {}
    theirs: dict[tuple[str, str], list[dict]] = {}
    if script is None:
        print("\n(benchmarks/client_cpu.py is missing: its_hub's figures only)")
    for rep in range(repeats):
        if script is not None:
            run = subprocess.run([sys.executable, str(script), "--questions", str(n)], capture_output=True, text=True)
            if rep == 0:
                print("\n" + (run.stdout.strip() or f"client_cpu.py failed:\n{run.stderr[-2000:]}"))
            for name, ms in client_cpu_figures(run.stdout).items():
                ours.setdefault(name, []).append(ms)
        for r in asyncio.run(peer(python, {"mode": "cpu", "samples": 8, "sets": sets}))["sets"]:
            theirs.setdefault((r["set"], r["projection"]), []).append(r)
    print(f"\n## its_hub SelfConsistency N=8, {n} questions per set, stub language model (no HTTP), "
          f"median of {repeats} run(s)\n")
    medians = {key: {**runs[0], "cpu_ms": statistics.median(r["cpu_ms"] for r in runs),
                     "first_ms": statistics.median(r["first_ms"] for r in runs)} for key, runs in theirs.items()}
    print(cpu_table([(f"its_hub, {proj}", name, r) for (name, proj), r in medians.items()]))
    print()
    for (name, proj), runs in theirs.items():
        if name in ours and proj == "answer key":
            mine, peer_ms = statistics.median(ours[name]), medians[(name, proj)]["cpu_ms"]
            print(f"- {name}: ttc {mine:.2f} ms (runs {', '.join(f'{x:.2f}' for x in ours[name])}) vs its_hub "
                  f"{peer_ms:.2f} ms (runs {', '.join(f'{x:.2f}' for x in (r['cpu_ms'] for r in runs))}) per question, medians; "
                  f"ratio {mine / peer_ms:.2f} (goal <= 1)")


async def _ttc_vote(texts: list[str], extractor: str, seed: int) -> str | None:
    """ttc's fixed-N vote over recorded texts (served in order by a scripted engine); ties
    are broken by the run's seeded generator, as in the live run with the same seed."""
    from ttc.engines.scripted import ScriptedEngine

    r = await registry.build_from_spec(f"sc:rule=fixed,n={len(texts)},extractor={extractor}").run(
        "recorded", ScriptedEngine(texts), seed=seed)
    return r.answer


async def analyse(path: str, a: argparse.Namespace) -> None:
    """Separate the draw from the vote, on the texts a live run kept (``--out``): every run's
    own samples voted again (runs with every question's 8 samples) by its_hub's key (most
    common :func:`answer_key`) and by ttc's vote with the number and the default extractors;
    and per-sample accuracy per library over every run but the verified-answer stop (it stops
    on a verified sample, so its samples are not a plain draw), paired by question."""
    import numpy as np
    from scipy import stats

    from ttc.bench.side_by_side import answer_key

    runs = json.loads(Path(path).read_text())
    refs = [e.answer for e in addition(a.questions, seed=a.seed, digits=1)]
    print(f"\n## The same samples voted again ({path})\n")
    print("| library | method | reported | its_hub key majority | ttc vote, number | ttc vote, default |")
    print("|---|---|---:|---:|---:|---:|")
    per_sample: dict[str, list[list[bool]]] = {"its_hub": [[] for _ in refs], "ttc": [[] for _ in refs]}
    for r in runs:
        texts = r["extra"]["texts"]
        if all(t and len(t) == a.budget for t in texts):
            key = sum(grade_number(Counter(answer_key(x) for x in t).most_common(1)[0][0], ref)
                      for t, ref in zip(texts, refs))
            ttc = [sum([grade_number(await _ttc_vote(t, ex, a.seed + i), ref) for i, (t, ref) in enumerate(zip(texts, refs))])
                   for ex in ("number", "default")]
            print(f"| {r['library']} | {r['label']} | {sum(x['correct'] for x in r['rows'])} | {key} | {ttc[0]} | "
                  f"{ttc[1]} |")
        if "verified" not in r["label"]:
            for i, (t, ref) in enumerate(zip(texts, refs)):
                per_sample[r["library"]][i] += [grade_number(answer_key(x), ref) for x in t or []]
    ours, theirs = (np.array([np.mean(x) if x else np.nan for x in per_sample[k]]) for k in ("ttc", "its_hub"))
    ok = ~(np.isnan(ours) | np.isnan(theirs))
    flat = {k: [c for q in v for c in q] for k, v in per_sample.items()}
    print(f"\nPer-sample accuracy (its_hub's key): its_hub {np.mean(flat['its_hub']):.3f} ({len(flat['its_hub'])} "
          f"samples), ttc {np.mean(flat['ttc']):.3f} ({len(flat['ttc'])}); per question ttc - its_hub "
          f"{np.mean(ours[ok] - theirs[ok]):+.3f}, paired t-test p={stats.ttest_rel(ours[ok], theirs[ok]).pvalue:.2f} "
          f"({ok.sum()} questions)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="12 questions")
    ap.add_argument("--questions", type=int, default=60)
    ap.add_argument("--seed", type=int, default=11, help="addition generator seed (no method was tuned on it)")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--budget", type=int, default=8, choices=[8], help="samples at most (the specs say 8)")
    ap.add_argument("--questions-in-flight", type=int, default=16)
    ap.add_argument("--request-concurrency", type=int, default=64)
    ap.add_argument("--cpu-only", action="store_true", help="only the client-CPU comparison (no server)")
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--cpu-questions", type=int, default=194, help="questions per answer set in the CPU comparison")
    ap.add_argument("--cpu-repeats", type=int, default=5, help="alternated runs of each side in the CPU comparison")
    ap.add_argument("--its-hub-venv", default=None, help="its_hub's virtual environment (created when missing)")
    ap.add_argument("--out", default=None, help="write the runs as JSON here (each question's sample texts too)")
    ap.add_argument("--analyse", default=None, metavar="FILE",
                    help="no server: vote again on the samples a run wrote with --out (same --questions/--seed)")
    a = ap.parse_args()
    if a.quick:
        a.questions = 12
    if min(a.questions, a.questions_in_flight, a.request_concurrency, a.cpu_questions, a.cpu_repeats) < 1:
        ap.error("--questions, --questions-in-flight, --request-concurrency, --cpu-questions and --cpu-repeats "
                 "must be >= 1")
    if a.analyse:
        asyncio.run(analyse(a.analyse, a))
        return
    python = its_hub_python(a.its_hub_venv)
    if not a.cpu_only:
        runs = asyncio.run(live(python, a))
        report(runs, a)
        if a.out:
            Path(a.out).write_text(json.dumps([{**vars(r), "rows": [vars(x) for x in r.rows]} for r in runs], indent=1))
    if not a.skip_cpu:
        client_cpu(python, 12 if a.quick else a.cpu_questions, a.cpu_repeats)


if __name__ == "__main__":
    main()
