"""examples/budget_tuning.ipynb: executed top to bottom with nbclient on the recorded pool (no
engine, no network), its outputs checked, and its saved outputs checked to be the ones it computes."""

from __future__ import annotations

import base64
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("pandas")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "budget_tuning.ipynb"
POOL = ROOT / "benchmarks" / "pools" / "addition_200x32.jsonl.gz"
STRATEGIES = ["majority:n=B", "sc:rule=beta,max=B", "deepconf:mode=offline,max=B", "rpc:n=B"]
PICK = re.compile(r"cheapest strategy reaching accuracy (?P<target>[\d.]+): (?P<spec>\S+) at B=(?P<b>\d+): "
                  r"accuracy (?P<acc>[\d.]+) \[(?P<lo>[\d.]+), (?P<hi>[\d.]+)\], (?P<tokens>[\d.]+) completion "
                  r"tokens/question")


def cell(nb: Any, cid: str) -> Any:
    found = [c for c in nb.cells if c.get("id") == cid]
    assert len(found) == 1, f"the notebook has no single cell {cid!r}"
    return found[0]


def stdout(c: Any) -> str:
    return "".join(o.text for o in c.outputs if o.output_type == "stream" and o.name == "stdout")


def stderr(c: Any) -> str:
    return "".join(o.text for o in c.outputs if o.output_type == "stream" and o.name == "stderr")


def result_text(c: Any) -> str:
    return "".join(o.data.get("text/plain", "") for o in c.outputs if o.output_type == "execute_result")


def pivot(text: str, budgets: list[int] | None = None) -> dict[str, list[float]]:
    """A replay cell's accuracy table (strategy rows, budget columns) from its text form; its
    budgets must be ``budgets`` (default 1 to 32)."""
    lines = text.strip().splitlines()
    found = [int(b) for b in lines[0].split()[1:]]
    rows = {}
    for line in lines[2:]:
        name, *vals = line.rsplit(None, len(found))
        rows[name.strip()] = [float(v) for v in vals]
    assert found == (budgets or [1, 2, 4, 8, 16, 32]), lines[0]
    return rows


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A copy of the notebook, executed in a temporary folder on the venv's python3 kernel."""
    if not POOL.exists():
        pytest.skip(f"{POOL} is not in this checkout")
    tmp = tmp_path_factory.mktemp("notebook")
    copy = tmp / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    return execute(copy, tmp)


def test_saved_notebook_has_its_outputs() -> None:
    """Saved executed, top to bottom, so it reads on GitHub with its figures."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert all(c.outputs for c in code if c.id != "params")
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in cell(nb, "plot").outputs)
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.timeout(420)
def test_notebook_runs_on_the_recorded_pool(executed: Any) -> None:
    nb = executed
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    for c in nb.cells:
        if c.cell_type == "code":
            assert "Traceback" not in stderr(c) and "Warning" not in stderr(c), (c.id, stderr(c))

    load = stdout(cell(nb, "load"))
    assert "pool: 200 questions x 32 samples of smollm2 (temperature 0.8, max_tokens 32, top-5 logprobs)" in load
    single = float(re.search(r"single-sample accuracy ([\d.]+)", load).group(1))  # type: ignore[union-attr]
    assert 0.3 <= single <= 0.5  # the bundled model on one-digit additions: right about 4 times in 10

    reg = stdout(cell(nb, "registry"))
    for spec, cls in zip(STRATEGIES, ["BestOfN", "SelfConsistency", "DeepConf", "PerplexityConsistency"]):
        assert re.search(rf"^{re.escape(spec)} +-> {cls}: {{'name': ", reg, re.M), (spec, reg)

    replay = cell(nb, "replay")
    assert "2400 replays in" in stdout(replay)  # 4 strategies x 6 budgets x 100 questions, one draw order
    acc = pivot(result_text(replay))
    assert set(acc) == set(STRATEGIES) | {"pass@k (oracle)", "best-of-k (mean logprob)"}
    assert all(0.0 <= a <= 1.0 for row in acc.values() for a in row)
    # one sample: every strategy answers with the same first sample of each question
    assert len({acc[s][0] for s in STRATEGIES}) == 1
    for s in STRATEGIES:
        assert acc[s][-1] >= acc[s][0] + 0.3  # 32 samples lift every strategy well above one
    oracle = acc["pass@k (oracle)"]
    assert oracle == sorted(oracle) and oracle[-1] >= 0.95

    png = [o.data["image/png"] for o in cell(nb, "plot").outputs if "image/png" in o.get("data", {})]
    assert len(png) == 1 and base64.b64decode(png[0])[:4] == b"\x89PNG"

    pick = stdout(cell(nb, "pick"))
    m = PICK.search(pick)
    assert m, pick
    assert float(m["target"]) == 0.80 and float(m["acc"]) >= 0.80 and float(m["lo"]) <= float(m["acc"])
    # the pick is the cheapest row that reaches the target; majority needs twice the tokens or does not reach it
    assert (m["spec"], m["b"]) == ("deepconf:mode=offline,max=B", "16"), pick
    assert acc["deepconf:mode=offline,max=B"][4] == pytest.approx(float(m["acc"]))
    majority = re.search(r"majority:n=B: (does not reach it|B=\d+, .*\((?P<x>[\d.]+)x\))", pick)
    assert majority and (majority["x"] is None or float(majority["x"]) >= 1.9), pick
    assert float(m["tokens"]) == pytest.approx(16 * 18.6, rel=0.05)

    trace = cell(nb, "trace")
    assert "'What is 8 + 7? Answer with just the number.' (reference 15)" in stdout(trace)
    assert re.search(r"deepconf_offline: answer='15' .* samples=16 stop=done", stdout(trace))
    kinds = result_text(trace)
    assert "start" in kinds and "deepconf_filter" in kinds and "stop" in kinds
    assert len(result_text(cell(nb, "samples")).strip().splitlines()) == 1 + 16
    beta = cell(nb, "beta-trace")
    assert "stop=beta" in stdout(beta) and "sc_stop" in result_text(beta)

    # real data: the GSM8K pool, graded by numbers, with the model at its floor
    gsm = cell(nb, "gsm8k")
    assert re.search(r"pool: \d+ GSM8K questions x 8 samples .* grader 'number'", stdout(gsm)), stdout(gsm)
    gacc = pivot(result_text(gsm), budgets=[1, 2, 4, 8])
    assert set(gacc) == {"majority:n=B", "sc:rule=beta,max=B", "deepconf:mode=offline,max=B",
                         "pass@k (oracle)", "best-of-k (mean logprob)"}
    g_oracle = gacc["pass@k (oracle)"]
    assert g_oracle == sorted(g_oracle) and g_oracle[-1] < 0.25  # the floor: few questions have any right sample
    for s in ("majority:n=B", "sc:rule=beta,max=B", "deepconf:mode=offline,max=B"):
        assert max(gacc[s]) <= g_oracle[-1]  # no selection beats the ceiling of its samples

    # the results saved in the repository are the ones the notebook computes
    saved = nbformat.read(NOTEBOOK, as_version=4)
    stale = "is stale: re-execute the notebook with `python tests/test_notebook.py --update`"
    for cid in ("pick", "samples"):
        assert stdout(cell(saved, cid)) == stdout(cell(nb, cid)), f"saved output of cell {cid!r} {stale}"
        assert result_text(cell(saved, cid)) == result_text(cell(nb, cid)), f"saved output of cell {cid!r} {stale}"
    for cid in ("replay", "gsm8k"):
        assert result_text(cell(saved, cid)) == result_text(cell(nb, cid)), f"saved output of cell {cid!r} {stale}"


def execute(path: Path, cwd: Path, timeout: int = 240) -> Any:
    """``path`` executed top to bottom in ``cwd`` on the venv's python3 kernel."""
    nb = nbformat.read(path, as_version=4)
    with pytest.MonkeyPatch.context() as mp:
        # this interpreter's kernel spec first (a user-wide "python3" spec could name another python)
        mp.setenv("JUPYTER_PATH", os.pathsep.join([str(Path(sys.prefix) / "share" / "jupyter"),
                                                   os.environ.get("JUPYTER_PATH", "")]))
        nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                                resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


if __name__ == "__main__":
    # python tests/test_notebook.py --update: re-execute the notebook in examples/ and save its outputs
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_notebook.py --update")
    nbformat.write(execute(NOTEBOOK, NOTEBOOK.parent), NOTEBOOK)
    print(f"{NOTEBOOK}: executed and saved")
