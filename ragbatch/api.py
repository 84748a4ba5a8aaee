"""The Python API: what the commands do, for notebooks and scripts.

    import ragbatch
    ragbatch.index(["around.txt"], store="stores/books")
    hits = ragbatch.search("Who is Passepartout?", store="stores/books", k=3)
    report = ragbatch.ask(["Who is Passepartout?"], store="stores/books", out="answers.parquet")
    table = report.table()                      # a pyarrow Table, one row per question

Keyword arguments are the commands' options (`--chunk-size` is `chunk_size`); results
are the reports the commands print (`.as_json()` is their `--json`). Errors are
`ragbatch.errors.RagbatchError`s with one-line messages. Nothing is printed: pass
`progress` (a rich Progress) or `notify` (a function of one line) to see the work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ragbatch.asking.pipeline import AskOptions, AskReport
from ragbatch.asking.pipeline import ask as run_ask
from ragbatch.asking.questions import QuestionSource
from ragbatch.errors import RagbatchError
from ragbatch.evaluation.pipeline import EvalOptions
from ragbatch.evaluation.pipeline import evaluate as run_evaluate
from ragbatch.generation.settings import GenerationOptions
from ragbatch.ingest.pipeline import IndexOptions, IndexReport
from ragbatch.ingest.pipeline import index as run_index
from ragbatch.judging.pipeline import JudgeOptions, JudgeReport
from ragbatch.judging.pipeline import judge as run_judge
from ragbatch.judging.rubrics import ASPECTS
from ragbatch.locations import default_store
from ragbatch.progress import make_progress
from ragbatch.retrieval.filters import ChunkFilter
from ragbatch.retrieval.retriever import Retriever
from ragbatch.retrieval.selection import DEFAULT_K, DEFAULT_MODE, MAX_PER_SECTION, Selection
from ragbatch.store.check import StoreHealth, check_store
from ragbatch.store.locks import Waiting, say_on_stderr, store_lock
from ragbatch.store.manifest import require_manifest, require_store_path
from ragbatch.store.publish import Published
from ragbatch.store.publish import publish as publish_store
from ragbatch.store.published import is_published, resolve_store
from ragbatch.store.reader import StoreReader
from ragbatch.store.reader import open_store as open_store_reader
from ragbatch.store.records import Hit
from ragbatch.synthesis.pipeline import SynthOptions, SynthReport
from ragbatch.synthesis.pipeline import synth as run_synth

PathLike = str | Path
Notify = Callable[[str], None]


def _quiet(line: str) -> None:
    """Where the caller passed no `notify`: nothing is printed but a wait for a store."""
    if isinstance(line, Waiting):
        say_on_stderr(line)


def _running(pipeline, options, progress, notify: Notify | None):
    """`pipeline(options, progress, notify)` with the caller's progress (else a silent one)
    and notify (else `_quiet`)."""
    if progress is not None:
        return pipeline(options, progress, notify or _quiet)
    with make_progress(False) as quiet:
        return pipeline(options, quiet, notify or _quiet)


def _store(store: PathLike | None) -> Path:
    return Path(store) if store is not None else default_store()


def selection_of(
    k: int = DEFAULT_K,
    retrieval: str = DEFAULT_MODE,
    where: Iterable[str] | dict = (),
    source_prefix: str | None = None,
    max_per_section: int = MAX_PER_SECTION,
    max_per_page: int = 0,
    rerank: str | None = None,
) -> Selection:
    """A Selection from the options' values; `where` as KEY=VALUE strings or a dict."""
    pairs = [f"{key}={value}" for key, value in where.items()] if isinstance(where, dict) else list(where)
    return Selection(retrieval, k, ChunkFilter.parse(pairs, source_prefix), max_per_section, max_per_page, rerank)


def index(
    paths: PathLike | Iterable[PathLike],
    store: PathLike | None = None,
    *,
    publish_root: PathLike | None = None,
    name: str | None = None,
    force: bool = False,
    keep: int = 3,
    embedder: str | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    batch_size: int = 32,
    device: str = "auto",
    executor: str = "auto",
    chroma: str | None = None,
    progress=None,
) -> IndexReport:
    """Index files, directories or globs into `store` (created if absent); only what
    changed is embedded. Returns the IndexReport `ragbatch index` prints."""
    options = IndexOptions(
        paths=[str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths],
        store=_store(store),
        publish_root=Path(publish_root) if publish_root else None,
        publish_name=name,
        force=force,
        embedder=embedder,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        batch_size=batch_size,
        device=device,
        executor=executor,
        keep=keep,
        chroma=chroma,
    )
    if progress is not None:
        return run_index(options, progress)
    with make_progress(False) as quiet:
        return run_index(options, quiet)


def publish(store: PathLike | None, root: PathLike, keep: int = 3, name: str | None = None, force: bool = False) -> Published:
    """Publish a verified, versioned copy of `store` under `root` as `name` (default: the
    store folder's name). Another store's name is refused unless `force`; an unchanged
    store publishes nothing (`unchanged`)."""
    store = _store(store)
    require_manifest(store)
    with store_lock(store):  # not while an index run is writing it
        return publish_store(store, root, keep=keep, name=name, force=force)


def check(store: PathLike | None = None) -> StoreHealth:
    """Verify a store (a published one through its verified local copy); one
    StoreError line names any damage and its repair."""
    store = _store(store)
    require_store_path(store)
    if is_published(store):  # checksums verified into the local cache, then that copy checked
        health = check_store(resolve_store(store), lexical=True)
    else:
        with store_lock(store):  # not while an index run is writing it
            health = check_store(store, lexical=True)
    health.store = str(store)
    return health


def open_store(store: PathLike | None = None, notify: Notify | None = None, wait: float | None = None) -> StoreReader:
    """A store open for reading (`manifest`, `vectors`, `lexical`); close it when done, or
    use it in a `with` block. While an index run writes a local store it waits (saying so
    to `notify`, else on stderr), at most `wait` seconds when given."""
    return open_store_reader(_store(store), notify=notify, wait=wait)


def search(
    question: str,
    store: PathLike | None = None,
    *,
    k: int = DEFAULT_K,
    retrieval: str = DEFAULT_MODE,
    where: Iterable[str] | dict = (),
    source_prefix: str | None = None,
    max_per_section: int = MAX_PER_SECTION,
    max_per_page: int = 0,
    rerank: str | None = None,
    device: str = "auto",
    selection: Selection | None = None,
    notify: Notify | None = None,
    wait: float | None = None,
) -> list[Hit]:
    """The passages ranked for one question: Hits with `text`, `source`, `cited`, `score`.
    `selection` replaces k, retrieval, where, source_prefix and the limits when given;
    `notify` hears of a wait for an index run (at most `wait` seconds when given), or of a
    filter that matches nothing."""
    if not question.strip():
        raise RagbatchError("the question is blank: give words to search for")
    selection = selection or selection_of(k, retrieval, where, source_prefix, max_per_section, max_per_page, rerank)
    retriever = Retriever.open(_store(store), device=device, modes=(selection.mode,), notify=notify, wait=wait)
    try:
        return retriever.search([question], selection)[0]
    finally:
        retriever.close()


class AskResult(AskReport):
    """The AskReport `ragbatch ask` prints, and the answers it wrote."""

    def table(self):
        """The answers file as a pyarrow Table, one row per question."""
        import pyarrow.parquet as pq

        return pq.read_table(self.out)


def ask(
    questions: QuestionSource,
    store: PathLike | None = None,
    *,
    out: PathLike | None = None,
    k: int = DEFAULT_K,
    retrieval: str = DEFAULT_MODE,
    where: Iterable[str] | dict = (),
    source_prefix: str | None = None,
    max_per_section: int = MAX_PER_SECTION,
    max_per_page: int = 0,
    rerank: str | None = None,
    llm: str | None = None,
    max_tokens: int = 128,
    temperature: float = 0.0,
    seed: int | None = None,
    system_prompt: str | None = None,
    prompt_file: PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    count_tokens: str | None = None,
    prices: PathLike | None = None,
    price_prompt: float | None = None,
    price_completion: float | None = None,
    max_model_len: int | None = None,
    gpu_memory_utilization: float | None = None,
    tensor_parallel_size: int | None = None,
    vllm_args: dict | None = None,
    part_rows: int = 64,
    device: str = "auto",
    wait: float | None = None,
    executor: str = "auto",
    replicas: int | None = None,
    selection: Selection | None = None,
    generation: GenerationOptions | None = None,
    progress=None,
    notify: Notify | None = None,
) -> AskResult:
    """Answer questions (a file's path, "-" for stdin, or a list of strings or dicts with
    `question` and optional `id`) into a Parquet file, resuming where it exists. A list
    needs `out`. `selection` and `generation` replace their options when given."""
    selection = selection or selection_of(k, retrieval, where, source_prefix, max_per_section, max_per_page, rerank)
    generation = generation or GenerationOptions(
        llm=llm,
        device=device,
        seed=seed,
        system_prompt=system_prompt,
        prompt_file=Path(prompt_file) if prompt_file else None,
        count_tokens=count_tokens,
        prices=Path(prices) if prices else None,
        price_prompt=price_prompt,
        price_completion=price_completion,
        max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization,
        tensor_parallel_size=tensor_parallel_size,
        vllm_args=dict(vllm_args or {}),
    )
    options = AskOptions(
        questions=questions,
        store=_store(store),
        out=Path(out) if out else None,
        selection=selection,
        generation=generation,
        max_tokens=max_tokens,
        temperature=temperature,
        resume=resume,
        overwrite=overwrite,
        part_rows=part_rows,
        wait=wait,
        executor=executor,
        replicas=replicas,
    )
    return AskResult(**vars(_running(run_ask, options, progress, notify)))


class JudgeResult(JudgeReport):
    """The JudgeReport `ragbatch judge` prints, and the verdicts it wrote."""

    def table(self):
        """The verdicts file as a pyarrow Table, one row per judged answer."""
        import pyarrow.parquet as pq

        return pq.read_table(self.out)


def judge(
    file: PathLike,
    *,
    judge: str | None = None,
    out: PathLike | None = None,
    store: PathLike | None = None,
    aspects: Iterable[str] = ASPECTS,
    by: str | None = None,
    report: PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    retries: int = 2,
    part_rows: int = 64,
    max_model_len: int | None = None,
    vllm_args: dict | None = None,
    seed: int | None = None,
    device: str = "auto",
    wait: float | None = None,
    executor: str = "auto",
    replicas: int | None = None,
    progress=None,
    notify: Notify | None = None,
) -> JudgeResult:
    """Rate the answers of `file` (ask's Parquet, or JSONL/CSV/Parquet with question and
    answer) with the `judge` LLM: quality against a reference, relevance, groundedness in
    the passages. Resumes like `ask`; `.summary` holds the means, overall and per group."""
    options = JudgeOptions(
        file=str(file),
        out=Path(out) if out else None,
        store=Path(store) if store else None,
        judge=GenerationOptions(llm=judge, device=device, seed=seed, max_model_len=max_model_len, vllm_args=dict(vllm_args or {})),
        aspects=tuple(aspects),
        by=by,
        report=Path(report) if report else None,
        resume=resume,
        overwrite=overwrite,
        retries=retries,
        part_rows=part_rows,
        wait=wait,
        executor=executor,
        replicas=replicas,
    )
    return JudgeResult(**vars(_running(run_judge, options, progress, notify)))


def synth(
    store: PathLike | None = None,
    *,
    n: int = 100,
    out: PathLike,
    llm: str | None = None,
    seed: int | None = None,
    overwrite: bool = False,
    max_model_len: int | None = None,
    vllm_args: dict | None = None,
    device: str = "auto",
    wait: float | None = None,
    executor: str = "auto",
    replicas: int | None = None,
    progress=None,
    notify: Notify | None = None,
) -> SynthReport:
    """Write `n` synthetic questions with reference answers, from chunks spread over the
    store's pages, to `out` (JSONL: id, question, answer, source, chunk_id)."""
    options = SynthOptions(
        store=_store(store),
        n=n,
        out=Path(out),
        generation=GenerationOptions(llm=llm, device=device, seed=seed, max_model_len=max_model_len, vllm_args=dict(vllm_args or {})),
        overwrite=overwrite,
        wait=wait,
        executor=executor,
        replicas=replicas,
    )
    return _running(run_synth, options, progress, notify)


@dataclass
class EvalResult:
    summary: dict  # what `ragbatch eval --json` prints
    rows: list[dict]  # one per question (and mode), as `--out` writes them


def evaluate(
    references: str,
    store: PathLike | None = None,
    *,
    ks: Iterable[int] = (1, 3, 5, 10),
    answers: PathLike | None = None,
    out: PathLike | None = None,
    report: PathLike | None = None,
    retrieval: str = DEFAULT_MODE,
    where: Iterable[str] | dict = (),
    source_prefix: str | None = None,
    max_per_section: int = MAX_PER_SECTION,
    max_per_page: int = 0,
    rerank: str | None = None,
    device: str = "auto",
    selection: Selection | None = None,
    wait: float | None = None,
    progress=None,
    notify: Notify | None = None,
) -> EvalResult:
    """Retrieval (and, with `answers`, answer) quality against a references file.
    `retrieval` may name several modes, "dense,bm25,hybrid", scored from one pass. Bad
    reference lines are skipped, listed in `summary["errors"]` and given to `notify`."""
    selection = selection or selection_of(DEFAULT_K, DEFAULT_MODE, where, source_prefix, max_per_section, max_per_page, rerank)
    options = EvalOptions(
        references=references,
        store=_store(store),
        ks=sorted(set(ks)),
        answers=Path(answers) if answers else None,
        out=Path(out) if out else None,
        retrieval=retrieval,
        device=device,
        report=Path(report) if report else None,
        selection=selection,
        wait=wait,
    )
    return EvalResult(*_running(run_evaluate, options, progress, notify))
