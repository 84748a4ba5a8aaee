"""Command-line interface: parse options, call one pipeline function, render the result.

Exit codes: 0 done; 1 error (nothing or only part done, see the message);
2 bad usage; 3 done, but some inputs were skipped for errors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ragbatch import api
from ragbatch.cli import render
from ragbatch.cli.errors import EXIT_PARTIAL, handle_errors, say
from ragbatch.cli.options import (
    READ_STORE_HELP,
    device_option,
    engine_executor_options,
    generation_options,
    json_option,
    parse_ks,
    selection_options,
    store_option,
    wait_option,
)
from ragbatch.generation.vllm_engine import parse_vllm_args
from ragbatch.ingest.pipeline import EXECUTORS
from ragbatch.judging.rubrics import ASPECTS
from ragbatch.models.weights import DEFAULT_LLM
from ragbatch.progress import make_progress
from ragbatch.quiet import quiet_libraries
from ragbatch.retrieval.sources import ranked_sources


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and library logs.")
@click.version_option(package_name="ragbatch")
def main(debug: bool) -> None:
    """Batch retrieval-augmented generation: index documents, ask questions in bulk."""
    if not debug:
        quiet_libraries()


@main.command()
@handle_errors
@click.argument("paths", nargs=-1, required=True)
@store_option("Local store directory (created if absent).")
@click.option("--publish", "publish_root", type=click.Path(file_okay=False, path_type=Path), help="Also publish a verified copy under this root.")
@click.option("--name", help="Name to publish under [default: the store folder's name].")
@click.option("--force", is_flag=True, help="Publish over a name another store published.")
@click.option("--keep", default=3, show_default=True, help="Published versions to keep.")
@click.option(
    "--embedder",
    help="Embedding model: packaged name, local folder or Hugging Face id [default: the store's; for a new store hkunlp/instructor-large on a GPU, else all-MiniLM-L6-v2].",
)
@click.option("--chunk-size", type=click.IntRange(16), help="Chunk size in the embedder's tokens [default: fits the model].")
@click.option("--chunk-overlap", type=click.IntRange(0), help="Overlap between chunks, in tokens [default: size/8].")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1), help="Texts per forward pass.")
@device_option
@click.option("--executor", type=click.Choice(EXECUTORS), default="auto", show_default=True, help="auto: Ray for large inputs or RAY_ADDRESS, else in-process.")
@click.option(
    "--chroma",
    metavar="URL",
    help="Keep a new store's vectors on this Chroma server (http://HOST:PORT) instead of DIR/chroma; recorded in the store, so later commands need no flag.",
)
@json_option
def index(paths, as_json, **options):
    """Index text, HTML and Markdown files (or directories, or globs) into a Chroma store."""
    with make_progress(not as_json) as progress:
        report = api.index(list(paths), progress=progress, **options)
    for line in report.notices + report.skipped:
        say(line)
    for line in report.errors:
        say(f"error: {line}")
    if as_json:
        click.echo(json.dumps(report.as_json()))
    else:
        render.index_summary(report)
    if report.errors:
        sys.exit(EXIT_PARTIAL)


@main.command()
@handle_errors
@store_option("Local store to publish.")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", help="Name to publish under: ROOT/NAME [default: the store folder's name].")
@click.option("--force", is_flag=True, help="Replace a name another store published.")
@click.option("--keep", default=3, show_default=True, help="Published versions to keep.")
@json_option
def publish(store, root, name, force, keep, as_json):
    """Publish a verified, versioned copy of a store under ROOT, switched in atomically."""
    published = api.publish(store, root, keep=keep, name=name, force=force)
    if as_json:
        click.echo(json.dumps({"store": str(store), "published": str(published.version), "link": str(published.link), "unchanged": published.unchanged}))
    elif published.unchanged:
        click.echo(f"{published.link}: unchanged, it holds {store} already ({published.version.name}); nothing published")
    else:
        click.echo(f"published {store} as {published.version}")


@main.command()
@handle_errors
@store_option("Store to verify (local, or a published version folder).")
@json_option
def check(store, as_json):
    """Verify a store as publish does (manifest, SQLite or Chroma server, vector count and index, BM25); name any damage and its repair."""
    health = api.check(store)
    if as_json:
        click.echo(json.dumps(health.as_json()))
    else:
        click.echo(f"{store}: ok ({health.chunks} chunks, embedder {health.embedder}, BM25 {health.lexical})")


@main.command()
@handle_errors
@click.argument("questions")
@store_option(READ_STORE_HELP)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Parquet file of answers [default: outputs/<QUESTIONS stem>-answers.parquet, resumed when it exists].",
)
@click.option("--max-tokens", default=128, show_default=True, type=click.IntRange(1), help="Most tokens per answer.")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0))
@click.option("--resume", is_flag=True, help="Keep answers already in --out (and parts of an interrupted run); answer the rest and retry failed rows.")
@click.option("--overwrite", is_flag=True, help="Start over: answer every question; the old file is replaced when the run finishes.")
@click.option(
    "--part-rows", default=64, show_default=True, type=click.IntRange(1), help="Answers per Parquet part written while the run goes (what a crash can lose)."
)
@engine_executor_options
@selection_options()
@generation_options
@wait_option
@json_option
def ask(questions, as_json, resume, overwrite, **options):
    """Answer every question in QUESTIONS (JSONL, CSV, Parquet, text, or - for stdin) into Parquet."""
    if resume and overwrite:
        raise click.UsageError("give --resume or --overwrite, not both")
    with make_progress(not as_json) as progress:
        report = api.ask(questions, resume=resume, overwrite=overwrite, progress=progress, notify=say, **options)
    if as_json:
        click.echo(json.dumps(report.as_json()))
    else:
        render.ask_summary(report)
    if report.failed:
        say(f"{report.failed} of {report.questions} questions failed: see the `error` column of {report.out}")
    if report.failed or report.errors:
        sys.exit(EXIT_PARTIAL)


@main.command()
@handle_errors
@click.argument("question")
@store_option(READ_STORE_HELP)
@selection_options()
@device_option
@wait_option
@json_option
def search(question, store, selection, device, wait, as_json):
    """Show the passages ranked for one QUESTION."""
    if not question.strip():
        raise click.BadParameter("must not be blank", param_hint="QUESTION")
    results = ranked_sources(api.search(question, store=store, selection=selection, device=device, notify=say, wait=wait))
    if as_json:
        click.echo(json.dumps({"question": question, "store": str(store), "retrieval": selection.mode, "results": results}))
    else:
        render.search_results(question, store, results)


@main.command()
@handle_errors
@store_option(READ_STORE_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--replicas", type=click.IntRange(1), help="Run as a Ray Serve deployment with N replicas (also when RAY_ADDRESS is set) [default: one process].")
@click.option(
    "--api-key",
    envvar="RAGBATCH_API_KEY",
    show_envvar=True,
    help="Require `Authorization: Bearer KEY` on every route but /health (OpenAI clients' api_key).",
)
@click.option("--max-concurrency", default=64, show_default=True, type=click.IntRange(1), help="Requests handled at once; more wait in a queue.")
@click.option("--max-queue", default=256, show_default=True, type=click.IntRange(0), help="Requests waiting for a slot; past it, 429 with Retry-After.")
@click.option("--max-body-bytes", default=1_000_000, show_default=True, type=click.IntRange(1), help="Largest request body (413 past it).")
@click.option("--max-question-chars", default=20_000, show_default=True, type=click.IntRange(1), help="Longest question (413 past it, before tokenising).")
@click.option("--max-answer-tokens", default=4096, show_default=True, type=click.IntRange(1), help="Largest max_tokens a request may ask for (422 past it).")
@click.option(
    "--request-timeout", default=600.0, show_default=True, type=click.FloatRange(0), metavar="SECONDS", help="Stop a request after this long (504; 0: never)."
)
@click.option("--rerank", metavar="MODEL", help="Reorder every retrieval's top candidates with this cross-encoder, then keep k.")
@generation_options
def serve(store, host, port, replicas, generation, request_timeout, rerank, **limits):
    """Answer questions over HTTP: /search, /ask, OpenAI's /v1/chat/completions, /health, /metrics."""
    # The serving package imports FastAPI, pydantic and uvicorn at its top: only `serve` pays for them.
    from ragbatch.serving.options import Limits, ServeOptions, prepare
    from ragbatch.serving.server import serve as run_server

    bounds = Limits(request_timeout=request_timeout or None, **limits)
    options = ServeOptions(store=store, host=host, port=port, replicas=replicas, generation=generation, limits=bounds, rerank=rerank)
    debug = click.get_current_context().find_root().params.get("debug", False)
    run_server(prepare(options, notify=say), notify=say, debug=debug)


@main.command(name="eval")
@handle_errors
@click.argument("references")
@store_option(READ_STORE_HELP)
@click.option("--k", "ks", default="1,3,5,10", show_default=True, callback=parse_ks, help="Cut-offs for hit@k, comma-separated.")
@click.option(
    "--answers", type=click.Path(dir_okay=False, path_type=Path), help="Parquet from `ragbatch ask` over the same questions: adds EM, F1, I-don't-know rate."
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write per-question rows (Parquet) for inspecting failures.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Write an HTML page: hit@k curves per mode, the summary, the worst misses.")
@click.option(
    "--retrieval", default="hybrid", show_default=True, help="dense, bm25, hybrid, or several separated by commas (one row each, one embedding pass)."
)
@selection_options(mode_and_k=False)
@device_option
@wait_option
@json_option
def eval_command(references, ks, as_json, **options):
    """Measure retrieval (and answer) quality against REFERENCES (JSONL with question and source)."""
    with make_progress(not as_json) as progress:
        result = api.evaluate(references, ks=ks, progress=progress, notify=say, **options)
    if as_json:
        click.echo(json.dumps(result.summary))
    else:
        render.eval_summary(result.summary, ks)
    if result.summary["errors"]:
        sys.exit(EXIT_PARTIAL)


@main.command(name="judge")
@handle_errors
@click.argument("file")
@click.option("--judge", help=f"Judge LLM: packaged name, local folder or Hugging Face id [default: {DEFAULT_LLM}].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Verdicts Parquet [default: outputs/<FILE name>-judged.parquet, resumed].")
@click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    help="Store to read the answers' passages (chunk_ids) from, for groundedness [default: the one the ask file records].",
)
@click.option(
    "--aspects",
    default=",".join(ASPECTS),
    show_default=True,
    help="What to rate, comma-separated: quality (needs a reference answer), relevance, groundedness.",
)
@click.option("--by", metavar="COLUMN", help="Summarize per value of this column [default: system, else llm, where present].")
@click.option(
    "--report", type=click.Path(dir_okay=False, path_type=Path), help="Write an HTML page: score histogram, per-group comparison, lowest-rated answers."
)
@click.option("--resume", is_flag=True, help="Judge only the answers OUT has no verdict for (the default OUT always resumes).")
@click.option("--overwrite", is_flag=True, help="Start OUT over.")
@click.option("--retries", default=2, show_default=True, type=click.IntRange(0), help="Ask again for a verdict that does not parse, this many times.")
@click.option(
    "--part-rows", default=64, show_default=True, type=click.IntRange(1), help="Verdicts per Parquet part written while the run goes (what a crash can lose)."
)
@click.option("--max-model-len", type=click.IntRange(64), help="Context window to run the judge with [default: the model's].")
@click.option("--vllm-arg", "vllm_args", multiple=True, metavar="KEY=VALUE", help="Any other vLLM engine argument, repeatable.")
@click.option("--seed", type=int, help="A per-request sampling seed [default: none].")
@engine_executor_options
@device_option
@wait_option
@json_option
def judge_command(file, aspects, vllm_args, as_json, resume, overwrite, **options):
    """Rate the answers in FILE (ask's Parquet, or JSONL/CSV/Parquet with question and answer) with an LLM judge."""
    if resume and overwrite:
        raise click.UsageError("give --resume or --overwrite, not both")
    chosen = tuple(a.strip() for a in aspects.split(",") if a.strip())
    with make_progress(not as_json) as progress:
        report = api.judge(
            file, aspects=chosen, vllm_args=parse_vllm_args(vllm_args), resume=resume, overwrite=overwrite, progress=progress, notify=say, **options
        )
    if as_json:
        click.echo(json.dumps(report.as_json()))
    else:
        render.judge_summary(report)
    if report.failed:
        say(f"{report.failed} of {report.rows} answers could not be judged: see the `error` column of {report.out}")
    if report.failed or report.errors:
        sys.exit(EXIT_PARTIAL)


@main.command()
@handle_errors
@store_option(READ_STORE_HELP)
@click.option("--n", "n", default=100, show_default=True, type=click.IntRange(1), help="Questions to write.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="JSONL to write: id, question, answer, source, chunk_id.")
@click.option("--llm", help=f"Model that writes them: packaged name, local folder or Hugging Face id [default: {DEFAULT_LLM}].")
@click.option("--seed", type=int, help="Seed of the chunk sample (0 without one) and of generation [default: none].")
@click.option("--overwrite", is_flag=True, help="Replace OUT.")
@click.option("--max-model-len", type=click.IntRange(64), help="Context window to run the model with [default: the model's].")
@click.option("--vllm-arg", "vllm_args", multiple=True, metavar="KEY=VALUE", help="Any other vLLM engine argument, repeatable.")
@engine_executor_options
@device_option
@wait_option
@json_option
def synth(vllm_args, as_json, **options):
    """Write synthetic questions and reference answers from chunks spread over a store, ready for eval, ask and judge."""
    with make_progress(not as_json) as progress:
        report = api.synth(vllm_args=parse_vllm_args(vllm_args), progress=progress, notify=say, **options)
    if as_json:
        click.echo(json.dumps(report.as_json()))
    else:
        render.synth_summary(report)


if __name__ == "__main__":
    main()
