"""Verifier interfaces.

An *outcome verifier* scores complete samples; a *process verifier* (step-wise
search) scores a list of steps. Verifiers that call a model do so through the
:class:`~ttc.context.RunContext`, so their calls are reserved and charged to the
run's budget like generations (kind ``"verify"``).
"""

from __future__ import annotations

import abc
from typing import Sequence

from ttc.context import RunContext
from ttc.strategy import Describable
from ttc.types import Prompt, Sample


class OutcomeVerifier(Describable, abc.ABC):
    """Scores complete samples; higher is better. Scores are in [0, 1] unless noted."""

    name: str = "verifier"

    @abc.abstractmethod
    async def score(self, ctx: RunContext, prompt: Prompt, samples: Sequence[Sample]) -> list[float]:
        """One score per sample, in order."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
