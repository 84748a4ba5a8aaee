"""The command line: `ragbatch COMMAND` (main.py), its option groups (options.py), its
errors and exit codes (errors.py) and its tables (render.py). Nothing imports it."""

from ragbatch.cli.main import main

__all__ = ["main"]
