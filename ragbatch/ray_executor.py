"""Runs the same stage functions on Ray Data: for large inputs and for clusters.

Files are read and chunked by Ray tasks; the embedder runs in an actor pool (on a
GPU machine each actor takes a fraction of the GPU, so tokenisation in one overlaps
the forward pass in another). Results stream back to the driver, where the one
Chroma writer lives. `RAY_ADDRESS` is honoured; otherwise a local Ray is started.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator


def init_ray(num_cpus: int | None = None) -> None:
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False, "include_dashboard": False}
    if address:
        ray.init(address=address, **quiet)  # a cluster decides its own resources
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), **quiet)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


class _EmbedActor:
    """One loaded embedder per actor; adds an `embedding` column to each batch.

    Given a `sink` (a Chroma server collection, see chroma_server.py), the actor upserts
    its vectors there itself and returns none: several actors write at once."""

    def __init__(self, spec: dict, device: str, batch_size: int, sink: dict | None = None):
        from ragbatch.embedding import Embedder, EmbedderSpec

        self.embedder = Embedder(EmbedderSpec(**spec), device=device, batch_size=batch_size)
        self.sink = None
        if sink:
            from ragbatch.chroma_server import open_sink

            self.sink = open_sink(sink)

    def __call__(self, batch: dict) -> dict:
        before = self.embedder.seconds
        vectors = self.embedder.embed_documents([str(t) for t in batch["text"]])
        seconds = self.embedder.seconds - before
        timing = {"id": batch["id"], "seconds": [seconds / len(vectors)] * len(vectors)}
        if self.sink is None:
            return {**timing, "embedding": vectors}
        import json

        chunks = [{**json.loads(str(row)), "id": str(i)} for i, row in zip(batch["id"], batch["chunk"])]
        self.sink.upsert(chunks, vectors)
        return timing


def _sink_row(item: dict, sink: dict | None) -> dict:
    """What an actor writing to a sink needs beyond id and text: the stored text and
    metadata, as one JSON string (Ray's numpy batches would retype the integers)."""
    if sink is None:
        return {}
    import json

    from ragbatch.store import METADATA_KEYS

    return {"chunk": json.dumps({k: item.get(k, "") for k in ("text", *METADATA_KEYS)})}


def gpu_pool(gpus: float) -> tuple[int, float]:
    """(actors, GPU share of each) for a cluster with `gpus` GPUs in all: two actors per
    GPU, so one tokenises while the other runs the model, and never more GPU than the
    cluster has (a cluster may offer a fraction of one)."""
    share = min(0.5, gpus)
    return max(1, int(gpus / share + 1e-9)), share


class RayExecutor:
    name = "ray"
    writes_to_sink = True  # embed(..., sink=...): the actors write to a Chroma server

    def __init__(self, progress, device: str = "auto", batch_size: int = 32):
        self.progress = progress
        self.device = device
        self.batch_size = batch_size
        init_ray()

    def map_files(self, files: list[dict], fn: Callable[[dict], list[dict]]) -> list[dict]:
        import ray

        task = self.progress.add_task("Reading", total=len(files))
        if not files:
            return []
        rows = ray.data.from_items(files).flat_map(fn).take_all()
        self.progress.advance(task, len(files))
        return rows

    def embed(self, items: list[dict], make_embedder: Callable, sink: dict | None = None) -> Iterator[tuple[list[dict], object, float]]:
        """Yield (items, vectors, encode seconds) per block; with a `sink` the actors have
        written the vectors to it, and None is yielded in their place."""
        if not items:
            return
        import numpy as np
        import ray

        spec = make_embedder.spec.as_dict()
        by_id = {item["id"]: item for item in items}
        from ragbatch.chunking import indexed_text

        ordered = sorted(items, key=lambda item: len(indexed_text(item)), reverse=True)
        # Whether to ask Ray for GPUs: the cluster's, not this driver's; each actor then
        # checks its own with the same rule (ragbatch.devices.pick_device).
        gpus = ray.cluster_resources().get("GPU", 0) if self.device != "cpu" else 0
        if self.device == "cuda" and not gpus:
            from ragbatch.errors import RagbatchError

            raise RagbatchError("--device cuda: the Ray cluster has no GPU; use --device cpu or auto")
        if gpus:
            size, share = gpu_pool(gpus)
            pool, per_actor = {"size": size}, {"num_gpus": share, "num_cpus": 1}
            device = "cuda"
        else:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            # On one machine a single actor with every core beats several small ones.
            pool = {"size": 1 if not os.environ.get("RAY_ADDRESS") else max(1, cpus // 4)}
            per_actor = {"num_cpus": cpus if not os.environ.get("RAY_ADDRESS") else 4}
            device = "cpu"
        dataset = ray.data.from_items([{"id": i["id"], "text": indexed_text(i), **_sink_row(i, sink)} for i in ordered]).map_batches(
            _EmbedActor,
            fn_constructor_kwargs={"spec": spec, "device": device, "batch_size": self.batch_size, "sink": sink},
            batch_size=max(self.batch_size, 256),
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(**pool),
            **per_actor,
        )
        task = self.progress.add_task("Embedding", total=len(items))
        for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
            block = [by_id[str(i)] for i in batch["id"]]
            vectors = np.asarray(batch["embedding"], dtype=np.float32) if sink is None else None
            yield block, vectors, float(np.sum(batch["seconds"]))
            self.progress.advance(task, len(block))

    def close(self) -> None:
        pass  # leave Ray running for the rest of the process; it exits with it
