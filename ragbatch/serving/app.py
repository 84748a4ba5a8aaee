"""The HTTP routes (FastAPI): /search, /ask, /v1/chat/completions, /v1/models, /health, /metrics.

Bad input: a malformed body gets 422 with the field in `detail[].loc`; a question too long
for the context window 413 with its token count. Retrieval and prompt building happen
before a streamed response starts, so both still get a real status code.
"""

from __future__ import annotations

import json
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ragbatch.retrieval.sources import ranked_sources
from ragbatch.serving.limits import Guard, error_body
from ragbatch.serving.metrics import Metrics, MetricsMiddleware
from ragbatch.serving.openai_api import Completion
from ragbatch.serving.options import Prepared
from ragbatch.serving.schemas import AskRequest, ChatRequest, SearchRequest
from ragbatch.serving.service import BadRequest, Service

SSE = "text/event-stream"


def create_app(prepared: Prepared, notify=lambda line: None) -> FastAPI:
    """The app holds only settings until its lifespan starts: Ray Serve pickles it to each
    replica, which then loads its own models and keeps its own metrics."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.metrics = Metrics()
        service = Service(prepared, app.state.metrics, notify)
        app.state.service = service
        notify(f"serving {prepared.options.store} (version {service.retriever.version}) with {prepared.setup.llm_name}")
        try:
            yield
        finally:
            service.close()

    app = FastAPI(title="ragbatch", lifespan=lifespan)
    app.add_middleware(Guard, limits=prepared.options.limits)  # inside the metrics: 401s and 429s are counted
    app.add_middleware(MetricsMiddleware)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        if exc.status == 422:
            return JSONResponse({"detail": [{"loc": ["body", exc.field] if exc.field else ["body"], "msg": str(exc), "type": "value_error"}]}, 422)
        return JSONResponse({"detail": str(exc), **exc.extra}, exc.status)

    def service(request: Request) -> Service:
        return request.app.state.service

    @app.get("/health")
    async def health(request: Request):
        s = service(request)
        version = s.retriever.version
        return {"status": "ok", "store": str(prepared.options.store), "version": version, "llm": s.llm, "embedder": s.retriever.embedder, "pid": os.getpid()}

    @app.get("/metrics")
    async def metrics_text(request: Request):
        from prometheus_client import REGISTRY, generate_latest

        metrics = request.app.state.metrics
        metrics.unfinished.set(service(request).engine.unfinished())
        # Ours, then vLLM's own (vllm:* series, from its Prometheus stat logger).
        return Response(metrics.render() + generate_latest(REGISTRY), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/search")
    async def search(body: SearchRequest, request: Request):
        found = await service(request).search(body.question, body.selection())
        return {
            "question": body.question,
            "store": str(prepared.options.store),
            "version": found.version,
            "retrieval": body.retrieval,
            "results": ranked_sources(found.hits),
        }

    @app.post("/ask")
    async def ask(body: AskRequest, request: Request):
        s = service(request)
        pending = await s.retrieve(body.question, body.id, body.selection(), body.max_tokens)
        answers = s.answer(pending, body.max_tokens, body.temperature, body.seed, body.ignore_eos)
        if not body.stream:
            row = await _last_row(answers)
            return {**row, "store": str(prepared.options.store), "version": pending.version}

        async def events():
            head = {k: pending.row[k] for k in ("id", "sources", "chunk_ids", "scores", "passages_used")}
            yield _event("sources", {**head, "store": str(prepared.options.store), "version": pending.version})
            async for delta, row in answers:
                if delta:
                    yield _event("token", {"text": delta})
                if row is not None:
                    yield _event("answer", {**row, "store": str(prepared.options.store), "version": pending.version})

        return StreamingResponse(events(), media_type=SSE)

    @app.get("/v1/models")
    async def models(request: Request):
        return {"object": "list", "data": [{"id": service(request).llm, "object": "model", "created": 0, "owned_by": "ragbatch"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        s = service(request)
        if body.model not in (None, s.llm):
            message = f"The model `{body.model}` does not exist; this server answers with `{s.llm}` (GET /v1/models)"
            return JSONResponse(error_body(message, "invalid_request_error", "model_not_found", "model"), 404)
        max_tokens = body.max_completion_tokens or body.max_tokens or 128
        temperature = 0.0 if body.temperature is None else body.temperature  # ask's default: the same answers
        pending = await s.retrieve(body.question(), None, body.selection(), max_tokens, body.system_prompt())
        answers = s.answer(pending, max_tokens, temperature, body.seed, body.ignore_eos)
        completion = Completion(s.llm)
        sources = ranked_sources(pending.hits)
        if not body.stream:
            return completion.response(await _last_row(answers), sources, str(prepared.options.store), pending.version)

        include_usage = bool((body.stream_options or {}).get("include_usage"))

        async def chunks():
            yield _data(completion.chunk({"role": "assistant", "content": ""}, sources=sources, store=str(prepared.options.store), version=pending.version))
            async for delta, row in answers:
                if delta:
                    yield _data(completion.chunk({"content": delta}))
                if row is not None:
                    yield _data(completion.chunk({}, row["finish_reason"], cost_usd=row["cost_usd"], citations=row["citations"]))
                    if include_usage:
                        yield _data(completion.usage_chunk(row))
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type=SSE)

    return app


async def _last_row(answers) -> dict:
    row: dict = {}
    async for _, finished in answers:
        row = finished if finished is not None else row
    return row


def _event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _data(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"
