"""Where commands read and write when the user names no place, and where ragbatch keeps
what it builds once and reuses.

`ragbatch index around.txt` and `ragbatch ask questions.jsonl` need no options: the
store defaults to `stores/default` and answers to `outputs/`, both relative to the
current directory. `RAGBATCH_STORE` replaces the default store (the CLI reads it).
The cache (converted models, tiktoken files, verified copies of published stores) is
`$RAGBATCH_CACHE`, else ~/.cache/ragbatch.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

STORE_ENV = "RAGBATCH_STORE"
DEFAULT_STORE = Path("stores") / "default"
OUTPUTS = Path("outputs")


def default_store() -> Path:
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


def default_answers(questions: str, ids: list[str]) -> Path:
    """`outputs/<questions file name>-answers.parquet`: the whole name, so q.txt and q.csv
    keep apart. For `-` (stdin), `outputs/stdin-<digest of the question ids>-answers.parquet`:
    the same questions piped again resume their file, other questions get another."""
    if questions == "-":
        digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:12]
        return OUTPUTS / f"stdin-{digest}-answers.parquet"
    return OUTPUTS / f"{Path(questions).name}-answers.parquet"


def store_hint(store: Path) -> str:
    """The index command that creates `store`: no --store where the default already names it."""
    if Path(store) == default_store():
        return "ragbatch index FILES"
    return f"ragbatch index FILES --store {store}"


def cache_dir(override: str | Path | None = None) -> Path:
    return Path(override or os.environ.get("RAGBATCH_CACHE") or "~/.cache/ragbatch").expanduser()
