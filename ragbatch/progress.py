"""Progress bars: a rich Progress on stderr, shown only on a terminal.

Stages call `add_task(description, total=n)` and `advance(task, n)` on the Progress they
are given and never import rich, so the same code runs under `--json`, in cron and in
tests (`make_progress(False)`).
"""

from __future__ import annotations

import sys


def make_progress(enabled: bool = True):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not (enabled and sys.stderr.isatty()),
    )
