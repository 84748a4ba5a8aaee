"""Ingest: files in, a store's chunks, vectors and BM25 index out (`ragbatch index`).

readers/ find files and read them into sections; chunking.py cuts sections into chunks;
stages.py is the one function both executors run per file; executor.py is their
protocol (local_executor.py in this process, ray_executor.py on Ray Data); writer.py is
the write loop; pipeline.py puts them together.
"""
