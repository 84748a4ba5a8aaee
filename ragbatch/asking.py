"""`ragbatch ask`: questions -> batched retrieval -> prompts -> vLLM -> Parquet rows.

Everything that can fail on the user's input (questions file, prices, encoding,
output folder, model availability) is checked before a model is loaded, so a bad
invocation fails in a second, not after minutes of embedding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ragbatch.answers import AnswerWriter, answer_schema, carry_values
from ragbatch.errors import RagbatchError
from ragbatch.pricing import load_prices, price_for
from ragbatch.questions import read_questions

# Finished rows go to a Parquet part at least every PART_ROWS rows or FLUSH_SECONDS.
PART_ROWS = 64
FLUSH_SECONDS = 10.0


@dataclass
class AskOptions:
    questions: str
    store: Path
    out: Path
    k: int = 5
    llm: str | None = None
    max_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0
    system_prompt: str | None = None
    prompt_file: Path | None = None
    resume: bool = False
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
    llm: str = ""
    embedder: str = ""
    retrieval: str = ""
    rows: int = 0

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
            "llm": self.llm,
            "embedder": self.embedder,
            "retrieval": self.retrieval,
        }


def system_prompt_of(options: AskOptions) -> str:
    from ragbatch.prompting import DEFAULT_SYSTEM_PROMPT

    if options.prompt_file:
        try:
            return Path(options.prompt_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise RagbatchError(f"--prompt-file {options.prompt_file}: cannot read ({exc})") from None
    return options.system_prompt or DEFAULT_SYSTEM_PROMPT


def ask(options: AskOptions, progress) -> AskReport:
    started = time.perf_counter()
    report = AskReport(out=str(options.out), retrieval=options.retrieval)
    questions = read_questions(options.questions)
    report.questions = len(questions)
    system_prompt = system_prompt_of(options)
    table = load_prices(options.prices) if options.prices else None
    counter = None
    if options.count_tokens:
        from ragbatch.tokencount import encoding

        counter = encoding(options.count_tokens)
    schema = answer_schema(questions, options.count_tokens)
    writer = AnswerWriter(options.out, schema, options.resume)
    done = writer.done_ids() if options.resume else set()
    todo = [q for q in questions if q["id"] not in done]
    report.skipped = len(questions) - len(todo)

    if todo:
        from ragbatch.generation import DEFAULT_LLM, resolve_llm
        from ragbatch.retrieval import Retriever

        llm_name = options.llm or DEFAULT_LLM
        llm_path = resolve_llm(options.llm)  # fails fast when the model is not here
        report.llm = llm_name
        price = price_for(llm_name, table, options.price_prompt, options.price_completion)

        retriever = Retriever(options.store, device=options.device, mode=options.retrieval, chunk_filter=options.chunk_filter,
                              max_per_section=options.diversity[0], max_per_page=options.diversity[1])
        report.embedder = retriever.spec.name
        task = progress.task("Retrieving", total=len(todo))
        hits = retriever.search([q["question"] for q in todo], options.k)
        task.advance(len(todo))
        retriever.close()
        del retriever  # frees the embedder before vLLM takes its memory

        _generate_rows(options, todo, hits, llm_path, llm_name, price, system_prompt, counter, writer, report, progress)

    report.rows = writer.finish(order=[q["id"] for q in questions])
    report.seconds = time.perf_counter() - started
    return report


def _generate_rows(options, todo, hits, llm_path, llm_name, price, system_prompt, counter, writer, report, progress):
    from ragbatch.generation import Generator
    from ragbatch.prompting import PromptTooLong, build_prompt

    generator = Generator(llm_path, max_model_len=options.max_model_len, device=options.device, seed=options.seed, name=llm_name)
    try:
        base = [_base_row(q, found, llm_name, report.embedder, writer.schema, options.count_tokens) for q, found in zip(todo, hits)]
        prompts, waiting, pending = [], [], []
        for i, (q, found) in enumerate(zip(todo, hits)):
            try:
                prompt = build_prompt(
                    generator.tokenizer, q["question"], [h.text for h in found], generator.context_window, options.max_tokens, system_prompt
                )
            except PromptTooLong as exc:
                pending.append({**base[i], "error": f"prompt too long: {exc}"})
                report.failed += 1
                continue
            base[i]["passages_used"] = prompt.used
            prompts.append(prompt.token_ids)
            waiting.append(i)

        task = progress.task("Generating", total=len(todo))
        task.advance(len(pending))
        flushed = time.perf_counter()
        gen_started = time.perf_counter()
        for j, generation in generator.stream(prompts, options.max_tokens, options.temperature, options.seed):
            row = base[waiting[j]]
            row.update(
                answer=generation.text.strip(),
                prompt_tokens=generation.prompt_tokens,
                completion_tokens=generation.completion_tokens,
                cost_usd=price.cost(generation.prompt_tokens, generation.completion_tokens),
                finish_reason=generation.finish_reason,
            )
            if counter is not None:
                row[f"prompt_tokens_{options.count_tokens}"] = len(counter.encode(generator.tokenizer.decode(prompts[j]), disallowed_special=()))
                row[f"completion_tokens_{options.count_tokens}"] = len(counter.encode(row["answer"], disallowed_special=()))
            report.answered += 1
            report.prompt_tokens += generation.prompt_tokens
            report.completion_tokens += generation.completion_tokens
            report.cost_usd += row["cost_usd"]
            pending.append(row)
            task.advance()
            if len(pending) >= options.part_rows or time.perf_counter() - flushed > FLUSH_SECONDS:
                writer.write(pending)
                pending, flushed = [], time.perf_counter()
        report.generation_seconds = time.perf_counter() - gen_started
        writer.write(pending)
    finally:
        generator.close()


def _base_row(question: dict, hits, llm: str, embedder: str, schema, count_encoding) -> dict:
    return {
        "id": question["id"],
        "question": question["question"],
        "answer": None,
        "sources": [h.source for h in hits],
        "chunk_ids": [h.chunk_id for h in hits],
        "scores": [round(h.score, 6) for h in hits],
        "passages_used": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": 0.0,
        "llm": llm,
        "embedder": embedder,
        "finish_reason": None,
        "error": None,
        **carry_values(question, schema, count_encoding),
    }
