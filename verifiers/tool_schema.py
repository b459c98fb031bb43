"""A rule verifier for tool calls: do a sample's calls parse and fit the tools' schemas?

:class:`ToolSchemaCheck` scores a sample ``valid`` (1.0) when it made at least one tool
call and every call passes :func:`ttc.tool_calls.check_call` against the prompt's
``tools``: arguments that decode to a JSON object, a function that is one of the tools
(the named one, under a named ``tool_choice``), arguments valid under its ``parameters``
schema (``jsonschema`` when installed, else required properties and their types). Any
other sample scores ``invalid`` (0.0), a sample without calls ``no_call`` (0.0 unless
set: under ``tool_choice="auto"`` a prose answer may be right).

With best-of-N it picks a well-formed call over a malformed one; with weighted
self-consistency only well-formed calls carry weight. It calls no model and costs no
budget. It checks form, not truth: a valid call with the wrong numbers scores 1.
"""

from __future__ import annotations

from typing import Sequence

from ttc.checks import check_number
from ttc.context import RunContext
from ttc.tool_calls import check_call
from ttc.types import Prompt, Sample

from .base import OutcomeVerifier


class ToolSchemaCheck(OutcomeVerifier):
    """Scores tool calls by form (see the module doc)."""

    name = "tool_schema"

    def __init__(self, valid: float = 1.0, invalid: float = 0.0, no_call: float = 0.0):
        for arg, v in (("valid", valid), ("invalid", invalid), ("no_call", no_call)):
            check_number(arg, v, lo=0.0, hi=1.0)
        self.valid, self.invalid, self.no_call = float(valid), float(invalid), float(no_call)

    def problem(self, prompt: Prompt, sample: Sample) -> str | None:
        """What is wrong with the sample's calls (None when they are all valid)."""
        if not sample.tool_calls:
            return "no tool call"
        choice = prompt.tool_choice
        named = choice["function"]["name"] if isinstance(choice, dict) else None
        for c in sample.tool_calls:
            if named is not None and c.name != named:
                return f"{c.name}: tool_choice asks for {named!r}"
            p = check_call(c, prompt.tools)
            if p is not None:
                return p
        return None

    def score_one(self, prompt: Prompt, sample: Sample) -> float:
        if not sample.tool_calls:
            return self.no_call
        return self.valid if self.problem(prompt, sample) is None else self.invalid

    async def score(self, ctx: RunContext, prompt: Prompt, samples: Sequence[Sample]) -> list[float]:
        return [self.score_one(prompt, s) for s in samples]

    def __repr__(self) -> str:
        return f"ToolSchemaCheck(valid={self.valid}, invalid={self.invalid}, no_call={self.no_call})"
