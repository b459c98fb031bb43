"""ttc: test-time compute for LLMs under real budgets.

Core: :mod:`ttc.types` (data), :mod:`ttc.budget` (limits and meters),
:mod:`ttc.engine` (the async engine protocol), :mod:`ttc.context` (metered engine
access for strategies), :mod:`ttc.strategy` (the strategy base class),
:mod:`ttc.answers` (extraction and equivalence), :mod:`ttc.sync` (blocking facade),
:mod:`ttc.models` (the bundled real models), :mod:`ttc.questions` (questions with
reference answers). Strategies, verifiers, routers and engines live in
``ttc.strategies``, ``ttc.verifiers``, ``ttc.routers``, ``ttc.engines``; the registry
(:mod:`ttc.registry`: any of them by name and config, ``strategy.describe()`` back) sits
above them; the bench layer (datasets, runs, pools, replay, metrics, the ``ttc`` command)
in ``ttc.bench``.
"""

from .answers import Equivalence, extract_answer, group_answers, normalize
from .budget import Budget, BudgetExhausted, Meter
from .context import RunContext
from .engine import Capabilities, ContinuationScope, Engine, EngineError
from .strategy import Decision, SampleSet, Strategy
from .sync import run_sync
from .types import (
    Generation,
    GenerationResult,
    Message,
    Prompt,
    Sample,
    SamplingParams,
    StrategyResult,
    StreamDelta,
    TokenLogprob,
    TopLogprob,
    TraceEvent,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "Budget", "BudgetExhausted", "Capabilities", "ContinuationScope", "Decision", "Engine", "EngineError", "Equivalence",
    "Generation", "GenerationResult", "Message", "Meter", "Prompt", "RunContext", "Sample", "SampleSet",
    "SamplingParams", "Strategy", "StrategyResult", "StreamDelta", "TokenLogprob", "TopLogprob", "TraceEvent",
    "Usage", "extract_answer", "group_answers", "normalize", "run_sync",
]
