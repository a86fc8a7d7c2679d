"""Errors a user can fix: each names the file (and line) or the recipe key at fault.

The CLI prints ``str(error)`` -- one line per problem -- and exits with code 2; it never
shows a traceback for these. Anything else escaping is a bug in seqkit.
"""

from __future__ import annotations

import codecs


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


class NotTextError(DataError):
    """A file (or stdin) that is not text in the encoding it is read with.

    The reader knows the file, the line (or, for a byte range, the byte) and the encoding;
    the code that chose the encoding knows what sets it -- ``data.encoding`` for a recipe's
    data, ``--encoding`` for the CLI -- and names it with ``naming``, so that the message says
    what to change.

    Args:
        path: the file, or ``<stdin>``.
        encoding: the encoding it was read with, as the user gave it.
        line: the first line that is not text in it.
        byte: instead of a line: where the line that is not text starts.
        setting: what sets the encoding (``None``: nothing the user set).
        unmarked: the text starts with no byte order mark, which ``encoding`` (utf-16,
            utf-32) needs to learn the byte order.
    """

    def __init__(self, path: object, encoding: str, line: int | None = None, byte: int | None = None, setting: str | None = None,
                 unmarked: bool = False):  # fmt: skip
        self.encoding, self.byte, self.setting, self.unmarked = encoding, byte, setting, unmarked
        name = _encoding_name(encoding)
        if unmarked:
            orders = f"{codecs.lookup(encoding).name}-le or {codecs.lookup(encoding).name}-be"  # utf-16-le or utf-16-be
            fix = f"set {setting} to {orders}" if setting else f"read it as {orders}"
            message = f"not {name} text: it starts with no byte order mark, which {name} needs to tell the byte order ({fix})"
        else:
            where = f" in the line at byte {byte}" if byte is not None else ""
            message = f"not {name} text{where} ({_fix(str(path), encoding, setting)})"
        super().__init__(path, message, line=line)

    def naming(self, setting: str) -> "NotTextError":
        """The same error, naming ``setting`` as what sets the encoding."""
        return NotTextError(self.path, self.encoding, self.line, self.byte, setting, self.unmarked)


def _encoding_name(encoding: str) -> str:
    return "UTF-8" if codecs.lookup(encoding).name == "utf-8" else encoding


def _fix(path: str, encoding: str, setting: str | None) -> str:
    """What to do about text that is not in ``encoding``."""
    whose = "the input's" if path == "<stdin>" else "the file's"
    if _encoding_name(encoding) != "UTF-8":
        return f"{setting} is {encoding}: set it to {whose} encoding" if setting else f"read it with {whose} encoding"
    if setting is None:
        return "convert it to UTF-8"
    return f"set {setting} to {whose} encoding, e.g. latin-1, cp1252 or utf-16, or convert it to UTF-8"


class CheckpointError(SeqkitError):
    """A checkpoint directory that is missing, incomplete or inconsistent."""

    def __init__(self, path: object, message: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {_one_line(message)}")


def _one_line(message: str) -> str:
    """A message on one line: details from other libraries (a YAML parser's) can span several."""
    return " ".join(message.split()) if "\n" in message else message
