"""The command line as users and scripts see it: exit codes, one-line errors, JSON.

In-process through click's CliRunner; a real subprocess only where the point is what
a fresh interpreter imports or prints (help speed, --debug tracebacks)."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from helpers import ROOT
from helpers import ragbatch_cli as ragbatch

from ragbatch.cli import main


def invoke(*args):
    """Run a command in-process: exit code, stdout and stderr as a shell would see them."""
    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_imports_no_heavy_library():
    heavy = ["torch", "chromadb", "ray", "vllm", "sentence_transformers", "transformers", "rich", "pyarrow"]
    heavy += ["fastapi", "uvicorn", "starlette", "pydantic", "prometheus_client", "httpx"]  # serve's, imported inside the command
    code = f"import sys, ragbatch.cli; print(sorted({set(heavy)!r} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"
    result = ragbatch("--help")
    assert result.returncode == 0 and "index" in result.stdout


def test_index_json_and_exit_codes(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Phileas Fogg lived at Saville Row.\nPassepartout was his new servant.\n")
    (docs / "bad.txt").write_bytes(b"\xff\xfe\x00\x00")
    result = invoke("index", docs, "--store", tmp_path / "store", "--json")
    assert result.exit_code == 3, result.stderr  # indexed, but a file was skipped for an error
    report = json.loads(result.stdout)
    for key in ("files", "chunks", "embedded", "unchanged", "deleted", "skipped_files", "ms_per_vector", "seconds", "published"):
        assert key in report
    assert report["files"] == 1 and report["embedded"] == report["chunks"] >= 1 and report["skipped_files"] == 1
    assert "bad.txt" in result.stderr and "Traceback" not in result.stderr

    (docs / "bad.txt").unlink()
    again = invoke("index", docs, "--store", tmp_path / "store", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["embedded"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["index", "no/such/dir", "--store", "{tmp}/s"], "no/such/dir: no such file or directory"),
        (["index", "{tmp}/ok.txt", "--store", "{tmp}/s", "--chunk-size", "9999"], "--chunk-size 9999"),
        (["publish", "--store", "{tmp}/none", "{tmp}/root"], "no such store"),
    ],
)
def test_errors_are_one_line_without_traceback(tmp_path, args, message):
    (tmp_path / "ok.txt").write_text("Some text.\n")
    result = invoke(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_refused_store_is_left_intact(tmp_path):
    (tmp_path / "a.txt").write_text("Fogg wagered twenty thousand pounds.\n")
    assert invoke("index", tmp_path / "a.txt", "--store", tmp_path / "s", "--chunk-size", "64").exit_code == 0
    before = (tmp_path / "s" / "manifest.json").read_text()
    result = invoke("index", tmp_path / "a.txt", "--store", tmp_path / "s", "--chunk-size", "32")
    assert result.exit_code == 1 and "chunk-size 64, not 32" in result.stderr
    assert (tmp_path / "s" / "manifest.json").read_text() == before


def test_debug_shows_the_traceback(tmp_path):
    result = ragbatch("--debug", "index", tmp_path / "missing", "--store", tmp_path / "s")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_small_things_a_new_user_met(tmp_path):
    (tmp_path / "a.txt").write_text("Fogg wagered twenty thousand pounds.\n")
    (tmp_path / "notes.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe\x00\x00")
    indexed = invoke("index", tmp_path, "--store", tmp_path / "s", "--json")
    assert indexed.exit_code == 3
    skipped = {os.path.basename(item["file"]): item["reason"] for item in json.loads(indexed.stdout)["skipped"]}
    assert skipped == {"notes.pdf": "skipped (unsupported type .pdf)", "b.txt": "UTF-16 text; convert it to UTF-8"}
    blank = invoke("search", "  ", "--store", tmp_path / "s")
    assert blank.exit_code == 2 and "QUESTION" in blank.stderr and "must not be blank" in blank.stderr
    nothing = invoke("search", "Fogg", "--store", tmp_path / "s", "--where", "title=nope", "--json")
    assert nothing.exit_code == 0 and json.loads(nothing.stdout)["results"] == []
    assert "no stored chunk matches title=nope" in nothing.stderr
