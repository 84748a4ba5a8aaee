"""Which chunks synthetic questions are written from: spread over the store's pages, and
only chunks with something to ask about.

A chunk is left out when it is near-empty (fewer than MIN_WORDS words), mostly not prose
(under half its characters letters), or boilerplate: a text stored on several pages
(navigation, footers, licence notes) is held once with copies (store/copies.py), and a
text that opens many chunks is a template. The rest are drawn round-robin over pages in a
seeded random order, one chunk per page per round, so a large page cannot crowd out the
small ones.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

from ragbatch.retrieval.sources import page_of

MIN_WORDS = 25
MIN_LETTER_SHARE = 0.5
OPENING_CHARS = 80  # a chunk opening shared by more than TEMPLATE_SHARE of pages is a template
TEMPLATE_SHARE = 0.2


@dataclass(frozen=True)
class Candidate:
    chunk_id: str
    source: str  # the chunk's source as stored: `page.html#section`, `notes.txt`
    text: str


def usable(text: str) -> bool:
    words = len(text.split())
    letters = sum(c.isalpha() for c in text)
    return words >= MIN_WORDS and letters >= MIN_LETTER_SHARE * len(text)


def sample(records: list[tuple[str, str, dict]], n: int, seed: int = 0, copied: frozenset[str] | set[str] = frozenset()) -> list[Candidate]:
    """Up to `n` chunks of (id, text, fields) records, spread over pages. `copied`: ids of
    chunks whose text the store holds for several places (boilerplate)."""
    chunks = [Candidate(cid, fields.get("source", ""), text) for cid, text, fields in records if cid not in copied and usable(text)]
    openings = Counter(_opening(c.text) for c in chunks)
    pages = len({page_of(c.source) for c in chunks}) or 1
    if pages >= 5:  # with few pages, a shared opening says nothing
        chunks = [c for c in chunks if openings[_opening(c.text)] <= max(1, TEMPLATE_SHARE * pages)]
    by_page: dict[str, list[Candidate]] = {}
    for c in sorted(chunks, key=lambda c: c.chunk_id):
        by_page.setdefault(page_of(c.source), []).append(c)
    rng = random.Random(seed)
    order = sorted(by_page)
    rng.shuffle(order)
    for page in order:
        rng.shuffle(by_page[page])
    picked: list[Candidate] = []
    while len(picked) < n and any(by_page.values()):
        for page in order:
            if by_page[page] and len(picked) < n:
                picked.append(by_page[page].pop())
    return picked


def _opening(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())[:OPENING_CHARS]
