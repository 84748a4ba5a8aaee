"""The local store's one writer (BackgroundWriter), on real Chroma."""

import numpy as np

from ragbatch.ingest.writer import BackgroundWriter
from ragbatch.store.local import LocalVectors


def chunk(i: int) -> dict:
    return {"id": f"c{i}", "text": f"text of chunk {i}", "source": f"doc{i % 3}.txt", "path": f"/d/doc{i % 3}.txt", "root": "/d", "position": i}


def test_the_writer_merges_waiting_blocks_into_upserts_of_at_most_the_maximum_batch(tmp_path):
    rng = np.random.default_rng(1)
    store = LocalVectors(tmp_path / "s", "chunks", create=True)
    try:
        blocks = [([chunk(b * 600 + i) for i in range(600)], rng.normal(size=(600, 8)).astype(np.float32)) for b in range(10)]
        writer = BackgroundWriter(store)
        for block in blocks:  # all waiting before the writer starts: it is behind
            writer.put(*block)
        with writer:
            pass
        # 9 blocks (5,400 vectors) fit in one upsert of at most 5,461; the tenth is another.
        assert store.max_batch == 5461 and writer.upserts == 2
        assert store.count() == 6000
        got = store.collection.get(ids=["c0", "c5999"], include=["embeddings"])
        np.testing.assert_allclose(np.asarray(got["embeddings"]), np.stack([blocks[0][1][0], blocks[9][1][599]]), rtol=1e-6)
    finally:
        store.close()
