"""A store's vectors in a Chroma collection: the reads and writes ragbatch makes, the same
whether the collection is a local folder (local.py) or on a Chroma server (server.py).

Chroma loses vectors silently when two processes write one local collection, so every
write to a store's folder goes through the one collection the indexing process holds,
from its one writer thread, under `locks.store_lock` (a Chroma server serialises writes
itself, so Ray's embed actors may write one directly).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator

from ragbatch.store.records import PLACE_FIELDS, Hit, Stored, indexed_text, pack, place_of, unpack

# HNSW search breadth (Chroma's default is 100). Hybrid retrieval asks for the top 50 of
# each list; at ef 100 the approximate top 50 missed 2.2 % of the exact one on raydocs-dev
# (one to three questions of its hit@5), at 200 0.5 %, at 400 0.1 % (every figure then equal to
# exact search; 3 ms a query on 2,000 vectors). Set when a collection
# is created; stores made earlier keep theirs.
HNSW_EF_SEARCH = 400
HNSW_CONFIGURATION = {"hnsw": {"space": "cosine", "ef_search": HNSW_EF_SEARCH}}
# Chroma reads all results of one query call with one SQL statement, and SQLite allows
# 32,766 variables in one: 5,000 questions at k=10 in one call fail. Stay well below.
MAX_RESULTS_PER_QUERY = 16_000

Ranking = list[tuple[str, float]]  # (chunk id, score), best first


class ChromaCollection:
    """The operations of the `Vectors` protocol (vectors.py) over one Chroma collection.

    `where` names the collection in messages: its folder, or the server and collection."""

    def __init__(self, client, collection, where: str):
        self.client, self.collection, self.where = client, collection, where
        self.max_batch: int = client.get_max_batch_size()

    def count(self) -> int:
        return self.collection.count()

    def records(self) -> Iterator[tuple[str, str, dict]]:
        """(id, text, fields) of every stored chunk, read in pages."""
        offset = 0
        while True:
            page = self.collection.get(include=["metadatas", "documents"], limit=self.max_batch, offset=offset)
            yield from ((i, *unpack(d, m)) for i, m, d in zip(page["ids"], page["metadatas"], page["documents"]))
            if len(page["ids"]) < self.max_batch:
                return
            offset += len(page["ids"])

    def scan(self) -> Iterator[tuple[str, dict]]:
        """(id, fields) of every stored chunk, read in pages."""
        return ((chunk_id, fields) for chunk_id, _, fields in self.records())

    def existing(self) -> dict[str, Stored]:
        """id -> (path, root, place) of every stored chunk."""
        return {
            chunk_id: Stored(sys.intern(meta.get("path", "")), sys.intern(meta.get("root", "")), place_of(meta), meta.get("key", ""))
            for chunk_id, meta in self.scan()
        }

    def get(self, ids: Iterable[str], text: bool = True) -> Iterator[tuple[str, str, dict]]:
        """(id, text, fields) of the given stored chunks, read in pages; text "" when
        `text` is false (fields only)."""
        ids = list(ids)
        include = ["documents", "metadatas"] if text else ["metadatas"]
        for start in range(0, len(ids), self.max_batch):
            page = self.collection.get(ids=ids[start : start + self.max_batch], include=include)
            documents = page["documents"] if text else [None] * len(page["ids"])
            for chunk_id, document, metadata in zip(page["ids"], documents, page["metadatas"]):
                yield (chunk_id, *unpack(document, metadata))

    def indexed_texts(self, ids: list[str]) -> list[tuple[str, str]]:
        """(id, the text BM25 and the embedder read: context line and text) for the given ids."""
        return [(chunk_id, indexed_text({"text": text, "context": fields.get("context")})) for chunk_id, text, fields in self.get(ids)]

    def embeddings(self, ids: list[str]) -> dict:
        """id -> vector of the given stored chunks."""
        found: dict = {}
        for start in range(0, len(ids), self.max_batch):
            page = self.collection.get(ids=ids[start : start + self.max_batch], include=["embeddings"])
            found.update(zip(page["ids"], page["embeddings"]))
        return found

    def sources(self, ids: Iterable[str]) -> dict[str, str]:
        """id -> source for the given ids (fields only)."""
        return {chunk_id: fields.get("source", "") for chunk_id, _, fields in self.get(ids, text=False)}

    def upsert(self, chunks: list[dict], embeddings) -> None:
        for start in range(0, len(chunks), self.max_batch):
            part = chunks[start : start + self.max_batch]
            self.collection.upsert(ids=[c["id"] for c in part], embeddings=embeddings[start : start + self.max_batch], metadatas=[pack(c) for c in part])

    def update_places(self, chunks: list[dict]) -> None:
        """Rewrite the place (PLACE_FIELDS) of chunks already stored that an edit above them
        moved in their file; their text, and so their vector, is unchanged. The stored record
        is read back for its text (Ray hands back stored chunks without theirs)."""
        for start in range(0, len(chunks), self.max_batch):
            part = {c["id"]: c for c in chunks[start : start + self.max_batch]}
            ids, records = [], []
            for chunk_id, text, fields in self.get(part):
                ids.append(chunk_id)
                records.append(pack({**fields, "text": text, **{k: part[chunk_id].get(k, "") for k in PLACE_FIELDS}}))
            if ids:
                self.collection.update(ids=ids, metadatas=records)

    def delete(self, ids: list[str]) -> None:
        for start in range(0, len(ids), self.max_batch):
            self.collection.delete(ids=ids[start : start + self.max_batch])

    def query(self, embeddings, k: int, ids: set[str] | None = None) -> list[Ranking]:
        """Top k (chunk id, cosine similarity) per query vector; only among `ids` when given."""
        results: list[Ranking] = []
        step = max(1, min(self.max_batch, MAX_RESULTS_PER_QUERY // k))
        restrict = {"ids": sorted(ids)} if ids is not None else {}
        for start in range(0, len(embeddings), step):
            found = self.collection.query(query_embeddings=embeddings[start : start + step], n_results=k, include=["distances"], **restrict)
            for found_ids, dists in zip(found["ids"], found["distances"]):
                # Ties broken by id: the same store gives the same ranking on every run.
                results.append(sorted(((i, 1.0 - float(d)) for i, d in zip(found_ids, dists)), key=lambda hit: (-hit[1], hit[0])))
        return results

    def hits(self, rankings: list[Ranking]) -> list[list[Hit]]:
        """Hits for ranked (id, score) lists, in their order: every id of every list is
        fetched in one paged lookup, not one call per question."""
        wanted = dict.fromkeys(chunk_id for ranked in rankings for chunk_id, _ in ranked)
        found = {chunk_id: (text, fields) for chunk_id, text, fields in self.get(wanted)}
        return [[Hit.of(i, *found[i], score) for i, score in ranked if i in found] for ranked in rankings]

    def lost_samples(self, sample: int) -> tuple[int, int]:
        """(sample vectors not found as their own nearest neighbour, vectors sampled), from
        the start and the end of the collection: with its HNSW files deleted, Chroma still
        counts every vector from SQLite but finds few of them."""
        count = self.count()
        if not count:
            return 0, 0
        ends = self.collection.get(limit=sample // 2, include=[])["ids"] + self.collection.get(offset=max(0, count - sample // 2), include=[])["ids"]
        ids = list(dict.fromkeys(ends))
        got = self.collection.get(ids=ids, include=["embeddings"])
        found = self.collection.query(query_embeddings=got["embeddings"], n_results=1, include=["distances"])
        return sum(1 for d in found["distances"] if not d or d[0] > 1e-3), len(ids)

    def close(self) -> None:
        """Release the client: for a local folder, its SQLite files, which must be closed
        before the store is copied or published.

        close() drops Chroma's shared per-path system once its last client closes;
        clearing that cache by hand would break other clients open in this process."""
        self.client.close()
