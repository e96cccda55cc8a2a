"""Prometheus metrics of one gateway replica.

Each service gets its own ``CollectorRegistry`` (not the process-global one) so that several services in
one process (tests, a replica restarted in place) never collide on metric names. With several replicas,
each answers ``/metrics`` for itself; scrape each replica, or aggregate with Ray's own metrics export.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series double the scrape for no use here
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("esteira_gateway_requests", "Prediction requests answered.",
                                ["model", "version", "route", "status"], registry=r)
        self.errors = Counter("esteira_gateway_request_errors", "Requests refused or failed, by reason.",
                              ["model", "route", "status", "reason"], registry=r)
        self.latency = Histogram("esteira_gateway_request_latency_seconds",
                                 "Time from request parsed to response built.", ["model", "route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.rows = Counter("esteira_gateway_rows_scored", "Rows scored.", ["model", "version", "role"],
                            registry=r)
        self.loaded_version = Gauge("esteira_gateway_loaded_version", "Version serving each model alias.",
                                    ["model", "alias"], registry=r)
        self.load_refused = Counter("esteira_gateway_load_refused", "Versions refused at load.", ["model"],
                                    registry=r)
        self.registry_up = Gauge("esteira_gateway_registry_up", "1 if the last registry poll succeeded.",
                                 registry=r)
        self.log_dropped = Counter("esteira_gateway_inference_log_dropped",
                                   "Inference log records dropped because the buffer was full.", registry=r)
        self.log_errors = Counter("esteira_gateway_inference_log_write_errors", "Failed log writes.",
                                  registry=r)
        self.shadow_errors = Counter("esteira_gateway_shadow_errors", "Shadow predictions that failed.",
                                     ["model"], registry=r)
        self.feedback_rejected = Counter("esteira_gateway_feedback_rejected",
                                         "Labels refused: no answer with their request id within the horizon.",
                                         ["model"], registry=r)
        self.feedback_quarantined = Counter("esteira_gateway_feedback_quarantined",
                                            "Labels the log could not store as parquet, set aside as JSON lines.",
                                            registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
