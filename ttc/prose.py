"""Is an answer words or math? One test that the grader, the whitelist parser and the
equivalence cache share.

Its own module (no sympy, no worker pool) so that :mod:`ttc.safe_math` and
:mod:`ttc.grading` both use it without importing each other.
"""

from __future__ import annotations

import re

__all__ = ["looks_like_prose"]

_PROSE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{4,}")
_LATEX_CMD = re.compile(r"\\(?:begin|end)\{[A-Za-z]+\*?\}|\\[A-Za-z]+")  # environments are commands too


def looks_like_prose(text: str) -> bool:
    """A run of four or more letters outside a LaTeX command (``\\frac`` and
    ``\\begin{pmatrix}`` are fine, "city" is not): words are compared as text, never as
    products of symbols."""
    return _PROSE.search(_LATEX_CMD.sub(" ", text.replace("\\text", " "))) is not None
