"""Errors the CLI turns into one clear line and an exit code (no traceback unless --debug)."""


class RagbatchError(Exception):
    """A fatal error with a message meant for the user. Exit code 1."""

    exit_code = 1


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
