"""`ragbatch judge`: rate answers with an LLM judge in one batched, resumable vLLM run.

Rows in (an `ask` answer file, or any file with `question` and `answer`), one verdict
row out per answer: quality against the reference, relevance to the question,
groundedness of each sentence in the passages. Every request of every row goes to the
engine at once; a verdict that does not parse is asked again (another seed, some
temperature) up to `retries` times, then kept as a row with `error`. Verdict rows go to
Parquet parts as rows finish, and rerunning the same command judges only what is missing,
as `ask` does (asking.answer_file).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ragbatch.asking.answer_file import RUN_METADATA, AnswerWriter, answer_schema, refuse_other_settings
from ragbatch.errors import Interrupted, Note, ParameterError
from ragbatch.generation import settings
from ragbatch.generation.batch import Generator
from ragbatch.generation.prompting import PromptTooLong
from ragbatch.generation.ray_generator import RayGenerator, choose_executor, start_engine
from ragbatch.generation.settings import GenerationOptions
from ragbatch.generation.vllm_engine import requested_engine
from ragbatch.judging import rubrics
from ragbatch.judging.inputs import Judged, attach, read_rows, store_of
from ragbatch.judging.prompts import Request, requests_for
from ragbatch.judging.report import write_report
from ragbatch.judging.summary import JudgeSummary, summarize
from ragbatch.judging.verdicts import VERDICT_COLUMNS, Unparsed, fill, verdict_row
from ragbatch.locations import OUTPUTS
from ragbatch.models.weights import DEFAULT_LLM
from ragbatch.progress import working
from ragbatch.store.reader import open_store

PART_ROWS = 64
FLUSH_SECONDS = 10.0
RETRY_TEMPERATURE = 0.7
LOGPROBS = 5  # alternatives kept at the score's position (expected scores)

# The settings that shape verdicts: a resumed file made with others is refused.
SHAPING = ("judge", "aspects", "rubric", "max_model_len", "engine", "seed")
# How a refusal names each setting: the parameter it comes from (None: no parameter sets it).
SETTING_PARAMETER = {"rubric": None, "engine": "vllm_arg"}


@dataclass
class JudgeOptions:
    file: str  # ask's Parquet, or JSONL/CSV/Parquet with question and answer
    out: Path | None = None  # None: outputs/<file name>-judged.parquet, resumed when it exists
    store: Path | None = None  # where chunk_ids' passages are [default: the ask run's store]
    judge: GenerationOptions = field(default_factory=GenerationOptions)  # judge.llm: the judge model
    aspects: tuple[str, ...] = rubrics.ASPECTS
    by: str | None = None  # group the summary by this column [default: system, else llm]
    report: Path | None = None  # a self-contained HTML page (see report.py)
    resume: bool = False
    overwrite: bool = False
    retries: int = 2
    part_rows: int = PART_ROWS
    wait: float | None = None  # for an index run writing the store (None: until it ends)
    executor: str = "auto"  # where the judge runs: generation.ray_generator.choose_executor
    replicas: int | None = None  # judge engines on Ray [default: one per GPU, or one on CPUs]


@dataclass
class JudgeReport:
    rows: int = 0  # rows with an answer in the input
    judged: int = 0  # judged by this run
    failed: int = 0  # rows this run could not judge (their error is in the file)
    skipped: int = 0  # judged by an earlier run
    unanswered: int = 0  # input rows with no answer (a failed ask row): not judged
    retried: int = 0  # verdicts asked again because they did not parse
    unparsed: int = 0  # verdicts that still did not parse
    dropped: int = 0  # verdicts of answers no longer in the input, dropped from the file
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    out: str = ""
    judge: str = ""
    summary: JudgeSummary = field(default_factory=JudgeSummary)
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "rows": self.rows,
            "judged": self.judged,
            "failed": self.failed,
            "skipped": self.skipped,
            "unanswered": self.unanswered,
            "retried": self.retried,
            "unparsed": self.unparsed,
            "dropped": self.dropped,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": round(self.seconds, 3),
            "out": self.out,
            "judge": self.judge,
            "summary": self.summary.as_json(),
            "errors": self.errors,
        }


def default_verdicts(file: str) -> Path:
    """outputs/<file name, less .parquet>-judged.parquet: q.jsonl-answers.parquet -> q.jsonl-answers-judged.parquet."""
    name = "stdin" if file == "-" else Path(file).name.removesuffix(".parquet")
    return OUTPUTS / f"{name}-judged.parquet"


def judge(options: JudgeOptions, progress, notify=lambda line: None) -> JudgeReport:
    started = time.perf_counter()
    if options.resume and options.overwrite:
        raise ParameterError("resume", None, "give it or {overwrite}, not both", refers=("overwrite",))
    unknown = [a for a in options.aspects if a not in rubrics.ASPECTS]
    if unknown or not options.aspects:
        raise ParameterError("aspects", ",".join(options.aspects), f"expected some of {', '.join(rubrics.ASPECTS)}")
    options = replace(options, judge=settings.with_default_llm(options.judge, notify))
    report = JudgeReport(judge=options.judge.llm or DEFAULT_LLM)

    def skip_line(error) -> None:
        report.errors.append(str(error))
        notify(f"error: {error} (skipped)")

    if options.report and not Path(options.report).parent.is_dir():
        raise ParameterError("report", options.report, f"the folder {Path(options.report).parent} does not exist")
    rows, report.unanswered = read_rows(options.file, on_problem=skip_line)
    report.rows = len(rows)
    if report.unanswered:
        notify(f"{options.file}: {report.unanswered} rows have no answer (failed or missing); they are not judged")
    inputs = settings.read_inputs(options.judge)
    out, mode = _verdicts_file(options)
    report.out = str(out)
    schema = answer_schema(rows, None, VERDICT_COLUMNS, passed=frozenset({"answer"}))
    run = _run_settings(options)
    writer = AnswerWriter(out, schema, mode, command="judge")
    try:
        refuse_other_settings(writer, run, SHAPING, SETTING_PARAMETER, made="verdicts")
        done = writer.done_ids() if writer.mode == "resume" else set()
        todo = [row for row in rows if row["id"] not in done]
        report.skipped = len(rows) - len(todo)
        if report.skipped:
            rest = f"judging the other {len(todo)}" if todo else "nothing to do ({overwrite} starts over)"
            notify(Note(f"{writer.out}: {report.skipped} of {len(rows)} answers already judged; {rest}", refers=("overwrite",)))
        if todo:
            try:
                _judge_rows(options, inputs, todo, writer, report, progress, notify)
            except KeyboardInterrupt:
                raise Interrupted(
                    f"interrupted: {report.skipped + report.judged + report.failed} of {len(rows)} verdicts are kept; run the same command again to judge the rest"
                ) from None
        _, report.dropped = writer.finish(order=[row["id"] for row in rows], run=run if todo else None)
        if report.dropped:
            notify(f"{writer.out}: dropped {report.dropped} verdicts of answers no longer in {options.file}")
    finally:
        writer.close()
    report.summary = summarize(out, options.by)
    if options.report:
        import pyarrow.parquet as pq

        write_report(Path(options.report), report.summary, pq.read_table(out).to_pylist(), title=Path(options.file).name)
    report.seconds = time.perf_counter() - started
    return report


def _verdicts_file(options: JudgeOptions) -> tuple[Path, str]:
    """Like ask's answers file: the default resumes, an explicit one must be new unless resumed."""
    if options.out is None:
        out = default_verdicts(options.file)
        out.parent.mkdir(parents=True, exist_ok=True)
        return out, "overwrite" if options.overwrite else "resume"
    return Path(options.out), "overwrite" if options.overwrite else "resume" if options.resume else "new"


def _run_settings(options: JudgeOptions) -> dict:
    judge = options.judge
    rubric = "\n".join([rubrics.QUALITY_SYSTEM, rubrics.RELEVANCE_SYSTEM, rubrics.GROUNDEDNESS_SYSTEM, str(rubrics.REASON_CHARS)])
    return {
        "judge": judge.llm or DEFAULT_LLM,
        "aspects": list(options.aspects),
        "rubric": hashlib.sha256(rubric.encode()).hexdigest()[:16],  # the prompts' version
        "max_model_len": judge.max_model_len,
        "engine": requested_engine(judge.gpu_memory_utilization, judge.tensor_parallel_size, judge.vllm_args),
        "seed": judge.seed,
        "file": str(options.file),
    }


def _input_run(file: str) -> dict | None:
    """The settings an `ask` answer file records (its store, for one)."""
    if not file.endswith(".parquet"):
        return None
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(file).metadata or {}
    except Exception:  # noqa: BLE001 - read_rows has already read it
        return None
    return json.loads(metadata[RUN_METADATA]) if RUN_METADATA in metadata else None


def _passages(options: JudgeOptions, todo: list[dict], notify) -> list[Judged]:
    """The rows with references and passages; chunk texts are read from the store, which
    is closed again before the judge loads."""
    needs_store = "groundedness" in options.aspects and any(row.get("chunk_ids") and not row.get("passages") for row in todo)
    store = store_of(_input_run(options.file), options.store) if needs_store else None
    if store is None:
        if needs_store:
            notify(Note("no store to read the answers' passages from: groundedness is left out (give {store})", refers=("store",)))
        return attach(todo, None)
    with open_store(store, notify=notify, wait=options.wait) as reader:
        return attach(todo, lambda ids: {cid: text for cid, text, _ in reader.vectors.get(ids)})


def _judge_rows(options: JudgeOptions, inputs, todo: list[dict], writer: AnswerWriter, report: JudgeReport, progress, notify) -> None:
    items = _passages(options, todo, notify)
    executor = choose_executor(options.executor, len(items))
    with working(progress, f"Starting vLLM with {report.judge}" + (" on Ray" if executor == "ray" else "")):
        setup, generator = start_engine(options.judge, inputs, executor, options.replicas, json_output=True)
    try:
        _run(options, setup.llm_name, generator, items, writer, report, progress)
    finally:
        generator.close()


def _requests(
    options: JudgeOptions, judge_name: str, generator: Generator | RayGenerator, items: list[Judged], schema
) -> tuple[list[dict], list[Request], dict[int, int]]:
    """Each item's verdict row, every request of every row, and how many each row waits for
    (0: nothing to ask, or its prompt cannot fit: the row has its error)."""
    rows = [verdict_row(item, judge_name, schema) for item in items]
    requests: list[Request] = []
    waiting: dict[int, int] = {}
    for index, item in enumerate(items):
        try:
            made = requests_for(index, item, options.aspects, generator.tokenizer, generator.context_window)
        except PromptTooLong as exc:
            rows[index]["error"] = f"prompt too long: {exc}"
            made = []
        requests += made
        waiting[index] = len(made)
    return rows, requests, waiting


def _run(
    options: JudgeOptions, judge_name: str, generator: Generator | RayGenerator, items: list[Judged], writer: AnswerWriter, report: JudgeReport, progress
) -> None:
    """Every request in one engine batch; rows are written as their last verdict comes,
    verdicts that do not parse are asked again, all together, after the batch."""
    rows, requests, waiting = _requests(options, judge_name, generator, items, writer.schema)
    finished = [_done(row, report) for index, row in enumerate(rows) if waiting[index] == 0]
    task = progress.add_task("Judging", total=len(items))
    progress.advance(task, len(finished))
    flushed = time.perf_counter()
    attempt = 0
    while requests:
        retry: list[Request] = []
        temperature = 0.0 if attempt == 0 else RETRY_TEMPERATURE
        seed = options.judge.seed if attempt == 0 else (options.judge.seed or 0) + attempt  # a retry samples anew
        prompts = [r.token_ids for r in requests]
        constraints = [r.ask.constraint for r in requests]
        max_tokens = max(r.ask.max_tokens for r in requests)
        try:
            for j, generation in generator.stream(prompts, max_tokens, temperature, seed, constraints=constraints, logprobs=LOGPROBS):
                request = requests[j]
                row = rows[request.index]
                row["judge_prompt_tokens"] += generation.prompt_tokens
                row["judge_completion_tokens"] += generation.completion_tokens
                report.prompt_tokens += generation.prompt_tokens
                report.completion_tokens += generation.completion_tokens
                try:
                    fill(row, request, generation, generator.tokenizer)
                except Unparsed as exc:
                    if attempt < options.retries:
                        retry.append(request)
                        row["retries"] += 1
                        report.retried += 1
                        continue
                    report.unparsed += 1
                    row["error"] = f"{request.ask.aspect} verdict did not parse after {attempt + 1} tries: {exc}"
                waiting[request.index] -= 1
                if waiting[request.index] == 0:
                    finished.append(_done(row, report))
                    progress.advance(task)
                if len(finished) >= options.part_rows or time.perf_counter() - flushed > FLUSH_SECONDS:
                    writer.write(finished)
                    finished, flushed = [], time.perf_counter()
        except KeyboardInterrupt:
            writer.write(finished)  # finished verdicts are kept for the rerun
            raise
        requests, attempt = retry, attempt + 1
    writer.write(finished)


def _done(row: dict, report: JudgeReport) -> dict:
    if row["error"]:
        report.failed += 1
    else:
        report.judged += 1
    return row
