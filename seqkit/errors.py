"""Errors a user can fix: each names the file (and line) or the recipe key at fault.

The CLI prints ``str(error)`` -- one line per problem -- and exits with code 2; it never
shows a traceback for these. Anything else escaping is a bug in seqkit.
"""

from __future__ import annotations


class SeqkitError(Exception):
    """Base class of every error caused by the user's input rather than by seqkit."""


class RecipeError(SeqkitError):
    """A recipe that cannot be used. Carries every problem found, not just the first.

    Args:
        problems: one human-readable line per problem, each naming its file, line and key.
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class DataError(SeqkitError):
    """A data file that is missing, unreadable or malformed."""

    def __init__(self, path: object, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {_one_line(message)}")


class CheckpointError(SeqkitError):
    """A checkpoint directory that is missing, incomplete or inconsistent."""

    def __init__(self, path: object, message: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {_one_line(message)}")


def _one_line(message: str) -> str:
    """A message on one line: details from other libraries (a YAML parser's) can span several."""
    return " ".join(message.split()) if "\n" in message else message
