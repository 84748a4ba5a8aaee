"""The Python API (`import ragbatch`): the commands' work, called from Python, for real."""

import json

import pyarrow.parquet as pq
import pytest
from helpers import CAPITAL, TOPIC_REFERENCES, TOPICS, ragbatch_cli, write_files, write_questions

import ragbatch
from ragbatch.errors import ParameterError, RagbatchError
from ragbatch.store.records import Hit


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    write_files(root / "docs", TOPICS)
    report = ragbatch.index(root / "docs", store=root / "store", chunk_size=64, chunk_overlap=0, executor="local")
    assert report.embedded == report.chunks > 0 and report.as_json()["executor"] == "local"
    write_questions(root / "refs.jsonl", TOPIC_REFERENCES)
    return root


def test_index_again_embeds_nothing_and_reports_as_the_cli(store):
    again = ragbatch.index([store / "docs"], store=store / "store")  # chunking from the store
    assert again.embedded == 0 and again.unchanged == again.chunks
    cli = ragbatch_cli("index", store / "docs", "--store", store / "store", "--json")
    assert json.loads(cli.stdout).keys() == again.as_json().keys()


def test_search_returns_hits_as_the_search_command_ranks_them(store):
    hits = ragbatch.search("Where is Mount Etna?", store=store / "store", k=2)
    assert all(isinstance(h, Hit) for h in hits) and len(hits) == 2
    assert hits[0].source == "volcanoes.txt" and "Sicily" in hits[0].text and hits[0].score > 0
    cli = json.loads(ragbatch_cli("search", "Where is Mount Etna?", "--store", store / "store", "--k", 2, "--json").stdout)
    assert [r["chunk_id"] for r in cli["results"]] == [h.chunk_id for h in hits]
    only = ragbatch.search("Where is Mount Etna?", store=store / "store", where={"source": "baking.txt"}, retrieval="dense")
    assert {h.source for h in only} == {"baking.txt"}


def test_errors_name_the_parameter_not_an_option(store):
    with pytest.raises(ParameterError) as refused:
        ragbatch.search("Etna", store=store / "store", where=["colour=red"])
    assert refused.value.param == "where" and str(refused.value).startswith("where colour: ")
    with pytest.raises(RagbatchError, match="question is blank"):
        ragbatch.search("  ", store=store / "store")
    with pytest.raises(RagbatchError, match="no such store yet"):
        ragbatch.search("Etna", store=store / "nowhere")


def test_evaluate_gives_the_summary_and_rows(store):
    result = ragbatch.evaluate(str(store / "refs.jsonl"), store=store / "store", ks=[1, 3], retrieval="dense,hybrid")
    assert result.summary["hit_at"][1] == 1.0 and result.summary["missing_sources"] == 1
    assert set(result.summary["modes"]) == {"dense", "hybrid"} and len(result.rows) == 2 * len(TOPIC_REFERENCES)


def test_open_store_reads_the_manifest_vectors_and_bm25(store):
    with ragbatch.open_store(store / "store") as opened:
        assert opened.manifest.chunks == opened.vectors.count() == len(opened.lexical) > 0
        assert opened.manifest.embedder.name == "all-MiniLM-L6-v2" and opened.manifest.server is None
        pages = {fields["source"].split("#")[0] for _, fields in opened.vectors.scan()}
    assert pages == set(TOPICS)


def test_check_and_publish(store, tmp_path):
    assert ragbatch.check(store / "store").chunks > 0
    version = ragbatch.publish(store / "store", tmp_path / "shared")
    assert version.version.parent == tmp_path / "shared" / "store.versions" and ragbatch.check(tmp_path / "shared" / "store").chunks > 0


@pytest.mark.slow
def test_ask_a_list_of_questions_into_a_parquet_file(tmp_path, freedonia_store):
    out = tmp_path / "answers.parquet"
    report = ragbatch.ask([CAPITAL, {"id": "dish", "question": "What is Freedonia's national dish?"}], store=freedonia_store, out=out, k=2, max_tokens=24)
    assert report.answered == 2 and report.failed == 0 and report.as_json()["out"] == str(out)
    table = report.table()
    assert table.column("id").to_pylist()[1] == "dish" and table.column("sources").to_pylist()[0][0] == "freedonia.txt#L1"
    assert pq.read_table(out).num_rows == 2 and all(table.column("completion_tokens").to_pylist())
    again = ragbatch.ask([CAPITAL], store=freedonia_store, out=out, resume=True, k=2, max_tokens=24)  # answered already
    assert again.answered == 0 and again.skipped == 1 and again.dropped == 1  # the other question left the input
    with pytest.raises(ParameterError, match="out"):
        ragbatch.ask([CAPITAL], store=freedonia_store)  # a list has no file name to derive one from
