"""Test-time strategies. Every one has the call shape of :class:`ttc.strategy.Strategy`."""

from .simple import BestOfN, Greedy
from .voting import class_votes, pick_max, vote

__all__ = ["BestOfN", "Greedy", "class_votes", "pick_max", "vote"]
