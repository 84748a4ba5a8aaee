"""Chunking: sizes in the embedder's tokens, overlap, stable content-hash ids."""

import pytest

from ragbatch.ingest.chunking import Chunker, chunk_id
from ragbatch.models.embedder import describe_embedder, resolve_embedder
from ragbatch.store.manifest import ChunkingParams


@pytest.fixture(scope="module")
def tokenizer_json():
    return describe_embedder(resolve_embedder(None)).tokenizer_json


def token_count(tokenizer_json, text):
    from tokenizers import Tokenizer

    return len(Tokenizer.from_str(tokenizer_json).encode(text, add_special_tokens=False).ids)


def section(text, source="doc.txt", index=0, title="Doc"):
    return {"path": "/data/" + source, "root": "/data", "source": source, "title": title, "section": index, "text": text}


PARAGRAPHS = [f"Paragraph {i} tells how Phileas Fogg crossed country number {i} by rail and steamer, on time." for i in range(60)]


def test_chunks_fit_the_size_in_tokens_and_keep_paragraphs_whole(tokenizer_json):
    chunks = Chunker(tokenizer_json, ChunkingParams(64, 0)).chunk_file([section("\n\n".join(PARAGRAPHS))])
    assert len(chunks) > 10
    assert all(token_count(tokenizer_json, c["text"]) <= 64 for c in chunks)
    # Paragraph boundaries are the first level tried: no paragraph is split in two.
    for c in chunks:
        for line in c["text"].split("\n\n"):
            assert line in PARAGRAPHS
    assert [c["position"] for c in chunks] == list(range(len(chunks)))


def test_long_paragraph_splits_at_sentences_then_words(tokenizer_json):
    sentences = [f"Sentence {i} is about the Reform Club wager." for i in range(40)]
    chunks = Chunker(tokenizer_json, ChunkingParams(32, 0)).chunk_file([section(" ".join(sentences))])
    assert len(chunks) > 5
    assert all(c["text"].endswith(".") for c in chunks[:-1])  # cut at sentence ends, not mid-word
    words = "supercalifragilistic " * 200
    chunks = Chunker(tokenizer_json, ChunkingParams(32, 0)).chunk_file([section(words)])
    assert all(token_count(tokenizer_json, c["text"]) <= 32 for c in chunks)
    assert all(set(c["text"].split()) == {"supercalifragilistic"} for c in chunks)


def test_overlap_repeats_text_between_neighbours(tokenizer_json):
    text = " ".join(f"word{i}" for i in range(400))
    plain = Chunker(tokenizer_json, ChunkingParams(40, 0)).chunk_file([section(text)])
    overlapped = Chunker(tokenizer_json, ChunkingParams(40, 10)).chunk_file([section(text)])
    assert len(overlapped) > len(plain)
    first, second = overlapped[0]["text"].split(), overlapped[1]["text"].split()
    assert set(first) & set(second)  # neighbours share words
    assert not set(plain[0]["text"].split()) & set(plain[1]["text"].split())


def test_an_inserted_line_changes_only_nearby_chunk_ids(tokenizer_json):
    book = [f"Paragraph {i}: Fogg {'and Passepartout ' * (i % 5)}reached port {i} exactly on time." for i in range(400)]
    chunker = Chunker(tokenizer_json, ChunkingParams(64, 0))
    before = chunker.chunk_file([section("\n".join(book))])
    edited = book[:200] + ["A new paragraph, inserted in the middle of the book."] + book[200:]
    after = chunker.chunk_file([section("\n".join(edited))])
    changed = len({c["id"] for c in before} - {c["id"] for c in after})
    # Greedy packing alone would shift every boundary after line 200 (about half of
    # the chunks); content-defined block cuts resynchronise right after the edit.
    assert len(before) > 60
    assert changed <= 4
    assert chunker.chunk_file([section("\n".join(book))]) == before


def test_ids_depend_on_source_text_parameters_and_occurrence():
    params = ChunkingParams(64, 8)
    base = chunk_id("a.txt", "text", params, 0)
    assert base != chunk_id("b.txt", "text", params, 0)
    assert base != chunk_id("a.txt", "other", params, 0)
    assert base != chunk_id("a.txt", "text", ChunkingParams(64, 0), 0)
    assert base != chunk_id("a.txt", "text", params, 1)
    assert base == chunk_id("a.txt", "text", ChunkingParams(64, 8), 0)


def test_repeated_text_in_one_file_stays_distinct_chunks(tokenizer_json):
    chunker = Chunker(tokenizer_json, ChunkingParams(16, 0))
    sections = [section("CHAPTER I. FOGG", index=0), section("CHAPTER I. FOGG", index=1)]
    chunks = chunker.chunk_file(sections)
    assert len(chunks) == 2 and chunks[0]["id"] != chunks[1]["id"]


def test_chunks_carry_their_source_title_and_offsets(tokenizer_json):
    text = "Intro line.\n\nSecond paragraph here."
    chunks = Chunker(tokenizer_json, ChunkingParams(5, 0)).chunk_file([section(text, source="page.html#install", title="Install")])
    assert {c["source"] for c in chunks} == {"page.html#install"}
    assert {c["title"] for c in chunks} == {"Install"}
    for c in chunks:
        assert text[c["start"] : c["start"] + len(c["text"])] == c["text"]


def test_chunker_survives_pickling_for_ray_workers(tokenizer_json):
    import pickle

    chunker = Chunker(tokenizer_json, ChunkingParams(64, 0))
    expected = chunker.chunk_file([section("\n\n".join(PARAGRAPHS))])  # builds the Rust splitter
    clone = pickle.loads(pickle.dumps(chunker))
    assert clone.chunk_file([section("\n\n".join(PARAGRAPHS))]) == expected


def test_overlap_must_be_smaller_than_size(tokenizer_json):
    with pytest.raises(ValueError):
        Chunker(tokenizer_json, ChunkingParams(10, 10))


# --- contextual chunk text: page title and section path embedded with the chunk


def test_context_line_names_the_page_and_the_section_path():
    from ragbatch.ingest.chunking import chunk_context

    sphinx = {
        "source": "data/transforming-data.html#configuring-batch-format",
        "page_title": "Transforming Data — Ray 3.0.0",
        "headings": ["Transforming Data", "Transforming batches", "Configuring batch format"],
    }
    # The page's own first heading names it; the <title>'s site name is left out.
    assert chunk_context(sphinx) == "Transforming Data › Transforming batches › Configuring batch format"
    other = {"source": "faq.html#install", "page_title": "Ray FAQ", "headings": ["Install"]}
    assert chunk_context(other) == "Ray FAQ › Install"
    # A text file is named by its file name; a page with nothing gives no line at all.
    assert chunk_context({"source": "Super_Bowl_50.txt", "page_title": "", "headings": []}) == "Super Bowl 50"
    assert chunk_context({"source": "x.md#a", "page_title": "Guide", "headings": ["Guide", "Guide"]}) == "Guide"


def test_chunks_keep_their_text_and_carry_the_context_embedded_with_it(tokenizer_json):
    from ragbatch.store.records import indexed_text

    record = {
        **section("Use batch_format to pick pandas or numpy.", source="t.html#fmt", title="Configuring batch format"),
        "page_title": "Transforming Data — Ray",
        "headings": ["Transforming Data", "Configuring batch format"],
    }
    [chunk] = Chunker(tokenizer_json, ChunkingParams(64, 0)).chunk_file([record])
    assert chunk["text"] == "Use batch_format to pick pandas or numpy."  # stored, shown and cited as it was
    assert chunk["context"] == "Transforming Data › Configuring batch format"
    assert indexed_text(chunk) == "Transforming Data › Configuring batch format\n\nUse batch_format to pick pandas or numpy."
    [plain] = Chunker(tokenizer_json, ChunkingParams(64, 0, context=0)).chunk_file([record])
    assert plain["context"] == "" and indexed_text(plain) == plain["text"]


def test_ids_change_when_the_embedded_context_changes():
    with_context = ChunkingParams(64, 8)
    assert with_context.as_dict() == {"chunk_size": 64, "chunk_overlap": 8, "context": 1}
    assert ChunkingParams(64, 8, context=0).as_dict() == {"chunk_size": 64, "chunk_overlap": 8}
    base = chunk_id("a.html#s", "text", with_context, 0, "Page › Section")
    assert base != chunk_id("a.html#s", "text", with_context, 0, "Renamed page › Section")
    assert base != chunk_id("a.html#s", "text", ChunkingParams(64, 8, context=0), 0)
    # Without contexts, ids are what stores made before them hold.
    assert chunk_id("a.txt", "text", ChunkingParams(64, 8, context=0), 0) == chunk_id("a.txt", "text", ChunkingParams(64, 8, context=0), 0, "ignored")
