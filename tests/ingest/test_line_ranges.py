"""Plain-text chunks cite the file lines they came from (`notes.txt#L120-L134`), and an
edit above a chunk moves its stored line range without re-embedding it."""

import json
import random
import re

import chromadb
from click.testing import CliRunner
from helpers import index

from ragbatch.cli import main
from ragbatch.ingest.chunking import Chunker, LineRanges
from ragbatch.ingest.readers.text import plain_text_section, tidy_line
from ragbatch.models.weights import DEFAULT_EMBEDDER
from ragbatch.store.manifest import ChunkingParams
from ragbatch.store.records import unpack

PARAGRAPHS = [f"Day {i}. The steamer reached port {i}, and Passepartout  bought\n  {i} oranges at the market.\n" for i in range(60)]


def cited_lines(lines: str) -> range:
    first, _, last = lines.removeprefix("L").partition("-L")
    return range(int(first), int(last or first) + 1)


def test_every_body_line_maps_to_the_file_line_it_came_from():
    rng = random.Random(7)
    pieces = ["Fogg", "bet  twenty", "\n", "\n\n", " \t", "\n \t\n", "\f", "Aouda"]
    for _ in range(500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
        if not text.strip():
            continue
        _, _, body, numbers = plain_text_section(text)
        file_lines = text.split("\n")
        assert len(numbers) == len(body.split("\n"))
        for line, number in zip(body.split("\n"), numbers):
            assert not line or tidy_line(file_lines[number - 1]) == line


def test_a_piece_of_text_gets_the_range_of_its_lines():
    text = "alpha\nbeta\n\ngamma delta"
    ranges = LineRanges(text, [3, 4, 6, 6])  # body lines came from file lines 3, 4, (5), 6
    assert ranges.of(0, 5) == "L3"
    assert ranges.of(0, len(text)) == "L3-L6"
    assert ranges.of(text.index("beta"), 4) == "L4"
    assert ranges.of(text.index("delta"), 5) == "L6"
    assert LineRanges(text, []).of(0, 5) == ""  # HTML and Markdown sections: no range


def run(path, store):
    return index([str(path)], store, chunk_size=48, chunk_overlap=0, executor="local")


def stored_places(store):
    client = chromadb.PersistentClient(path=str(store / "chroma"))
    got = client.get_collection("chunks").get(include=["metadatas", "documents"])
    client.close()
    records = {i: unpack(d, m) for i, m, d in zip(got["ids"], got["metadatas"], got["documents"])}
    return {i: (fields["lines"], fields["position"], text) for i, (text, fields) in records.items()}


def assert_ranges_hold_the_text(path, places):
    file_lines = path.read_text().split("\n")
    for lines, _, text in places.values():
        cited = " ".join(" ".join(file_lines[n - 1] for n in cited_lines(lines)).split())
        assert " ".join(text.split()) in cited, (lines, text)


def test_answers_cite_line_ranges_that_move_with_edits_without_re_embedding(tmp_path):
    notes, store = tmp_path / "notes.txt", tmp_path / "store"
    notes.write_text("\n".join(PARAGRAPHS))
    first = run(notes, store)
    before = stored_places(store)
    assert first.embedded == len(before) > 10
    assert all(re.fullmatch(r"L\d+(-L\d+)?", lines) for lines, _, _ in before.values())
    assert_ranges_hold_the_text(notes, before)

    inserted = "A new first paragraph,\nwritten later,\nthree lines long.\n\n"
    notes.write_text(inserted + "\n".join(PARAGRAPHS))
    second = run(notes, store)
    after = stored_places(store)
    kept = set(before) & set(after)
    assert second.embedded <= 3 and len(kept) >= len(before) - 3  # only the edited block's chunks
    for chunk_id in kept:
        old, new = cited_lines(before[chunk_id][0]), cited_lines(after[chunk_id][0])
        assert (new.start, new.stop) == (old.start + 4, old.stop + 4)  # moved down by the 4 new lines
    assert_ranges_hold_the_text(notes, after)

    result = CliRunner().invoke(main, ["search", "--store", str(store), "--json", "--k", "3", "Which port did the steamer reach?"])
    assert result.exit_code == 0, result.output
    for found in json.loads(result.stdout)["results"]:  # what users see: the file and its lines
        assert found["source"] == f"notes.txt#{after[found['chunk_id']][0]}"


def test_a_chunker_gives_ranges_only_to_plain_text():
    from ragbatch.models.embedder import describe_embedder, resolve_embedder

    chunker = Chunker(describe_embedder(resolve_embedder(DEFAULT_EMBEDDER)).tokenizer_json, ChunkingParams(32, 0))
    section = {"source": "a.md#x", "path": "a.md", "root": "a.md", "title": "", "section": 0, "text": "one two\n\nthree", "headings": ["x"]}
    assert {c["lines"] for c in chunker.chunk_file([section])} == {""}
    assert {c["lines"] for c in chunker.chunk_file([{**section, "source": "a.txt", "line_numbers": [5, 6, 9]}])} == {"L5-L9"}
