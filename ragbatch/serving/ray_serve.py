"""Scale-out: the same FastAPI app as a Ray Serve deployment with N replicas.

Used only with `--replicas N` or `RAY_ADDRESS` (then N defaults to 1); otherwise `serve`
stays one process. Each replica runs the app's lifespan: its own embedder, retriever
(hot reload included) and vLLM engine, and its own /metrics. Ray Serve's proxy listens on
--host/--port and spreads requests over the replicas. On a cluster the store path must be
readable on every node (a published link on shared storage).
"""

from __future__ import annotations

import os
import signal
import threading
import time

from ragbatch.errors import ParameterError
from ragbatch.serving.app import create_app
from ragbatch.serving.options import Prepared, check_port


def serve_with_ray(prepared: Prepared, notify, debug: bool = False) -> None:
    options = prepared.options
    address = os.environ.get("RAY_ADDRESS")
    replicas = options.replicas or 1
    if not address:
        check_port(options.host, options.port)
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise ParameterError("replicas", None, f"Ray Serve is not installed ({exc.name} missing); pip install 'ray[serve]==2.60.*'") from None
    import logging

    started = time.perf_counter()
    quiet = {"logging_level": logging.INFO if debug else logging.WARNING, "log_to_driver": debug}
    if address:
        ray.init(address=address, **quiet)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", include_dashboard=False, num_cpus=max(os.cpu_count() or 1, replicas), **quiet)
    if not debug:
        for name in ("ray", "ray.serve"):  # "Started Serve in namespace ..."
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        serve.start(http_options={"host": options.host, "port": options.port}, logging_config={"log_level": "INFO" if debug else "WARNING"})
        resources = {"num_gpus": 1} if prepared.setup.device == "cuda" else {"num_cpus": 1}
        app = create_app(prepared, notify)

        @serve.deployment(name="ragbatch", num_replicas=replicas, ray_actor_options=resources, max_ongoing_requests=256)
        @serve.ingress(app)
        class Ragbatch:
            pass

        serve.run(Ragbatch.bind(), name="ragbatch", route_prefix="/")  # type: ignore[attr-defined]  # added by @serve.deployment
        notify(
            f"serving {options.store} on http://{options.host}:{options.port} with {replicas} Ray Serve replicas (ready in {time.perf_counter() - started:.0f} s)"
        )
        _wait_for_signal()
        serve.delete("ragbatch")
    finally:
        if not address:
            serve.shutdown()
        ray.shutdown()


def _wait_for_signal() -> None:
    """Until SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
