"""Dense, BM25 and hybrid retrieval on a real store, local and published."""

import pytest
from helpers import TOPIC_REFERENCES, TOPICS, index, write_files, write_questions

from ragbatch.retrieval.retriever import Retriever
from ragbatch.retrieval.selection import Selection


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    write_files(root / "docs", TOPICS)
    index([root / "docs"], root / "store", publish_root=root / "published", chunk_size=64, chunk_overlap=0)
    write_questions(root / "refs.jsonl", TOPIC_REFERENCES)
    return root


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_every_mode_ranks_the_right_source_first(store, mode):
    retriever = Retriever.open(store / "store", modes=(mode,))
    try:
        hits = retriever.search(["Mount Etna volcano eruptions", "sourdough starter yeast"], Selection(mode, k=3))
    finally:
        retriever.close()
    assert [h[0].source for h in hits] == ["volcanoes.txt", "baking.txt"]
    assert all(h.text and h.chunk_id for ranked in hits for h in ranked)


def test_hybrid_works_on_the_published_copy_and_matches_the_local_store(store, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGBATCH_CACHE", str(tmp_path / "cache"))
    questions = [r["question"] for r in TOPIC_REFERENCES]
    local, published = Retriever.open(store / "store"), Retriever.open(store / "published" / "store")
    try:
        assert published.store.path != store / "store" and (tmp_path / "cache") in published.store.path.parents
        a, b = local.search(questions, Selection(k=3)), published.search(questions, Selection(k=3))
    finally:
        local.close()
        published.close()
    assert [[h.chunk_id for h in r] for r in a] == [[h.chunk_id for h in r] for r in b]


def test_a_mode_the_retriever_was_not_opened_for_is_refused(store):
    retriever = Retriever.open(store / "store", modes=("bm25",))
    try:
        assert retriever.embedder is None  # BM25 alone loads no model
        with pytest.raises(Exception, match="retrieval dense: this retriever was opened for bm25"):
            retriever.search(["Etna"], Selection("dense"))
    finally:
        retriever.close()
