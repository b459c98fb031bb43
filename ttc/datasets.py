"""Datasets: a JSONL format, loaders for common benchmark formats, and deterministic
generators for the tasks the bundled model can be measured on.

Every generator is a pure function of its arguments: the same seed gives the same
examples, on any machine (``random.Random(seed)``, no global state).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .answers import extract_boxed

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


def load_jsonl(path: str | Path) -> list[Example]:
    """Load ttc's JSONL format (one :class:`Example` per line). Lines with only
    ``question`` and ``answer`` get ids from their line number."""
    out = []
    with Path(path).open() as f:
        for i, line in enumerate(f):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i + 1}: not JSON ({e.msg})") from None
            if "question" not in row or "answer" not in row:
                raise ValueError(f"{path}:{i + 1}: needs 'question' and 'answer' fields")
            row.setdefault("id", str(i))
            row["answer"] = str(row["answer"])
            out.append(Example(**row))
    return out


def read_jsonl_rows(path: str | Path, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """JSON objects of a JSONL file; bad JSON or a missing ``required`` field raises
    ``ValueError`` naming the file and line."""
    out = []
    with Path(path).open() as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i + 1}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{i + 1}: expected a JSON object")
            missing = [k for k in required if k not in row]
            if missing:
                raise ValueError(f"{path}:{i + 1}: missing field(s) {missing}")
            row.setdefault("_line", i + 1)
            out.append(row)
    return out


def load_gsm8k(path: str | Path) -> list[Example]:
    """GSM8K JSONL: ``{"question", "answer": "... #### 42"}``."""
    out = []
    for i, r in enumerate(read_jsonl_rows(path, ("question", "answer"))):
        sol = str(r["answer"])
        if "####" not in sol:
            raise ValueError(f"{path}:{r['_line']}: GSM8K answer has no '####'")
        final = sol.split("####")[-1].strip().replace(",", "")
        out.append(Example(id=str(r.get("id", i)), question=r["question"], answer=final, meta={"solution": sol}))
    return out


def load_math500(path: str | Path) -> list[Example]:
    """MATH-500 JSONL: ``{"problem", "solution" with \\boxed{...}, "answer"?, "level"?, "subject"?}``."""
    out = []
    for i, r in enumerate(read_jsonl_rows(path, ("problem",))):
        ans = r.get("answer") or extract_boxed(r.get("solution", ""))
        if ans is None:
            raise ValueError(f"{path}:{r['_line']}: no 'answer' and no \\boxed{{}} in 'solution'")
        level = r.get("level")
        diff = int(str(level).split()[-1]) if level is not None and str(level).split()[-1].isdigit() else None
        out.append(
            Example(
                id=str(r.get("unique_id", i)), question=r["problem"], answer=str(ans),
                category=r.get("subject"), difficulty=diff,
            )
        )
    return out


def load_multiple_choice(path: str | Path) -> list[Example]:
    """Multiple choice JSONL: ``{"question", "choices": [...], "answer": "B" or index}``."""
    out = []
    for i, r in enumerate(read_jsonl_rows(path, ("question", "answer"))):
        choices = r.get("choices") or r.get("options")
        if not choices:
            raise ValueError(f"{path}:{r['_line']}: no 'choices'")
        a = r["answer"]
        letter = chr(65 + int(a)) if isinstance(a, int) or str(a).isdigit() else str(a).strip().upper()
        if not ("A" <= letter <= chr(64 + len(choices))):
            raise ValueError(f"{path}:{r['_line']}: answer {a!r} is not one of the {len(choices)} choices")
        out.append(
            Example(id=str(r.get("id", i)), question=r["question"], answer=letter, choices=list(choices),
                    category=r.get("category"))
        )
    return out


# -- generators ----------------------------------------------------------------------------
def addition(n: int, seed: int = 0, digits: int = 2) -> list[Example]:
    """``n`` two-number additions with operands of ``digits`` digits."""
    if n < 1 or digits < 1:
        raise ValueError("addition: n and digits must be >= 1")
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
    if n < 1 or not steps or min(steps) < 1:
        raise ValueError("word_problems: n >= 1 and steps must be positive")
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
    if n < 2:
        raise ValueError("router_mix: n must be >= 2")
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
