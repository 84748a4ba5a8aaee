"""`ask --executor ray`: the questions not answered yet stream through one Ray Data
pipeline, and the finished rows come back to this process's one answer-file writer.

    questions (read here, answered ids dropped)
      -> retrieval actors: embed each batch of questions and query the store, where the
         store is readable (a local store on one machine, a published root on storage
         every node sees; a store on a Chroma server keeps its folder, manifest and BM25,
         beside its vectors, so that folder must be visible too)
      -> vLLM replicas: one engine per GPU (per tensor-parallel group), or `replicas`
         on CPUs; each builds its prompts and generates them (answering.answer_rows, the
         loop the local path runs), yielding rows as answers finish
      -> here: written as Parquet parts exactly as the local path writes them.

Why our own actor pool, not ray.data.llm: Ray 2.60's ray.data.llm pins vLLM 0.29 (we
pin 0.32), drives vLLM's AsyncLLM (on a CPU a second process per engine, a core of its
own), and its rows are vLLM's; ours are ask's rows (prompts fitted to the context, exact
token counts, citations), built by the same code as the local path's.

Failures come back as values, not exceptions (Ray keeps only an exception's traceback
text): a store the node cannot read, or an engine that cannot start, stops the run with
one line; an engine that fails mid-batch fails that batch's unfinished rows (`error`)
and restarts for the next batch; a replica whose process dies (out of memory) is
restarted by Ray, its batch tried once more, and failing again its questions become
error rows. Rerunning answers what failed.
"""

from __future__ import annotations

import itertools
import pickle
import socket
from collections.abc import Iterator
from pathlib import Path

from ragbatch.asking.answering import answer_rows
from ragbatch.errors import RagbatchError
from ragbatch.generation.batch import Generator
from ragbatch.generation.ray_generator import (
    RETRIEVE_CPUS,
    first_line,
    here,
    lost_blocks_allowed,
    map_replicas,
    replica_resources,
    start_replica,
)
from ragbatch.generation.rows import base_row
from ragbatch.generation.settings import GenerationSetup
from ragbatch.progress import working
from ragbatch.ray_cluster import init_ray
from ragbatch.retrieval.retriever import Retriever
from ragbatch.retrieval.selection import Selection

# Questions per retrieval call (one batched embedding and query).
RETRIEVE_BATCH = 256
# Ray Data holds a task's output until it reaches this size: rows a replica yields
# every --part-rows would otherwise reach the writer only when its whole batch of 256 is
# done, and a killed driver would lose them all. A few KB each: they go out as yielded.
ROW_BLOCK_BYTES = 1024


class _Retrieve:
    """Embeds and retrieves for each batch, with the store opened on this node (once)."""

    def __init__(self, store: str, selection: Selection, wait: float | None, threads: int):
        self.store, self.selection, self.wait, self.threads = store, selection, wait, threads
        self.retriever: Retriever | None = None

    def _open(self) -> Retriever:
        if not Path(self.store).exists():
            raise RagbatchError(
                f"{self.store}: not visible on {socket.gethostname()}, where ask's retrieval runs on the Ray cluster; "
                "publish the store to storage every node sees (ragbatch publish ROOT) and ask with --store ROOT/NAME"
            )
        import torch

        torch.set_num_threads(self.threads)  # Ray sets OMP_NUM_THREADS to whole CPUs only
        return Retriever.open(self.store, device="cpu", modes=(self.selection.mode,), wait=self.wait)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        size = len(batch["item"])
        try:
            if self.retriever is None:
                self.retriever = self._open()
            questions = [pickle.loads(item)[0]["question"] for item in batch["item"]]
            hits = self.retriever.search(questions, self.selection)
        except RagbatchError as exc:
            return {"item": batch["item"], "hits": np.full(size, b"", dtype=object), "fatal": np.full(size, str(exc), dtype=object)}
        return {"item": batch["item"], "hits": np.array([pickle.dumps(h) for h in hits], dtype=object), "fatal": np.full(size, "", dtype=object)}


class _Answer:
    """One vLLM replica: its engine starts at the first batch, on this node's copy of the model."""

    def __init__(self, setup: GenerationSetup, embedder: str, max_tokens: int, temperature: float, threads: int | None, part_rows: int):
        self.setup, self.embedder, self.part_rows = setup, embedder, part_rows
        self.max_tokens, self.temperature, self.threads = max_tokens, temperature, threads
        self.generator: Generator | None = None

    def __call__(self, batch: dict) -> Iterator[dict]:
        import numpy as np

        fatal = next((f for f in batch["fatal"] if f), "")
        if not fatal and self.generator is None:
            try:
                self.setup, self.generator = start_replica(self.setup, self.threads)
            except Exception as exc:  # noqa: BLE001 - one line for the driver, not a traceback
                fatal = f"vLLM could not start {self.setup.llm_name} on {here()}: {first_line(exc)}"
        if fatal:
            yield {"row": np.array([b""], dtype=object), "fatal": np.array([fatal], dtype=object)}
            return
        assert self.generator is not None
        questions = [pickle.loads(item) for item in batch["item"]]
        hits = [pickle.loads(h) for h in batch["hits"]]
        done: set[str] = set()
        rows: list[dict] = []
        try:
            for row in answer_rows(self.setup, self.generator, questions, hits, self.embedder, self.max_tokens, self.temperature):
                done.add(row["id"])
                rows.append(row)
                if len(rows) >= self.part_rows:  # on its way to the writer as a part's worth
                    yield _rows_block(rows)
                    rows = []
        except Exception as exc:  # noqa: BLE001 - the engine failed: this batch's rest fails as rows
            error = f"vLLM failed on {here()}: {first_line(exc)}"
            for (question, carried), found in zip(questions, hits):
                if question["id"] not in done:
                    rows.append({**base_row(question, found, self.setup.llm_name, self.embedder, carried), "error": error})
            self.generator.close()
            self.generator = None  # a fresh engine for the next batch
        if rows:
            yield _rows_block(rows)


def _rows_block(rows: list[dict]) -> dict:
    import numpy as np

    return {"row": np.array([pickle.dumps(r) for r in rows], dtype=object), "fatal": np.full(len(rows), "", dtype=object)}


def stream_answers(
    store: str,
    selection: Selection,
    setup: GenerationSetup,
    questions: list[tuple[dict, dict]],
    embedder: str,
    max_tokens: int,
    temperature: float,
    replicas: int | None,
    wait: float | None,
    part_rows: int,
    progress,
) -> Iterator[dict]:
    """Every question's finished row, in the order they come back from the cluster; the
    questions no row came back for (a worker lost twice on their batch) as error rows at the end."""
    if not questions:
        return
    init_ray()
    import ray

    count, per_replica, threads = replica_resources(ray.cluster_resources(), setup, replicas)
    context = ray.data.DataContext.get_current()
    saved_block_size, context.target_max_block_size = context.target_max_block_size, ROW_BLOCK_BYTES
    items = [{"item": pickle.dumps(q)} for q in questions]
    retrieved = ray.data.from_items(items, override_num_blocks=max(1, len(items) // RETRIEVE_BATCH)).map_batches(
        _Retrieve,
        fn_constructor_kwargs={"store": store, "selection": selection, "wait": wait, "threads": 1},
        batch_size=RETRIEVE_BATCH,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=count),  # more when retrieval falls behind
        num_cpus=RETRIEVE_CPUS,
    )
    constructor = {"setup": setup, "embedder": embedder, "max_tokens": max_tokens, "temperature": temperature, "threads": threads, "part_rows": part_rows}
    answered = map_replicas(retrieved, _Answer, constructor, ray, count, per_replica)
    returned: set[str] = set()
    try:
        with lost_blocks_allowed(ray):
            batches = iter(answered.iter_batches(batch_format="numpy", batch_size=None))
            with working(progress, f"Starting Ray Data, {count} vLLM replica{'s' if count > 1 else ''} of {setup.llm_name}"):
                first = next(batches, None)
            for batch in itertools.chain([first] if first is not None else [], batches):
                yield from _unpack(batch, returned)
    finally:
        context.target_max_block_size = saved_block_size
    lost = "no answer came back from the Ray cluster (the worker handling it died twice: out of memory?); run the same command again to retry"
    for question, carried in questions:
        if question["id"] not in returned:
            yield {**base_row(question, [], setup.llm_name, embedder, carried), "error": lost}


def _unpack(batch: dict, returned: set[str]) -> Iterator[dict]:
    for fatal, packed in zip(batch["fatal"], batch["row"]):
        if fatal:
            raise RagbatchError(str(fatal))
        row = pickle.loads(packed)
        if row["id"] not in returned:  # a retried batch may send a row twice: written once
            returned.add(row["id"])
            yield row
