"""Data in two rooms: reading files into examples, and turning examples into batches.

- ``seqkit.data.read``: every file format into examples, each problem named at its file
  and line: text (``read_text``, ``token_stream``), CoNLL (``read_conll``), JSON Lines,
  ``.npz`` and TSV pairs (``read_examples``); text encodings (``text_lines``,
  ``decoded_lines``) and hold-out splits (``holdout_split``).
- ``seqkit.data.batch``: examples into batches: truncation, padding (``collate_tagged``,
  ``collate_sequences``), bucketing by length (``bucketed_batches``, ``Batches``) and a
  language model's chunks with their carried state (``LMStream``, ``LMChunk``).
- ``seqkit.data.streaming``: a language model's training text streamed from its files by
  byte ranges (``data.streaming``); not imported here, since it needs the recipe rules.

The public names of the first two are importable from ``seqkit.data`` itself.
"""

from .batch import (
    IGNORE_INDEX,
    MAX_WORD_BYTES,
    Batches,
    LMChunk,
    LMStream,
    SequenceBatch,
    TaggedBatch,
    bucketed_batches,
    collate_sequences,
    collate_tagged,
    truncate,
)
from .read import (
    Examples,
    check_encodable,
    decoded_lines,
    holdout_split,
    read_conll,
    read_examples,
    read_text,
    text_lines,
    token_stream,
    tokenize_lines,
)

__all__ = [
    # reading files into examples (read.py)
    "Examples",
    "check_encodable",
    "decoded_lines",
    "holdout_split",
    "read_conll",
    "read_examples",
    "read_text",
    "text_lines",
    "token_stream",
    "tokenize_lines",
    # turning examples into batches (batch.py)
    "IGNORE_INDEX",
    "MAX_WORD_BYTES",
    "Batches",
    "LMChunk",
    "LMStream",
    "SequenceBatch",
    "TaggedBatch",
    "bucketed_batches",
    "collate_sequences",
    "collate_tagged",
    "truncate",
]
