"""Snapshots of a local store: what a long-lived reader (serve) reads, so the store's
index runs never wait for it. Real stores, real index runs."""

import os

from helpers import FACTS, index, stored, write_files

from ragbatch.store.locks import LOCK_FILE, READERS_LOCK_FILE, WRITER_FILE
from ragbatch.store.reader import open_store
from ragbatch.store.snapshot import SNAPSHOTS, remove_snapshot, stamp, take_snapshot


def test_an_index_run_goes_on_while_a_snapshot_is_read_and_changes_the_stamp(tmp_path):
    docs = write_files(tmp_path / "docs", {"a.txt": "\n".join(FACTS[:3]) + "\n"})
    store = tmp_path / "store"
    index([docs], store, chunk_size=24, chunk_overlap=0)
    copy, taken = take_snapshot(store, cache=tmp_path / "cache")
    assert copy.parent.parent == tmp_path / "cache" / SNAPSHOTS and taken == stamp(store)
    assert not {LOCK_FILE, WRITER_FILE, READERS_LOCK_FILE} & set(os.listdir(copy))
    before = stored(store)
    with open_store(copy) as reader:  # open for the whole index run below
        write_files(docs, {"b.txt": "\n".join(FACTS[3:]) + "\n"})
        report = index([docs], store, chunk_size=24, chunk_overlap=0)  # neither waits nor fails
        assert report.embedded == len(FACTS) - 3
        assert reader.vectors.count() == len(before)  # the snapshot is the store as it was
    assert stamp(store) != taken and len(stored(store)) == len(FACTS)
    assert stored(copy).keys() == before.keys()
    remove_snapshot(copy)
    assert not copy.exists()


def test_snapshots_of_processes_that_are_gone_are_removed(tmp_path):
    docs = write_files(tmp_path / "docs", {"a.txt": FACTS[0] + "\n"})
    store = tmp_path / "store"
    index([docs], store)
    first, _ = take_snapshot(store, cache=tmp_path / "cache")
    orphan = first.with_name("999999999-deadbeef")  # a server that was killed
    first.rename(orphan)
    second, _ = take_snapshot(store, cache=tmp_path / "cache")
    assert not orphan.exists() and second.is_dir()
