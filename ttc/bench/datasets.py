"""Benchmark datasets: loaders for common benchmark formats (GSM8K, MATH-500, AIME, AMC,
multiple choice, and any of them on the Hugging Face hub), each as a :class:`Benchmark`
that knows its prompt and its grader; deterministic generators for the tasks the bundled model can be measured on,
and, re-exported from the core :mod:`ttc.questions`, the :class:`Example` type and
ttc's own JSONL format (so a benchmark needs one import).

Every generator is a pure function of its arguments: the same seed gives the same
examples, on any machine (``random.Random(seed)``, no global state).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttc.answers import extract_boxed
from ttc.answers import grader as answer_grader
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
#: The prompt of MATH-style benchmarks (MATH-500, AIME, AMC): the instruction of
#: Qwen2.5-Math's and DeepSeek-R1's evaluations, so the answer is the last ``\boxed{}``.
BOXED_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
#: The prompt of GSM8K: reason, then a final number in a form the extractors read.
NUMBER_SUFFIX = "\nSolve it step by step, then end with 'The answer is N.' where N is a number."


@dataclass(frozen=True)
class Benchmark:
    """A benchmark's questions with how they are asked and graded.

    ``suffix``: the prompt template, appended to each question (the runs' ``suffix``);
    ``grader``: the name of its grader in :data:`ttc.answers.GRADERS` (``number`` for
    GSM8K, ``latex`` for MATH, AIME and AMC, ``default`` for ttc's own formats)."""

    name: str
    examples: list[Example]
    suffix: str = ""
    grader: str = "default"

    @property
    def extractor(self) -> str:
        """The answer extractor its runs read samples with: :func:`extractor_for` its grader."""
        return extractor_for(self.grader)

    def grade(self, answer: str | None, reference: str) -> bool:
        """``answer`` graded against ``reference`` by this benchmark's grader (blocking:
        the LaTeX grader may run a symbolic check in a grading worker)."""
        return answer_grader(self.grader)(answer, reference)


def extractor_for(grader: str) -> str:
    """The name (in :data:`ttc.answers.EXTRACTORS`) of the extractor a benchmark graded by
    ``grader`` reads its samples with: ``number`` when its answers are numbers (the
    ``number`` grader: GSM8K; a sample then votes for the number it states, not for the
    template's "N" it echoed), else ``default``."""
    return "number" if grader == "number" else "default"


#: (prompt suffix, grader) of each known format.
FORMATS: dict[str, tuple[str, str]] = {
    "gsm8k": (NUMBER_SUFFIX, "number"), "math500": (BOXED_SUFFIX, "latex"),
    "aime": (BOXED_SUFFIX, "latex"), "amc": (BOXED_SUFFIX, "latex"),
}


def _require(r: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in r]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")


def _text_of(r: dict[str, Any], names: tuple[str, ...], where: str) -> tuple[str, str]:
    """(field name, text) of the first of ``names`` the row has."""
    for name in names:
        if name in r:
            return name, text_field(r[name], name, where)
    raise ValueError(f"{where}: missing field {' or '.join(repr(n) for n in names)}")


def _number_text(value: Any, where: str, field: str = "answer") -> str:
    """A reference answer; a float that is a whole number (AMC's ``27.0``) as ``27``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return answer_field(value, where, field)


def gsm8k_example(r: dict[str, Any], i: int, where: str) -> Example:
    """One GSM8K row: ``question``, ``answer`` (a worked solution ending ``#### N``)."""
    _require(r, ("question", "answer"), where)
    sol = r["answer"]
    if not isinstance(sol, str):
        raise ValueError(f"{where}: GSM8K 'answer' must be a string ending in '#### N', got {show_value(sol)}")
    if "####" not in sol:
        raise ValueError(f"{where}: GSM8K answer has no '####'")
    final = sol.split("####")[-1].strip().replace(",", "")
    if not final:
        raise ValueError(f"{where}: GSM8K answer is empty after '####'")
    return make_example(where, id=id_field(r.get("id", i), where),
                        question=text_field(r["question"], "question", where), answer=final,
                        meta={"solution": sol})


def math_example(r: dict[str, Any], i: int, where: str) -> Example:
    """One MATH(-500) row: ``problem``, ``solution`` with ``\\boxed{...}``, ``answer`` (LaTeX;
    when missing, null or empty, the last ``\\boxed{}`` of ``solution``), ``level``, ``subject``."""
    _require(r, ("problem",), where)
    sol = r.get("solution")
    if sol is not None and not isinstance(sol, str):
        raise ValueError(f"{where}: 'solution' must be a string, got {show_value(sol)}")
    ans = r.get("answer")
    if ans is None or ans == "":
        ans = extract_boxed(sol or "")
        if ans is None:
            raise ValueError(f"{where}: no 'answer' and no \\boxed{{}} in 'solution'")
    words = str(r.get("level") or "").split()
    diff = int(words[-1]) if words and words[-1].isdigit() and len(words[-1]) < 6 else None
    subject = r.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise ValueError(f"{where}: 'subject' must be a string, got {show_value(subject)}")
    return make_example(
        where, id=id_field(r.get("unique_id", i), where), question=text_field(r["problem"], "problem", where),
        answer=answer_field(ans, where), category=subject, difficulty=diff,
        meta={"solution": sol} if sol else {},
    )


def competition_example(r: dict[str, Any], i: int, where: str, category: str) -> Example:
    """One AIME or AMC row: ``problem`` or ``question``, ``answer`` (a number or LaTeX),
    optional ``id``, ``solution`` and ``url``."""
    _, question = _text_of(r, ("problem", "question"), where)
    _require(r, ("answer",), where)
    meta = {k: r[k] for k in ("solution", "url") if isinstance(r.get(k), str)}
    return make_example(where, id=id_field(r.get("id", i), where), question=question,
                        answer=_number_text(r["answer"], where), category=category, meta=meta)


def _load_rows(path: str | Path, make: Callable[[dict[str, Any], int, str], Example]) -> list[Example]:
    out = [make(r, i, f"{path}:{lineno}") for i, (lineno, r) in enumerate(jsonl_objects(path))]
    check_unique_ids(out, path)
    return out


def load_gsm8k(path: str | Path) -> list[Example]:
    """GSM8K JSONL: ``{"question", "answer": "... #### 42"}``."""
    return _load_rows(path, gsm8k_example)


def load_math500(path: str | Path) -> list[Example]:
    """MATH-500 JSONL: ``{"problem", "solution" with \\boxed{...}, "answer"?, "level"?, "subject"?}``.
    A missing, null or empty ``answer`` falls back to the last ``\\boxed{}`` of ``solution``."""
    return _load_rows(path, math_example)


def load_aime(path: str | Path) -> list[Example]:
    """AIME JSONL (Qwen2.5-Math's evaluation data): ``{"problem" or "question", "answer", "id"?}``."""
    return _load_rows(path, lambda r, i, where: competition_example(r, i, where, "aime"))


def load_amc(path: str | Path) -> list[Example]:
    """AMC JSONL (Qwen2.5-Math's evaluation data): ``{"question" or "problem", "answer": 27.0, "id"?}``."""
    return _load_rows(path, lambda r, i, where: competition_example(r, i, where, "amc"))


ROW_LOADERS: dict[str, Callable[[dict[str, Any], int, str], Example]] = {
    "gsm8k": gsm8k_example, "math500": math_example,
    "aime": lambda r, i, where: competition_example(r, i, where, "aime"),
    "amc": lambda r, i, where: competition_example(r, i, where, "amc"),
}


def benchmark(kind: str, examples: list[Example], name: str | None = None) -> Benchmark:
    """``examples`` as a :class:`Benchmark` of format ``kind`` (its prompt and grader)."""
    suffix, grade = FORMATS[kind]
    return Benchmark(name=name or kind, examples=examples, suffix=suffix, grader=grade)


# -- Hugging Face datasets --------------------------------------------------------------------
#: Hub names whose format is known (lower case): the rest are recognised by their columns.
HF_KINDS = {"openai/gsm8k": "gsm8k", "gsm8k": "gsm8k", "huggingfaceh4/math-500": "math500",
            "math-ai/aime24": "aime", "math-ai/amc23": "amc", "ai-mo/aimo-validation-aime": "aime",
            "ai-mo/aimo-validation-amc": "amc"}


def hf_kind(name: str, columns: Sequence[str], first: dict[str, Any] | None) -> str:
    """The format of a Hugging Face dataset: by its name (:data:`HF_KINDS`, else "gsm8k",
    "aime", "amc" or "math" in it), else by its columns (``question`` + ``answer`` with
    ``####``: GSM8K; ``problem`` + ``solution``: MATH; ``problem``/``question`` + ``answer``:
    AIME-style). ``ValueError`` naming the columns when none fits."""
    low = name.lower()
    if low in HF_KINDS:
        return HF_KINDS[low]
    for word, kind in (("gsm8k", "gsm8k"), ("aime", "aime"), ("amc", "amc"), ("math", "math500")):
        if word in low.rsplit("/", 1)[-1]:
            return kind
    cols = set(columns)
    if {"question", "answer"} <= cols and first is not None and "####" in str(first.get("answer")):
        return "gsm8k"
    if {"problem", "solution"} <= cols:
        return "math500"
    if "answer" in cols and cols & {"problem", "question"}:
        return "aime"
    raise ValueError(f"columns {sorted(cols)} match no known format (GSM8K: question, answer with '####'; "
                     "MATH: problem, solution, answer; AIME/AMC: problem or question, answer)")


def load_hf(name: str, split: str, config: str | None = None, *, kind: str | None = None,
            data_files: Any = None) -> Benchmark:
    """A benchmark from the Hugging Face hub through ``datasets.load_dataset(name, config,
    split=split)`` (the optional ``hf`` extra; ``data_files`` passes through, e.g. for
    ``name="json"`` on local files). ``kind`` (``gsm8k``, ``math500``, ``aime``, ``amc``)
    overrides the detection of :func:`hf_kind`. Errors name the dataset, the row and the field."""
    where = f"hf:{name}" + (f":{config}" if config else "") + f":{split}"
    try:
        import datasets as hf_datasets
    except ImportError:
        raise ValueError(f"{where}: needs the Hugging Face 'datasets' library (pip install 'ttc[hf]')") from None
    kw: dict[str, Any] = {"split": split}
    if data_files is not None:
        kw["data_files"] = data_files
    try:
        data = hf_datasets.load_dataset(name, config, **kw)
    except Exception as e:  # noqa: BLE001 - any loading failure is one line naming the dataset
        raise ValueError(f"{where}: cannot load ({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None
    if kind is not None and kind not in ROW_LOADERS:
        raise ValueError(f"{where}: unknown format {kind!r}; known: {sorted(ROW_LOADERS)}")
    if len(data) == 0:
        raise ValueError(f"{where}: no rows")
    try:
        kind = kind or hf_kind(name, data.column_names, dict(data[0]))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    make = ROW_LOADERS[kind]
    out = [make(dict(r), i, f"{where}: row {i}") for i, r in enumerate(data)]
    check_unique_ids(out, where)
    return benchmark(kind, out, name=where)


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
    "BOXED_SUFFIX", "COT_SUFFIX", "DIRECT_SUFFIX", "FORMATS", "GENERATORS", "NUMBER_SUFFIX", "Benchmark", "Example",
    "PromptStyle", "addition", "benchmark", "check_unique_ids", "hf_kind", "load_aime", "load_amc", "load_gsm8k",
    "load_hf", "load_jsonl", "load_math500", "load_multiple_choice", "read_jsonl_rows", "router_mix", "save_jsonl",
    "word_problems",
]
