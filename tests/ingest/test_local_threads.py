"""The local executor's three threads (read, embed, the caller's writer loop): reading
goes on while a block is embedded, the read-ahead is bounded, errors reach the caller as
they were raised, an interrupted run stops its threads, and a re-run completes the store."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from helpers import ROOT, assert_same_chunks, stored

from ragbatch.ingest import local_executor
from ragbatch.ingest.local_executor import LocalExecutor


def rows_of(file, n=3):
    return [{"id": f"{file['path']}-{i}", "path": file["path"], "text": f"{file['path']} {i}", "key": f"{file['path']}-{i}", "error": ""} for i in range(n)]


class Loader:
    """Stands in for EmbedderLoader; `embed` is the model's embed_documents."""

    spec = type("Spec", (), {"name": "a model"})

    def __init__(self, embed=None, fail=None):
        self.embed, self.fail, self.threads = embed, fail, []

    def __call__(self):
        if self.fail:
            raise self.fail
        loader = self

        class Model:
            seconds = 0.0

            def embed_documents(self, texts):
                loader.threads.append(threading.current_thread().name)
                if loader.embed:
                    loader.embed(texts)
                return np.ones((len(texts), 2), dtype=np.float32)

        return Model()


def test_files_are_read_while_a_block_is_embedded_and_not_by_the_callers_thread(monkeypatch):
    monkeypatch.setattr(local_executor, "ENCODE_BLOCK", 3)
    monkeypatch.setattr(local_executor, "BUFFER_BLOCKS", 2)
    files = [{"path": f"f{n}"} for n in range(6)]
    read, during = [], []

    def embed(texts):
        if not during:  # the first encode waits for the reader to fetch the next files
            deadline = time.monotonic() + 10
            while len(read) < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            during.append(len(read))

    loader = Loader(embed)
    blocks = list(LocalExecutor(None).stream(files, lambda f: read.append(f["path"]) or rows_of(f), set(), set(), loader))
    assert during[0] >= 4  # files read while the first two were embedded
    assert sum(len(b.new) for b in blocks) == 18
    assert set(loader.threads) == {"ragbatch-embed"}


def test_reading_stays_a_bounded_distance_ahead(monkeypatch):
    monkeypatch.setattr(local_executor, "ENCODE_BLOCK", 2)
    monkeypatch.setattr(local_executor, "BUFFER_BLOCKS", 2)  # 4 rows read ahead
    files = [{"path": f"f{n}"} for n in range(40)]
    read = []
    stream = LocalExecutor(None).stream(files, lambda f: read.append(f) or rows_of(f), {"stored"}, set(), Loader())
    next(stream)  # then the caller (the writer loop) is slow
    time.sleep(0.5)
    # The embedder's buffer (2 files) and its blocks queue, the read-ahead (4 rows: 1
    # file) and the file being read: a few files, not all 40.
    assert len(read) <= 10
    stream.close()


@pytest.mark.parametrize("where", ["read", "load"])
def test_an_error_in_either_thread_reaches_the_caller_as_raised(where):
    from ragbatch.errors import ParameterError

    error = OSError("disk gone") if where == "read" else ParameterError("embedder", "x", "cannot load the model at /nowhere: no")

    def read(file):
        if where == "read" and file["path"] == "f2":
            raise error
        return rows_of(file)

    files = [{"path": f"f{n}"} for n in range(4)]
    with pytest.raises(type(error)) as caught:
        list(LocalExecutor(None).stream(files, read, {"stored"}, set(), Loader(fail=error if where == "load" else None)))
    assert caught.value is error


def test_a_caller_that_stops_stops_the_threads(monkeypatch):
    """Ctrl-C (or an error in the writer loop) mid-run: no thread keeps reading or embedding."""
    monkeypatch.setattr(local_executor, "ENCODE_BLOCK", 10)
    monkeypatch.setattr(local_executor, "BUFFER_BLOCKS", 2)
    started = threading.Event()

    def embed(texts):
        started.set()
        time.sleep(0.2)

    files = [{"path": f"f{n}"} for n in range(200)]
    read = []
    before = set(threading.enumerate())
    stream = LocalExecutor(None).stream(files, lambda f: read.append(f) or rows_of(f, 30), set(), set(), Loader(embed))
    for block in stream:
        if block.new:
            break
    stream.close()  # what the KeyboardInterrupt unwinding does to the generator
    deadline = time.monotonic() + 10
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set(threading.enumerate()) - before
    assert len(read) < len(files)


@pytest.mark.slow  # three index runs of ~600 chunks: about a minute
def test_ctrl_c_mid_embedding_then_a_rerun_completes_the_store(tmp_path):
    """A real `ragbatch index` interrupted while it embeds exits 130 at once; running it
    again gives the store a single run gives."""
    text = (ROOT / "corpora" / "around.txt").read_text(encoding="utf-8-sig")
    docs = tmp_path / "docs"
    docs.mkdir()
    for n in range(4):  # ~600 chunks: embedding takes long enough to be interrupted
        (docs / f"part{n}.txt").write_text(text[n * 40_000 : (n + 1) * 40_000])
    cmd = [sys.executable, str(ROOT / "cli.py"), "index", str(docs), "--chunk-size", "64", "--chunk-overlap", "8", "--executor", "local", "--json"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*cmd, "--store", str(tmp_path / "resumed")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status = tmp_path / "resumed" / ".ragbatch.writer.json"  # its progress line, once a second
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # wait until some chunks are embedded
        if status.exists() and re.search(r", [1-9]\d* of ~\d+ chunks embedded", json.loads(status.read_text() or "{}").get("progress", "")):
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err, err
    assert time.monotonic() - interrupted < 30
    again = subprocess.run([*cmd, "--store", str(tmp_path / "resumed")], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    once = subprocess.run([*cmd, "--store", str(tmp_path / "once")], env=env, capture_output=True, text=True, timeout=600)
    assert once.returncode == 0, once.stderr
    assert_same_chunks(stored(tmp_path / "once"), stored(tmp_path / "resumed"))
