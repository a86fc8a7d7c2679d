"""Reading data files into examples: the first of the two rooms of ``seqkit.data``.

Every file format a recipe names becomes examples here, and every problem in a file is
named at its file and line (``DataError``, ``NotTextError``):

- plain text (``read_text``, one ``datasets`` row a line; ``token_stream``: the ids of a
  language model's text, ``<eos>`` after each line), read with Hugging Face ``datasets``
  (Arrow, memory-mapped) and tokenized once with ``Dataset.map``, whose cache spares a
  second run over the same file and tokenizer the tokenizing;
- CoNLL (``read_conll``: a token and a tag a line, a blank line between sentences);
- JSON Lines, gzip or not, ``.npz`` arrays and ``SOURCE<TAB>TARGET`` pairs (``read_examples``);
- hold-out splits by a hash of a field (``holdout_split``).

Every text reader takes the files' ``encoding`` (``data.encoding``; UTF-8 unless set) and
names the first line that is not text in it (``NotTextError``). Turning examples into
batches is ``seqkit.data.batch``'s.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import hashlib
import io
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterator, Optional, Sequence

import numpy as np
import torch
from tokenizers import Tokenizer

from ..errors import DataError, NotTextError
from ..labels import OUTSIDE, end_problem, scheme_of, split_tag, tag_problem
from ..tokenize import encode_ids

_UNDECODABLE = "\udc00"  # what bytes that are not text become while decoding (a lone surrogate: no decoded text holds one)
codecs.register_error("seqkit.undecodable", lambda error: (_UNDECODABLE, error.end))

if TYPE_CHECKING:
    import datasets


# --- Plain text: a language model corpus, a line a row ------------------------------------


@functools.cache
def _datasets():
    """``datasets``, imported on first use (it is slow to import, and loading a trained
    model to generate or tag never needs it), with its progress bars and logs off."""
    import datasets

    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()
    return datasets


def read_text(path: str | Path | Sequence[str | Path], input_field: str = "text", encoding: str = "utf-8") -> "datasets.Dataset":
    """Text files as one ``datasets.Dataset`` with a ``text`` row per line, in order.

    ``path`` may be a list of files. A JSON Lines file (``.jsonl``, ``.jsonl.gz``) gives one
    row per record: its ``input_field`` (so a corpus of records can train a language model);
    a CoNLL file (``.conll``, ``.conll.gz``) one row per sentence: its words, space-separated.
    All are read as text in ``encoding``.

    Raises:
        DataError: a file is missing, not text in ``encoding`` (``NotTextError``), malformed,
            or there is no text at all.
    """
    paths = [Path(item) for item in path] if isinstance(path, (list, tuple)) else [Path(path)]
    parts = [part for part in (_read_one_text(item, input_field, encoding) for item in paths) if part is not None]
    where = paths[0] if len(paths) == 1 else ", ".join(map(str, paths))
    if not parts:
        raise DataError(where, "holds no text (the file is empty)" if len(paths) == 1 else "hold no text (the files are empty)")
    dataset = parts[0] if len(parts) == 1 else _datasets().concatenate_datasets(parts)
    if not any(text.strip() for text in dataset["text"]):
        raise DataError(where, "holds no text (every line is blank)")
    return dataset


def _read_one_text(path: Path, input_field: str, encoding: str) -> "Optional[datasets.Dataset]":
    """One file's lines, or ``None`` for an empty file (which ``datasets`` cannot read)."""
    if not path.is_file():
        raise DataError(path, "file not found" if not path.exists() else "not a file")
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        examples = read_examples(path, input_field, None, encoding=encoding)
        return _in_memory_dataset({"text": examples.inputs}, f"jsonl-text:{path.resolve()}:{path.stat().st_mtime_ns}:{input_field}:{encoding}")
    if path.name.endswith((".conll", ".conll.gz")):  # a tagging corpus's words, a sentence a line
        sentences = read_conll(path, encoding=encoding)["tokens"]
        return _in_memory_dataset({"text": [" ".join(words) for words in sentences]}, f"conll-text:{path.resolve()}:{path.stat().st_mtime_ns}:{encoding}")
    if path.stat().st_size == 0:
        return None
    try:
        return _datasets().load_dataset("text", data_files={"data": str(path)}, split="data", encoding=_codec(encoding))
    except Exception as error:  # datasets wraps reader errors in its own exception types
        for _ in text_lines(path, encoding):  # raises NotTextError at the first line that is not text
            pass
        raise DataError(path, f"cannot read the file ({error})") from None


def _codec(encoding: str) -> str:
    """The codec that reads ``encoding``: utf-8 as utf-8-sig, since a byte order mark (Windows
    editors write one) is not part of the text (utf-16 and utf-32 drop theirs themselves)."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def tokenize_lines(dataset: "datasets.Dataset", tokenizer: Tokenizer) -> "datasets.Dataset":
    """Add a ``token_ids`` column to a dataset of ``text`` rows (cached by ``datasets``)."""

    def encode(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        return {"token_ids": encode_ids(tokenizer, batch["text"])}

    return dataset.map(encode, batched=True, batch_size=1000, desc="tokenizing")


def token_stream(path: str | Path | Sequence[str | Path], tokenizer: Tokenizer, input_field: str = "text", encoding: str = "utf-8") -> torch.Tensor:
    """Whole text files (``read_text``) as one 1-D tensor of token ids, ``<eos>`` after each
    non-empty line."""
    eos = tokenizer.token_to_id("<eos>")
    dataset = tokenize_lines(read_text(path, input_field, encoding), tokenizer).with_format("numpy", columns=["token_ids"])
    pieces = []
    for token_ids in dataset["token_ids"]:
        if len(token_ids):
            pieces.append(np.asarray(token_ids, dtype=np.int64))
            pieces.append(np.array([eos], dtype=np.int64))
    if not pieces:
        raise DataError(path, "holds no tokens")
    return torch.from_numpy(np.concatenate(pieces))


# --- CoNLL: a token and a tag a line, a blank line between sentences ----------------------


def read_conll(path: str | Path, token_column: int = 0, tag_column: int = -1, scheme: str = "bio", encoding: str = "utf-8") -> "datasets.Dataset":
    """A CoNLL file (text in ``encoding``) as a ``datasets.Dataset`` of ``tokens``, ``tags`` and
    ``line`` (where each sentence starts).

    Columns are split on tabs, or on spaces when a line has no tab. A blank line ends a
    sentence; ``-DOCSTART-`` lines are skipped, and so are lines starting with ``#``
    that are not data (a ``#`` token with a valid tag is data). Every line must have as
    many columns as the first, and every tag must fit ``scheme`` (``none``: any tag fits;
    a plain tag such as ``NN`` under ``bio`` names ``data.scheme: none`` as the fix, or
    the line of the entity tag it is mixed with).

    Raises:
        DataError: naming the file and line of the first problem.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found" if not path.exists() else "not a file")
    sentences: dict[str, list] = {"tokens": [], "tags": [], "line": []}
    for start_line, tokens, tags in _conll_sentences(path, _conll_rows(path, token_column, tag_column, scheme, encoding), scheme):
        sentences["tokens"].append(tokens)
        sentences["tags"].append(tags)
        sentences["line"].append(start_line)
    if not sentences["tokens"]:
        raise DataError(path, "holds no sentences (expected a token and a tag per line)")
    return _in_memory_dataset(sentences, f"conll:{path.resolve()}:{path.stat().st_mtime_ns}:{token_column}:{tag_column}:{scheme}:{encoding}")


def _conll_rows(path: Path, token_column: int, tag_column: int, scheme: str, encoding: str) -> Iterator[tuple[int, Optional[str], Optional[str]]]:
    """``(line, token, tag)`` for each data line of a CoNLL file, and ``(line, None, None)``
    where a sentence ends: at each blank line, and once past the last line.

    Skips ``-DOCSTART-`` and comment lines; the first data line sets how many columns
    every other must have. Tags are checked by ``_conll_sentences``, which reads these.
    """
    columns: Optional[int] = None
    number = 0
    for number, line in text_lines(path, encoding):
        if not line.strip():
            yield number, None, None
            continue
        if columns is None and line.lstrip().startswith("{") and _is_json_object(line):
            raise DataError(path, "a JSON Lines record: taggers read CoNLL files (a token and its tag a line, a blank line between sentences)", line=number)
        fields = line.split("\t") if "\t" in line else line.split()
        if fields[0] == "-DOCSTART-":
            continue
        if line.startswith("#") and (len(fields) != columns or not _looks_like_tag(fields[tag_column], scheme)):
            continue  # a comment line
        if columns is None:
            columns = len(fields)
            if columns < 2 or not (-columns <= token_column < columns and -columns <= tag_column < columns):
                raise DataError(path, f"found {columns} column(s); data.token_column {token_column} and data.tag_column {tag_column} need more", line=number)
        if len(fields) != columns:
            raise DataError(path, f"expected {columns} columns (like the first line), found {len(fields)}", line=number)
        tag, token = fields[tag_column].strip(), fields[token_column].strip()
        if not token:
            raise DataError(path, f"no token in the token column (data.token_column: {token_column}, counting from 0)", line=number)
        yield number, token, tag
    yield number + 1, None, None


def _conll_sentences(path: Path, rows: Iterator[tuple[int, Optional[str], Optional[str]]], scheme: str) -> Iterator[tuple[int, list[str], list[str]]]:
    """``(first line, tokens, tags)`` for each sentence of ``rows`` (``_conll_rows``), each tag
    checked against ``scheme`` and the tag before it, and the last tag of a sentence
    against its end (an unclosed ``B-``/``I-`` under ``bioes``)."""
    tokens: list[str] = []
    tags: list[str] = []
    start_line = 0
    first_entity_tag: Optional[tuple[str, int]] = None  # (tag, line): to name a file that mixes schemes
    for number, token, tag in rows:
        if token is None:  # a blank line, or past the last line: the sentence ends
            if tokens:
                problem = end_problem(tags[-1], scheme)
                if problem:
                    raise DataError(path, problem, line=number - 1)
                yield start_line, tokens, tags
                tokens, tags = [], []
            continue
        problem = tag_problem(tags[-1] if tags else OUTSIDE, tag, scheme)
        if problem and first_entity_tag is not None and scheme_of(tag) == "none":
            seen, seen_line = first_entity_tag
            problem = (f"tag {tag!r} is a plain tag, but line {seen_line} has the entity tag {seen!r}: the file mixes "
                       f"{scheme_of(seen)} and plain tags (one scheme a file: data.scheme bio, bioes or none)")  # fmt: skip
        if problem:
            raise DataError(path, problem, line=number)
        if first_entity_tag is None and tag != OUTSIDE and scheme_of(tag) != "none":
            first_entity_tag = (tag, number)
        if not tokens:
            start_line = number
        tokens.append(token)
        tags.append(tag)


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _in_memory_dataset(columns: dict[str, list], identity: str) -> "datasets.Dataset":
    """A ``datasets.Dataset`` of in-memory columns, fingerprinted by ``identity`` (what was
    read, from where). ``Dataset.from_dict`` would fingerprint it by pickling the whole
    table with dill instead: slow on large data, and it fails on Python 3.12 with
    datasets 5.2 (``Can't pickle <class 'MonthDayNano'>``)."""
    datasets = _datasets()
    table = datasets.table.InMemoryTable.from_pydict(columns)
    return datasets.Dataset(table, fingerprint=hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16])


def _looks_like_tag(value: str, scheme: str) -> bool:
    if scheme == "none":  # any tag is plain: a '#' line with the data's columns is data (Penn's `#  #`)
        return True
    prefix, label = split_tag(value.strip())
    return value.strip() == OUTSIDE or (len(prefix) == 1 and bool(label))


# --- Many-to-one examples: JSON Lines (text or vectors) and .npz (vectors) ------------------


@dataclass
class Examples:
    """The examples of one data file, in file order.

    ``inputs`` are texts, or float arrays ``(time, features)`` for vector inputs;
    ``targets`` are class names (classification), float arrays ``(outputs,)`` or
    ``(time, outputs)`` (regression), or ``None`` when the file has none; ``keys`` decide
    the holdout split; ``lines`` say where each example is (its line, or its row in .npz).
    """

    path: str
    inputs: list
    targets: Optional[list]
    keys: list[str]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, indices: Sequence[int]) -> "Examples":
        pick = lambda values: None if values is None else [values[i] for i in indices]  # noqa: E731
        return Examples(self.path, pick(self.inputs), pick(self.targets), pick(self.keys), pick(self.lines))


def read_examples(
    path: str | Path,
    input_field: str = "text",
    target_field: str | Sequence[str] | None = "label",
    inputs: str = "text",
    targets: str = "class",
    key_field: Optional[str] = None,
    encoding: str = "utf-8",
) -> Examples:
    """Read examples from JSON Lines (``.jsonl``, ``.jsonl.gz``), ``.npz`` (vectors), or
    tab-separated ``SOURCE<TAB>TARGET`` pairs (``.tsv``, ``.tsv.gz``: seq2seq).

    Args:
        path: the file. ``.npz`` (vectors only) holds an array named ``input_field``
            ``(examples, time, features)``, arrays named by ``target_field``, and
            optionally ``lengths`` ``(examples,)`` when sequences are padded.
        input_field: the field with the text, or the list of steps (each a list of numbers).
        target_field: the field with the class name; for regression a field holding a
            number or a list of numbers (per step: a list of those), or several fields of
            one number each; ``None`` reads no targets (prediction).
        inputs: ``text`` or ``vectors``.
        targets: ``class``, ``number``, ``text`` (seq2seq) or ``condition`` (generation: a
            class read from ``data.condition_field``).
        key_field: the field whose value is the example's holdout key (``None``: the input).
        encoding: the text encoding of a JSON Lines or TSV file.

    Raises:
        DataError: naming the file and line of the first malformed example.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found" if not path.exists() else "not a file")
    fields = [target_field] if isinstance(target_field, str) else list(target_field or [])
    if path.name.endswith((".tsv", ".tsv.gz")):
        return _read_pairs(path, encoding)
    if path.suffix == ".npz":
        if inputs != "vectors":
            raise DataError(path, ".npz files hold vectors: set data.inputs to vectors, or give text as JSON Lines")
        return _read_npz(path, input_field, fields, targets)
    return _read_jsonl(path, input_field, fields, inputs, targets, key_field, encoding)


def _read_jsonl(path: Path, input_field: str, fields: list[str], inputs: str, targets: str, key_field: Optional[str], encoding: str) -> Examples:
    """The examples of a JSON Lines file (``read_examples``): each record's input, its
    targets (from ``fields``, when there are any) and its holdout key."""
    examples = Examples(str(path), [], [] if fields else None, [], [])
    width: Optional[int] = None  # vector inputs: how many numbers each step holds (the first record's)
    for number, record in _json_lines(path, encoding):
        if input_field not in record:
            raise DataError(path, f"no {input_field!r} field (data.input_field)", line=number)
        value = record[input_field]
        if inputs == "text":
            examples.inputs.append(_text_input(path, number, input_field, value))
        else:
            vectors = _vector_input(path, number, input_field, value, width)
            width = vectors.shape[1]
            examples.inputs.append(vectors)
        if fields:
            examples.targets.append(_target(path, number, record, fields, targets))
        key = record.get(key_field) if key_field is not None else value
        if key_field is not None and key is None:
            raise DataError(path, f"no {key_field!r} field (data.holdout.by)", line=number)
        examples.keys.append(key if isinstance(key, str) else json.dumps(key, sort_keys=True))
        examples.lines.append(number)
    if not examples.inputs:
        raise DataError(path, "holds no examples (expected one JSON object a line)")
    return examples


def _text_input(path: Path, number: int, input_field: str, value) -> str:
    """A record's text input: a non-empty string that UTF-8 can encode."""
    if not isinstance(value, str):
        raise DataError(path, f"{input_field!r} must be a string, found {type(value).__name__}", line=number)
    if not value.strip():
        raise DataError(path, f"{input_field!r} is empty", line=number)
    check_encodable(path, number, input_field, value)
    return value


def _vector_input(path: Path, number: int, input_field: str, value, width: Optional[int]) -> np.ndarray:
    """A record's vector input as ``(time, features)`` floats, each step ``width`` numbers
    long like the records before it (any width for the first, ``width=None``)."""
    vectors = _vectors(value)
    if vectors is None:
        raise DataError(path, f"{input_field!r} must be a non-empty list of steps, each a list of numbers of one length", line=number)
    if width is not None and vectors.shape[1] != width:
        raise DataError(path, f"steps of {vectors.shape[1]} numbers; earlier lines had {width}", line=number)
    return vectors


def text_lines(path: Path, encoding: str = "utf-8"):
    """``(line number, line)`` for every line of a text file in ``encoding``, gzipped (``.gz``)
    or not, line endings (``\\n``, ``\\r\\n``) and a leading byte order mark removed.

    Raises:
        NotTextError: a line that is not text in ``encoding``.
        DataError: a file that cannot be read (a truncated .gz).
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            yield from decoded_lines(handle, path, encoding)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(path, f"cannot read the file ({error})") from None


def decoded_lines(handle: BinaryIO, where: str | Path, encoding: str = "utf-8"):
    """``(line number, line)`` for the lines of bytes ``handle`` reads from ``where`` (a file,
    ``<stdin>``), decoded from ``encoding``: lines end at ``\\n`` (in the encoding's own
    bytes: UTF-16 writes it as two), line endings and a leading byte order mark removed.

    Raises:
        NotTextError: a line that is not text in ``encoding``, naming ``where`` and the line.
    """
    text = io.TextIOWrapper(handle, encoding=_codec(encoding), errors="seqkit.undecodable", newline="\n")
    number = 0
    try:
        for number, line in enumerate(text, start=1):
            if _UNDECODABLE in line:
                raise NotTextError(where, encoding, line=number)
            yield number, line.rstrip("\r\n")
    except UnicodeError as error:  # not a decoding error: utf-16 or utf-32 text without a byte order mark
        raise NotTextError(where, encoding, line=number + 1, unmarked="BOM" in str(error)) from None
    finally:
        text.detach()  # the handle is the caller's to close


def _json_lines(path: Path, encoding: str):
    """``(line number, object)`` for each non-blank line of a JSON Lines file, gzip or not."""
    for number, line in text_lines(path, encoding):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(path, f"not valid JSON ({error.msg} at column {error.colno})", line=number) from None
        if not isinstance(record, dict):
            raise DataError(path, f"expected a JSON object, found {type(record).__name__}", line=number)
        yield number, record


def _read_pairs(path: Path, encoding: str) -> Examples:
    """``SOURCE<TAB>TARGET`` lines (gzip or not): both non-empty, nothing else on the line."""
    examples = Examples(str(path), [], [], [], [])
    for number, line in text_lines(path, encoding):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise DataError(path, f"expected SOURCE<TAB>TARGET, both non-empty; found {len(fields)} field(s)", line=number)
        examples.inputs.append(fields[0].strip())
        examples.targets.append(fields[1].strip())
        examples.keys.append(fields[0].strip())
        examples.lines.append(number)
    if not examples.inputs:
        raise DataError(path, "holds no pairs (expected SOURCE<TAB>TARGET lines)")
    return examples


def check_encodable(path: str | Path, number: int, field: str, text: str) -> None:
    """JSON's ``\\ud83d`` escapes can give a lone surrogate (half an emoji, cut in two), which
    no tokenizer takes: name it rather than fail later."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise DataError(path, f"{field!r} holds a lone surrogate {text[error.start]!r} (half of a UTF-16 pair, such as a cut emoji)", line=number) from None


def _vectors(value) -> Optional[np.ndarray]:
    if not isinstance(value, list) or not value or not all(isinstance(step, list) and step for step in value):
        return None
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):  # ragged
        return None
    if array.dtype.kind not in "iuf":  # strings, booleans, nulls or lists among the numbers
        return None
    array = array.astype(np.float32)
    return array if array.ndim == 2 and np.isfinite(array).all() else None


def _target(path: Path, number: int, record: dict, fields: list[str], kind: str):
    missing = [name for name in fields if name not in record]
    if missing:
        key = "data.condition_field" if kind == "condition" else "data.target_field"
        raise DataError(path, f"no {missing[0]!r} field ({key})", line=number)
    if kind == "text":
        value = record[fields[0]]
        if not isinstance(value, str) or not value.strip():
            raise DataError(path, f"{fields[0]!r} must be a non-empty string, found {value!r}"[:200], line=number)
        check_encodable(path, number, fields[0], value)
        return value
    if kind in ("class", "condition"):
        value = record[fields[0]]
        if isinstance(value, bool) or not isinstance(value, (str, int)) or (isinstance(value, str) and not value.strip()):
            raise DataError(path, f"{fields[0]!r} must be a class name (a non-empty string or an integer), found {value!r}", line=number)
        return str(value)
    values = [record[name] for name in fields]
    raw = values[0] if len(fields) == 1 else values
    array = np.asarray(raw, dtype=np.float32) if _numeric(raw) else None
    if array is None or array.ndim > 2 or array.size == 0 or not np.isfinite(array).all():
        shown = ", ".join(f"{name}={record[name]!r}"[:60] for name in fields)
        raise DataError(path, f"targets must be numbers (one per output, or a list per step), found {shown}", line=number)
    return array.reshape(1) if array.ndim == 0 else array


def _numeric(value, depth: int = 0) -> bool:
    """A number, or (nested up to two deep) a rectangular list of numbers; never a bool or a string."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    if not isinstance(value, list) or not value or depth >= 2:
        return False
    if not all(_numeric(item, depth + 1) for item in value):
        return False
    shapes = {len(item) if isinstance(item, list) else None for item in value}
    return len(shapes) == 1


def _read_npz(path: Path, input_field: str, fields: list[str], kind: str) -> Examples:
    with path.open("rb") as handle:
        magic = handle.read(6)
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):  # a zip (numpy.savez) or a lone .npy
        what = "it is empty" if not magic else "it holds text" if all(32 <= byte < 127 or byte in b"\t\r\n" for byte in magic) else "it is some other file"
        raise DataError(path, f"not a .npz file ({what}; a .npz is the zip of named arrays that numpy.savez writes)")
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(path, f"not a readable .npz file ({error})") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):  # a single .npy array under a .npz name
        raise DataError(path, "not a readable .npz file (it holds one .npy array, not named arrays: write it with numpy.savez)")

    def numbers(name: str) -> np.ndarray:
        try:
            array = arrays[name]
        except (OSError, ValueError, zipfile.BadZipFile) as error:  # pickled objects, or a damaged member
            raise DataError(path, f"{name!r} must hold numbers ({error})") from None
        if array.dtype.kind not in "iuf":
            raise DataError(path, f"{name!r} must hold numbers, found {array.dtype} values")
        return array

    with arrays:
        names = set(arrays.files)
        for name in [input_field, *fields]:
            if name not in names:
                raise DataError(path, f"no array named {name!r} (it holds {', '.join(sorted(names)) or 'nothing'})")
        values = numbers(input_field).astype(np.float32)
        if values.ndim != 3 or 0 in values.shape:
            raise DataError(path, f"{input_field!r} must be shaped (examples, time, features), found {values.shape}")
        count, time = values.shape[:2]
        lengths = numbers("lengths").astype(np.int64) if "lengths" in names else np.full(count, time)
        if lengths.shape != (count,) or (lengths < 1).any() or (lengths > time).any():
            raise DataError(path, f"'lengths' must hold one length in 1..{time} per example")
        target_arrays = [numbers(name).astype(np.float32) for name in fields]
    if kind == "class" and fields:
        raise DataError(path, "class targets come as JSON Lines; .npz holds vector inputs with numeric targets")
    for name, array in zip(fields, target_arrays):
        if len(array) != count:
            raise DataError(path, f"{name!r} has {len(array)} rows, {input_field!r} has {count}")
        if not np.isfinite(array).all():
            raise DataError(path, f"{name!r} holds NaN or infinite values")
    if not np.isfinite(values).all():
        raise DataError(path, f"{input_field!r} holds NaN or infinite values")
    targets = None
    if fields:
        per_example = [array.reshape(count, -1) if array.ndim <= 2 else array for array in target_arrays]
        if len(per_example) == 1:
            targets = [per_example[0][i][: lengths[i]] if per_example[0].ndim == 3 else per_example[0][i] for i in range(count)]
        else:
            targets = list(np.concatenate(per_example, axis=1))
    inputs = [values[i, : lengths[i]] for i in range(count)]
    keys = [hashlib.md5(array.tobytes()).hexdigest() for array in inputs]
    return Examples(str(path), inputs, targets, keys, list(range(count)))


def holdout_split(keys: Sequence[str], valid: float, test: float) -> dict[str, list[int]]:
    """Assign examples to ``train``, ``valid`` and ``test`` by an MD5 hash of their keys.

    The split depends on the keys alone -- not on the seed, the file order or the other
    examples -- so examples sharing a key stay together, and a subset of a file holds out
    a subset of what the whole file holds out.
    """
    splits: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for index, key in enumerate(keys):
        point = int(hashlib.md5(key.encode("utf-8")).hexdigest()[:13], 16) / 16**13  # uniform in [0, 1)
        splits["test" if point < test else "valid" if point < test + valid else "train"].append(index)
    return splits

