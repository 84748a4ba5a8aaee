"""Prometheus metrics of one server: requests, latencies, tokens, and what the engine batched.

`ragbatch_engine_running_requests` is read from vLLM's own scheduler at every engine step
(a stat logger), so it shows how many requests the engine ran together, not how many the
server had accepted.
"""

from __future__ import annotations

import time

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ROUTES = ("/search", "/ask", "/v1/chat/completions", "/health", "/metrics")


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry()
        self.requests = Counter("ragbatch_requests", "HTTP requests by route and status", ["route", "status"], registry=registry)
        self.latency = Histogram(
            "ragbatch_request_seconds", "Request latency to the last byte, by route", ["route"], buckets=LATENCY_BUCKETS, registry=registry
        )
        self.prompt_tokens = Counter("ragbatch_prompt_tokens", "Prompt tokens of finished answers", registry=registry)
        self.completion_tokens = Counter("ragbatch_completion_tokens", "Completion tokens of finished answers", registry=registry)
        self.in_flight = Gauge("ragbatch_engine_requests_in_flight", "Generations sent to the engine and not finished", registry=registry)
        self.aborted = Counter("ragbatch_generations_aborted", "Generations aborted because the client went away", registry=registry)
        self.running = Histogram(
            "ragbatch_engine_running_requests", "Requests the engine ran together, per engine step", buckets=BATCH_BUCKETS, registry=registry
        )
        self.max_running = Gauge("ragbatch_engine_max_running_requests", "Most requests the engine ran together in one step", registry=registry)
        self.generated = Counter("ragbatch_engine_generation_tokens", "Tokens the engine generated, aborted requests included", registry=registry)
        self.unfinished = Gauge("ragbatch_engine_unfinished_requests", "Requests vLLM still tracks (read at scrape time)", registry=registry)
        self.reloads = Counter("ragbatch_store_reloads", "Times a new store version (published, or a local store re-indexed) was opened", registry=registry)
        self.rejected = Counter("ragbatch_requests_rejected", "Requests turned away with 429: every slot and the queue full", registry=registry)
        self.timed_out = Counter("ragbatch_requests_timed_out", "Requests stopped at the request timeout", registry=registry)
        self.retrieval_batch = Histogram("ragbatch_retrieval_batch_size", "Questions embedded and searched together", buckets=BATCH_BUCKETS, registry=registry)

    def observe_engine_step(self, running: int, generated: int) -> None:
        if running:
            self.running.observe(running)
            if running > self.max_running._value.get():
                self.max_running.set(running)
        if generated:
            self.generated.inc(generated)

    def stat_logger_factory(self):
        """A vLLM stat logger factory that feeds `observe_engine_step` (vLLM calls it per engine)."""
        from vllm.v1.metrics.loggers import StatLoggerBase

        metrics = self

        class EngineSteps(StatLoggerBase):
            def __init__(self, vllm_config, engine_index: int = 0):
                pass

            def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
                running = scheduler_stats.num_running_reqs if scheduler_stats is not None else 0
                generated = iteration_stats.num_generation_tokens if iteration_stats is not None else 0
                metrics.observe_engine_step(running, generated)

            def log_engine_initialized(self):
                pass

        return EngineSteps

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI, reading the app's `state.metrics`: counts every request by route and status and times it to its last byte
    (a streamed answer counts when its stream ends). Does not wrap the body, so a client
    disconnect still reaches the route."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        metrics = getattr(scope["app"].state, "metrics", None) if "app" in scope else None
        if scope["type"] != "http" or metrics is None:
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = {"code": 500}
        started = time.perf_counter()

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            metrics.requests.labels(route, str(status["code"])).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)
