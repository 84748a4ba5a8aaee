"""The protocol of the index pipeline's two executors (local_executor.py, ray_executor.py).

Both run the same stage function (stages.read_and_chunk) and the same embedder; they
differ only in where: `local` in this process, `ray` as one streaming Ray Data pipeline.
Nothing but ray_executor.py knows about Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any, NamedTuple, Protocol

from ragbatch.models.embedder import EmbedderLoader
from ragbatch.store.server import ServerAddress

ReadFile = Callable[[dict], list[dict]]  # a discovered file -> its chunk rows (or one error row)


class StreamBlock(NamedTuple):
    """What an executor hands the writer, block by block."""

    seen: list[dict]  # rows read but not embedded: stored chunks, repeated texts, error rows
    new: list[dict]  # chunks embedded now
    vectors: Any  # their vectors (numpy, one row each), or None when the executor wrote them itself
    seconds: float  # time inside the model for them
    read: tuple[str, ...] = ()  # paths of the files read to the end since the last block
    queued: int | None = None  # chunks found to embed since the last block; None: not known yet


class Executor(Protocol):
    name: str

    def stream(
        self,
        files: list[dict],
        read: ReadFile,
        stored: Collection[str],
        known: Collection[str],
        embedder: EmbedderLoader,
        server: ServerAddress | None = None,
    ) -> Iterator[StreamBlock]:
        """Read `files` with `read`, embed the chunks whose id is not in `stored` and whose
        text key is not in `known` (nor that of a chunk embedded before in this stream:
        one vector per distinct text, see store/copies.py).

        `server`: the Chroma server collection the store's vectors are in, which an
        executor may write from where it embeds (then it yields no vectors); None: every
        vector goes back to this process's one writer."""
        ...

    def close(self) -> None: ...
