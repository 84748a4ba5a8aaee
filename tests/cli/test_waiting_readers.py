"""A search while an index run writes the store: it says at once what it waits for, and
with --wait gives up in one line. The fast test holds the lock from another process; the
slow one runs a real `ragbatch index`."""

import subprocess
import sys
import time

import pytest
from helpers import FACTS, ROOT, index, write_files
from helpers import ragbatch_cli as ragbatch


def test_search_with_wait_gives_up_in_one_line_naming_the_run(held_store):
    store, proc = held_store
    result = ragbatch("search", "capital", "--store", str(store), "--wait", "0.5")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr  # the notice when it started waiting, the error when it gave up
    assert f"waiting for ragbatch index (pid {proc.pid}" in lines[0] and "40 of ~120 chunks embedded" in lines[0]
    assert f"still being written by ragbatch index (pid {proc.pid}" in lines[1] and "(--wait 0.5)" in lines[1]


@pytest.mark.slow
def test_a_search_during_a_real_index_run_says_so_at_once_then_answers(tmp_path):
    docs = write_files(tmp_path / "docs", {"freedonia.txt": "\n".join(FACTS) + "\n"})
    store = tmp_path / "store"
    index([docs], store, chunk_size=24, chunk_overlap=0)
    (docs / "around.txt").write_text((ROOT / "corpora" / "around.txt").read_text())  # minutes of embedding on 2 cores
    run = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "index", str(docs), "--store", str(store)], stderr=subprocess.DEVNULL)
    try:
        while not (store / ".ragbatch.writer.json").exists():
            assert run.poll() is None, "the index run ended before it was seen"
            time.sleep(0.2)
        search = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "search", "capital of Freedonia", "--store", str(store), "--k", "1", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        notice = search.stderr.readline()  # at once, long before the run ends
        assert f"waiting for ragbatch index (pid {run.pid}" in notice and run.poll() is None
        out, rest = search.communicate(timeout=900)
        assert search.returncode == 0 and run.wait(timeout=60) == 0, rest
        assert '"rank": 1' in out and "freedonia.txt" in out
    finally:
        run.kill()


def test_the_python_api_says_a_wait_even_where_it_says_nothing_else(held_freedonia, capsys, tmp_path):
    import ragbatch
    from ragbatch.store.locks import StoreBusy

    store, proc = held_freedonia
    with pytest.raises(StoreBusy):
        ragbatch.ask(["What is the capital?"], store, out=tmp_path / "a.parquet", wait=0.3)  # no notify given
    said = capsys.readouterr().err
    assert f"ragbatch: {store}: waiting for ragbatch index (pid {proc.pid}" in said
    heard = []
    with pytest.raises(StoreBusy):
        ragbatch.evaluate(str(write_files(tmp_path, {"r.jsonl": '{"question": "q", "source": "a.txt"}\n'}) / "r.jsonl"), store, wait=0.3, notify=heard.append)
    assert any("waiting for ragbatch index" in line for line in heard) and capsys.readouterr().err == ""
