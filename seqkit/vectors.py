"""Word vectors in the word2vec / GloVe text format: read them into a model's embedding
(``model.embeddings.pretrained``) and write a model's embedding out (``seqkit
export-embeddings``), so the two round-trip.

The format: optionally a header line ``COUNT DIMENSION``, then one line per word: the
word and its numbers, separated by spaces. Words are matched to the tokenizer's
vocabulary exactly, or else by their lowercase form.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from .checkpoint import check_new_file, new_file
from .data import text_lines
from .errors import DataError, NotTextError
from .tokenize import SPECIAL_TOKENS


@dataclass(frozen=True)
class Coverage:
    """How much of a vocabulary a vectors file covered."""

    vocabulary: int  # words looked up (special tokens left out)
    exact: int  # found as they are
    lowercase: int  # found only by their lowercase form

    def describe(self, path: str | Path) -> str:
        found = self.exact + self.lowercase
        return (f"{path}: vectors for {found:,} of {self.vocabulary:,} vocabulary words ({found / max(self.vocabulary, 1):.1%}; "
                f"{self.lowercase:,} by their lowercase form); the rest keep their random start")  # fmt: skip


def read_vectors(path: str | Path, dimension: int) -> dict[str, np.ndarray]:
    """Every word's vector in a text vectors file; the first occurrence of a word wins.

    Raises:
        DataError: the file is missing, not UTF-8, or has a line whose numbers are not
            ``dimension`` numbers, naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found" if not path.exists() else "not a file")
    vectors: dict[str, np.ndarray] = {}
    for number, line in _utf8_lines(path):
        fields = line.rstrip().split(" ")
        if number == 1 and len(fields) == 2 and all(field.isdigit() for field in fields):
            if int(fields[1]) != dimension:
                raise DataError(path, f"holds {fields[1]}-dimensional vectors, but model.embedding_dim is {dimension}", line=1)
            continue
        if not line.strip():
            continue
        if len(fields) != dimension + 1:
            raise DataError(path, f"expected a word and {dimension} numbers (model.embedding_dim), found {len(fields) - 1} value(s)", line=number)
        try:
            values = np.asarray(fields[1:], dtype=np.float32)
        except ValueError:
            raise DataError(path, "the values after the word must be numbers", line=number) from None
        if not np.isfinite(values).all():
            raise DataError(path, "holds NaN or infinite values", line=number)
        vectors.setdefault(fields[0], values)
    if not vectors:
        raise DataError(path, "holds no vectors")
    return vectors


def _utf8_lines(path: Path):
    """``text_lines`` of a vectors file, which is UTF-8 whatever ``data.encoding`` says (that
    is the data's): an error names no setting, a plain ``DataError`` that nothing renames."""
    try:
        yield from text_lines(path)
    except NotTextError as error:
        raise DataError(path, "not UTF-8 text (convert it to UTF-8: word vectors files are read as UTF-8)", line=error.line) from None


@torch.no_grad()
def load_vectors(embedding: torch.nn.Embedding, tokenizer: Tokenizer, path: str | Path) -> Coverage:
    """Copy the vectors of ``path`` into the rows of ``embedding`` for the tokenizer's words."""
    vectors = read_vectors(path, embedding.embedding_dim)
    lowered = {}
    for word, vector in vectors.items():
        lowered.setdefault(word.lower(), vector)
    exact = lowercase = looked_up = 0
    for word, index in tokenizer.get_vocab().items():
        if word in SPECIAL_TOKENS:
            continue
        looked_up += 1
        if word in vectors:
            embedding.weight[index] = torch.from_numpy(vectors[word])
            exact += 1
        elif word.lower() in lowered:
            embedding.weight[index] = torch.from_numpy(lowered[word.lower()])
            lowercase += 1
    return Coverage(looked_up, exact, lowercase)


def write_vectors(embedding: torch.nn.Embedding, tokenizer: Tokenizer, path: str | Path, overwrite: bool = False) -> int:
    """Write the tokenizer's words (special tokens and words with whitespace left out) and
    their rows of ``embedding`` in the text format, with a header; returns how many.

    The file is written under a temporary name and renamed, so a failed write leaves no
    half file (and whatever was at ``path`` in place).

    Raises:
        SeqkitError: ``path`` exists (without ``overwrite``), is a directory, is in a
            directory that does not exist, or cannot be written.
    """
    path = check_new_file(path, overwrite)
    weight = embedding.weight.detach().float().cpu().numpy()
    words = sorted(((index, word) for word, index in tokenizer.get_vocab().items()
                    if word not in SPECIAL_TOKENS and word and not any(ch.isspace() for ch in word)))  # fmt: skip
    with new_file(path) as temporary, temporary.open("w", encoding="utf-8") as handle:
        handle.write(f"{len(words)} {weight.shape[1]}\n")
        for index, word in words:
            handle.write(word + " " + " ".join(f"{value:.6g}" for value in weight[index]) + "\n")
    return len(words)
