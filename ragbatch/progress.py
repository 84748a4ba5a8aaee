"""Progress bars: a rich Progress on stderr, shown only on a terminal.

Stages call `add_task(description, total=n)`, `advance(task, n)` and `update(task,
total=n)` on the Progress they are given, and `working(progress, what)` around a wait
with no count (a model loading), and never import rich, so the same code runs under
`--json`, in cron and in tests (`make_progress(False)`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


def make_progress(enabled: bool = True):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        SpinnerColumn(finished_text=" "),
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not (enabled and sys.stderr.isatty()),
    )


@contextmanager
def working(progress, what: str) -> Iterator[None]:
    """A spinner saying `what` is going on (loading a model) while the block runs."""
    if progress is None:
        yield
        return
    task = progress.add_task(what, total=None)
    try:
        yield
    finally:
        progress.remove_task(task)
