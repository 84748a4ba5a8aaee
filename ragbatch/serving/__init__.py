"""`ragbatch serve`: the `ask` pipeline behind HTTP.

options.py      what the command takes, checked before any model loads
live_store.py   the store, reloaded when its published link switches or a local store
                is re-indexed (served from a snapshot: no lock held); questions batched
async_engine.py one vLLM AsyncLLM shared by every request (continuous batching)
service.py      one question -> sources, prompt, streamed answer, ask's row
schemas.py      request bodies (validated: 422 names the field)
openai_api.py   the OpenAI chat-completions shapes
metrics.py      Prometheus counters, latencies, tokens and the engine's batch sizes
limits.py       API key, concurrency and queue (429), body size (413), request timeout (504)
app.py          the FastAPI routes
server.py       uvicorn in this process; ray_serve.py: Ray Serve replicas

FastAPI, pydantic and uvicorn are imported at the top of these modules: only `serve`
imports this package.
"""
