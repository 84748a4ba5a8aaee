"""What a user watching a terminal sees: bars that move as the work is done, a spinner
naming the model while it loads, and an interrupted `ask` that says what it kept."""

import pytest
from helpers import CAPITAL, FACTS, write_questions

import ragbatch
from ragbatch.asking import pipeline
from ragbatch.errors import Interrupted
from ragbatch.generation.vllm_engine import Generation, load_tokenizer
from ragbatch.models.weights import resolve_llm


class Recorder:
    """The Progress interface the stages use, recording what they do with it."""

    def __init__(self):
        self.tasks, self.events = {}, []

    def add_task(self, description, total=None):
        self.tasks[len(self.tasks)] = {"description": description, "total": total, "completed": 0}
        self.events.append(("add", description, self.snapshot()))
        return len(self.tasks) - 1

    def advance(self, task, advance=1):
        self.tasks[task]["completed"] += advance

    def update(self, task, total=None, **_):
        self.tasks[task]["total"] = total

    def remove_task(self, task):
        self.events.append(("remove", self.tasks[task]["description"], self.snapshot()))

    def snapshot(self):
        return {t["description"]: (t["completed"], t["total"]) for t in self.tasks.values()}


def test_index_bars_move_as_files_are_read_and_the_embedder_loading_is_named(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(5):
        (docs / f"{i}.txt").write_text(f"File {i}: Phileas Fogg crossed sea number {i} on the steamer.\n")
    recorder = Recorder()
    report = ragbatch.index(docs, store=tmp_path / "s", progress=recorder, executor="local")
    # A new store loads the model while its files are read: named once, while it loads.
    loads = [e[:2] for e in recorder.events if e[1] == "Loading all-MiniLM-L6-v2"]
    assert loads == [("add", "Loading all-MiniLM-L6-v2"), ("remove", "Loading all-MiniLM-L6-v2")]
    assert recorder.snapshot()["Reading"] == (5, 5)
    assert recorder.snapshot()["Embedding"] == (report.embedded, report.embedded) and report.embedded == 5


class InterruptedGenerator:
    """vLLM's place in `ask`, answering one question and then stopped by Ctrl-C: what
    this tests is ask's own handling of the interrupt."""

    calls = 0

    def __init__(self, path, **_):
        self.tokenizer, self.context_window = load_tokenizer(path), 2048

    @classmethod
    def for_setup(cls, setup, json_output=False):
        return cls(setup.llm_path)

    def stream(self, prompts, max_tokens, temperature, seed):
        prompts = list(prompts)  # ask hands over a lazy iterable (the real engine builds it on a thread)
        type(self).calls += 1
        yield 0, Generation("Zubrowka.", 100, 3, "stop")
        if type(self).calls == 1:
            raise KeyboardInterrupt
        for i in range(1, len(prompts)):
            yield i, Generation("An answer.", 100, 3, "stop")

    def close(self):
        pass


def test_an_interrupted_ask_says_what_it_kept_and_a_rerun_finishes(tmp_path, freedonia_store, monkeypatch):
    resolve_llm(None)  # the packaged model's tokenizer is used for real
    monkeypatch.setattr(pipeline, "Generator", InterruptedGenerator)
    questions = write_questions(tmp_path / "q.jsonl", [{"id": str(i), "question": q} for i, q in enumerate([CAPITAL, *FACTS[1:3]])])
    out = tmp_path / "a.parquet"
    with pytest.raises(Interrupted) as stopped:
        ragbatch.ask(str(questions), freedonia_store, out=out, part_rows=1)
    assert str(stopped.value).startswith("interrupted: 1 of 3 answers are kept (1 from this run, in ") and "run the same command again" in str(stopped.value)
    assert stopped.value.exit_code == 130 and not out.exists() and list((tmp_path / "a.parquet.parts").glob("part-*"))
    again = ragbatch.ask(str(questions), freedonia_store, out=out, resume=True)
    assert (again.skipped, again.answered, again.rows) == (1, 2, 3)
