"""Code-shape gates: ruff (with the complexity rule) is clean, and no class is too long.

The rules live in ``pyproject.toml`` (``[tool.ruff.lint]``: pyflakes, pycodestyle, bugbear,
isort with ``ttc`` first-party, mccabe complexity at most 15 on library code).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ["ttc", "strategies", "verifiers", "routers", "engines"]
MAX_CLASS_LINES = 350


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed (it is in the dev extra: pip install -e '.[dev]')")
    return [found]


def test_ruff_is_clean_with_the_complexity_rule() -> None:
    targets = LIBRARY + ["tests", "benchmarks", "examples"]
    proc = subprocess.run([*_ruff(), "check", "--no-cache", *targets], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_complexity_rule_is_on_for_library_code(tmp_path: Path) -> None:
    # A function over the limit, placed in a library folder's position, must be flagged.
    branches = "\n".join(f"    if x == {i}:\n        return {i}" for i in range(20))
    src = tmp_path / "ttc" / "too_complex.py"
    src.parent.mkdir()
    src.write_text(f"def f(x):\n{branches}\n    return -1\n")
    proc = subprocess.run([*_ruff(), "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(src)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "C901" in proc.stdout, proc.stdout + proc.stderr


def test_no_library_class_is_longer_than_the_limit() -> None:
    long = []
    for folder in LIBRARY:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef):
                    n = (node.end_lineno or node.lineno) - node.lineno + 1
                    if n > MAX_CLASS_LINES:
                        long.append(f"{path.relative_to(ROOT)}::{node.name} ({n} lines)")
    assert not long, f"classes over {MAX_CLASS_LINES} lines: {long}"
