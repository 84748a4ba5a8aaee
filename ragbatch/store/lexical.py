"""BM25 keyword index of a store's chunks, kept in `STORE/bm25/` beside the Chroma collection.

bm25s cannot add documents to a built index, so the index keeps every live chunk's tokens
(`corpus.parquet`: id, tokens, in index order). An update tokenises only the new chunks;
the BM25 matrix is rebuilt from the stored tokens with numpy (`_bm25_matrix`: 1-2.5 s for
100k chunks on 2 busy cores) at the next search or save. The built matrix is saved too, in bm25s's own
format (`bm25s/`), so opening and searching never rebuilds.

Documents and queries go through the same `tokenize` with the same settings, recorded in
`meta.json`: a query can only match what the index would have produced from the same words
(the reference project tokenised the two sides differently and lost matches to it).
Stemming is on only if PyStemmer was importable when the index was created; an index
built with it refuses to open without it rather than mis-tokenise the queries.

Layout of `STORE/bm25/`::

    meta.json        format, tokenizer settings, chunk count (written last)
    corpus.parquet   id (string), tokens (list<large_string>), one row per live chunk
    bm25s/           bm25s.BM25.save() output; absent while no chunk has a word
"""

from __future__ import annotations

import json
import re
import shutil
from functools import lru_cache
from pathlib import Path

from ragbatch.errors import StoreError

DIR_NAME = "bm25"
FORMAT = 1
STOPWORDS_NAME = "bm25s-en-plus"
# Letters and digits: "Ray.Data" -> ray, data; "num_gpus" -> num, gpus, so code identifiers
# also match the same words written as prose.
_WORD = re.compile(r"[^\W_]+")
# An identifier: words joined by "." or "_" (ray.data.read_text, map_batches, 2.7.0).
_IDENTIFIER = re.compile(r"[^\W_]+(?:[._][^\W_]+)*")
# camelCase humps: ScalingConfig -> Scaling|Config, XGBoostTrainer -> XG|Boost|Trainer.
_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_LOWER_UPPER = re.compile(r"[a-z0-9][A-Z]")
# Whether new indexes split and keep identifiers (see `tokenize`); an index records what it
# used. Off: on the three evaluation sets it moved no figure beyond a question or two
# either way (benchmarks/RESULTS.md, 2026-11-21), while stemming did.
IDENTIFIERS = False


def _bm25s():
    """bm25s, imported without numba (we use its numpy backend).

    bm25s imports numba whenever it is installed (vLLM brings it). numba's llvmlite then
    breaks vLLM's CPU engine start in the same process (vLLM 0.32 scans every loaded
    module and fails on llvmlite's `_lib_fn_wrapper`), and the import costs 1-2 s.
    A None entry in sys.modules makes `import numba` raise ImportError, which bm25s
    handles by falling back to plain Python/numpy.
    """
    import sys

    if "bm25s" not in sys.modules and "numba" not in sys.modules:
        sys.modules["numba"] = None  # type: ignore[assignment]  # the documented way to make an import fail
        try:
            import bm25s  # noqa: F401
            import bm25s.stopwords  # noqa: F401
        finally:
            del sys.modules["numba"]
    import bm25s
    import bm25s.stopwords  # noqa: F401

    return bm25s


# -- tokenisation (the one function for documents and queries) --------------------------


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    # NLTK's English list as shipped by bm25s: it also drops question words (what, which,
    # how), which would otherwise weigh on every question. It holds the halves of split
    # contractions ("don", "t") that _WORD produces.
    return frozenset(_bm25s().stopwords.STOPWORDS_EN_PLUS)


def available_stemmer() -> str | None:
    """'snowball-english' when PyStemmer is importable (it is not a dependency), else None."""
    try:
        import Stemmer  # noqa: F401  (PyStemmer)
    except ImportError:
        return None
    return "snowball-english"


@lru_cache(maxsize=2)
def _stem_words(stemmer: str | None):
    if stemmer is None:
        return None
    if stemmer != "snowball-english":
        raise StoreError(f"unknown stemmer {stemmer!r} in the lexical index settings")
    try:
        import Stemmer
    except ImportError:
        raise StoreError(
            "the lexical index was built with stemming (PyStemmer), which is not installed: install PyStemmer or delete the store's bm25/ folder and re-index"
        ) from None
    return Stemmer.Stemmer("english").stemWords


def tokenize(text: str, stemmer: str | None = None, identifiers: bool = False) -> list[str]:
    """Lower-case words of letters and digits, English stopwords removed, optionally stemmed.

    With `identifiers`, camelCase humps are words too (ScalingConfig: scaling, config), and
    an identifier made of several words is also kept whole, unstemmed (scalingconfig,
    map_batches, ray.data.read_text, and read_text inside it): a question naming the exact
    API matches it more strongly than one that only shares its words.
    """
    stopwords = _stopwords()
    if identifiers:
        words, wholes = _identifier_words(text)
    else:
        words, wholes = _WORD.findall(text.lower()), []
    words = [w for w in words if w not in stopwords]
    stem = _stem_words(stemmer)
    return (stem(words) if stem else words) + wholes


def _identifier_words(text: str) -> tuple[list[str], list[str]]:
    words: list[str] = []
    wholes: list[str] = []
    for identifier in _IDENTIFIER.findall(text):
        parts = re.split(r"[._]", identifier)
        for part in parts:
            humps = _HUMP.split(part) if _LOWER_UPPER.search(part) else [part]
            words.extend(h.lower() for h in humps)
            if len(humps) > 1:
                wholes.append(part.lower())
        if len(parts) > 1:
            wholes.append(identifier.lower())
            if "." in identifier and "_" in identifier:
                wholes.extend(p.lower() for p in identifier.split(".") if "_" in p)
    return words, wholes


# -- the index ----------------------------------------------------------------------------


class LexicalIndex:
    """BM25 over the live chunks of one store. One writer at a time, like the store itself."""

    def __init__(self, path: Path, stemmer: str | None, identifiers: bool = IDENTIFIERS):
        self.path = path  # STORE/bm25
        self.stemmer = stemmer
        self.identifiers = identifiers  # see `tokenize`; an index made before it existed has False
        self._ids: list[str] = []
        self._tokens = None  # pyarrow list<large_string> aligned with _ids; read when needed
        self._read_from: Path | None = None  # folder holding the tokens not yet read
        self._retriever = None  # bm25s.BM25; None while stale or without a single word
        self._changed = False

    # opening ----------------------------------------------------------------------------

    @classmethod
    def open(cls, store_dir) -> LexicalIndex:
        """Open `STORE/bm25`; an absent folder is an empty index (created by `save`)."""
        path = Path(store_dir) / DIR_NAME
        if not path.exists() and _old_path(path).exists():
            path_to_read = _old_path(path)  # a save died between its two renames
        else:
            path_to_read = path
        if not path_to_read.exists():
            return cls(path, available_stemmer(), IDENTIFIERS)

        meta = _read_meta(path_to_read)
        index = cls(path, meta["tokenizer"]["stemmer"], meta["tokenizer"].get("identifiers", False))
        _stem_words(index.stemmer)  # fail now, not at the first query, if it cannot stem
        index._read_from = path_to_read
        index._ids = _read_ids(path_to_read / "corpus.parquet")
        if len(index._ids) != meta["count"]:
            raise StoreError(
                f"{path_to_read}: corpus.parquet has {len(index._ids)} chunks, meta.json says {meta['count']}; delete the bm25/ folder and re-index"
            )
        if (path_to_read / "bm25s").exists():
            index._retriever = _load_retriever(path_to_read / "bm25s", len(index._ids))
        return index

    def __len__(self) -> int:
        return len(self._ids)

    # writing ----------------------------------------------------------------------------

    def update(self, upserts: list[tuple[str, str]], deletes: list[str]) -> None:
        """Remove `deletes`, then add the `(chunk id, text)` upserts whose id is new.

        Ids are content hashes, so an id already present already has this text: skip it.
        The BM25 matrix is rebuilt once, at the next `search` or `save`.
        """
        import pyarrow as pa

        tokens = self._token_lists()
        present = set(self._ids)
        doomed = set(deletes) & present
        if doomed:
            keep = [chunk_id not in doomed for chunk_id in self._ids]
            self._ids = [chunk_id for chunk_id, kept in zip(self._ids, keep) if kept]
            tokens = tokens.filter(pa.array(keep))
            present -= doomed
        new_tokens = []
        for chunk_id, text in upserts:
            if chunk_id not in present:
                present.add(chunk_id)
                self._ids.append(chunk_id)
                new_tokens.append(tokenize(text, self.stemmer, self.identifiers))
        if new_tokens:
            tokens = pa.concat_arrays([tokens, pa.array(new_tokens, _tokens_type())])
        self._tokens = tokens
        if doomed or new_tokens:
            self._retriever = None
            self._changed = True

    def save(self) -> None:
        """Write the index to a temporary folder, then rename it over `STORE/bm25`."""
        if not self._changed and self.path.exists():
            return
        tokens = self._token_lists()
        retriever = self._built_retriever()
        tmp, old = self.path.with_name(DIR_NAME + ".tmp"), _old_path(self.path)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _write_corpus(tmp / "corpus.parquet", self._ids, tokens)
        if retriever is not None:
            retriever.save(str(tmp / "bm25s"), show_progress=False)
        meta = {
            "format": FORMAT,
            "tokenizer": {"words": _WORD.pattern, "stopwords": STOPWORDS_NAME, "stemmer": self.stemmer, "identifiers": self.identifiers},
            "count": len(self._ids),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

        # A directory cannot be renamed over a non-empty one: move the old one aside first.
        # `open` reads bm25.old if a crash leaves no bm25.
        shutil.rmtree(old, ignore_errors=True)
        if self.path.exists():
            self.path.rename(old)
        tmp.rename(self.path)
        shutil.rmtree(old, ignore_errors=True)
        self._read_from = None
        self._changed = False

    # reading ----------------------------------------------------------------------------

    def search(self, queries: list[str], k: int, allowed: set[str] | None = None) -> list[list[tuple[str, float]]]:
        """Top `k` `(chunk id, BM25 score)` per query, best first; ties by index order.

        Only chunks sharing a word with the query are returned (score > 0), so a query of
        stopwords or unknown words gets an empty list, and `k` beyond the matches gets them all.
        With `allowed`, only those chunk ids are ranked (the whole index still gives the IDF).
        """
        retriever = self._built_retriever()
        if retriever is None or k <= 0:
            return [[] for _ in queries]
        import numpy as np

        mask = None if allowed is None else np.fromiter((i in allowed for i in self._ids), dtype=bool, count=len(self._ids))
        results: list[list[tuple[str, float]]] = []
        for query in queries:
            token_ids = retriever.get_tokens_ids(tokenize(query, self.stemmer, self.identifiers))
            if not token_ids:
                results.append([])
                continue
            scores = retriever.get_scores_from_ids(token_ids)
            matches = np.flatnonzero(scores > 0 if mask is None else (scores > 0) & mask)
            if len(matches) > k:
                # keep everything scoring at least the k-th best, so ties at the cut are kept
                # and broken by index order below, not by argpartition's whim
                kth = np.partition(scores[matches], len(matches) - k)[len(matches) - k]
                matches = matches[scores[matches] >= kth]
            order = np.lexsort((matches, -scores[matches]))[:k]
            results.append([(self._ids[i], float(scores[i])) for i in matches[order]])
        return results

    # internals --------------------------------------------------------------------------

    def _token_lists(self):
        if self._tokens is None:
            if self._read_from is None:
                import pyarrow as pa

                self._tokens = pa.array([], _tokens_type())
            else:
                self._tokens = _read_tokens(self._read_from / "corpus.parquet", self._ids)
        return self._tokens

    def _built_retriever(self):
        if self._retriever is None and self._ids:
            self._retriever = _build_retriever(self._token_lists())
        return self._retriever


# -- the BM25 matrix --------------------------------------------------------------------


def _build_retriever(tokens):
    """A bm25s retriever over `tokens` (pyarrow list<large_string>), or None without any word.

    bm25s's own `index()` loops over documents in Python (about 10 s for 100k chunks of
    60 words on 2 cores); `_bm25_matrix` computes the same matrix with whole-array numpy
    operations, several times faster. The result is the state that `BM25.index()` leaves
    and `BM25.save()`/`load()` persist (tests compare both builds).
    """
    bm25s = _bm25s()

    retriever = bm25s.BM25(method="lucene", k1=1.5, b=0.75, backend="numpy")
    scores, vocab = _bm25_matrix(tokens, k1=retriever.k1, b=retriever.b)
    if not vocab:
        return None
    retriever.scores = scores
    retriever.vocab_dict = vocab
    retriever.unique_token_ids_set = set(vocab.values())
    retriever.nonoccurrence_array = None  # used by BM25L and BM25+ only
    return retriever


def _bm25_matrix(tokens, k1: float, b: float) -> tuple[dict, dict[str, int]]:
    """bm25s's Lucene-variant score matrix, in its CSC layout (one column per token).

    score(doc, token) = idf(token) * tf / (tf + k1 * (1 - b + b * len(doc) / avg_len)),
    idf = ln(1 + (N - df + 0.5) / (df + 0.5)), as in bm25s.scoring.
    """
    import numpy as np

    n_docs = len(tokens)
    doc_lengths = tokens.value_lengths().fill_null(0).to_numpy().astype(np.int64)
    encoded = tokens.flatten().dictionary_encode()
    vocab = {token: i for i, token in enumerate(encoded.dictionary.to_pylist())}
    token_ids = encoded.indices.to_numpy().astype(np.int64)
    doc_ids: np.ndarray = np.repeat(np.arange(n_docs, dtype=np.int64), doc_lengths)

    # One sorted key per (token, doc) pair: CSC order, and its count is the term frequency.
    pairs, tf = np.unique(token_ids * n_docs + doc_ids, return_counts=True)
    columns, rows = np.divmod(pairs, n_docs)
    doc_freq = np.bincount(columns, minlength=len(vocab))
    idf = np.log(1 + (n_docs - doc_freq + 0.5) / (doc_freq + 0.5)).astype(np.float32)
    norm = k1 * ((1 - b) + b * doc_lengths[rows] / doc_lengths.mean())
    data = (idf[columns] * (tf / (norm + tf))).astype(np.float32)
    indptr: np.ndarray = np.zeros(len(vocab) + 1, dtype=np.int64)
    np.cumsum(doc_freq, out=indptr[1:])
    scores = {"data": data, "indices": rows.astype(np.int32), "indptr": indptr, "num_docs": n_docs}
    return scores, vocab


# -- files ------------------------------------------------------------------------------


def _tokens_type():
    import pyarrow as pa

    # large_string: a big store's tokens can pass 2 GiB of characters in one array.
    return pa.list_(pa.large_string())


def _old_path(path: Path) -> Path:
    return path.with_name(DIR_NAME + ".old")


def _read_meta(path: Path) -> dict:
    meta_path = path / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{meta_path} is missing: the lexical index is incomplete; delete {path} and re-index") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{meta_path}: unreadable ({exc}); delete {path} and re-index") from None
    if meta.get("format") != FORMAT:
        raise StoreError(f"{meta_path}: lexical index format {meta.get('format')!r}, this ragbatch reads {FORMAT}; delete {path} and re-index")
    settings = meta.get("tokenizer", {})
    if settings.get("words") != _WORD.pattern or settings.get("stopwords") != STOPWORDS_NAME:
        raise StoreError(f"{meta_path}: built with other tokenizer settings ({settings}); delete {path} and re-index")
    return meta


def _read_ids(parquet_path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(parquet_path, columns=["id"]).column("id").to_pylist()
    except (OSError, KeyError, ValueError) as exc:
        raise StoreError(f"{parquet_path}: unreadable lexical corpus ({exc}); delete the bm25/ folder and re-index") from None


def _read_tokens(parquet_path: Path, ids: list[str]):
    import pyarrow.parquet as pq

    table = pq.read_table(parquet_path, columns=["id", "tokens"])
    if table.column("id").to_pylist() != ids:
        raise StoreError(f"{parquet_path} changed while open; reopen the store")
    return table.column("tokens").combine_chunks().cast(_tokens_type())


def _write_corpus(parquet_path: Path, ids: list[str], tokens) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": pa.array(ids, pa.string()), "tokens": tokens}), parquet_path)


def _load_retriever(path: Path, count: int):
    bm25s = _bm25s()

    try:
        retriever = bm25s.BM25.load(str(path), show_progress=False)
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable BM25 index ({exc}); delete the bm25/ folder and re-index") from None
    if retriever.scores["num_docs"] != count:
        raise StoreError(f"{path} holds {retriever.scores['num_docs']} documents, corpus.parquet {count}; delete the bm25/ folder and re-index")
    return retriever
