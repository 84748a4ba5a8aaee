"""Stores whose vectors live on a real Chroma server (`chroma run`, see chroma_process.py):
index, re-index, search, ask, eval, check and publish against it; a killed index run; many
writers at once; and the bad inputs (server down, a store that lives elsewhere, a
collection of another embedder)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import helpers
import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import ROOT, assert_same_chunks, manifest, server_contents, stored
from helpers import ragbatch_cli as ragbatch

from ragbatch.errors import StoreError
from ragbatch.store.server import ServerAddress, ServerVectors

DOCS = {
    "freedonia.txt": "The capital of Freedonia is Zubrowka, a city on the river Vel.\nFreedonia's national dish is a stew of lentils called brodo.",
    "volcanoes.txt": "Mount Etna is an active stratovolcano on the east coast of Sicily.\nIts eruptions are frequent and effusive.",
    "chess.md": "# Openings\n\nThe Sicilian Defence answers 1.e4 with c5.\n\n## Endgames\n\nA king and rook always mate a lone king.",
}
REFERENCES = [
    {"id": "capital", "question": "What is the capital of Freedonia?", "source": "freedonia.txt", "answers": ["Zubrowka"]},
    {"id": "etna", "question": "Where is Mount Etna?", "source": "volcanoes.txt", "answers": ["Sicily"]},
    {"id": "sicilian", "question": "How does the Sicilian Defence answer 1.e4?", "source": "chess.md#openings", "answers": ["c5"]},
    {"id": "rook", "question": "Which pieces mate a lone king in the endgame?", "source": "chess.md#endgames", "answers": ["king and rook"]},
]


def index(paths, store, **options):
    """helpers.index with this module's chunking: 32 tokens, no overlap."""
    return helpers.index(paths, store, **{"chunk_size": 32, "chunk_overlap": 0, **options})


@pytest.fixture(scope="module")
def stores(tmp_path_factory, chroma_server):
    """The same corpus indexed into a local store and into a store on the server."""
    root = tmp_path_factory.mktemp("server-stores")
    docs = root / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    (root / "refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in REFERENCES))
    local = index([docs], root / "local")
    remote = index([docs], root / "remote", chroma=chroma_server.url)
    assert remote.embedded == remote.chunks == local.chunks > 4
    return root


def test_index_keeps_vectors_on_the_server_and_the_rest_in_the_store(stores, chroma_server):
    store = stores / "remote"
    recorded = manifest(store)
    assert recorded["chroma_url"] == chroma_server.url and recorded["collection"].startswith("ragbatch-remote-")
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) == ["bm25", "manifest.json"]  # no chroma/ folder
    # The server holds exactly what a local store holds: ids, texts, metadata, vectors.
    assert_same_chunks(stored(stores / "local"), server_contents(chroma_server.url, recorded["collection"]))
    from ragbatch.store.server import connect

    client = connect(chroma_server.url)
    collection = client.get_collection(recorded["collection"])
    assert collection.configuration["hnsw"]["space"] == "cosine" and collection.configuration["hnsw"]["ef_search"] == 400
    assert collection.metadata["ragbatch_embedder"].startswith("all-MiniLM-L6-v2 (")
    client.close()


def test_reindex_needs_no_flag_and_embeds_nothing(stores, chroma_server):
    again = index([stores / "docs"], stores / "remote")
    assert (again.embedded, again.unchanged, again.deleted) == (0, again.chunks, 0)
    same = index([stores / "docs"], stores / "remote", chroma=chroma_server.url + "/")  # the same URL, spelt with a slash
    assert same.embedded == 0


@pytest.mark.slow
def test_search_and_eval_read_the_server_and_match_the_local_store(stores):
    results = {}
    for name in ("local", "remote"):
        found = ragbatch("search", "Where is Mount Etna?", "--store", stores / name, "--k", 3, "--json")
        assert found.returncode == 0, found.stderr
        results[name] = [(h["chunk_id"], h["score"]) for h in json.loads(found.stdout)["results"]]
    assert results["remote"] == results["local"] and results["remote"]

    summaries = {}
    for name in ("local", "remote"):
        evaluated = ragbatch("eval", stores / "refs.jsonl", "--store", stores / name, "--k", "1,3", "--retrieval", "dense,hybrid", "--json")
        assert evaluated.returncode == 0, evaluated.stderr
        summaries[name] = json.loads(evaluated.stdout)
    assert summaries["remote"]["hit_at"]["1"] == 1.0 and summaries["remote"]["scored"] == 4
    for key in ("hit_at", "answer_hit_at", "mrr", "modes"):
        assert summaries["remote"][key] == summaries["local"][key], key


@pytest.mark.slow
def test_ask_answers_from_the_server_store(stores, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "capital", "question": "What is the capital of Freedonia?"}) + "\n")
    out = tmp_path / "answers.parquet"
    result = ragbatch("ask", questions, "--store", stores / "remote", "--out", out, "--k", 2, "--max-tokens", 24, "--max-model-len", 2048, "--json")
    assert result.returncode == 0, result.stderr
    row = pq.read_table(out).to_pylist()[0]
    assert row["error"] is None and "Zubrowka" in row["answer"]
    assert row["sources"][0] == "freedonia.txt#L1"  # the file and the line it came from


@pytest.mark.slow
def test_check_and_publish_copy_the_directory_that_points_at_the_server(stores, tmp_path, chroma_server):
    store = tmp_path / "books"
    shutil.copytree(stores / "remote", store)  # the same collection: nothing written to it here
    checked = ragbatch("check", "--store", store, "--json")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["chunks"] == manifest(store)["chunks"]

    published = ragbatch("publish", tmp_path / "shared", "--store", store, "--json")
    assert published.returncode == 0, published.stderr
    version = Path(json.loads(published.stdout)["published"])
    assert sorted(p.name for p in version.iterdir()) == ["CHECKSUMS.sha256", "bm25", "manifest.json"]
    assert manifest(version)["chroma_url"] == chroma_server.url
    found = ragbatch(
        "search", "national dish", "--store", tmp_path / "shared" / "books", "--k", 1, "--json", env={**os.environ, "RAGBATCH_CACHE": str(tmp_path / "cache")}
    )
    assert found.returncode == 0, found.stderr
    assert "brodo" in json.loads(found.stdout)["results"][0]["text"]

    # A vector lost on the server is found by check: one line naming the server.
    from ragbatch.store.server import connect

    lost = tmp_path / "lost"
    index([stores / "docs"], lost, chroma=chroma_server.url)
    client = connect(chroma_server.url)
    collection = client.get_collection(manifest(lost)["collection"])
    collection.delete(ids=collection.get(limit=1)["ids"])
    client.close()
    broken = ragbatch("check", "--store", lost)
    assert broken.returncode == 1 and len(broken.stderr.strip().splitlines()) == 1
    assert f"Chroma server {chroma_server.url}" in broken.stderr and "holds" in broken.stderr and "Traceback" not in broken.stderr


@pytest.mark.slow
def test_ray_embed_actors_write_the_server_collection_themselves(stores, tmp_path, chroma_server):
    ray = index([stores / "docs"], tmp_path / "ray", executor="ray", chroma=chroma_server.url)
    assert ray.executor == "ray" and ray.embedded == ray.chunks
    # The parallel write path: the vectors came from the embed actors' own upserts
    # (host:pid of a Ray worker), none through the driver's writer.
    assert ray.writers and "driver" not in ray.writers and f":{os.getpid()}" not in " ".join(ray.writers)
    assert_same_chunks(stored(stores / "local"), server_contents(chroma_server.url, manifest(tmp_path / "ray")["collection"]))
    # The BM25 index, fed by the driver, holds the same chunks as the local store's.
    found = {}
    for name, store in (("local", stores / "local"), ("ray", tmp_path / "ray")):
        done = ragbatch("search", "Mount Etna volcano", "--store", store, "--k", 3, "--retrieval", "bm25", "--json")
        assert done.returncode == 0, done.stderr
        found[name] = [h["chunk_id"] for h in json.loads(done.stdout)["results"]]
    assert found["ray"] == found["local"] and found["ray"]
    again = index([stores / "docs"], tmp_path / "ray", executor="ray")
    assert again.embedded == 0 and again.chunks == ray.chunks and not again.writers


@pytest.mark.slow
def test_several_processes_write_one_server_collection_and_lose_nothing(tmp_path, chroma_server):
    """What loses vectors on a local folder (two writers of one folder lost 20-26 % when measured) is safe through the server."""
    name = "ragbatch-concurrent-test"
    ServerVectors(ServerAddress(chroma_server.url, name), create=True).close()
    writer = """
import sys, numpy as np
from ragbatch.store.server import ServerAddress, ServerVectors
part = int(sys.argv[1])
store = ServerVectors(ServerAddress(sys.argv[2], sys.argv[3]))
rng = np.random.default_rng(part)
for block in range(8):
    ids = [f"p{part}-{block}-{i}" for i in range(250)]
    store.upsert([{"id": i, "text": i, "source": f"s{part}.txt"} for i in ids], rng.normal(size=(250, 32)).astype(np.float32))
store.close()
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [subprocess.Popen([sys.executable, "-c", writer, str(p), chroma_server.url, name], env=env, stderr=subprocess.PIPE, text=True) for p in range(4)]
    for w in writers:
        assert w.wait(timeout=600) == 0, w.stderr.read()
    store = ServerVectors(ServerAddress(chroma_server.url, name))
    try:
        assert store.count() == 8000
        got = store.collection.get(include=["embeddings"])
        assert len(set(got["ids"])) == 8000
        nearest = store.query(np.asarray(got["embeddings"]), 1)
        assert [r[0][0] for r in nearest] == got["ids"]  # every vector is found, by itself
    finally:
        store.close()


@pytest.mark.slow
def test_a_killed_index_run_is_completed_by_a_rerun(tmp_path, chroma_server):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "journal.txt").write_text("\n".join(f"Day {i}: the steamer reached port {i} and Passepartout bought {i} oranges." for i in range(64)))
    store = tmp_path / "store"
    # Blocks of 8 chunks, so the kill lands between two writes of one run.
    script = "import sys, ragbatch.ingest.local_executor as le; le.ENCODE_BLOCK = 8; from ragbatch.cli import main; main()"
    args = ["index", str(docs), "--store", str(store), "--chunk-size", "16", "--chunk-overlap", "0", "--executor", "local", "--chroma", chroma_server.url]
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args], env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    written, deadline = 0, time.time() + 600
    while not written and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
        if (store / "manifest.json").exists():
            try:
                probe = ServerVectors(ServerAddress(chroma_server.url, manifest(store)["collection"]))
            except StoreError:
                continue  # the collection is not made yet
            written = probe.count()
            probe.close()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert written, f"the run ended before its first write: {process.stderr.read()}"
    broken = ragbatch("check", "--store", store)
    assert broken.returncode == 1 and "run `ragbatch index` on it again" in broken.stderr

    finished = ragbatch(*args[:-2], "--json")  # the URL comes from the manifest
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    # The killed run wrote no copies file (it is written at the end): every copy is new now.
    assert 0 < report["unchanged"] and 0 < report["embedded"] and report["unchanged"] + report["embedded"] + report["copies"] == report["chunks"]
    assert ragbatch("check", "--store", store).returncode == 0

    clean = tmp_path / "clean"
    assert ragbatch(*args[:3], str(clean), *args[4:]).returncode == 0
    assert_same_chunks(server_contents(chroma_server.url, manifest(clean)["collection"]), server_contents(chroma_server.url, manifest(store)["collection"]))


@pytest.mark.slow
def test_bad_input_is_one_line_naming_the_problem(stores, tmp_path, chroma_server):
    from chroma_process import free_port

    down = f"http://localhost:{free_port()}"
    cases = [
        (["index", stores / "docs", "--store", tmp_path / "new", "--chroma", down], f"Chroma server {down}: unreachable"),
        (["index", stores / "docs", "--store", tmp_path / "new", "--chroma", "localhost:8000"], "--chroma localhost:8000: expected http://HOST:PORT"),
        (["index", stores / "docs", "--store", stores / "local", "--chroma", chroma_server.url], "its vectors are in"),
        (["index", stores / "docs", "--store", stores / "remote", "--chroma", down], f"its vectors are on the Chroma server {chroma_server.url}, not {down}"),
    ]
    moved = tmp_path / "moved"
    shutil.copytree(stores / "remote", moved)
    (moved / "manifest.json").write_text(json.dumps({**manifest(moved), "chroma_url": down}))
    for command in ("search", "check"):
        cases.append(([command, *(["Etna"] if command == "search" else []), "--store", moved], f"Chroma server {down}: unreachable"))
    for args, message in cases:
        result = ragbatch(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, (args, result.stderr)
    assert not (tmp_path / "new").exists()


def test_a_collection_of_another_embedder_is_refused(stores, tmp_path, chroma_server):
    other_model = tmp_path / "other-model"
    shutil.copytree(manifest(stores / "remote")["embedder"]["path"], other_model)
    with pytest.raises(StoreError, match="built with embedder all-MiniLM-L6-v2"):  # as for a local store
        index([stores / "docs"], stores / "remote", embedder=str(other_model))
    # A store of the other embedder whose manifest names the first store's collection
    # (copied, or edited by hand) must not add its vectors to it, nor search it.
    other = tmp_path / "other"
    index([stores / "docs"], other, embedder=str(other_model), chroma=chroma_server.url)
    (other / "manifest.json").write_text(json.dumps({**manifest(other), "collection": manifest(stores / "remote")["collection"]}))
    before = server_contents(chroma_server.url, manifest(stores / "remote")["collection"])
    with pytest.raises(StoreError, match="was made by embedder all-MiniLM-L6-v2 .*refusing to use it with .*other-model"):
        index([stores / "docs"], other)
    searched = ragbatch("search", "Etna", "--store", other)
    assert searched.returncode == 1 and "was made by embedder all-MiniLM-L6-v2" in searched.stderr
    assert server_contents(chroma_server.url, manifest(stores / "remote")["collection"]).keys() == before.keys()
