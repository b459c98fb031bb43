"""Datasets: a JSONL format, loaders for common benchmark formats, and deterministic
generators for the tasks the bundled model can be measured on.

Every generator is a pure function of its arguments: the same seed gives the same
examples, on any machine (``random.Random(seed)``, no global state).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .answers import extract_boxed
from .checks import check_int

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


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
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


def _rows(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in _lines(path):
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
    for lineno, row in _rows(path, required):
        row.setdefault("_line", lineno)
        out.append(row)
    return out


def _text(value: Any, field: str, where: str) -> str:
    """A required text field: a non-empty string."""
    if not isinstance(value, str):
        raise ValueError(f"{where}: {field!r} must be a string, got {_show(value)}")
    if not value.strip():
        raise ValueError(f"{where}: {field!r} is empty")
    return value


def _answer(value: Any, where: str, field: str = "answer") -> str:
    """A reference answer: a string, or a number written as text. ``null``, booleans, lists
    and objects are errors: grading against ``str(None)`` == "None" would mark a model
    that answers "None" right."""
    if value is None:
        raise ValueError(f"{where}: {field!r} is null (every question needs a reference answer)")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{where}: {field!r} must be a string or a number, got {_show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {field!r} is not a finite number ({value})")
    text = str(value)
    if not text.strip():
        raise ValueError(f"{where}: {field!r} is empty")
    return text


def _id(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{where}: 'id' must be a string or an integer, got {_show(value)}")
    text = str(value)
    if not text.strip():
        raise ValueError(f"{where}: 'id' is empty")
    return text


def _show(value: Any) -> str:
    r = repr(value)
    return f"{type(value).__name__} {r[:40] + '...' if len(r) > 40 else r}"


def _example(where: str, **fields: Any) -> Example:
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
    for lineno, row in _rows(path):
        where = f"{path}:{lineno}"
        if "question" not in row or "answer" not in row:
            raise ValueError(f"{where}: needs 'question' and 'answer' fields")
        row["question"] = _text(row["question"], "question", where)
        row["answer"] = _answer(row["answer"], where)
        row["id"] = _id(row.get("id", str(lineno - 1)), where)
        if row["id"] in lines:
            raise ValueError(f"{where}: duplicate id {row['id']!r} (first on line {lines[row['id']]})")
        lines[row["id"]] = lineno
        out.append(_example(where, **row))
    return out


def load_gsm8k(path: str | Path) -> list[Example]:
    """GSM8K JSONL: ``{"question", "answer": "... #### 42"}``."""
    out = []
    for i, (lineno, r) in enumerate(_rows(path, ("question", "answer"))):
        where = f"{path}:{lineno}"
        sol = r["answer"]
        if not isinstance(sol, str):
            raise ValueError(f"{where}: GSM8K 'answer' must be a string ending in '#### N', got {_show(sol)}")
        if "####" not in sol:
            raise ValueError(f"{where}: GSM8K answer has no '####'")
        final = sol.split("####")[-1].strip().replace(",", "")
        if not final:
            raise ValueError(f"{where}: GSM8K answer is empty after '####'")
        out.append(_example(where, id=_id(r.get("id", i), where), question=_text(r["question"], "question", where),
                            answer=final, meta={"solution": sol}))
    check_unique_ids(out, path)
    return out


def load_math500(path: str | Path) -> list[Example]:
    """MATH-500 JSONL: ``{"problem", "solution" with \\boxed{...}, "answer"?, "level"?, "subject"?}``.
    A missing, null or empty ``answer`` falls back to the last ``\\boxed{}`` of ``solution``."""
    out = []
    for i, (lineno, r) in enumerate(_rows(path, ("problem",))):
        where = f"{path}:{lineno}"
        ans = r.get("answer")
        if ans is None or ans == "":
            sol = r.get("solution", "")
            if not isinstance(sol, str):
                raise ValueError(f"{where}: 'solution' must be a string, got {_show(sol)}")
            ans = extract_boxed(sol)
            if ans is None:
                raise ValueError(f"{where}: no 'answer' and no \\boxed{{}} in 'solution'")
        words = str(r.get("level") or "").split()
        diff = int(words[-1]) if words and words[-1].isdigit() and len(words[-1]) < 6 else None
        subject = r.get("subject")
        if subject is not None and not isinstance(subject, str):
            raise ValueError(f"{where}: 'subject' must be a string, got {_show(subject)}")
        out.append(
            _example(
                where, id=_id(r.get("unique_id", i), where), question=_text(r["problem"], "problem", where),
                answer=_answer(ans, where), category=subject, difficulty=diff,
            )
        )
    check_unique_ids(out, path)
    return out


def load_multiple_choice(path: str | Path) -> list[Example]:
    """Multiple choice JSONL: ``{"question", "choices": [...], "answer": "B" or index}``."""
    out = []
    for i, (lineno, r) in enumerate(_rows(path, ("question", "answer"))):
        where = f"{path}:{lineno}"
        choices = r.get("choices") or r.get("options")
        if not choices:
            raise ValueError(f"{where}: no 'choices'")
        if not isinstance(choices, list) or not all(isinstance(c, (str, int, float)) and not isinstance(c, bool)
                                                    for c in choices):
            raise ValueError(f"{where}: 'choices' must be a list of strings")
        if len(choices) > 26:
            raise ValueError(f"{where}: {len(choices)} choices; at most 26 (A-Z)")
        a = r["answer"]
        if a is None or isinstance(a, bool) or not isinstance(a, (str, int)):
            raise ValueError(f"{where}: 'answer' must be a letter or a 0-based index, got {_show(a)}")
        if isinstance(a, int) or a.strip().isdigit():
            idx = int(a)
            letter = chr(65 + idx) if 0 <= idx < len(choices) else ""
        else:
            letter = a.strip().upper()
        if not (len(letter) == 1 and "A" <= letter <= chr(64 + len(choices))):
            raise ValueError(f"{where}: answer {a!r} is not one of the {len(choices)} choices")
        category = r.get("category")
        if category is not None and not isinstance(category, str):
            raise ValueError(f"{where}: 'category' must be a string, got {_show(category)}")
        out.append(
            _example(where, id=_id(r.get("id", i), where), question=_text(r["question"], "question", where),
                     answer=letter, choices=[str(c) for c in choices], category=category)
        )
    check_unique_ids(out, path)
    return out


# -- generators ----------------------------------------------------------------------------
def addition(n: int, seed: int = 0, digits: int = 2) -> list[Example]:
    """``n`` two-number additions with operands of ``digits`` (1 to 30) digits."""
    check_int("addition: n", n, lo=1)
    check_int("addition: seed", seed)
    check_int("addition: digits", digits, lo=1, hi=30)
    rng = random.Random(seed)
    lo, hi = 10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1
    out = []
    for i in range(n):
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        out.append(
            Example(id=f"add-{seed}-{i}", question=f"What is {a} + {b}?", answer=str(a + b),
                    category="addition", difficulty=digits, meta={"a": a, "b": b})
        )
    return out


_NAMES = ["Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kim", "Lea"]
_ITEMS = ["apples", "books", "coins", "marbles", "pencils", "stamps", "shells", "cards"]


def word_problems(n: int, seed: int = 0, steps: tuple[int, ...] = (1, 2, 3, 4)) -> list[Example]:
    """Multi-step arithmetic word problems; difficulty = number of operations.

    Each step adds, removes, or multiplies a count of items; numbers stay small so
    the bundled 135M model has a non-trivial success rate on one-step problems.
    """
    check_int("word_problems: n", n, lo=1)
    check_int("word_problems: seed", seed)
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or not steps:
        raise ValueError(f"word_problems: steps: expected a non-empty tuple of integers, got {steps!r}")
    steps = tuple(check_int("word_problems: steps", k, lo=1, hi=20) for k in steps)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = steps[i % len(steps)]
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        x = rng.randint(2, 20)
        parts = [f"{name} has {x} {item}."]
        ops = []
        for _ in range(k):
            op = rng.choice(["+", "-", "*"] if x <= 30 else ["+", "-"])
            if op == "+":
                y = rng.randint(2, 15)
                parts.append(rng.choice([f"{name} gets {y} more.", f"A friend gives {name} {y} more."]))
                x += y
            elif op == "-" and x > 2:
                y = rng.randint(1, x - 1)
                parts.append(rng.choice([f"{name} gives away {y}.", f"{name} loses {y}."]))
                x -= y
            else:
                op = "*"
                y = rng.randint(2, 3)
                parts.append(f"Then the number of {item} is multiplied by {y}." if y > 3 else
                             (f"Then {name} doubles the {item}." if y == 2 else f"Then {name} triples the {item}."))
                x *= y
            ops.append([op, y])  # a list, so examples round-trip through JSON unchanged
        parts.append(f"How many {item} does {name} have now?")
        out.append(
            Example(id=f"wp-{seed}-{i}", question=" ".join(parts), answer=str(x), category="word_problem",
                    difficulty=k, meta={"ops": ops})
        )
    return out


_CAPITALS = [
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Spain", "Madrid"),
    ("Canada", "Ottawa"), ("Egypt", "Cairo"), ("Russia", "Moscow"), ("China", "Beijing"), ("Greece", "Athens"),
    ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Norway", "Oslo"), ("Ireland", "Dublin"), ("Poland", "Warsaw"),
]
_WORDS = ["apple", "river", "stone", "cloud", "garden", "window", "silver", "orange", "planet", "forest"]


def router_mix(n: int, seed: int = 0) -> list[Example]:
    """A mixed set for the reasoning router: category ``reason`` (multi-step word
    problems, where chain-of-thought can help) and ``direct`` (capital cities, copying a
    word, one-step sums: reasoning only costs tokens). Half of each, shuffled."""
    check_int("router_mix: n", n, lo=2)
    check_int("router_mix: seed", seed)
    rng = random.Random(seed)
    n_reason = n // 2
    out = [
        e.model_copy(update={"id": f"mix-{seed}-r{i}", "category": "reason"})
        for i, e in enumerate(word_problems(n_reason, seed=rng.randint(0, 10**9), steps=(2, 3)))
    ]
    for i in range(n - n_reason):
        kind = i % 3
        if kind == 0:
            country, capital = rng.choice(_CAPITALS)
            q, a, d = f"What is the capital of {country}?", capital, 1
        elif kind == 1:
            w = rng.choice(_WORDS)
            q, a, d = f"Repeat this word exactly: {w}", w, 1
        else:
            x, y = rng.randint(1, 9), rng.randint(1, 9)
            q, a, d = f"What is {x} + {y}?", str(x + y), 1
        out.append(Example(id=f"mix-{seed}-d{i}", question=q, answer=a, category="direct", difficulty=d))
    rng.shuffle(out)
    return out


GENERATORS = {"addition": addition, "word_problems": word_problems, "router_mix": router_mix}
