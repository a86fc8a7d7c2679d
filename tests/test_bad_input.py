"""Hostile and sloppy input, as tables: every reader, the recipe checks and every public
entry point either works sensibly (README, "Input rules") or fails with one line that
names the file and line, the recipe key or the argument -- and the CLI then exits with
code 2 and no traceback.

Each row says what it feeds and what must happen: ``works`` with a stated check, or
``fails`` with a regular expression the message must match (``{file}`` stands for the
path of the file at fault).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import seqkit
from seqkit.cli import main
from seqkit.config import load_recipe
from seqkit.data import read_conll, read_examples, read_text
from seqkit.errors import CheckpointError, RecipeError, SeqkitError
from seqkit.tokenize import train_tokenizer
from seqkit.vectors import read_vectors

EMOJI, CJK, HEBREW, ARABIC, ZERO_WIDTH = "🐳", "白鯨記", "מובי דיק", "موبي ديك", "Moby\u200bDick\u200d"
UNICODE = [EMOJI, CJK, HEBREW, ARABIC, ZERO_WIDTH]


@dataclass(frozen=True)
class Works:
    """The input is read or used; ``check`` (if any) says what must come out."""

    check: Optional[Callable[..., Any]] = None
    note: str = ""


@dataclass(frozen=True)
class Fails:
    """The input is refused: a seqkit error (or ``error``) whose message matches ``pattern``
    (``{file}`` is replaced by the escaped path of the file at fault)."""

    pattern: str
    error: type = SeqkitError


def expect_failure(expected: Fails, call: Callable[[], Any], file: Optional[Path] = None) -> str:
    with pytest.raises(expected.error) as raised:
        call()
    message = str(raised.value)
    pattern = expected.pattern.replace("{file}", re.escape(str(file)) if file is not None else "")
    assert re.search(pattern, message), f"{message!r} does not match {pattern!r}"
    assert "\n" not in message or isinstance(raised.value, RecipeError), f"more than one line: {message!r}"
    return message


# --- 1. Readers: every data format x every hostile file ------------------------------------


def _plain(texts: list[str]) -> str:
    return "".join(line + "\n" for line in texts)


# Each text format: a file suffix, a good file (with a non-ASCII word on line 2, so that
# latin-1 bytes break exactly there), the same with emoji, CJK, right-to-left and
# zero-width text, and the reader as a function of the path (and, for data, the
# encoding: data.encoding) returning plain values.
FORMATS: dict[str, dict[str, Any]] = {
    "text": {
        "suffix": ".txt",
        "good": "call me ishmael\ncafé au lait\n\nthe whale\n",
        "unicode": _plain(["call me ishmael", *UNICODE]),
        "read": lambda path, encoding="utf-8": list(read_text(path, encoding=encoding)["text"]),
    },
    "conll": {
        "suffix": ".conll",
        "good": "call\tO\ncafé\tB-LOC\n\nthe\tO\nwhale\tB-PER\n",
        "unicode": "".join(f"{word}\t{tag}\n" for word, tag in zip(["call", *UNICODE], ["O", "B-LOC", "I-LOC", "O", "B-PER", "O"])),
        "read": lambda path, encoding="utf-8": (lambda d: (list(d["tokens"]), list(d["tags"]), list(d["line"])))(read_conll(path, encoding=encoding)),
    },
    "jsonl-class": {
        "suffix": ".jsonl",
        "good": '{"text": "call me", "label": "ham"}\n{"text": "café au lait", "label": "spam"}\n',
        "unicode": _plain([json.dumps({"text": text, "label": "x"}, ensure_ascii=False) for text in UNICODE]),
        "read": lambda path, encoding="utf-8": (lambda e: (e.inputs, e.targets, e.lines))(read_examples(path, "text", "label", encoding=encoding)),
    },
    "jsonl-number": {
        "suffix": ".jsonl",
        "good": '{"text": "call me", "year": 1851}\n{"text": "café au lait", "year": 1900.5}\n',
        "unicode": _plain([json.dumps({"text": text, "year": 1}, ensure_ascii=False) for text in UNICODE]),
        "read": lambda path, encoding="utf-8": (lambda e: (e.inputs, [t.tolist() for t in e.targets], e.lines))(
            read_examples(path, "text", "year", targets="number", encoding=encoding)),
    },
    "jsonl-vectors": {
        "suffix": ".jsonl",
        "good": '{"steps": [[1, 2], [3, 4]], "y": 1.5}\n{"steps": [[0.5, 0]], "y": -2, "note": "café"}\n',
        "unicode": _plain([json.dumps({"steps": [[1, 2]], "y": 1, "note": text}, ensure_ascii=False) for text in UNICODE]),
        "unicode_check": lambda result: len(result[0]) == len(UNICODE),  # other fields may hold any text
        "read": lambda path, encoding="utf-8": (lambda e: ([x.tolist() for x in e.inputs], [t.tolist() for t in e.targets], e.lines))(
            read_examples(path, "steps", "y", inputs="vectors", targets="number", encoding=encoding)),
    },
    "tsv-pairs": {
        "suffix": ".tsv",
        "good": "call\tK AO1 L\ncafé\tK AE0 F EY1\n",
        "unicode": _plain([f"{text}\t{text}" for text in UNICODE]),
        "read": lambda path, encoding="utf-8": (lambda e: (e.inputs, e.targets, e.lines))(read_examples(path, targets="text", encoding=encoding)),
    },
    "word-vectors": {
        "suffix": ".vec",
        "good": "2 3\ncafé 0.1 0.2 0.3\nwhale 1 2 3\n",
        "unicode": _plain(["5 3", *(f"{text.replace(' ', '_')} 1 2 3" for text in UNICODE)]),
        "read": lambda path: {word: vector.tolist() for word, vector in read_vectors(path, 3).items()},
    },
}


def _unicode_survives(result: Any) -> None:
    dumped = json.dumps(result, ensure_ascii=False, default=str)
    for text in UNICODE:
        assert text in dumped or text.replace(" ", "_") in dumped or all(word in dumped for word in text.split()), text


# hostile variants of every text format: (name, bytes from the good text, expectation)
HOSTILE_TEXT = [
    ("latin-1", lambda good, unicode: good.encode("latin-1"), Fails(r"^{file}:2: not UTF-8 text \(convert it to UTF-8")),
    ("utf-16", lambda good, unicode: good.encode("utf-16"), Fails(r"^{file}:1: not UTF-8 text \(convert it to UTF-8")),
    ("utf-8 with BOM", lambda good, unicode: good.encode("utf-8-sig"), Works(note="same as without the BOM")),
    ("empty", lambda good, unicode: b"", Fails(r"^{file}: holds no")),
    ("blank lines only", lambda good, unicode: b"\n  \n\t\n\r\n\n", Fails(r"^{file}: holds no")),
    ("CRLF endings", lambda good, unicode: good.replace("\n", "\r\n").encode("utf-8"), Works(note="same as with LF")),
    ("emoji, CJK, RTL, zero-width", lambda good, unicode: unicode.encode("utf-8"), Works(_unicode_survives)),
]

# malformed content, per format: (format, name, file text, expectation)
MALFORMED = [
    ("conll", "too many columns", "call\tO\ncafé\tB-LOC\tX\n", Fails(r"^{file}:2: expected 2 columns \(like the first line\), found 3")),
    ("conll", "too few columns", "call\tO\ncafé\n", Fails(r"^{file}:2: expected 2 columns \(like the first line\), found 1")),
    ("conll", "one column from the start", "call\ncafé\n", Fails(r"^{file}:1: found 1 column\(s\)")),
    ("conll", "an empty token", "call\tO\n\tO\n", Fails(r"^{file}:2: no token in the token column \(data\.token_column: 0, counting from 0\)$")),
    ("conll", "a JSON Lines file", '{"text": "call me", "label": "a"}\n', Fails(r"^{file}:1: a JSON Lines record: taggers read CoNLL files \(a token and its tag a line")),
    ("conll", "a tag that breaks the scheme", "call\tO\ncafé\tI-LOC\n", Fails(r"^{file}:2: .*I-LOC")),
    ("conll", "only comments and -DOCSTART-", "-DOCSTART- O\n\n# a comment\n", Fails(r"^{file}: holds no sentences")),
    ("conll", "spaces instead of tabs", "call O\ncafé  B-LOC\n", Works(lambda r: r[0] == [["call", "café"]])),
    ("jsonl-class", "a broken JSON line", '{"text": "a", "label": "x"}\n{"text": "b", "label": \n', Fails(r"^{file}:2: not valid JSON")),
    ("jsonl-class", "a JSON list, not an object", '{"text": "a", "label": "x"}\n["b", "y"]\n', Fails(r"^{file}:2: expected a JSON object, found list")),
    ("jsonl-class", "a missing text field", '{"text": "a", "label": "x"}\n{"body": "b", "label": "y"}\n', Fails(r"^{file}:2: no 'text' field \(data.input_field\)")),
    ("jsonl-class", "a missing label field", '{"text": "a", "label": "x"}\n{"text": "b"}\n', Fails(r"^{file}:2: no 'label' field \(data.target_field\)")),
    ("jsonl-class", "a text that is a number", '{"text": 12, "label": "x"}\n', Fails(r"^{file}:1: 'text' must be a string, found int")),
    ("jsonl-class", "a text that is null", '{"text": null, "label": "x"}\n', Fails(r"^{file}:1: 'text' must be a string, found NoneType")),
    ("jsonl-class", "an empty text", '{"text": " \\t", "label": "x"}\n', Fails(r"^{file}:1: 'text' is empty")),
    ("jsonl-class", "a label that is a list", '{"text": "a", "label": ["x"]}\n', Fails(r"^{file}:1: 'label' must be a class name")),
    ("jsonl-class", "a label that is true", '{"text": "a", "label": true}\n', Fails(r"^{file}:1: 'label' must be a class name")),
    ("jsonl-class", "half an emoji (a lone surrogate)", '{"text": "ok", "label": "x"}\n{"text": "whale \\ud83d", "label": "x"}\n',
     Fails(r"^{file}:2: 'text' holds a lone surrogate")),
    ("jsonl-class", "an integer label", '{"text": "a", "label": 3}\n', Works(lambda r: r[1] == ["3"])),
    ("jsonl-number", "a number in a string", '{"text": "a", "year": "1851"}\n', Fails(r"^{file}:1: targets must be numbers.*year='1851'")),
    ("jsonl-number", "NaN", '{"text": "a", "year": NaN}\n', Fails(r"^{file}:1: targets must be numbers")),
    ("jsonl-number", "null", '{"text": "a", "year": null}\n', Fails(r"^{file}:1: targets must be numbers")),
    ("jsonl-vectors", "ragged steps", '{"steps": [[1, 2], [3]], "y": 1}\n', Fails(r"^{file}:1: 'steps' must be a non-empty list of steps")),
    ("jsonl-vectors", "no steps", '{"steps": [], "y": 1}\n', Fails(r"^{file}:1: 'steps' must be a non-empty list of steps")),
    ("jsonl-vectors", "a string among the numbers", '{"steps": [[1, "2"]], "y": 1}\n', Fails(r"^{file}:1: 'steps' must be a non-empty list")),
    ("jsonl-vectors", "steps of another width", '{"steps": [[1, 2]], "y": 1}\n{"steps": [[1, 2, 3]], "y": 1}\n', Fails(r"^{file}:2: steps of 3 numbers; earlier lines had 2")),
    ("tsv-pairs", "three fields", "call\tK AO1 L\ncafé\tK\tAE0\n", Fails(r"^{file}:2: expected SOURCE<TAB>TARGET.*found 3")),
    ("tsv-pairs", "no tab", "call\tK AO1 L\ncafé K AE0\n", Fails(r"^{file}:2: expected SOURCE<TAB>TARGET.*found 1")),
    ("tsv-pairs", "an empty target", "call\t \n", Fails(r"^{file}:1: expected SOURCE<TAB>TARGET, both non-empty")),
    ("word-vectors", "too few numbers", "whale 1 2 3\ncafé 1 2\n", Fails(r"^{file}:2: expected a word and 3 numbers")),
    ("word-vectors", "a word among the numbers", "whale 1 two 3\n", Fails(r"^{file}:1: the values after the word must be numbers")),
    ("word-vectors", "another dimension in the header", "2 5\nwhale 1 2 3\n", Fails(r"^{file}:1: holds 5-dimensional vectors")),
    ("word-vectors", "NaN", "whale 1 nan 3\n", Fails(r"^{file}:1: holds NaN or infinite values")),
    ("text", "old Mac CR endings", "call me\rishmael\r", Works(lambda r: r == ["call me", "ishmael"])),
    ("text", "NUL and control characters", "a\x00b\x07c\n", Works(lambda r: r == ["a\x00b\x07c"])),
]


def _zip_of_text(path: Path) -> bytes:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not an array")
    return path.read_bytes()


def _npz(path: Path, **arrays) -> bytes:
    np.savez(path, **arrays)
    return path.read_bytes()


# .npz vectors: (name, builder(tmp) -> bytes, expectation)
HOSTILE_NPZ = [
    ("empty file", lambda tmp: b"", Fails(r"^{file}: not a \.npz file \(it is empty; a \.npz is the zip of named arrays that numpy\.savez writes\)$")),
    ("text, not a zip", lambda tmp: b"x,y\n1,2\n", Fails(r"^{file}: not a \.npz file \(it holds text; .*\)$")),
    ("a zip that is not numpy's", lambda tmp: _zip_of_text(tmp / "a.zip"), Fails(r"^{file}: no array named 'x' \(it holds notes\.txt\)$")),
    ("no input array", lambda tmp: _npz(tmp / "a.npz", y=np.zeros(2)), Fails(r"^{file}: no array named 'x' \(it holds y\)")),
    ("strings for numbers", lambda tmp: _npz(tmp / "a.npz", x=np.full((2, 3, 1), "a"), y=np.zeros(2)), Fails(r"^{file}: 'x' must hold numbers")),
    ("pickled objects", lambda tmp: _npz(tmp / "a.npz", x=np.zeros((2, 3, 1), dtype=object), y=np.zeros(2)), Fails(r"^{file}: 'x' must hold numbers")),
    ("strings for targets", lambda tmp: _npz(tmp / "a.npz", x=np.zeros((2, 3, 1)), y=np.array(["a", "b"])), Fails(r"^{file}: 'y' must hold numbers")),
    ("two dimensions", lambda tmp: _npz(tmp / "a.npz", x=np.zeros((2, 3)), y=np.zeros(2)), Fails(r"^{file}: 'x' must be shaped \(examples, time, features\)")),
    ("lengths out of range", lambda tmp: _npz(tmp / "a.npz", x=np.zeros((2, 3, 1)), y=np.zeros(2), lengths=np.array([0, 4])), Fails(r"^{file}: 'lengths' must hold")),
    ("NaN inputs", lambda tmp: _npz(tmp / "a.npz", x=np.full((2, 3, 1), np.nan), y=np.zeros(2)), Fails(r"^{file}: 'x' holds NaN")),
    ("a single .npy array", lambda tmp: (np.save(tmp / "a.npy", np.zeros(3)), (tmp / "a.npy").read_bytes())[1], Fails(r"^{file}: not a readable .npz file \(it holds one .npy array")),
    ("targets for fewer rows", lambda tmp: _npz(tmp / "a.npz", x=np.zeros((2, 3, 1)), y=np.zeros(1)), Fails(r"^{file}: 'y' has 1 rows, 'x' has 2")),
    ("float lengths", lambda tmp: _npz(tmp / "a.npz", x=np.zeros((2, 3, 1)), y=np.zeros(2), lengths=np.array([1.0, 3.0])),
     Works(lambda r: [len(x) for x in r] == [1, 3])),
]

SAME_TEXT = Works(note="read as the good text's UTF-8 file is")
# every data format read with data.encoding: (name, encoding, bytes from the good text, expectation)
ENCODED_TEXT = [
    ("latin-1", "latin-1", lambda good: good.encode("latin-1"), SAME_TEXT),
    ("cp1252", "cp1252", lambda good: good.replace("café", "café’s").encode("cp1252"), SAME_TEXT),
    ("utf-16 with a byte order mark", "utf-16", lambda good: good.encode("utf-16"), SAME_TEXT),
    ("utf-16 with CRLF endings", "utf-16", lambda good: good.replace("\n", "\r\n").encode("utf-16"), SAME_TEXT),
    ("utf-16-be, no byte order mark", "utf-16-be", lambda good: good.encode("utf-16-be"), SAME_TEXT),
    ("utf-32 with a byte order mark", "utf-32", lambda good: good.encode("utf-32"), SAME_TEXT),
    ("utf-8 with a byte order mark, as utf-8-sig", "utf-8-sig", lambda good: good.encode("utf-8-sig"), SAME_TEXT),
    ("utf-16 without a byte order mark, as utf-16", "utf-16", lambda good: good.encode("utf-16-le"),
     Fails(r"^{file}:1: not utf-16 text: it starts with no byte order mark, which utf-16 needs to tell the byte order \(read it as utf-16-le or utf-16-be\)$")),
    ("a byte cp1252 leaves undefined", "cp1252", lambda good: good.encode("cp1252").replace(b"caf\xe9", b"caf\x81"),
     Fails(r"^{file}:2: not cp1252 text \(read it with the file's encoding\)$")),
    ("utf-16 cut in the middle of a character", "utf-16", lambda good: good.encode("utf-16")[:-1], Fails(r"^{file}:\d+: not utf-16 text \(")),
    ("utf-8 as utf-16", "utf-16", lambda good: good.encode("utf-8"), Fails(r"^{file}:1: not utf-16 text: it starts with no byte order mark")),
]

READER_ROWS = (
    [pytest.param(fmt, name, make, expected, id=f"{fmt}: {name}") for fmt in FORMATS for name, make, expected in HOSTILE_TEXT]
    + [pytest.param(fmt, name, text, expected, id=f"{fmt}: {name}") for fmt, name, text, expected in MALFORMED]
)


@pytest.mark.parametrize("fmt, name, content, expected", READER_ROWS)
def test_readers(tmp_path, fmt, name, content, expected):
    spec = FORMATS[fmt]
    path = tmp_path / f"data{spec['suffix']}"
    path.write_bytes(content(spec["good"], spec["unicode"]) if callable(content) else content.encode("utf-8"))
    if isinstance(expected, Fails):
        expect_failure(expected, lambda: spec["read"](path), path)
        return
    result = spec["read"](path)
    if name in ("utf-8 with BOM", "CRLF endings"):
        reference = tmp_path / f"reference{spec['suffix']}"
        reference.write_text(spec["good"], encoding="utf-8")
        assert result == spec["read"](reference)
    check = spec.get("unicode_check", expected.check) if name.startswith("emoji") else expected.check
    if check is not None:
        assert check(result) is not False


@pytest.mark.parametrize("fmt, name, encoding, content, expected", [
    pytest.param(fmt, *row, id=f"{fmt}: {row[0]}") for fmt in FORMATS if fmt != "word-vectors" for row in ENCODED_TEXT])  # fmt: skip
def test_readers_in_other_encodings(tmp_path, fmt, name, encoding, content, expected):
    spec = FORMATS[fmt]
    path = tmp_path / f"data{spec['suffix']}"
    path.write_bytes(content(spec["good"]))
    if isinstance(expected, Fails):
        expect_failure(expected, lambda: spec["read"](path, encoding), path)
        return
    reference = tmp_path / f"reference{spec['suffix']}"
    reference.write_bytes(content(spec["good"]).decode(encoding).removeprefix("\ufeff").replace("\r\n", "\n").encode("utf-8"))
    assert path.read_bytes() != reference.read_bytes()
    assert spec["read"](path, encoding) == spec["read"](reference)


@pytest.mark.parametrize("fmt", [*FORMATS, "npz"])
@pytest.mark.parametrize("where", ["a directory", "a missing path"])
def test_readers_name_a_directory_or_a_missing_path(tmp_path, fmt, where):
    path = tmp_path / f"data{FORMATS.get(fmt, {'suffix': '.npz'})['suffix']}"
    if where == "a directory":
        path.mkdir()
    read = FORMATS[fmt]["read"] if fmt in FORMATS else _read_npz
    expect_failure(Fails(r"^{file}: not a file$" if where == "a directory" else r"^{file}: file not found$"), lambda: read(path), path)


def _read_npz(path: Path) -> list[np.ndarray]:
    return read_examples(path, "x", "y", inputs="vectors", targets="number").inputs


@pytest.mark.parametrize("name, build, expected", [pytest.param(*row, id=f"npz: {row[0]}") for row in HOSTILE_NPZ])
def test_npz_reader(tmp_path, name, build, expected):
    path = tmp_path / "data.npz"
    content = build(tmp_path)
    path.write_bytes(content)
    if isinstance(expected, Fails):
        expect_failure(expected, lambda: _read_npz(path), path)
    else:
        expected.check(_read_npz(path))


# --- 2. A 50 MB single line ------------------------------------------------------------------


BIG = 50_000_000


@pytest.fixture(scope="module")
def fifty_mb_line(tmp_path_factory) -> str:
    """A 50 MB line of prose (a corpus on a single line, as text8 is)."""
    sentence = "Call me Ishmael, said the whale to the 白鯨 🐳 at sea. "
    return (sentence * (BIG // len(sentence.encode("utf-8")))).strip()


@pytest.mark.parametrize("fmt", ["text", "jsonl-class", "conll"])
def test_a_50_mb_line_is_read(tmp_path, fifty_mb_line, fmt):
    path = tmp_path / f"big{FORMATS[fmt]['suffix']}"
    line = {"text": fifty_mb_line, "jsonl-class": json.dumps({"text": fifty_mb_line, "label": "x"}, ensure_ascii=False),
            "tsv-pairs": f"{fifty_mb_line}\tK AO1 L", "conll": f"{fifty_mb_line.replace(' ', '_')}\tO"}[fmt]  # fmt: skip
    path.write_text(line + "\n", encoding="utf-8")
    assert path.stat().st_size > BIG - 1000
    if fmt == "text":
        assert len(read_text(path)["text"][0]) == len(fifty_mb_line)
    elif fmt == "conll":
        assert len(read_conll(path)["tokens"][0][0]) == len(fifty_mb_line)
    else:
        assert len(read_examples(path, targets="class" if fmt == "jsonl-class" else "text").inputs[0]) == len(fifty_mb_line)


def test_a_long_line_reaches_the_tokenizer_in_pieces(fifty_mb_line):
    """On one huge string ``tokenizers`` needs ~100 bytes per character and superlinear time
    (the 50 MB line of ``token_stream``: 5.6 GB and 51 s before); ``encode_ids`` hands it
    pieces of at most ``MAX_PIECE`` characters (the 50 MB line: 0.7 GB, linear time, about
    250k tokens/s on one core -- too slow for the suite, so 1 MB here)."""
    import seqkit.tokenize

    line = fifty_mb_line[:1_000_000]
    tokenizer = train_tokenizer("word", [line[:10_000]])
    seen: list[int] = []

    class Spy:
        def encode_batch(self, texts):
            seen.extend(len(text) for text in texts)
            return tokenizer.encode_batch(texts)

    [ids] = seqkit.tokenize.encode_ids(Spy(), [line])
    assert max(seen) <= seqkit.tokenize.MAX_PIECE and sum(seen) == len(line) and len(seen) > 10
    assert ids == tokenizer.encode(line).ids


@pytest.mark.parametrize("kind, split", [("word", "punctuation"), ("word", "tweet"), ("word", "whitespace"), ("bpe", "punctuation"), ("char", "punctuation")])
def test_long_texts_are_tokenized_in_pieces_to_the_same_ids(monkeypatch, kind, split):
    import random

    import seqkit.tokenize

    rng = random.Random(0)
    words = ["the", "whale", "Ahab's", "don't", "café", EMOJI, CJK, HEBREW, ZERO_WIDTH, "https://x.org/a?b", "#tag", ":)", "1,000"]
    separators = [" ", "  ", "\t", " \t ", "\n", "   \n ", "\u3000", "\u00a0"]
    text = "  " + "".join(rng.choice(words) + rng.choice(separators) for _ in range(1500)) + "  "
    tokenizer = train_tokenizer(kind, [text[:4000]], split=split, vocab_size=300 if kind == "bpe" else None)
    whole = tokenizer.encode(text).ids
    for size in (40, 333, 1000):
        monkeypatch.setattr(seqkit.tokenize, "MAX_PIECE", size)
        long, short = seqkit.tokenize.encode_ids(tokenizer, [text, "the whale"])
        assert long == whole, size
        assert short == tokenizer.encode("the whale").ids


# --- 3. Training on hostile data, through the CLI ------------------------------------------------

SMALL_MODEL = {"embedding_dim": 8, "hidden_size": 8, "num_layers": 1, "dropout": 0.0}
SHORT_TRAIN = {"epochs": 1, "max_steps": 2, "batch_size": 2, "eval_batch_size": 4, "log_every": 1, "device": "cpu", "precision": "fp32"}

# per task: its data format and what its recipe adds to the small model
TASKS = {
    "language_model": ("text", {"tokenizer": {"kind": "word"}, "generate": {"max_tokens": 5}}),
    "tagging": ("conll", {"tokenizer": {"kind": "word", "split": "tweet"},
                          "model": {"bidirectional": True, "crf": True, "char_features": "cnn", "char_embedding_dim": 4, "char_hidden_size": 4}}),
    "classification": ("jsonl-class", {"data": {"max_length": 30}, "model": {"pooling": "attention"}}),
    "regression": ("jsonl-number", {"data": {"target_field": "year"}, "model": {"pooling": "mean"}}),
    "regression-vectors": ("npz", {"task": "regression", "data": {"inputs": "vectors", "input_field": "x", "target_field": "y"},
                                   "model": {"input_size": 2, "pooling": "none"}}),
    "generation": ("jsonl-class", {"data": {"condition_field": "label"}, "tokenizer": {"kind": "char"}, "generate": {"max_tokens": 5}}),
    "seq2seq": ("tsv-pairs", {"tokenizer": {"kind": "char"}, "target_tokenizer": {"kind": "word", "split": "whitespace"}}),
}  # fmt: skip

GOOD_NPZ = {"x": np.arange(24, dtype=np.float32).reshape(4, 3, 2) / 10, "y": np.arange(12, dtype=np.float32).reshape(4, 3, 1),
            "lengths": np.array([3, 2, 1, 3])}  # fmt: skip


def sloppy_but_valid(task: str) -> bytes:
    """A task's training file written the sloppy way: a byte order mark, CRLF endings, and
    emoji, CJK, right-to-left and zero-width text (two classes or conditions)."""
    fmt = TASKS[task][0]
    if fmt == "jsonl-class":
        text = _plain([json.dumps({"text": text, "label": "ab"[i % 2]}, ensure_ascii=False) for i, text in enumerate(UNICODE * 2)])
    elif fmt == "jsonl-number":
        text = _plain([json.dumps({"text": text, "year": 1800 + 7 * i}, ensure_ascii=False) for i, text in enumerate(UNICODE * 2)])
    else:
        text = FORMATS[fmt]["unicode"]
    return text.replace("\n", "\r\n").encode("utf-8-sig")


def write_recipe(directory: Path, task: str, train: Path, valid: Optional[Path] = None) -> Path:
    extra = TASKS[task][1]
    recipe = {"task": extra.get("task", task), "seed": 0, "output_dir": str(directory / "run"), "data": {"train": str(train), "valid": str(valid or train)},
              "model": dict(SMALL_MODEL), "train": dict(SHORT_TRAIN)}  # fmt: skip
    for section, values in extra.items():
        if isinstance(values, dict):
            recipe[section] = {**recipe.get(section, {}), **values}
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def run_cli(arguments: list[str], stdin: Optional[bytes] = None):
    result = CliRunner().invoke(main, arguments, input=stdin)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}"
    )
    return result


def assert_cli_error(result, pattern: str) -> None:
    """Exit code 2, ``seqkit: error:`` lines only (one per problem) naming the problem, no
    traceback and no click usage block."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    assert "Traceback" not in result.output + result.stderr
    assert re.search(pattern, result.stderr), f"{result.stderr!r} does not match {pattern!r}"
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("seqkit: error: ") for line in lines), result.stderr


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict[str, Path]:
    """One tiny model per task, each trained through ``seqkit train`` on its sloppy-but-valid
    file (two steps: the rows test what goes in and out, not accuracy)."""
    root = tmp_path_factory.mktemp("bad-input")
    runs = {}
    for task, (fmt, _) in TASKS.items():
        directory = root / task
        directory.mkdir()
        data = directory / f"train{FORMATS[fmt]['suffix'] if fmt in FORMATS else '.npz'}"
        if fmt == "npz":
            np.savez(data, **GOOD_NPZ)
        else:
            data.write_bytes(sloppy_but_valid(task))
        result = run_cli(["train", str(write_recipe(directory, task, data)), "--quiet"])
        assert result.exit_code == 0, (task, result.output, result.stderr)
        runs[task] = directory / "run" / "best"
    return runs


@pytest.mark.parametrize("task", TASKS)
def test_training_on_sloppy_but_valid_files_works(trained, task):
    """A byte order mark, CRLF endings, emoji, CJK, right-to-left and zero-width text train."""
    model = seqkit.load(trained[task], device="cpu")
    assert model.task == TASKS[task][1].get("task", task)


NOT_UTF8 = r"{file}:{line}: not UTF-8 text \(set data\.encoding to the file's encoding, e\.g\. latin-1, cp1252 or utf-16, or convert it to UTF-8\)$"


def _hostile_training_files():
    """(task, name, writer(path), pattern): each fails before training, naming the file."""
    rows = []
    for task, (fmt, _) in TASKS.items():
        if fmt != "npz":
            rows.append((task, "latin-1", lambda path, fmt=fmt: path.write_bytes(FORMATS[fmt]["good"].encode("latin-1")), NOT_UTF8.replace("{line}", "2")))
            rows.append((task, "blank lines only", lambda path: path.write_bytes(b"\r\n \n\t\n"), r"{file}: holds no"))
        rows.append((task, "empty", lambda path: path.write_bytes(b""), r"{file}: (holds no|not a \.npz file \(it is empty)"))
        rows.append((task, "a directory", lambda path: path.mkdir(), r"data\.train: not a file: {file}"))
        rows.append((task, "a missing path", lambda path: None, r"data\.train: file not found: {file}"))
    malformed = {
        "tagging": ("too many columns", "call\tO\ncafé\tB-LOC\tX\n", r"{file}:2: expected 2 columns"),
        "classification": ("a broken JSON line", '{"text": "a", "label": "x"}\n{"text": \n', r"{file}:2: not valid JSON"),
        "regression": ("a number in a string", '{"text": "a", "year": "1851"}\n', r"{file}:1: targets must be numbers"),
        "generation": ("a missing condition", '{"text": "Abigail", "label": "female"}\n{"text": "Zachary"}\n', r"{file}:2: no 'label' field \(data.condition_field\)"),
        "seq2seq": ("three fields", "call\tK AO1 L\ncafé\tK\tAE0\n", r"{file}:2: expected SOURCE<TAB>TARGET"),
        "language_model": ("UTF-16", "call me\nishmael\n".encode("utf-16"), NOT_UTF8.replace("{line}", "1")),
        "regression-vectors": ("strings for numbers", None, r"{file}: 'x' must hold numbers"),
    }
    for task, (name, content, pattern) in malformed.items():
        if task == "regression-vectors":
            writer = lambda path: np.savez(path, x=np.full((2, 3, 2), "a"), y=np.zeros((2, 3, 1)))  # noqa: E731
        else:
            writer = lambda path, content=content: path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))  # noqa: E731
        rows.append((task, name, writer, pattern))
    return [pytest.param(*row, id=f"{row[0]}: {row[1]}") for row in rows]


@pytest.mark.parametrize("task, name, write, pattern", _hostile_training_files())
def test_training_on_hostile_files_exits_2_naming_the_file(tmp_path, task, name, write, pattern):
    fmt = TASKS[task][0]
    suffix = FORMATS[fmt]["suffix"] if fmt in FORMATS else ".npz"
    bad, good = tmp_path / f"bad{suffix}", tmp_path / f"good{suffix}"
    if fmt == "npz":
        np.savez(good, **GOOD_NPZ)
    else:
        good.write_bytes(sloppy_but_valid(task))
    write(bad)
    result = run_cli(["train", str(write_recipe(tmp_path, task, bad, good)), "--quiet"])
    assert_cli_error(result, pattern.replace("{file}", re.escape(str(bad))))


def test_a_real_process_prints_one_line_and_no_traceback(tmp_path, trained):
    """The CliRunner rows above see exit codes; a real process shows what a user sees."""
    bad = tmp_path / "bad.txt"
    bad.write_bytes("call me\ncafé\n".encode("latin-1"))
    recipe = write_recipe(tmp_path, "language_model", bad)
    for arguments, stdin in ((["train", str(recipe)], None), (["predict", str(trained["classification"]), "-"], "call me\ncafé\n".encode("latin-1"))):
        completed = subprocess.run([sys.executable, "-m", "seqkit", *arguments], input=stdin, capture_output=True, timeout=300)
        stderr = completed.stderr.decode("utf-8")
        assert completed.returncode == 2, stderr
        assert "Traceback" not in stderr
        assert stderr.count("seqkit: error: ") == 1 and re.search(r":2: not UTF-8 text", stderr), stderr


# --- 4. Recipes ------------------------------------------------------------------------------

RECIPE = "task: language_model\ndata: {train: data/train.txt, valid: data/valid.txt}\n"  # lines 1-2 of every row

# (name, recipe text, --set overrides, expectation: Works(check on the Recipe) or the
# patterns of the problems, one per line, in order; {file} is the recipe's path)
RECIPE_ROWS = [
    # unknown keys
    ("unknown key, a close one exists", RECIPE + "model:\n  hiden_size: 12\n", [], [r"^{file}:4: model\.hiden_size: unknown key \(did you mean model\.hidden_size\?\)$"]),
    ("unknown key, nothing close", RECIPE + "model:\n  colour: red\n", [], [r"^{file}:4: model\.colour: unknown key$"]),
    ("unknown section", RECIPE + "modle:\n  hidden_size: 12\n", [], [r"^{file}:3: modle: unknown key \(did you mean model\?\)$"]),
    ("a key in the wrong section", RECIPE + "train:\n  hidden_size: 12\n", [], [r"^{file}:4: train\.hidden_size: unknown key \(did you mean model\.hidden_size\?\)$"]),
    ("a tagging key on a language model, as YAML spells its default", RECIPE + "model: {crf: true}\n", [], [r"^{file}:3: model\.crf: only tagging uses it; remove it or set false$"]),
    ("class weights on a language model", RECIPE + "train: {class_weights: balanced}\n", [],
     [r"^{file}:3: train\.class_weights: only tagging and classification weigh classes; remove it$"]),
    ("class weights with a CRF", "task: tagging\ndata: {train: data/train.txt, valid: data/valid.txt}\ntokenizer: {kind: word}\nmodel: {crf: true}\n"
     "train:\n  class_weights: {COMMA: 2}\n", [],
     [r"^{file}:6: train\.class_weights: a CRF scores whole tag sequences, not each word's tag: weigh tags with the softmax head \(model\.crf: false\)$"]),
    ("a boolean for the threads", RECIPE + "train: {threads: true}\n", [], [r"^{file}:3: train\.threads: expected auto or a number of threads from 1 to 1024, got true$"]),
    ("a misspelt key at the top", RECIPE + "optimiser: adam\n", [], [r"^{file}:3: optimiser: unknown key \(did you mean train\.optimizer\?\)$"]),
    ("two problems at once", RECIPE + "model:\n  hiden_size: 12\n  num_layers: 0\n", [],
     [r"^{file}:4: model\.hiden_size: unknown key", r"^{file}:5: model\.num_layers: Input should be greater than or equal to 1, got 0$"]),
    # wrong types
    ("a word for a number", RECIPE + "train:\n  epochs: three\n", [], [r"^{file}:4: train\.epochs: Input should be a valid integer.*got 'three'$"]),
    ("a fraction for an integer", RECIPE + "model: {hidden_size: 1.5}\n", [], [r"^{file}:3: model\.hidden_size: Input should be a valid integer.*got 1\.5$"]),
    ("a boolean for a number", RECIPE + "model: {hidden_size: true}\n", [], [r"^{file}:3: model\.hidden_size: expected a number or a name, not a boolean, got true$"]),
    ("a word for a boolean", RECIPE + "model: {bidirectional: maybe}\n", [], [r"^{file}:3: model\.bidirectional: Input should be a valid boolean.*got 'maybe'$"]),
    ("a number for a path", "task: language_model\ndata: {train: 5, valid: data/valid.txt}\n", [], [r"^{file}:2: data\.train: Input should be a valid string or a valid list, got 5$"]),
    ("a number for a section", RECIPE + "model: 5\n", [], [r"^{file}:3: model: expected a mapping of keys"]),
    ("a list for a section", RECIPE + "train: [1, 2]\n", [], [r"^{file}:3: train: expected a mapping of keys"]),
    ("a section with every key commented out", RECIPE + "model:\n  # hidden_size: 12\n", [], Works(lambda r: r.model.hidden_size == 256)),
    ("a quoted number", RECIPE + "model: {hidden_size: '12'}\n", [], Works(lambda r: r.model.hidden_size == 12)),
    ("1e-3, which YAML reads as a string", RECIPE + "train: {lr: 1e-3}\n", [], Works(lambda r: r.train.lr == 0.001)),
    # negative or zero sizes, out-of-range shares
    *[(f"{section}.{key}: {value}", RECIPE.replace("}", f", {key}: {value}}}") if section == "data" else RECIPE + f"{section}: {{{key}: {value}}}\n", [],
       [rf"^{{file}}:{2 if section == 'data' else 3}: {section}\.{key}: Input should be {rule}, got {value}$"])
      for section, key, value, rule in [
          ("model", "hidden_size", 0, "greater than or equal to 1"), ("model", "hidden_size", -8, "greater than or equal to 1"),
          ("model", "num_layers", 0, "greater than or equal to 1"), ("model", "embedding_dim", 0, "greater than or equal to 1"),
          ("model", "dropout", 1.0, "less than 1"), ("model", "dropout", -0.1, "greater than or equal to 0"),
          ("train", "batch_size", 0, "greater than or equal to 1"), ("train", "eval_batch_size", -1, "greater than or equal to 1"),
          ("train", "epochs", 0, "greater than or equal to 1"), ("train", "epochs", -1, "greater than or equal to 1"),
          ("train", "max_steps", 0, "greater than or equal to 1"), ("train", "bptt", 0, "greater than or equal to 1"),
          ("train", "lr", 0, "greater than 0"), ("train", "lr", -0.001, "greater than 0"), ("train", "grad_clip", 0, "greater than 0"),
          ("train", "weight_decay", -1, "greater than or equal to 0"), ("train", "momentum", 1, "less than 1"),
          ("train", "warmup_steps", -1, "greater than or equal to 0"), ("tokenizer", "vocab_size", 3, "greater than or equal to 8"),
          ("tokenizer", "min_frequency", 0, "greater than or equal to 1"), ("generate", "max_tokens", 0, "greater than or equal to 1"),
          ("generate", "temperature", 0, "greater than 0"), ("generate", "top_k", 0, "greater than or equal to 1"),
          ("generate", "top_p", 1.5, "less than or equal to 1"), ("data", "max_length", 0, "greater than or equal to 1"),
      ]],  # fmt: skip
    ("a negative seed", RECIPE + "seed: -1\n", [], [r"^{file}:3: seed: Input should be greater than or equal to 0, got -1$"]),
    ("a seed torch cannot take", RECIPE + "seed: 99999999999999999999\n", [], [r"^{file}:3: seed: Input should be less than 9223372036854775808"]),
    ("an empty output_dir", RECIPE + "output_dir: ''\n", [], [r"^{file}:3: output_dir: String should have at least 1 character"]),
    # unknown names
    ("an unknown encoder", RECIPE + "model: {encoder: transformer}\n", [], [r"^{file}:3: model\.encoder: Input should be 'rnn', 'gru' or 'lstm', got 'transformer'$"]),
    ("an encoder in capitals", RECIPE + "model: {encoder: GRU}\n", [], [r"model\.encoder: Input should be 'rnn', 'gru' or 'lstm' \(did you mean 'gru'\?\), got 'GRU'$"]),
    ("a misspelt encoder", RECIPE + "model: {encoder: lstmm}\n", [], [r"model\.encoder: .*\(did you mean 'lstm'\?\)"]),
    ("an unknown task", RECIPE.replace("language_model", "translation"), [], [r"^{file}:1: task: Input should be 'language_model', 'tagging', .*got 'translation'$"]),
    ("a misspelt task", RECIPE.replace("language_model", "langauge_model"), [], [r"^{file}:1: task: .*\(did you mean 'language_model'\?\)"]),
    ("an unknown optimizer", RECIPE + "train: {optimizer: adagrad}\n", [], [r"^{file}:3: train\.optimizer: Input should be 'adam', 'adamw' or 'sgd'"]),
    ("an unknown schedule", RECIPE + "train: {schedule: linear}\n", [], [r"^{file}:3: train\.schedule: Input should be 'none', 'plateau' or 'cosine'"]),
    ("an unknown tokenizer", RECIPE + "tokenizer: {kind: sentencepiece}\n", [], [r"^{file}:3: tokenizer\.kind: Input should be 'word', 'bpe' or 'char'"]),
    ("an unknown nonlinearity", RECIPE + "model: {nonlinearity: sigmoid}\n", [], [r"^{file}:3: model\.nonlinearity: Input should be 'tanh' or 'relu'"]),
    ("an unknown device", RECIPE + "train: {device: tpu}\n", [], [r"^{file}:3: train\.device: unknown device 'tpu': use auto, cpu, cuda, cuda:N or mps$"]),
    ("an unknown precision", RECIPE + "train: {precision: fp8}\n", [], [r"^{file}:3: train\.precision: Input should be 'auto', 'fp32', 'bf16' or 'fp16'"]),
    ("an unknown encoding", RECIPE.replace("}", ", encoding: latin-9x}"), [],
     [r"^{file}:2: data\.encoding: not a text encoding Python knows \(a codec name such as utf-8, latin-1, cp1252 or utf-16\), got 'latin-9x'$"]),
    ("a codec that is not a text encoding", RECIPE.replace("}", ", encoding: base64}"), [], [r"^{file}:2: data\.encoding: not a text encoding Python knows"]),
    ("a number for an encoding", RECIPE.replace("}", ", encoding: 1252}"), [], [r"^{file}:2: data\.encoding: Input should be a valid string, got 1252$"]),
    ("--set an unknown encoding", RECIPE, ["data.encoding=utf8x"], [r"^--set data\.encoding=utf8x: data\.encoding: not a text encoding Python knows"]),
    ("an encoding by another of its names", RECIPE.replace("}", ", encoding: Latin1}"), [], Works(lambda r: r.data.encoding == "Latin1")),
    ("streaming UTF-16", RECIPE.replace("}", ", streaming: true, encoding: utf-16}"), [],
     [r"^{file}:2: data\.streaming: streamed text is cut into lines at the byte 0x0A, which is not a newline in utf-16 \(data\.encoding\): "
      r"set data\.streaming to false, or convert the files to UTF-8$"]),
    ("streaming UTF-32, set from --set", RECIPE.replace("}", ", encoding: utf-32-le}"), ["data.streaming=true"], [r"^--set data\.streaming=true: data\.streaming: .* utf-32-le \(data\.encoding\)"]),
    ("streaming cp1252", RECIPE.replace("}", ", streaming: true, encoding: cp1252}"), [], Works(lambda r: r.data.streaming is True)),
    ("auto streaming with UTF-16", RECIPE.replace("}", ", encoding: utf-16}"), [], Works(lambda r: r.data.streaming == "auto")),
    # missing things
    ("no task", "data: {train: data/train.txt, valid: data/valid.txt}\n", [], [r"^{file}: task: missing \(one of language_model, tagging, classification, regression, generation, seq2seq\)$"]),
    ("no training file", "task: language_model\ndata: {valid: data/valid.txt}\n", [], [r"^{file}:2: data\.train: missing: the path of the training file$"]),
    ("a missing training file", "task: language_model\ndata: {train: data/trian.txt, valid: data/valid.txt}\n", [], [r"^{file}:2: data\.train: file not found: data/trian\.txt$"]),
    ("an empty path", "task: language_model\ndata: {train: '', valid: data/valid.txt}\n", [], [r"^{file}:2: data\.train: an empty path"]),
    ("a directory for a file", "task: language_model\ndata: {train: data/train.txt, valid: data}\n", [], [r"^{file}:2: data\.valid: not a file: data$"]),
    ("one of several files missing", "task: language_model\ndata: {train: [data/train.txt, data/nope.txt], valid: data/valid.txt}\n", [], [r"data\.train: file not found: data/nope\.txt$"]),
    ("a missing tokenizer", RECIPE + "tokenizer: {path: data/tokenizer.json}\n", [], [r"^{file}:3: tokenizer\.path: file not found: data/tokenizer\.json$"]),
    ("missing word vectors", RECIPE + "model: {embeddings: {pretrained: data/glove.txt}}\n", [], [r"model\.embeddings\.pretrained: file not found: data/glove\.txt$"]),
    ("a missing checkpoint to start from", RECIPE + "model: {init_from: runs/nope/best}\n", [], [r"^{file}:3: model\.init_from: not found: runs/nope/best"]),
    # the file itself
    ("a key indented under a value", "task: language_model\n  model: [\n", [], [r"^{file}:2:8: YAML syntax error: mapping values are not allowed here$"]),
    ("a key indented deeper than its neighbours", RECIPE + "model:\n  hidden_size: 12\n   encoder: gru\n", [],
     [r"^{file}:5:11: YAML syntax error: mapping values are not allowed here$"]),
    ("a key indented less than its neighbours", RECIPE + "model:\n  hidden_size: 12\n encoder: gru\n", [],
     [r"^{file}:5:2: YAML syntax error: expected <block end>, but found '<block mapping start>' \(in the block mapping that starts at line 1, column 1\)$"]),
    ("tabs for indentation", RECIPE + "model:\n\thidden_size: 12\n", [], [r"^{file}:4:1: YAML syntax error: found character '\\t' that cannot start any token \(use spaces: YAML takes no tabs there\)$"]),
    ("an unclosed quote", RECIPE + "output_dir: 'runs\nseed: 3\n", [],
     [r"^{file}:3:13: YAML syntax error: the quoted string \(\"'\"\) opened here is not closed \(the parser gave up at line 5, column 1: found unexpected end of stream\)$"]),
    ("an unclosed double quote", RECIPE + 'generate: {prompt: "the whale}\n', [],
     [r"^{file}:3:20: YAML syntax error: the quoted string \('\"'\) opened here is not closed \(the parser gave up at line 4, column 1: found unexpected end of stream\)$"]),
    ("an unclosed [", "task: language_model\ndata:\n  train: [data/train.txt, data/valid.txt\n  valid: data/valid.txt\nseed: 1\n", [],
     [r"^{file}:3:10: YAML syntax error: the flow sequence \('\['\) opened here is not closed, or lacks a ',' \(the parser gave up at line 4, column 8: "
      r"expected ',' or '\]', but got ':'\)$"]),
    ("an unclosed [ at the end", RECIPE + "train: {epochs: 2}\ndata2: [1, 2\n", [],
     [r"^{file}:4:8: YAML syntax error: the flow sequence \('\['\) opened here is not closed \(the parser gave up at line 5, column 1: expected ',' or '\]', but got '<stream end>'\)$"]),
    ("an unclosed {", RECIPE + "model: {hidden_size: 12, num_layers: 2\ntrain:\n  epochs: 3\n", [],
     [r"^{file}:3:8: YAML syntax error: the flow mapping \('\{'\) opened here is not closed, or lacks a ',' \(the parser gave up at line 4, column 6: expected ',' or '\}', but got ':'\)$"]),
    ("a missing comma in { }", RECIPE + "model: {hidden_size: 12 num_layers: 2}\n", [], [r"^{file}:3:8: YAML syntax error: the flow mapping \('\{'\) opened here .* line 3, column 35"]),
    ("an unclosed [ with CRLF endings", RECIPE.replace("\n", "\r\n") + "seed: 1\r\nmodel: {a: [1,\r\n  b: 2\r\n", [],
     [r"^{file}:4:12: YAML syntax error: the flow sequence \('\['\) opened here is not closed"]),
    ("a duplicate key", RECIPE + "seed: 1\nseed: 2\n", [], [r"^{file}:4: seed: duplicate key"]),
    ("an empty file", "", [], [r"^{file}: task: missing", r"^{file}: data\.train: missing", r"^{file}: data\.valid: missing"]),
    ("comments only", "# a recipe\n\n# to come\n", [], [r"^{file}: task: missing", r"^{file}: data\.train: missing", r"^{file}: data\.valid: missing"]),
    ("a list, not a mapping", "- task: language_model\n", [], [r"^{file}:1: a recipe is a mapping of sections"]),
    ("a bare word", "language_model\n", [], [r"^{file}:1: a recipe is a mapping of sections"]),
    ("not UTF-8", (RECIPE + "# café\n").encode("latin-1"), [], [r"^{file}:3: not UTF-8 text"]),
    ("a byte order mark and CRLF endings", (RECIPE + "seed: 3\n").replace("\n", "\r\n").encode("utf-8-sig"), [], Works(lambda r: r.seed == 3)),
    # --set
    ("--set without =", RECIPE, ["train.epochs"], [r"^--set train\.epochs: expected SECTION\.KEY=VALUE$"]),
    ("--set without a key", RECIPE, ["=3"], [r"^--set =3: expected SECTION\.KEY=VALUE$"]),
    ("--set with an empty part", RECIPE, ["train..epochs=3"], [r"^--set train\.\.epochs=3: expected SECTION\.KEY=VALUE$"]),
    ("--set with broken YAML", RECIPE, ["train.epochs=[1"], [r"^--set train\.epochs=\[1: train\.epochs: Input should be a valid integer.*got '\[1'$"]),
    ("--set a section to a number", RECIPE, ["train=3"], [r"^--set train=3: train: expected a mapping of keys"]),
    ("--set below a number", RECIPE + "train: {epochs: 2}\n", ["train.epochs.x=1"], [r"^--set train\.epochs\.x=1: train\.epochs is not a section$"]),
    ("--set below a missing key", RECIPE, ["train.epochs.x=1"], [r"^--set train\.epochs\.x=1: train\.epochs: Input should be a valid integer"]),
    ("--set an unknown key", RECIPE, ["model.hiden_size=3"], [r"^--set model\.hiden_size=3: model\.hiden_size: unknown key \(did you mean model\.hidden_size\?\)$"]),
    ("--set an unknown encoder", RECIPE, ["model.encoder=transformer"], [r"^--set model\.encoder=transformer: model\.encoder: Input should be 'rnn', 'gru' or 'lstm'"]),
    ("--set a negative rate", RECIPE, ["train.lr=-1"], [r"^--set train\.lr=-1: train\.lr: Input should be greater than 0, got -1$"]),
    ("--set a missing file", RECIPE, ["data.train=nope.txt"], [r"^--set data\.train=nope\.txt: data\.train: file not found: nope\.txt$"]),
    ("--set an empty value", RECIPE, ["model.hidden_size="], [r"^--set model\.hidden_size=: model\.hidden_size: Input should be a valid integer, got null$"]),
]


@pytest.fixture
def recipe_dir(tmp_path, monkeypatch) -> Path:
    (tmp_path / "data").mkdir()
    for name in ("train.txt", "valid.txt"):
        (tmp_path / "data" / name).write_text(FORMATS["text"]["good"], encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name, text, overrides, expected", [pytest.param(*row, id=row[0]) for row in RECIPE_ROWS])
def test_recipes(recipe_dir, name, text, overrides, expected):
    path = recipe_dir / "recipe.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    arguments = ["train", str(path), *(part for item in overrides for part in ("--set", item))]
    if isinstance(expected, Works):
        assert expected.check(load_recipe(path, overrides))
        result = run_cli([*arguments, "--print-config"])
        assert result.exit_code == 0, result.stderr
        return
    with pytest.raises(RecipeError) as raised:
        load_recipe(path, overrides)
    problems = raised.value.problems
    patterns = [pattern.replace("{file}", re.escape(str(path))) for pattern in expected]
    assert len(problems) == len(patterns), problems
    for pattern in patterns:  # all problems at once, in any order
        assert any(re.search(pattern, problem) for problem in problems), f"no problem matches {pattern!r}: {problems}"
    result = run_cli(arguments)
    assert_cli_error(result, patterns[0][1:] if patterns[0].startswith("^") else patterns[0])
    assert result.stderr.splitlines() == [f"seqkit: error: {problem}" for problem in problems]


def test_recipe_paths_that_are_not_files(recipe_dir):
    expect_failure(Fails(r"^{file}: recipe not found$"), lambda: load_recipe(recipe_dir / "nope.yaml"), recipe_dir / "nope.yaml")
    expect_failure(Fails(r"^{file}: cannot read the recipe \(Is a directory\)$"), lambda: load_recipe(recipe_dir / "data"), recipe_dir / "data")
    assert_cli_error(run_cli(["train", "nope.yaml"]), r"nope\.yaml: recipe not found")
    assert_cli_error(run_cli(["train", "data"]), r"'data' is a directory")
    assert_cli_error(run_cli(["train", "nope.yaml", "--output-dir", ""]), r"--output-dir.*an empty path")


def test_sizes_too_big_for_memory_fail_naming_them(recipe_dir):
    path = recipe_dir / "recipe.yaml"
    path.write_text(RECIPE + "model: {hidden_size: 100000000}\n", encoding="utf-8")
    result = run_cli(["train", str(path), "--output-dir", str(recipe_dir / "runs" / "huge")])
    assert_cli_error(result, r"the model does not fit in memory on cpu \(model\.embedding_dim=\d+, model\.hidden_size=100000000, model\.num_layers=\d+, vocabulary \d+\): choose smaller sizes$")


# --- 5. Inference through the Python API ------------------------------------------------------

LONG_TEXT = "Call me Ishmael. Some years ago, never mind how long precisely, I went to sea. " * 40  # 100x the training texts
LONG_WORD = "ishmael" * 100  # 100x the seq2seq training words
HALF_EMOJI = "whale \ud83d"  # a lone surrogate: half of 🐳
CALLS = {  # the API call of each row's model, on the row's value and keyword arguments
    "language_model": lambda model, value, **options: model.generate(value, **{"max_tokens": 5, "seed": 0, **options}),
    "tagging": lambda model, value, **options: model.tag(value, **options),
    "classification": lambda model, value, **options: model.predict(value, **options),
    "regression": lambda model, value, **options: model.predict(value, **options),
    "regression-vectors": lambda model, value, **options: model.predict(value, **options),
    "generation": lambda model, value, **options: model.generate(value, **{"seed": 0, **options}),
    "seq2seq": lambda model, value, **options: model.predict(value, **options),
}


def _doc_without_tokens(doc) -> bool:
    return doc.tokens == [] and doc.tags == [] and doc.spans == [] and doc.offsets == []


def _docs_fit_their_texts(docs) -> bool:
    return all(len(doc.tags) == len(doc.tokens) and all(doc.text[s:e] == token for token, (s, e) in zip(doc.tokens, doc.offsets)) for doc in docs)


def _a_prediction(prediction) -> bool:
    return prediction.label in prediction.probabilities and abs(sum(prediction.probabilities.values()) - 1) < 1e-5


def _a_number(value) -> bool:
    return isinstance(value, float) and np.isfinite(value)


_NOT = [  # what every text-taking call says about values that are not text
    (None, "NoneType"), (5, "int"), (b"call me", r"bytes \(decode them first"), ({"text": "call me"}, "dict"),
]
TYPE_ROWS = [(task, f"{repr(value)[:12]}", value, {}, Fails(rf"^{argument}: .*not {message}", TypeError))
             for task, argument in (("tagging", "texts"), ("classification", "inputs"), ("regression", "inputs"), ("seq2seq", "inputs"))
             for value, message in _NOT]  # fmt: skip

INFERENCE_ROWS = TYPE_ROWS + [
    # a tagger: empty text -> a Doc with no tokens; words with offsets into any text
    ("tagging", "an empty string", "", {}, Works(_doc_without_tokens)),
    ("tagging", "whitespace only", " \t\r\n ", {}, Works(_doc_without_tokens)),
    ("tagging", "a text 100x longer than training", LONG_TEXT, {}, Works(lambda doc: len(doc.tags) == len(doc.tokens) > 500)),
    ("tagging", "emoji, CJK, RTL, zero-width", " ".join(UNICODE), {}, Works(lambda doc: _docs_fit_their_texts([doc]) and len(doc.tokens) >= 5)),
    ("tagging", "an empty list", [], {}, Works(lambda docs: docs == [])),
    ("tagging", "an empty word list", [[]], {}, Works(lambda docs: _doc_without_tokens(docs[0]))),
    ("tagging", "an empty word", [["", "whale"]], {}, Works(lambda docs: len(docs[0].tags) == 2)),
    ("tagging", "a tuple of texts", ("call me", "ishmael"), {}, Works(lambda docs: len(docs) == 2)),
    ("tagging", "a generator of texts", (text for text in ["call me", "ishmael"]), {}, Works(lambda docs: len(docs) == 2)),
    ("tagging", "a NumPy array of texts", np.array(["call me", ""]), {}, Works(lambda docs: len(docs) == 2 and _doc_without_tokens(docs[1]))),
    ("tagging", "a list mixing texts and None", ["call me", None], {}, Fails(r"^texts: item 1 is NoneType; tag\(\) takes", TypeError)),
    ("tagging", "a list mixing texts and numbers", ["call me", 3], {}, Fails(r"^texts: item 1 is int", TypeError)),
    ("tagging", "a number among words", [["call", 1]], {}, Fails(r"^texts: item 0, word 1 is int", TypeError)),
    ("tagging", "half an emoji", ["ok", HALF_EMOJI], {}, Fails(r"^texts: item 1 holds a lone surrogate '\\ud83d' at character 6", ValueError)),
    ("tagging", "batch_size 0", "call me", {"batch_size": 0}, Fails(r"^batch_size: expected an integer >= 1, not 0$", ValueError)),
    # a classifier: any text gets a label (an empty one is read as one padding step)
    ("classification", "an empty string", "", {}, Works(_a_prediction)),
    ("classification", "whitespace only", " \t ", {}, Works(_a_prediction)),
    ("classification", "a text 100x longer than training", LONG_TEXT, {}, Works(_a_prediction)),
    ("classification", "emoji, CJK, RTL, zero-width", UNICODE, {}, Works(lambda predictions: all(map(_a_prediction, predictions)))),
    ("classification", "attention over an empty text", "", {"return_attention": True}, Works(lambda p: len(p.attention) == 1)),
    ("classification", "an empty list", [], {}, Works(lambda predictions: predictions == [])),
    ("classification", "a list mixing types", ["call me", b"x", 3], {}, Fails(r"^inputs: input 1 is bytes; predict\(\) takes", TypeError)),
    ("classification", "half an emoji", HALF_EMOJI, {}, Fails(r"^inputs: input 0 holds a lone surrogate", ValueError)),
    ("classification", "batch_size 0", ["a"], {"batch_size": 0}, Fails(r"^batch_size: expected an integer >= 1", ValueError)),
    # a regression model on text
    ("regression", "an empty string", "", {}, Works(_a_number)),
    ("regression", "a text 100x longer than training", LONG_TEXT, {}, Works(_a_number)),
    ("regression", "an empty list", [], {}, Works(lambda values: values == [])),
    ("regression", "a list mixing types", ["call me", None], {}, Fails(r"^inputs: input 1 is NoneType", TypeError)),
    # a per-step regression model on vectors (2 numbers a step)
    ("regression-vectors", "one input", [[0.1, 0.2], [0.3, 0.4]], {}, Works(lambda out: out.shape == (2, 1))),
    ("regression-vectors", "100x more steps than training", np.zeros((300, 2)), {}, Works(lambda out: out.shape == (300, 1))),
    ("regression-vectors", "a list of inputs", [[[0.1, 0.2]], np.ones((3, 2))], {}, Works(lambda out: [o.shape for o in out] == [(1, 1), (3, 1)])),
    ("regression-vectors", "an empty list", [], {}, Works(lambda out: out == [])),
    ("regression-vectors", "no steps", [[]], {}, Fails(r"^inputs: input 0: expected steps of 2 numbers", TypeError)),
    ("regression-vectors", "steps of 3 numbers", [[1, 2, 3]], {}, Fails(r"^inputs: input 0: expected steps of 2 numbers", TypeError)),
    ("regression-vectors", "a text", "call me", {}, Fails(r"^inputs: .*not str", TypeError)),
    ("regression-vectors", "None", None, {}, Fails(r"^inputs: .*not NoneType", TypeError)),
    ("regression-vectors", "None among the numbers", [[1.0, None]], {}, Fails(r"^inputs: .*not list|^inputs: input 0: expected steps", TypeError)),
    ("regression-vectors", "NaN", [[float("nan"), 1.0]], {}, Fails(r"^inputs: input 0 holds NaN or infinite values", ValueError)),
    # seq2seq: nothing in, nothing out
    ("seq2seq", "an empty string", "", {}, Works(lambda tokens: tokens == [])),
    ("seq2seq", "an empty string, beam search", "", {"beam": 2}, Works(lambda tokens: tokens == [])),
    ("seq2seq", "whitespace only", "   ", {}, Works(lambda tokens: isinstance(tokens, list))),
    ("seq2seq", "a word 100x longer than training", LONG_WORD, {}, Works(lambda tokens: len(tokens) <= 2 * len(LONG_WORD) + 10)),
    ("seq2seq", "emoji, CJK, RTL, zero-width", UNICODE, {}, Works(lambda outputs: len(outputs) == len(UNICODE))),
    ("seq2seq", "an empty list", [], {}, Works(lambda outputs: outputs == [])),
    ("seq2seq", "a list mixing types", ["call", ["c", "a"]], {}, Fails(r"^inputs: input 1 is list", TypeError)),
    ("seq2seq", "half an emoji", HALF_EMOJI, {}, Fails(r"^inputs: input 0 holds a lone surrogate", ValueError)),
    ("seq2seq", "beam 0", "call", {"beam": 0}, Fails(r"^beam: expected an integer >= 1, not 0$", ValueError)),
    ("seq2seq", "max_length 0", "call", {"max_length": 0}, Fails(r"^max_length: expected an integer >= 1", ValueError)),
    # a language model: any prompt, checked settings
    ("language_model", "an empty prompt", "", {}, Works(lambda text: isinstance(text, str))),
    ("language_model", "a whitespace prompt", "  \n ", {}, Works(lambda text: isinstance(text, str))),
    ("language_model", "a prompt 100x longer than training", LONG_TEXT, {}, Works(lambda text: isinstance(text, str))),  # unknown words vanish
    ("language_model", "emoji, CJK, RTL, zero-width", " ".join(UNICODE), {}, Works(lambda text: EMOJI in text)),
    ("language_model", "greedy (temperature 0)", "call", {"temperature": 0}, Works(lambda text: isinstance(text, str))),
    ("language_model", "None", None, {}, Fails(r"^prompt: expected a string, not NoneType$", TypeError)),
    ("language_model", "a number", 5, {}, Fails(r"^prompt: expected a string, not int$", TypeError)),
    ("language_model", "bytes", b"call", {}, Fails(r"^prompt: expected a string, not bytes$", TypeError)),
    ("language_model", "a list", ["call", "me"], {}, Fails(r"^prompt: expected a string, not list$", TypeError)),
    ("language_model", "half an emoji", HALF_EMOJI, {}, Fails(r"^prompt holds a lone surrogate", ValueError)),
    *[("language_model", f"{name}={value!r}", "call", {name: value}, Fails(rf"^{name}: expected .*, not {re.escape(repr(value))}$", ValueError))
      for name, value in [("max_tokens", 0), ("max_tokens", "5"), ("temperature", -1), ("temperature", float("nan")), ("top_k", 0),
                          ("top_p", 0), ("top_p", 1.5), ("num", 0), ("beam", 0), ("seed", -1), ("seed", "1")]],  # fmt: skip
    # a generator: conditions are checked
    ("generation", "a known condition", "a", {}, Works(lambda texts: len(texts) == 1 and isinstance(texts[0], str))),
    ("generation", "no condition", None, {}, Fails(r"^this generator writes from a condition: give one of a, b \(seqkit generate: --condition\)$", ValueError)),
    ("generation", "an unknown condition", "female", {}, Fails(r"^unknown condition 'female': this model knows a, b$", ValueError)),
    ("generation", "a number for a condition", 5, {}, Fails(r"^unknown condition 5", ValueError)),
    ("generation", "num 0", "a", {"num": 0}, Fails(r"^num: expected an integer >= 1, not 0$", ValueError)),
    ("generation", "max_length 0", "a", {"max_length": 0}, Fails(r"^max_length: expected an integer >= 1", ValueError)),
    ("generation", "a negative temperature", "a", {"temperature": -0.5}, Fails(r"^temperature: expected a number >= 0", ValueError)),
]


@pytest.fixture(scope="session")
def loaded(trained):
    return {task: seqkit.load(path, device="cpu") for task, path in trained.items()}


@pytest.mark.parametrize("task, name, value, options, expected", [pytest.param(*row, id=f"{row[0]}: {row[1]}") for row in INFERENCE_ROWS])
def test_inference(loaded, task, name, value, options, expected):
    call = lambda: CALLS[task](loaded[task], value, **options)  # noqa: E731
    if isinstance(expected, Fails):
        expect_failure(expected, call)
    else:
        assert expected.check(call())


@pytest.mark.parametrize("task", ["language_model", "tagging", "classification", "regression", "seq2seq"])
def test_evaluate_names_bad_paths(loaded, tmp_path, task):
    model = loaded[task]
    expect_failure(Fails(r"^path: expected a file path \(a str or os\.PathLike\), not NoneType$", TypeError), lambda: model.evaluate(None))
    expect_failure(Fails(r"^{file}: not a file$"), lambda: model.evaluate(tmp_path), tmp_path)
    latin = tmp_path / f"latin{FORMATS[TASKS[task][0]]['suffix']}"
    latin.write_bytes(FORMATS[TASKS[task][0]]["good"].encode("latin-1"))
    expect_failure(Fails(r"^{file}:2: not UTF-8 text \(set the encoding argument to the file's encoding, e\.g\. latin-1, cp1252 or utf-16, or convert it to UTF-8\)$"),
                   lambda: model.evaluate(latin), latin)  # fmt: skip
    expect_failure(Fails(r"^encoding: 'latin-9x' is not a text encoding Python knows", ValueError), lambda: model.evaluate(latin, encoding="latin-9x"))
    expect_failure(Fails(r"^encoding: expected a codec name .*, not NoneType$", TypeError), lambda: model.evaluate(latin, encoding=None))
    expect_failure(Fails(r"^{file}:1: not utf-16 text: .*\(set the encoding argument to utf-16-le or utf-16-be\)$"), lambda: model.evaluate(latin, encoding="utf-16"), latin)
    if task == "classification":  # read now, but its classes are not the model's
        expect_failure(Fails(r"^{file}:1: class 'ham' never occurs in the training data"), lambda: model.evaluate(latin, encoding="latin-1"), latin)
    else:
        utf8 = tmp_path / f"utf8{latin.suffix}"
        utf8.write_text(FORMATS[TASKS[task][0]]["good"], encoding="utf-8")
        assert model.evaluate(latin, encoding="latin-1") == model.evaluate(utf8)


def _checkpoint_copy(source: Path, directory: Path, damage: Callable[[Path], Any]) -> Path:
    import shutil

    shutil.copytree(source, directory)
    damage(directory)
    return directory


CHECKPOINT_ROWS = [
    ("None", lambda tmp, good: None, Fails(r"^path: expected a checkpoint directory, archive or URL", TypeError)),
    ("a number", lambda tmp, good: 5, Fails(r"^path: .*not int$", TypeError)),
    ("a missing directory", lambda tmp, good: tmp / "nope", Fails(r"nope: checkpoint directory not found$", CheckpointError)),
    ("an empty directory", lambda tmp, good: (tmp / "empty").mkdir() or tmp / "empty", Fails(r"empty: not a seqkit checkpoint \(no config\.yaml\)$", CheckpointError)),
    ("a text file", lambda tmp, good: (tmp / "notes.txt").write_text("hello") and tmp / "notes.txt", Fails(r"notes\.txt: ", CheckpointError)),
    ("a config.yaml that is not YAML", lambda tmp, good: _checkpoint_copy(good, tmp / "c", lambda d: (d / "config.yaml").write_text("task: [\n")),
     Fails(r"config\.yaml", CheckpointError)),
    ("cut-off weights", lambda tmp, good: _checkpoint_copy(good, tmp / "w", lambda d: (d / "model.safetensors").write_bytes(b"\x08\x00")),
     Fails(r"model\.safetensors", CheckpointError)),
    ("another task's checkpoint", lambda tmp, good: good, Fails(r"holds a classification checkpoint; load it with seqkit\.load\(\) or seqkit\.Classifier", TypeError)),
]


@pytest.mark.parametrize("name, make, expected", [pytest.param(*row, id=row[0]) for row in CHECKPOINT_ROWS])
def test_loading_checkpoints(trained, tmp_path, name, make, expected):
    path = make(tmp_path, trained["classification"])
    expect_failure(expected, lambda: seqkit.Tagger.from_pretrained(path, device="cpu"))
    if isinstance(path, Path):
        assert_cli_error(run_cli(["info", str(path)]), r".") if expected.error is CheckpointError else None


# --- 6. The CLI at inference: predict, eval, generate, info ---------------------------------------

CRLF_LINES = "call me\r\n\r\nishmael\r\n".encode("utf-8")
LF_LINES = "call me\n\nishmael\n".encode("utf-8")


SAME_AS_LF = Works(note="the same output as the input with LF endings and no byte order mark")
# (task, name, arguments after the checkpoint's command (an INPUT file: {input}), the input's bytes, expectation)
CLI_ROWS = [
    ("classification", "predict: empty input", ["predict", "{ckpt}", "-"], b"", Works(lambda r: r.output == "")),
    ("classification", "predict: blank lines are empty texts", ["predict", "{ckpt}", "-"], b"\n\n", Works(lambda r: len(r.output.splitlines()) == 2)),
    ("classification", "predict: CRLF endings", ["predict", "{ckpt}", "-"], CRLF_LINES, SAME_AS_LF),
    ("classification", "predict: a byte order mark", ["predict", "{ckpt}", "-"], "\ufeffcall me\n\nishmael\n".encode("utf-8"), SAME_AS_LF),
    ("classification", "predict: emoji, CJK, RTL, zero-width", ["predict", "{ckpt}", "-"], _plain(UNICODE).encode("utf-8"),
     Works(lambda r: [line.split("\t")[2] for line in r.output.splitlines()] == UNICODE)),
    ("classification", "predict: latin-1 on stdin", ["predict", "{ckpt}", "-"], "call\ncafé\n".encode("latin-1"),
     Fails(r"<stdin>:2: not UTF-8 text \(set --encoding to the input's encoding, e\.g\. latin-1, cp1252 or utf-16, or convert it to UTF-8\)$")),
    ("classification", "predict: a latin-1 file", ["predict", "{ckpt}", "{input}.txt"], "call\ncafé\n".encode("latin-1"),
     Fails(r"{input}\.txt:2: not UTF-8 text \(set --encoding to the file's encoding, e\.g\. latin-1, cp1252 or utf-16, or convert it to UTF-8\)$")),
    ("classification", "predict: latin-1 on stdin, --encoding latin-1", ["predict", "{ckpt}", "-", "--encoding", "latin-1"], "call\ncafé\n".encode("latin-1"),
     Works(lambda r: [line.split("\t")[2] for line in r.output.splitlines()] == ["call", "café"])),
    ("classification", "predict: UTF-16 JSON Lines, --encoding utf-16", ["predict", "{ckpt}", "{input}.jsonl", "--encoding", "utf-16", "--format", "jsonl"],
     '{"text": "call"}\n{"text": "café"}\n'.encode("utf-16"), Works(lambda r: [json.loads(line)["text"] for line in r.output.splitlines()] == ["call", "café"])),
    ("classification", "predict: a cp1252 file read as utf-16", ["predict", "{ckpt}", "{input}.txt", "--encoding", "utf-16"], "call\ncafé\n".encode("cp1252"),
     Fails(r"{input}\.txt:1: not utf-16 text: it starts with no byte order mark, which utf-16 needs to tell the byte order \(set --encoding to utf-16-le or utf-16-be\)$")),
    ("classification", "predict: an unknown --encoding", ["predict", "{ckpt}", "-", "--encoding", "latin-9x"], b"call\n",
     Fails(r"Invalid value for '--encoding': 'latin-9x' is not a text encoding Python knows")),
    ("classification", "predict: a directory", ["predict", "{ckpt}", "{tmp}"], None, Fails(r"{tmp}: not a file")),
    ("classification", "predict: a missing file", ["predict", "{ckpt}", "{tmp}/nope.txt"], None, Fails(r"nope\.txt: file not found")),
    ("classification", "predict: a broken JSON line", ["predict", "{ckpt}", "{input}.jsonl"], b'{"text": "a"}\n{"text": \n', Fails(r"{input}\.jsonl:2: not valid JSON")),
    ("classification", "predict: a missing field", ["predict", "{ckpt}", "{input}.jsonl"], b'{"body": "a"}\n', Fails(r"{input}\.jsonl:1: expected a JSON object with 'text'")),
    ("classification", "predict: a number for the text", ["predict", "{ckpt}", "{input}.jsonl"], b'{"text": 5}\n', Fails(r"{input}\.jsonl:1: 'text' must be a string")),
    ("classification", "predict: half an emoji", ["predict", "{ckpt}", "{input}.jsonl"], b'{"text": "whale \\ud83d"}\n', Fails(r"{input}\.jsonl:1: 'text' holds a lone surrogate")),
    ("classification", "predict: gzipped JSON Lines", ["predict", "{ckpt}", "{input}.jsonl.gz"], "gzip", Works(lambda r: len(r.output.splitlines()) == 2)),
    ("classification", "predict: --batch-size 0", ["predict", "{ckpt}", "-", "--batch-size", "0"], b"a\n", Fails(r"Invalid value for '--batch-size'")),
    ("tagging", "predict: blank lines give blank lines", ["predict", "{ckpt}", "-"], b"call me\n\n", Works(lambda r: r.output.split("\n")[1] == "")),
    ("tagging", "predict: a number among the tokens", ["predict", "{ckpt}", "{input}.jsonl"], b'{"tokens": ["a", 1]}\n', Fails(r"{input}\.jsonl:1: \"tokens\" must be a list of strings")),
    ("seq2seq", "predict: an empty line gives no output", ["predict", "{ckpt}", "-"], b"\ncall\n", Works(lambda r: r.output.splitlines()[0] == "\t")),
    ("regression-vectors", "predict: text for a vector model", ["predict", "{ckpt}", "-"], b"call\n", Fails(r"reads vectors: give a \.jsonl file")),
    ("regression-vectors", "predict: steps that are not numbers", ["predict", "{ckpt}", "{input}.jsonl"], b'{"x": "call"}\n', Fails(r"{input}\.jsonl:1: 'x' must be a list of steps")),
    ("language_model", "predict: a language model", ["predict", "{ckpt}", "-"], b"call\n", Fails(r"holds a language_model model; predict needs")),
    ("classification", "eval: a latin-1 file", ["eval", "{ckpt}", "--data", "{input}.jsonl"], '{"text": "café", "label": "a"}\n'.encode("latin-1"),
     Fails(r"{input}\.jsonl:1: not UTF-8 text \(set --encoding to the file's encoding, e\.g\. latin-1, cp1252 or utf-16, or convert it to UTF-8\)$")),
    ("classification", "eval: a latin-1 file, --encoding latin-1", ["eval", "{ckpt}", "--data", "{input}.jsonl", "--encoding", "latin-1"],
     '{"text": "café", "label": "a"}\n'.encode("latin-1"), Works(lambda r: ": 1 examples; accuracy " in r.output)),
    ("classification", "eval: a byte cp1252 leaves undefined", ["eval", "{ckpt}", "--data", "{input}.jsonl", "--encoding", "cp1252"],
     b'{"text": "caf\x81", "label": "a"}\n', Fails(r"{input}\.jsonl:1: not cp1252 text \(--encoding is cp1252: set it to the file's encoding\)$")),
    ("classification", "eval: an unknown --encoding", ["eval", "{ckpt}", "--data", "{input}.jsonl", "--encoding", "rot13"], b"{}\n",
     Fails(r"Invalid value for '--encoding': 'rot13' is not a text encoding Python knows")),
    ("tagging", "eval: a UTF-16 CoNLL file, --encoding utf-16", ["eval", "{ckpt}", "--data", "{input}.conll", "--json", "--encoding", "utf-16"],
     "call\tO\ncafé\tB-LOC\n".encode("utf-16"), Works(lambda r: json.loads(r.output)["sentences"] == 1)),
    ("seq2seq", "eval: TSV pairs in cp1252, --encoding cp1252", ["eval", "{ckpt}", "--data", "{input}.tsv", "--json", "--encoding", "cp1252"],
     "café’\tK AE0 F EY1\n".encode("cp1252"), Works(lambda r: json.loads(r.output)["sequences"] == 1)),
    ("classification", "eval: a directory", ["eval", "{ckpt}", "--data", "{tmp}"], None, Fails(r"{tmp}: not a file")),
    ("classification", "eval: a CoNLL file", ["eval", "{ckpt}", "--data", "{input}.conll"], b"call\tO\n", Fails(r"{input}\.conll:1: not valid JSON")),
    ("classification", "eval: a class never trained on", ["eval", "{ckpt}", "--data", "{input}.jsonl"], b'{"text": "a", "label": "spam"}\n', Fails(r"{input}\.jsonl:1: class 'spam' never occurs")),
    ("tagging", "eval: an empty file", ["eval", "{ckpt}", "--data", "{input}.conll"], b"", Fails(r"{input}\.conll: holds no sentences")),
    ("language_model", "eval: blank lines only", ["eval", "{ckpt}", "--data", "{input}.txt"], b"\n\n", Fails(r"{input}\.txt: holds no text")),
    ("language_model", "eval: CRLF endings", ["eval", "{ckpt}", "--data", "{input}.txt", "--json"], CRLF_LINES, Works(lambda r: json.loads(r.output)["tokens"] == 4)),
    ("seq2seq", "eval: three fields", ["eval", "{ckpt}", "--data", "{input}.tsv"], b"a\tb\tc\n", Fails(r"{input}\.tsv:1: expected SOURCE<TAB>TARGET")),
    ("regression-vectors", "eval: strings in .npz", ["eval", "{ckpt}", "--data", "{input}.npz"], "npz-strings", Fails(r"{input}\.npz: 'x' must hold numbers")),
    ("language_model", "generate: an empty prompt", ["generate", "{ckpt}", "--prompt", "", "--max-tokens", "3", "--seed", "0"], None, Works(lambda r: r.exit_code == 0)),
    ("language_model", "generate: emoji, CJK, RTL, zero-width", ["generate", "{ckpt}", "--prompt", " ".join(UNICODE), "--max-tokens", "3"], None,
     Works(lambda r: EMOJI in r.output)),
    ("language_model", "generate: half an emoji", ["generate", "{ckpt}", "--prompt", HALF_EMOJI], None, Fails(r"prompt holds a lone surrogate")),
    ("language_model", "generate: --max-tokens 0", ["generate", "{ckpt}", "--max-tokens", "0"], None, Fails(r"Invalid value for '--max-tokens'")),
    ("language_model", "generate: --temperature -1", ["generate", "{ckpt}", "--temperature", "-1"], None, Fails(r"Invalid value for '--temperature'")),
    ("language_model", "generate: --top-p 0", ["generate", "{ckpt}", "--top-p", "0"], None, Fails(r"Invalid value for '--top-p'")),
    ("language_model", "generate: --seed -1", ["generate", "{ckpt}", "--seed", "-1"], None, Fails(r"Invalid value for '--seed'")),
    ("language_model", "generate: a condition", ["generate", "{ckpt}", "--condition", "a"], None, Fails(r"--condition is for generators")),
    ("generation", "generate: an unknown condition", ["generate", "{ckpt}", "--condition", "female"], None, Fails(r"unknown condition 'female': this model knows a, b")),
    ("generation", "generate: a prompt", ["generate", "{ckpt}", "--prompt", "Ab"], None, Fails(r"a generator writes from a --condition")),
    ("generation", "generate: no condition", ["generate", "{ckpt}"], None, Fails(r"^seqkit: error: this generator writes from a condition: give one of a, b \(seqkit generate: --condition\)$")),
    ("generation", "generate: a condition close to a known one", ["generate", "{ckpt}", "--condition", "A"], None,
     Fails(r"^seqkit: error: unknown condition 'A' \(did you mean 'a'\?\): this model knows a, b$")),
    ("tagging", "generate: a tagger", ["generate", "{ckpt}"], None, Fails(r"holds a tagging model; generate needs")),
    ("language_model", "generate: a misspelt option", ["generate", "{ckpt}", "--tempreature", "1"], None,
     Fails(r"^seqkit: error: No such option '--tempreature'\. Did you mean '--temperature'\? \(see .* generate --help\)$")),
    ("classification", "predict: --beam on a classifier", ["predict", "{ckpt}", "-", "--beam", "2"], b"a\n", Fails(r"^seqkit: error: --beam is for seq2seq models")),
    ("classification", "predict: --format conll on a classifier", ["predict", "{ckpt}", "-", "--format", "conll"], b"a\n", Fails(r"^seqkit: error: --format conll is for taggers")),
    ("language_model", "eval: --batch-size 100000", ["eval", "{ckpt}", "--data", "{input}.txt", "--batch-size", "100000"], LF_LINES,
     Fails(r"Invalid value for '--batch-size': 100000 is not in the range 1<=x<=10000")),
    ("language_model", "eval: --batch-size 10000 on a short file", ["eval", "{ckpt}", "--data", "{input}.txt", "--batch-size", "10000", "--json"],
     LF_LINES * 50, Works(lambda r: json.loads(r.output)["tokens"] >= 150 and json.loads(r.output)["perplexity"] < float("inf"))),
    ("language_model", "eval: a CoNLL file says it reads the words", ["eval", "{ckpt}", "--data", "{input}.conll"], b"call\tO\nme\tO\n\nishmael\tB-PER\n",
     Works(lambda r: "(the words of a CoNLL file, a sentence a line)" in r.output)),
    ("tagging", "info: a directory that is not a checkpoint", ["info", "{tmp}"], None, Fails(r"{tmp}: not a seqkit checkpoint \(no config\.yaml\)")),
    ("tagging", "export: a missing checkpoint", ["export", "{tmp}/nope", "{tmp}/x.tar.gz"], None, Fails(r"nope: checkpoint directory not found")),
    ("tagging", "export-embeddings to a directory", ["export-embeddings", "{ckpt}", "{tmp}"], None, Fails(r"is a directory")),
]


@pytest.mark.parametrize("task, name, arguments, content, expected", [pytest.param(*row, id=f"{row[0]}: {row[1]}") for row in CLI_ROWS])
def test_cli_at_inference(trained, tmp_path, task, name, arguments, content, expected):
    import gzip

    stem = tmp_path / "input"
    filled = [argument.replace("{ckpt}", str(trained[task])).replace("{input}", str(stem)).replace("{tmp}", str(tmp_path)) for argument in arguments]
    stdin = content if "-" in filled and isinstance(content, bytes) else None
    inputs = [Path(argument) for argument in filled if argument.startswith(str(stem))]
    if inputs and content == "gzip":
        with gzip.open(inputs[0], "wt", encoding="utf-8") as handle:
            handle.write('{"text": "call me"}\n\n{"text": "ishmael"}\n')
    elif inputs and content == "npz-strings":
        np.savez(inputs[0], x=np.full((2, 3, 2), "a"), y=np.zeros((2, 3, 1)))
    elif inputs:
        inputs[0].write_bytes(content)
    result = run_cli(filled, stdin=stdin)
    if isinstance(expected, Fails):
        pattern = expected.pattern.replace("{input}", re.escape(str(stem))).replace("{tmp}", re.escape(str(tmp_path)))
        assert_cli_error(result, pattern)
    else:
        assert result.exit_code == 0, (result.output, result.stderr)
        if expected is SAME_AS_LF:
            assert result.output == run_cli(filled, stdin=LF_LINES).output
        else:
            assert expected.check(result)
