"""Filters, several modes from one pass, and the HTML report, on a real Chroma/BM25 store."""

import json
import re

import pytest
from helpers import index, ragbatch_cli

import ragbatch
from ragbatch.errors import ParameterError, RagbatchError
from ragbatch.retrieval.filters import ChunkFilter

DOCS = {
    "data/loading.html": """<html><head><title>Loading Data — Ray</title></head><body><main>
<section id="loading-data"><h1>Loading Data</h1><p>Read files from disk with read_parquet and read_csv.</p>
<section id="reading-files"><h2>Reading files</h2><p>Pass a folder of Parquet files; every file becomes blocks of rows.</p></section>
</section></main></body></html>""",
    "data/transforming.html": """<html><head><title>Transforming Data — Ray</title></head><body><main>
<section id="transforming-data"><h1>Transforming Data</h1><p>Apply a function to every row of the rows.</p>
<section id="configuring-batch-format"><h2>Configuring batch format</h2><p>Pick pandas or numpy for map_batches with batch_format.</p></section>
</section></main></body></html>""",
    "serve/scaling.md": "# Scaling Serve\n\nServe replicas scale with traffic.\n\n## Autoscaling\n\nSet min_replicas and max_replicas for files of rows.\n",
    "cluster/files.txt": "Cluster nodes share files over NFS.\n\nEvery node reads the same rows of files.",
}
REFERENCES = [
    {"id": "parquet", "question": "How do I read a folder of Parquet files?", "source": "data/loading.html#reading-files"},
    {"id": "format", "question": "How do I choose the batch format for map_batches?", "source": "data/transforming.html#configuring-batch-format"},
    {"id": "replicas", "question": "How do Serve replicas autoscale?", "source": "serve/scaling.md#autoscaling"},
    {"id": "nfs", "question": "How do cluster nodes share files?", "source": "cluster/files.txt"},
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("filters")
    for name, text in DOCS.items():
        (root / "docs" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "docs" / name).write_text(text)
    index([str(root / "docs")], root / "store", chunk_size=64, chunk_overlap=0, executor="local")
    (root / "refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in REFERENCES))
    return root


def search(store, question, mode, k=10, **filters):
    return ragbatch.search(question, store / "store", retrieval=mode, k=k, **filters)


# A question sharing words ("files", "rows") with every document, so BM25 matches all of them.
QUESTION = "files of rows"


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_source_prefix_restricts_every_mode(store, mode):
    everything = {h.source.split("/")[0] for h in search(store, QUESTION, mode)}
    assert {"data", "serve", "cluster"} <= everything
    hits = search(store, QUESTION, mode, source_prefix="data/")
    assert hits and {h.source.split("/")[0] for h in hits} == {"data"}


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_where_matches_stored_fields_in_every_mode(store, mode):
    hits = search(store, QUESTION, mode, where=["title=Reading files"])
    assert [h.source for h in hits] == ["data/loading.html#reading-files"]
    # Values compare as text, whatever their stored type; several --where must all match.
    hits = search(store, QUESTION, mode, where=["section=0", "source=cluster/files.txt"])
    assert [h.source for h in hits] == ["cluster/files.txt"]
    both = search(store, QUESTION, mode, where=["section=1"], source_prefix="serve/")
    assert {h.source for h in both} == {"serve/scaling.md#autoscaling"}


def test_a_filter_matching_nothing_gives_empty_results_and_bad_ones_are_refused(store):
    assert search(store, QUESTION, "hybrid", source_prefix="nowhere/") == []
    with pytest.raises(ParameterError, match="where colour: chunks have no such field") as refused:
        search(store, QUESTION, "hybrid", where=["colour=red"])
    assert refused.value.param == "where"  # what the CLI shows as --where and HTTP as the field
    with pytest.raises(RagbatchError, match="expected KEY=VALUE"):
        ChunkFilter.parse(["no-equals-sign"])


def test_contextual_text_is_searched_but_not_stored(store):
    # "Transforming Data" is only in the page's title and its h1, not in this section's body:
    # the context line indexed with the chunk finds it; the stored text is the body alone.
    [hit] = search(store, "transforming data batch format", "bm25", k=1, source_prefix="data/transforming.html#configuring")
    assert hit.text.startswith("Configuring batch format") and "Transforming Data" not in hit.text
    top = search(store, "transforming", "bm25", k=10)
    assert "data/transforming.html#configuring-batch-format" in [h.source for h in top]


def test_eval_scores_several_modes_from_one_embedding_pass(store, monkeypatch, tmp_path):
    from ragbatch.models.embedder import Embedder

    calls = []
    original = Embedder.embed_queries
    monkeypatch.setattr(Embedder, "embed_queries", lambda self, texts: calls.append(len(texts)) or original(self, texts))
    result = ragbatch.evaluate(str(store / "refs.jsonl"), store / "store", ks=[1, 3], retrieval="dense,bm25,hybrid", out=tmp_path / "rows.parquet")
    summary, rows = result.summary, result.rows
    assert calls == [len(REFERENCES)]  # questions embedded once for all three modes
    assert list(summary["modes"]) == ["dense", "bm25", "hybrid"] and summary["retrieval"] == "dense,bm25,hybrid"
    assert summary["hit_at"] == summary["modes"]["dense"]["hit_at"]  # the first mode's figures on top
    for mode in ("dense", "bm25", "hybrid"):
        alone = ragbatch.evaluate(str(store / "refs.jsonl"), store / "store", ks=[1, 3], retrieval=mode).summary
        assert summary["modes"][mode]["hit_at"] == alone["hit_at"] and summary["modes"][mode]["mrr"] == alone["mrr"]
    assert [r["retrieval"] for r in rows] == ["dense"] * 4 + ["bm25"] * 4 + ["hybrid"] * 4
    with pytest.raises(RagbatchError, match="retrieval dense,vectors"):
        ragbatch.evaluate(str(store / "refs.jsonl"), store / "store", retrieval="dense,vectors")


def test_eval_filter_leaves_other_pages_out(store):
    result = ragbatch.evaluate(str(store / "refs.jsonl"), store / "store", ks=[1], source_prefix="data/")
    summary, rows = result.summary, result.rows
    assert all(s.startswith("data/") for r in rows for s in r["ranked_sources"])
    assert summary["filter"] == "source starts with 'data/'"


def test_html_report_is_self_contained(store, tmp_path):
    report = tmp_path / "report.html"
    summary = ragbatch.evaluate(str(store / "refs.jsonl"), store / "store", ks=[1, 3, 5], retrieval="hybrid,dense,bm25", report=report).summary
    page = report.read_text()
    assert summary["report"] == str(report)
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") >= 2  # page and section curves
    assert not re.search(r"(src|href)=|https?://(?!www\.w3\.org/2000/svg)|<script|<link", page)  # nothing fetched, no script
    for mode in ("hybrid", "dense", "bm25"):
        assert f'<td class="l">{mode}</td>' in page  # one summary row per mode
    assert "questions whose right page ranked lowest with hybrid" in page


@pytest.mark.slow
def test_cli_filters_and_modes(store, tmp_path):
    run = ragbatch_cli
    result = run("search", QUESTION, "--store", store / "store", "--retrieval", "bm25", "--where", "title=Autoscaling", "--json")
    assert result.returncode == 0, result.stderr
    assert [r["source"] for r in json.loads(result.stdout)["results"]] == ["serve/scaling.md#autoscaling"]
    result = run("eval", store / "refs.jsonl", "--store", store / "store", "--retrieval", "dense,bm25,hybrid", "--source-prefix", "data/", "--k", "1,5")
    assert result.returncode == 0, result.stderr
    assert all(re.search(rf"^\W*{mode}\b", result.stdout, re.M) for mode in ("dense", "bm25", "hybrid")), result.stdout
    result = run("eval", store / "refs.jsonl", "--store", store / "store", "--retrieval", "sparse")
    assert result.returncode == 1 and "--retrieval sparse" in result.stderr


# --- diversity: at most one chunk per #section by default; files without sections are not limited

LONG = " ".join(f"Autoscaling rule {i} adds a worker node when {i} tasks are pending." for i in range(60))


@pytest.fixture(scope="module")
def long_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("diverse")
    (root / "docs").mkdir()
    (root / "docs" / "guide.html").write_text(f"""<html><body><main><section id="autoscaling"><h1>Autoscaling</h1><p>{LONG}</p></section>
<section id="nodes"><h2>Nodes</h2><p>A worker node joins when tasks are pending and autoscaling allows it.</p></section></main></body></html>""")
    (root / "docs" / "notes.txt").write_text(LONG.replace("Autoscaling rule", "\n\nNote on autoscaling rule"))
    index([str(root / "docs")], root / "store", chunk_size=48, chunk_overlap=0, executor="local")
    return root / "store"


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_one_chunk_per_section_unless_asked_otherwise(long_store, mode):
    def sources(**kw):
        return [h.source for h in ragbatch.search("autoscaling adds a worker node when tasks are pending", long_store, retrieval=mode, k=8, **kw)]

    default = sources()
    assert default.count("guide.html#autoscaling") == 1
    assert default.count("notes.txt") >= 5  # a file without sections is not limited
    assert sources(max_per_section=0).count("guide.html#autoscaling") >= 2
    # One per page first; the held-back chunks only fill the places left over.
    assert sorted(sources(max_per_page=1)[:2]) == ["guide.html#autoscaling", "notes.txt"]
