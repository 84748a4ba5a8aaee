"""Chunks whose text is already stored: one vector per distinct text.

Identical texts embed to identical vectors, and an HNSW graph around thousands of
identical points cannot be searched: greedy search from such a cluster never leaves it,
so a dense search for anything else returned the cluster's points, differently on each
run (12,000 copies of one paragraph beside three other files: the right file first in 1
run of 3). So a store keeps one vector per distinct indexed text (records.text_key): the
first chunk with that text is its representative, a record in the vector collection and
a document in BM25; every other chunk with the same text is a copy, kept here with its
own source, place and id, and the id of its representative. Search finds the
representative, cites it, and names the copies' places as `also`.

    STORE/copies.parquet   id, rep, and the chunk's fields (records.CHUNK_FIELDS)

The file is rewritten after the vectors at the end of an index run: a crash leaves it as
it was, and copies whose representative is gone are dropped when it is read, so their
chunks are taken up again by the next run.
"""

from __future__ import annotations

import os
from pathlib import Path

from ragbatch.errors import StoreError
from ragbatch.store.records import CHUNK_FIELDS

COPIES_FILE = "copies.parquet"
COLUMNS = ("id", "rep", *CHUNK_FIELDS)
INTEGER_FIELDS = ("section", "position", "start")


def read_copies(store: Path) -> dict[str, dict]:
    """chunk id -> its fields and `rep`, for every copy the store holds ({} without any)."""
    import pyarrow.parquet as pq

    path = Path(store) / COPIES_FILE
    if not path.exists():
        return {}
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise StoreError(f"{path}: unreadable ({exc}); run `ragbatch index` on the store again to rebuild it") from None
    return {row["id"]: row for row in rows}


def write_copies(store: Path, copies: dict[str, dict]) -> None:
    """Replace the copies file atomically (none: no file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(store) / COPIES_FILE
    if not copies:
        path.unlink(missing_ok=True)
        return
    types = {name: pa.int64() if name in INTEGER_FIELDS else pa.string() for name in COLUMNS}
    rows = sorted(copies.values(), key=lambda row: row["id"])
    table = pa.table({name: pa.array([row.get(name, 0 if name in INTEGER_FIELDS else "") for row in rows], types[name]) for name in COLUMNS})
    tmp = path.with_name(f".{COPIES_FILE}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def by_rep(copies: dict[str, dict]) -> dict[str, list[dict]]:
    """rep id -> its copies, in the order of their sources and places."""
    grouped: dict[str, list[dict]] = {}
    for copy in sorted(copies.values(), key=lambda c: (c["source"], c["position"], c["id"])):
        grouped.setdefault(copy["rep"], []).append(copy)
    return grouped
