"""The stage function both executors run: one discovered file in, its chunk rows out."""

from __future__ import annotations

import os

from ragbatch.errors import InputFileError
from ragbatch.ingest import readers
from ragbatch.ingest.chunking import Chunker
from ragbatch.store.records import Chunk

# A row that is not a chunk: a file that could not be read. Every row has the same keys
# (a chunk's, plus `error` and `fatal`), so Ray Data can hold error rows beside chunk rows.
EMPTY_CHUNK = Chunk(id="", source="", path="", root="", title="", section=0, position=0, start=0, lines="", text="", context="", anchors="", key="")


def read_and_chunk(file: dict, chunker: Chunker) -> list[dict]:
    """One file's chunks with `error`, `reason` and `fatal` empty, or one error row naming
    why it could not be read (`error`: the file and why; `reason`: why; `fatal`: why the
    whole run must stop, see input_not_visible)."""
    try:
        chunks = chunker.chunk_file(readers.read_file(file))
        if not chunks:
            raise InputFileError(file["path"], "no text found")
    except InputFileError as exc:
        # A row, not an exception: Ray keeps only the traceback text of an exception
        # raised in a task, and the driver is to show one line.
        return [{**EMPTY_CHUNK, "path": file["path"], "root": file["root"], "error": str(exc), "reason": exc.reason, "fatal": input_not_visible(file)}]
    return [{**chunk, "error": "", "reason": "", "fatal": ""} for chunk in chunks]


def input_not_visible(file: dict) -> str:
    """Why the whole run must stop, when the folder a missing file was found in is itself
    missing or empty here: a Ray node that cannot see the input would otherwise report
    every file as an error of its own. Empty when only the file is missing."""
    if os.path.exists(file["path"]):
        return ""
    folder = file["root"] if file["root"] != file["path"] else os.path.dirname(file["path"])
    if os.path.isdir(folder) and any(os.scandir(folder)):
        return ""
    import socket

    return f"{folder}: not visible on {socket.gethostname()} (missing or empty there), where it was to be read; run ragbatch where the input is"
