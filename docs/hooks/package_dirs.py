"""Lets mkdocstrings (griffe) find ``ttc.strategies``, ``ttc.engines``, ... in their own folders.

ttc maps subpackages to top-level folders (``[tool.setuptools] package-dir`` in pyproject.toml:
``ttc.strategies`` is ``strategies/``). griffe reads packages from the file tree and finds a
subpackage only inside its parent's folder, so it would miss them. Before the build, this hook
lays out the package as an install would, in a temporary folder of symbolic links to the real
files, and points the python handler there (its ``paths`` in mkdocs.yml are the fallback). The
links are live, so ``mkdocs serve`` sees edits; the folder is removed when mkdocs shuts down.
"""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from pathlib import Path

from mkdocs.plugins import event_priority

_mirrors: list[Path] = []


def package_tree(root: Path, dest: Path) -> Path:
    """Lay out every package of ``root``'s pyproject.toml under ``dest`` as links; returns ``dest``."""
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = setup.get("package-dir", {})
    for name in sorted(mapping, key=lambda n: n.count(".")):  # parents before their subpackages
        src = (root / mapping[name]).resolve()
        if not (src / "__init__.py").exists():
            raise FileNotFoundError(f"pyproject.toml package-dir: {name} -> {src} is not a package")
        target = dest.joinpath(*name.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for entry in src.iterdir():
            if entry.name != "__pycache__" and not (target / entry.name).exists():
                (target / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return dest


@event_priority(100)  # before mkdocstrings' on_config, which creates the handler
def on_config(config):  # type: ignore[no-untyped-def]
    root = Path(config.config_file_path).resolve().parent
    mirror = package_tree(root, Path(tempfile.mkdtemp(prefix="ttc-docs-packages-")))
    _mirrors.append(mirror)
    python = config.plugins["mkdocstrings"].config.handlers.setdefault("python", {})
    python["paths"] = [str(mirror)]
    return config


def on_shutdown() -> None:
    while _mirrors:
        shutil.rmtree(_mirrors.pop(), ignore_errors=True)
