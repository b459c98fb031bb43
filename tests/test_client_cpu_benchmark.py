"""benchmarks/client_cpu.py runs and prints its table (3 questions per answer set)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_client_cpu_benchmark_prints_a_row_per_answer_set() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "client_cpu.py"), "--questions", "3"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    rows = re.findall(r"^\| (word problems|addition) \| 3 \| \d+ \| ([\d.]+) \| [\d.]+ \| (\d)/3 \|", out, re.M)
    assert [r[0] for r in rows] == ["word problems", "addition"], out
    assert all(float(r[1]) > 0 and r[2] == "3" for r in rows), out
    assert "sympy imported in this process: no" in out
