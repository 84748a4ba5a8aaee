"""Runs the stage functions in this process: for small inputs, where Ray's start-up
(15-20 s on 2 cores) would cost more than the work itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator

# Texts per model.encode call: large enough that sentence-transformers' own
# length-sorted batching is as efficient as one call over everything, small enough
# for steady progress and for Chroma writes to overlap the next block.
ENCODE_BLOCK = 512


class LocalExecutor:
    name = "local"

    def __init__(self, progress):
        self.progress = progress

    def map_files(self, files: list[dict], fn: Callable[[dict], list[dict]]) -> list[dict]:
        task = self.progress.add_task("Reading", total=len(files))
        rows: list[dict] = []
        for file in files:
            rows.extend(fn(file))
            self.progress.advance(task)
        return rows

    def embed(self, items: list[dict], make_embedder: Callable) -> Iterator[tuple[list[dict], object, float]]:
        """Yield (items, vectors, seconds inside model.encode) block by block.

        Items are sorted by length first so each encode batch holds texts of similar
        length (less padding), as a single encode call over everything would.
        """
        if not items:
            return
        from ragbatch.chunking import indexed_text

        embedder = make_embedder()
        task = self.progress.add_task("Embedding", total=len(items))
        ordered = sorted(items, key=lambda item: len(indexed_text(item)), reverse=True)
        for start in range(0, len(ordered), ENCODE_BLOCK):
            block = ordered[start : start + ENCODE_BLOCK]
            before = embedder.seconds
            vectors = embedder.embed_documents([indexed_text(item) for item in block])
            yield block, vectors, embedder.seconds - before
            self.progress.advance(task, len(block))

    def close(self) -> None:
        pass
