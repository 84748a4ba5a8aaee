"""Retrieval: questions in, ranked chunks out.

selection.py is what a search may retrieve (mode, k, filters, diversity); filters.py
restricts it to some chunks; fusion.py fuses the dense and BM25 lists; sources.py reads
and cites sources; retriever.py runs a batch of questions against an open store.
"""
