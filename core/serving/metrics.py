"""The server's Prometheus metrics, in a registry of its own (two apps in one process do not collide): requests
by endpoint and status, request latency, requests in progress, and for each model the inputs and callers per model
run, the run time and the queue depth (read when scraped)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class _QueueDepth:
    """The queue depth of each model, read at scrape time."""

    def __init__(self, queues: Callable[[], dict[str, Any]]) -> None:
        self._queues = queues

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("flagstack_queue_depth", "model calls waiting in the model's queue",
                                   labels=["model"])
        for name, queue in self._queues().items():
            family.add_metric([name], float(queue.depth))
        yield family


class Metrics:
    """The metrics of one app; ``queues()`` gives each loaded model's call queue by name."""

    def __init__(self, queues: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("flagstack_requests", "HTTP requests answered", ["endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram("flagstack_request_seconds", "time to answer a request", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_progress = Gauge("flagstack_requests_in_progress", "requests being answered", registry=self.registry)
        self.batch_inputs = Histogram("flagstack_batch_inputs", "inputs in one model run (all callers)", ["model"],
                                      buckets=SIZE_BUCKETS, registry=self.registry)
        self.batch_callers = Histogram("flagstack_batch_callers", "callers whose inputs shared one model run",
                                       ["model"], buckets=SIZE_BUCKETS, registry=self.registry)
        self.run_seconds = Histogram("flagstack_model_run_seconds", "time of one model run", ["model"],
                                     buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_QueueDepth(queues))  # type: ignore[arg-type]

    def observer(self, model: str) -> Callable[[int, int, float], None]:
        """The callback for a model's queue (``queue.observers``): one model run of ``callers`` callers'
        ``inputs`` inputs that took ``seconds``."""

        def observe(callers: int, inputs: int, seconds: float) -> None:
            self.batch_callers.labels(model).observe(callers)
            self.batch_inputs.labels(model).observe(inputs)
            self.run_seconds.labels(model).observe(seconds)

        return observe
