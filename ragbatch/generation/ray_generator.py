"""vLLM replicas on Ray: the resources each engine takes, the cluster's device, and
`RayGenerator`, a Generator whose `stream` runs on data-parallel replicas.

`ask --executor ray` builds its own pipeline on these rules (asking/ray_answers.py:
its replicas build prompts from retrieved passages); `judge` and `synth` with
`--executor ray` take a RayGenerator where they would take a Generator: prompts are built
here, with the model's own tokenizer and context window read from its config (no engine
on the driver), and generated on the replicas, each a Generator (batch.py) of its own.
"""

from __future__ import annotations

import math
import os
import pickle
import socket
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from ragbatch.errors import ParameterError, RagbatchError
from ragbatch.generation import settings
from ragbatch.generation.batch import Generator
from ragbatch.generation.settings import GenerationInputs, GenerationOptions, GenerationSetup
from ragbatch.generation.vllm_engine import Generation, load_tokenizer, quiet_vllm
from ragbatch.models.weights import resolve_llm
from ragbatch.ray_cluster import init_ray

EXECUTORS = ("auto", "local", "ray")
# From this many requests `auto` generates on Ray: at tens a second on one GPU that is an
# hour or more of generation, where Ray's 15-20 s start-up no longer counts.
RAY_QUESTIONS = 100_000
# CPUs each retrieval actor of `ask` asks for; the replicas share the rest of a CPU cluster.
RETRIEVE_CPUS = 0.5
# Requests per replica call: its engine batches them all; a larger batch leaves the
# engine less often with a draining tail, a smaller one gives finer progress and retries.
REPLICA_BATCH = 256
# Generations per block a replica yields while its batch runs.
YIELD_EVERY = 32


def here() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def choose_executor(name: str, count: int) -> str:
    """`auto`: Ray where RAY_ADDRESS names a cluster or there are RAY_QUESTIONS questions
    (or answers to judge) or more, else this process. The rule of `index`'s executors."""
    if name not in EXECUTORS:
        raise ParameterError("executor", name, "expected auto, local or ray")
    if name != "auto":
        return name
    return "ray" if os.environ.get("RAY_ADDRESS") or count >= RAY_QUESTIONS else "local"


def start_engine(
    options: GenerationOptions, inputs: GenerationInputs | None, executor: str, replicas: int | None, json_output: bool = False
) -> tuple[GenerationSetup, Generator | RayGenerator]:
    """The prepared setup and its engine: one Generator here (`local`), or RayGenerator's
    replicas (`ray`, see choose_executor); judge and synth take either."""
    if executor == "ray":
        setup = prepare_for_cluster(options, inputs)
        return setup, RayGenerator(setup, json_output=json_output, replicas=replicas)
    setup = settings.prepare(options, inputs)
    return setup, Generator.for_setup(setup, json_output=json_output)


def prepare_for_cluster(options: GenerationOptions, inputs: GenerationInputs | None = None) -> GenerationSetup:
    """settings.prepare for engines that run on the cluster: the device is the cluster's
    (cuda where it has GPUs, unless cpu is asked for), not this driver's, which may have none."""
    init_ray()
    import ray

    setup = settings.prepare(replace(options, device="cpu"), inputs)  # the model and settings, checked here
    gpus = ray.cluster_resources().get("GPU", 0)
    if options.device == "cuda" and not gpus:
        raise ParameterError("device", "cuda", "the Ray cluster has no GPU; use device cpu or auto")
    return replace(setup, device="cuda" if gpus and options.device != "cpu" else "cpu")


def replica_resources(cluster: dict, setup: GenerationSetup, replicas: int | None) -> tuple[int, dict, int | None]:
    """(replicas, the Ray resources of each, torch threads of each): on GPUs one engine
    per GPU, or per tensor-parallel group, unless fewer are asked for; on CPUs `replicas`
    (default 1) share the cluster's CPUs beside a retrieval actor."""
    gpus = int(cluster.get("GPU", 0)) if setup.device == "cuda" else 0
    if setup.device == "cuda":
        group = int(setup.engine.get("tensor_parallel_size", 1))
        if gpus < group:
            raise ParameterError("device", "cuda", f"the Ray cluster has {gpus} GPUs, fewer than one engine's {group}")
        most = gpus // group
        return min(replicas or most, most), {"num_gpus": group, "num_cpus": 1}, None
    count = replicas or 1
    cpus = max(1.0, cluster.get("CPU", 1) - RETRIEVE_CPUS)
    return count, {"num_cpus": min(1.0, cpus / count)}, max(1, math.ceil(cpus / count))  # threads: the CPUs the retrieval actor leaves idle too


def start_replica(setup: GenerationSetup, threads: int | None, json_output: bool = False) -> tuple[GenerationSetup, Generator]:
    """The engine of one replica, on this node's copy of the model (the driver's folder
    may not exist here); returns the setup with this node's model path."""
    if not Path(setup.llm_path).is_dir():
        setup = replace(setup, llm_path=resolve_llm(setup.options.llm))
    if threads:
        import torch

        torch.set_num_threads(threads)  # Ray sets OMP_NUM_THREADS to whole CPUs only
    return setup, Generator.for_setup(setup, json_output=json_output)


def replica_pool(ray, count: int, per_replica: dict) -> dict:
    """map_batches arguments of a pool of `count` replicas: a replica that died (out of
    memory) is restarted by Ray and its batch run once more, not forever."""
    return {"compute": ray.data.ActorPoolStrategy(size=count), "max_task_retries": 1, **per_replica}


@contextmanager
def lost_blocks_allowed(ray) -> Iterator[None]:
    """Ray Data goes on past a block whose worker died twice (its rows are then missing,
    and the caller says so in one line) instead of failing with Ray's traceback."""
    context = ray.data.DataContext.get_current()
    allowed, context.max_errored_blocks = context.max_errored_blocks, -1
    try:
        yield
    finally:
        context.max_errored_blocks = allowed


def map_replicas(dataset, udf, constructor: dict, ray, count: int, per_replica: dict):
    with warnings.catch_warnings():
        # max_task_retries has no named parameter in Ray 2.60 (the pinned version) yet
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return dataset.map_batches(
            udf, fn_constructor_kwargs=constructor, batch_size=REPLICA_BATCH, batch_format="numpy", **replica_pool(ray, count, per_replica)
        )


class _Replica:
    """One engine generating the requests of each batch it gets: (index, token ids, constraint)."""

    def __init__(self, setup: GenerationSetup, json_output: bool, sampling: dict, threads: int | None):
        self.setup, self.json_output, self.sampling, self.threads = setup, json_output, sampling, threads
        self.generator: Generator | None = None

    def __call__(self, batch: dict) -> Iterator[dict]:
        import numpy as np

        def block(results: list, fatal: str = "") -> dict:
            return {"result": np.array(results or [b""], dtype=object), "fatal": np.full(max(1, len(results)), fatal, dtype=object)}

        requests = [pickle.loads(r) for r in batch["request"]]
        try:
            if self.generator is None:
                self.setup, self.generator = start_replica(self.setup, self.threads, self.json_output)
        except Exception as exc:  # noqa: BLE001 - one line for the driver, not a traceback
            yield block([], f"vLLM could not start {self.setup.llm_name} on {here()}: {first_line(exc)}")
            return
        constraints = [c for _, _, c in requests] if any(c for _, _, c in requests) else None
        results: list[bytes] = []
        try:
            for j, generation in self.generator.stream([ids for _, ids, _ in requests], constraints=constraints, **self.sampling):
                results.append(pickle.dumps((requests[j][0], generation)))
                if len(results) >= YIELD_EVERY:
                    yield block(results)
                    results = []
        except Exception as exc:  # noqa: BLE001
            self.generator.close()
            self.generator = None
            if results:
                yield block(results)
            yield block([], f"vLLM failed on {here()}: {first_line(exc)}")
            return
        if results:
            yield block(results)


def context_window(setup: GenerationSetup) -> int:
    """The engine's max_model_len, as vLLM derives it from the model's config (no engine)."""
    quiet_vllm()
    from vllm.config import ModelConfig

    return ModelConfig(model=setup.llm_path, max_model_len=setup.options.max_model_len).max_model_len


class RayGenerator:
    """Generator's interface (tokenizer, context_window, stream, close) over `replicas`
    vLLM engines on Ray; each `stream` call is one Ray Data pipeline."""

    def __init__(self, setup: GenerationSetup, json_output: bool = False, replicas: int | None = None):
        init_ray()
        self.setup, self.json_output, self.replicas = setup, json_output, replicas
        self.name = setup.llm_name
        self.tokenizer = load_tokenizer(setup.llm_path)
        self.context_window = context_window(setup)

    def stream(
        self,
        prompts: Iterable[list[int]],
        max_tokens: int,
        temperature: float,
        seed: int | None,
        constraints: Sequence[dict | None] | None = None,
        logprobs: int | None = None,
    ) -> Iterator[tuple[int, Generation]]:
        """Yield (index in prompts, Generation) for every prompt, as replicas finish them;
        a replica that cannot start or fails stops the stream with one line (RagbatchError)."""
        import ray

        prompts = list(prompts)
        if not prompts:
            return
        count, per_replica, threads = replica_resources(ray.cluster_resources(), self.setup, self.replicas)
        items = [{"request": pickle.dumps((i, ids, constraints[i] if constraints else None))} for i, ids in enumerate(prompts)]
        sampling = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed, "logprobs": logprobs}
        constructor = {"setup": self.setup, "json_output": self.json_output, "sampling": sampling, "threads": threads}
        dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items) // REPLICA_BATCH))
        dataset = map_replicas(dataset, _Replica, constructor, ray, count, per_replica)
        returned: set[int] = set()
        with lost_blocks_allowed(ray):
            for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
                for fatal, packed in zip(batch["fatal"], batch["result"]):
                    if fatal:
                        raise RagbatchError(str(fatal))
                    index, generation = pickle.loads(packed)
                    if index not in returned:  # a retried batch may send one twice
                        returned.add(index)
                        yield index, generation
        if len(returned) < len(prompts):
            lost = len(prompts) - len(returned)
            raise RagbatchError(
                f"{lost} of {len(prompts)} requests got no answer from the Ray cluster (a worker died twice on them); run the same command again"
            )

    def close(self) -> None:
        pass  # each stream's replicas end with it
