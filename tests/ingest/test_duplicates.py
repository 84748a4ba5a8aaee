"""One vector per distinct text (store/copies.py): what a new user hit with duplicated text.

12,000 copies of one paragraph beside three one-line files made dense search return the
duplicates (differently on each run) and `check` call the fresh store damaged."""

import pytest
from helpers import index, stored

import ragbatch
from ragbatch.ingest.chunking import chunk_id as chunk_id_of
from ragbatch.store.copies import read_copies
from ragbatch.store.local import LocalVectors
from ragbatch.store.manifest import ChunkingParams, read_manifest, write_manifest

BOILER = "This page is part of the site's standard footer. All rights reserved by the publisher. Please read the terms of use before copying."
FACTS = {
    "llama.txt": "Llamas live in the Andes of South America, where they carry loads for herders.",
    "owl.txt": "Owls hunt at night and swallow their prey whole.",
    "tea.txt": "Green tea is steamed or pan-fired soon after picking.",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    docs = tmp_path_factory.mktemp("dupes") / "docs"
    docs.mkdir()
    (docs / "boiler.txt").write_text("\n\n".join([BOILER] * 12_000) + "\n")
    for name, text in FACTS.items():
        (docs / name).write_text(text + "\n")
    report = ragbatch.index(docs, store=docs.parent / "store", executor="local")  # the default chunking, as the user ran it
    return docs.parent / "store", report


def test_a_text_repeated_thousands_of_times_is_embedded_once(store):
    path, report = store
    # Boiler's chunks hold a few distinct texts (where content-defined blocks cut them), each embedded once.
    assert report.copies > 1500 and report.embedded < 10 and report.chunks == report.copies + report.embedded
    assert len(stored(path)) == report.embedded
    manifest = read_manifest(path)
    assert (manifest.chunks, manifest.copies, manifest.vectors) == (report.chunks, report.copies, report.embedded)
    assert ragbatch.check(path).chunks == report.chunks  # not "damaged": no vector lost among its twins


def test_dense_search_finds_the_right_file_every_time(store):
    path, _ = store
    for _ in range(5):
        hits = ragbatch.search("Where do llamas live?", store=path, k=3, retrieval="dense")
        assert hits[0].source == "llama.txt" and hits[0].score > 0.5
        assert sum(h.source == "boiler.txt" for h in hits) <= 1  # the repeated text is one passage, once


def test_a_repeated_passage_names_its_other_places(store):
    path, report = store
    [hit] = ragbatch.search("standard footer terms of use", store=path, k=1, retrieval="bm25")
    assert hit.source == "boiler.txt" and len(hit.also) > 1000
    assert all(place.startswith("boiler.txt#L") for place in hit.also)


def test_reindexing_embeds_nothing_and_keeps_the_copies(store):
    path, report = store
    again = ragbatch.index(path.parent / "docs", store=path)
    assert (again.embedded, again.deleted, again.chunks, again.copies) == (0, 0, report.chunks, report.copies)
    assert again.unchanged == report.chunks


def test_when_the_first_file_of_a_text_goes_a_copy_keeps_its_vector(tmp_path):
    docs = tmp_path / "docs"
    for folder in ("a", "b", "c"):  # the same file name: the same context line, the same embedded text
        (docs / folder).mkdir(parents=True)
        (docs / folder / "notes.txt").write_text("Phileas Fogg wagered twenty thousand pounds at the Reform Club.\n")
    first = index(docs, tmp_path / "s", chunk_size=64, chunk_overlap=0)
    assert (first.chunks, first.copies, first.embedded) == (3, 2, 1)
    rep = next(iter(stored(tmp_path / "s")))
    (docs / "a" / "notes.txt").unlink()  # the file whose chunk holds the vector
    second = index(docs, tmp_path / "s", chunk_size=64, chunk_overlap=0)
    assert (second.chunks, second.copies, second.embedded, second.deleted) == (2, 1, 0, 1)
    [(heir, (fields, _, _))] = stored(tmp_path / "s").items()
    assert heir != rep and fields["source"] == "b/notes.txt"
    assert [row["rep"] for row in read_copies(tmp_path / "s").values()] == [heir]
    [hit] = ragbatch.search("Fogg wager", tmp_path / "s", k=1, retrieval="hybrid")
    assert (hit.cited, hit.also) == ("b/notes.txt#L1", ("c/notes.txt#L1",))
    assert ragbatch.check(tmp_path / "s").chunks == 2


def test_a_filter_reaches_a_text_through_its_copy(tmp_path):
    docs = tmp_path / "docs"
    for folder in ("x", "y"):
        (docs / folder).mkdir(parents=True)
        (docs / folder / "notes.txt").write_text("Passepartout lost his shoes in Bombay.\n")
    index(docs, tmp_path / "s", chunk_size=64, chunk_overlap=0)
    [hit] = ragbatch.search("Passepartout shoes", tmp_path / "s", k=1, source_prefix="y/")
    assert hit.cited == "y/notes.txt#L1" and hit.also == ("x/notes.txt#L1",)


def test_a_store_with_twin_vectors_is_folded_by_the_next_index_run(tmp_path):
    """Stores made before format 3 hold one vector per chunk, twins included: the next run
    keeps one, makes the others copies, and embeds nothing."""
    docs, text = tmp_path / "docs", "Aouda was rescued from the suttee."
    (docs / "x").mkdir(parents=True)
    (docs / "x" / "notes.txt").write_text(text + "\n")
    index(docs, tmp_path / "s", chunk_size=64, chunk_overlap=0)
    [(chunk_id, (fields, text, vector))] = stored(tmp_path / "s").items()
    # y/notes.txt's chunk as an older ragbatch stored it: a vector of its own, the same as x's.
    twin_id = chunk_id_of("y/notes.txt", text, ChunkingParams(64, 0), 0, fields["context"])
    vectors = LocalVectors(tmp_path / "s", "chunks")
    vectors.upsert([{**fields, "id": twin_id, "text": text, "path": str(docs / "y" / "notes.txt"), "source": "y/notes.txt"}], vector.reshape(1, -1))
    vectors.close()
    (docs / "y").mkdir()
    (docs / "y" / "notes.txt").write_text(text + "\n")
    manifest = read_manifest(tmp_path / "s")
    manifest.chunks, manifest.format = 2, 2
    write_manifest(tmp_path / "s", manifest)
    report = index(docs, tmp_path / "s", chunk_size=64, chunk_overlap=0)
    assert (report.embedded, report.chunks, report.copies) == (0, 2, 1) and len(stored(tmp_path / "s")) == 1
    assert read_manifest(tmp_path / "s").format == 3 and ragbatch.check(tmp_path / "s").chunks == 2


@pytest.mark.slow
def test_the_ray_executor_keeps_one_vector_per_text_too(tmp_path):
    docs = tmp_path / "docs"
    for folder in ("a", "b"):
        (docs / folder).mkdir(parents=True)
        (docs / folder / "notes.txt").write_text("\n\n".join([BOILER] * 300) + "\n\nThe balloon rose over the Alps.\n")
    local = index(docs, tmp_path / "local")
    ray = index(docs, tmp_path / "ray", executor="ray")
    assert (ray.chunks, ray.copies) == (local.chunks, local.copies) and ray.copies > 10
    assert stored(tmp_path / "ray").keys() == stored(tmp_path / "local").keys()
    assert read_copies(tmp_path / "ray") == read_copies(tmp_path / "local")
    assert ragbatch.check(tmp_path / "ray").chunks == ray.chunks


@pytest.mark.slow  # 80 s: 170,000 chunks to chunk, key and fold
def test_a_long_line_of_one_repeated_word_is_searched_the_same_way_every_time(tmp_path):
    """A 1 MB one-line file gave different results for `search 東京` on each run."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "tokyo.txt").write_text("東京" * 170_000 + "\n")  # 1 MB of UTF-8 on one line
    (docs / "kyoto.txt").write_text("京都は日本の古い都です。\n")
    report = index(docs, tmp_path / "s", executor="local", chunk_size=None, chunk_overlap=None)
    assert report.copies > 100 and report.embedded < 10
    runs = [[(h.chunk_id, round(h.score, 5)) for h in ragbatch.search("東京", tmp_path / "s", k=3, retrieval="dense")] for _ in range(3)]
    assert runs[0] == runs[1] == runs[2] and len(runs[0]) == min(3, report.embedded)
