"""Runs the same stage functions on Ray Data: for large inputs and for clusters.

Files are read and chunked by Ray tasks; the embedder runs in an actor pool (on a
GPU machine each actor takes a fraction of the GPU, so tokenisation in one overlaps
the forward pass in another). Results stream back to the driver, where the one
Chroma writer lives. `RAY_ADDRESS` is honoured; otherwise a local Ray is started.
"""

from __future__ import annotations

import logging
import math
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
    """One embedder per actor, loaded when the first chunk that needs it arrives.

    Each batch holds every row read (chunks and per-file error rows). Only chunks whose
    id is not already stored are embedded; the others pass through with their text
    dropped, so the driver learns their ids without their texts crossing the cluster.
    Adds `new` (was embedded), `embedding` (zeros where not new) and `seconds`.
    """

    def __init__(self, spec: dict, device: str, batch_size: int, threads: int | None, stored: list):
        import numpy as np
        import ray

        self.spec, self.device, self.batch_size, self.threads = spec, device, batch_size, threads
        # The stored ids, sorted bytes: one shared object-store copy, not a pickled set
        # per actor (wrapped in a list so Ray hands over the reference, not the value).
        self.stored = ray.get(stored[0]) if stored else np.array([], dtype="S32")
        self.embedder = None
        self.dimension = None

    def _is_stored(self, ids):
        import numpy as np

        if not len(self.stored):
            return np.zeros(len(ids), dtype=bool)
        keys = np.asarray(ids).astype(self.stored.dtype)
        at = np.searchsorted(self.stored, keys).clip(max=len(self.stored) - 1)
        return self.stored[at] == keys

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from ragbatch.embedding import Embedder, EmbedderSpec, describe_embedder

        new = (batch["error"] == "") & ~self._is_stored(batch["id"])
        if self.dimension is None:
            self.dimension = describe_embedder(EmbedderSpec(**self.spec)).dimension
        vectors = np.zeros((len(new), self.dimension), dtype=np.float32)
        seconds = np.zeros(len(new), dtype=np.float64)
        if new.any():
            if self.embedder is None:
                if self.threads:  # Ray sets OMP_NUM_THREADS to the actor's whole CPUs only
                    import torch

                    torch.set_num_threads(self.threads)
                self.embedder = Embedder(EmbedderSpec(**self.spec), device=self.device, batch_size=self.batch_size)
            before = self.embedder.seconds
            from ragbatch.chunking import indexed_text

            texts = [indexed_text({"text": str(t), "context": str(c)}) for t, c in zip(batch["text"][new], batch["context"][new])]
            vectors[new] = self.embedder.embed_documents(texts)
            seconds[new] = (self.embedder.seconds - before) / int(new.sum())
        out = dict(batch)
        out["text"] = np.where(new, batch["text"], "")
        out.update(new=new, embedding=vectors, seconds=seconds)
        return out


# CPUs asked for each read-and-chunk task. Reading runs beside the embed actors in one
# streaming pipeline, so the actors must leave room for it: an actor holding every CPU
# would starve the reads that feed it (the pipeline then waits forever).
READ_CPUS = 0.5


def cpu_pool(cpus: float, cluster: bool) -> tuple[int, float, int]:
    """(actors, CPUs of each, torch threads of each) for embedding on CPUs, leaving
    READ_CPUS for reading.

    On one machine a single actor with every other core beats several small ones (its
    torch threads are set to the cores it shares with reading); on a cluster, actors of
    up to 4 CPUs."""
    room = max(READ_CPUS, cpus - READ_CPUS)
    if not cluster:
        return 1, room, max(1, int(cpus))
    per_actor = min(4.0, room)
    return max(1, int(room // per_actor)), per_actor, max(1, math.ceil(per_actor))


def gpu_pool(gpus: float) -> tuple[int, float]:
    """(actors, GPU share of each) for a cluster with `gpus` GPUs in all: two actors per
    GPU, so one tokenises while the other runs the model, and never more GPU than the
    cluster has (a cluster may offer a fraction of one)."""
    share = min(0.5, gpus)
    return max(1, int(gpus / share + 1e-9)), share


class RayExecutor:
    name = "ray"

    def __init__(self, progress, device: str = "auto", batch_size: int = 32):
        self.progress = progress
        self.device = device
        self.batch_size = batch_size
        init_ray()

    def stream(self, files: list[dict], fn: Callable[[dict], list[dict]], stored, make_embedder) -> Iterator[tuple[list[dict], list[dict], object, float]]:
        """One streaming Ray Data pipeline: files -> fn (read and chunk, Ray tasks) ->
        embed what is not in `stored` (actor pool) -> the driver, batch by batch.

        Yields (rows read but not embedded: stored chunks without their text, and error
        rows; new chunks; their vectors; seconds inside model.encode). Ray Data's
        backpressure holds reading and embedding back while the driver's writer is busy,
        so the driver never holds more than a few batches of texts.
        """
        if not files:
            return
        import numpy as np
        import ray

        spec = make_embedder.spec.as_dict()
        # Whether to ask Ray for GPUs: the cluster's, not this driver's; each actor then
        # checks its own with the same rule (ragbatch.devices.pick_device).
        gpus = ray.cluster_resources().get("GPU", 0) if self.device != "cpu" else 0
        if self.device == "cuda" and not gpus:
            from ragbatch.errors import RagbatchError

            raise RagbatchError("--device cuda: the Ray cluster has no GPU; use --device cpu or auto")
        if gpus:
            size, share = gpu_pool(gpus)
            pool, per_actor = {"size": size}, {"num_gpus": share, "num_cpus": 1}
            device, threads = "cuda", None
        else:
            cpus = ray.cluster_resources().get("CPU", 1)
            size, actor_cpus, threads = cpu_pool(cpus, cluster=bool(os.environ.get("RAY_ADDRESS")))
            pool, per_actor = {"size": size}, {"num_cpus": actor_cpus}
            device = "cpu"
        stored_ids = np.sort(np.array([i.encode() for i in stored], dtype=bytes)) if stored else None
        dataset = (
            ray.data.from_items(files)
            .flat_map(fn, num_cpus=READ_CPUS)
            .map_batches(
                _EmbedActor,
                fn_constructor_kwargs={
                    "spec": spec,
                    "device": device,
                    "batch_size": self.batch_size,
                    "threads": threads,
                    "stored": [ray.put(stored_ids)] if stored_ids is not None else [],
                },
                batch_size=max(self.batch_size, 256),
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(**pool),
                **per_actor,
            )
        )
        for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
            new = np.asarray(batch["new"], dtype=bool)
            columns = {key: batch[key].tolist() for key in batch if key not in ("new", "embedding", "seconds")}
            rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
            yield (
                [row for row, is_new in zip(rows, new) if not is_new],
                [row for row, is_new in zip(rows, new) if is_new],
                np.asarray(batch["embedding"], dtype=np.float32)[new],
                float(np.sum(batch["seconds"])),
            )

    def close(self) -> None:
        pass  # leave Ray running for the rest of the process; it exits with it
