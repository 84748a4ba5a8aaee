"""Readers and the one writer of a local store: a reader never waits in silence, and may
give up; the writer says who it is. The writer here is another process holding the real
lock (the index run's part is in tests/cli/test_readers.py)."""

import time

import pytest

from ragbatch.errors import StoreError
from ragbatch.store.locks import WRITER_FILE, StoreBusy, current_writer, reading, store_lock


def test_a_waiting_reader_names_the_index_run_at_once_and_gives_up_after_wait(held_store):
    store, proc = held_store
    heard = []
    started = time.monotonic()
    with pytest.raises(StoreBusy) as raised:
        with reading(store, notify=lambda line: heard.append((time.monotonic(), line)), wait=2.0):
            pass
    gave_up = time.monotonic()
    [(said_at, line)] = heard
    assert f"ragbatch index (pid {proc.pid}" in line and "40 of ~120 chunks embedded" in line and "giving up after 2 s" in line
    assert said_at - started < gave_up - said_at  # said at the start of the wait, not at its end
    message = raised.value.named(lambda param: f"--{param}")
    assert f"still being written by ragbatch index (pid {proc.pid}" in message and "after 2 s (--wait 2)" in message


def test_a_reader_without_a_limit_waits_for_the_run_then_reads(held_store):
    store, proc = held_store
    heard = []

    def let_go_after_the_notice(line):
        heard.append(line)
        proc.stdin.close()  # the index run ends

    with reading(store, notify=let_go_after_the_notice):
        assert current_writer(store) is None and not (store / WRITER_FILE).exists()
    assert len(heard) == 1 and "waiting for ragbatch index" in heard[0]


def test_a_second_writer_is_refused_naming_the_first(held_store):
    store, proc = held_store
    with pytest.raises(StoreError, match=rf"ragbatch index \(pid {proc.pid}, started .*\) is writing this store"):
        with store_lock(store):
            pass


def test_a_free_store_is_read_without_a_word(tmp_path):
    heard = []
    with reading(tmp_path, notify=heard.append, wait=0):
        pass
    with store_lock(tmp_path, notify=heard.append) as status:
        assert current_writer(tmp_path).pid == status.writer.pid
    assert heard == [] and current_writer(tmp_path) is None
