"""Joining Ray: the one rule `index --executor ray` and `ask --executor ray` start it by.

`RAY_ADDRESS` names a cluster to join (its workers then get the driver's HF_* and
RAGBATCH_* settings through the job's runtime_env, nothing else of its environment);
otherwise a local Ray starts with this machine's cores. Ray is imported here, lazily.
"""

from __future__ import annotations

import logging
import os

# Environment variables a cluster's workers get from the driver: Hugging Face's (cache,
# endpoint, token, offline switch) and ragbatch's own.
FORWARDED_ENV_PREFIXES = ("HF_", "RAGBATCH_")


def forwarded_env(environ=None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    return {key: value for key, value in environ.items() if key.startswith(FORWARDED_ENV_PREFIXES)}


def init_ray(num_cpus: int | None = None) -> None:
    """Start or join Ray once per process, quietly (no dashboard, no progress bars)."""
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False, "include_dashboard": False}
    if address:
        # A cluster decides its own resources; its workers do not inherit this shell.
        ray.init(address=address, runtime_env={"env_vars": forwarded_env()}, **quiet)
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), **quiet)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
