"""ragbatch: batch retrieval-augmented generation on one machine.

The Python API (api.py): `index`, `search`, `ask`, `judge`, `synth`, `evaluate`, `open_store`, `publish`,
`check`. The command line is `ragbatch` (cli/), or `python -m ragbatch`.

Stages, each a package that imports only those before it:
models/ (weights, devices, the embedder) -> store/ -> ingest/ -> retrieval/ ->
generation/ -> asking/ -> evaluation/ -> judging/, synthesis/ -> serving/ -> api.py -> cli/.
"""

from ragbatch.api import ask, check, evaluate, index, judge, open_store, publish, search, synth

__version__ = "0.1.0"
__all__ = ["ask", "check", "evaluate", "index", "judge", "open_store", "publish", "search", "synth"]
