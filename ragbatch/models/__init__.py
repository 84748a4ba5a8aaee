"""Models: where their weights come from (weights.py: one rule for the embedder and the
LLM, conversion.py for the packaged GGUF), which device runs them (devices.py), and the
embedding model itself (embedder.py). Generation with vLLM is generation/'s."""
