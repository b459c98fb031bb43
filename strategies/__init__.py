"""Test-time strategies. Every one has the call shape of :class:`ttc.strategy.Strategy`."""

from .confidence import WindowConfidence, group_confidences, token_confidences, trace_confidence, trace_metrics
from .deepconf import DeepConf
from .rpc import ComplexityVoting, PerplexityConsistency, complexity_vote, prune_paths, rpc_vote
from .self_consistency import SelfConsistency
from .simple import BestOfN, Greedy
from .stopping import (
    BetaRule,
    CertaindexEntropy,
    DeepConfConsensus,
    DirichletRule,
    ESCWindow,
    FixedN,
    StopCheck,
    StoppingRule,
    beta_posterior,
    certaindex,
    dirichlet_posterior,
)
from .voting import class_votes, pick_max, vote

__all__ = [
    "BestOfN", "Greedy", "class_votes", "pick_max", "vote",
    "SelfConsistency", "DeepConf", "PerplexityConsistency", "ComplexityVoting",
    "rpc_vote", "complexity_vote", "prune_paths",
    "StoppingRule", "StopCheck", "FixedN", "BetaRule", "DirichletRule", "ESCWindow", "CertaindexEntropy",
    "DeepConfConsensus", "beta_posterior", "dirichlet_posterior", "certaindex",
    "WindowConfidence", "token_confidences", "group_confidences", "trace_confidence", "trace_metrics",
]
