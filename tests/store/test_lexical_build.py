"""The streaming BM25 builder writes what LexicalIndex.save writes, part by part."""

import json
import random

import numpy as np
import pyarrow.parquet as pq

from ragbatch.store import lexical_build
from ragbatch.store.lexical import LexicalIndex
from ragbatch.store.lexical_build import LexicalBuilder

WORDS = "fogg passepartout steamer balloon ray data batch gpu actor train london bombay calcutta yokohama oranges".split()


def docs(n, seed, prefix):
    rng = random.Random(seed)
    return [(f"{prefix}{i}", " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12)))) for i in range(n)]


def files(store):
    folder = store / "bm25"
    table = pq.read_table(folder / "corpus.parquet")
    arrays = {name: np.load(folder / "bm25s" / f"{name}.csc.index.npy") for name in ("data", "indices", "indptr")}
    vocab = json.loads((folder / "bm25s" / "vocab.index.json").read_text())
    params = json.loads((folder / "bm25s" / "params.index.json").read_text())
    return table.column("id").to_pylist(), table.column("tokens").to_pylist(), arrays, vocab, params, json.loads((folder / "meta.json").read_text())


def test_builder_writes_what_the_index_saves_also_after_deletes(tmp_path, monkeypatch):
    monkeypatch.setattr(lexical_build, "PART_ROWS", 7)  # many parts and pass steps
    first, second = docs(40, 1, "a"), docs(25, 2, "b")
    doomed = [f"a{i}" for i in range(0, 40, 3)]
    whole, built = tmp_path / "whole", tmp_path / "built"

    index = LexicalIndex.open(whole)
    index.update(first, [])
    index.save()
    builder = LexicalBuilder(built)
    builder.add(first)
    assert builder.finish() == 40
    assert files(built)[:2] == files(whole)[:2]

    index = LexicalIndex.open(whole)
    index.update(second, doomed)
    index.save()
    builder = LexicalBuilder(built)
    builder.add(second)
    assert builder.finish(doomed) == 40 - len(doomed) + 25
    a, b = files(whole), files(built)
    assert b[0] == a[0] and b[1] == a[1] and b[3] == a[3] and b[4] == a[4] and b[5] == a[5]
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(b[2][name], a[2][name])
    assert not (built / "bm25.tmp").exists()
    queries = ["fogg balloon", "gpu actor train", "oranges", "nothing known"]
    assert LexicalIndex.open(built).search(queries, 5) == LexicalIndex.open(whole).search(queries, 5)


def test_builder_without_the_old_index_and_without_words(tmp_path):
    store = tmp_path / "s"
    builder = LexicalBuilder(store)
    builder.add(docs(5, 3, "a"))
    builder.finish()
    builder = LexicalBuilder(store, keep_old=False)
    builder.add([("x", "the and of"), ("y", "")])  # stopwords only
    assert builder.finish() == 2
    index = LexicalIndex.open(store)
    assert len(index) == 2 and index.search(["fogg"], 3) == [[]]
    assert not (store / "bm25" / "bm25s").exists()
