"""`ragbatch serve`: the `ask` pipeline behind HTTP.

options.py   what the command takes, checked before any model loads
retrieval.py the store, reloaded when its published link switches; questions batched
engine.py    one vLLM AsyncLLM shared by every request (continuous batching)
answering.py one question -> sources, prompt, streamed answer, ask's row
schemas.py   request bodies (validated: 422 names the field)
openai_api.py the OpenAI chat-completions shapes
metrics.py   Prometheus counters, latencies, tokens and the engine's batch sizes
app.py       the FastAPI routes
server.py    uvicorn in this process, or Ray Serve replicas
"""
