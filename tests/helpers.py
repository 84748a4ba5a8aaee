"""What several test modules share: the one subprocess runner, the one way to index files
into a store, the small corpora, and readers of what a store holds. Test modules import
this, never each other."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import ragbatch
from ragbatch.store.records import unpack

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Facts of a small made-up country: no model knows them, so an answer that has them came from the store.
FACTS = [
    "The capital of Freedonia is Zubrowka, a city on the river Vel.",
    "Freedonia's national dish is a stew of lentils called brodo.",
    "The president of Freedonia in 1933 was Rufus T. Firefly.",
    "Sylvania is Freedonia's neighbour; its ambassador was Trentino.",
]
CAPITAL = "What is the capital of Freedonia?"

# Three unrelated topics, each answer in one unambiguous chunk, and a reference to a page
# no store holds (TOPICS, TOPIC_REFERENCES).
TOPICS = {
    "volcanoes.txt": "Mount Etna is an active stratovolcano on the east coast of Sicily.\nIts eruptions are frequent and effusive.",
    "baking.txt": "Sourdough bread rises with a starter of wild yeast and lactobacilli.\nBakers feed the starter with flour and water.",
    "chess.md": "# Openings\n\nThe Sicilian Defence answers 1.e4 with c5.\n\n## Endgames\n\nA king and rook always mate a lone king.",
}
TOPIC_REFERENCES = [
    {"id": "etna", "question": "Where is Mount Etna?", "source": "volcanoes.txt", "answers": ["Sicily"]},
    {"id": "starter", "question": "What makes sourdough bread rise?", "source": "baking.txt", "answers": ["wild yeast"]},
    {"id": "sicilian", "question": "How does the Sicilian Defence answer 1.e4?", "source": "chess.md#openings", "answers": ["c5"]},
    {"id": "rook", "question": "Which pieces mate a lone king in the endgame?", "source": "chess.md#endgames", "answers": ["king and rook"]},
    {"id": "gone", "question": "Who wrote Hamlet?", "source": "shakespeare.txt", "answers": ["Shakespeare"]},
]

# A text file, an HTML page in a subfolder and a Markdown guide (write_corpus).
TXT = "\n".join(f"Fogg's journal, day {i}: the steamer reached port {i} and Passepartout bought {i} oranges." for i in range(40))
HTML = """<html><body><nav>Site navigation</nav><main>
<section id="install"><h1>Install<a class="headerlink" href="#install">#</a></h1><p>Run pip install ray to install Ray.</p>
<section id="gpu"><h2>GPU support</h2><p>Ray schedules tasks on GPUs with num_gpus.</p></section></section>
</main></body></html>"""
MD = "# Guide\n\nIntro text about batch inference.\n\n## Tuning\n\nUse a larger batch size for throughput.\n"


def ragbatch_cli(*args, cwd=None, env=None, stdin=None, timeout=900) -> subprocess.CompletedProcess:
    """`ragbatch ARGS...` in a fresh interpreter, as a user or a cron job runs it: in `env`
    as given, else in this environment less a RAGBATCH_STORE the tester's shell may set."""
    if env is None:
        env = {key: value for key, value in os.environ.items() if key != "RAGBATCH_STORE"}
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**env, "PYTHONUNBUFFERED": "1"},
        input=stdin,
        timeout=timeout,
    )


def write_files(folder: Path, files: dict[str, str]) -> Path:
    """`files` (relative name -> text) written under `folder`; returns `folder`."""
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def write_corpus(docs: Path) -> Path:
    """A text file, an HTML page in a subfolder and a Markdown guide under `docs`."""
    return write_files(docs, {"journal.txt": TXT, "sub/ray.html": HTML, "guide.md": MD})


def index(paths, store: Path, **options) -> ragbatch.api.IndexReport:
    """`ragbatch.index` in this process with small chunks and the local executor unless
    `options` say otherwise."""
    options.setdefault("chunk_size", 48)
    options.setdefault("chunk_overlap", 4)
    options.setdefault("executor", "local")
    return ragbatch.index([paths] if isinstance(paths, (str, Path)) else list(paths), store, **options)


def manifest(store: Path) -> dict:
    return json.loads((Path(store) / "manifest.json").read_text())


def contents(collection) -> dict:
    """id -> (fields, text, vector) of every chunk of a Chroma collection, local or on a server."""
    got = collection.get(include=["metadatas", "documents", "embeddings"])
    return {i: (*reversed(unpack(d, m)), np.asarray(e)) for i, m, d, e in zip(got["ids"], got["metadatas"], got["documents"], got["embeddings"])}


def stored(store: Path) -> dict:
    """contents() of a local store."""
    import chromadb

    client = chromadb.PersistentClient(path=str(Path(store) / "chroma"))
    try:
        return contents(client.get_collection(manifest(store)["collection"]))
    finally:
        client.close()


def server_contents(url: str, collection: str) -> dict:
    """contents() of a collection on a Chroma server."""
    from ragbatch.store.server import connect

    client = connect(url)
    try:
        return contents(client.get_collection(collection))
    finally:
        client.close()


def assert_same_chunks(a: dict, b: dict) -> None:
    """Two stores' contents(): the same chunk ids, fields and texts, vectors within float noise."""
    assert a.keys() == b.keys() and a
    for chunk_id, (meta, text, vector) in a.items():
        assert b[chunk_id][:2] == (meta, text)
        np.testing.assert_allclose(b[chunk_id][2], vector, atol=1e-5)


def write_questions(path: Path, questions: list[dict]) -> Path:
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`ragbatch serve` in a subprocess on a free port, ready when /health answers (uvicorn
    listens only after the embedder and the engine loaded). stderr goes to `log`."""

    def __init__(self, store: Path, env: dict, log: Path, options: list[str], host: str = "127.0.0.1"):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "serve", "--store", str(store), "--host", host, "--port", str(self.port), *options],
            stdout=subprocess.DEVNULL,
            stderr=open(log, "w"),
            env=env,
        )
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(1)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
