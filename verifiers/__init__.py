"""Verifiers: outcome verifiers score complete samples, process verifiers score steps."""

from .base import OutcomeVerifier
from .rules import ArithmeticCheck, check_equations

__all__ = ["OutcomeVerifier", "ArithmeticCheck", "check_equations"]
