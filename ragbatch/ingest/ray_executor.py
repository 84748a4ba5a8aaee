"""Runs the same stage functions on Ray Data: for large inputs and for clusters.

One streaming pipeline: files -> read and chunk (Ray tasks on the driver's node, the one
machine known to see the input) -> embed what is not stored yet (an actor pool on any
node; on a GPU machine each actor takes a fraction of the GPU, so tokenisation in one
overlaps the forward pass in another) -> the driver, where the one Chroma writer of a
local store lives. Ray Data's backpressure holds reading and embedding back while the
writer is busy. A store on a Chroma server is written by the embed actors themselves,
several at once (the server serialises writes): the parallel write path.

`RAY_ADDRESS` is honoured (the cluster gets the user's HF_* and RAGBATCH_* settings
through the job's runtime_env); otherwise a local Ray is started.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Collection, Iterator

from ragbatch.errors import ParameterError, RagbatchError
from ragbatch.ingest.executor import ReadFile, StreamBlock
from ragbatch.models.embedder import Embedder, EmbedderLoader, EmbedderSpec, describe_embedder, locate_here
from ragbatch.progress import working
from ragbatch.ray_cluster import init_ray
from ragbatch.store.records import CHUNK_FIELDS, indexed_text
from ragbatch.store.server import ServerAddress, ServerVectors, unreachable

# Extra Ray resources each embedding actor asks for, as JSON: '{"embed_node": 1}' keeps
# embedding on the nodes started with `ray start --resources '{"embed_node": N}'`.
EMBED_RESOURCES_ENV = "RAGBATCH_EMBED_RESOURCES"


def embed_resources(environ=None) -> dict[str, float]:
    raw = (os.environ if environ is None else environ).get(EMBED_RESOURCES_ENV, "")
    if not raw:
        return {}
    try:
        resources = json.loads(raw)
        if not isinstance(resources, dict) or not all(isinstance(v, (int, float)) and v > 0 for v in resources.values()):
            raise ValueError
    except ValueError:
        raise RagbatchError(f'{EMBED_RESOURCES_ENV}={raw}: expected a JSON object of positive amounts, e.g. {{"embed_node": 1}}') from None
    return {str(k): float(v) for k, v in resources.items()}


class _EmbedActor:
    """One embedder per actor, loaded when the first chunk that needs it arrives.

    The weights are found on the actor's own node (`locate_here`): the driver's folder
    may not exist there. Each batch holds every row read (chunks and per-file error
    rows). Only chunks whose id is not already stored and whose text key is not known
    are embedded, the first of each key in a batch (another actor may embed the same text
    at the same time: the driver keeps one vector); the others pass through with their
    text dropped, so the driver learns their ids without their texts crossing the
    cluster. Adds `new` (was embedded), `embedding` (zeros where not new) and `seconds`.

    Given a `server` (a ServerAddress: plain values any process can open), the
    actor upserts its new chunks into that collection itself and returns no `embedding`,
    but a `writer` column naming itself (host:pid) on the rows it wrote.
    """

    def __init__(self, spec: dict, device: str, batch_size: int, threads: int | None, stored: list, known: list, server: ServerAddress | None = None):
        import ray

        self.spec, self.device, self.batch_size, self.threads = spec, device, batch_size, threads
        # The stored ids and the known text keys, sorted bytes: one shared object-store copy
        # each, not a pickled set per actor (wrapped in a list so Ray hands over the
        # reference, not the value).
        self.stored = ray.get(stored[0]) if stored else None
        self.known = ray.get(known[0]) if known else None
        self.embedder: Embedder | None = None
        self.dimension = 0
        self.local_spec: EmbedderSpec | None = None
        self.server = server
        self.server_store: ServerVectors | None = None

    def _is_new(self, batch: dict):
        """Rows to embed: chunks not stored, of a text not known, the first of each text."""
        import numpy as np

        new = (batch["error"] == "") & ~_among(batch["id"], self.stored) & ~_among(batch["key"], self.known)
        _, first = np.unique(np.asarray(batch["key"]), return_index=True)
        firsts = np.zeros(len(new), dtype=bool)
        firsts[first] = True
        return new & firsts

    def _spec(self) -> EmbedderSpec:
        """The embedder found on this node; its dimension is known from then on."""
        if self.local_spec is None:
            self.local_spec = locate_here(EmbedderSpec(**self.spec))
            self.dimension = describe_embedder(self.local_spec).dimension
        return self.local_spec

    def _embedder(self) -> Embedder:
        if self.embedder is None:
            if self.threads:  # Ray sets OMP_NUM_THREADS to the actor's whole CPUs only
                import torch

                torch.set_num_threads(self.threads)
            self.embedder = Embedder(self._spec(), device=self.device, batch_size=self.batch_size)
        return self.embedder

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        new = self._is_new(batch)
        vectors = None
        seconds = np.zeros(len(new), dtype=np.float64)
        writer = ""
        try:
            self._spec()
            vectors = np.zeros((len(new), self.dimension), dtype=np.float32)
            if new.any():
                embedder = self._embedder()
                before = embedder.seconds
                texts = [indexed_text({"text": str(t), "context": str(c)}) for t, c in zip(batch["text"][new], batch["context"][new])]
                vectors[new] = embedder.embed_documents(texts)
                seconds[new] = (embedder.seconds - before) / int(new.sum())
                if self.server is not None:
                    writer = self._write(self.server, batch, new, vectors[new])
        except RagbatchError as exc:
            # Passed on as a value: Ray keeps only the traceback text of an exception.
            new[:] = False
            batch = {**batch, "fatal": np.full(len(new), str(exc), dtype=object)}
        out = dict(batch)
        out["text"] = np.where(new, batch["text"], "")
        out.update(new=new, seconds=seconds)
        if self.server is None:
            out["embedding"] = vectors if vectors is not None else np.zeros((len(new), self.dimension or 1), dtype=np.float32)
        else:
            out["writer"] = np.where(new, writer, "")
        return out

    def _write(self, server: ServerAddress, batch: dict, new, vectors) -> str:
        """Upsert the new chunks into the server's collection; returns this writer's name."""
        import socket

        if self.server_store is None:
            self.server_store = ServerVectors(server)
        chunks = rows({key: batch[key][new] for key in ("id", "text", *CHUNK_FIELDS)})
        try:
            self.server_store.upsert(chunks, vectors)
        except Exception as exc:  # noqa: BLE001 - the server went away mid-run
            raise unreachable(server.url, exc) from None
        return f"{socket.gethostname()}:{os.getpid()}"


def _among(values, sorted_values):
    """For each of `values`, whether it is in `sorted_values` (sorted bytes, or None)."""
    import numpy as np

    if sorted_values is None or not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    keys = np.asarray(values).astype(sorted_values.dtype)
    at = np.searchsorted(sorted_values, keys).clip(max=len(sorted_values) - 1)
    return sorted_values[at] == keys


def sorted_bytes(values) -> object:
    """`values` (strings) as a sorted numpy array of bytes, for _among; None for none."""
    import numpy as np

    return np.sort(np.array([v.encode() for v in values], dtype=bytes)) if values else None


def rows(columns: dict) -> list[dict]:
    """A numpy batch's columns as row dicts of Python values (tolist() turns numpy's
    integers and strings into Python's, as JSON and pack() expect)."""
    lists = {key: values.tolist() for key, values in columns.items()}
    return [dict(zip(lists, values)) for values in zip(*lists.values())]


# CPUs asked for each read-and-chunk task. Reading runs beside the embed actors in one
# streaming pipeline, so the actors must leave room for it: an actor holding every CPU
# would starve the reads that feed it (the pipeline then waits forever).
READ_CPUS = 0.5
# The driver's memory must not grow with the corpus, and the driver maps every result
# block it reads from Ray's object store. With Ray Data's defaults (blocks of up to
# 128 MiB, and read-ahead bounded only by half the object store, itself 30 % of RAM),
# fast reading buffers far ahead of a slow embedder, new blocks land in ever new parts of
# the store, and the driver's RSS counted more of those pages the longer the run (137 MiB
# at 200 MB of text). Small blocks and an object-store budget of a few dozen batches per
# embedding actor keep the store's memory recycled in place: measured flat, 32 MiB from
# 300k to 600k rows of 1 KB, where each setting alone still grew (object_store_bench.py),
# and 26 MiB at 200 MB of text (scale_bench.py).
BLOCK_BYTES = 2**20
STORE_BYTES_PER_ACTOR = 64 * 2**20
# Read tasks at once on a driver node that offers Ray no CPU (a head started with
# --num-cpus=0): they then ask for none, and this caps them instead.
ZERO_CPU_READERS = 2


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


def limit_pool(size: int, resources: dict[str, float], available: dict[str, float]) -> int:
    """No more actors than the cluster's custom resources can hold at once."""
    for name, amount in resources.items():
        fits = int(available.get(name, 0) / amount + 1e-9)
        if fits < 1:
            raise RagbatchError(f"{EMBED_RESOURCES_ENV}: no node of the Ray cluster offers {amount:g} {name!r}")
        size = min(size, fits)
    return size


def read_on_driver_node() -> dict:
    """Ray arguments that keep read-and-chunk tasks on the driver's node: the input is
    named by the driver's paths, which other nodes may not see."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    node_cpus = next((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["NodeID"] == node_id), 0)
    pinned = {"label_selector": {"ray.io/node-id": node_id}}
    if node_cpus >= READ_CPUS:
        return {"num_cpus": READ_CPUS, **pinned}
    return {"num_cpus": 0, "compute": ray.data.TaskPoolStrategy(size=ZERO_CPU_READERS), **pinned}


def pipeline_memory(actors: int) -> None:
    """Small blocks and a bounded object-store budget for the pipeline built next (see
    BLOCK_BYTES): reading stays a few batches ahead of embedding, not a corpus ahead."""
    import ray

    context = ray.data.DataContext.get_current()
    context.target_max_block_size = BLOCK_BYTES
    limits = context.execution_options.resource_limits
    context.execution_options.resource_limits = limits.copy(object_store_memory=STORE_BYTES_PER_ACTOR * actors)


class RayExecutor:
    name = "ray"

    def __init__(self, progress, device: str = "auto", batch_size: int = 32):
        self.progress = progress
        self.device = device
        self.batch_size = batch_size
        self.resources = embed_resources()
        init_ray()

    def stream(
        self,
        files: list[dict],
        read: ReadFile,
        stored: Collection[str],
        known: Collection[str],
        embedder: EmbedderLoader,
        server: ServerAddress | None = None,
    ) -> Iterator[StreamBlock]:
        """One streaming Ray Data pipeline: files -> read (read and chunk, Ray tasks on this
        node) -> embed what is not in `stored` nor `known` (actor pool) -> here, batch by batch.

        Stored chunks come back without their text; with a `server`, the actors write the
        new vectors themselves and yield none. The driver never holds more than a few
        batches of texts.
        """
        if not files:
            return
        import numpy as np
        import ray

        spec = embedder.spec.as_dict()
        cluster = ray.cluster_resources()
        # Whether to ask Ray for GPUs: the cluster's, not this driver's; each actor then
        # checks its own with the same rule (ragbatch.models.devices.pick_device).
        gpus = cluster.get("GPU", 0) if self.device != "cpu" else 0
        if self.device == "cuda" and not gpus:
            raise ParameterError("device", "cuda", "the Ray cluster has no GPU; use device cpu or auto")
        per_actor: dict[str, object]  # the Ray resources each embedding actor asks for
        if gpus:
            size, share = gpu_pool(gpus)
            pool, per_actor = {"size": size}, {"num_gpus": share, "num_cpus": 1}
            device, threads = "cuda", None
        else:
            size, actor_cpus, threads = cpu_pool(cluster.get("CPU", 1), cluster=bool(os.environ.get("RAY_ADDRESS")))
            pool, per_actor = {"size": size}, {"num_cpus": actor_cpus}
            device = "cpu"
        if self.resources:
            pool["size"] = limit_pool(pool["size"], self.resources, cluster)
            per_actor["resources"] = self.resources
        pipeline_memory(pool["size"])
        stored_ids, known_keys = sorted_bytes(stored), sorted_bytes(known)
        dataset = (
            ray.data.from_items(files)
            .flat_map(read, **read_on_driver_node())
            .map_batches(
                _EmbedActor,
                fn_constructor_kwargs={
                    "spec": spec,
                    "device": device,
                    "batch_size": self.batch_size,
                    "threads": threads,
                    "stored": [ray.put(stored_ids)] if stored_ids is not None else [],
                    "known": [ray.put(known_keys)] if known_keys is not None else [],
                    "server": server,
                },
                batch_size=max(self.batch_size, 256),
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(**pool),
                **per_actor,
            )
        )
        arrived: set[str] = set()  # paths with rows back
        batches = iter(dataset.iter_batches(batch_format="numpy", batch_size=None))
        with working(self.progress, f"Starting Ray Data, loading {embedder.spec.name}"):
            first = next(batches, None)  # the pipeline starts, and the actors load the model
        for batch in itertools.chain([first] if first is not None else [], batches):
            new = np.asarray(batch["new"], dtype=bool)
            got = rows({key: batch[key] for key in batch if key not in ("new", "embedding", "seconds")})
            paths = {row["path"] for row in got} - arrived
            arrived |= paths
            yield StreamBlock(
                [row for row, is_new in zip(got, new) if not is_new],
                [row for row, is_new in zip(got, new) if is_new],
                np.asarray(batch["embedding"], dtype=np.float32)[new] if server is None else None,
                float(np.sum(batch["seconds"])),
                read=tuple(sorted(paths)),  # a file's rows may span batches: counted when its first arrives
            )

    def close(self) -> None:
        pass  # leave Ray running for the rest of the process; it exits with it
