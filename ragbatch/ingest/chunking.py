"""Split section records into chunks measured in the embedder's own tokens.

Recursive splitting (paragraphs, lines, sentences, words) is done by
`semantic-text-splitter`, which walks those levels in Rust and counts length with
the Hugging Face tokenizer we hand it.

A chunk id is a content hash of (source, text, chunking parameters) plus the
occurrence number of identical text within the same source, so unchanged input
keeps its ids (nothing re-embedded) and repeated text (a chapter title in the
contents and in the body) stays two chunks.

Greedy packing alone would make one inserted line shift every later chunk boundary
of a file, and re-embed all of it. So a long text is first cut into blocks at line
ends chosen by content (content-defined chunking, as rsync and restic do): a line
ends a block when its hash says so and the block already holds a chunk's worth.
After an edit the cuts fall on the same lines again, so only the chunks of the
edited block change. Each block is then split on its own; overlap applies within
a block, not across a block cut.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
import zlib
from pathlib import PurePosixPath
from typing import Any

from ragbatch.store.manifest import ChunkingParams
from ragbatch.store.records import Chunk, text_key

# The context line's parts are joined with this (see chunk_context; manifest.CONTEXT_VERSION).
CONTEXT_SEPARATOR = " › "

# One line in CUT_EVERY ends a block (once the block is a chunk long); a block never
# grows past MAX_BLOCK chunk capacities.
CUT_EVERY = 8
MAX_BLOCK = 16
COUNT_BATCH_LINES = 4096


def chunk_id(source: str, text: str, params: ChunkingParams, occurrence: int, context: str = "") -> str:
    """A content hash of everything that decides the stored text and the embedded one."""
    fields = [source, text, params.chunk_size, params.chunk_overlap, occurrence]
    if params.context:
        fields += [params.context, context]
    key = json.dumps(fields)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


class Chunker:
    """Callable over a list of section records; picklable, so Ray workers can run it.

    The splitter is built lazily from the tokenizer's JSON so pickling carries a
    string, not a Rust object.
    """

    def __init__(self, tokenizer_json: str, params: ChunkingParams):
        if params.chunk_overlap >= params.chunk_size:
            raise ValueError("chunk overlap must be smaller than chunk size")
        self.tokenizer_json = tokenizer_json
        self.params = params
        self._splitter: Any = None  # semantic_text_splitter.TextSplitter, made on first use

    def __getstate__(self):
        return {"tokenizer_json": self.tokenizer_json, "params": self.params, "_splitter": None, "_tokenizer": None}

    _tokenizer = None

    def _blocks(self, text: str) -> list[tuple[int, str]]:
        """(offset, text) blocks cut at content-chosen line ends (see module doc)."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_str(self.tokenizer_json)
        lines = [(m.start(), m.end()) for m in re.finditer(r"[^\n]+", text)]
        if not lines:
            return []
        # Counted a batch of lines at a time: the tokenizer's encodings of a whole large
        # file at once take ~150 bytes a token (3 GB for 20 MB of text).
        sizes = []
        for first in range(0, len(lines), COUNT_BATCH_LINES):
            batch = [text[a:b] for a, b in lines[first : first + COUNT_BATCH_LINES]]
            sizes += [len(e.ids) for e in self._tokenizer.encode_batch(batch, add_special_tokens=False)]
        capacity = self.params.chunk_size
        blocks, first, size = [], 0, 0
        for i, (start, end) in enumerate(lines):
            size += sizes[i]
            last = i + 1 == len(lines)
            content_cut = size >= capacity and zlib.crc32(text[start:end].encode()) % CUT_EVERY == 0
            too_big = not last and size + sizes[i + 1] > MAX_BLOCK * capacity
            if last or content_cut or too_big:
                blocks.append((lines[first][0], text[lines[first][0] : end]))
                first, size = i + 1, 0
        return blocks

    def _split(self, text: str) -> list[tuple[int, str]]:
        if self._splitter is None:
            from semantic_text_splitter import TextSplitter

            self._splitter = TextSplitter.from_huggingface_tokenizer_str(
                self.tokenizer_json, capacity=self.params.chunk_size, overlap=self.params.chunk_overlap
            )
        return self._splitter.chunk_indices(text)

    def chunk_file(self, sections: list[dict]) -> list[Chunk]:
        """All chunks of one file's sections, in order; `position` counts within the file."""
        chunks: list[Chunk] = []
        seen: dict[tuple[str, str], int] = {}
        for section in sections:
            context = chunk_context(section) if self.params.context else ""
            lines = LineRanges(section["text"], section.get("line_numbers"))
            pieces = [(offset + start, text) for offset, block in self._blocks(section["text"]) for start, text in self._split(block)]
            for start, text in pieces:
                key = (section["source"], text)
                occurrence = seen.get(key, 0)
                seen[key] = occurrence + 1
                chunks.append(
                    Chunk(
                        id=chunk_id(section["source"], text, self.params, occurrence, context),
                        source=section["source"],
                        path=section["path"],
                        root=section["root"],
                        title=section["title"],
                        section=section["section"],
                        position=len(chunks),
                        start=start,
                        lines=lines.of(start, len(text)),
                        text=text,
                        context=context,
                        anchors=" ".join(section.get("anchors") or []),
                        key=text_key({"text": text, "context": context}),
                    )
                )
        return chunks


class LineRanges:
    """`L120-L134`: the file lines a piece of a section's text came from.

    Not part of a chunk id: an edit above a chunk moves its lines but not its text, and
    must not re-embed it (indexing refreshes the stored range instead).
    """

    def __init__(self, text: str, line_numbers):
        self.numbers = line_numbers if line_numbers is not None and len(line_numbers) else None
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)] if self.numbers is not None else []

    def of(self, start: int, length: int) -> str:
        if self.numbers is None:
            return ""
        first = self.numbers[bisect.bisect_right(self.starts, start) - 1]
        last = self.numbers[bisect.bisect_right(self.starts, start + max(length, 1) - 1) - 1]
        return f"L{first}" if first == last else f"L{first}-L{last}"


def chunk_context(section: dict) -> str:
    """The context line of a section's chunks: the page's title, then the section path.

    "Transforming Data › Transforming batches › Configuring batch format". A page whose
    first heading begins its <title> is named by that heading (the <title> usually adds
    the site's name: "Transforming Data — Ray 3.0.0"); a page with neither (a text
    file) by its file name, "Super_Bowl_50.txt" as "Super Bowl 50".
    """
    headings = [h for h in section.get("headings") or [] if h]
    page = section.get("page_title") or ""
    if headings and page.casefold().startswith(headings[0].casefold()):
        page = ""
    elif not page and not headings:
        page = re.sub(r"[_\s]+", " ", PurePosixPath(section["source"].split("#", 1)[0]).stem).strip()
    parts: list[str] = []
    for part in (page, *headings):
        if part and (not parts or parts[-1] != part):
            parts.append(part)
    return CONTEXT_SEPARATOR.join(parts)
