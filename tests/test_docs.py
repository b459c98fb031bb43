"""The documentation site builds in strict mode (any warning, broken link, missing anchor or
unresolved API reference fails), and the pages built from the code say what the code says."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("material")
pytest.importorskip("mkdocstrings_handlers.python")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "hooks"))


def text(page: Path) -> str:
    """A built page's article as plain text."""
    s = page.read_text()
    s = s[s.find("<article"):s.find("</article>")]
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", s)))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert time.monotonic() - t0 < 300
    return out


def test_site_builds_strict_with_every_page(site: Path) -> None:
    for page in ["index.html", "getting-started/index.html", "engines/index.html", "budgets/index.html",
                 "cli/index.html", "results/index.html", "benchmarks/RESULTS/index.html", "CHANGELOG/index.html",
                 *(f"strategies/{p}/index.html" for p in
                   ["sampling", "stepwise", "early-exit", "self-evaluation", "routing", "allocation"]),
                 *(f"api/{p}/index.html" for p in ["core", "strategies", "verifiers", "routers", "engines", "bench"])]:
        assert (site / page).is_file(), page
    # the results page's plot and raw tables are published with it, and its folder link has a listing
    assert (site / "benchmarks/results/addition_200x32_pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert (site / "benchmarks/results/index.html").is_file()


def test_api_reference_reaches_the_package_dir_packages(site: Path) -> None:
    """ttc.strategies, ttc.engines, ... live in top-level folders; the reference documents them."""
    strategies = (site / "api/strategies/index.html").read_text()
    for name in ["SelfConsistency", "BestOfN", "DeepConf", "PerplexityConsistency", "ParticleFiltering",
                 "BeamSearch", "DVTS", "EarlyExit", "SelfEvalGate", "Allocator", "BetaRule"]:
        assert f'id="ttc.strategies.{name}"' in strategies, name
    engines = (site / "api/engines/index.html").read_text()
    for ident in ["ttc.engines.vllm_engine.VLLMEngine", "ttc.engines.openai_engine.OpenAIEngine",
                  "ttc.engines.ScriptedEngine"]:
        assert f'id="{ident}"' in engines, ident
    assert 'id="ttc.routers.SemanticRouter"' in (site / "api/routers/index.html").read_text()
    assert 'id="ttc.budget.Budget"' in (site / "api/core/index.html").read_text()
    # Sphinx roles in the docstrings read as code, not as raw role markup
    core = text(site / "api/core/index.html")
    assert ":class:" not in core and ":func:" not in core and ":meth:" not in core
    assert "-> StrategyResult ;" in core or "-> StrategyResult;" in core
    # a family page links to the class in the reference
    assert 'href="../../api/strategies/#ttc.strategies.SelfConsistency"' in (
        site / "strategies/sampling/index.html").read_text()


def test_option_tables_are_the_registry(site: Path) -> None:
    from ttc.registry import describe_registry

    reg = describe_registry()
    sampling = text(site / "strategies/sampling/index.html")
    for name in ["best_of_n", "self_consistency", "beta", "deepconf", "perplexity_consistency"]:
        assert f"{name} ({reg[name]['kind']};" in sampling, name
    assert f"tau number {reg['deepconf']['options']['tau']['default']}" in sampling
    stepwise = text(site / "strategies/stepwise/index.html")
    assert 'verifier object | null {"name": "arithmetic_step_check"} (registry default)' in stepwise
    assert "replays on a pool: no (it continues partial answers" in stepwise


def test_cli_tables_are_the_command(site: Path) -> None:
    import typer

    from ttc.bench.cli import app

    cli = text(site / "cli/index.html")
    for name in typer.main.get_command(app).commands:
        assert f"ttc {name}" in cli, name
    assert "--dataset str required" in cli and "--strategy str greedy strategy spec" in cli
    assert "--budgets" in cli and "--seeds" in cli  # replay's options


def test_broken_references_fail_the_build(tmp_path: Path) -> None:
    """Strict mode is what catches them: an unknown registry name, a link to a missing page,
    and an API reference that does not exist each fail a build of a copy of the site."""
    import shutil

    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    for bad, expects in [("<!-- options: no_such_strategy -->", ["names no registry entry"]),
                         ("[gone](no-such-page.md) and [gone][ttc.strategies.NoSuchThing]",
                          ["no-such-page.md", "ttc.strategies.NoSuchThing"])]:
        root = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(ROOT / "docs", root / "docs")
        shutil.copy(ROOT / "mkdocs.yml", root / "mkdocs.yml")
        shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
        for folder in ["ttc", "strategies", "verifiers", "routers", "engines"]:
            (root / folder).symlink_to(ROOT / folder, target_is_directory=True)
        (root / "benchmarks").symlink_to(ROOT / "benchmarks", target_is_directory=True)
        shutil.copy(ROOT / "CHANGELOG.md", root / "CHANGELOG.md")
        page = root / "docs" / "budgets.md"
        page.write_text(page.read_text() + f"\n{bad}\n")
        proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                               str(root / "site")], cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0, bad
        for expect in expects:
            assert expect in proc.stdout + proc.stderr, (bad, expect, proc.stderr[-2000:])


def test_package_tree_mirrors_pyproject(tmp_path: Path) -> None:
    from package_dirs import package_tree

    tree = package_tree(ROOT, tmp_path)
    assert (tree / "ttc" / "strategies" / "self_consistency.py").resolve() == (
        ROOT / "strategies" / "self_consistency.py").resolve()
    assert (tree / "ttc" / "engines" / "__init__.py").resolve() == (ROOT / "engines" / "__init__.py").resolve()
    assert (tree / "ttc" / "bench" / "pool.py").resolve() == (ROOT / "ttc" / "bench" / "pool.py").resolve()


def test_sphinx_roles_become_code() -> None:
    from sphinx_roles import plain

    assert plain("see :class:`~ttc.types.Sample` and :func:`ttc.registry.build`.") == (
        "see `Sample` and `ttc.registry.build`.")
    assert plain(":meth:`Strategy.decide`, :mod:`engines.chat`") == "`Strategy.decide`, `engines.chat`"
    assert plain("no roles `here`") == "no roles `here`"


def test_repo_pages_publish_what_they_link_to(tmp_path: Path) -> None:
    from repo_files import _linked

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "run.jsonl").write_text("{}\n")
    (tmp_path / "tool.py").write_text("")
    (tmp_path / "README.md").write_text("")
    (tmp_path / "benchmarks" / "RESULTS.md").write_text(
        "[raw](results/run.jsonl#x) [dir](results/) [script](../tool.py) [gone](missing.md) [web](https://x.org) "
        "[anchor](#top) [outside](../../elsewhere.md) [readme](../README.md)\n")
    assert _linked(tmp_path, "benchmarks/RESULTS.md") == ["benchmarks/results/run.jsonl", "benchmarks/results/",
                                                          "tool.py"]
