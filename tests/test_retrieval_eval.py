"""Dense, BM25 and hybrid retrieval on a real store; `ragbatch eval` end to end."""

import json

import pyarrow.parquet as pq
import pytest

from ragbatch.evaluating import EvalOptions, evaluate
from ragbatch.indexing import IndexOptions, index
from ragbatch.progress import make_progress
from ragbatch.retrieval import Retriever

DOCS = {
    "volcanoes.txt": "Mount Etna is an active stratovolcano on the east coast of Sicily.\nIts eruptions are frequent and effusive.",
    "baking.txt": "Sourdough bread rises with a starter of wild yeast and lactobacilli.\nBakers feed the starter with flour and water.",
    "chess.md": "# Openings\n\nThe Sicilian Defence answers 1.e4 with c5.\n\n## Endgames\n\nA king and rook always mate a lone king.",
}
REFERENCES = [
    {"id": "etna", "question": "Where is Mount Etna?", "source": "volcanoes.txt", "answers": ["Sicily"]},
    {"id": "starter", "question": "What makes sourdough bread rise?", "source": "baking.txt", "answers": ["wild yeast"]},
    {"id": "sicilian", "question": "How does the Sicilian Defence answer 1.e4?", "source": "chess.md#openings", "answers": ["c5"]},
    {"id": "rook", "question": "Which pieces mate a lone king in the endgame?", "source": "chess.md#endgames", "answers": ["king and rook"]},
    {"id": "gone", "question": "Who wrote Hamlet?", "source": "shakespeare.txt", "answers": ["Shakespeare"]},
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    docs = root / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    index(IndexOptions([str(docs)], root / "store", publish_root=root / "published", chunk_size=64, chunk_overlap=0, executor="local"), make_progress(False))
    (root / "refs.jsonl").write_text("\n".join(json.dumps(r) for r in REFERENCES) + "\n")
    return root


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_every_mode_ranks_the_right_source_first(store, mode):
    retriever = Retriever(store / "store", mode=mode)
    try:
        hits = retriever.search(["Mount Etna volcano eruptions", "sourdough starter yeast"], k=3)
    finally:
        retriever.close()
    assert [h[0].source for h in hits] == ["volcanoes.txt", "baking.txt"]
    assert all(h.text and h.chunk_id for ranked in hits for h in ranked)


def test_hybrid_works_on_the_published_copy_and_matches_the_local_store(store, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGBATCH_CACHE", str(tmp_path / "cache"))
    questions = [r["question"] for r in REFERENCES]
    local, published = Retriever(store / "store"), Retriever(store / "published" / "store")
    try:
        assert published.path != store / "store" and (tmp_path / "cache") in published.path.parents
        a, b = local.search(questions, 3), published.search(questions, 3)
    finally:
        local.close()
        published.close()
    assert [[h.chunk_id for h in r] for r in a] == [[h.chunk_id for h in r] for r in b]


def test_eval_metrics_on_a_store_where_every_rank_is_known(store, tmp_path):
    summary, rows = evaluate(
        EvalOptions(str(store / "refs.jsonl"), store / "store", [1, 3], out=tmp_path / "rows.parquet", retrieval="hybrid"), make_progress(False)
    )
    # Four answerable questions, each about a different, unambiguous chunk; one source
    # is not in the store at all and must be counted, not scored.
    assert summary["questions"] == 5 and summary["missing_sources"] == 1 and summary["scored"] == 4
    assert summary["hit_at"] == {1: 1.0, 3: 1.0}
    assert summary["answer_hit_at"] == {1: 1.0, 3: 1.0}
    assert summary["section_hit_at"][1] == 1.0  # the two chess questions carry anchors
    assert summary["mrr"] == 1.0
    by_id = {r["id"]: r for r in rows}
    assert by_id["gone"]["missing_source"] and by_id["rook"]["ranked_sources"][0] == "chess.md#endgames"
    assert pq.read_table(tmp_path / "rows.parquet").num_rows == 5


def test_eval_scores_answers_from_an_answers_file(store, tmp_path):
    import pyarrow as pa

    pq.write_table(
        pa.table({"id": ["etna", "starter", "sicilian", "rook"], "answer": ["Sicily", "Wild yeast and lactobacilli.", "I don't know.", "a king and a rook"]}),
        tmp_path / "a.parquet",
    )
    summary, _ = evaluate(EvalOptions(str(store / "refs.jsonl"), store / "store", [1], answers=tmp_path / "a.parquet"), make_progress(False))
    # EM: Sicily 1, "wild yeast and lactobacilli" 0, "i dont know" 0, "king and rook" vs "a king and a rook" -> normalised "king and rook" == 1
    assert summary["exact_match"] == pytest.approx(2 / 4)
    # F1: 1, 2*(2/4*2/2)/(2/4+2/2)=0.667, 0, 1
    assert summary["f1"] == pytest.approx((1 + 2 / 3 + 0 + 1) / 4)
    assert summary["dont_know_rate"] == pytest.approx(1 / 4)


def test_reference_without_source_is_one_clear_error(store, tmp_path):
    from ragbatch.errors import RagbatchError

    (tmp_path / "refs.jsonl").write_text('{"id": "x", "question": "Where?"}\n')
    with pytest.raises(RagbatchError, match="reference 'x' has no \"source\""):
        evaluate(EvalOptions(str(tmp_path / "refs.jsonl"), store / "store"), make_progress(False))
