import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, SHARED

from ragbatch.errors import InputFileError
from ragbatch.ingest.readers import discover, read_file

FIXTURES = ROOT / "tests" / "fixtures" / "readers"
RAYDOCS = SHARED / "eval" / "raydocs-dev"


def read(path: Path, root: Path | None = None) -> list[dict]:
    root = root or path
    relpath = path.name if root == path else path.relative_to(root).as_posix()
    return read_file({"path": str(path), "root": str(root), "relpath": relpath})


def by_source(records: list[dict]) -> dict[str, dict]:
    return {record["source"]: record for record in records}


# --- plain text


def test_txt_with_bom_crlf_and_one_paragraph_per_line(tmp_path):
    path = tmp_path / "around.txt"
    path.write_bytes("\ufeffAround the World\r\nby Jules   Verne\r\nChapter I\r\n".encode())

    [record] = read(path)

    assert record == {
        "path": str(path),
        "root": str(path),
        "source": "around.txt",
        "title": "Around the World",
        "section": 0,
        "text": "Around the World\n\nby Jules Verne\n\nChapter I",
        "page_title": "",
        "headings": [],
        "anchors": [],
        "line_numbers": [1, 2, 2, 3, 3],  # the blank line between two paragraphs gets the next one's
    }


def test_txt_paragraphs_split_on_blank_lines(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("  First   paragraph\nstill first.\n\n \t \nSecond paragraph.\n\n\n\nThird.\n")

    [record] = read(path)

    assert record["text"] == "First paragraph\nstill first.\n\nSecond paragraph.\n\nThird."
    assert record["title"] == "First paragraph"


def test_txt_title_is_truncated(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("word " * 100)

    [record] = read(path)

    assert len(record["title"]) <= 100 and record["title"].endswith("…")


# --- HTML

SPHINX_PAGE = """<!DOCTYPE html><html><head><title>Batch format — Ray</title>
<style>body { color: red }</style><script>var tracking = 1;</script></head>
<body><nav class="bd-links"><a href="x.html">Navigation link</a></nav>
<header>Site header</header>
<main id="main-content" role="main"><div>
<section id="transforming-data">
<h1>Transforming data<a class="headerlink" href="#transforming-data" title="Permalink">#</a></h1>
<p>Intro   paragraph
of the page.</p>
<section id="configuring-batch-format">
<h2>Configuring batch format<a class="headerlink" href="#configuring-batch-format">¶</a></h2>
<dl><dt>Dataset.<span class="pre">map_batches</span>(fn)<a class="reference internal" href="#"><span class="viewcode-link">[source]</span></a></dt>
<dd><p>Use <code class="docutils literal"><span class="pre">batch_</span><span class="pre">format</span></code> to pick.</p></dd></dl>
<div class="highlight"><pre><span class="kn">import</span> ray
<span class="k">def</span> f(batch):
    return batch
</pre></div>
<ul><li><p>pandas</p></li><li><p>numpy</p></li></ul>
<table><tr><th>Format</th><th>Type</th></tr>
<tr><td><p><code><span class="pre">numpy</span></code></p></td><td><p>dict of arrays</p></td></tr></table>
<div class="sphinx-tabs"><button class="sphinx-tabs-tab">Java</button>
<div class="sphinx-tabs-panel" hidden="true"><p>Java tab text.</p></div></div>
<aside class="sidebar"><p>Sidebar content.</p></aside>
<aside class="ads">Advertisement</aside><!-- a comment -->
</section>
<section id="only-subsections">
<h2>Only subsections<a class="headerlink" href="#only-subsections">#</a></h2>
<section id="deep">
<h3>Deep<a class="headerlink" href="#deep">#</a></h3>
<p>Deep text.</p>
</section>
</section>
<p>Closing words of the top section.</p>
</section>
</div></main>
<footer>Copyright footer</footer>
<script>more();</script>
</body></html>
"""


def test_sphinx_html_nested_sections(tmp_path):
    path = tmp_path / "transforming-data.html"
    path.write_text(SPHINX_PAGE)

    records = read(path)

    assert [r["source"] for r in records] == [
        "transforming-data.html#transforming-data",
        "transforming-data.html#configuring-batch-format",
        "transforming-data.html#deep",
    ]
    assert [r["section"] for r in records] == [0, 1, 2]
    top, batch, deep = records
    assert top["title"] == "Transforming data"
    # Nested sections are left out; text after them belongs to the parent again.
    assert top["text"] == ("Transforming data\n\nIntro paragraph of the page.\n\nClosing words of the top section.")
    assert batch["title"] == "Configuring batch format"
    assert batch["text"] == (
        "Configuring batch format\n\n"
        "Dataset.map_batches(fn)\n\n"
        "Use batch_format to pick.\n\n"
        "import ray\ndef f(batch):\n    return batch\n\n"
        "pandas\n\nnumpy\n\n"
        "Format | Type\n\n"
        "numpy | dict of arrays\n\n"
        "Java tab text.\n\n"
        "Sidebar content."
    )
    assert deep["text"] == "Deep\n\nDeep text."
    # Page title and heading path, for the context line embedded with each chunk.
    assert {r["page_title"] for r in records} == {"Batch format — Ray"}
    assert [r["headings"] for r in records] == [
        ["Transforming data"],
        ["Transforming data", "Configuring batch format"],
        ["Transforming data", "Only subsections", "Deep"],
    ]
    everything = "\n".join(r["text"] + r["title"] for r in records)
    for chrome in ("#", "¶", "[source]", "Navigation", "tracking", "color", "Site header", "Copyright", "more()", "Advertisement", "comment"):
        assert chrome not in everything


def test_html_without_sections_splits_at_headings_with_ids(tmp_path):
    path = tmp_path / "plain.html"
    path.write_text("""<html><head><title>Plain page</title></head><body>
<p>Before any heading.</p>
<h1>Guide</h1>
<p>Guide text.</p>
<h2 id="install">Install</h2><p>pip install it</p>
<h3>No id here</h3><p>Still install.</p>
<h2><a name="usage"></a>Usage</h2><p>Run it.</p>
<div id="faq"><h2>FAQ</h2><p>Questions.</p></div>
</body></html>""")

    records = read(path)

    assert [(r["source"], r["title"]) for r in records] == [
        ("plain.html", "Plain page"),
        ("plain.html#install", "Install"),
        ("plain.html#usage", "Usage"),
        ("plain.html#faq", "FAQ"),
    ]
    assert records[0]["text"] == "Before any heading.\n\nGuide\n\nGuide text."
    assert records[1]["text"] == "Install\n\npip install it\n\nNo id here\n\nStill install."
    assert records[3]["text"] == "FAQ\n\nQuestions."
    assert [r["headings"] for r in records] == [[], ["Install"], ["Usage"], ["FAQ"]]
    assert {r["page_title"] for r in records} == {"Plain page"}


def test_link_targets_inside_a_section_are_its_anchors(tmp_path):
    path = tmp_path / "glossary.html"
    path.write_text("""<html><body><main>
<section id="getting-started"><span id="kuberay-quickstart"></span><h1>Getting Started</h1><p>Intro.</p>
<dl class="glossary"><dt id="term-Task">Task</dt><dd>A remote function call.</dd>
<dt class="sig sig-object py" id="ray.remote">ray.remote</dt><dd>Decorator.</dd></dl>
<div id="faq"><h2>FAQ</h2><p>Questions.</p></div></section>
</main></body></html>""")

    records = read(path)

    assert [(r["source"], r["anchors"]) for r in records] == [
        ("glossary.html#getting-started", ["kuberay-quickstart", "term-Task", "ray.remote"]),
        ("glossary.html#faq", []),  # a record's own anchor is not an alias of the one before it
    ]


def test_xhtml_with_old_docutils_sections(tmp_path):
    path = tmp_path / "old.html"
    path.write_text("""<?xml version="1.0" encoding="utf-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><body><div role="main">
<div class="section" id="old-style"><h1>Old style</h1><p>Café text.</p></div>
</div></body></html>""")

    [record] = read(path)

    assert (record["source"], record["text"]) == ("old.html#old-style", "Old style\n\nCafé text.")


def test_html_content_falls_back_to_article_then_body(tmp_path):
    article = tmp_path / "article.html"
    article.write_text("<body><div>Sidebar junk</div><article><p>Article text.</p></article></body>")
    body = tmp_path / "body.html"
    body.write_text("<p>Just a fragment.</p>")

    assert [r["text"] for r in read(article)] == ["Article text."]
    assert [(r["source"], r["title"], r["text"]) for r in read(body)] == [("body.html", "Just a fragment.", "Just a fragment.")]


# --- Markdown


def test_markdown_headings_slugs_and_code_fences(tmp_path):
    path = tmp_path / "guide.md"
    path.write_text("""---
title: Front matter is metadata
---
Intro before headings.

# Getting Started!
Some *text*.

```python
# not a heading
print("hi")
```

## API: `read_file()`
Reads files.

## Getting started
Duplicate slug.

# Getting Started!
Third of its name.

Setext heading
--------------
Under a setext heading.
""")

    records = read(path)

    assert [(r["source"], r["title"]) for r in records] == [
        ("guide.md", "Intro before headings."),
        ("guide.md#getting-started", "Getting Started!"),
        ("guide.md#api-read_file", "API: read_file()"),
        ("guide.md#getting-started-1", "Getting started"),
        ("guide.md#getting-started-2", "Getting Started!"),
        ("guide.md#setext-heading", "Setext heading"),
    ]
    assert records[0]["text"] == "Intro before headings."
    assert records[1]["text"] == ('Getting Started!\n\nSome *text*.\n\n```python\n# not a heading\nprint("hi")\n```')
    assert records[5]["text"] == "Setext heading\n\nUnder a setext heading."
    assert [r["section"] for r in records] == list(range(6))
    assert {r["page_title"] for r in records} == {"Getting Started!"}  # the first heading
    assert [r["headings"] for r in records] == [
        [],
        ["Getting Started!"],
        ["Getting Started!", "API: read_file()"],
        ["Getting Started!", "Getting started"],
        ["Getting Started!"],
        ["Getting Started!", "Setext heading"],
    ]


# Headings and the anchors GitHub gives them. Most are github-slugger's test fixtures, which
# that project reads back from a page GitHub rendered; the last four follow the same
# fixtures' Unicode categories (marks kept, other numbers dropped, connector punctuation kept).
GITHUB_ANCHORS = [
    ("heading with a - dash", "heading-with-a---dash"),
    ("exchange.bind_headers(exchange, routing [, bindCallback])", "exchangebind_headersexchange-routing--bindcallback"),
    ("apostrophe’s should be trimmed", "apostrophes-should-be-trimmed"),
    ("I ♥ unicode", "i--unicode"),
    ("en–dash", "endash"),
    ("😄 unicode emoji", "-unicode-emoji"),
    ("Привет non-latin 你好", "привет-non-latin-你好"),
    (":ok_hand: Single", "ok_hand-single"),
    ("echo", "echo"),
    ("echo", "echo-1"),
    ("echo 1", "echo-1-1"),
    ("echo-1", "echo-1-2"),
    ("echo", "echo-2"),
    ("API: `read_file()` and *more*", "api-read_file-and-more"),
    ("Cafe\u0301 au lait", "cafe\u0301-au-lait"),
    ("हिन्दी", "हिन्दी"),
    ("x² ½ Ⅻ", "x--ⅻ"),
    ("a‿b", "a‿b"),
]


def test_markdown_anchors_are_githubs(tmp_path):
    path = tmp_path / "slugs.md"
    path.write_text("".join(f"# {heading}\n\nBody.\n\n" for heading, _ in GITHUB_ANCHORS))

    anchors = [r["source"].split("#", 1)[1] for r in read(path)]

    assert anchors == [anchor for _, anchor in GITHUB_ANCHORS]


def test_markdown_heading_without_text_gives_no_record(tmp_path):
    path = tmp_path / "nested.md"
    path.write_text("# Title\n\n## Part\nBody.\n")

    assert [(r["source"], r["text"], r["headings"]) for r in read(path)] == [("nested.md#part", "Part\n\nBody.", ["Title", "Part"])]


# --- discovery


@pytest.fixture
def docs(tmp_path):
    root = tmp_path / "docs"
    for name, content in {
        "b.txt": "b",
        "a.md": "# a",
        "sub/c.html": "<p>c</p>",
        "sub/deeper/d.htm": "<p>d</p>",
        "report.pdf": "%PDF",
        "README": "no suffix",
        ".hidden.txt": "hidden",
        ".git/config.txt": "hidden dir",
        "sub/.cache/e.txt": "hidden dir",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return root


def test_discover_directory(docs):
    found = discover([str(docs)])

    assert [f["relpath"] for f in found.files] == ["a.md", "b.txt", "sub/c.html", "sub/deeper/d.htm"]
    assert {f["root"] for f in found.files} == {str(docs)}
    assert found.files[2]["path"] == str(docs / "sub" / "c.html")
    assert [str(e) for e in found.skipped] == [
        f"{docs / 'README'}: skipped (unsupported type without extension)",
        f"{docs / 'report.pdf'}: skipped (unsupported type .pdf)",
    ]
    assert found.errors == []


def test_discover_file_glob_missing_and_duplicates(docs, monkeypatch):
    monkeypatch.chdir(docs.parent)

    found = discover(
        [
            "docs/b.txt",
            "docs/**/*.htm*",
            "missing.txt",
            "docs/*.rst",
            "./docs/b.txt",
            "docs/report.pdf",
        ]
    )

    assert found.files == [
        {"path": str(docs / "b.txt"), "root": str(docs / "b.txt"), "relpath": "b.txt"},
        {"path": str(docs / "sub/c.html"), "root": str(docs / "sub/c.html"), "relpath": "sub/c.html"},  # under the common root
        {"path": str(docs / "sub/deeper/d.htm"), "root": str(docs / "sub/deeper/d.htm"), "relpath": "sub/deeper/d.htm"},
    ]
    assert [str(e) for e in found.errors] == [
        "missing.txt: no such file or directory",
        "docs/*.rst: no files match this pattern",
    ]
    assert [str(e) for e in found.skipped] == ["docs/report.pdf: skipped (unsupported type .pdf)"]


def test_discovered_files_read_with_relative_sources(docs):
    found = discover([str(docs)])

    sources = [record["source"] for file in found.files[2:] for record in read_file(file)]

    assert sources == ["sub/c.html", "sub/deeper/d.htm"]


# --- bad inputs


def error_for(path: Path) -> InputFileError:
    with pytest.raises(InputFileError) as caught:
        read(path)
    return caught.value


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file (contains NUL bytes)"),
        ("empty.txt", b"", "empty file"),
        ("blank.md", b"  \n\t\r\n", "empty file (only whitespace)"),
        ("nothing.html", b"<html><body><nav>menu</nav><script>x()</script><div> </div></body></html>", "no text found (looked in its <body>)"),
        ("head-only.html", b"<html><head><title>Title</title></head></html>", "no text found"),
        ("headings.md", b"# Only\n## Headings\n", "no text found"),
        ("wide.txt", "wide text".encode("utf-16"), "UTF-16 text; convert it to UTF-8"),
    ],
)
def test_bad_input_is_reported_with_its_file(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)

    error = error_for(path)

    assert error.where == str(path)
    assert error.reason.startswith(reason)


def test_non_utf8_names_file_line_and_offset(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_bytes(b"fine\nalso fine \xff here\n")
    monkeypatch.chdir(tmp_path)

    error = error_for(tmp_path / "docs" / "a.txt")

    assert str(error) == ("docs/a.txt:2: not UTF-8 text (invalid byte 0xff at offset 15); convert it to UTF-8 or remove it")


def test_unreadable_file(tmp_path):
    # A directory named like a text file: opening it fails for every user, root included
    # (a chmod 000 file is readable by root, so that case never ran where tests run as root).
    path = tmp_path / "secret.txt"
    path.mkdir()

    error = error_for(path)

    assert error.where == str(path)
    assert error.reason == "cannot read file (Is a directory)"


# --- the real thing


def test_real_sphinx_page_fixture():
    # A Ray docs page as published: theme sidebars, highlighted code, signature spans.
    records = read(FIXTURES / "ray.data.Dataset.sum.html")

    [record] = records
    assert record["source"] == "ray.data.Dataset.sum.html#ray-data-dataset-sum"
    assert record["title"] == "ray.data.Dataset.sum"
    assert record["text"].startswith(
        "ray.data.Dataset.sum\n\n"
        "Dataset.sum(on: Optional[Union[str, List[str]]] = None, ignore_nulls: bool = True)"
        " → Union[Any, Dict[str, Any]]\n\n"
        "Compute sum over entire dataset.\n\n"
    )
    assert '>>> ray.data.range(100).sum("id")\n4950\n' in record["text"]
    assert "[source]" not in record["text"] and "Back to top" not in record["text"]


@pytest.mark.skipif(not RAYDOCS.is_dir(), reason="the raydocs-dev evaluation set is not beside the repository")
@pytest.mark.parametrize(
    "source",
    [
        "data/examples/batch_training.html#transforming-a-dataset-in-parallel-using-custom-functions-a-class-anchor-id-transform-ds-a",
        "cluster/vms/user-guides/logging.html#log-persistence",
        "rllib/package_ref/doc/ray.rllib.algorithms.algorithm_config.AlgorithmConfig.resources.html"
        "#ray-rllib-algorithms-algorithm-config-algorithmconfig-resources",
    ],
)
def test_real_raydocs_question_sources_are_produced(source):
    questions = [json.loads(line) for line in (RAYDOCS / "questions.jsonl").read_text().splitlines()]
    assert source in {q["source"] for q in questions}
    corpus = RAYDOCS / "corpus"
    page = source.split("#")[0]

    records = read(corpus / page, corpus)

    assert source in by_source(records)


def test_import_does_not_load_parsers():
    code = "import sys, ragbatch.ingest.readers; print(sorted({'bs4', 'lxml', 'markdown_it'} & set(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout

    assert output.strip() == "[]"


def test_sources_are_unique_per_file_under_the_common_root_of_the_arguments(tmp_path, monkeypatch):
    from ragbatch.ingest.readers import discover

    monkeypatch.chdir(tmp_path)
    for folder in ("a", "b", "docs/sub"):
        (tmp_path / folder).mkdir(parents=True)
    for path in ("a/notes.txt", "b/notes.txt", "docs/x.txt", "docs/sub/y.md"):
        (tmp_path / path).write_text("Same text in every file.\n")
    names = lambda *args: [f["relpath"] for f in discover(list(args)).files]  # noqa: E731
    assert names("a/notes.txt", "b/notes.txt") == ["a/notes.txt", "b/notes.txt"]
    assert names("a/notes.txt") == ["notes.txt"]  # one file: its name
    assert names("docs") == ["sub/y.md", "x.txt"]  # one folder: paths inside it
    assert names("docs", "a/notes.txt") == ["docs/sub/y.md", "docs/x.txt", "a/notes.txt"]
    assert names("docs/*.txt", "b/notes.txt") == ["docs/x.txt", "b/notes.txt"]


def test_fifos_and_link_loops_are_one_error_each_not_a_hang(tmp_path):
    import os

    from ragbatch.ingest.readers import discover

    os.mkfifo(tmp_path / "pipe.txt")
    (tmp_path / "l1.txt").symlink_to(tmp_path / "l2.txt")
    (tmp_path / "l2.txt").symlink_to(tmp_path / "l1.txt")
    (tmp_path / "ok.txt").write_text("Fine.\n")
    found = discover([str(tmp_path)])
    assert [f["relpath"] for f in found.files] == ["ok.txt"]
    assert sorted(e.where.rsplit("/", 1)[-1] for e in found.errors) == ["l1.txt", "l2.txt", "pipe.txt"]
    assert all("not a regular file" in e.reason for e in found.errors)


def test_random_bytes_and_html_nested_ten_thousand_deep_are_one_error_each(tmp_path):
    from ragbatch.errors import InputFileError
    from ragbatch.ingest.readers import discover, read_file

    (tmp_path / "random.txt").write_bytes(bytes(range(256)) * 20)
    (tmp_path / "deep.html").write_text("<html><body>" + "<div>" * 10_000 + "deep text" + "</div>" * 10_000 + "</body></html>")
    for name in ("random.txt", "deep.html"):
        with pytest.raises(InputFileError) as error:  # not a RecursionError or a traceback
            read_file(discover([str(tmp_path / name)]).files[0])
        assert name in str(error.value)
    assert "deep.html:1: HTML nested too deep to read" in str(error.value)  # not "no text found": the text is there


def test_a_line_over_a_mebibyte_is_refused_naming_the_line(tmp_path):
    from ragbatch.ingest.readers.text import MAX_LINE_CHARS

    path = tmp_path / "dump.txt"
    path.write_text("a title\n\n" + "x" * (MAX_LINE_CHARS + 1) + "\nthe end\n")
    with pytest.raises(InputFileError, match=r"dump\.txt:3: a line of 1,048,577 characters with no line break"):
        read(path)
    path.write_text("a title\n\n" + "x" * MAX_LINE_CHARS + "\nthe end\n")  # at the limit: read
    assert read(path)[0]["line_numbers"][-1] == 4
