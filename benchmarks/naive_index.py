"""The ~20 lines a user would write instead of `ragbatch index` (index_bench.py times it,
imports included, against the command): read, split into ~1000-character chunks at line
breaks, embed with the same model, add to a Chroma collection on disk.

    python benchmarks/naive_index.py CORPUS STORE [BATCH_SIZE]
"""

import sys

import chromadb
from sentence_transformers import SentenceTransformer

from ragbatch.models.embedder import resolve_embedder  # only to find the packaged model's folder

corpus, store = sys.argv[1], sys.argv[2]
batch_size = int(sys.argv[3]) if len(sys.argv) > 3 else 32
chunks, current = [], ""
for line in open(corpus, encoding="utf-8-sig"):
    if current and len(current) + len(line) > 1000:
        chunks.append(current.strip())
        current = ""
    current += line
if current.strip():
    chunks.append(current.strip())
model = SentenceTransformer(resolve_embedder(None).path, device="cpu")
vectors = model.encode(chunks, batch_size=batch_size, normalize_embeddings=True)
collection = chromadb.PersistentClient(path=store).get_or_create_collection("chunks", metadata={"hnsw:space": "cosine"})
for start in range(0, len(chunks), 5000):
    end = start + 5000
    collection.add(ids=[str(i) for i in range(start, min(end, len(chunks)))], documents=chunks[start:end], embeddings=vectors[start:end].tolist())
print(len(chunks))
