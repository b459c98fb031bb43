"""Benchmark datasets: loaders for common benchmark formats (GSM8K, MATH-500, multiple
choice), deterministic generators for the tasks the bundled model can be measured on,
and, re-exported from the core :mod:`ttc.questions`, the :class:`Example` type and
ttc's own JSONL format (so a benchmark needs one import).

Every generator is a pure function of its arguments: the same seed gives the same
examples, on any machine (``random.Random(seed)``, no global state).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from ttc.answers import extract_boxed
from ttc.checks import check_int
from ttc.questions import (
    COT_SUFFIX,
    DIRECT_SUFFIX,
    Example,
    PromptStyle,
    answer_field,
    check_unique_ids,
    id_field,
    jsonl_objects,
    load_jsonl,
    make_example,
    read_jsonl_rows,
    save_jsonl,
    show_value,
    text_field,
)

# -- other benchmarks' formats ------------------------------------------------------------

def load_gsm8k(path: str | Path) -> list[Example]:
    """GSM8K JSONL: ``{"question", "answer": "... #### 42"}``."""
    out = []
    for i, (lineno, r) in enumerate(jsonl_objects(path, ("question", "answer"))):
        where = f"{path}:{lineno}"
        sol = r["answer"]
        if not isinstance(sol, str):
            raise ValueError(f"{where}: GSM8K 'answer' must be a string ending in '#### N', got {show_value(sol)}")
        if "####" not in sol:
            raise ValueError(f"{where}: GSM8K answer has no '####'")
        final = sol.split("####")[-1].strip().replace(",", "")
        if not final:
            raise ValueError(f"{where}: GSM8K answer is empty after '####'")
        out.append(make_example(where, id=id_field(r.get("id", i), where),
                                question=text_field(r["question"], "question", where),
                                answer=final, meta={"solution": sol}))
    check_unique_ids(out, path)
    return out


def load_math500(path: str | Path) -> list[Example]:
    """MATH-500 JSONL: ``{"problem", "solution" with \\boxed{...}, "answer"?, "level"?, "subject"?}``.
    A missing, null or empty ``answer`` falls back to the last ``\\boxed{}`` of ``solution``."""
    out = []
    for i, (lineno, r) in enumerate(jsonl_objects(path, ("problem",))):
        where = f"{path}:{lineno}"
        ans = r.get("answer")
        if ans is None or ans == "":
            sol = r.get("solution", "")
            if not isinstance(sol, str):
                raise ValueError(f"{where}: 'solution' must be a string, got {show_value(sol)}")
            ans = extract_boxed(sol)
            if ans is None:
                raise ValueError(f"{where}: no 'answer' and no \\boxed{{}} in 'solution'")
        words = str(r.get("level") or "").split()
        diff = int(words[-1]) if words and words[-1].isdigit() and len(words[-1]) < 6 else None
        subject = r.get("subject")
        if subject is not None and not isinstance(subject, str):
            raise ValueError(f"{where}: 'subject' must be a string, got {show_value(subject)}")
        out.append(
            make_example(
                where, id=id_field(r.get("unique_id", i), where), question=text_field(r["problem"], "problem", where),
                answer=answer_field(ans, where), category=subject, difficulty=diff,
            )
        )
    check_unique_ids(out, path)
    return out


def load_multiple_choice(path: str | Path) -> list[Example]:
    """Multiple choice JSONL: ``{"question", "choices": [...], "answer": "B" or index}``."""
    out = []
    for i, (lineno, r) in enumerate(jsonl_objects(path, ("question", "answer"))):
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
            raise ValueError(f"{where}: 'answer' must be a letter or a 0-based index, got {show_value(a)}")
        if isinstance(a, int) or a.strip().isdigit():
            idx = int(a)
            letter = chr(65 + idx) if 0 <= idx < len(choices) else ""
        else:
            letter = a.strip().upper()
        if not (len(letter) == 1 and "A" <= letter <= chr(64 + len(choices))):
            raise ValueError(f"{where}: answer {a!r} is not one of the {len(choices)} choices")
        category = r.get("category")
        if category is not None and not isinstance(category, str):
            raise ValueError(f"{where}: 'category' must be a string, got {show_value(category)}")
        out.append(
            make_example(where, id=id_field(r.get("id", i), where),
                         question=text_field(r["question"], "question", where),
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


__all__ = [
    "COT_SUFFIX", "DIRECT_SUFFIX", "GENERATORS", "Example", "PromptStyle", "addition", "check_unique_ids",
    "load_gsm8k", "load_jsonl", "load_math500", "load_multiple_choice", "read_jsonl_rows", "router_mix",
    "save_jsonl", "word_problems",
]
