"""`ragbatch ask`: questions -> batched retrieval -> prompts -> vLLM -> Parquet rows.

Everything that can fail on the user's input (questions file, prices, encoding,
output folder, model availability) is checked before a model is loaded, so a bad
invocation fails in a second, not after minutes of embedding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ragbatch.answers import AnswerWriter, answer_schema
from ragbatch.errors import RagbatchError
from ragbatch.manifest import require_store_path
from ragbatch.pricing import load_prices, price_for
from ragbatch.questions import read_questions

# Finished rows go to a Parquet part at least every PART_ROWS rows or FLUSH_SECONDS.
PART_ROWS = 64
FLUSH_SECONDS = 10.0


@dataclass
class AskOptions:
    questions: str
    store: Path
    out: Path | None = None  # None: outputs/<stem>-answers.parquet, resumed when it exists
    k: int = 5
    llm: str | None = None
    max_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0
    system_prompt: str | None = None
    prompt_file: Path | None = None
    resume: bool = False
    overwrite: bool = False
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int | None = None
    vllm_args: dict = field(default_factory=dict)  # any other vLLM engine argument
    count_tokens: str | None = None
    prices: Path | None = None
    price_prompt: float | None = None
    price_completion: float | None = None
    device: str = "auto"
    max_model_len: int | None = None
    retrieval: str = "hybrid"
    part_rows: int = PART_ROWS
    chunk_filter: object = None  # filters.ChunkFilter: --where / --source-prefix
    diversity: tuple[int, int] = (1, 0)  # --max-per-section, --max-per-page (see retrieval.py)


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
            "errors": self.errors,
        }


def system_prompt_of(options: AskOptions) -> str:
    from ragbatch.prompting import DEFAULT_SYSTEM_PROMPT

    if options.prompt_file:
        try:
            return Path(options.prompt_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise RagbatchError(f"--prompt-file {options.prompt_file}: cannot read ({exc})") from None
    return options.system_prompt or DEFAULT_SYSTEM_PROMPT


def answers_file(options: AskOptions) -> tuple[Path, str]:
    """OUT and the AnswerWriter mode. The default OUT resumes, so rerunning the same
    command (from cron, say) answers only new questions; an explicit --out is refused
    when it exists, unless --resume; --overwrite starts over either way."""
    if options.out is None:
        from ragbatch.locations import default_answers

        out = default_answers(options.questions)
        out.parent.mkdir(parents=True, exist_ok=True)
        return out, "overwrite" if options.overwrite else "resume"
    return Path(options.out), "overwrite" if options.overwrite else "resume" if options.resume else "new"


def ask(options: AskOptions, progress, notify=lambda line: None) -> AskReport:
    """Answer every question not answered yet; `notify` gets one line when some already are."""
    started = time.perf_counter()
    bad_lines: list[str] = []

    def skip_line(error) -> None:
        bad_lines.append(str(error))
        notify(f"error: {error} (skipped)")

    questions = read_questions(options.questions, on_problem=skip_line)
    system_prompt = system_prompt_of(options)
    table = load_prices(options.prices) if options.prices else None
    counter = None
    if options.count_tokens:
        from ragbatch.tokencount import encoding

        counter = encoding(options.count_tokens)
    require_store_path(options.store)
    schema = answer_schema(questions, options.count_tokens)
    out, mode = answers_file(options)
    report = AskReport(out=str(out), store=str(options.store), retrieval=options.retrieval, questions=len(questions), errors=bad_lines)
    writer = AnswerWriter(out, schema, mode)
    try:
        _answer(options, questions, system_prompt, table, counter, writer, report, progress, notify)
    finally:
        writer.close()
    report.seconds = time.perf_counter() - started
    return report


def _answer(options, questions, system_prompt, table, counter, writer, report, progress, notify):
    done = writer.done_ids() if writer.mode == "resume" else set()
    todo = [q for q in questions if q["id"] not in done]
    report.skipped = len(questions) - len(todo)
    if report.skipped:
        rest = f"answering the other {len(todo)}" if todo else "nothing to do (--overwrite starts over)"
        notify(f"{writer.out}: {report.skipped} of {len(questions)} questions already answered; {rest}")

    if todo:
        from ragbatch.devices import pick_device
        from ragbatch.engine_args import engine_settings
        from ragbatch.models import DEFAULT_LLM, resolve_llm
        from ragbatch.retrieval import Retriever

        llm_name = options.llm or DEFAULT_LLM
        llm_path = resolve_llm(options.llm)  # fails fast when the model is not here
        device = pick_device(options.device)  # and when the device is not
        engine = engine_settings(options.gpu_memory_utilization, options.tensor_parallel_size, options.vllm_args)  # or a setting
        report.llm = llm_name
        price = price_for(llm_name, table, options.price_prompt, options.price_completion)

        retriever = Retriever(
            options.store,
            device=device,
            mode=options.retrieval,
            chunk_filter=options.chunk_filter,
            max_per_section=options.diversity[0],
            max_per_page=options.diversity[1],
        )
        report.embedder = retriever.spec.name
        task = progress.add_task("Retrieving", total=len(todo))
        hits = retriever.search([q["question"] for q in todo], options.k)
        progress.advance(task, len(todo))
        retriever.close()  # frees the embedder (and its GPU memory) before vLLM sizes itself

        _generate_rows(options, device, engine, todo, hits, llm_path, llm_name, price, system_prompt, counter, writer, report, progress)
        run = {
            "llm": llm_name,
            "embedder": report.embedder,
            "store": str(options.store),
            "retrieval": options.retrieval,
            "k": options.k,
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "seed": options.seed,
            "max_model_len": options.max_model_len,
            "device": device,
            "engine": engine,
        }
    else:
        run = None
    report.rows = writer.finish(order=[q["id"] for q in questions], run=run)


def _generate_rows(options, device, engine, todo, hits, llm_path, llm_name, price, system_prompt, counter, writer, report, progress):
    from ragbatch.generation import Generator
    from ragbatch.prompting import PromptTooLong, build_prompt
    from ragbatch.rows import base_row, finish_row

    generator = Generator(llm_path, max_model_len=options.max_model_len, device=device, seed=options.seed, name=llm_name, engine=engine)
    try:
        base = [base_row(q, found, llm_name, report.embedder, writer.schema, options.count_tokens) for q, found in zip(todo, hits)]
        prompts, waiting, pending = [], [], []
        for i, (q, found) in enumerate(zip(todo, hits)):
            try:
                prompt = build_prompt(generator.tokenizer, q["question"], [h.text for h in found], generator.context_window, options.max_tokens, system_prompt)
            except PromptTooLong as exc:
                pending.append({**base[i], "error": f"prompt too long: {exc}"})
                report.failed += 1
                continue
            base[i]["passages_used"] = prompt.used
            prompts.append(prompt.token_ids)
            waiting.append(i)

        task = progress.add_task("Generating", total=len(todo))
        progress.advance(task, len(pending))
        flushed = time.perf_counter()
        gen_started = time.perf_counter()
        for j, generation in generator.stream(prompts, options.max_tokens, options.temperature, options.seed):
            row = finish_row(base[waiting[j]], generation, price, counter, options.count_tokens, generator.tokenizer, prompts[j])
            report.answered += 1
            report.prompt_tokens += generation.prompt_tokens
            report.completion_tokens += generation.completion_tokens
            report.cost_usd += row["cost_usd"]
            pending.append(row)
            progress.advance(task)
            if len(pending) >= options.part_rows or time.perf_counter() - flushed > FLUSH_SECONDS:
                writer.write(pending)
                pending, flushed = [], time.perf_counter()
        report.generation_seconds = time.perf_counter() - gen_started
        writer.write(pending)
    finally:
        generator.close()
