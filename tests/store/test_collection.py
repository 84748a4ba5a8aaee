"""The local Chroma collection's record format and operations, on real Chroma."""

import numpy as np

from ragbatch.store.local import LocalVectors
from ragbatch.store.records import CHUNK_FIELDS, RECORD_KEY, place_of


def chunk(i: int, **extra) -> dict:
    return {
        "id": f"c{i}",
        "text": f"text of chunk {i} — with ünïcode",
        "source": f"doc{i % 3}.txt#s{i}",
        "path": f"/d/doc{i % 3}.txt",
        "root": "/d",
        "position": i,
        **extra,
    }


def texts(store, ids) -> dict:
    return {chunk_id: text for chunk_id, text, _ in store.get(ids)}


def test_chunks_are_packed_in_one_value_and_older_records_still_read(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4, 8)).astype(np.float32)
    store = LocalVectors(tmp_path / "s", "chunks", create=True)
    try:
        store.upsert([chunk(0, context="Page › Section", anchors="a b"), chunk(1)], vectors[:2])
        # A record as ragbatch wrote them before: the text as Chroma's document, one key per field.
        old = chunk(2, context="Old page")
        store.collection.upsert(ids=["c2"], embeddings=vectors[2:3], documents=[old["text"]], metadatas=[{k: old.get(k, "") for k in CHUNK_FIELDS}])

        raw = store.collection.get(ids=["c0"], include=["documents", "metadatas"])
        assert raw["documents"] == [None] and list(raw["metadatas"][0]) == [RECORD_KEY]

        assert texts(store, ["c0", "c2"]) == {"c0": chunk(0)["text"], "c2": old["text"]}
        existing = store.existing()
        assert {i: stored[:2] for i, stored in existing.items()} == {"c0": ("/d/doc0.txt", "/d"), "c1": ("/d/doc1.txt", "/d"), "c2": ("/d/doc2.txt", "/d")}
        assert existing["c0"].place == place_of(chunk(0)) != place_of(chunk(0, lines="L3-L4"))
        assert store.sources(["c0", "c2"]) == {"c0": "doc0.txt#s0", "c2": "doc2.txt#s2"}
        assert dict(store.indexed_texts(["c0", "c2"])) == {"c0": "Page › Section\n\n" + chunk(0)["text"], "c2": "Old page\n\n" + old["text"]}
        fields = dict(store.scan())
        assert fields["c0"]["position"] == 0 and fields["c0"]["anchors"] == "a b" and fields["c2"]["context"] == "Old page"
        hits = store.hits(store.query(vectors[[0, 2]], 1))
        assert [(h[0].chunk_id, h[0].text, h[0].anchors) for h in hits] == [("c0", chunk(0)["text"], ("a", "b")), ("c2", old["text"], ())]
        assert [h[0].source for h in store.hits([[("c2", 0.5)], [("c0", 0.4)]])] == ["doc2.txt#s2", "doc0.txt#s0"]

        # A chunk moved in its file (handed back without its text, as Ray does): its place
        # is rewritten, its text and vector kept, packed and older records alike.
        store.update_places([{"id": "c0", "position": 7, "start": 90, "lines": "L9-L11"}, {"id": "c2", "position": 8, "start": 0, "lines": "L12"}])
        fields = dict(store.scan())
        assert (fields["c0"]["position"], fields["c0"]["lines"], fields["c0"]["anchors"]) == (7, "L9-L11", "a b")
        assert (fields["c2"]["lines"], fields["c2"]["context"]) == ("L12", "Old page")
        assert texts(store, ["c0", "c2"]) == {"c0": chunk(0)["text"], "c2": old["text"]}
        assert [h[0].cited for h in store.hits(store.query(vectors[[0, 2]], 1))] == ["doc0.txt#s0#L9-L11", "doc2.txt#s2#L12"]
    finally:
        store.close()
