"""Command-line interface: parse options, call one pipeline function, render the result.

Heavy libraries are imported inside the commands so `ragbatch --help` stays instant.
Exit codes: 0 done; 1 error (nothing or only part done, see the message);
2 bad usage; 3 done, but some inputs were skipped for errors.
"""

from __future__ import annotations

import errno
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
        except click.ClickException:
            raise  # usage errors: click prints them and exits 2
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
            if _disk_full(exc):
                where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
                click.echo(f"error: no space left on device{where}; free some space and run the same command again (what was stored before is kept)", err=True)
            else:
                click.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
            sys.exit(1)

    return wrapper


def store_option(help: str):
    """--store, defaulting to $RAGBATCH_STORE, else stores/default under the current directory."""
    from ragbatch.locations import DEFAULT_STORE, STORE_ENV

    return click.option(
        "--store",
        envvar=STORE_ENV,
        show_envvar=True,
        default=DEFAULT_STORE,
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help=help,
    )


def _disk_full(exc: BaseException) -> bool:
    """ENOSPC from Python, or SQLite's (Chroma's) "database or disk is full"."""
    return getattr(exc, "errno", None) == errno.ENOSPC or any(text in str(exc) for text in ("database or disk is full", "No space left on device"))


DEVICE_OPTION = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout instead of tables.")
K_OPTION = click.option("--k", default=5, show_default=True, type=click.IntRange(1), help="Passages retrieved per question.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and library logs.")
@click.version_option(package_name="ragbatch")
def main(debug: bool) -> None:
    """Batch retrieval-augmented generation: index documents, ask questions in bulk."""
    if not debug:
        quiet_libraries()


@main.command()
@click.argument("paths", nargs=-1, required=True)
@store_option("Local store directory (created if absent).")
@click.option("--publish", "publish_root", type=click.Path(file_okay=False, path_type=Path), help="Also publish a verified copy under this root.")
@click.option("--keep", default=3, show_default=True, help="Published versions to keep.")
@click.option(
    "--embedder",
    help="Embedding model: packaged name, local folder or Hugging Face id [default: the store's; for a new store hkunlp/instructor-large on a GPU, else all-MiniLM-L6-v2].",
)
@click.option("--chunk-size", type=click.IntRange(16), help="Chunk size in the embedder's tokens [default: fits the model].")
@click.option("--chunk-overlap", type=click.IntRange(0), help="Overlap between chunks, in tokens [default: size/8].")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1), help="Texts per forward pass.")
@DEVICE_OPTION
@click.option(
    "--executor",
    type=click.Choice(["auto", "local", "ray"]),
    default="auto",
    show_default=True,
    help="auto: Ray for large inputs or RAY_ADDRESS, else in-process.",
)
@click.option(
    "--chroma",
    metavar="URL",
    help="Keep a new store's vectors on this Chroma server (http://HOST:PORT) instead of DIR/chroma; recorded in the store, so later commands need no flag.",
)
@JSON_OPTION
@handle_errors
def index(paths, store, publish_root, keep, embedder, chunk_size, chunk_overlap, batch_size, device, executor, chroma, as_json):
    """Index text, HTML and Markdown files (or directories, or globs) into a Chroma store."""
    from ragbatch.indexing import IndexOptions
    from ragbatch.indexing import index as run_index
    from ragbatch.progress import make_progress

    options = IndexOptions(
        paths=list(paths),
        store=store,
        publish_root=publish_root,
        embedder=embedder,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        batch_size=batch_size,
        device=device,
        executor=executor,
        keep=keep,
        chroma=chroma,
    )
    with make_progress(not as_json) as progress:
        report = run_index(options, progress)
    for line in report.notices + report.skipped:
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
@store_option("Local store to publish.")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("--keep", default=3, show_default=True, help="Published versions to keep.")
@JSON_OPTION
@handle_errors
def publish(store, root, keep, as_json):
    """Publish a verified, versioned copy of a store under ROOT, switched in atomically."""
    from ragbatch.manifest import require_manifest
    from ragbatch.publish import publish as run_publish
    from ragbatch.store import store_lock

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
MAX_PER_SECTION_OPTION = click.option(
    "--max-per-section", default=1, show_default=True, type=click.IntRange(0), help="At most N chunks of one #section among the k (0: no limit)."
)
MAX_PER_PAGE_OPTION = click.option(
    "--max-per-page", default=0, show_default=True, type=click.IntRange(0), help="At most N chunks of one page or file among the k (0: no limit)."
)


def selection_options(command):
    """Which chunks may be retrieved, the same on search, ask and eval: filters and diversity."""
    for option in (MAX_PER_PAGE_OPTION, MAX_PER_SECTION_OPTION, SOURCE_PREFIX_OPTION, WHERE_OPTION):
        command = option(command)
    return command


def chunk_filter(where, source_prefix):
    from ragbatch.filters import ChunkFilter

    return ChunkFilter.parse(where, source_prefix)


READ_STORE_HELP = "Store to retrieve from (local, or a published link)."


@main.command()
@store_option("Store to verify (local, or a published version folder).")
@JSON_OPTION
@handle_errors
def check(store, as_json):
    """Verify a store as publish does (manifest, SQLite or Chroma server, vector count and index, BM25); name any damage and its repair."""
    from ragbatch.checking import check_store
    from ragbatch.manifest import require_store_path
    from ragbatch.store import store_lock
    from ragbatch.store_cache import is_published, resolve_store

    require_store_path(store)
    if is_published(store):  # checksums verified into the local cache, then that copy checked
        health = check_store(resolve_store(store), lexical=True)
    else:
        with store_lock(store):  # not while an index run is writing it
            health = check_store(store, lexical=True)
    health.store = str(store)
    if as_json:
        click.echo(json.dumps(health.as_json()))
    else:
        click.echo(f"{store}: ok ({health.chunks} chunks, embedder {health.embedder}, BM25 {health.lexical})")


@main.command()
@click.argument("questions")
@store_option(READ_STORE_HELP)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Parquet file of answers [default: outputs/<QUESTIONS stem>-answers.parquet, resumed when it exists].",
)
@K_OPTION
@click.option("--llm", help="Generator: packaged name, local folder or Hugging Face id (from the HF cache, else downloaded) [default: smollm2-135m-instruct].")
@click.option("--max-tokens", default=128, show_default=True, type=click.IntRange(1), help="Most tokens per answer.")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--system-prompt", help="System prompt text [default: answer from the numbered passages or say I don't know].")
@click.option("--prompt-file", type=click.Path(dir_okay=False, path_type=Path), help="Read the system prompt from a file.")
@click.option("--resume", is_flag=True, help="Keep answers already in --out (and parts of an interrupted run); answer the rest and retry failed rows.")
@click.option("--overwrite", is_flag=True, help="Start over: answer every question; the old file is replaced when the run finishes.")
@click.option("--count-tokens", metavar="ENCODING", help="Add columns counting prompt and answer in a tiktoken encoding (cl100k_base, o200k_base).")
@click.option("--prices", type=click.Path(dir_okay=False, path_type=Path), help="JSON or TOML table of USD per million tokens.")
@click.option("--price-prompt", type=click.FloatRange(0), help="USD per million prompt tokens (overrides --prices).")
@click.option("--price-completion", type=click.FloatRange(0), help="USD per million completion tokens (overrides --prices).")
@click.option("--max-model-len", type=click.IntRange(64), help="Context window to run the model with [default: the model's].")
@click.option("--gpu-memory-utilization", type=click.FloatRange(0, 1, min_open=True), help="Share of the GPU's memory vLLM may take [default: vLLM's, 0.92].")
@click.option("--tensor-parallel-size", type=click.IntRange(1), help="GPUs to split the model across [default: 1].")
@click.option(
    "--vllm-arg",
    "vllm_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other vLLM engine argument, repeatable: quantization=fp8, enable_prefix_caching=true, max_num_seqs=64.",
)
@click.option(
    "--part-rows", default=64, show_default=True, type=click.IntRange(1), help="Answers per Parquet part written while the run goes (what a crash can lose)."
)
@RETRIEVAL_OPTION
@selection_options
@DEVICE_OPTION
@JSON_OPTION
@handle_errors
def ask(
    questions,
    store,
    out,
    k,
    llm,
    max_tokens,
    temperature,
    seed,
    system_prompt,
    prompt_file,
    resume,
    overwrite,
    count_tokens,
    prices,
    price_prompt,
    price_completion,
    max_model_len,
    gpu_memory_utilization,
    tensor_parallel_size,
    vllm_args,
    part_rows,
    retrieval,
    where,
    source_prefix,
    max_per_section,
    max_per_page,
    device,
    as_json,
):
    """Answer every question in QUESTIONS (JSONL, CSV, Parquet, text, or - for stdin) into Parquet."""
    from ragbatch.asking import AskOptions
    from ragbatch.asking import ask as run_ask
    from ragbatch.engine_args import parse_vllm_args
    from ragbatch.progress import make_progress

    if system_prompt and prompt_file:
        raise click.UsageError("give --system-prompt or --prompt-file, not both")
    if resume and overwrite:
        raise click.UsageError("give --resume or --overwrite, not both")
    options = AskOptions(
        questions=questions,
        store=store,
        out=out,
        k=k,
        llm=llm,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        system_prompt=system_prompt,
        prompt_file=prompt_file,
        resume=resume,
        overwrite=overwrite,
        count_tokens=count_tokens,
        prices=prices,
        price_prompt=price_prompt,
        price_completion=price_completion,
        device=device,
        max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization,
        tensor_parallel_size=tensor_parallel_size,
        vllm_args=parse_vllm_args(vllm_args),
        retrieval=retrieval,
        part_rows=part_rows,
        chunk_filter=chunk_filter(where, source_prefix),
        diversity=(max_per_section, max_per_page),
    )
    with make_progress(not as_json) as progress:
        report = run_ask(options, progress, notify=lambda line: click.echo(line, err=True))
    if as_json:
        click.echo(json.dumps(report.as_json()))
    else:
        from ragbatch.render import ask_summary

        ask_summary(report)
    if report.failed:
        click.echo(f"{report.failed} of {report.questions} questions failed: see the `error` column of {report.out}", err=True)
    if report.failed or report.errors:
        sys.exit(EXIT_PARTIAL)


@main.command()
@click.argument("question")
@store_option(READ_STORE_HELP)
@K_OPTION
@RETRIEVAL_OPTION
@selection_options
@DEVICE_OPTION
@JSON_OPTION
@handle_errors
def search(question, store, k, retrieval, where, source_prefix, max_per_section, max_per_page, device, as_json):
    """Show the passages ranked for one QUESTION."""
    from ragbatch.retrieval import Retriever
    from ragbatch.rows import ranked_sources

    retriever = Retriever(
        store, device=device, mode=retrieval, chunk_filter=chunk_filter(where, source_prefix), max_per_section=max_per_section, max_per_page=max_per_page
    )
    try:
        hits = retriever.search([question], k)[0]
    finally:
        retriever.close()
    results = ranked_sources(hits)
    if as_json:
        click.echo(json.dumps({"question": question, "store": str(store), "retrieval": retrieval, "results": results}))
    else:
        from ragbatch.render import search_results

        search_results(question, store, results)


@main.command()
@store_option(READ_STORE_HELP)
@click.option("--llm", help="Generator, as for ask [default: smollm2-135m-instruct].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--replicas", type=click.IntRange(1), help="Run as a Ray Serve deployment with N replicas (also when RAY_ADDRESS is set) [default: one process].")
@click.option("--seed", default=0, show_default=True, type=int, help="Engine seed, as for ask.")
@click.option("--system-prompt", help="System prompt text [default: ask's].")
@click.option("--prompt-file", type=click.Path(dir_okay=False, path_type=Path), help="Read the system prompt from a file.")
@click.option("--count-tokens", metavar="ENCODING", help="Add tiktoken counts of prompt and answer to every answer (cl100k_base, o200k_base).")
@click.option("--prices", type=click.Path(dir_okay=False, path_type=Path), help="JSON or TOML table of USD per million tokens.")
@click.option("--price-prompt", type=click.FloatRange(0), help="USD per million prompt tokens (overrides --prices).")
@click.option("--price-completion", type=click.FloatRange(0), help="USD per million completion tokens (overrides --prices).")
@click.option("--max-model-len", type=click.IntRange(64), help="Context window to run the model with [default: the model's].")
@click.option("--gpu-memory-utilization", type=click.FloatRange(0, 1, min_open=True), help="Share of the GPU's memory vLLM may take [default: vLLM's, 0.92].")
@click.option("--tensor-parallel-size", type=click.IntRange(1), help="GPUs to split the model across [default: 1].")
@click.option("--vllm-arg", "vllm_args", multiple=True, metavar="KEY=VALUE", help="Any other vLLM engine argument, repeatable, as for ask.")
@DEVICE_OPTION
@handle_errors
def serve(
    store,
    llm,
    host,
    port,
    replicas,
    seed,
    system_prompt,
    prompt_file,
    count_tokens,
    prices,
    price_prompt,
    price_completion,
    max_model_len,
    gpu_memory_utilization,
    tensor_parallel_size,
    vllm_args,
    device,
):
    """Answer questions over HTTP: /search, /ask, OpenAI's /v1/chat/completions, /health, /metrics."""
    from ragbatch.engine_args import parse_vllm_args
    from ragbatch.serving.options import ServeOptions, prepare
    from ragbatch.serving.server import serve as run_server

    if system_prompt and prompt_file:
        raise click.UsageError("give --system-prompt or --prompt-file, not both")
    options = ServeOptions(
        store=store,
        llm=llm,
        host=host,
        port=port,
        replicas=replicas,
        max_model_len=max_model_len,
        device=device,
        seed=seed,
        system_prompt=system_prompt,
        prompt_file=prompt_file,
        count_tokens=count_tokens,
        prices=prices,
        price_prompt=price_prompt,
        price_completion=price_completion,
        gpu_memory_utilization=gpu_memory_utilization,
        tensor_parallel_size=tensor_parallel_size,
        vllm_args=parse_vllm_args(vllm_args),
    )
    debug = click.get_current_context().find_root().params.get("debug", False)
    run_server(prepare(options), notify=lambda line: click.echo(line, err=True), debug=debug)


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
@selection_options
@DEVICE_OPTION
@JSON_OPTION
@handle_errors
def eval_command(references, store, ks, answers, out, report, retrieval, where, source_prefix, max_per_section, max_per_page, device, as_json):
    """Measure retrieval (and answer) quality against REFERENCES (JSONL with question and source)."""
    from ragbatch.evaluating import EvalOptions, evaluate
    from ragbatch.progress import make_progress

    with make_progress(not as_json) as progress:
        options = EvalOptions(
            references=references,
            store=store,
            ks=ks,
            answers=answers,
            out=out,
            retrieval=retrieval,
            device=device,
            report=report,
            chunk_filter=chunk_filter(where, source_prefix),
            diversity=(max_per_section, max_per_page),
        )
        summary, _ = evaluate(options, progress)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        from ragbatch.render import eval_summary

        eval_summary(summary, ks)


if __name__ == "__main__":
    main()
