"""A language model's training text read from its files as training goes, never whole.

With ``data.streaming: true`` (or ``auto``, the default, for training text over 1 GiB) a
language model keeps none of its training corpus in memory: ``StreamedText`` lays the
corpus out as ``batch_size`` rows, as ``batch.LMStream`` does, but by bytes: row ``b`` reads
the lines that start in the ``b``-th of ``batch_size`` equal byte ranges of the files (read
as one), tokenizes them as it goes and ends with the first token of the next row, so every
token after the first is a target once and the state a row leaves is the right context for
its next chunk. Memory holds a few lines per row, whatever the size of the corpus; under
DDP a process opens only its own rows. The vocabulary comes from a bounded sample
(``sample_lines``: ``tokenizer.sample_mb`` of text, in 64 evenly spaced pieces), and the
number of chunks of an epoch shows only at its end (``steps_per_epoch`` is an estimate).

Why not ``datasets``' own streaming (``load_dataset("text", streaming=True)``): it reads a
file front to back as one iterator of lines, and the rows of a language model start at
``batch_size`` places across the corpus, which one iterator reaches only by reading and
dropping everything before each. Byte ranges reach them with a ``seek``. Validation and
test text stay in memory (``read.token_stream``).

Byte ranges are cut into lines at the byte 0x0A, so the text must be in an encoding that
writes a newline so (``data.encoding``: UTF-8, latin-1, cp1252, ...; ``config.splits_at_newline_byte``).
A recipe that streams UTF-16 or UTF-32 is refused, and ``auto`` never streams it.
"""

from __future__ import annotations

import codecs
import math
import random
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from tokenizers import Tokenizer

from ..config import splits_at_newline_byte
from ..errors import DataError, NotTextError
from ..tokenize import encode_ids
from .batch import LMChunk

STREAM_ABOVE = 1 << 30  # data.streaming: auto streams training text larger than this many bytes
SAMPLE_PIECES = 64  # sample_lines reads this many evenly spaced pieces
_ENCODE_BYTES = 1 << 16  # lines tokenized together per row


def streams(setting: bool | str, paths: str | Sequence[str], encoding: str = "utf-8") -> bool:
    """Whether a language model streams its training text: ``data.streaming`` is true, or
    ``auto``, the files hold more than ``STREAM_ABOVE`` bytes and their encoding writes a
    newline as the byte 0x0A."""
    if setting != "auto":
        return bool(setting)
    size = sum(path.stat().st_size for path in _paths(paths) if path.is_file())
    return size > STREAM_ABOVE and splits_at_newline_byte(encoding)


class Corpus:
    """Plain text files in ``encoding`` read as one run of bytes, a range at a time.

    Raises:
        DataError: a file is missing, compressed or JSON Lines (streaming reads plain text),
            all of them are empty, or ``encoding`` does not write a newline as the byte 0x0A.
    """

    def __init__(self, paths: str | Sequence[str], encoding: str = "utf-8"):
        self.files: list[tuple[Path, int, int]] = []  # path, size, offset of its first byte
        self.encoding = encoding
        self._utf8 = codecs.lookup(encoding).name == "utf-8"  # then a byte order mark at a file's start is dropped, as in memory
        if not splits_at_newline_byte(encoding):  # a recipe error (config.check_consistency); this is for direct use
            raise DataError(_paths(paths)[0], f"streamed text is cut into lines at the byte 0x0A, which is not a newline in {encoding} (data.encoding): "
                                              "set data.streaming to false")  # fmt: skip
        offset = 0
        for path in _paths(paths):
            if not path.is_file():
                raise DataError(path, "file not found" if not path.exists() else "not a file")
            if path.name.endswith((".gz", ".jsonl")):
                raise DataError(path, "data.streaming reads plain text files; unpack it, or set data.streaming to false")
            size = path.stat().st_size
            self.files.append((path, size, offset))
            offset += size
        self.size = offset
        if self.size == 0:
            raise DataError(self.files[0][0], "holds no text")

    def lines(self, start: int, end: int) -> Iterator[str]:
        """The lines (line ends removed) that start at a byte in ``[start, end)``.

        Lines end at ``\\n``, ``\\r\\n`` or ``\\r``, as ``datasets`` reads text files, so the
        token stream matches the in-memory one.
        """
        for path, size, offset in self.files:
            if offset + size <= start or offset >= end:
                continue
            with path.open("rb") as handle:
                position = max(0, start - offset)
                if position > 0:
                    handle.seek(position - 1)
                    if handle.read(1) != b"\n":
                        handle.readline()  # a line in progress belongs to the range before
                    position = handle.tell()
                while position < end - offset:
                    raw = handle.readline()
                    if not raw:
                        break
                    try:
                        text = raw.decode("utf-8-sig" if self._utf8 and position == 0 else self.encoding)
                    except UnicodeDecodeError:
                        raise NotTextError(path, self.encoding, byte=position) from None
                    text = text.replace("\r\n", "\n").replace("\r", "\n")
                    yield from (text[:-1] if text.endswith("\n") else text).split("\n")
                    position += len(raw)


def sample_lines(paths: str | Sequence[str], max_bytes: int, encoding: str = "utf-8") -> Iterator[str]:
    """Lines to train a tokenizer on: all of them when the files hold at most ``max_bytes``,
    else the lines starting in ``SAMPLE_PIECES`` evenly spaced ranges of ``max_bytes`` in all."""
    corpus = Corpus(paths, encoding)
    if corpus.size <= max_bytes:
        yield from corpus.lines(0, corpus.size)
        return
    piece = max(1, max_bytes // SAMPLE_PIECES)
    for index in range(SAMPLE_PIECES):
        start = index * corpus.size // SAMPLE_PIECES
        yield from corpus.lines(start, start + piece)


class StreamedText:
    """A language model's training text as ``LMChunk`` s of ``bptt`` steps over ``batch_size``
    rows, read from the files as they are needed.

    Args:
        corpus: the training files.
        tokenizer: turns each line into ids; ``<eos>`` follows each line with tokens.
        batch_size: rows of the global batch (all processes).
        bptt: time steps per chunk.
        pad_id: the padding id (targets of rows whose text has run out).
        offset: drop this many tokens at the start of each row (shifts the chunk
            boundaries between epochs).
        rows: the rows this process reads (DDP); ``None``: all.
        device: where the chunks go.
    """

    def __init__(self, corpus: Corpus, tokenizer: Tokenizer, batch_size: int, bptt: int, pad_id: int, offset: int = 0,
                 rows: Optional[range] = None, device: torch.device | str = "cpu"):  # fmt: skip
        self.corpus, self.tokenizer = corpus, tokenizer
        self.batch_size, self.bptt, self.pad_id, self.offset = batch_size, bptt, pad_id, offset
        self.rows = rows if rows is not None else range(batch_size)
        self.device = torch.device(device)
        self.eos = tokenizer.token_to_id("<eos>")

    def chunks(self, start: int = 0) -> Iterator[LMChunk]:
        """The chunks of the epoch from chunk ``start`` on (those before it are read and
        tokenized, not returned: this is how a resumed run finds its place)."""
        rows = [self._row_tokens(row) for row in self.rows]
        pending = [np.empty(0, dtype=np.int64) for _ in rows]  # each row's next tokens: pending[0] is the next input
        for index in range(1 << 62):
            for row, tokens in enumerate(rows):
                parts = [pending[row]]
                while sum(len(part) for part in parts) <= self.bptt and tokens is not None:
                    part = next(tokens, None)
                    if part is None:
                        rows[row] = tokens = None
                    else:
                        parts.append(part)
                pending[row] = np.concatenate(parts) if len(parts) > 1 else parts[0]
            widths = [min(self.bptt, len(tokens) - 1) for tokens in pending]
            width = max(widths)
            if width <= 0:
                if index == 0 and len(self.rows) == self.batch_size:
                    raise DataError(self.corpus.files[0][0], "holds no tokens")
                return
            if index < start:
                pending = [tokens[max(0, w) :] for tokens, w in zip(pending, widths)]
                continue
            token_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            targets = token_ids.copy()
            for row, (tokens, w) in enumerate(zip(pending, widths)):
                if w > 0:
                    token_ids[row, :w], targets[row, :w] = tokens[:w], tokens[1 : w + 1]
                    pending[row] = tokens[w:]
            yield LMChunk(torch.from_numpy(token_ids).to(self.device), torch.from_numpy(targets).to(self.device))

    def _row_tokens(self, row: int) -> Iterator[np.ndarray]:
        """Token ids of row ``row``: its lines, each followed by ``<eos>`` (lines without
        tokens left out), then the first token of the next row."""
        start, end = row * self.corpus.size // self.batch_size, (row + 1) * self.corpus.size // self.batch_size
        skip = self.offset
        for ids in self._encoded(self.corpus.lines(start, end)):
            if skip >= len(ids):
                skip -= len(ids)
                continue
            yield ids[skip:]
            skip = 0
        for ids in self._encoded(self.corpus.lines(end, self.corpus.size)):
            yield ids[:1]  # the next row's first token: the target of this row's last input
            return

    def _encoded(self, lines: Iterator[str]) -> Iterator[np.ndarray]:
        batch: list[str] = []
        size = 0
        for line in lines:
            batch.append(line)
            size += len(line)
            if size >= _ENCODE_BYTES:
                yield from self._encode(batch)
                batch, size = [], 0
        if batch:
            yield from self._encode(batch)

    def _encode(self, lines: list[str]) -> Iterator[np.ndarray]:
        for ids in encode_ids(self.tokenizer, lines):
            if ids:
                yield np.asarray([*ids, self.eos], dtype=np.int64)


def estimate_tokens(corpus: Corpus, tokenizer: Tokenizer, sample_bytes: int = 1 << 20) -> int:
    """About how many tokens the corpus holds, from the tokens per byte of a sample."""
    lines = list(sample_lines([path for path, _, _ in corpus.files], sample_bytes, corpus.encoding))
    tokens = sum(len(ids) + 1 for ids in encode_ids(tokenizer, lines) if ids)
    sampled = sum(len(line.encode(corpus.encoding)) + 1 for line in lines)
    return max(1, round(corpus.size * tokens / max(sampled, 1)))


def estimated_steps(tokens: int, batch_size: int, bptt: int) -> int:
    """Chunks in an epoch of about ``tokens`` tokens over ``batch_size`` rows."""
    return max(1, math.ceil(tokens / (batch_size * bptt)))


def epoch_offset(seed: int, epoch: int, bptt: int) -> int:
    """Where an epoch starts reading each row: 0, then a shift below ``bptt`` that is a pure
    function of (seed, epoch), as for the in-memory stream."""
    return random.Random(f"{seed}:{epoch}").randrange(bptt) if epoch else 0


def _paths(paths: str | Sequence[str]) -> list[Path]:
    return [Path(path) for path in paths] if isinstance(paths, (list, tuple)) else [Path(paths)]
