"""Progress bars on a terminal (rich, on stderr); silence everywhere else.

Stages report through `Progress.task(description, total)` and never import rich
themselves, so the same stage code runs under `--json`, in cron, and in tests.
"""

from __future__ import annotations

import sys


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass

    def update_total(self, total: int) -> None:
        pass


class NullProgress:
    """Used when stderr is not a terminal or output is machine-read."""

    def task(self, description: str, total: int | None = None):
        return _NullTask()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _RichTask:
    def __init__(self, bar, task_id):
        self.bar, self.task_id = bar, task_id

    def advance(self, n: int = 1) -> None:
        self.bar.advance(self.task_id, n)

    def update_total(self, total: int) -> None:
        self.bar.update(self.task_id, total=total)


class RichProgress:
    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )

    def task(self, description: str, total: int | None = None):
        return _RichTask(self.bar, self.bar.add_task(description, total=total))

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()
        return False


def make_progress(enabled: bool):
    return RichProgress() if enabled and sys.stderr.isatty() else NullProgress()
