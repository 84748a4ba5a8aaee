"""Command-line interface: parse options, call one pipeline function, render the result.

Heavy libraries are imported inside the commands so `ragbatch --help` stays instant.
Exit codes: 0 done; 1 error (nothing or only part done, see the message);
2 bad usage; 3 done, but some inputs were skipped for errors.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from ragbatch.errors import RagbatchError
from ragbatch.quiet import quiet_libraries

EXIT_PARTIAL = 3


def handle_errors(command):
    """One clear line on stderr and a non-zero exit for known errors; tracebacks only with --debug."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return command(*args, **kwargs)
        except RagbatchError as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - last resort: still one line without --debug
            if debug:
                raise
            click.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
            sys.exit(1)

    return wrapper


DEVICE_OPTION = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and library logs.")
@click.version_option(package_name="ragbatch")
def main(debug: bool) -> None:
    """Batch retrieval-augmented generation: index documents, ask questions in bulk."""
    if not debug:
        quiet_libraries()


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--store", required=True, type=click.Path(file_okay=False, path_type=Path), help="Local store directory (created if absent).")
@click.option("--publish", "publish_root", type=click.Path(file_okay=False, path_type=Path), help="Also publish a verified copy under this root.")
@click.option("--keep", default=3, show_default=True, help="Published versions to keep.")
@click.option("--embedder", help="Embedding model: name, local folder or HF id [default: the store's, else all-MiniLM-L6-v2].")
@click.option("--chunk-size", type=click.IntRange(16), help="Chunk size in the embedder's tokens [default: fits the model].")
@click.option("--chunk-overlap", type=click.IntRange(0), help="Overlap between chunks, in tokens [default: size/8].")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1), help="Texts per forward pass.")
@DEVICE_OPTION
@click.option("--executor", type=click.Choice(["auto", "local", "ray"]), default="auto", show_default=True, help="auto: Ray for large inputs or RAY_ADDRESS, else in-process.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of tables.")
@handle_errors
def index(paths, store, publish_root, keep, embedder, chunk_size, chunk_overlap, batch_size, device, executor, as_json):
    """Index text, HTML and Markdown files (or directories, or globs) into a Chroma store."""
    from ragbatch.indexing import IndexOptions
    from ragbatch.indexing import index as run_index
    from ragbatch.progress import make_progress

    options = IndexOptions(list(paths), store, publish_root, embedder, chunk_size, chunk_overlap, batch_size, device, executor, keep)
    with make_progress(not as_json) as progress:
        report = run_index(options, progress)
    for line in report.skipped:
        click.echo(line, err=True)
    for line in report.errors:
        click.echo(f"error: {line}", err=True)
    if as_json:
        click.echo(json.dumps(report.as_json()))
    else:
        from ragbatch.render import index_summary

        index_summary(report)
    if report.errors:
        sys.exit(EXIT_PARTIAL)


@main.command()
@click.option("--store", required=True, type=click.Path(file_okay=False, path_type=Path), help="Local store to publish.")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("--keep", default=3, show_default=True, help="Published versions to keep.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def publish(store, root, keep, as_json):
    """Publish a verified, versioned copy of a store under ROOT, switched in atomically."""
    from ragbatch.indexing import store_lock
    from ragbatch.manifest import require_manifest
    from ragbatch.publish import publish as run_publish

    require_manifest(store)
    with store_lock(store):  # not while an index run is writing it
        version = run_publish(store, root, keep=keep)
    if as_json:
        click.echo(json.dumps({"store": str(store), "published": str(version), "link": str(Path(root) / Path(store).name)}))
    else:
        click.echo(f"published {store} as {version}")


RETRIEVAL_OPTION = click.option(
    "--retrieval", type=click.Choice(["dense", "bm25", "hybrid"]), default="hybrid", show_default=True, help="Vectors, BM25 keywords, or both fused by rank."
)
WHERE_OPTION = click.option("--where", multiple=True, metavar="KEY=VALUE", help="Only chunks whose stored field KEY equals VALUE (repeatable; all must match).")
SOURCE_PREFIX_OPTION = click.option("--source-prefix", metavar="PATH", help="Only chunks whose source starts with PATH, e.g. data/.")
MAX_PER_SECTION_OPTION = click.option("--max-per-section", default=1, show_default=True, type=click.IntRange(0), help="At most N chunks of one #section among the k (0: no limit).")
MAX_PER_PAGE_OPTION = click.option("--max-per-page", default=0, show_default=True, type=click.IntRange(0), help="At most N chunks of one page or file among the k (0: no limit).")


def chunk_filter(where, source_prefix):
    from ragbatch.filters import ChunkFilter

    return ChunkFilter.parse(where, source_prefix)


@main.command()
@click.argument("questions")
@click.option("--store", required=True, type=click.Path(file_okay=False, path_type=Path), help="Store to retrieve from (local, or a published link).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Parquet file of answers.")
@click.option("--k", default=5, show_default=True, type=click.IntRange(1), help="Passages retrieved per question.")
@click.option("--llm", help="Generator: packaged name, local folder or cached HF id [default: smollm2-135m-instruct].")
@click.option("--max-tokens", default=128, show_default=True, type=click.IntRange(1), help="Most tokens per answer.")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--system-prompt", help="System prompt text [default: answer from the numbered passages or say I don't know].")
@click.option("--prompt-file", type=click.Path(dir_okay=False, path_type=Path), help="Read the system prompt from a file.")
@click.option("--resume", is_flag=True, help="Keep answers already in --out (and parts of an interrupted run); answer the rest.")
@click.option("--count-tokens", metavar="ENCODING", help="Add columns counting prompt and answer in a tiktoken encoding (cl100k_base, o200k_base).")
@click.option("--prices", type=click.Path(dir_okay=False, path_type=Path), help="JSON or TOML table of USD per million tokens.")
@click.option("--price-prompt", type=click.FloatRange(0), help="USD per million prompt tokens (overrides --prices).")
@click.option("--price-completion", type=click.FloatRange(0), help="USD per million completion tokens (overrides --prices).")
@click.option("--max-model-len", type=click.IntRange(64), help="Context window to run the model with [default: the model's].")
@click.option("--part-rows", default=64, show_default=True, type=click.IntRange(1), help="Answers per Parquet part written while the run goes (what a crash can lose).")
@RETRIEVAL_OPTION
@WHERE_OPTION
@SOURCE_PREFIX_OPTION
@MAX_PER_SECTION_OPTION
@MAX_PER_PAGE_OPTION
@DEVICE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of tables.")
@handle_errors
def ask(questions, store, out, k, llm, max_tokens, temperature, seed, system_prompt, prompt_file, resume, count_tokens, prices, price_prompt, price_completion, max_model_len, part_rows, retrieval, where, source_prefix, max_per_section, max_per_page, device, as_json):
    """Answer every question in QUESTIONS (JSONL, CSV, Parquet, text, or - for stdin) into Parquet."""
    from ragbatch.asking import AskOptions
    from ragbatch.asking import ask as run_ask
    from ragbatch.progress import make_progress

    if system_prompt and prompt_file:
        raise click.UsageError("give --system-prompt or --prompt-file, not both")
    options = AskOptions(questions, store, out, k, llm, max_tokens, temperature, seed, system_prompt, prompt_file, resume, count_tokens, prices, price_prompt, price_completion, device, max_model_len, retrieval, part_rows, chunk_filter(where, source_prefix), (max_per_section, max_per_page))
    with make_progress(not as_json) as progress:
        report = run_ask(options, progress)
    if as_json:
        click.echo(json.dumps(report.as_json()))
    else:
        from ragbatch.render import ask_summary

        ask_summary(report)


@main.command()
@click.argument("question")
@click.option("--store", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--k", default=5, show_default=True, type=click.IntRange(1))
@RETRIEVAL_OPTION
@WHERE_OPTION
@SOURCE_PREFIX_OPTION
@MAX_PER_SECTION_OPTION
@MAX_PER_PAGE_OPTION
@DEVICE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {rank, source, chunk_id, score, text}.")
@handle_errors
def search(question, store, k, retrieval, where, source_prefix, max_per_section, max_per_page, device, as_json):
    """Show the passages ranked for one QUESTION."""
    from ragbatch.retrieval import Retriever

    retriever = Retriever(store, device=device, mode=retrieval, chunk_filter=chunk_filter(where, source_prefix), max_per_section=max_per_section, max_per_page=max_per_page)
    try:
        hits = retriever.search([question], k)[0]
    finally:
        retriever.close()
    results = [{"rank": rank, "source": h.source, "chunk_id": h.chunk_id, "score": round(h.score, 6), "text": h.text} for rank, h in enumerate(hits, start=1)]
    if as_json:
        click.echo(json.dumps(results))
    else:
        from ragbatch.render import search_results

        search_results(question, results)


def parse_ks(ctx, param, value: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in value.split(",") if k.strip()})
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected numbers separated by commas, e.g. 1,3,5,10") from None
    if not ks or ks[0] < 1:
        raise click.BadParameter(f"{value!r}: expected positive numbers")
    return ks


@main.command(name="eval")
@click.argument("references")
@click.option("--store", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--k", "ks", default="1,3,5,10", show_default=True, callback=parse_ks, help="Cut-offs for hit@k, comma-separated.")
@click.option("--answers", type=click.Path(dir_okay=False, path_type=Path), help="Parquet from `ragbatch ask` over the same questions: adds EM, F1, I-don't-know rate.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write per-question rows (Parquet) for inspecting failures.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Write an HTML page: hit@k curves per mode, the summary, the worst misses.")
@click.option("--retrieval", default="hybrid", show_default=True, help="dense, bm25, hybrid, or several separated by commas (one row each, one embedding pass).")
@WHERE_OPTION
@SOURCE_PREFIX_OPTION
@MAX_PER_SECTION_OPTION
@MAX_PER_PAGE_OPTION
@DEVICE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of tables.")
@handle_errors
def eval_command(references, store, ks, answers, out, report, retrieval, where, source_prefix, max_per_section, max_per_page, device, as_json):
    """Measure retrieval (and answer) quality against REFERENCES (JSONL with question and source)."""
    from ragbatch.evaluating import EvalOptions, evaluate
    from ragbatch.progress import make_progress

    with make_progress(not as_json) as progress:
        summary, _ = evaluate(EvalOptions(references, store, ks, answers, out, retrieval, device, report, chunk_filter(where, source_prefix), (max_per_section, max_per_page)), progress)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        from ragbatch.render import eval_summary

        eval_summary(summary, ks)


if __name__ == "__main__":
    main()
