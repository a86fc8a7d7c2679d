"""Reading data files into ``datasets`` and cutting them into batches.

Files are read with Hugging Face ``datasets`` (Arrow, memory-mapped) and tokenized once
with ``Dataset.map``, which caches the result next to the dataset's own cache, so a second
run over the same file and tokenizer does not tokenize again.

Language modeling reads a corpus as one stream of token ids (each non-empty line
followed by ``<eos>``), lays it out as ``batch_size`` contiguous rows and walks over them
in chunks of ``bptt`` tokens: truncated back-propagation through time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tokenizers import Tokenizer

from .errors import DataError

if TYPE_CHECKING:
    import datasets


@functools.cache
def _datasets():
    """``datasets``, imported on first use (it is slow to import, and loading a trained
    model to generate or tag never needs it), with its progress bars and logs off."""
    import datasets

    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()
    return datasets


def read_text(path: str | Path) -> "datasets.Dataset":
    """A text file as a ``datasets.Dataset`` with one ``text`` row per line.

    Raises:
        DataError: the file is missing, not UTF-8 or holds no text.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found" if not path.exists() else "not a file")
    try:
        dataset = _datasets().load_dataset("text", data_files={"data": str(path)}, split="data")
    except Exception as error:  # datasets wraps reader errors in its own exception types
        line = _first_undecodable_line(path)
        if line is not None:
            raise DataError(path, "not UTF-8 text (convert the file to UTF-8)", line=line) from None
        raise DataError(path, f"cannot read the file ({error})") from None
    if not any(text.strip() for text in dataset["text"]):
        raise DataError(path, "holds no text (every line is blank)")
    return dataset


def tokenize_lines(dataset: "datasets.Dataset", tokenizer: Tokenizer) -> "datasets.Dataset":
    """Add a ``token_ids`` column to a dataset of ``text`` rows (cached by ``datasets``)."""

    def encode(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        return {"token_ids": [encoding.ids for encoding in tokenizer.encode_batch(batch["text"])]}

    return dataset.map(encode, batched=True, batch_size=1000, desc="tokenizing")


def token_stream(path: str | Path, tokenizer: Tokenizer) -> torch.Tensor:
    """A whole text file as one 1-D tensor of token ids, ``<eos>`` after each non-empty line."""
    eos = tokenizer.token_to_id("<eos>")
    dataset = tokenize_lines(read_text(path), tokenizer).with_format("numpy", columns=["token_ids"])
    pieces = []
    for token_ids in dataset["token_ids"]:
        if len(token_ids):
            pieces.append(np.asarray(token_ids, dtype=np.int64))
            pieces.append(np.array([eos], dtype=np.int64))
    if not pieces:
        raise DataError(path, "holds no tokens")
    return torch.from_numpy(np.concatenate(pieces))


@dataclass
class LMChunk:
    """One truncated-BPTT chunk: ``targets`` are ``token_ids`` shifted by one step."""

    token_ids: torch.Tensor  # (batch, time)
    targets: torch.Tensor  # (batch, time); padding where the stream ran out


class LMStream:
    """A token stream laid out as ``batch_size`` contiguous rows, read ``bptt`` steps at a time.

    Row ``b`` holds the ``b``-th slice of the stream, so the hidden state that chunk ``i``
    leaves in row ``b`` is the right context for chunk ``i + 1`` in that row. Neighbouring
    rows share one token (the last input of a row is the first of the next), so every
    token after the first is a target exactly once. The tail that does not fill the last
    row is padded, never dropped; padded targets carry ``pad_id`` and are left out of the loss.

    Args:
        stream: 1-D token ids.
        batch_size: number of rows read in parallel.
        bptt: time steps per chunk.
        pad_id: the padding id.
        offset: start reading at this position (shifting the chunk boundaries between
            epochs lets the model see every split of the text).
    """

    def __init__(self, stream: torch.Tensor, batch_size: int, bptt: int, pad_id: int, offset: int = 0):
        stream = stream[offset:]
        row_length = max(1, -(-(len(stream) - 1) // batch_size))  # inputs per row: ceil((n - 1) / batch)
        padded = torch.full((batch_size * row_length + 1,), pad_id, dtype=stream.dtype)
        padded[: len(stream)] = stream
        self.rows = padded.unfold(0, row_length + 1, row_length).contiguous()  # (batch, row_length + 1)
        self.bptt = bptt
        self.pad_id = pad_id

    def to(self, device: torch.device) -> "LMStream":
        self.rows = self.rows.to(device)
        return self

    def __len__(self) -> int:
        return -(-(self.rows.shape[1] - 1) // self.bptt)

    def __getitem__(self, index: int) -> LMChunk:
        if not 0 <= index < len(self):
            raise IndexError(index)
        start = index * self.bptt
        end = min(start + self.bptt, self.rows.shape[1] - 1)
        return LMChunk(token_ids=self.rows[:, start:end], targets=self.rows[:, start + 1 : end + 1])


def _first_undecodable_line(path: Path) -> int | None:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None
