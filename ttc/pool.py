"""Recorded sample pools: K samples per question, with logprobs, stored once and
replayed many times (:class:`ttc.engines.replay.ReplayEngine`).

File format: JSONL, gzip-compressed when the name ends in ``.gz``. The first line is a
header ``{"type": "header", "version": 1, "model", "engine", "params", "k", "logprobs",
"prompt_style", "suffix", "dataset", "created"}``; every other line is one question::

    {"type": "question", "id", "question", "answer", "category", "difficulty",
     "prompt": <Prompt JSON>, "prompt_tokens": int, "usage": <Usage JSON>,
     "samples": [{"text", "num_tokens", "finish_reason",
                  "logprobs": [[token, logprob, [[alt, logprob], ...]], ...] | null}, ...]}

Logprobs are stored compactly (lists, 4 decimals) with the top-k alternatives the
header names (``logprobs``; 5 by default to keep pools small). Each question is
appended as its own gzip member as soon as its samples are in, so a killed recording
loses at most the questions in flight; :func:`record_pool` resumes by skipping the ids
already in the file (a truncated last record is dropped and the file rewritten clean).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .datasets import Example
from .engine import Engine
from .types import Generation, Prompt, SamplingParams, TokenLogprob, TopLogprob, Usage

POOL_VERSION = 1


# -- compact logprobs --------------------------------------------------------------------
def pack_logprobs(lps: Sequence[TokenLogprob] | None) -> list[list[Any]] | None:
    if lps is None:
        return None
    return [[t.token, round(t.logprob, 4), [[a.token, round(a.logprob, 4)] for a in t.top]] for t in lps]


def unpack_logprobs(rows: Sequence[Sequence[Any]] | None) -> list[TokenLogprob] | None:
    if rows is None:
        return None
    return [
        TokenLogprob(token=r[0], logprob=r[1], top=[TopLogprob(token=a, logprob=lp) for a, lp in r[2]])
        for r in rows
    ]


def pack_generation(g: Generation) -> dict[str, Any]:
    return {
        "text": g.text,
        "num_tokens": g.num_tokens,
        "finish_reason": g.finish_reason,
        "logprobs": pack_logprobs(g.logprobs),
    }


def unpack_generation(d: dict[str, Any]) -> Generation:
    return Generation(
        text=d["text"], num_tokens=d["num_tokens"], finish_reason=d.get("finish_reason", "stop"),
        logprobs=unpack_logprobs(d.get("logprobs")),
    )


# -- pool objects -----------------------------------------------------------------------
@dataclass
class PoolQuestion:
    """One question of a pool and its recorded samples."""

    id: str
    question: str
    answer: str
    prompt: Prompt
    samples: list[Generation]
    prompt_tokens: int = 0
    category: str | None = None
    difficulty: int | None = None
    usage: Usage = field(default_factory=Usage)

    @property
    def key(self) -> str:
        """What the replay engine recognises this question by: the prompt's last user message."""
        return self.prompt.question


@dataclass
class Pool:
    header: dict[str, Any]
    questions: list[PoolQuestion]

    @property
    def k(self) -> int:
        """The fewest samples any question has (the most a replay can draw everywhere)."""
        return min((len(q.samples) for q in self.questions), default=0)

    def __len__(self) -> int:
        return len(self.questions)

    def by_id(self) -> dict[str, PoolQuestion]:
        return {q.id: q for q in self.questions}

    @classmethod
    def load(cls, path: str | Path) -> Pool:
        header: dict[str, Any] | None = None
        questions: dict[str, PoolQuestion] = {}
        for lineno, row in read_records(path):
            kind = row.get("type")
            if kind == "header":
                header = row
            elif kind == "question":
                try:
                    q = PoolQuestion(
                        id=str(row["id"]), question=row["question"], answer=str(row["answer"]),
                        prompt=Prompt.model_validate(row["prompt"]),
                        samples=[unpack_generation(s) for s in row["samples"]],
                        prompt_tokens=int(row.get("prompt_tokens", 0)),
                        category=row.get("category"), difficulty=row.get("difficulty"),
                        usage=Usage.model_validate(row.get("usage", {})),
                    )
                except (KeyError, TypeError, ValueError) as e:
                    raise ValueError(f"{path}:{lineno}: bad pool record ({e})") from None
                questions[q.id] = q
            else:
                raise ValueError(f"{path}:{lineno}: unknown record type {kind!r}")
        if header is None:
            raise ValueError(f"{path}: not a ttc pool (no header line)")
        return cls(header=header, questions=list(questions.values()))


# -- tolerant JSONL(.gz) I/O -------------------------------------------------------------
def _open_read(path: Path) -> IO[str]:
    with path.open("rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def read_records(
    path: str | Path, *, tolerate_truncation: bool = True
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each JSON line of ``path`` (plain or .gz).

    A truncated tail (a run killed mid-write: an incomplete gzip member or a partial
    last line) ends the iteration quietly when ``tolerate_truncation``; a bad line
    anywhere else raises ``ValueError`` naming it.
    """
    path = Path(path)
    f = _open_read(path)
    lineno = 0
    pending: tuple[int, str] | None = None
    try:
        while True:
            try:
                line = f.readline()
            except (EOFError, gzip.BadGzipFile, zlib.error):
                if not tolerate_truncation:
                    raise
                return
            if not line:
                break
            lineno += 1
            if pending is not None:
                yield _parse(path, *pending)
                pending = None
            if not line.strip():
                continue
            if not line.endswith("\n"):
                pending = (lineno, line)  # maybe the torn last line
                continue
            yield _parse(path, lineno, line)
        if pending is not None:
            try:
                yield _parse(path, *pending)
            except ValueError:
                if not tolerate_truncation:
                    raise
    finally:
        f.close()


def _parse(path: Path, lineno: int, line: str) -> tuple[int, dict[str, Any]]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not JSON ({e.msg})") from None
    if not isinstance(row, dict):
        raise ValueError(f"{path}:{lineno}: expected a JSON object")
    return lineno, row


class RecordWriter:
    """Appends JSON records to a plain or gzip JSONL file, each durable once written.

    For ``.gz`` every :meth:`write` is its own gzip member (readers concatenate
    members), so a kill loses at most the record being written.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict[str, Any]) -> None:
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        with self.path.open("ab") as f:
            f.write(gzip.compress(data, compresslevel=6) if self.path.suffix == ".gz" else data)
            f.flush()


def recover(path: str | Path) -> list[dict[str, Any]]:
    """The complete records of ``path``; if its tail was torn by a kill, rewrite it clean."""
    path = Path(path)
    if not path.exists():
        return []
    rows = [r for _, r in read_records(path)]
    clean = True
    try:
        for _ in read_records(path, tolerate_truncation=False):
            pass
    except (EOFError, gzip.BadGzipFile, zlib.error, ValueError):
        clean = False
    if not clean:
        tmp = path.with_name(".tmp-" + path.name)  # same suffix: same compression
        if tmp.exists():
            tmp.unlink()
        w = RecordWriter(tmp)
        for r in rows:
            w.write(r)
        tmp.replace(path)
    return rows


# -- recording ----------------------------------------------------------------------------
def question_prompt(e: Example, style: str = "plain", suffix: str = "") -> Prompt:
    """The prompt a pool (or a run) sends for example ``e``: one user message."""
    return Prompt.of(e.prompt(style) + suffix)  # type: ignore[arg-type]


async def record_pool(
    engine: Engine,
    examples: Sequence[Example],
    out: str | Path,
    *,
    k: int = 32,
    params: SamplingParams | None = None,
    logprobs: int | None = 5,
    prompt_style: str = "plain",
    suffix: str = "",
    concurrency: int = 4,
    chunk: int | None = None,
    header_extra: dict[str, Any] | None = None,
    progress: bool = True,
) -> Pool:
    """Draw ``k`` samples per question (``n=k`` per call, or chunks of ``chunk``) with
    top-``logprobs`` logprobs and append each question to ``out`` as it completes.

    Resumable: questions whose id is already in ``out`` are skipped (the header must
    match the same k and sampling parameters, else ``ValueError``).
    """
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    params = (params or SamplingParams(temperature=0.8, max_tokens=64)).model_copy(
        update={"logprobs": logprobs, "n": 1}
    )
    out = Path(out)
    rows = recover(out)
    writer = RecordWriter(out)
    header = {
        "type": "header", "version": POOL_VERSION, "engine": engine.name,
        "model": getattr(engine, "model", None), "params": params.model_dump(), "k": k,
        "logprobs": logprobs, "prompt_style": prompt_style, "suffix": suffix, "created": time.time(),
        **(header_extra or {}),
    }
    done: set[str] = set()
    if rows:
        old = rows[0]
        if old.get("type") != "header":
            raise ValueError(f"{out}: exists but is not a ttc pool (first record is not a header)")
        for key in ("k", "params", "prompt_style", "suffix"):
            if old.get(key) != header[key]:
                raise ValueError(
                    f"{out}: resuming with a different {key!r} ({header[key]!r} vs recorded {old.get(key)!r})"
                )
        done = {str(r["id"]) for r in rows[1:] if r.get("type") == "question"}
    else:
        writer.write(header)
    todo = [e for e in examples if e.id not in done]
    bar = _bar(len(examples), len(examples) - len(todo), "record", progress)
    sem = asyncio.Semaphore(max(1, concurrency))
    step = chunk or k

    async def one(e: Example) -> None:
        prompt = question_prompt(e, prompt_style, suffix)
        gens: list[Generation] = []
        usage = Usage()
        async with sem:
            while len(gens) < k:
                n = min(step, k - len(gens))
                res = await engine.generate(prompt, params.model_copy(update={"n": n}))
                gens.extend(res.generations)
                usage = usage + res.usage
        # the engine's own count of the prompt (per call: native n shares it)
        if usage.prompt_tokens:
            prompt_tokens = usage.prompt_tokens // max(1, usage.calls)
        else:
            prompt_tokens = await engine.count_prompt_tokens(prompt)
        writer.write({
            "type": "question", "id": e.id, "question": e.question, "answer": e.answer,
            "category": e.category, "difficulty": e.difficulty, "prompt": prompt.model_dump(),
            "prompt_tokens": prompt_tokens, "usage": usage.model_dump(),
            "samples": [pack_generation(g) for g in gens[:k]],
        })
        bar.update(1)
        bar.set_postfix(tokens=_fmt(bar, usage.completion_tokens), refresh=False)

    try:
        await asyncio.gather(*(one(e) for e in todo))
    finally:
        bar.close()
    return Pool.load(out)


def _bar(total: int, initial: int, desc: str, enabled: bool):  # type: ignore[no-untyped-def]
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True)


def _fmt(bar: Any, add: int) -> int:
    bar._ttc_tokens = getattr(bar, "_ttc_tokens", 0) + add
    return bar._ttc_tokens
