"""Publishes repository files the docs link to, as they are in the repository.

``benchmarks/RESULTS.md`` (the measured figures), the raw tables, notes and plots under
``benchmarks/``, and ``CHANGELOG.md`` become pages and files of the site at the same paths
(``benchmarks/RESULTS.md`` -> ``/benchmarks/RESULTS/``), so figures are never copied by hand
and their own relative links resolve, and are checked, in the strict build. A link from one of
them to a folder (``[results/](results/)``, which GitHub shows as a listing) goes to a
generated listing of the folder's published files.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, InclusionLevel

PATTERNS = ("CHANGELOG.md", "benchmarks/RESULTS.md", "benchmarks/**/*.md", "benchmarks/**/*.png")
IN_NAV = {"CHANGELOG.md", "benchmarks/RESULTS.md"}
FOLDER_LINK = re.compile(r"\]\((?P<path>(?!\w+://)[\w./-]+)/\)")

_published: set[str] = set()


def on_files(files, config):  # type: ignore[no-untyped-def]
    root = Path(config.config_file_path).resolve().parent
    _published.clear()
    for pattern in PATTERNS:
        for path in sorted(root.glob(pattern)):
            rel = path.relative_to(root).as_posix()
            if rel in _published or files.get_file_from_path(rel) is not None:
                continue
            f = File(rel, src_dir=str(root), dest_dir=config.site_dir, use_directory_urls=config.use_directory_urls)
            if rel not in IN_NAV:
                f.inclusion = InclusionLevel.NOT_IN_NAV  # reached by links, listed in no menu
            files.append(f)
            _published.add(rel)
    folders = {rel.rsplit("/", 1)[0] for rel in _published if "/" in rel}
    for folder in sorted(folders):
        index = f"{folder}/index.md"
        if files.get_file_from_path(index) is None and index not in _published:
            names = sorted(r.rsplit("/", 1)[1] for r in _published if r.rsplit("/", 1)[0] == folder)
            body = f"# `{folder}/`\n\n" + "".join(f"- [{n}]({n})\n" for n in names)
            f = File.generated(config, index, content=body, inclusion=InclusionLevel.NOT_IN_NAV)
            files.append(f)
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:  # type: ignore[no-untyped-def]
    if page.file.src_uri not in _published:
        return markdown
    return FOLDER_LINK.sub(lambda m: f"]({m['path']}/index.md)", markdown)
