"""BM25 index beside a store: ranking, updates, persistence, one tokenisation for both sides."""

import json

import pytest

from ragbatch.errors import StoreError
from ragbatch.store import lexical
from ragbatch.store.lexical import LexicalIndex, tokenize

DOCS = [
    ("c1", "Ray Data loads and transforms datasets with Ray."),
    ("c2", "Ray Serve deploys models behind an HTTP endpoint with Ray."),
    ("c3", "The Ray autoscaler adds nodes when tasks are pending."),
    ("c4", "Ray Tune runs hyperparameter searches on Ray clusters."),
    ("c5", "Use Ray.Data map_batches to transform batches of rows."),
    ("c6", "Ray Core tasks and actors are the building blocks of Ray."),
]


@pytest.fixture
def store(tmp_path):
    index = LexicalIndex.open(tmp_path)
    index.update(DOCS, [])
    index.save()
    return tmp_path


def ids(results):
    return [doc_id for doc_id, _ in results]


def test_tokenize_lowercases_splits_and_drops_stopwords():
    assert tokenize("How does Ray.Data's map_batches work?") == ["ray", "data", "map", "batches", "work"]
    assert tokenize("the a an of") == []


def test_identifiers_are_split_and_also_kept_whole():
    words = tokenize("Use ray.data.read_text, map_batches and ScalingConfig on GPUs", identifiers=True)
    for part in ("ray", "data", "read", "text", "map", "batches", "scaling", "config", "gpus"):
        assert part in words
    for whole in ("ray.data.read_text", "read_text", "map_batches", "scalingconfig"):
        assert whole in words
    assert "gp" not in words  # an acronym's plural is not a camelCase hump
    # Without it, the tokenizer is what older indexes were built with.
    assert tokenize("ScalingConfig map_batches") == ["scalingconfig", "map", "batches"]


def test_an_exact_identifier_outranks_its_words_as_prose(tmp_path, monkeypatch):
    assert LexicalIndex.open(tmp_path).identifiers is lexical.IDENTIFIERS  # new indexes take the default
    monkeypatch.setattr(lexical, "IDENTIFIERS", True)
    index = LexicalIndex.open(tmp_path)
    assert index.identifiers
    index.update([("prose", "Map the batches of the dataset, then read text."), ("api", "Call map_batches to transform a dataset.")], [])
    assert ids(index.search(["how does map_batches work"], 2)[0]) == ["api", "prose"]
    index.save()
    assert json.loads((tmp_path / "bm25" / "meta.json").read_text())["tokenizer"]["identifiers"] is True


def test_an_index_from_before_identifiers_keeps_its_tokenizer(store):
    meta_path = store / "bm25" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["tokenizer"]["identifiers"]
    meta_path.write_text(json.dumps(meta))
    index = LexicalIndex.open(store)
    assert index.identifiers is False
    assert ids(index.search(["map batches"], 1)[0]) == ["c5"]


def test_search_only_among_allowed_ids(store):
    index = LexicalIndex.open(store)
    assert set(ids(index.search(["ray"], 10, allowed={"c2", "c4"})[0])) == {"c2", "c4"}
    assert index.search(["autoscaler"], 10, allowed={"c1"}) == [[]]


def test_document_and_query_tokenisation_agree(store):
    index = LexicalIndex.open(store)
    assert tokenize("Ray.Data") == tokenize("ray data") == tokenize("RAY DATA")
    # "Ray.Data" appears only in c5 as one dotted word; "map batches" only there as map_batches
    assert ids(index.search(["map batches"], 3)[0]) == ["c5"]
    for query in ["ray data", "RAY.DATA", "Ray   Data?"]:
        assert set(ids(index.search([query], 6)[0])[:2]) == {"c1", "c5"}


def test_rare_term_ranks_first(store):
    index = LexicalIndex.open(store)
    [results] = index.search(["what does the ray autoscaler do"], 3)
    assert results[0][0] == "c3"
    assert results[0][1] > results[1][1] > 0


def test_several_queries_at_once(store):
    index = LexicalIndex.open(store)
    results = index.search(["autoscaler", "hyperparameter", "http endpoint"], 1)
    assert [ids(r) for r in results] == [["c3"], ["c4"], ["c2"]]


def test_k_beyond_corpus_returns_every_match_and_no_more(store):
    index = LexicalIndex.open(store)
    [every] = index.search(["ray"], 100)  # "ray" is in all six docs
    assert sorted(ids(every)) == ["c1", "c2", "c3", "c4", "c5", "c6"]
    assert [s for _, s in every] == sorted((s for _, s in every), reverse=True)
    [some] = index.search(["tasks"], 100)  # only c3 and c6 mention tasks
    assert sorted(ids(some)) == ["c3", "c6"]
    assert index.search(["ray"], 0) == [[]]


def test_queries_without_known_words_match_nothing(store):
    index = LexicalIndex.open(store)
    assert index.search(["the of and", "zebra", ""], 5) == [[], [], []]


def test_empty_index(tmp_path):
    index = LexicalIndex.open(tmp_path)
    assert len(index) == 0
    assert index.search(["ray", "data"], 5) == [[], []]
    index.save()
    reopened = LexicalIndex.open(tmp_path)
    assert len(reopened) == 0 and reopened.search(["ray"], 5) == [[]]


def test_delete_removes_document(store):
    index = LexicalIndex.open(store)
    index.update([], ["c3", "not-there"])
    assert len(index) == 5
    assert index.search(["autoscaler"], 5) == [[]]
    assert "c3" not in ids(index.search(["ray nodes tasks pending"], 6)[0])
    index.save()
    assert LexicalIndex.open(store).search(["autoscaler"], 5) == [[]]


def test_upsert_of_existing_id_is_a_noop(store):
    index = LexicalIndex.open(store)
    before = index.search(["autoscaler ray"], 6)
    index.update([("c3", "The Ray autoscaler adds nodes when tasks are pending.")], [])
    assert len(index) == 6
    assert index.search(["autoscaler ray"], 6) == before
    # a new id is added once, even if repeated within one update
    index.update([("c7", "The autoscaler scales down idle nodes."), ("c7", "same id again")], [])
    assert len(index) == 7
    assert ids(index.search(["autoscaler"], 10)[0]).count("c7") == 1


def test_delete_then_reinsert_in_one_update(store):
    index = LexicalIndex.open(store)
    index.update([("c3", "The Ray autoscaler adds nodes when tasks are pending.")], ["c3"])
    assert len(index) == 6
    assert ids(index.search(["autoscaler"], 5)[0]) == ["c3"]


def test_save_and_open_round_trip(store, monkeypatch):
    fresh = LexicalIndex(store / "bm25", None)
    fresh.update(DOCS, [])
    queries = ["ray data", "autoscaler nodes", "Ray clusters hyperparameter", "zebra"]
    expected = fresh.search(queries, 4)

    def no_rebuild(tokens):
        raise AssertionError("open() must load the saved BM25 matrix, not rebuild it")

    monkeypatch.setattr(lexical, "_build_retriever", no_rebuild)
    reopened = LexicalIndex.open(store)
    assert len(reopened) == 6
    assert reopened.search(queries, 4) == expected


def test_updates_after_open_keep_earlier_documents(store):
    index = LexicalIndex.open(store)
    index.update([("c7", "Ray Workflows resume durable pipelines.")], [])
    index.save()
    reopened = LexicalIndex.open(store)
    assert len(reopened) == 7
    assert ids(reopened.search(["workflows"], 3)[0]) == ["c7"]
    assert ids(reopened.search(["autoscaler"], 3)[0]) == ["c3"]


def test_save_leaves_no_temporary_folders(store):
    index = LexicalIndex.open(store)
    index.update([("c7", "more text")], [])
    index.save()
    assert sorted(p.name for p in store.iterdir()) == ["bm25"]


def test_open_recovers_from_a_save_interrupted_between_renames(store):
    (store / "bm25").rename(store / "bm25.old")
    index = LexicalIndex.open(store)
    assert ids(index.search(["autoscaler"], 1)[0]) == ["c3"]
    index.save()
    assert sorted(p.name for p in store.iterdir()) == ["bm25"]


def test_documents_made_only_of_stopwords(tmp_path):
    index = LexicalIndex.open(tmp_path)
    index.update([("s1", "The and of."), ("s2", "It is what it is.")], [])
    assert len(index) == 2 and index.search(["the"], 5) == [[]]
    index.save()
    index = LexicalIndex.open(tmp_path)
    index.update([("d1", "Ray autoscaler")], [])
    assert ids(index.search(["autoscaler"], 5)[0]) == ["d1"]


def test_other_tokenizer_settings_are_refused(store):
    meta_path = store / "bm25" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["tokenizer"]["stopwords"] = "none"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="tokenizer"):
        LexicalIndex.open(store)


def test_index_built_with_a_missing_stemmer_is_refused(store, monkeypatch):
    meta_path = store / "bm25" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["tokenizer"]["stemmer"] = "snowball-english"
    meta_path.write_text(json.dumps(meta))
    monkeypatch.setitem(__import__("sys").modules, "Stemmer", None)  # import Stemmer fails
    lexical._stem_words.cache_clear()
    with pytest.raises(StoreError, match="PyStemmer"):
        LexicalIndex.open(store)
    lexical._stem_words.cache_clear()


def test_incomplete_folder_is_refused(store):
    (store / "bm25" / "meta.json").unlink()
    with pytest.raises(StoreError, match="meta.json"):
        LexicalIndex.open(store)


def test_matrix_matches_bm25s_own_indexing():
    import bm25s
    import numpy as np
    import pyarrow as pa

    texts = [text for _, text in DOCS] + ["Ray ray RAY data", "the of", "Autoscaler autoscaler nodes"]
    tokens = [tokenize(t) for t in texts]
    ours = lexical._build_retriever(pa.array(tokens, lexical._tokens_type()))
    theirs = bm25s.BM25(method="lucene", k1=1.5, b=0.75, backend="numpy")
    theirs.index(tokens, show_progress=False)
    for query in ["ray", "ray data autoscaler", "hyperparameter clusters", "nodes tasks pending"]:
        words = tokenize(query)
        np.testing.assert_allclose(ours.get_scores(words), theirs.get_scores(words), rtol=1e-6)


def test_stemming_when_a_stemmer_is_installed(tmp_path, monkeypatch):
    import sys
    import types

    class FakeStemmer:  # stands in for PyStemmer, which is not a dependency
        def __init__(self, language):
            assert language == "english"

        def stemWords(self, words):
            return [w[:-1] if w.endswith("s") else w for w in words]

    monkeypatch.setitem(sys.modules, "Stemmer", types.SimpleNamespace(Stemmer=FakeStemmer))
    lexical._stem_words.cache_clear()
    try:
        index = LexicalIndex.open(tmp_path)
        assert index.stemmer == "snowball-english"
        index.update(DOCS, [])
        index.save()
        reopened = LexicalIndex.open(tmp_path)
        assert reopened.stemmer == "snowball-english"
        # "node" finds "nodes" only because documents and queries are stemmed alike
        assert ids(reopened.search(["node"], 3)[0]) == ["c3"]
    finally:
        lexical._stem_words.cache_clear()
