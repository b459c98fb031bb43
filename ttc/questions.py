"""Questions: the :class:`Example` type (a question with its reference answer), the
prompt suffixes it is asked with, and ttc's own JSONL question format.

Core, not bench: strategies that take labelled questions (the allocator), the router's
calibration and its prompt routes need these, and leaves may not import the bench
layer. Loaders of other benchmarks' formats and the question generators live in
:mod:`ttc.bench.datasets`, built on the field checks here (``text_field``,
``answer_field``, ``id_field``, ``make_example``, ``jsonl_objects``), which name the
file and line of every error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

PromptStyle = Literal["cot", "direct", "plain"]

COT_SUFFIX = "\nThink step by step, then end with 'The answer is N.'"
DIRECT_SUFFIX = "\nReply with only the answer, as 'The answer is N.'"


class Example(BaseModel):
    """One question with its reference answer."""

    model_config = ConfigDict(extra="forbid")

    id: str
    question: str
    answer: str
    category: str | None = None
    difficulty: int | None = None
    choices: list[str] | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    def prompt(self, style: PromptStyle = "plain") -> str:
        """The question as a user message: ``plain`` (as is), ``cot`` (reason step by
        step) or ``direct`` (answer only)."""
        q = self.question
        if self.choices:
            q += "\n" + "\n".join(f"({chr(65 + i)}) {c}" for i, c in enumerate(self.choices))
        if style == "cot":
            return q + COT_SUFFIX
        if style == "direct":
            return q + DIRECT_SUFFIX
        return q


# -- JSONL -------------------------------------------------------------------------------
def save_jsonl(examples: Iterable[Example], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for e in examples:
            f.write(e.model_dump_json() + "\n")
    return path


def jsonl_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line; a missing file, a directory or bytes
    that are not UTF-8 raise ``ValueError`` naming the file (and line)."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{path}: no such file")
    if p.is_dir():
        raise ValueError(f"{path}: is a directory, not a JSONL file")
    with p.open("rb") as f:
        for i, raw in enumerate(f):
            try:
                line = raw.decode("utf-8-sig" if i == 0 else "utf-8")  # a leading BOM is not data
            except UnicodeDecodeError:
                raise ValueError(f"{path}:{i + 1}: not UTF-8 text") from None
            if line.strip():
                yield i + 1, line


def jsonl_objects(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in jsonl_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object")
        missing = [k for k in required if k not in row]
        if missing:
            raise ValueError(f"{path}:{lineno}: missing field(s) {missing}")
        yield lineno, row


def read_jsonl_rows(path: str | Path, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """JSON objects of a JSONL file, each with its line number as ``_line`` (unless the
    row has one); bad JSON or a missing ``required`` field raises ``ValueError`` naming
    the file and line."""
    out = []
    for lineno, row in jsonl_objects(path, required):
        row.setdefault("_line", lineno)
        out.append(row)
    return out


def text_field(value: Any, field: str, where: str) -> str:
    """A required text field: a non-empty string."""
    if not isinstance(value, str):
        raise ValueError(f"{where}: {field!r} must be a string, got {show_value(value)}")
    if not value.strip():
        raise ValueError(f"{where}: {field!r} is empty")
    return value


def answer_field(value: Any, where: str, field: str = "answer") -> str:
    """A reference answer: a string, or a number written as text. ``null``, booleans, lists
    and objects are errors: grading against ``str(None)`` == "None" would mark a model
    that answers "None" right."""
    if value is None:
        raise ValueError(f"{where}: {field!r} is null (every question needs a reference answer)")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{where}: {field!r} must be a string or a number, got {show_value(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {field!r} is not a finite number ({value})")
    text = str(value)
    if not text.strip():
        raise ValueError(f"{where}: {field!r} is empty")
    return text


def id_field(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{where}: 'id' must be a string or an integer, got {show_value(value)}")
    text = str(value)
    if not text.strip():
        raise ValueError(f"{where}: 'id' is empty")
    return text


def show_value(value: Any) -> str:
    r = repr(value)
    return f"{type(value).__name__} {r[:40] + '...' if len(r) > 40 else r}"


def make_example(where: str, **fields: Any) -> Example:
    try:
        return Example(**fields)
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ValueError(f"{where}: {errs}") from None


def check_unique_ids(examples: Iterable[Example], source: str | Path = "dataset") -> None:
    """``ValueError`` naming the first id that appears twice (results and resumes are
    keyed by id: a duplicate would be skipped or overwritten silently)."""
    seen: dict[str, int] = {}
    for i, e in enumerate(examples):
        if e.id in seen:
            raise ValueError(
                f"{source}: duplicate id {e.id!r} (examples {seen[e.id] + 1} and {i + 1}); ids must be unique"
            )
        seen[e.id] = i


def load_jsonl(path: str | Path) -> list[Example]:
    """Load ttc's JSONL format (one :class:`Example` per line). Lines with only
    ``question`` and ``answer`` get ids from their line number (0-based). A numeric
    answer is kept as its text; a null, boolean or structured answer, a non-string
    question, an unknown field and a duplicate id are errors naming the line."""
    out = []
    lines: dict[str, int] = {}
    for lineno, row in jsonl_objects(path):
        where = f"{path}:{lineno}"
        if "question" not in row or "answer" not in row:
            raise ValueError(f"{where}: needs 'question' and 'answer' fields")
        row["question"] = text_field(row["question"], "question", where)
        row["answer"] = answer_field(row["answer"], where)
        row["id"] = id_field(row.get("id", str(lineno - 1)), where)
        if row["id"] in lines:
            raise ValueError(f"{where}: duplicate id {row['id']!r} (first on line {lines[row['id']]})")
        lines[row["id"]] = lineno
        out.append(make_example(where, **row))
    return out


__all__ = [
    "COT_SUFFIX", "DIRECT_SUFFIX", "Example", "PromptStyle", "answer_field", "check_unique_ids", "id_field",
    "jsonl_lines", "jsonl_objects", "load_jsonl", "make_example", "read_jsonl_rows", "save_jsonl",
    "show_value", "text_field",
]
