"""The token model of ttc's fake engines: whitespace-preserving word tokens.

:class:`~ttc.engines.ScriptedEngine` and the fault-injecting server
(:mod:`ttc.testing.fault_server`) count and stream text in these tokens, so a test can
compare what either billed with what it handed out.
"""

from __future__ import annotations

import re

__all__ = ["whitespace_tokens"]

_TOKEN_RE = re.compile(r"\s*\S+|\s+\Z")


def whitespace_tokens(text: str) -> list[str]:
    """Whitespace-preserving tokens: each token carries its leading space (trailing
    space is a token of its own). Linear in the text, long whitespace runs included."""
    return _TOKEN_RE.findall(text)
