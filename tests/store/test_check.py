"""`ragbatch check`: a healthy store passes; each kind of damage is one line that names
the damaged part and the repair, exit 1, no traceback."""

import json
import os
import shutil

import pytest
from click.testing import CliRunner
from helpers import index

from ragbatch.cli import main


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    root = tmp_path_factory.mktemp("check")
    (root / "fogg.txt").write_text("Phileas Fogg lived at Saville Row.\n\nPassepartout was his servant.\n\nThey left on the 2nd of October.\n")
    index([str(root / "fogg.txt")], root / "store", chunk_size=16, chunk_overlap=0, executor="local")
    return root / "store"


def damaged(healthy, tmp_path, damage):
    store = tmp_path / "store"
    shutil.copytree(healthy, store)
    damage(store)
    return store


def test_a_healthy_store_passes(healthy, tmp_path):
    store = damaged(healthy, tmp_path, lambda s: None)
    result = CliRunner().invoke(main, ["check", "--store", str(store), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["chunks"] == report["bm25_chunks"] > 0 and report["embedder"] == "all-MiniLM-L6-v2"


def truncate(path):
    os.truncate(path, os.path.getsize(path) // 3)


@pytest.mark.parametrize(
    "damage, names, repair",
    [
        (lambda s: truncate(s / "chroma" / "chroma.sqlite3"), "chroma/chroma.sqlite3: damaged", "re-index into a new store, or restore a published version"),
        (lambda s: shutil.rmtree(s / "bm25"), "bm25: holds 0 chunks but the store", "run `ragbatch index` on the store again"),
        (lambda s: (s / "bm25" / "meta.json").write_text("garbage"), "bm25/meta.json: unreadable", "re-index"),
        (lambda s: (s / "manifest.json").write_text('{"format": 1, "emb'), "manifest.json: unreadable", "restore it from a published version"),
        (lambda s: (s / "manifest.json").unlink(), "manifest.json: missing", "restore a published version"),
    ],
)
def test_each_damage_is_one_line_naming_it_and_the_repair(healthy, tmp_path, damage, names, repair):
    store = damaged(healthy, tmp_path, damage)
    result = CliRunner().invoke(main, ["check", "--store", str(store)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0] and repair in lines[0], result.stderr
    assert "Traceback" not in result.output
