"""ttc.routers: the semantic reasoning router (Wang et al. 2025, "When to Reason:
Semantic Router for vLLM") as a composable strategy, with its encoders, classifiers,
routes, decision policy and calibration."""

from .calibrate import (
    CategoryEntry,
    ItemRecord,
    Measurement,
    RoutingTable,
    calibrate,
    choose_routes,
    default_grader,
    measure,
    prompt_options,
    summarise,
)
from .classifiers import (
    KNN,
    EmbeddingClassifier,
    LogisticRegression,
    NearestPrototype,
    fit_jsonl,
    load_classifier,
    load_labelled_jsonl,
    make_classifier,
    save_labelled_jsonl,
)
from .encoders import (
    EncodedClassifier,
    FunctionClassifier,
    KeywordClassifier,
    ProbabilisticClassifier,
    QueryEncoder,
    SentenceTransformerEncoder,
    VLLMEmbeddingEncoder,
)
from .policy import ComplexitySignal, EntropyBandPolicy, RoutingDecision, entropy_band, normalised_entropy
from .router import SemanticRouter
from .routes import CategoryRoute, Route, SwitchedEngine, detect_family, run_route

__all__ = [
    "KNN", "CategoryEntry", "CategoryRoute", "ComplexitySignal", "EmbeddingClassifier", "EncodedClassifier",
    "EntropyBandPolicy", "FunctionClassifier", "KeywordClassifier", "ItemRecord", "LogisticRegression", "Measurement",
    "NearestPrototype", "ProbabilisticClassifier", "QueryEncoder", "Route", "RoutingDecision", "RoutingTable",
    "SemanticRouter", "SentenceTransformerEncoder", "SwitchedEngine", "VLLMEmbeddingEncoder", "calibrate",
    "choose_routes", "default_grader", "detect_family", "entropy_band", "fit_jsonl", "load_classifier",
    "load_labelled_jsonl", "make_classifier", "measure", "normalised_entropy", "prompt_options", "run_route",
    "save_labelled_jsonl", "summarise",
]
