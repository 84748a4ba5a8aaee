"""Streaming index (issue 11): executors yield block by block, incrementality stays exact."""

import shutil

import numpy as np
import pytest
from test_indexing import HTML, MD, TXT, run, stored


@pytest.fixture
def corpus(tmp_path):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "journal.txt").write_text(TXT)
    (docs / "sub" / "ray.html").write_text(HTML)
    (docs / "guide.md").write_text(MD)
    return docs


def change(docs):
    """Edit one file, remove one, add one that fails and one repeating another's text."""
    (docs / "journal.txt").write_text(TXT + "\nA new day: the balloon rose over the Alps.\n")
    (docs / "guide.md").unlink()
    (docs / "empty.txt").write_text("   \n")
    shutil.copy(docs / "sub" / "ray.html", docs / "copy.html")


def test_ray_incremental_run_matches_local(corpus, tmp_path):
    """Changed, vanished, failing and new files on the Ray executor: the same counts,
    errors and store as the local executor."""
    local, ray = tmp_path / "local", tmp_path / "ray"
    run([corpus], local, executor="local")
    run([corpus], ray, executor="ray")
    change(corpus)
    a = run([corpus], local, executor="local")
    b = run([corpus], ray, executor="ray")
    assert a.deleted > 0 and a.embedded > 0 and a.unchanged > 0 and len(a.errors) == 1
    counts = lambda r: (r.files, r.chunks, r.embedded, r.unchanged, r.deleted, r.errors)  # noqa: E731
    assert counts(b) == counts(a)
    x, y = stored(local), stored(ray)
    assert set(x) == set(y)
    for chunk_id, (meta, text, vector) in x.items():
        assert y[chunk_id][:2] == (meta, text)
        np.testing.assert_allclose(y[chunk_id][2], vector, atol=1e-5)


def test_local_executor_embeds_while_reading(monkeypatch, tmp_path):
    """New chunks are embedded a few blocks at a time, not after every file is read."""
    from ragbatch import local_executor
    from ragbatch.local_executor import LocalExecutor

    monkeypatch.setattr(local_executor, "ENCODE_BLOCK", 2)
    monkeypatch.setattr(local_executor, "BUFFER_BLOCKS", 2)

    class Model:
        seconds = 0.0

        def embed_documents(self, texts):
            return np.ones((len(texts), 3), dtype=np.float32)

    read = []

    def fn(file):
        read.append(file["path"])
        return [{"id": f"{file['path']}-{i}", "path": file["path"], "text": "x" * i, "error": ""} for i in range(3)]

    files = [{"path": f"f{n}"} for n in range(5)]
    embedded_after = []
    for _seen, block, vectors, _ in LocalExecutor(None).stream(files, fn, {"f0-0"}, lambda: Model()):
        if block:
            embedded_after.append(len(read))
            assert vectors.shape == (len(block), 3)
    assert embedded_after[0] < len(files)  # embedding started before the last file was read
    assert sum(1 for _ in embedded_after) >= 3


def test_embed_actor_skips_stored_ids():
    from ragbatch.ray_executor import _EmbedActor

    actor = _EmbedActor.__new__(_EmbedActor)
    actor.stored = np.sort(np.array([b"b" * 32, b"d" * 32]))
    got = actor._is_stored(np.array(["a" * 32, "b" * 32, "c" * 32, "d" * 32, "e" * 32]))
    assert got.tolist() == [False, True, False, True, False]
    actor.stored = np.array([], dtype="S32")
    assert actor._is_stored(np.array(["a" * 32])).tolist() == [False]


def test_cpu_pool_leaves_room_for_reading():
    from ragbatch.ray_executor import READ_CPUS, cpu_pool

    assert cpu_pool(2, cluster=False) == (1, 2 - READ_CPUS, 2)
    assert cpu_pool(1, cluster=False) == (1, 1 - READ_CPUS, 1)
    size, each, threads = cpu_pool(16, cluster=True)
    assert size * each + READ_CPUS <= 16 and each == 4 and threads == 4
    size, each, _ = cpu_pool(4, cluster=True)
    assert size == 1 and each + READ_CPUS <= 4
