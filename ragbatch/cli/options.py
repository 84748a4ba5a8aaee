"""Option groups shared by commands, each turned into the one type the library takes:
`selection_options` -> a retrieval Selection (search, ask; filters and limits on eval),
`generation_options` -> GenerationOptions (ask, serve). Options of one command only stay
with the command."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from ragbatch.generation.ray_generator import EXECUTORS
from ragbatch.generation.settings import GenerationOptions
from ragbatch.generation.vllm_engine import parse_vllm_args
from ragbatch.locations import DEFAULT_STORE, STORE_ENV
from ragbatch.models.devices import DEVICES
from ragbatch.models.weights import DEFAULT_LLM
from ragbatch.retrieval.filters import ChunkFilter
from ragbatch.retrieval.selection import DEFAULT_K, DEFAULT_MODE, MAX_PER_SECTION, MODES, RERANK_DEPTH, Selection

READ_STORE_HELP = "Store to retrieve from (local, or a published link)."


def store_option(help: str):
    """--store, defaulting to $RAGBATCH_STORE, else stores/default under the current directory."""
    return click.option(
        "--store",
        envvar=STORE_ENV,
        show_envvar=True,
        default=DEFAULT_STORE,
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help=help,
    )


device_option = click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
wait_option = click.option(
    "--wait",
    type=click.FloatRange(0),
    metavar="SECONDS",
    help="While an index run writes a local store, wait at most this long, then fail [default: until the run ends].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout instead of tables.")


def engine_executor_options(command):
    """--executor and --replicas: where vLLM runs (ask, judge, synth)."""
    command = click.option("--replicas", type=click.IntRange(1), help="vLLM engines on Ray [default: one per GPU (per tensor-parallel group); one on CPUs].")(
        command
    )
    return click.option(
        "--executor", type=click.Choice(EXECUTORS), default="auto", show_default=True, help="auto: Ray for RAY_ADDRESS or 100,000+ requests, else in-process."
    )(command)


def _apply(command, options: list):
    for option in reversed(options):
        command = option(command)
    return command


def selection_options(mode_and_k: bool = True):
    """Which chunks may be retrieved, the same on search, ask and eval: filters and
    diversity, plus (search, ask) the mode and k. The command gets them as `selection`."""
    options = [
        click.option("--where", multiple=True, metavar="KEY=VALUE", help="Only chunks whose stored field KEY equals VALUE (repeatable; all must match)."),
        click.option("--source-prefix", metavar="PATH", help="Only chunks whose source starts with PATH, e.g. data/."),
        click.option(
            "--max-per-section",
            default=MAX_PER_SECTION,
            show_default=True,
            type=click.IntRange(0),
            help="At most N chunks of one #section among the k (0: no limit).",
        ),
        click.option(
            "--max-per-page", default=0, show_default=True, type=click.IntRange(0), help="At most N chunks of one page or file among the k (0: no limit)."
        ),
        click.option(
            "--rerank",
            metavar="MODEL",
            help=f"Reorder the top {RERANK_DEPTH} candidates with this cross-encoder (packaged name, local folder or Hugging Face id, e.g. BAAI/bge-reranker-base), then keep k.",
        ),
    ]
    if mode_and_k:
        options = [
            click.option("--k", default=DEFAULT_K, show_default=True, type=click.IntRange(1), help="Passages retrieved per question."),
            click.option(
                "--retrieval", type=click.Choice(MODES), default=DEFAULT_MODE, show_default=True, help="Vectors, BM25 keywords, or both fused by rank."
            ),
            *options,
        ]

    def decorator(command):
        @functools.wraps(command)
        def wrapper(*args, where, source_prefix, max_per_section, max_per_page, rerank, **kwargs):
            mode, k = (kwargs.pop("retrieval"), kwargs.pop("k")) if mode_and_k else (DEFAULT_MODE, DEFAULT_K)
            chunk_filter = ChunkFilter.parse(where, source_prefix)
            return command(*args, selection=Selection(mode, k, chunk_filter, max_per_section, max_per_page, rerank), **kwargs)

        return _apply(wrapper, options)

    return decorator


def generation_options(command):
    """The generator and its engine, the same on ask and serve; the command gets them as
    `generation` (GenerationOptions)."""
    options = [
        click.option("--llm", help=f"Generator: packaged name, local folder or Hugging Face id (from the HF cache, else downloaded) [default: {DEFAULT_LLM}]."),
        click.option("--seed", type=int, help="A per-request sampling seed [default: none; at temperature 0 answers repeat without one]."),
        click.option("--system-prompt", help="System prompt text [default: answer from the numbered passages or say I don't know]."),
        click.option("--prompt-file", type=click.Path(dir_okay=False, path_type=Path), help="Read the system prompt from a file."),
        click.option("--count-tokens", metavar="ENCODING", help="Also count prompt and answer tokens in a tiktoken encoding (cl100k_base, o200k_base)."),
        click.option("--prices", type=click.Path(dir_okay=False, path_type=Path), help="JSON or TOML table of USD per million tokens."),
        click.option("--price-prompt", type=click.FloatRange(0), help="USD per million prompt tokens (overrides --prices)."),
        click.option("--price-completion", type=click.FloatRange(0), help="USD per million completion tokens (overrides --prices)."),
        click.option("--max-model-len", type=click.IntRange(64), help="Context window to run the model with [default: the model's]."),
        click.option(
            "--gpu-memory-utilization", type=click.FloatRange(0, 1, min_open=True), help="Share of the GPU's memory vLLM may take [default: vLLM's, 0.92]."
        ),
        click.option("--tensor-parallel-size", type=click.IntRange(1), help="GPUs to split the model across [default: 1]."),
        click.option(
            "--vllm-arg",
            "vllm_args",
            multiple=True,
            metavar="KEY=VALUE",
            help="Any other vLLM engine argument, repeatable: quantization=fp8, enable_prefix_caching=true, max_num_seqs=64.",
        ),
        device_option,
    ]
    names = ("llm", "seed", "system_prompt", "prompt_file", "count_tokens", "prices", "price_prompt", "price_completion", "max_model_len") + (
        "gpu_memory_utilization",
        "tensor_parallel_size",
        "device",
    )

    @functools.wraps(command)
    def wrapper(*args, vllm_args, **kwargs):
        if kwargs.get("system_prompt") and kwargs.get("prompt_file"):
            raise click.UsageError("give --system-prompt or --prompt-file, not both")
        given = {name: kwargs.pop(name) for name in names}
        return command(*args, generation=GenerationOptions(**given, vllm_args=parse_vllm_args(vllm_args)), **kwargs)

    return _apply(wrapper, options)


def parse_ks(ctx, param, value: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in value.split(",") if k.strip()})
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected numbers separated by commas, e.g. 1,3,5,10") from None
    if not ks or ks[0] < 1:
        raise click.BadParameter(f"{value!r}: expected positive numbers")
    return ks
