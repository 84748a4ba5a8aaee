"""What `ragbatch serve` takes, checked before any model loads: an unknown store, model,
prices file or engine argument fails at start with one line, not after a minute of loading."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ragbatch.errors import RagbatchError


@dataclass
class ServeOptions:
    store: Path
    llm: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int | None = None  # Ray Serve replicas; None: one process (or RAY_ADDRESS: 1 replica)
    max_model_len: int | None = None
    device: str = "auto"
    seed: int = 0
    system_prompt: str | None = None
    prompt_file: Path | None = None
    count_tokens: str | None = None
    prices: Path | None = None
    price_prompt: float | None = None
    price_completion: float | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int | None = None
    vllm_args: dict = field(default_factory=dict)


@dataclass
class Prepared:
    """Everything the server needs, resolved: paths, prompt, price, engine settings."""

    options: ServeOptions
    llm_name: str
    llm_path: str
    device: str
    system_prompt: str
    price: object  # pricing.Price
    engine: dict


def prepare(options: ServeOptions) -> Prepared:
    from ragbatch.asking import system_prompt_of
    from ragbatch.devices import pick_device
    from ragbatch.engine_args import engine_settings
    from ragbatch.manifest import require_manifest
    from ragbatch.models import DEFAULT_LLM, resolve_llm
    from ragbatch.pricing import load_prices, price_for
    from ragbatch.store_cache import is_published

    store = Path(options.store)
    if is_published(store):
        from ragbatch.manifest import require_store_path

        require_store_path(store)
        require_manifest(Path(store).resolve())
    else:
        require_manifest(store)
    if options.count_tokens:
        from ragbatch.tokencount import encoding

        encoding(options.count_tokens)  # fails now if it cannot be loaded offline
    table = load_prices(options.prices) if options.prices else None
    llm_name = options.llm or DEFAULT_LLM
    system_prompt = system_prompt_of(options)  # --system-prompt / --prompt-file, as `ask` reads them
    return Prepared(
        options=options,
        llm_name=llm_name,
        llm_path=resolve_llm(options.llm),
        device=pick_device(options.device),
        system_prompt=system_prompt,
        price=price_for(llm_name, table, options.price_prompt, options.price_completion),
        engine=engine_settings(options.gpu_memory_utilization, options.tensor_parallel_size, options.vllm_args),
    )


def check_port(host: str, port: int) -> None:
    """Fail with one line when the address is taken (uvicorn would log a traceback-like wall)."""
    import socket

    try:
        with socket.create_server((host, port), reuse_port=False):
            pass
    except OSError as exc:
        raise RagbatchError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None
