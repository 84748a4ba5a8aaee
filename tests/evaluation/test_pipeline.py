"""`ragbatch eval` end to end on a real store: retrieval metrics where every rank is known,
answer metrics from an answers file."""

import json

import pyarrow.parquet as pq
import pytest
from helpers import TOPIC_REFERENCES, TOPICS, index, ragbatch_cli, write_files, write_questions

import ragbatch
from ragbatch.errors import RagbatchError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    write_files(root / "docs", TOPICS)
    index([root / "docs"], root / "store", publish_root=root / "published", chunk_size=64, chunk_overlap=0)
    write_questions(root / "refs.jsonl", TOPIC_REFERENCES)
    return root


def test_eval_metrics_on_a_store_where_every_rank_is_known(store, tmp_path):
    result = ragbatch.evaluate(str(store / "refs.jsonl"), store / "store", ks=[1, 3], out=tmp_path / "rows.parquet", retrieval="hybrid")
    summary, rows = result.summary, result.rows
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
    summary = ragbatch.evaluate(str(store / "refs.jsonl"), store / "store", ks=[1], answers=tmp_path / "a.parquet").summary
    # EM: Sicily 1, "wild yeast and lactobacilli" 0, "i dont know" 0, "king and rook" vs "a king and a rook" -> normalised "king and rook" == 1
    assert summary["exact_match"] == pytest.approx(2 / 4)
    # F1: 1, 2*(2/4*2/2)/(2/4+2/2)=0.667, 0, 1
    assert summary["f1"] == pytest.approx((1 + 2 / 3 + 0 + 1) / 4)
    assert summary["dont_know_rate"] == pytest.approx(1 / 4)


def test_reference_without_source_is_one_clear_error(store, tmp_path):
    (tmp_path / "refs.jsonl").write_text('{"id": "x", "question": "Where?"}\n')
    with pytest.raises(RagbatchError, match="no reference has a source to score against"):
        ragbatch.evaluate(str(tmp_path / "refs.jsonl"), store / "store")


def test_rows_cite_the_passages_with_their_lines(store):
    rows = ragbatch.evaluate(str(store / "refs.jsonl"), store / "store", ks=[1]).rows
    etna = next(r for r in rows if r["id"] == "etna")
    assert etna["ranked_sources"][0] == "volcanoes.txt#L1-L2" and etna["rank"] == 1  # cited as a user would open it


def test_references_mostly_outside_the_store_are_one_line(store, tmp_path):
    refs = write_questions(tmp_path / "refs.jsonl", [{"question": f"Q{i}?", "source": f"other/page{i}.html"} for i in range(3)] + TOPIC_REFERENCES[:1])
    with pytest.raises(RagbatchError, match=r"3 of 4 references name pages .* does not hold \(e.g. other/page0.html; the store holds e.g. "):
        ragbatch.evaluate(str(refs), store / "store")
    cli = ragbatch_cli("eval", refs, "--store", store / "store")
    assert cli.returncode == 1 and len(cli.stderr.strip().splitlines()) == 1 and "use another --store" in cli.stderr


def test_answers_that_match_no_reference_are_refused(store, tmp_path):
    import pyarrow as pa

    pq.write_table(pa.table({"id": ["q-other"], "answer": ["Sicily"]}), tmp_path / "a.parquet")
    with pytest.raises(RagbatchError, match="answers none of the references' ids"):
        ragbatch.evaluate(str(store / "refs.jsonl"), store / "store", answers=tmp_path / "a.parquet")


def test_a_bad_references_line_is_skipped_and_named(store, tmp_path):
    lines = [json.dumps(r) for r in TOPIC_REFERENCES[:2]] + ['{"question": "broken', json.dumps({"id": "nosource", "question": "Where?"})]
    (tmp_path / "refs.jsonl").write_text("\n".join(lines) + "\n")
    result = ragbatch.evaluate(str(tmp_path / "refs.jsonl"), store / "store")
    assert result.summary["questions"] == 2 and len(result.summary["errors"]) == 2
    assert result.summary["errors"][0].startswith(f"{tmp_path / 'refs.jsonl'}:3: not valid JSON")
    cli = ragbatch_cli("eval", tmp_path / "refs.jsonl", "--store", store / "store", "--json")
    assert cli.returncode == 3 and "refs.jsonl:3: not valid JSON" in cli.stderr and "'nosource' has no \"source\"" in cli.stderr
