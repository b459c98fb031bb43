"""Prometheus metrics of one server (``GET /metrics``), on a registry of its own.

Each app has its own :class:`prometheus_client.CollectorRegistry`, so several apps in one
process (tests, an embedding application) do not clash. Names follow the Prometheus
naming guide (a ``ttc_serve_`` prefix, ``_total`` counters, ``_seconds`` histograms).
Labels carry the model id (a configured strategy, or ``adhoc`` for ad-hoc specs, so a
client cannot create label values at will), never an API key or a prompt.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ttc.types import StrategyResult, Usage

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ServeMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("ttc_serve_requests_total", "Requests answered, by model, endpoint and HTTP status",
                                ["model", "endpoint", "status"], registry=r)
        self.tokens = Counter("ttc_serve_tokens_total", "Tokens metered, by model, kind of work and token type",
                              ["model", "kind", "type"], registry=r)
        self.samples = Counter("ttc_serve_samples_total", "Samples drawn by strategies", ["model"], registry=r)
        self.stop_reasons = Counter("ttc_serve_stop_reasons_total", "Strategy runs by stop reason",
                                    ["model", "reason"], registry=r)
        self.latency = Histogram("ttc_serve_request_seconds", "Request latency (to the last byte)",
                                 ["model", "endpoint", "stream"], buckets=LATENCY_BUCKETS, registry=r)
        self.first_chunk = Histogram("ttc_serve_first_content_seconds", "Time to the first content chunk of a stream",
                                     ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("ttc_serve_in_flight_requests", "Requests running now", registry=r)
        self.queued = Gauge("ttc_serve_queued_requests", "Requests waiting for a slot", registry=r)
        self.refusals = Counter("ttc_serve_budget_refusals_total", "Requests refused for budget, by scope and limit",
                                ["scope", "limit"], registry=r)
        self.overloads = Counter("ttc_serve_overload_refusals_total", "Requests refused because the queue was full",
                                 registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def usage(self, model: str, by_kind: dict[str, Usage]) -> None:
        for kind, u in by_kind.items():
            if u.prompt_tokens:
                self.tokens.labels(model, kind, "prompt").inc(u.prompt_tokens)
            if u.completion_tokens:
                self.tokens.labels(model, kind, "completion").inc(u.completion_tokens)

    def result(self, model: str, result: StrategyResult) -> None:
        self.usage(model, result.usage_by_kind)
        self.samples.labels(model).inc(len(result.samples))
        self.stop_reasons.labels(model, result.stop_reason).inc()
