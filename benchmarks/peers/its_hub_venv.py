"""its_hub's own virtual environment: ``its-hub[lm]==1.2.0`` installed with pip into
``$TTC_CACHE/peers/its-hub-1.2.0`` (default ``~/.cache/ttc``), never into ttc's ``.venv``.

``ensure()`` returns the environment's python, creating the environment when it is missing
or does not import its_hub at that version; it raises :class:`PeerUnavailable` with pip's
last lines when it cannot be installed (no network, no index), so the benchmark can skip
with that message.

    python benchmarks/peers/its_hub_venv.py      # create it; print its python
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

VERSION = "1.2.0"
REQUIREMENT = f"its-hub[lm]=={VERSION}"


class PeerUnavailable(RuntimeError):
    """its_hub could not be installed or imported: the message says why."""


def default_dir() -> Path:
    return Path(os.environ.get("TTC_CACHE", Path.home() / ".cache" / "ttc")) / "peers" / f"its-hub-{VERSION}"


def _python(root: Path) -> Path:
    return root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def installed_version(python: Path) -> str | None:
    """its_hub's version as that python imports it (with its LM extra), or None."""
    if not python.exists():
        return None
    probe = "import aiohttp, backoff, its_hub; print(its_hub.__version__)"
    r = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120)
    return r.stdout.strip() if r.returncode == 0 else None


def ensure(root: Path | None = None, *, quiet: bool = True) -> Path:
    """The python of a virtual environment with ``its-hub[lm]==1.2.0`` (created when missing)."""
    root = root or default_dir()
    python = _python(root)
    if installed_version(python) == VERSION:
        return python
    try:
        venv.EnvBuilder(with_pip=True, clear=python.exists()).create(root)
    except (OSError, subprocess.CalledProcessError) as e:
        raise PeerUnavailable(f"cannot create a virtual environment at {root}: {e}") from None
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *(["-q"] if quiet else []), REQUIREMENT]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-8:])
        raise PeerUnavailable(f"pip could not install {REQUIREMENT} into {root}:\n{tail}")
    got = installed_version(python)
    if got != VERSION:
        raise PeerUnavailable(f"{root}: its_hub installed but imports as version {got!r}, expected {VERSION}")
    return python


if __name__ == "__main__":
    try:
        print(ensure(quiet=False))
    except PeerUnavailable as e:
        sys.exit(str(e))
