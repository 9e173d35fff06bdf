"""The service's Prometheus metrics (GET /metrics, text format).

    seqrec_http_requests_total{method, path, status}      requests answered
    seqrec_http_request_duration_seconds{method, path}    time from the request's arrival in the app to its answer
    seqrec_batch_histories, seqrec_batch_requests         histories and requests per scoring call
    seqrec_scoring_seconds                                duration of one scoring call
    seqrec_ready                                          1 once the model is loaded and warmed up

`path` is one of the app's paths, or 'other' (so that random URLs cannot create unbounded label values). Each app
has its own registry. With several worker processes (`seqrec serve --workers N`) the CLI sets
PROMETHEUS_MULTIPROC_DIR and each /metrics answer adds up the values of all workers (prometheus_client's
multiprocess mode).
"""
from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServeMetrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("seqrec_http_requests", "HTTP requests answered, by method, path and status",
                                ["method", "path", "status"], registry=r)
        self.latency = Histogram("seqrec_http_request_duration_seconds", "time to answer a request",
                                 ["method", "path"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_histories = Histogram("seqrec_batch_histories", "histories per scoring call",
                                         buckets=SIZE_BUCKETS, registry=r)
        self.batch_requests = Histogram("seqrec_batch_requests", "requests per scoring call",
                                        buckets=SIZE_BUCKETS, registry=r)
        self.scoring = Histogram("seqrec_scoring_seconds", "duration of one scoring call",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ready = Gauge("seqrec_ready", "1 once the model is loaded and warmed up", registry=r,
                           multiprocess_mode="max")

    def observe_request(self, method: str, path: str, status: int, seconds: float) -> None:
        self.requests.labels(method, path, str(status)).inc()
        self.latency.labels(method, path).observe(seconds)

    def observe_batch(self, histories: int, requests: int, seconds: float) -> None:
        self.batch_histories.observe(histories)
        self.batch_requests.observe(requests)
        self.scoring.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of GET /metrics."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
