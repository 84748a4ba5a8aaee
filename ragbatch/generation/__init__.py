"""Generation: the part of `ask` and `serve` after retrieval.

settings.py holds the options both share and prepares them; prompting.py builds a
prompt within the context window; rows.py is the per-question flow (prompt, answer row);
vllm_engine.py configures vLLM; batch.py runs a batch through one engine; pricing.py
and tokencount.py give costs and tiktoken counts.
"""
