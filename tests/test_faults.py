"""Fault injection: SIGKILL at a random moment during `index`, `publish` and `ask --resume`,
and a full disk during each, then a rerun. What remains must be exactly what a clean
run gives: the same chunk ids and vectors, the same answer ids, no duplicates, and a
store that passes `ragbatch check`.

Each kill scenario runs RAGBATCH_FAULT_TRIES times (default 2, so CI stays quick);
`RAGBATCH_FAULT_TRIES=20 pytest -m faults` is the full run recorded in
benchmarks/RELIABILITY.md. Kill points are drawn from a seeded generator, printed
with each try, so a failure can be replayed.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import ROOT, ragbatch_cli

from ragbatch.errors import StoreError
from ragbatch.store.check import check_store

pytestmark = pytest.mark.faults

TRIES = int(os.environ.get("RAGBATCH_FAULT_TRIES", "2"))
RNG = random.Random(int(os.environ.get("RAGBATCH_FAULT_SEED", "7")))
CLI = [sys.executable, str(ROOT / "cli.py")]


def run(*args, cwd=None, check=True):
    result = ragbatch_cli(*args, cwd=cwd)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def killed(args, after: float, cwd=None) -> str:
    """Start a command, SIGKILL it `after` seconds later (or let it finish first)."""
    process = subprocess.Popen([*CLI, *map(str, args)], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        process.wait(timeout=after)
        return "finished before the kill"
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return f"killed after {after:.1f} s"


def timed(*args, cwd=None) -> float:
    started = time.perf_counter()
    run(*args, cwd=cwd)
    return time.perf_counter() - started


def contents(store: Path) -> dict[str, np.ndarray]:
    """Chunk id -> vector, read through Chroma."""
    import chromadb

    manifest = json.loads((store / "manifest.json").read_text())
    client = chromadb.PersistentClient(path=str(store / "chroma"))
    try:
        got = client.get_collection(manifest["collection"]).get(include=["embeddings"])
    finally:
        client.close()
    assert len(got["ids"]) == len(set(got["ids"])) == manifest["chunks"]
    return dict(zip(got["ids"], np.asarray(got["embeddings"])))


def same_store(store: Path, clean: dict[str, np.ndarray]) -> None:
    check_store(store, lexical=True)
    got = contents(store)
    assert got.keys() == clean.keys()
    assert all(np.allclose(got[i], clean[i], atol=1e-5) for i in clean)


# --- index ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two versions of a folder of around.txt slices: v2 changes, drops and adds files."""
    root = tmp_path_factory.mktemp("faults")
    lines = (ROOT / "corpora" / "around.txt").read_text(encoding="utf-8-sig").splitlines()
    v1, v2 = root / "v1", root / "v2"
    for folder, shift in ((v1, 0), (v2, 40)):
        folder.mkdir()
        for n in range(6):
            part = lines[n * 80 + shift * (n % 2) : n * 80 + shift * (n % 2) + 60]
            (folder / f"part{n}.txt").write_text("\n".join(part) + "\n", encoding="utf-8")
    (v2 / "part5.txt").unlink()
    (v2 / "extra.txt").write_text("\n".join(lines[900:960]) + "\n", encoding="utf-8")
    return root


def index_args(folder: Path, store: Path) -> list:
    # Sources are relative to the indexed folder, so v1 and v2 name the same files alike.
    return ["index", folder, "--store", store, "--chunk-size", 64, "--chunk-overlap", 0, "--executor", "local"]


@pytest.fixture(scope="module")
def clean_index(corpus):
    """Clean runs: v1 into a new store, then v2 over it; their contents and durations."""
    store = corpus / "clean"
    seconds_v1 = timed(*index_args(corpus / "v1", store))
    v1 = contents(store)
    seconds_v2 = timed(*index_args(corpus / "v2", store))
    return {"v1": v1, "v2": contents(store), "seconds_v1": seconds_v1, "seconds_v2": seconds_v2, "store_v1": None}


@pytest.mark.parametrize("case", ["new store", "store being updated"])
def test_sigkill_during_index_then_rerun_gives_the_clean_store(corpus, clean_index, tmp_path, case):
    for attempt in range(TRIES):
        store = tmp_path / f"store{attempt}"
        if case == "store being updated":
            run(*index_args(corpus / "v1", store))
            version, seconds = "v2", clean_index["seconds_v2"]
        else:
            version, seconds = "v1", clean_index["seconds_v1"]
        outcome = killed(index_args(corpus / version, store), after=RNG.uniform(0.5, seconds))
        print(f"index ({case}) try {attempt + 1}: {outcome}")
        run(*index_args(corpus / version, store))
        same_store(store, clean_index[version])


# --- publish -------------------------------------------------------------------------


def test_sigkill_during_publish_readers_see_whole_versions_and_a_rerun_completes(corpus, clean_index, tmp_path):
    from ragbatch.store.published import resolve_store

    store, shared, cache = corpus / "clean", tmp_path / "shared", tmp_path / "cache"
    seconds = timed("publish", shared, "--store", store)
    errors, seen = [], set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.add(resolve_store(shared / "clean", cache_dir=cache).name)  # verifies every checksum
            except StoreError as exc:
                errors.append(str(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for attempt in range(TRIES):
            outcome = killed(["publish", shared, "--store", store], after=RNG.uniform(0.3, seconds))
            print(f"publish try {attempt + 1}: {outcome}")
            run("publish", shared, "--store", store)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert not [p for p in shared.iterdir() if p.name.startswith((".tmp-", ".clean.link-"))]  # leftovers removed
    same_store(resolve_store(shared / "clean", cache_dir=tmp_path / "final"), clean_index["v2"])


# --- ask -----------------------------------------------------------------------------


def test_sigkill_during_ask_resume_then_rerun_answers_each_question_once(corpus, clean_index, tmp_path):
    questions = tmp_path / "q.jsonl"
    asked = [f"What happened to Phileas Fogg in part {n}?" for n in range(10)]
    questions.write_text("".join(json.dumps({"question": q}) + "\n" for q in asked))
    args = ["ask", questions, "--store", corpus / "clean", "--k", 1, "--max-tokens", 12, "--part-rows", 1]
    out = tmp_path / "clean.parquet"
    seconds = timed(*args, "--out", out)
    clean_ids = pq.read_table(out).column("id").to_pylist()
    assert len(clean_ids) == 10
    for attempt in range(TRIES):
        out = tmp_path / f"a{attempt}.parquet"
        outcomes = [killed([*args, "--out", out, "--resume"], after=RNG.uniform(1.0, seconds)) for _ in range(2)]
        print(f"ask try {attempt + 1}: {outcomes}")
        run(*args, "--out", out, "--resume")
        table = pq.read_table(out)
        assert table.column("id").to_pylist() == clean_ids  # each once, in input order
        assert all(error is None for error in table.column("error").to_pylist())
        assert not out.with_name(out.name + ".parts").exists()


# --- a full disk ---------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A small tmpfs at a fresh folder (root only): `fill(free)` leaves `free` bytes free,
    `grow()` frees the room again."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {result.stderr.strip()}")
    filler = mount / ".filler"

    def fill(free: int):
        room = shutil.disk_usage(mount).free
        filler.write_bytes(b"x" * max(0, room - free))

    def grow():
        filler.unlink(missing_ok=True)

    try:
        yield mount, fill, grow
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def one_error_line(result) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def test_full_disk_during_index_keeps_the_store_and_a_rerun_with_space_completes(corpus, clean_index, small_disk):
    mount, fill, grow = small_disk
    store = mount / "store"
    shutil.copytree(corpus / "clean", store)  # v2 already in
    before = contents(store)
    fill(200_000)
    big = corpus / "big"
    if not big.exists():
        big.mkdir()
        text = (ROOT / "corpora" / "around.txt").read_text(encoding="utf-8-sig")
        (big / "around.txt").write_text(text, encoding="utf-8")  # ~490 chunks: more than the disk holds
    line = one_error_line(run(*index_args(big, store), check=False))
    assert "no space left on device" in line.lower()
    assert contents(store).keys() >= before.keys()  # nothing stored was lost
    check_store(store)  # and the store is intact
    grow()
    run(*index_args(big, store))
    check_store(store, lexical=True)


def test_full_disk_during_publish_keeps_the_old_version_and_a_rerun_with_space_completes(corpus, clean_index, small_disk, tmp_path):
    mount, fill, grow = small_disk
    shared = mount / "shared"
    fill(200_000)  # less room than a version needs
    line = one_error_line(run("publish", shared, "--store", corpus / "clean", check=False))
    assert "no space left on device" in line.lower()
    assert not (shared / "clean").exists()  # no half version switched in
    assert not [p for p in shared.iterdir() if p.name.startswith(".tmp-")] if shared.exists() else True
    grow()
    run("publish", shared, "--store", corpus / "clean")
    from ragbatch.store.published import resolve_store

    same_store(resolve_store(shared / "clean", cache_dir=tmp_path / "cache"), clean_index["v2"])


def test_full_disk_during_ask_keeps_earlier_answers_and_a_rerun_with_space_completes(corpus, clean_index, small_disk, tmp_path):
    mount, fill, grow = small_disk
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question": f"Who travelled with Fogg, take {n}?"}) + "\n" for n in range(4)))
    out = mount / "answers.parquet"
    args = ["ask", questions, "--store", corpus / "clean", "--k", 1, "--max-tokens", 8, "--out", out]
    run(*args)  # the first answers fit
    before = out.read_bytes()
    fill(24_000)  # room for a few parts only
    with open(questions, "a") as fh:
        fh.writelines(json.dumps({"question": f"Where did Fogg go next, take {n}?"}) + "\n" for n in range(40))
    line = one_error_line(run(*args, "--resume", "--part-rows", 1, check=False))
    assert "no space left on device" in line.lower()
    assert out.read_bytes() == before  # the earlier answers are untouched
    grow()
    run(*args, "--resume")
    assert len(pq.read_table(out)) == 44


# --- readers during an index run -------------------------------------------------------


def test_search_during_an_index_run_waits_for_it_and_never_fails(corpus, clean_index, tmp_path):
    """Readers of a local store answer from a complete state: they wait while `index`
    writes it (store.reading), so Chroma and BM25 are never seen out of step and no two
    processes' Chroma clients have the folder open while one writes."""
    from ragbatch.retrieval.retriever import Retriever
    from ragbatch.retrieval.selection import Selection

    store = tmp_path / "store"
    run(*index_args(corpus / "v1", store))
    process = subprocess.Popen([*CLI, *map(str, index_args(corpus / "v2", store))], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    answers, errors = [], []
    deadline = time.monotonic() + 600  # readers must not starve the writer either
    while process.poll() is None and time.monotonic() < deadline:
        try:
            retriever = Retriever.open(store, modes=("bm25",))
            try:
                answers.append(len(retriever.search(["Phileas Fogg wagered"], Selection("bm25", k=3))[0]))
            finally:
                retriever.close()
        except Exception as exc:  # noqa: BLE001 - any failure is the defect
            errors.append(f"{type(exc).__name__}: {exc}")
        time.sleep(0.2)
    assert process.returncode == 0, process.stderr.read()
    assert errors == [] and answers and all(n == 3 for n in answers)
    same_store(store, clean_index["v2"])


# --- bad input -----------------------------------------------------------------------


def test_a_200_mb_file_with_no_newline_is_one_line_and_the_rest_is_indexed(corpus, clean_index, tmp_path):
    """Chunking a 200 MB line would take ~30 GB (the tokenizer's encodings of one line);
    the file is refused with its line named, the other files are indexed, and the
    chunks already stored are kept."""
    store, folder = tmp_path / "store", tmp_path / "v1"
    shutil.copytree(corpus / "v1", folder)
    run(*index_args(folder, store))
    with open(folder / "dump.txt", "w") as f:
        for _ in range(200):
            f.write("Passepartout " * (2**20 // 13))  # ~200 MB of words, no line break
    result = run(*index_args(folder, store), check=False)
    errors = [line for line in result.stderr.splitlines() if "dump.txt" in line]
    assert result.returncode == 3 and len(errors) == 1, result.stderr
    assert "dump.txt:1:" in errors[0] and "no line break" in errors[0] and "Traceback" not in result.stderr
    same_store(store, clean_index["v1"])
