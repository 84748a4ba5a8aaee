"""publish / resolve_store with real small Chroma stores."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT

from ragbatch.errors import RagbatchError, StoreError
from ragbatch.models.embedder import EmbedderSpec
from ragbatch.store import published as store_cache
from ragbatch.store.filetree import CHECKSUMS
from ragbatch.store.local import LocalVectors
from ragbatch.store.manifest import ChunkingParams, Manifest, write_manifest
from ragbatch.store.publish import publish as publish_store
from ragbatch.store.published import is_published, resolve_store

REPO = ROOT


def publish(store: Path, root: Path, **options) -> Path:
    """The version publishing `store` made (or found unchanged)."""
    return publish_store(store, root, **options).version


def make_store(path: Path, n: int, collection: str = "docs", chunks: int | None = None, store_id: str = "books") -> Path:
    """A store of `n` random 8-dim vectors, written through the store's own classes; the
    manifest claims `chunks` (default n). Stores of one `store_id` are one store's states."""
    spec = EmbedderSpec("random-8", "/nowhere", "local")
    vectors = LocalVectors(path, collection, create=True)
    rng = np.random.default_rng(n)
    chunks_ = [{"id": f"id{i}", "text": f"paragraph {i} of {n}", "source": "p.txt"} for i in range(n)]
    vectors.upsert(chunks_, rng.random((n, 8)).astype(np.float32))
    vectors.close()
    (path / "bm25").mkdir()
    (path / "bm25" / "vocab.json").write_text(json.dumps({"n": n}))
    manifest = Manifest.new(spec, 8, ChunkingParams(16, 0), collection)
    manifest.chunks, manifest.store_id = n if chunks is None else chunks, store_id
    write_manifest(path, manifest)
    return path


def chroma_count(store: Path) -> int:
    import chromadb

    manifest = json.loads((store / "manifest.json").read_text())
    client = chromadb.PersistentClient(path=str(store / "chroma"))
    try:
        return client.get_collection(manifest["collection"]).count()
    finally:
        client.close()


def checksums_verify(folder: Path) -> bool:
    """Independent check: CHECKSUMS.sha256 lists exactly the folder's files, with their hashes."""
    listed = {}
    for line in (folder / CHECKSUMS).read_text().splitlines():
        digest, rel = line.split("  ", 1)
        listed[rel] = digest
    present = {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS}
    return listed == present


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    base = tmp_path_factory.mktemp("src")
    return {n: make_store(base / f"s{n}" / "books", n) for n in (30, 40, 50)}


def fresh(stores, n, tmp_path) -> Path:
    """A private copy of a prepared store (publish opens it, which rewrites its SQLite file)."""
    dst = tmp_path / f"src{n}" / "books"
    shutil.copytree(stores[n], dst)
    return dst


def test_publish_makes_verified_version_and_link(stores, tmp_path):
    store, root, cache = fresh(stores, 50, tmp_path), tmp_path / "shared", tmp_path / "cache"
    version = publish(store, root)

    assert version.parent == root / "books.versions"
    assert os.readlink(root / "books") == f"books.versions/{version.name}"  # relative
    assert checksums_verify(version)
    assert "bm25/vocab.json" in (version / CHECKSUMS).read_text()
    if shutil.which("sha256sum"):  # the file is in sha256sum's own format
        subprocess.run(["sha256sum", "--quiet", "-c", CHECKSUMS], cwd=version, check=True)
    assert is_published(root / "books") and is_published(version)
    assert not [p for p in root.iterdir() if p.name.startswith((".tmp-", ".books.link-"))]

    local = resolve_store(root / "books", cache_dir=cache)
    assert local == cache / "stores" / "books" / version.name
    assert checksums_verify(local)
    assert chroma_count(local) == 50
    assert resolve_store(root / "books", cache_dir=cache) == local  # reused
    # Readers open the cached copy only; the published one stays byte-identical.
    assert checksums_verify(version)


def test_second_publish_switches_link_and_keep_prunes_oldest(stores, tmp_path):
    root = tmp_path / "shared"
    v1 = publish(fresh(stores, 30, tmp_path), root)
    v2 = publish(fresh(stores, 40, tmp_path), root)
    assert v1.name < v2.name
    assert Path(os.path.realpath(root / "books")) == v2.resolve()
    assert sorted(p.name for p in (root / "books.versions").iterdir()) == [v1.name, v2.name]

    v3 = publish(fresh(stores, 50, tmp_path), root, keep=2)
    assert sorted(p.name for p in (root / "books.versions").iterdir()) == [v2.name, v3.name]
    assert chroma_count(resolve_store(root / "books", tmp_path / "cache")) == 50


def test_refuses_manifest_count_that_differs_from_chroma(stores, tmp_path):
    store = fresh(stores, 30, tmp_path)
    (store / "manifest.json").write_text(json.dumps({**json.loads((store / "manifest.json").read_text()), "chunks": 31}))
    with pytest.raises(StoreError, match=r"manifest says 31 distinct chunks .* holds 30 vectors"):
        publish(store, tmp_path / "shared")
    assert not (tmp_path / "shared" / "books.versions").exists()


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda s: (s / "manifest.json").unlink(), "manifest.json: missing"),
        (lambda s: (s / "manifest.json").write_text("{"), "manifest.json: unreadable"),
        (lambda s: (s / "manifest.json").write_text("[]"), "needs an integer 'chunks'"),
        (lambda s: (s / "chroma" / "chroma.sqlite3").unlink(), "chroma.sqlite3: missing"),
        (lambda s: (s / "chroma" / "chroma.sqlite3").write_bytes(b"x" * 4096), "integrity"),
        (
            lambda s: (s / "manifest.json").write_text(json.dumps({**json.loads((s / "manifest.json").read_text()), "collection": "nope"})),
            "cannot read collection 'nope'",
        ),
    ],
)
def test_refuses_broken_store(stores, tmp_path, breakage, message):
    store = fresh(stores, 30, tmp_path)
    breakage(store)
    with pytest.raises(StoreError, match=message):
        publish(store, tmp_path / "shared")


def test_refuses_store_still_open_in_this_process(stores, tmp_path):
    import chromadb

    store = fresh(stores, 30, tmp_path)
    # Spelled differently from the path publish uses, so Chroma keeps a separate System.
    client = chromadb.PersistentClient(path=str(store / "chroma") + "/")
    try:
        with pytest.raises(StoreError, match=r"chroma: a Chroma client in this process still has"):
            publish(store, tmp_path / "shared")
    finally:
        client.close()
    assert publish(store, tmp_path / "shared").is_dir()  # fine once it is closed


def test_refuses_keep_below_one(stores, tmp_path):
    with pytest.raises(RagbatchError, match="keep 0: must be at least 1"):
        publish(stores[30], tmp_path / "shared", keep=0)


def test_refuses_to_replace_a_real_directory(stores, tmp_path):
    root = tmp_path / "shared"
    (root / "books").mkdir(parents=True)
    with pytest.raises(StoreError, match=r"shared/books: exists and is not a link made by publish"):
        publish(fresh(stores, 30, tmp_path), root)
    assert (root / "books").is_dir() and not (root / "books").is_symlink()


def test_resolve_plain_store_and_missing_path(stores, tmp_path):
    assert resolve_store(stores[30]) == stores[30]
    assert resolve_store(str(stores[30])) == stores[30]
    assert not is_published(stores[30])
    with pytest.raises(StoreError, match=r"nowhere: no such store"):
        resolve_store(tmp_path / "nowhere")


def test_resolve_uses_ragbatch_cache_env(stores, tmp_path, monkeypatch):
    root = tmp_path / "shared"
    version = publish(fresh(stores, 30, tmp_path), root)
    monkeypatch.setenv("RAGBATCH_CACHE", str(tmp_path / "envcache"))
    assert resolve_store(root / "books") == tmp_path / "envcache" / "stores" / "books" / version.name


def test_corrupt_published_file_is_detected(stores, tmp_path):
    root, cache = tmp_path / "shared", tmp_path / "cache"
    version = publish(fresh(stores, 30, tmp_path), root)
    sqlite_file = version / "chroma" / "chroma.sqlite3"
    data = bytearray(sqlite_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    sqlite_file.write_bytes(bytes(data))

    with pytest.raises(StoreError, match=r"chroma/chroma\.sqlite3: checksum mismatch"):
        resolve_store(root / "books", cache_dir=cache)
    # Nothing half-made is left for a later call to reuse.
    assert list((cache / "stores" / "books").iterdir()) == []


def test_missing_published_file_is_detected(stores, tmp_path):
    root = tmp_path / "shared"
    version = publish(fresh(stores, 30, tmp_path), root)
    (version / "bm25" / "vocab.json").unlink()
    with pytest.raises(StoreError, match=r"bm25/vocab\.json: listed in CHECKSUMS.sha256 but missing"):
        resolve_store(root / "books", cache_dir=tmp_path / "cache")


def test_reader_retries_once_when_its_version_is_pruned(stores, tmp_path, monkeypatch):
    root, cache = tmp_path / "shared", tmp_path / "cache"
    publish(fresh(stores, 30, tmp_path), root)
    real_copy = store_cache.copy_tree
    calls = []

    def copy_after_a_publish_prunes_it(src, dst):
        if src.parent.name == "books.versions":  # the reader's copies, not publish's
            calls.append(src)
            if len(calls) == 1:  # the reader has resolved v1; now v2 replaces and prunes it
                publish(fresh(stores, 40, tmp_path), root, keep=1)
        real_copy(src, dst)

    monkeypatch.setattr(store_cache, "copy_tree", copy_after_a_publish_prunes_it)
    local = resolve_store(root / "books", cache_dir=cache)
    assert len(calls) == 2 and calls[0] != calls[1]
    assert checksums_verify(local) and chroma_count(local) == 40


def test_leftovers_of_a_crashed_publish_are_removed(stores, tmp_path):
    root = tmp_path / "shared"
    (root / ".tmp-books-0123456789abcdef").mkdir(parents=True)
    (root / ".tmp-books-2-0123456789abcdef").mkdir()  # another store's: not ours to remove
    os.symlink("books.versions/x", root / ".books.link-0123456789abcdef")
    publish(fresh(stores, 30, tmp_path), root)
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".tmp")) == [".tmp-books-2-0123456789abcdef"]
    assert not os.path.lexists(root / ".books.link-0123456789abcdef")


def test_reader_racing_a_publisher_sees_whole_versions(stores, tmp_path):
    """One process publishes 30/40/50-vector stores over and over; we resolve meanwhile."""
    root = tmp_path / "shared"
    sources = [fresh(stores, n, tmp_path) for n in (30, 40, 50)]
    first = publish(sources[0], root).name
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    err_log = tmp_path / "publisher.err"
    with open(err_log, "w") as err:  # a file, so a chatty publisher cannot fill a pipe
        publisher = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "publish_loop.py"), str(root), "2", "2"] + [str(s) for s in sources],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    seen, retried_out, i = set(), 0, 0
    try:
        deadline = time.monotonic() + 60
        while publisher.poll() is None and time.monotonic() < deadline:
            i += 1
            try:
                local = resolve_store(root / "books", cache_dir=tmp_path / f"cache{i}")
            except StoreError as e:  # the one documented failure: pruned twice while copying
                assert "removed twice while copying" in str(e)
                retried_out += 1
                continue
            assert checksums_verify(local), local  # before Chroma opens (and rewrites) it
            manifest = json.loads((local / "manifest.json").read_text())
            vocab = json.loads((local / "bm25" / "vocab.json").read_text())
            assert vocab == {"n": manifest["chunks"]}
            assert chroma_count(local) == manifest["chunks"]
            seen.add((local.name, manifest["chunks"]))
        out, _ = publisher.communicate(timeout=60)
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait()
    assert publisher.returncode == 0, err_log.read_text()
    published = out.split()
    assert len(published) == 6
    assert len(os.listdir(root / "books.versions")) == 2
    assert {v for v, _ in seen} <= set(published) | {first}
    assert len({n for _, n in seen}) >= 2, f"reader saw too few versions: {seen}"
    assert retried_out <= 1


def test_published_versions_hold_only_the_store_not_its_lock_or_leftovers(stores, tmp_path):
    store = fresh(stores, 30, tmp_path)
    (store / ".ragbatch.lock").write_text("")
    (store / ".manifest.json.tmp-1234").write_text("{half")  # what interrupted writes leave
    (store / "bm25.old").mkdir()
    (store / "bm25.old" / "vocab.json").write_text("{}")
    version = publish(store, tmp_path / "shared")
    assert sorted(p.name for p in version.iterdir()) == sorted(["manifest.json", "chroma", "bm25", CHECKSUMS])
    assert checksums_verify(version)


def test_the_reader_cache_keeps_the_newest_three_copies_per_store(stores, tmp_path):
    root, cache = tmp_path / "shared", tmp_path / "cache"
    opened = []
    for n in (30, 40, 50, 30, 40):
        publish(fresh(stores, n, tmp_path / str(len(opened))), root, keep=5)
        opened.append(resolve_store(root / "books", cache_dir=cache))
    kept = sorted(p for p in (cache / "stores" / "books").iterdir())
    assert kept == opened[-3:]


def test_deleted_hnsw_files_are_found_though_chroma_still_counts_every_vector(tmp_path):
    store = make_store(tmp_path / "big" / "books", 3000)  # past Chroma's sync threshold: HNSW files written
    segment = next(p for p in (store / "chroma").iterdir() if p.is_dir())
    shutil.rmtree(segment)
    assert chroma_count(store) == 3000  # Chroma itself does not notice
    with pytest.raises(StoreError, match=r"its vector index \(HNSW files\) is damaged or missing"):
        publish(store, tmp_path / "shared")


# --- names belong to one store; an unchanged store publishes nothing -----------------------


def test_a_name_published_by_another_store_is_refused_unless_forced(indexed_store, tmp_path):
    novel = indexed_store({"around.txt": "Phileas Fogg lived at Saville Row.\n"}, name="default")
    squad = indexed_store({"super_bowl.txt": "Denver won Super Bowl 50.\n"}, name="default")  # every project's default store
    root = tmp_path / "shared"
    first = publish_store(squad, root)
    with pytest.raises(StoreError, match=r"shared/default: publishes another store \(from ") as refused:
        publish_store(novel, root)
    assert "publish under another name, or pass force" in str(refused.value)
    assert os.path.realpath(root / "default") == str(first.version)  # readers and servers still see SQuAD
    renamed = publish_store(novel, root, name="novel")
    assert renamed.link == root / "novel" and os.path.realpath(root / "novel") == str(renamed.version)
    forced = publish_store(novel, root, force=True)
    assert os.path.realpath(root / "default") == str(forced.version) and not forced.unchanged


def test_publishing_an_unchanged_store_makes_no_version(indexed_store, tmp_path):
    import ragbatch

    store = indexed_store({"around.txt": "Phileas Fogg lived at Saville Row.\nPassepartout was his servant.\n"})
    root = tmp_path / "shared"
    first = publish_store(store, root)
    ragbatch.search("Who was Fogg's servant?", store)  # opening Chroma rewrites its files, not its content
    again = publish_store(store, root)
    assert again.unchanged and again.version == first.version
    assert len(list((root / "store.versions").iterdir())) == 1
    (store.parent / "around.txt").write_text("Phileas Fogg lived at Saville Row.\nPassepartout was his new servant.\n")
    ragbatch.index(store.parent / "around.txt", store=store)
    changed = publish_store(store, root)
    assert not changed.unchanged and changed.version != first.version


def test_names_that_would_leave_the_root_are_refused(stores, tmp_path):
    for name in ("../x", ".hidden", "a/b"):
        with pytest.raises(RagbatchError, match="name"):
            publish_store(fresh(stores, 30, tmp_path / name.replace("/", "_")), tmp_path / "shared", name=name)
