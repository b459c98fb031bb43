"""Recorded sample pools: K samples per question, with logprobs, stored once and
replayed many times (:class:`ttc.bench.replay.ReplayEngine`).

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
already in the file (a truncated last record is dropped, with a warning, and the file
rewritten clean; a different configuration is an error naming each difference).

Damaged files are errors, never a silent partial load: :func:`scan_records` reads every
gzip member on its own (so it can resynchronise after a corrupt one) and every line,
and :meth:`Pool.load` raises :class:`DamagedFile` naming the file, the record's line
and byte offset and what is wrong (a truncated or corrupt member, a line that is not
JSON, a question record with a missing or ill-typed field, a duplicate id). Loaded with
``allow_partial=True`` a pool keeps the readable questions and lists what it skipped.
Text read from a pool is data: it is parsed as JSON, never evaluated.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttc.checks import check_int
from ttc.engine import Engine
from ttc.questions import Example, check_unique_ids
from ttc.types import Generation, Prompt, SamplingParams, TokenLogprob, TopLogprob, Usage

POOL_VERSION = 1
log = logging.getLogger("ttc")


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
    """A loaded pool. ``damage``: the records skipped when loaded with ``allow_partial``."""

    header: dict[str, Any]
    questions: list[PoolQuestion]
    damage: list[Damage] = field(default_factory=list)

    @property
    def k(self) -> int:
        """The fewest samples any question has (the most a replay can draw everywhere)."""
        return min((len(q.samples) for q in self.questions), default=0)

    @property
    def grader(self) -> str:
        """The name of the grader its answers are judged by (:data:`ttc.answers.GRADERS`):
        the recording's ``grader``, else that of its dataset's format (``gsm8k:FILE``:
        ``number``; ``math500:FILE``: ``latex``), else ``default``."""
        from .datasets import FORMATS

        name = self.header.get("grader")
        if isinstance(name, str):
            return name
        kind = str(self.header.get("dataset", "")).partition(":")[0]
        return FORMATS[kind][1] if kind in FORMATS else "default"

    def __len__(self) -> int:
        return len(self.questions)

    def by_id(self) -> dict[str, PoolQuestion]:
        return {q.id: q for q in self.questions}

    @classmethod
    def load(cls, path: str | Path, *, allow_partial: bool = False) -> Pool:
        """Read a pool file. A damaged record (a truncated or corrupt gzip member, a line
        that is not JSON, a question record with missing or ill-typed fields, a duplicate
        question id) raises :class:`DamagedFile` naming the file and the record. With
        ``allow_partial`` the readable questions are kept and ``pool.damage`` lists what
        was skipped (the header must still be readable)."""
        path = Path(path)
        scan = scan_records(path)
        damage = list(scan.damage)
        header: dict[str, Any] | None = None
        questions: dict[str, PoolQuestion] = {}
        lines: dict[str, int] = {}
        for lineno, row in scan.records:
            kind = row.get("type")
            try:
                if kind == "header":
                    if header is not None or questions:
                        raise ValueError("a second header record")
                    header = row
                elif kind == "question":
                    q = _question(row)
                    if q.id in questions:
                        raise ValueError(f"duplicate question id {q.id!r} (first at line {lines[q.id]})")
                    questions[q.id] = q
                    lines[q.id] = lineno
                else:
                    raise ValueError(f"unknown record type {kind!r}")
            except ValueError as e:
                damage.append(Damage(line=lineno, offset=None, reason=f"bad pool record: {_one_line(e)}"))
        if header is None:
            first = f"; {damage[0].describe()}" if damage else ""
            raise ValueError(f"{path}: not a ttc pool (no readable header record{first})")
        damage.sort(key=lambda d: d.line)
        if damage and not allow_partial:
            d = damage[0]
            raise DamagedFile(
                path, d, f"{len(questions)} readable question(s) in the file, {len(damage)} damaged record(s); "
                "pass allow_partial=True (ttc replay --allow-partial) to use only the readable questions",
            )
        return cls(header=header, questions=list(questions.values()), damage=damage)


def _question(row: dict[str, Any]) -> PoolQuestion:
    """A question record -> PoolQuestion; a missing or ill-typed field is a ValueError."""
    try:
        answer = row["answer"]
        if answer is None or isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            raise ValueError(f"answer: expected a string or a number, got {answer!r}")
        if not isinstance(row["question"], str):
            raise ValueError("question: expected a string")
        samples = row["samples"]
        if not isinstance(samples, list):
            raise ValueError("samples: expected a list")
        prompt_tokens = row.get("prompt_tokens", 0)
        if isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, int) or prompt_tokens < 0:
            raise ValueError(f"prompt_tokens: expected an integer >= 0, got {prompt_tokens!r}")
        qid = row["id"]
        if isinstance(qid, bool) or not isinstance(qid, (str, int)):
            raise ValueError(f"id: expected a string or an integer, got {qid!r}")
        return PoolQuestion(
            id=str(qid), question=row["question"], answer=str(answer),
            prompt=Prompt.model_validate(row["prompt"]),
            samples=[unpack_generation(s) for s in samples],
            prompt_tokens=prompt_tokens,
            category=row.get("category"), difficulty=row.get("difficulty"),
            usage=Usage.model_validate(row.get("usage") or {}),
        )
    except KeyError as e:
        raise ValueError(f"missing field {e.args[0]!r}") from None
    except (TypeError, IndexError, AttributeError) as e:
        raise ValueError(str(e)) from None


def _one_line(e: BaseException) -> str:
    from .specs import one_line

    return one_line(e)


# -- JSONL(.gz) I/O that finds damage ------------------------------------------------------
@dataclass
class Damage:
    """A record that could not be read. ``line`` is its line number in the (decompressed)
    text, ``offset`` the byte offset in the file where the damage starts (gzip files);
    ``tail`` is True when no readable record follows it (a write that was cut short)."""

    line: int
    offset: int | None
    reason: str
    tail: bool = False

    def describe(self) -> str:
        at = f"record at line {self.line}" + (f" (byte {self.offset})" if self.offset is not None else "")
        return f"{at}: {self.reason}"


class DamagedFile(ValueError):
    """A JSONL(.gz) file with a record that cannot be read; the message names the file,
    the record and what is wrong."""

    def __init__(self, path: str | Path, damage: Damage, advice: str = ""):
        self.path = Path(path)
        self.damage = damage
        super().__init__(f"{path}: damaged {damage.describe()}" + (f"; {advice}" if advice else ""))


@dataclass
class Scan:
    """What :func:`scan_records` read: the records, the damage, and whether the file can
    be appended to as it is (a plain file whose last line has no newline cannot)."""

    records: list[tuple[int, dict[str, Any]]]
    damage: list[Damage]
    appendable: bool = True


_GZ_MAGIC = b"\x1f\x8b\x08"
_CHUNK = 1 << 16


def _gz_segments(data: bytes) -> Iterator[tuple[int, bytes, str | None]]:
    """(file offset, decompressed bytes, error) per gzip member. A corrupt member yields
    its error and the reader skips to the next gzip header that decompresses; a member
    cut short yields what it decompressed and ``"truncated"``."""
    mv = memoryview(data)
    pos, n = 0, len(data)
    while pos < n:
        if data[pos] == 0 and not data[pos:].strip(b"\x00"):
            return  # trailing zero padding (allowed by gzip)
        d = zlib.decompressobj(wbits=31)
        out: list[bytes] = []
        p = pos
        try:
            while p < n and not d.eof:
                out.append(d.decompress(mv[p : p + _CHUNK]))
                p = min(p + _CHUNK, n)
        except zlib.error as e:
            yield pos, b"", f"corrupt gzip data ({e})"
            nxt = data.find(_GZ_MAGIC, pos + 1)
            if nxt < 0:
                return
            pos = nxt
            continue
        if not d.eof:
            out.append(d.flush())
            yield pos, b"".join(out), "truncated"
            return
        yield pos, b"".join(out), None
        pos = p - len(d.unused_data)


def _record(raw: bytes) -> dict[str, Any] | str:
    """One line's JSON object, or why it is not one."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except json.JSONDecodeError as e:
        return f"not JSON ({e.msg})"
    return row if isinstance(row, dict) else "not a JSON object"


def scan_records(path: str | Path) -> Scan:
    """Every readable record of a JSONL file (plain or gzip, each line one JSON object)
    and every damaged one. Blank lines are skipped (they still count as lines)."""
    path = Path(path)
    data = path.read_bytes()
    records: list[tuple[int, dict[str, Any]]] = []
    damage: list[Damage] = []
    segments = _gz_segments(data) if data[:2] == b"\x1f\x8b" else iter([(0, data, None)])
    lineno = 0
    carry = b""  # a line split across gzip members
    carry_offset: int | None = None
    gz = data[:2] == b"\x1f\x8b"
    appendable = True

    def parse(raw: bytes, offset: int | None) -> None:
        nonlocal lineno
        lineno += 1
        if not raw.strip():
            return
        got = _record(raw)
        if isinstance(got, str):
            damage.append(Damage(lineno, offset, got))
        else:
            records.append((lineno, got))

    prev_error = False
    for offset, chunk, error in segments:
        off = offset if gz else None
        if error is not None and error != "truncated":
            if not prev_error:  # one damaged stretch, however many false starts the resync makes
                lineno += 1
                damage.append(Damage(lineno, off, error))
            prev_error = True
            carry, carry_offset = b"", None
            continue
        prev_error = False
        buf = carry + chunk
        parts = buf.split(b"\n")
        carry = parts.pop()
        for raw in parts:
            parse(raw, carry_offset if carry_offset is not None else off)
            carry_offset = None
        if carry and carry_offset is None:
            carry_offset = off
        if error == "truncated":
            lineno += 1
            damage.append(Damage(lineno, off, "truncated gzip data (the record was cut short)"))
            carry, carry_offset = b"", None
    if carry:
        if carry.strip():
            before = len(damage)
            parse(carry, carry_offset)
            if len(damage) > before:
                damage[-1].reason = "incomplete last line (" + damage[-1].reason + ")"
            else:
                appendable = False  # a complete record without its newline: appending would join them
        else:
            lineno += 1
    last_good = records[-1][0] if records else 0
    for d in damage:
        d.tail = d.line > last_good
    return Scan(records=records, damage=damage, appendable=appendable)


def read_records(
    path: str | Path, *, tolerate_truncation: bool = True
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each JSON line of ``path`` (plain or .gz).

    Damage at the end of the file (a run killed mid-write: a cut gzip member, a partial
    last line) is skipped when ``tolerate_truncation``; damage anywhere else always
    raises :class:`DamagedFile` naming the file and the record.
    """
    scan = scan_records(path)
    for d in scan.damage:
        if not (d.tail and tolerate_truncation):
            raise DamagedFile(path, d)
    yield from scan.records


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


def recover(path: str | Path, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The records of an output file about to be appended to (a resume).

    Damage at the end (a record torn by a kill, including a torn first and only record)
    is repaired: the file is rewritten with the readable records, and a warning names
    what was dropped (through ``warn``, else logger ``ttc``). Damage with readable records after it is not a torn
    write: :class:`DamagedFile` names the file and record, and nothing is rewritten.
    """
    path = Path(path)
    if not path.exists():
        return []
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not an output file")
    scan = scan_records(path)
    for d in scan.damage:
        if not d.tail:
            raise DamagedFile(path, d, "it was not written by a killed run (readable records follow); "
                                       "repair or move it, or write to a new file")
    rows = [r for _, r in scan.records]
    if scan.damage or not scan.appendable:
        tmp = path.with_name(".tmp-" + path.name)  # same suffix: same compression
        tmp.unlink(missing_ok=True)
        tmp.touch()
        w = RecordWriter(tmp)
        for r in rows:
            w.write(r)
        tmp.replace(path)
        for d in scan.damage:
            msg = f"{path}: repaired: dropped the torn {d.describe()}"
            if warn is not None:
                warn(msg)
            else:
                log.warning("%s", msg)
    return rows


def config_diff(recorded: dict[str, Any], current: dict[str, Any], ignore: Iterable[str] = ()) -> list[str]:
    """The keys whose values differ between a recorded header and the current one (both
    compared as JSON), each as ``"'key': current (recorded: old)"``."""
    skip = {"type", "created", *ignore}
    cur = json.loads(json.dumps(current, default=str))
    out = []
    for k in sorted((set(recorded) | set(cur)) - skip):
        if recorded.get(k) != cur.get(k):
            out.append(f"{k!r}: {_short(cur.get(k))} (recorded: {_short(recorded.get(k))})")
    return out


def _short(v: Any) -> str:
    r = json.dumps(v, default=str)
    return r if len(r) <= 80 else r[:77] + "..."


# -- recording ----------------------------------------------------------------------------
PROMPT_STYLES = ("plain", "cot", "direct")


def check_prompt_style(style: str) -> str:
    """``style`` if it is one of :data:`PROMPT_STYLES`, else ``ValueError`` naming it."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style: expected one of {list(PROMPT_STYLES)}, got {style!r}")
    return style


def question_prompt(e: Example, style: str = "plain", suffix: str = "") -> Prompt:
    """The prompt a pool (or a run) sends for example ``e``: one user message."""
    return Prompt.of(e.prompt(check_prompt_style(style)) + suffix)  # type: ignore[arg-type]


def recording_params(params: SamplingParams | None, logprobs: int | None) -> SamplingParams:
    """The sampling parameters a recording sends (and its header records)."""
    return (params or SamplingParams(temperature=0.8, max_tokens=64)).model_copy(
        update={"logprobs": logprobs, "n": 1}
    )


def pool_header(
    engine: str, model: Any, params: SamplingParams, *, k: int, logprobs: int | None, prompt_style: str,
    suffix: str, extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pool's header record: what a resumed recording must match (all but ``created``
    and the ``dataset`` spec text; ``extra`` adds keys, e.g. the dataset's content hash)."""
    h = {
        "type": "header", "version": POOL_VERSION, "engine": engine,
        "model": None if model is None else str(model), "params": params.model_dump(), "k": k,
        "logprobs": logprobs, "prompt_style": prompt_style, "suffix": suffix, "created": time.time(),
        **(extra or {}),
    }
    return json.loads(json.dumps(h, default=str))


def check_pool_resume(
    out: str | Path, header: dict[str, Any], warn: Callable[[str], None] | None = None
) -> list[dict[str, Any]] | None:
    """The question records already in ``out`` (a torn tail repaired), once its header
    matches ``header``; None when ``out`` holds nothing yet. Another configuration is a
    ``ValueError`` naming each difference. ``warn`` gets repair messages (see :func:`recover`)."""
    rows = recover(out, warn)
    if not rows:
        return None
    old = rows[0]
    if old.get("type") != "header" or "k" not in old or old.get("kind") is not None:
        raise ValueError(f"{out}: exists but is not a ttc pool (its first record is not a pool header)")
    diff = config_diff(old, header, ignore=("dataset",))
    if diff:
        raise ValueError(f"{out}: resuming with a different " + "; different ".join(diff)
                         + "; record into a new file, or rerun with the recorded settings")
    return rows[1:]


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

    Resumable: questions whose id is already in ``out`` are skipped; the header must
    match (:func:`pool_header`: engine, model, k, sampling parameters, prompt style,
    suffix and ``header_extra``), else ``ValueError`` naming each difference.
    """
    check_int("k", k, lo=1)
    check_prompt_style(prompt_style)
    check_unique_ids(examples, "examples")
    check_int("concurrency", concurrency, lo=1)
    if chunk is not None:
        check_int("chunk", chunk, lo=1)
    if logprobs is not None:
        check_int("logprobs", logprobs, lo=0, hi=20)
    params = recording_params(params, logprobs)
    out = Path(out)
    header = pool_header(engine.name, getattr(engine, "model", None), params, k=k, logprobs=logprobs,
                         prompt_style=prompt_style, suffix=suffix, extra=header_extra)
    rows = check_pool_resume(out, header)
    writer = RecordWriter(out)
    done: set[str] = set()
    if rows is None:
        writer.write(header)
    else:
        done = {str(r.get("id")) for r in rows if r.get("type") == "question"}
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
