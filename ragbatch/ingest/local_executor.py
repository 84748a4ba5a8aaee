"""Runs the stage functions in this process: for small inputs, where Ray's start-up
(15-20 s on 2 cores) would cost more than the work itself."""

from __future__ import annotations

from collections.abc import Collection, Iterator

from ragbatch.ingest.executor import ReadFile, StreamBlock
from ragbatch.models.embedder import EmbedderLoader
from ragbatch.progress import working
from ragbatch.store.records import indexed_text
from ragbatch.store.server import ServerAddress

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
        self,
        files: list[dict],
        read: ReadFile,
        stored: Collection[str],
        known: Collection[str],
        embedder: EmbedderLoader,
        server: ServerAddress | None = None,
    ) -> Iterator[StreamBlock]:
        """Read files in order; embed chunks not in `stored` whose text is not `known` (nor
        queued before), a few blocks at a time.

        `server` is not used: every vector goes back to this process's one writer.
        """
        pending: list[dict] = []
        queued: set[str] = set()  # text keys to embed
        for file in files:
            seen, found = [], 0
            for row in read(file):
                if row["error"] or row["id"] in stored or row["key"] in known or row["key"] in queued:
                    seen.append(row)
                else:
                    queued.add(row["key"])
                    pending.append(row)
                    found += 1
            yield StreamBlock(seen, [], None, 0.0, read=(file["path"],), queued=found)
            if len(pending) >= BUFFER_BLOCKS * ENCODE_BLOCK:
                yield from self._embed(pending, embedder)
                pending = []
        yield from self._embed(pending, embedder)

    def _embed(self, items: list[dict], loader: EmbedderLoader) -> Iterator[StreamBlock]:
        """Items are sorted by length first so each encode batch holds texts of similar
        length (less padding), as a single encode call over everything would."""
        if not items:
            return
        with working(self.progress, f"Loading {loader.spec.name}"):
            embedder = loader()
        ordered = sorted(items, key=lambda item: len(indexed_text(item)), reverse=True)
        for start in range(0, len(ordered), ENCODE_BLOCK):
            block = ordered[start : start + ENCODE_BLOCK]
            before = embedder.seconds
            vectors = embedder.embed_documents([indexed_text(item) for item in block])
            yield StreamBlock([], block, vectors, embedder.seconds - before)

    def close(self) -> None:
        pass
