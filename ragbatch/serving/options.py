"""What `ragbatch serve` takes, checked before any model loads: an unknown store, model,
prices file or engine argument fails at start with one line, not after a minute of loading."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ragbatch.errors import RagbatchError
from ragbatch.generation import settings
from ragbatch.generation.settings import GenerationOptions, GenerationSetup
from ragbatch.serving.limits import Limits

__all__ = ["Limits", "Prepared", "ServeOptions", "check_port", "is_loopback", "prepare"]
from ragbatch.store.manifest import require_manifest, require_store_path
from ragbatch.store.published import is_published


@dataclass
class ServeOptions:
    store: Path
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int | None = None  # Ray Serve replicas; None: one process (or RAY_ADDRESS: 1 replica)
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    limits: Limits = field(default_factory=Limits)
    rerank: str | None = None  # a cross-encoder every retrieval is reordered by (a server setting, not a request's)


@dataclass
class Prepared:
    """Everything the server needs, resolved: the options and the generation setup."""

    options: ServeOptions
    setup: GenerationSetup


def prepare(options: ServeOptions, notify=lambda line: None) -> Prepared:
    store = Path(options.store)
    if is_published(store):
        require_store_path(store)
        require_manifest(store.resolve())
    else:
        require_manifest(store)
    options = replace(options, generation=settings.with_default_llm(options.generation, notify))
    return Prepared(options, settings.prepare(options.generation))


def is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """Fail with one line when the address is taken (uvicorn would log a traceback-like wall)."""
    import socket

    try:
        with socket.create_server((host, port), reuse_port=False):
            pass
    except OSError as exc:
        raise RagbatchError(f"{{host}} {host} {{port}} {port}: cannot listen there ({exc.strerror})", refers=("host", "port")) from None
