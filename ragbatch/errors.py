"""Errors the CLI turns into one clear line and an exit code (no traceback unless --debug),
and the HTTP server into a status and a body.

The library names parameters in its own terms. A message refers to one as `{name}` (its
parameter name, listed in `refers`), and each front end says it its own way: the CLI as
its option (`--chunk-size`), the HTTP server as the body field, Python as the keyword.
A `ParameterError` is about the value of one parameter, which the HTTP server puts in a
422's `loc`. No caller reads a message's text to find out what it is about.
"""

from __future__ import annotations

from collections.abc import Callable


def named(message: str, refers: tuple[str, ...], name: Callable[[str], str]) -> str:
    """`message` with each parameter it refers to (`{param}`) called `name(param)`."""
    for param in refers:
        message = message.replace("{" + param + "}", name(param))
    return message


class Note(str):
    """A line of news for the user (`notify`), naming parameters as errors do."""

    template: str
    refers: tuple[str, ...]

    def __new__(cls, message: str, refers: tuple[str, ...] = ()) -> Note:
        note = super().__new__(cls, named(message, refers, str))
        note.template, note.refers = message, refers
        return note

    def named(self, name: Callable[[str], str]) -> str:
        return named(self.template, self.refers, name)


class RagbatchError(Exception):
    """A fatal error with a message meant for the user. Exit code 1."""

    exit_code = 1

    def __init__(self, message: str = "", refers: tuple[str, ...] = ()):
        self.message, self.refers = message, refers
        super().__init__(self.named(str))

    def named(self, name: Callable[[str], str]) -> str:
        """The message with each parameter it refers to called `name(param)`."""
        return named(self.message, self.refers, name)


class ParameterError(RagbatchError):
    """The value of one parameter cannot be used: `param` names it (`chunk_size`), `value`
    is the value as given (None: the message is about the parameter as a whole)."""

    def __init__(self, param: str, value: object, reason: str, refers: tuple[str, ...] = ()):
        self.param, self.value, self.reason = param, value, reason
        shown = f"{{{param}}} {value}" if value not in (None, "") else f"{{{param}}}"
        super().__init__(f"{shown}: {reason}", (param, *refers))


class Interrupted(RagbatchError):
    """The user stopped the run (Ctrl-C, SIGINT); the message says what was kept. Exit 130."""

    exit_code = 130


class InputFileError(RagbatchError):
    """One input file cannot be used; the run skips it and goes on.

    `where` is the file (and line, when known) the message is about.
    """

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.reason = message


class StoreError(RagbatchError):
    """A store is missing, unreadable, or incompatible with the requested settings."""
