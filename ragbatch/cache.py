"""Where ragbatch keeps what it builds once and reuses: converted models, tiktoken
files, verified copies of published stores. `$RAGBATCH_CACHE`, else ~/.cache/ragbatch."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(override: str | Path | None = None) -> Path:
    return Path(override or os.environ.get("RAGBATCH_CACHE") or "~/.cache/ragbatch").expanduser()
