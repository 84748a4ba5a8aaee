import os
import subprocess
import sys
from pathlib import Path

# Tests never reach the real Hugging Face hub (it is not reachable here, and a test must not
# depend on it): the tests of downloading run a fake hub in a subprocess without this.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

pytest_plugins = ["ray_nodes"]  # the two-node Ray cluster fixture (`cluster`)
from helpers import FACTS, ROOT, index, write_files  # noqa: E402


# --- one way to get an indexed store: files in, a store folder out ---
@pytest.fixture(scope="session")
def indexed_store(tmp_path_factory):
    """A factory: `indexed_store(files, **index_options)` writes `files` (name -> text) to a
    new folder, indexes them into its `store` (small chunks, local executor by default)
    and returns the store's path. Session-scoped, so module fixtures can use it."""

    def make(files: dict[str, str], name: str = "store", **options):
        folder = write_files(tmp_path_factory.mktemp("indexed"), files)
        store = folder / name
        index([folder / f for f in files], store, **options)
        return store

    return make


@pytest.fixture(scope="session")
def freedonia_store(indexed_store):
    """The Freedonia facts, one chunk each: the store `ask` and `serve` answer from."""
    return indexed_store({"freedonia.txt": "\n".join(FACTS) + "\n"}, chunk_size=24, chunk_overlap=0)


# --- generation: the packaged LLM, converted once per cache and loaded once per session ---
@pytest.fixture(scope="session")
def llm_folder():
    """The packaged SmolLM2 as a Hugging Face folder (converted on first use, then cached)."""
    from ragbatch.models.weights import resolve_llm

    return resolve_llm(None)


@pytest.fixture(scope="session")
def llm_generator(llm_folder):
    """One vLLM engine for the whole session: loading it takes seconds and ~1.5 GB."""
    from ragbatch.generation.batch import Generator
    from ragbatch.models.weights import DEFAULT_LLM

    generator = Generator(llm_folder, max_model_len=2048, name=DEFAULT_LLM)
    yield generator
    generator.close()


# --- a real Chroma server (`chroma run`) for stores whose vectors live on one ---
@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    from chroma_process import ChromaServer

    with ChromaServer(tmp_path_factory.mktemp("chroma-server") / "data") as server:
        yield server


# --- a store an index run is writing: another process holding the real write lock ---
HOLDER = """
import sys, time
from pathlib import Path
from ragbatch.store.locks import store_lock
with store_lock(Path(sys.argv[1]), command="ragbatch index") as status:
    status.progress("3 of 9 files read, 40 of ~120 chunks embedded")
    status._save()
    print("held", flush=True)
    sys.stdin.readline()  # until the test lets go
"""


@pytest.fixture
def held_store(tmp_path):
    """A store whose write lock another process holds, as an index run does."""
    yield from _held(tmp_path / "store")


@pytest.fixture
def held_freedonia(tmp_path, freedonia_store):
    """A copy of the Freedonia store (a whole one) whose write lock another process holds."""
    import shutil

    yield from _held(Path(shutil.copytree(freedonia_store, tmp_path / "freedonia")))


def _held(store):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(store)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    yield store, proc
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(timeout=30)
