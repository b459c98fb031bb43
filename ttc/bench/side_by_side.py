"""ttc beside a peer library on one server and one question set: the answer key the peer
votes with, the rows each method leaves, the table and the goal's verdict.

The peer is its_hub (Red Hat AI Innovation, ``its-hub==1.2.0``): its ``SelfConsistency``,
``AdaptiveSelfConsistency`` (2, 4, 8 samples, stop at 75% agreement) and
``BetaSelfConsistency`` (Aggarwal et al. 2023's Beta stop, all requests fired at once) run
in its own virtual environment and talk to the same vLLM server as ttc
(``benchmarks/peer_its_hub.py``; the script that runs inside that environment is
``benchmarks/peers/its_hub_runner.py``).

its_hub votes on whatever its ``consistency_space_projection_func`` returns; by default
the whole stripped text, so two samples agree only when they are the same text. To compare
voting and stopping rather than answer extraction, its_hub is given :func:`answer_key`:
ttc's extraction order (``\\boxed{}``, ``#### N``, "the answer is", after the last "=",
the last number) with numbers written one way, and the text itself when it holds no
number (its_hub's own behaviour then). Its top level uses only the standard library: the
runner loads this file by path into its_hub's environment, which has no ttc.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_NUM = r"-?\d[\d,]*(?:\.\d+)?"
_NUM_RE = re.compile(_NUM)
_ANSWER_IS = re.compile(r"(?:the\s+)?(?:final\s+)?answer(?:\s+is|\s*:)\s*:?\s*\**\s*\$?\s*(" + _NUM + ")",
                        re.IGNORECASE)
_HASHES = re.compile(r"####[^\S\n]*(" + _NUM + ")")
_AFTER_EQUALS = re.compile(r"[ $\\(]*(" + _NUM + ")")


def _boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (braces balanced), or None."""
    k = text.rfind("\\boxed{")
    if k < 0:
        return None
    depth, start = 0, k + len("\\boxed{")
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[start:i].strip()
            depth -= 1
    return None


def number_key(s: str) -> str | None:
    """A number written one way (``"1,240"``, ``"1240.00"``, ``"$1240"`` -> ``"1240"``;
    ``"-0.50"`` -> ``"-0.5"``), or None when ``s`` is not one number."""
    t = s.strip().strip("$").strip().rstrip(".").replace(",", "")
    if not re.fullmatch(r"-?\d+(?:\.\d+)?", t):
        return None
    if "." in t:
        t = t.rstrip("0").rstrip(".")
    if t in ("-0", ""):
        t = "0"
    return t


def extract(text: str) -> str | None:
    """The raw answer in ``text``: boxed, ``#### N``, the last "the answer is N", the number
    right after the last "=", the last number (ttc's :func:`ttc.answers.extract_answer`
    order); None when there is none."""
    b = _boxed(text)
    if b is not None:
        return b
    for pattern in (_HASHES, _ANSWER_IS):
        found = pattern.findall(text)
        if found:
            return found[-1]
    eq = text.rfind("=")
    if eq >= 0:
        m = _AFTER_EQUALS.match(text, eq + 1)
        if m:
            return m.group(1)
    nums = _NUM_RE.findall(text)
    return nums[-1] if nums else None


def answer_key(text: str) -> str:
    """What its_hub votes on: the extracted answer, as :func:`number_key` when it is a
    number, else stripped; the stripped text when nothing is extracted (so samples without
    an answer agree only when their texts do, as with its_hub's default)."""
    raw = extract(text)
    if raw is None:
        return text.strip()
    return number_key(raw) or raw.strip()


# -- what each method leaves -------------------------------------------------------------------
@dataclass
class QuestionRow:
    """One question under one method: graded, with the completion tokens the method metered
    and the samples it drew (late ones included)."""

    correct: bool
    completion_tokens: int
    samples: int
    answer: str | None = None


@dataclass
class MethodRun:
    """One method over the question set: its rows (in question order), wall seconds from
    the first request to the last answer, the client's CPU seconds over that time, and
    the vLLM server's own counters over it (``/metrics`` deltas; None when unread)."""

    label: str
    library: str
    rows: list[QuestionRow]
    wall_s: float
    client_cpu_s: float
    server_completion_tokens: float | None = None
    server_prompt_tokens: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def correct(self) -> int:
        return sum(r.correct for r in self.rows)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def interval(self) -> tuple[float, float]:
        """The 95% Wilson interval of the accuracy."""
        from ttc.bench.metrics import wilson_interval

        return wilson_interval(self.correct, self.n)

    @property
    def tokens(self) -> float:
        """Metered completion tokens per question."""
        return sum(r.completion_tokens for r in self.rows) / self.n if self.n else 0.0

    @property
    def server_tokens(self) -> float | None:
        """Completion tokens per question as the server counted them (cancelled work too)."""
        if self.server_completion_tokens is None or not self.n:
            return None
        return self.server_completion_tokens / self.n

    @property
    def samples(self) -> float:
        return sum(r.samples for r in self.rows) / self.n if self.n else 0.0


def _int(row: dict[str, Any], key: str, where: str) -> int:
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{where}: {key!r} must be a non-negative integer, got {v!r}")
    return v


def peer_rows(out: Any, references: Sequence[str], grade: Any) -> list[QuestionRow]:
    """The rows of the peer runner's output ``{"rows": [{"key", "completion_tokens",
    "responses", ...}], ...}``, one per question in order, graded by ``grade(key,
    reference)``. A malformed output is a ``ValueError`` naming what is wrong."""
    if not isinstance(out, dict) or not isinstance(out.get("rows"), list):
        raise ValueError("peer output: expected an object with a list 'rows'")
    rows = out["rows"]
    if len(rows) != len(references):
        raise ValueError(f"peer output: {len(rows)} rows for {len(references)} questions")
    got = []
    for i, (row, ref) in enumerate(zip(rows, references)):
        where = f"peer output row {i}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
        key = row.get("key")
        if key is not None and not isinstance(key, str):
            raise ValueError(f"{where}: 'key' must be a string or null, got {key!r}")
        got.append(QuestionRow(correct=bool(key is not None and grade(key, ref)),
                               completion_tokens=_int(row, "completion_tokens", where),
                               samples=_int(row, "responses", where), answer=key))
    return got


def seconds(out: dict[str, Any], key: str) -> float:
    v = out.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ValueError(f"peer output: {key!r} must be a non-negative number of seconds, got {v!r}")
    return float(v)


# -- the table and the verdict ---------------------------------------------------------------
def _opt(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def method_table(runs: Sequence[MethodRun]) -> str:
    """One markdown table: accuracy with its 95% interval, samples, completion tokens per
    question (metered by the method, counted by the server), wall time, client CPU."""
    lines = ["| library | method | accuracy | 95% CI | samples/q | completion tokens/q (metered) "
             "| completion tokens/q (server) | wall s | client CPU s |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in runs:
        lo, hi = r.interval()
        lines.append(f"| {r.library} | {r.label} | {r.accuracy:.3f} ({r.correct}/{r.n}) | [{lo:.2f}, {hi:.2f}] | "
                     f"{r.samples:.2f} | {r.tokens:.1f} | {_opt(r.server_tokens, '.1f')} | {r.wall_s:.1f} | "
                     f"{r.client_cpu_s:.2f} |")
    return "\n".join(lines)


def _cost(r: MethodRun) -> float:
    """Tokens a method cost: the server's count where read (it includes cancelled work)."""
    return r.server_tokens if r.server_tokens is not None else r.tokens


def best(runs: Sequence[MethodRun]) -> MethodRun:
    """The most accurate run; among equals, the cheapest (server tokens), then the fastest."""
    if not runs:
        raise ValueError("best: no runs")
    return min(runs, key=lambda r: (-r.correct, _cost(r), r.wall_s))


def verdict(ours: MethodRun, theirs: MethodRun) -> tuple[bool, str]:
    """The goal "equal or better accuracy with fewer tokens and less wall time", ours vs
    theirs on the same questions: (met, one line with the margins and McNemar's exact p of
    the accuracy difference on the paired questions)."""
    from ttc.bench.metrics import discordant, mcnemar_p

    if ours.n != theirs.n:
        raise ValueError(f"verdict: {ours.label} has {ours.n} questions, {theirs.label} {theirs.n}")
    b, c = discordant([r.correct for r in ours.rows], [r.correct for r in theirs.rows])
    p = mcnemar_p(b, c)
    acc_ok = ours.correct >= theirs.correct
    tok_ok = _cost(ours) < _cost(theirs)
    wall_ok = ours.wall_s < theirs.wall_s
    met = acc_ok and tok_ok and wall_ok
    line = (f"{ours.library} {ours.label} vs {theirs.library} {theirs.label}: "
            f"accuracy {ours.accuracy:.3f} vs {theirs.accuracy:.3f} ({(ours.accuracy - theirs.accuracy) * 100:+.1f} pp, "
            f"only-ours {b} / only-theirs {c}, McNemar p={p:.2f}) {'ok' if acc_ok else 'NOT'}; "
            f"tokens/q {_cost(ours):.1f} vs {_cost(theirs):.1f} ({_cost(ours) / max(_cost(theirs), 1e-9):.0%}) "
            f"{'ok' if tok_ok else 'NOT'}; wall {ours.wall_s:.1f} s vs {theirs.wall_s:.1f} s "
            f"({ours.wall_s / max(theirs.wall_s, 1e-9):.0%}) {'ok' if wall_ok else 'NOT'} -> "
            f"{'MET' if met else 'NOT MET'}")
    return met, line


def cpu_table(rows: Sequence[tuple[str, str, dict[str, float]]]) -> str:
    """Client CPU per question with no HTTP: ``(library, answer set, {"first_ms", "cpu_ms",
    "questions"})`` rows as a markdown table."""
    lines = ["| library | answer set | questions | first question CPU ms | client CPU ms/question |",
             "|---|---|---:|---:|---:|"]
    for lib, name, r in rows:
        lines.append(f"| {lib} | {name} | {int(r['questions'])} | {r['first_ms']:.0f} | {r['cpu_ms']:.2f} |")
    return "\n".join(lines)


def client_cpu_figures(table: str) -> dict[str, float]:
    """``{answer set: client CPU ms/question}`` read from the markdown table that
    ``benchmarks/client_cpu.py`` prints (the column named "client CPU ms/question");
    empty when there is no such table."""
    col: int | None = None
    out: dict[str, float] = {}
    for line in table.splitlines():
        if not line.strip().startswith("|"):
            col = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if col is None:
            col = next((i for i, c in enumerate(cells) if c.startswith("client CPU ms/question")), None)
            continue
        try:
            out[cells[0]] = float(cells[col])
        except (IndexError, ValueError):
            continue  # the |---| line
    return out
