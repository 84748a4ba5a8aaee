"""Run the app: uvicorn in this process, or Ray Serve replicas (--replicas N or RAY_ADDRESS)."""

from __future__ import annotations

import os

from ragbatch.errors import RagbatchError
from ragbatch.serving.app import create_app
from ragbatch.serving.options import Prepared, check_port, is_loopback
from ragbatch.serving.ray_serve import serve_with_ray


def serve(prepared: Prepared, notify, debug: bool = False) -> None:
    options = prepared.options
    if not debug:
        quiet_engine_process()
    if not options.limits.api_key and not is_loopback(options.host):
        notify(
            f"warning: listening on {options.host} without an API key: anyone who can reach port {options.port} can use the model and read the store (set RAGBATCH_API_KEY)"
        )
    if options.replicas is not None or os.environ.get("RAY_ADDRESS"):
        return serve_with_ray(prepared, notify, debug)
    check_port(options.host, options.port)
    import uvicorn

    app = create_app(prepared, notify)
    config = uvicorn.Config(app, host=options.host, port=options.port, log_level="info" if debug else "warning", access_log=debug, lifespan="on")
    server = uvicorn.Server(config)
    server.run()
    if not server.started:  # the lifespan failed (uvicorn logged why): not a clean exit
        raise RagbatchError("the server did not start (see the message above; {debug} shows more)", refers=("debug",))


def quiet_engine_process() -> None:
    """vLLM's engine core runs in a child process that never ran our CLI's quiet_libraries:
    let vLLM configure its own loggers there at VLLM_LOGGING_LEVEL (ERROR), and drop the
    FutureWarnings its imports print."""
    os.environ["VLLM_CONFIGURE_LOGGING"] = "1"
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
