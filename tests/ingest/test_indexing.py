"""`ragbatch index` end to end on real Chroma and the real packaged embedder."""

import json
import shutil

import numpy as np
import pytest
from helpers import MD, assert_same_chunks, index, stored, write_corpus

import ragbatch
from ragbatch.errors import RagbatchError, StoreError
from ragbatch.store.copies import read_copies


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "docs")


def test_index_then_reindex_embeds_nothing(corpus, tmp_path):
    store = tmp_path / "store"
    first = index([corpus], store)
    assert first.files == 3 and first.errors == []
    assert first.embedded == first.chunks > 5 and first.ms_per_vector > 0
    sources = {m["source"] for m, _, _ in stored(store).values()}
    assert {"journal.txt", "sub/ray.html#install", "sub/ray.html#gpu", "guide.md#guide", "guide.md#tuning"} <= sources
    second = index([corpus], store)
    assert (second.embedded, second.unchanged, second.deleted, second.chunks) == (0, first.chunks, 0, first.chunks)
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["chunks"] == first.chunks and manifest["files"] == 3
    assert manifest["chunking"] == {"chunk_size": 48, "chunk_overlap": 4, "context": 1}
    assert manifest["embedder"]["name"] == "all-MiniLM-L6-v2" and manifest["dimension"] == 384


def test_changed_file_replaces_only_its_old_chunks(corpus, tmp_path):
    store = tmp_path / "store"
    index([corpus], store)
    (corpus / "guide.md").write_text(MD.replace("larger batch size", "smaller learning rate"))
    report = index([corpus], store)
    assert report.embedded >= 1 and report.deleted >= 1
    texts = [d for _, d, _ in stored(store).values()]
    assert not any("larger batch size" in t for t in texts)
    assert any("smaller learning rate" in t for t in texts)
    # The store now equals a fresh index of the edited corpus: nothing stale, nothing twice.
    fresh = tmp_path / "fresh"
    index([corpus], fresh)
    assert set(stored(store)) == set(stored(fresh))


def test_file_removed_from_an_indexed_directory_loses_its_chunks(corpus, tmp_path):
    store = tmp_path / "store"
    before = index([corpus], store)
    (corpus / "sub" / "ray.html").unlink()
    report = index([corpus], store)
    assert report.deleted >= 2 and report.embedded == 0
    assert not any(m["source"].startswith("sub/ray.html") for m, _, _ in stored(store).values())
    assert report.chunks == before.chunks - report.deleted


def test_a_file_that_fails_to_read_keeps_its_stored_chunks(corpus, tmp_path):
    store = tmp_path / "store"
    before = index([corpus], store)
    (corpus / "guide.md").write_bytes(b"# Guide\n\n\xff\xfe broken")
    report = index([corpus], store)
    assert len(report.errors) == 1 and "guide.md" in report.errors[0] and "UTF-8" in report.errors[0]
    assert report.deleted == 0 and report.chunks == before.chunks


def test_files_deleted_or_made_unreadable_during_the_run_are_one_line_each(corpus, tmp_path, monkeypatch):
    """Between finding the files and reading them, one is deleted and one replaced by
    something no one can read: each is one error line, the rest is indexed, and the
    chunks they had are kept (a file that cannot be read now is not known to be gone)."""
    from ragbatch.ingest import readers

    store = tmp_path / "store"
    before = index([corpus], store)
    found = readers.discover

    def discover_then_break(paths):
        discovery = found(paths)
        (corpus / "guide.md").unlink()
        (corpus / "journal.txt").unlink()
        (corpus / "journal.txt").mkdir()  # open() fails for root too, unlike chmod 000
        return discovery

    monkeypatch.setattr(readers, "discover", discover_then_break)
    report = index([corpus], store)
    assert len(report.errors) == 2
    assert any("guide.md" in e and "No such file" in e for e in report.errors)
    assert any("journal.txt" in e and "cannot read file" in e for e in report.errors)
    assert report.files == 1 and report.deleted == 0 and report.chunks == before.chunks


def test_bad_inputs_are_skipped_and_the_rest_is_indexed(corpus, tmp_path):
    (corpus / "empty.txt").write_text("")
    (corpus / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    (corpus / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (corpus / "nav.html").write_text("<html><body><nav>only navigation</nav></body></html>")
    (corpus / "notes.pdf").write_bytes(b"%PDF")
    report = index([corpus, tmp_path / "missing-dir"], tmp_path / "store")
    messages = "\n".join(report.errors)
    for name in ("empty.txt", "blob.txt", "latin1.txt", "nav.html", "missing-dir"):
        assert name in messages, name
    assert any("notes.pdf" in line for line in report.skipped)
    assert report.files == 3 and report.chunks > 5


def test_lexical_index_follows_chroma_and_is_backfilled(corpus, tmp_path):
    from ragbatch.store.lexical import LexicalIndex

    store = tmp_path / "store"
    index([corpus], store)
    assert len(LexicalIndex.open(store)) == len(stored(store))
    (corpus / "sub" / "ray.html").unlink()
    index([corpus], store)
    ids = set(stored(store))
    assert len(LexicalIndex.open(store)) == len(ids)
    assert {i for hits in LexicalIndex.open(store).search(["oranges steamer"], 100) for i, _ in hits} <= ids
    shutil.rmtree(store / "bm25")  # a store from before the lexical index existed
    report = index([corpus], store)
    assert report.embedded == 0 and len(LexicalIndex.open(store)) == len(ids)


def test_store_refuses_another_embedder_or_chunking(corpus, tmp_path):
    store = tmp_path / "store"
    index([corpus], store)
    before = stored(store)
    with pytest.raises(StoreError, match="chunk-size 48, not 64"):
        index([corpus], store, chunk_size=64)
    other = tmp_path / "other-model"
    shutil.copytree(json.loads((store / "manifest.json").read_text())["embedder"]["path"], other)
    with pytest.raises(StoreError, match="built with embedder all-MiniLM-L6-v2"):
        index([corpus], store, embedder=str(other))
    assert set(stored(store)) == set(before)  # nothing written by the refused runs


def test_chunks_are_embedded_with_their_context_and_stored_without_it(corpus, tmp_path):
    from ragbatch.models.embedder import Embedder, resolve_embedder
    from ragbatch.store.records import indexed_text

    store = tmp_path / "store"
    index([corpus], store)
    chunks = {m["source"]: (m, d, e) for m, d, e in stored(store).values()}
    meta, text, vector = chunks["sub/ray.html#gpu"]
    assert text == "GPU support\n\nRay schedules tasks on GPUs with num_gpus." and meta["context"] == "Install › GPU support"
    expected = Embedder(resolve_embedder(None), device="cpu").embed_documents([indexed_text({"text": text, "context": meta["context"]})])[0]
    np.testing.assert_allclose(vector, expected, atol=1e-5)
    assert chunks["journal.txt"][0]["context"] == "journal"
    import chromadb

    client = chromadb.PersistentClient(path=str(store / "chroma"))
    assert client.get_collection("chunks").configuration["hnsw"]["ef_search"] == 400  # see store.HNSW_EF_SEARCH
    client.close()


def test_a_store_made_before_contexts_is_refused_not_mixed(corpus, tmp_path):
    store = tmp_path / "store"
    index([corpus], store)
    manifest = json.loads((store / "manifest.json").read_text())
    del manifest["chunking"]["context"]  # what an earlier ragbatch wrote
    (store / "manifest.json").write_text(json.dumps(manifest))
    before = stored(store)
    with pytest.raises(StoreError, match="embedded without page and section titles.*index into a new store"):
        index([corpus], store)
    assert set(stored(store)) == set(before)


def test_a_second_writer_on_the_same_store_is_refused(corpus, tmp_path):
    import fcntl

    store = tmp_path / "store"
    store.mkdir()
    with open(store / ".ragbatch.lock", "w") as held:  # another process indexing it now
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(StoreError, match="another ragbatch process is writing this store"):
            index([corpus], store)
    assert index([corpus], store).embedded > 0  # free again once the first writer ends


def test_nothing_to_index_is_an_error(tmp_path):
    with pytest.raises(RagbatchError, match="nothing to index"):
        index([tmp_path / "nope.txt"], tmp_path / "store")
    assert not (tmp_path / "store").exists()


@pytest.mark.slow
def test_local_and_ray_executors_build_identical_stores(corpus, tmp_path):
    local = index([corpus], tmp_path / "local", executor="local")
    ray = index([corpus], tmp_path / "ray", executor="ray")
    assert (ray.executor, local.executor) == ("ray", "local")
    assert_same_chunks(stored(tmp_path / "local"), stored(tmp_path / "ray"))
    again = index([corpus], tmp_path / "ray", executor="ray")
    assert again.embedded == 0


def test_publish_after_index(corpus, tmp_path):
    from ragbatch.store.published import resolve_store

    report = index([corpus], tmp_path / "books", publish_root=tmp_path / "shared")
    link = tmp_path / "shared" / "books"
    assert link.is_symlink() and report.published and link.resolve() == (tmp_path / report.published).resolve()
    copy = resolve_store(link, cache_dir=tmp_path / "cache")
    assert json.loads((copy / "manifest.json").read_text())["chunks"] == report.chunks
    again = index([corpus], tmp_path / "books", publish_root=tmp_path / "shared")
    assert again.published == report.published and any("nothing published" in line for line in again.notices)
    named = index([corpus], tmp_path / "books", publish_root=tmp_path / "shared", name="journal")
    assert (tmp_path / "shared" / "journal").is_symlink() and named.published != report.published


def test_thousands_of_queries_at_once_stay_within_sqlite_limits(tmp_path):
    """5,000 questions x k=10 in one Chroma call overflow SQLite's 32,766 variables."""
    from ragbatch.store.local import LocalVectors

    rng = np.random.default_rng(0)
    chroma = LocalVectors(tmp_path / "s", "chunks", create=True)
    chunks = [
        {"id": f"c{i}", "text": f"t{i}", "source": "s.txt", "path": "/s.txt", "root": "/", "title": "", "section": 0, "position": i, "start": 0}
        for i in range(50)
    ]
    chroma.upsert(chunks, rng.normal(size=(50, 8)).astype(np.float32))
    try:
        results = chroma.query(rng.normal(size=(5000, 8)).astype(np.float32), 10)
    finally:
        chroma.close()
    assert len(results) == 5000 and all(len(r) == 10 for r in results)


def test_same_named_files_in_two_folders_keep_their_own_chunks(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "notes.txt").write_text("Identical notes about Phileas Fogg.\n")
    report = index([tmp_path / "a" / "notes.txt", tmp_path / "b" / "notes.txt"], tmp_path / "s")
    assert report.chunks == 2 and report.copies == 1  # identical text, two files: two chunks, one vector
    assert [m["source"] for m, _, _ in stored(tmp_path / "s").values()] == ["a/notes.txt"]
    assert [row["source"] for row in read_copies(tmp_path / "s").values()] == ["b/notes.txt"]
    [hit] = ragbatch.search("Phileas Fogg notes", tmp_path / "s", k=1)
    assert (hit.cited, hit.also) == ("a/notes.txt#L1", ("b/notes.txt#L1",))


def test_the_store_format_says_who_can_read_it(corpus, tmp_path):
    """Packed records and copies (format 3) are unreadable to a ragbatch that wrote format 1:
    a run that writes records marks the store 3; a store of a newer format is refused in one line."""
    store = tmp_path / "store"
    index([corpus], store)
    path = store / "manifest.json"
    manifest = json.loads(path.read_text())
    assert manifest["format"] == 3
    path.write_text(json.dumps({**manifest, "format": 1}))
    index([corpus], store)  # nothing written: the store stays what it was
    assert json.loads(path.read_text())["format"] == 1
    (corpus / "guide.md").write_text(MD + "\n## More\n\nA new section to embed.\n")
    assert index([corpus], store).embedded > 0
    assert json.loads(path.read_text())["format"] == 3
    path.write_text(json.dumps({**manifest, "format": 4}))
    with pytest.raises(StoreError, match=r"written by a newer ragbatch \(store format 4, this one reads up to 3\)"):
        index([corpus], store)
