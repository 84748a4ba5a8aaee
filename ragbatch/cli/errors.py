"""Exit codes and one-line errors: the CLI's side of errors.py.

The library names parameters in its own terms; here each becomes its option
(`chunk_size` -> `--chunk-size`), in errors and in notes alike.
"""

from __future__ import annotations

import errno
import functools
import sys

import click

from ragbatch.errors import Interrupted, Note, RagbatchError

EXIT_PARTIAL = 3


def flag(param: str) -> str:
    """The option of a parameter: `chunk_size` -> `--chunk-size`."""
    return "--" + param.replace("_", "-")


def say(line: str) -> None:
    """A line for the user on stderr; a Note names its parameters as options."""
    click.echo(line.named(flag) if isinstance(line, Note) else line, err=True)


def handle_errors(command):
    """One clear line on stderr and a non-zero exit for known errors; tracebacks only with --debug."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return command(*args, **kwargs)
        except click.ClickException:
            raise  # usage errors: click prints them and exits 2
        except Interrupted as exc:
            click.echo(exc.named(flag), err=True)
            sys.exit(exc.exit_code)
        except RagbatchError as exc:
            if debug:
                raise
            click.echo(f"error: {exc.named(flag)}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - last resort: still one line without --debug
            if debug:
                raise
            if _disk_full(exc):
                filename = getattr(exc, "filename", None)
                where = f" writing {filename}" if filename else ""
                click.echo(f"error: no space left on device{where}; free some space and run the same command again (what was stored before is kept)", err=True)
            else:
                click.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
            sys.exit(1)

    return wrapper


def _disk_full(exc: BaseException) -> bool:
    """ENOSPC from Python, or SQLite's (Chroma's) "database or disk is full"."""
    return getattr(exc, "errno", None) == errno.ENOSPC or any(text in str(exc) for text in ("database or disk is full", "No space left on device"))
