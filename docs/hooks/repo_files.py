"""Publishes repository files the docs link to, as they are in the repository.

``benchmarks/RESULTS.md`` (the measured figures), the tables, notes and plots under
``benchmarks/``, and ``CHANGELOG.md`` become pages and files of the site at the same paths
(``benchmarks/RESULTS.md`` -> ``/benchmarks/RESULTS/``), so figures are never copied by hand
and their own relative links resolve, and are checked, in the strict build. Any other file of
the repository that one of them links to (a raw results file, a script) is published with them;
a link to a folder (``[results/](results/)``, which GitHub shows as a listing) goes to a
generated listing of the folder's files. A link to something that is not in the repository
stays broken, and fails the strict build.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from mkdocs.structure.files import File, InclusionLevel

PATTERNS = ("CHANGELOG.md", "benchmarks/RESULTS.md", "benchmarks/**/*.md", "benchmarks/**/*.png")
IN_NAV = {"CHANGELOG.md", "benchmarks/RESULTS.md"}
LINK = re.compile(r"\]\((?P<target>(?!\w+:|#|/)[^)\s]+)\)")
NOT_FOLLOWED = {"README.md"}  # the repository's README would clash with the site's index page

_published: set[str] = set()
_folders: set[str] = set()


def _linked(root: Path, rel: str) -> list[str]:
    """Repository paths (files, or folders ending in ``/``) that the markdown file ``rel`` links to."""
    out = []
    for m in LINK.finditer((root / rel).read_text(encoding="utf-8")):
        target = m["target"].split("#", 1)[0]
        if not target:
            continue
        joined = PurePosixPath(rel).parent / target
        parts: list[str] = []
        for part in joined.parts:
            if part == "..":
                if not parts:
                    break  # outside the repository
                parts.pop()
            elif part != ".":
                parts.append(part)
        else:
            path = "/".join(parts)
            if path and path not in NOT_FOLLOWED and (root / path).exists():
                out.append(path + "/" if (root / path).is_dir() else path)
    return out


def _publish(files, config, root: Path, rel: str) -> None:  # type: ignore[no-untyped-def]
    if rel in _published or files.get_file_from_path(rel) is not None:
        return
    f = File(rel, src_dir=str(root), dest_dir=config.site_dir, use_directory_urls=config.use_directory_urls)
    if rel not in IN_NAV:
        f.inclusion = InclusionLevel.NOT_IN_NAV  # reached by links, listed in no menu
    files.append(f)
    _published.add(rel)


def on_files(files, config):  # type: ignore[no-untyped-def]
    root = Path(config.config_file_path).resolve().parent
    _published.clear()
    _folders.clear()
    todo = [p.relative_to(root).as_posix() for pattern in PATTERNS for p in sorted(root.glob(pattern))]
    while todo:
        rel = todo.pop(0)
        if rel.endswith("/"):
            folder = rel.rstrip("/")
            if folder not in _folders:
                _folders.add(folder)
                todo += [p.relative_to(root).as_posix() for p in sorted((root / folder).iterdir())
                         if p.is_file() and not p.name.startswith(".") and p.name not in NOT_FOLLOWED]
            continue
        if rel in _published:
            continue
        _publish(files, config, root, rel)
        if rel.endswith(".md"):
            todo += _linked(root, rel)
    for folder in sorted(_folders):
        index = f"{folder}/index.md"
        if files.get_file_from_path(index) is None and index not in _published:
            names = sorted(r.rsplit("/", 1)[1] for r in _published if r.rsplit("/", 1)[0] == folder)
            body = f"# `{folder}/`\n\n" + "".join(f"- [{n}]({n})\n" for n in names)
            files.append(File.generated(config, index, content=body, inclusion=InclusionLevel.NOT_IN_NAV))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:  # type: ignore[no-untyped-def]
    if page.file.src_uri not in _published:
        return markdown
    return re.sub(r"\]\((?P<path>(?!\w+:)[\w./-]+)/\)", lambda m: f"]({m['path']}/index.md)", markdown)
