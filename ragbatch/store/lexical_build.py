"""Build a store's BM25 index (`STORE/bm25`, the layout lexical.py reads) from a stream of
chunks, in memory that does not grow with the corpus's text.

`LexicalIndex.update` holds every live chunk's tokens, and building the score matrix in
one go holds several arrays per (word, chunk) pair: a writer doing that grows with the
corpus. This builder tokenises chunks as they come and writes them to Parquet parts on
disk; `finish` then makes two passes over the old index (minus deletions) and the parts:
the first writes the new corpus.parquet and counts, per word, the chunks holding it; the
second computes each part's scores and writes them with pwrite into their places in the
CSC arrays of bm25s's files. What stays in memory is the vocabulary (it grows far more
slowly than the corpus), a word count per chunk (4 bytes) and one part at a time. The
files equal what `LexicalIndex.save` writes for the same chunks in the same order (the
tests compare them).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ragbatch.store.lexical import (
    _WORD,
    DIR_NAME,
    FORMAT,
    IDENTIFIERS,
    STOPWORDS_NAME,
    _bm25s,
    _old_path,
    _read_meta,
    _stem_words,
    _tokens_type,
    available_stemmer,
    tokenize,
)

# Chunks per Parquet part and per pass step. A step's arrays (word, chunk and count per
# token, their sort) take ~20 KB per chunk of 256 tokens: at 8,192 chunks that was a
# 160 MiB spike at the end of `index`, the largest thing the driver held (scale_bench).
PART_ROWS = 2048


class LexicalBuilder:
    """Collects (chunk id, text) pairs, then writes the index over the old one.

    `keep_old`: the old index's chunks (minus `finish`'s deletions) come first, as
    `LexicalIndex.update` keeps them; otherwise the index holds only what was added.
    """

    def __init__(self, store_dir, keep_old: bool = True):
        self.path = Path(store_dir) / DIR_NAME
        old = self.path if self.path.exists() else _old_path(self.path)
        self.old = old if keep_old and (old / "meta.json").exists() else None
        if self.old is not None:
            settings = _read_meta(self.old)["tokenizer"]
            self.stemmer, self.identifiers = settings["stemmer"], settings.get("identifiers", False)
            _stem_words(self.stemmer)
        else:
            self.stemmer, self.identifiers = available_stemmer(), IDENTIFIERS
        self.tmp = self.path.with_name(DIR_NAME + ".tmp")
        shutil.rmtree(self.tmp, ignore_errors=True)
        (self.tmp / "parts").mkdir(parents=True)
        self.parts: list[Path] = []
        self.pending: list[tuple[str, list[str]]] = []
        self.added = 0

    def discard(self) -> None:
        """Leave the old index as it is."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def add(self, pairs) -> None:
        for chunk_id, text in pairs:
            self.pending.append((chunk_id, tokenize(text, self.stemmer, self.identifiers)))
            self.added += 1
            if len(self.pending) >= PART_ROWS:
                self._spill()

    def _spill(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.pending:
            return
        part = self.tmp / "parts" / f"{len(self.parts):06d}.parquet"
        ids, tokens = zip(*self.pending)
        pq.write_table(pa.table({"id": pa.array(ids, pa.string()), "tokens": pa.array(tokens, _tokens_type())}), part)
        self.parts.append(part)
        self.pending = []

    def _batches(self, deletes: set[str]):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if self.old is not None:
            doomed = pa.array(sorted(deletes), pa.string())
            for batch in pq.ParquetFile(self.old / "corpus.parquet").iter_batches(batch_size=PART_ROWS, columns=["id", "tokens"]):
                table = pa.Table.from_batches([batch])
                if len(doomed):
                    table = table.filter(pc.invert(pc.is_in(table.column("id"), value_set=doomed)))
                yield table.column("id").combine_chunks(), table.column("tokens").combine_chunks().cast(_tokens_type())
        for part in self.parts:
            table = pq.read_table(part)
            yield table.column("id").combine_chunks(), table.column("tokens").combine_chunks().cast(_tokens_type())

    def finish(self, deletes=()) -> int:
        """Write the index (old chunks minus `deletes`, then the added ones) and switch it
        in; returns its chunk count."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._spill()
        deletes = set(deletes)
        vocab: dict[str, int] = {}
        doc_freq: np.ndarray = np.zeros(0, dtype=np.int64)
        lengths: list[np.ndarray] = []
        runs = self.tmp / "runs.bin"  # (word, chunk, tf) int32 triples, part after part, word-major
        steps = []
        n_docs = 0
        schema = pa.schema([("id", pa.string()), ("tokens", _tokens_type())])
        with pq.ParquetWriter(self.tmp / "corpus.parquet", schema) as corpus, open(runs, "wb") as out:
            for ids, tokens in self._batches(deletes):
                if not len(ids):
                    continue
                corpus.write_table(pa.table({"id": ids, "tokens": tokens}, schema=schema))
                length = tokens.value_lengths().fill_null(0).to_numpy().astype(np.int64)
                encoded = tokens.flatten().dictionary_encode()
                for word in encoded.dictionary.to_pylist():
                    vocab.setdefault(word, len(vocab))
                local = np.fromiter((vocab[w] for w in encoded.dictionary.to_pylist()), dtype=np.int64, count=len(encoded.dictionary))
                words = local[encoded.indices.to_numpy().astype(np.int64)] if len(local) else np.zeros(0, np.int64)
                docs: np.ndarray = np.repeat(np.arange(len(ids), dtype=np.int64), length)
                pairs, tf = np.unique(words * len(ids) + docs, return_counts=True)
                columns, rows = np.divmod(pairs, len(ids))
                if len(vocab) > len(doc_freq):
                    doc_freq = np.concatenate([doc_freq, np.zeros(len(vocab) - len(doc_freq), dtype=np.int64)])
                doc_freq += np.bincount(columns, minlength=len(vocab))
                out.write(np.stack([columns, rows + n_docs, tf]).astype(np.int32).tobytes())
                steps.append(len(pairs))
                lengths.append(length.astype(np.int32))
                n_docs += len(ids)
                # Arrow's default allocator (mimalloc) keeps freed steps' memory: ~100 MiB
                # more at the end of a 20 MB index without this (scale_bench).
                pa.default_memory_pool().release_unused()
        if vocab:
            self._write_matrix(runs, steps, vocab, doc_freq, np.concatenate(lengths), n_docs)
        shutil.rmtree(self.tmp / "parts")
        if runs.exists():
            runs.unlink()
        meta = {
            "format": FORMAT,
            "tokenizer": {"words": _WORD.pattern, "stopwords": STOPWORDS_NAME, "stemmer": self.stemmer, "identifiers": self.identifiers},
            "count": n_docs,
        }
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        install(self.tmp, self.path)
        return n_docs

    def _write_matrix(self, runs: Path, steps: list[int], vocab: dict, doc_freq, lengths, n_docs: int) -> None:
        """bm25s's Lucene scores in its CSC layout, as lexical._bm25_matrix computes them."""
        import numpy as np

        retriever = _bm25s().BM25(method="lucene", k1=1.5, b=0.75, backend="numpy")
        k1, b = retriever.k1, retriever.b
        folder = self.tmp / "bm25s"
        folder.mkdir()
        idf = np.log(1 + (n_docs - doc_freq + 0.5) / (doc_freq + 0.5)).astype(np.float32)
        indptr: np.ndarray = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum(doc_freq, out=indptr[1:])
        nnz = int(indptr[-1])
        mean = lengths.astype(np.int64).mean()
        data_at = _empty_npy(folder / "data.csc.index.npy", np.float32, nnz)
        indices_at = _empty_npy(folder / "indices.csc.index.npy", np.int32, nnz)
        filled = indptr[:-1].copy()
        with open(runs, "rb") as source, open(folder / "data.csc.index.npy", "r+b") as data_file, open(folder / "indices.csc.index.npy", "r+b") as indices_file:
            for count in steps:
                columns, rows, tf = np.frombuffer(source.read(12 * count), dtype=np.int32).reshape(3, count).astype(np.int64)
                norm = k1 * ((1 - b) + b * lengths[rows] / mean)
                data = (idf[columns] * (tf / (norm + tf))).astype(np.float32)
                rows32 = rows.astype(np.int32)
                starts = np.flatnonzero(np.r_[True, columns[1:] != columns[:-1]])
                ends = np.r_[starts[1:], count]
                for start, end in zip(starts.tolist(), ends.tolist()):
                    column = columns[start]
                    at = int(filled[column])
                    os.pwrite(data_file.fileno(), data[start:end].tobytes(), data_at + 4 * at)
                    os.pwrite(indices_file.fileno(), rows32[start:end].tobytes(), indices_at + 4 * at)
                    filled[column] = at + end - start
        np.save(folder / "indptr.csc.index.npy", indptr)
        (folder / "vocab.index.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        params = {
            "k1": retriever.k1,
            "b": retriever.b,
            "delta": retriever.delta,
            "method": retriever.method,
            "idf_method": retriever.idf_method,
            "dtype": retriever.dtype,
            "int_dtype": retriever.int_dtype,
            "num_docs": n_docs,
            "version": _bm25s().__version__,
            "backend": retriever.backend,
        }
        (folder / "params.index.json").write_text(json.dumps(params, indent=4), encoding="utf-8")


def stored_count(store_dir) -> int | None:
    """Chunks in a store's BM25 index by its meta.json (None without an index), without
    reading its ids."""
    path = Path(store_dir) / DIR_NAME
    for folder in (path, _old_path(path)):
        if folder.exists():
            return _read_meta(folder)["count"]
    return None


def _empty_npy(path: Path, dtype, length: int) -> int:
    """An .npy file of `length` items (contents to be written), and where its data starts."""
    import numpy as np

    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (length,)})
        start = f.tell()
        f.truncate(start + np.dtype(dtype).itemsize * length)
    return start


def install(tmp: Path, path: Path) -> None:
    """Rename `tmp` over `path`. A directory cannot be renamed over a non-empty one: the
    old one is moved aside first; `LexicalIndex.open` reads bm25.old if a crash leaves no bm25."""
    old = _old_path(path)
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
