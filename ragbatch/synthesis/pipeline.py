"""`ragbatch synth`: questions a user would ask of a store, with reference answers, for
`eval`, `ask` and `judge`.

Chunks are sampled over the store's pages (sampling.py); the LLM writes, for each, one
question that the chunk alone answers and the answer, as JSON held to a schema (bounded
lengths the grammar enforces, as the judge's verdicts). Dropped: output that does not
parse, repeated questions, and questions that copy the chunk (a run of COPIED_WORDS words
of the chunk, or the whole question found in it: they test string matching, not
retrieval) or the prompt's worked example. Each line: id, question, answer, source (the chunk's, as `eval` scores it),
chunk_id.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from ragbatch.errors import ParameterError, RagbatchError
from ragbatch.generation import settings
from ragbatch.generation.batch import Generator
from ragbatch.generation.prompting import render_chat
from ragbatch.generation.ray_generator import RayGenerator, choose_executor, start_engine
from ragbatch.generation.settings import GenerationOptions
from ragbatch.models.weights import DEFAULT_LLM
from ragbatch.progress import working
from ragbatch.store.reader import open_store
from ragbatch.synthesis.sampling import Candidate, sample

QUESTION_CHARS = 200
ANSWER_CHARS = 300
COPIED_WORDS = 8
OVERSAMPLE = 1.5  # chunks drawn per question wanted: some outputs are dropped
MAX_CHUNK_CHARS = 3000

SYSTEM = (
    "You write test questions for a search engine over documentation. Given one passage, write one question that a user "
    "who has not seen the passage would ask, and that the passage answers; then the answer, from the passage alone, in one sentence. "
    "Ask in your own words: do not copy phrases from the passage, and do not mention 'the passage'."
)
# One worked example, shown before the passage: small models follow a shown format far
# better than a described one.
EXAMPLE_PASSAGE = (
    "Phileas Fogg left London on the evening of 2 October 1872, having wagered twenty thousand pounds at the Reform Club "
    "that he could travel around the world in eighty days."
)
EXAMPLE = {"question": "How much money did Fogg bet that he could go around the world in time?", "answer": "Twenty thousand pounds."}


@dataclass
class SynthOptions:
    store: Path
    n: int
    out: Path
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    overwrite: bool = False
    wait: float | None = None
    executor: str = "auto"  # where the LLM runs: generation.ray_generator.choose_executor
    replicas: int | None = None  # engines on Ray [default: one per GPU, or one on CPUs]


@dataclass
class SynthReport:
    wanted: int = 0
    chunks: int = 0  # chunks sampled
    written: int = 0
    unparsed: int = 0
    duplicates: int = 0
    copied: int = 0  # questions that copy their chunk or the example
    seconds: float = 0.0
    out: str = ""
    llm: str = ""

    def as_json(self) -> dict:
        return {**self.__dict__, "seconds": round(self.seconds, 3)}


def schema() -> dict:
    def bounded(chars: int) -> dict:
        return {"type": "string", "minLength": 10, "maxLength": chars}

    return {
        "type": "object",
        "properties": {"question": bounded(QUESTION_CHARS), "answer": bounded(ANSWER_CHARS)},
        "required": ["question", "answer"],
        "additionalProperties": False,
    }


def synth(options: SynthOptions, progress, notify=lambda line: None) -> SynthReport:
    started = time.perf_counter()
    if options.n < 1:
        raise ParameterError("n", options.n, "at least 1")
    out = Path(options.out)
    if out.exists() and not options.overwrite:
        raise RagbatchError(f"{out}: already exists; pass {{overwrite}} to replace it", refers=("overwrite",))
    if not out.parent.is_dir():
        raise ParameterError("out", out, f"the folder {out.parent} does not exist")
    options = replace(options, generation=settings.with_default_llm(options.generation, notify))
    report = SynthReport(wanted=options.n, out=str(out), llm=options.generation.llm or DEFAULT_LLM)
    inputs = settings.read_inputs(options.generation)

    with working(progress, f"Sampling chunks of {options.store}"), open_store(options.store, notify=notify, wait=options.wait) as reader:
        records = list(reader.vectors.records())
        candidates = sample(records, round(options.n * OVERSAMPLE), seed=options.generation.seed or 0, copied=set(reader.copies))
    report.chunks = len(candidates)
    if not candidates:
        raise RagbatchError(f"{options.store}: no chunk has enough text to ask about")
    executor = choose_executor(options.executor, len(candidates))
    with working(progress, f"Starting vLLM with {report.llm}" + (" on Ray" if executor == "ray" else "")):
        _, generator = start_engine(options.generation, inputs, executor, options.replicas, json_output=True)
    try:
        lines = _generate(options, generator, candidates, report, progress)
    finally:
        generator.close()
    _write(out, lines)
    report.written = len(lines)
    if report.written < options.n:
        notify(f"{out}: {report.written} of {options.n} questions kept (the store has few usable chunks, or outputs were dropped)")
    report.seconds = time.perf_counter() - started
    return report


def _generate(options: SynthOptions, generator: Generator | RayGenerator, candidates: list[Candidate], report: SynthReport, progress) -> list[dict]:
    example = f"Example passage:\n{EXAMPLE_PASSAGE}\nExample output:\n{json.dumps(EXAMPLE, separators=(',', ':'))}\n\n"
    prompts = [render_chat(generator.tokenizer, SYSTEM, f"{example}Passage:\n{c.text[:MAX_CHUNK_CHARS]}", lead="JSON:") for c in candidates]
    max_tokens = QUESTION_CHARS + ANSWER_CHARS + 32
    window = generator.context_window - max_tokens
    keep = [i for i, p in enumerate(prompts) if len(p) <= window]
    task = progress.add_task("Writing questions", total=len(keep))
    outputs: dict[int, dict] = {}
    stream = generator.stream(
        [prompts[i] for i in keep], max_tokens, 0.0, options.generation.seed, constraints=[{"json": schema(), "disable_any_whitespace": True}] * len(keep)
    )
    for j, generation in stream:
        progress.advance(task)
        try:
            pair = json.loads(generation.text)
            outputs[keep[j]] = {"question": pair["question"].strip(), "answer": pair["answer"].strip()}
        except (ValueError, KeyError, AttributeError):
            report.unparsed += 1
    lines, seen = [], set()
    for i, candidate in enumerate(candidates):
        pair = outputs.get(i)
        if pair is None:
            continue
        key = _normal(pair["question"])
        if key in seen:
            report.duplicates += 1
            continue
        if copies(pair["question"], candidate.text) or copies(pair["question"], EXAMPLE["question"]):
            report.copied += 1
            continue
        seen.add(key)
        lines.append({"id": f"synth-{candidate.chunk_id[:16]}", **pair, "source": candidate.source, "chunk_id": candidate.chunk_id})
        if len(lines) == options.n:
            break
    return lines


def copies(question: str, text: str) -> bool:
    """Whether the question copies the chunk: the whole question, or a run of COPIED_WORDS words."""
    q, t = _normal(question), _normal(text)
    if q in t:
        return True
    words = q.split()
    return any(" ".join(words[i : i + COPIED_WORDS]) in t for i in range(len(words) - COPIED_WORDS + 1))


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _write(out: Path, lines: list[dict]) -> None:
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)
