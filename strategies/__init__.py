"""Test-time strategies. Every one has the call shape of :class:`ttc.strategy.Strategy`."""

from .allocator import (
    AllocationResult,
    Allocator,
    BinPolicy,
    CurveGain,
    FlawsPolicy,
    QuestionResult,
    VotePosteriorGain,
    fit_bin_table,
)
from .compute_optimal import BinChoice, ComputeOptimal, Policy
from .confidence import (
    WindowConfidence,
    group_confidences,
    token_confidences,
    trace_confidence,
    trace_metrics,
)
from .deepconf import DeepConf
from .particle_filter import (
    ParticleFiltering,
    ParticleGibbs,
    effective_sample_size,
    genealogy_graph,
    multinomial_resample,
    particle_weights,
    systematic_resample,
)
from .rpc import (
    ComplexityVoter,
    ComplexityVoting,
    PerplexityConsistency,
    RPCVoter,
    complexity_vote,
    prune_paths,
    rpc_vote,
)
from .self_consistency import PlainSampler, Sampler, SelfConsistency
from .simple import BestOfN, Greedy
from .steps import StepPolicy, Trajectory
from .stopping import (
    BetaRule,
    CertaindexEntropy,
    DeepConfConsensus,
    DirichletRule,
    ESCWindow,
    FixedN,
    StopCheck,
    StoppingRule,
    VerifiedAnswer,
    beta_posterior,
    certaindex,
    dirichlet_posterior,
)
from .tree_search import DVTS, BeamSearch
from .voting import class_votes, pick_max, vote

__all__ = [
    "BinChoice",
    "ComputeOptimal",
    "Policy",
    "AllocationResult",
    "Allocator",
    "BinPolicy",
    "CurveGain",
    "FlawsPolicy",
    "QuestionResult",
    "VotePosteriorGain",
    "fit_bin_table",
    "DVTS",
    "BeamSearch",
    "BestOfN",
    "BetaRule",
    "CertaindexEntropy",
    "ComplexityVoter",
    "ComplexityVoting",
    "PlainSampler",
    "RPCVoter",
    "Sampler",
    "DeepConf",
    "DeepConfConsensus",
    "VerifiedAnswer",
    "DirichletRule",
    "ESCWindow",
    "FixedN",
    "Greedy",
    "ParticleFiltering",
    "ParticleGibbs",
    "PerplexityConsistency",
    "SelfConsistency",
    "StepPolicy",
    "StopCheck",
    "StoppingRule",
    "Trajectory",
    "WindowConfidence",
    "beta_posterior",
    "certaindex",
    "class_votes",
    "complexity_vote",
    "dirichlet_posterior",
    "effective_sample_size",
    "genealogy_graph",
    "group_confidences",
    "multinomial_resample",
    "particle_weights",
    "pick_max",
    "prune_paths",
    "rpc_vote",
    "systematic_resample",
    "token_confidences",
    "trace_confidence",
    "trace_metrics",
    "vote",
]

from .certainty import CertaintyBudgetCurve
from .certainty import certaindex as certaindex_of_answers
from .early_exit import PRESETS as EARLY_EXIT_PRESETS
from .early_exit import PROBE_STYLES, DynasorCoT, EarlyExit, EarlyExitSelfConsistency, ProbeStyle
from .self_eval import SelfEvalGate, SelfEvalPruning, SelfEvaluator, calibrate_threshold

__all__ += [  # noqa: RUF022
    "CertaintyBudgetCurve", "DynasorCoT", "EARLY_EXIT_PRESETS", "EarlyExit", "EarlyExitSelfConsistency",
    "PROBE_STYLES", "ProbeStyle", "SelfEvalGate", "SelfEvalPruning", "SelfEvaluator", "calibrate_threshold",
    "certaindex_of_answers",
]
