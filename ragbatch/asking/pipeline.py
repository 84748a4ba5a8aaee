"""`ragbatch ask`: questions -> batched retrieval -> prompts -> vLLM -> Parquet rows.

Everything that can fail on the user's input (questions file, prices, encoding,
output folder, model availability) is checked before a model is loaded, so a bad
invocation fails in a second, not after minutes of embedding.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from ragbatch.asking import ray_answers
from ragbatch.asking.answer_file import AnswerWriter, answer_schema, carry_values, refuse_other_settings
from ragbatch.asking.answering import answer_rows
from ragbatch.asking.questions import QuestionSource, read_questions
from ragbatch.errors import Interrupted, Note, ParameterError, RagbatchError
from ragbatch.generation import settings
from ragbatch.generation.batch import Generator
from ragbatch.generation.ray_generator import choose_executor, prepare_for_cluster
from ragbatch.generation.settings import GenerationInputs, GenerationOptions
from ragbatch.generation.vllm_engine import requested_engine
from ragbatch.locations import default_answers
from ragbatch.models.weights import DEFAULT_LLM
from ragbatch.progress import working
from ragbatch.retrieval.retriever import Retriever
from ragbatch.retrieval.selection import Selection
from ragbatch.store.manifest import require_manifest

# Finished rows go to a Parquet part at least every PART_ROWS rows or FLUSH_SECONDS.
PART_ROWS = 64
FLUSH_SECONDS = 10.0
# The run settings (answer_settings) that shape answers: a resumed file made with other
# values of these is refused, not mixed. `store` and `device` are recorded, not compared.
SHAPING = (
    "llm",
    "embedder",
    "retrieval",
    "k",
    "where",
    "source_prefix",
    "max_per_section",
    "max_per_page",
    "rerank",
    "max_tokens",
    "temperature",
    "seed",
    "system_prompt",
    "max_model_len",
    "engine",
    "count_tokens",
)
# How a refusal names each setting: the parameter it comes from (None: no parameter sets it).
SETTING_PARAMETER = {"embedder": None, "engine": "vllm_arg"}


@dataclass
class AskOptions:
    questions: QuestionSource  # a file (JSONL, CSV, Parquet, text), "-" for stdin, or a list of questions
    store: Path
    out: Path | None = None  # None: outputs/<stem>-answers.parquet, resumed when it exists
    selection: Selection = field(default_factory=Selection)
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    max_tokens: int = 128
    temperature: float = 0.0
    resume: bool = False
    overwrite: bool = False
    part_rows: int = PART_ROWS
    wait: float | None = None  # seconds to wait for an index run writing the store (None: until it ends)
    executor: str = "auto"  # auto, local or ray (generation.ray_generator.choose_executor)
    replicas: int | None = None  # vLLM engines on Ray [default: one per GPU, or one on CPUs]


@dataclass
class AskReport:
    questions: int = 0
    answered: int = 0
    failed: int = 0
    skipped: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    generation_seconds: float = 0.0
    out: str = ""
    store: str = ""
    llm: str = ""
    embedder: str = ""
    retrieval: str = ""
    rows: int = 0
    executor: str = ""
    dropped: int = 0  # rows of questions no longer in the input, dropped from the file
    errors: list[str] = field(default_factory=list)  # input lines skipped, "file:line: why"

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.generation_seconds if self.generation_seconds else 0.0

    def as_json(self) -> dict:
        return {
            "questions": self.questions,
            "answered": self.answered,
            "failed": self.failed,
            "skipped": self.skipped,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "seconds": round(self.seconds, 3),
            "tokens_per_second": round(self.tokens_per_second, 1),
            "out": self.out,
            "store": self.store,
            "llm": self.llm,
            "embedder": self.embedder,
            "retrieval": self.retrieval,
            "executor": self.executor,
            "dropped": self.dropped,
            "errors": self.errors,
        }


def answers_file(options: AskOptions, questions: list[dict]) -> tuple[Path, str]:
    """OUT and the AnswerWriter mode. The default OUT resumes, so rerunning the same
    command (from cron, say) answers only new questions; an explicit OUT is refused
    when it exists, unless resumed; overwriting starts over either way."""
    if options.out is None:
        if not isinstance(options.questions, str):
            raise ParameterError("out", None, "name the answers file when the questions are not a file")
        out = default_answers(options.questions, [q["id"] for q in questions])
        out.parent.mkdir(parents=True, exist_ok=True)
        return out, "overwrite" if options.overwrite else "resume"
    return Path(options.out), "overwrite" if options.overwrite else "resume" if options.resume else "new"


def ask(options: AskOptions, progress, notify=lambda line: None) -> AskReport:
    """Answer every question not answered yet; `notify` gets one line when some already are."""
    started = time.perf_counter()
    if options.resume and options.overwrite:
        raise ParameterError("resume", None, "give it or {overwrite}, not both", refers=("overwrite",))
    bad_lines: list[str] = []

    def skip_line(error) -> None:
        bad_lines.append(str(error))
        notify(f"error: {error} (skipped)")

    questions = read_questions(options.questions, on_problem=skip_line)
    options = replace(options, generation=settings.with_default_llm(options.generation, notify))
    inputs = settings.read_inputs(options.generation)
    embedder = require_manifest(options.store).embedder.name
    schema = answer_schema(questions, options.generation.count_tokens)
    out, mode = answers_file(options, questions)
    selection = options.selection
    report = AskReport(out=str(out), store=str(options.store), retrieval=selection.mode, questions=len(questions), errors=bad_lines)
    report.llm, report.embedder = options.generation.llm or DEFAULT_LLM, embedder
    run = answer_settings(options, inputs, embedder)
    writer = AnswerWriter(out, schema, mode)
    try:
        refuse_other_settings(writer, run, SHAPING, SETTING_PARAMETER)
        done = writer.done_ids() if writer.mode == "resume" else set()
        todo = [q for q in questions if q["id"] not in done]
        report.skipped = len(questions) - len(todo)
        report.executor = choose_executor(options.executor, len(todo))
        if report.skipped:
            rest = f"answering the other {len(todo)}" if todo else "nothing to do ({overwrite} starts over)"
            notify(Note(f"{writer.out}: {report.skipped} of {len(questions)} questions already answered; {rest}", refers=("overwrite",)))
        if todo:
            try:
                run["device"] = _answer(options, inputs, todo, writer, report, progress, notify)
            except KeyboardInterrupt:
                kept, written = report.skipped + report.answered + report.failed, report.answered + report.failed
                raise Interrupted(
                    f"interrupted: {kept} of {len(questions)} answers are kept ({written} from this run, in {writer.parts}); "
                    "run the same command again to answer the rest"
                ) from None
        report.rows, report.dropped = writer.finish(order=[q["id"] for q in questions], run=run if todo else None)
        if report.dropped:
            notify(
                f"{writer.out}: dropped {report.dropped} answers to questions no longer in {options.questions if isinstance(options.questions, str) else 'the input'}"
            )
    finally:
        writer.close()
    report.seconds = time.perf_counter() - started
    return report


def answer_settings(options: AskOptions, inputs: GenerationInputs, embedder: str) -> dict:
    """The settings this run answers with, as the answer file records them (RUN_METADATA)."""
    selection, generation = options.selection, options.generation
    return {
        "llm": generation.llm or DEFAULT_LLM,
        "embedder": embedder,
        "store": str(Path(options.store).absolute()),
        "retrieval": selection.mode,
        "k": selection.k,
        "where": [f"{key}={value}" for key, value in selection.chunk_filter.where],
        "source_prefix": selection.chunk_filter.source_prefix,
        "max_per_section": selection.max_per_section,
        "max_per_page": selection.max_per_page,
        "rerank": selection.rerank,
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
        "seed": generation.seed,
        "system_prompt": inputs.system_prompt,
        "max_model_len": generation.max_model_len,
        "engine": requested_engine(generation.gpu_memory_utilization, generation.tensor_parallel_size, generation.vllm_args),
        "count_tokens": generation.count_tokens,
    }


def _answer(options: AskOptions, inputs: GenerationInputs, todo: list[dict], writer: AnswerWriter, report: AskReport, progress, notify) -> str:
    """Retrieve for every question, then generate; returns the device it ran on."""
    questions = [(q, carry_values(q, writer.schema, options.generation.count_tokens)) for q in todo]
    if report.executor == "ray":
        with working(progress, f"Preparing {report.llm}"):
            setup = prepare_for_cluster(options.generation, inputs)
        rows = ray_answers.stream_answers(
            str(options.store),
            options.selection,
            setup,
            questions,
            report.embedder,
            max_tokens=options.max_tokens,
            temperature=options.temperature,
            replicas=options.replicas,
            wait=options.wait,
            part_rows=options.part_rows,
            progress=progress,
        )
        _write_rows(options, rows, writer, report, progress, len(todo))
        return setup.device
    with working(progress, f"Preparing {report.llm}"):
        setup = settings.prepare(options.generation, inputs)
    selection = options.selection
    with working(progress, f"Loading {report.embedder}"):
        retriever = Retriever.open(options.store, device=setup.device, modes=(selection.mode,), notify=notify, wait=options.wait)
    try:
        report.embedder = retriever.spec.name
        task = progress.add_task("Retrieving", total=len(todo))
        hits = retriever.search([q["question"] for q in todo], selection)
        progress.advance(task, len(todo))
    finally:
        retriever.close()  # frees the embedder (and its GPU memory) before vLLM sizes itself
    with working(progress, f"Starting vLLM with {setup.llm_name}"):
        generator = Generator.for_setup(setup)
    try:
        rows = answer_rows(setup, generator, questions, hits, report.embedder, options.max_tokens, options.temperature)
        _write_rows(options, rows, writer, report, progress, len(todo))
    finally:
        generator.close()
    return setup.device


def _write_rows(options: AskOptions, rows: Iterator[dict], writer: AnswerWriter, report: AskReport, progress, total: int) -> None:
    """Write finished rows as Parquet parts while the rest run (at least every
    part_rows rows or FLUSH_SECONDS), counting them into the report."""
    pending: list[dict] = []
    task = progress.add_task("Generating", total=total)
    flushed = started = time.perf_counter()
    try:
        for row in rows:
            count_row(report, row)
            pending.append(row)
            progress.advance(task)
            if len(pending) >= options.part_rows or time.perf_counter() - flushed > FLUSH_SECONDS:
                writer.write(pending)
                pending, flushed = [], time.perf_counter()
        report.generation_seconds = time.perf_counter() - started
    except (KeyboardInterrupt, RagbatchError):
        writer.write(pending)  # what finished before is kept for the rerun
        raise
    finally:
        # Stops the engine's unfinished requests now, while the engine is up (not when the
        # traceback's frames are collected at exit).
        close = getattr(rows, "close", None)
        if close is not None:
            close()
    writer.write(pending)


def count_row(report: AskReport, row: dict) -> None:
    """Add a finished row to the run's totals."""
    if row["error"] is not None:
        report.failed += 1
        return
    report.answered += 1
    report.prompt_tokens += row["prompt_tokens"]
    report.completion_tokens += row["completion_tokens"]
    report.cost_usd += row["cost_usd"]
