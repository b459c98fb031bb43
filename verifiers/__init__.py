"""Verifiers: outcome verifiers score complete samples, process verifiers score steps."""

from .base import OutcomeVerifier
from .judge import LLMJudge, p_yes
from .process import (
    ArithmeticStepCheck,
    LLMJudgeStepVerifier,
    ProcessAsOutcome,
    ProcessVerifier,
    RemotePRM,
    StepScores,
)
from .reward_model import LocalRewardModel, RemoteRewardModel
from .rules import ArithmeticCheck, Equation, check_equations, equations, numbers_in, numerals_in
from .self_certainty import MeanLogprob, SelfCertainty, self_certainty
from .tool_schema import ToolSchemaCheck

__all__ = [
    "ArithmeticCheck",
    "ArithmeticStepCheck",
    "LLMJudge",
    "LLMJudgeStepVerifier",
    "LocalRewardModel",
    "MeanLogprob",
    "OutcomeVerifier",
    "ProcessAsOutcome",
    "ProcessVerifier",
    "RemotePRM",
    "RemoteRewardModel",
    "SelfCertainty",
    "StepScores",
    "ToolSchemaCheck",
    "TransformersPRM",
    "check_equations",
    "equations",
    "numbers_in",
    "numerals_in",
    "Equation",
    "p_yes",
    "self_certainty",
]


def __getattr__(name: str):  # lazy: transformers is heavy
    if name == "TransformersPRM":
        from .prm import TransformersPRM

        return TransformersPRM
    raise AttributeError(name)
