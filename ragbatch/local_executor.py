"""Runs the stage functions in this process: for small inputs, where Ray's start-up
(15-20 s on 2 cores) would cost more than the work itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator

# Texts per model.encode call: large enough that sentence-transformers' own
# length-sorted batching is as efficient as one call over everything, small enough
# for steady progress and for Chroma writes to overlap the next block.
ENCODE_BLOCK = 512
# New chunks gathered (and sorted by length) before they are embedded: bounds the texts
# held in memory whatever the input's size, while keeping padding low.
BUFFER_BLOCKS = 8


class LocalExecutor:
    name = "local"

    def __init__(self, progress):
        self.progress = progress

    def stream(
        self, files: list[dict], fn: Callable[[dict], list[dict]], stored, make_embedder, server: dict | None = None
    ) -> Iterator[tuple[list[dict], list[dict], object, float]]:
        """Read files in order; embed chunks not in `stored`, a few blocks at a time.

        Yields (rows read but not embedded: stored chunks, repeats within this run and
        error rows; new chunks; their vectors, or None; seconds inside model.encode).
        `server` is not used: every vector goes back to this process's one writer.
        """
        pending: list[dict] = []
        queued: set[str] = set()
        for file in files:
            seen = []
            for row in fn(file):
                if row["error"] or row["id"] in stored or row["id"] in queued:
                    seen.append(row)
                else:
                    queued.add(row["id"])
                    pending.append(row)
            yield seen, [], None, 0.0
            if len(pending) >= BUFFER_BLOCKS * ENCODE_BLOCK:
                yield from self._embed(pending, make_embedder)
                pending = []
        yield from self._embed(pending, make_embedder)

    def _embed(self, items: list[dict], make_embedder: Callable) -> Iterator[tuple[list[dict], list[dict], object, float]]:
        """Items are sorted by length first so each encode batch holds texts of similar
        length (less padding), as a single encode call over everything would."""
        if not items:
            return
        from ragbatch.chunking import indexed_text

        embedder = make_embedder()
        ordered = sorted(items, key=lambda item: len(indexed_text(item)), reverse=True)
        for start in range(0, len(ordered), ENCODE_BLOCK):
            block = ordered[start : start + ENCODE_BLOCK]
            before = embedder.seconds
            vectors = embedder.embed_documents([indexed_text(item) for item in block])
            yield [], block, vectors, embedder.seconds - before

    def close(self) -> None:
        pass
