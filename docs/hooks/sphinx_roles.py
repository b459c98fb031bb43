"""A griffe extension: Sphinx cross-reference roles in docstrings read as code in the API reference.

ttc's docstrings name other objects the Sphinx way (``:class:`~ttc.types.Sample```,
``:func:`ttc.registry.build```). mkdocstrings renders Markdown, where those would show their
colons and backticks; this writes each one as inline code, with the last component only when the
target starts with ``~`` (as Sphinx shows it). The source files are not changed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|const|py:\w+):`(?P<tilde>~?)(?P<target>[^`]+)`")


def plain(text: str) -> str:
    def code(m: re.Match[str]) -> str:
        target = m["target"].strip()
        if m["tilde"]:
            target = target.rsplit(".", 1)[-1]
        return f"`{target}`"

    return ROLE.sub(code, text)


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, node: Any, obj: griffe.Object, agent: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
