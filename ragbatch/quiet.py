"""Quiet the model libraries: no progress bars, warnings and errors only."""

from __future__ import annotations

import os


def quiet_libraries() -> None:
    """Set before any model library is imported: no log walls.

    The environment variables also reach child processes (Ray workers). Hub settings
    (HF_HUB_OFFLINE, HF_HOME, HF_ENDPOINT, HF_TOKEN) are the user's: see models.py.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "TOKENIZERS_PARALLELISM" not in os.environ:
        # Ours, marked so: the embedder turns it on on CUDA (models/embedder.py).
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        os.environ["RAGBATCH_DEFAULT_TOKENIZERS_PARALLELISM"] = "1"
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # torch's C++ warnings (vLLM's NUMA notice)
    # torch's Python loggers, set at torch's import in every process (vLLM's engine core
    # too): "Triton not available" on CPU installs, where Triton is left out on purpose.
    os.environ.setdefault("TORCH_LOGS", "-torch")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("chromadb", "sentence_transformers", "transformers", "ray", "vllm", "bm25s"):
        logging.getLogger(name).setLevel(logging.ERROR)
