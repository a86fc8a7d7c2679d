"""data.encoding: slices of the shipped data re-encoded into cp1252, latin-1 or UTF-16 train
as their UTF-8 originals do (the same tokenizer, the same losses: the same examples); read
without the key, or with the wrong one, they stop at the file and line, naming
data.encoding. ``seqkit eval`` and ``predict`` take ``--encoding``, the API's ``evaluate``
an ``encoding`` argument. (Hostile bytes in every reader: ``test_bad_input.py``.)"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
import yaml

import seqkit
from seqkit.config import load_recipe
from seqkit.data import read_text
from seqkit.data.streaming import Corpus, sample_lines, streams
from seqkit.errors import DataError, NotTextError
from seqkit.train import train

from helpers import MOBY, SPAM, TINY_CLASSIFIER, TINY_RECIPE, TINY_TAGGER, WNUT, first_sentences, short_pairs
from test_bad_input import assert_cli_error, run_cli

SHORT = {"epochs": 1, "max_steps": 2, "eval_every": None, "log_every": 1, "device": "cpu"}


def encodable_lines(source: Path, count: int, encoding: str) -> str:
    """The first ``count`` non-empty lines of a shipped text file that ``encoding`` can
    write (Moby-Dick's etymology quotes Hebrew and Greek), blank lines between them."""
    lines = []
    for line in source.read_text(encoding="utf-8").splitlines():
        try:
            line.encode(encoding)
        except UnicodeEncodeError:
            continue
        if line.strip():
            lines.append(line)
        if len(lines) == count:
            break
    return "\n\n".join(lines) + "\n"


def encodable_records(count: int, encoding: str) -> str:
    """The first ``count`` spam and ``count`` ham messages whose text ``encoding`` can write, as JSON Lines."""
    taken = {"spam": 0, "ham": 0}
    lines = []
    with gzip.open(SPAM, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            try:
                record["text"].encode(encoding)
            except UnicodeEncodeError:
                continue
            if taken[record["label"]] < count:
                taken[record["label"]] += 1
                lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return "".join(lines)


def seq2seq_recipe() -> dict:
    return {"task": "seq2seq", "seed": 0, "tokenizer": {"kind": "char", "lowercase": True}, "target_tokenizer": {"kind": "word", "split": "whitespace"},
            "model": {"embedding_dim": 16, "encoder": "gru", "hidden_size": 16, "num_layers": 1, "bidirectional": True, "dropout": 0.0},
            "train": {"batch_size": 8}}  # fmt: skip


# per task: the file suffix, the encoding its slice is re-encoded into, the slice (train,
# valid) as text, and the recipe
CASES = {
    "language_model": (".txt", "cp1252", lambda: (encodable_lines(MOBY / "train.txt", 40, "cp1252"), encodable_lines(MOBY / "valid.txt", 10, "cp1252")),
                       TINY_RECIPE),
    "tagging": (".conll", "utf-16", lambda: (first_sentences(WNUT / "train.conll", 30), first_sentences(WNUT / "dev.conll", 10)), TINY_TAGGER),
    "classification": (".jsonl.gz", "latin-1", lambda: (encodable_records(8, "latin-1"), encodable_records(3, "latin-1")), TINY_CLASSIFIER),
    "seq2seq": (".tsv", "utf-16-le", lambda: (short_pairs(40), short_pairs(10)), seq2seq_recipe()),
}  # fmt: skip


def write(path: Path, text: str, encoding: str) -> Path:
    data = text.encode(encoding)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def write_run(directory: Path, task: str, encoding: str, key: bool = True) -> Path:
    """Train and valid files of ``task`` in ``encoding`` and a recipe that reads them (the
    valid file is its test file too; with ``data.encoding`` when ``key``); returns the recipe."""
    suffix, _, texts, recipe = CASES[task]
    directory.mkdir()
    train_text, valid_text = texts()
    valid = str(write(directory / f"valid{suffix}", valid_text, encoding))
    data = {**recipe.get("data", {}), "train": str(write(directory / f"train{suffix}", train_text, encoding)), "valid": valid, "test": valid}
    if key:
        data["encoding"] = encoding
    recipe = {**recipe, "output_dir": str(directory / "run"), "data": data, "train": {**recipe.get("train", {}), **SHORT}}
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def _train_losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]


def _vocabularies(run_dir: Path) -> list[str]:
    """What training learnt from the text it read: the tokenizer(s) and labels it wrote."""
    return [(run_dir / name).read_text(encoding="utf-8") for name in ("tokenizer.json", "target_tokenizer.json", "labels.json") if (run_dir / name).exists()]


@pytest.mark.parametrize("task", CASES)
def test_a_file_in_another_encoding_trains_as_its_utf8_original(tmp_path, task):
    suffix, encoding, texts, _ = CASES[task]
    original = write_run(tmp_path / "utf-8", task, "utf-8")
    encoded = write_run(tmp_path / encoding, task, encoding)
    assert (tmp_path / "utf-8" / f"train{suffix}").read_bytes() != (tmp_path / encoding / f"train{suffix}").read_bytes()
    runs = [train(load_recipe(recipe), quiet=True).run_dir for recipe in (original, encoded)]
    assert _vocabularies(runs[0]) == _vocabularies(runs[1]) and len(_vocabularies(runs[0])) >= 1
    assert _train_losses(runs[0]) == _train_losses(runs[1]) and len(_train_losses(runs[0])) == 2
    assert yaml.safe_load((runs[1] / "config.yaml").read_text())["data"]["encoding"] == encoding  # recorded like every key
    # the API reads a file in that encoding when told, and names the argument when not
    model = seqkit.load(runs[1] / "best", device="cpu")
    utf8_valid, encoded_valid = tmp_path / "utf-8" / f"valid{suffix}", tmp_path / encoding / f"valid{suffix}"
    assert model.evaluate(encoded_valid, encoding=encoding) == model.evaluate(utf8_valid)
    if task != "seq2seq":  # UTF-16 without a byte order mark is ASCII with NULs between: UTF-8, of a sort
        with pytest.raises(NotTextError, match=rf"^{re.escape(str(encoded_valid))}:\d+: not UTF-8 text \(set the encoding argument to the file's encoding"):
            model.evaluate(encoded_valid)


def _first_line_not_utf8(text: str, encoding: str) -> int:
    """Where UTF-8 fails on ``text`` in ``encoding``: at a cp1252 em dash, a latin-1 \\x92 (an
    apostrophe in Windows' cp1252), UTF-16's byte order mark."""
    for number, line in enumerate(text.encode(encoding).split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return number
    raise AssertionError(f"all of it is UTF-8 in {encoding} too: the test would prove nothing")


@pytest.mark.parametrize("task", ["language_model", "tagging", "classification"])
def test_without_the_key_training_stops_at_the_line_naming_data_encoding(tmp_path, task):
    suffix, encoding, texts, _ = CASES[task]
    recipe = write_run(tmp_path / "run", task, encoding, key=False)
    line = _first_line_not_utf8(texts()[0], encoding)
    result = run_cli(["train", str(recipe), "--quiet"])
    path = re.escape(str(tmp_path / "run" / f"train{suffix}"))
    assert_cli_error(result, rf"^seqkit: error: {path}:{line}: not UTF-8 text \(set data\.encoding to the file's encoding, e\.g\. latin-1, cp1252 or utf-16, "
                             r"or convert it to UTF-8\)$")  # fmt: skip
    assert line > 1 or encoding == "utf-16"  # not the first line by chance: the line number is counted


def test_the_wrong_encoding_names_the_one_that_failed(tmp_path):
    """UTF-16 without a byte order mark read as utf-16; a cp1252 em dash read as latin-1 is
    text (a C1 control character), but cp1252's undefined bytes are not text in cp1252."""
    recipe = write_run(tmp_path / "run", "seq2seq", "utf-16-le")
    result = run_cli(["train", str(recipe), "--quiet", "--set", "data.encoding=utf-16"])
    assert_cli_error(result, rf"^seqkit: error: {re.escape(str(tmp_path / 'run' / 'train.tsv'))}:1: not utf-16 text: it starts with no byte order mark, "
                             r"which utf-16 needs to tell the byte order \(set data\.encoding to utf-16-le or utf-16-be\)$")  # fmt: skip
    lm = write_run(tmp_path / "lm", "language_model", "cp1252")
    train_file = tmp_path / "lm" / "train.txt"
    lines = train_file.read_bytes().split(b"\n")
    lines[4] += b"\x81"  # line 5: a byte cp1252 leaves undefined
    train_file.write_bytes(b"\n".join(lines))
    assert_cli_error(run_cli(["train", str(lm), "--quiet"]),
                     rf"^seqkit: error: {re.escape(str(train_file))}:5: not cp1252 text \(data\.encoding is cp1252: set it to the file's encoding\)$")  # fmt: skip


def test_seqkit_eval_and_predict_take_encoding(tmp_path):
    recipe = write_run(tmp_path / "lm", "language_model", "cp1252")
    checkpoint = str(train(load_recipe(recipe), quiet=True).run_dir / "best")
    valid = tmp_path / "lm" / "valid.txt"
    utf8 = write(tmp_path / "valid-utf8.txt", valid.read_bytes().decode("cp1252"), "utf-8")
    read = run_cli(["eval", checkpoint, "--data", str(valid), "--json", "--encoding", "cp1252"])
    assert read.exit_code == 0, read.stderr
    reference = json.loads(run_cli(["eval", checkpoint, "--data", str(utf8), "--json"]).output)
    assert {**json.loads(read.output), "data": None} == {**reference, "data": None} and reference["tokens"] > 100
    assert_cli_error(run_cli(["eval", checkpoint, "--data", str(valid)]),
                     rf"^seqkit: error: {re.escape(str(valid))}:\d+: not UTF-8 text \(set --encoding to the file's encoding, e\.g\. latin-1")  # fmt: skip
    assert_cli_error(run_cli(["eval", checkpoint, "--data", str(valid), "--encoding", "klingon"]),
                     r"Invalid value for '--encoding': 'klingon' is not a text encoding Python knows")
    # predict: a tagger's input on stdin and in a file, in UTF-16
    tagger = checkpoint_of(tmp_path / "tagger", "tagging")
    text = "Empire State Building café\n\nNew York\n"
    expected = run_cli(["predict", tagger, "-", "--format", "conll"], stdin=text.encode("utf-8"))
    assert expected.exit_code == 0 and "café" in expected.output
    assert run_cli(["predict", tagger, "-", "--format", "conll", "--encoding", "utf-16"], stdin=text.encode("utf-16")).output == expected.output
    utf16 = write(tmp_path / "tweets.txt", text, "utf-16")
    assert run_cli(["predict", tagger, str(utf16), "--format", "conll", "--encoding", "utf-16"]).output == expected.output
    assert_cli_error(run_cli(["predict", tagger, "-"], stdin=text.encode("utf-16")),
                     r"^seqkit: error: <stdin>:1: not UTF-8 text \(set --encoding to the input's encoding, e\.g\. latin-1, cp1252 or utf-16, or convert it to UTF-8\)$")


def checkpoint_of(directory: Path, task: str) -> str:
    return str(train(load_recipe(write_run(directory, task, CASES[task][1])), quiet=True).run_dir / "best")


def test_streaming_reads_ascii_compatible_encodings_and_refuses_utf16(tmp_path, monkeypatch):
    """Streaming cuts byte ranges into lines at the byte 0x0A: cp1252 streams (the same lines
    as its UTF-8 original, a UTF-8 byte order mark dropped as in memory); UTF-16 is refused
    with data.streaming: true, and auto reads it whole."""
    text = encodable_lines(MOBY / "valid.txt", 30, "cp1252").replace("\n\n", "\r\n\n")
    utf8, cp1252, bom = (write(tmp_path / name, text, encoding) for name, encoding in (("a.txt", "utf-8"), ("b.txt", "cp1252"), ("c.txt", "utf-8-sig")))
    lines = list(Corpus([str(utf8)]).lines(0, utf8.stat().st_size))
    assert list(Corpus([str(cp1252)], "cp1252").lines(0, cp1252.stat().st_size)) == lines == list(read_text(utf8)["text"])
    assert list(Corpus([str(bom)]).lines(0, bom.stat().st_size)) == lines
    assert list(sample_lines(str(cp1252), 10**9, "cp1252")) == lines
    with pytest.raises(NotTextError, match=rf"^{re.escape(str(cp1252))}: not UTF-8 text in the line at byte \d+ \(convert it to UTF-8\)$"):
        list(Corpus([str(cp1252)]).lines(0, cp1252.stat().st_size))

    import seqkit.data.streaming

    monkeypatch.setattr(seqkit.data.streaming, "STREAM_ABOVE", 100)
    utf16 = write(tmp_path / "d.txt", text, "utf-16")
    assert streams("auto", str(cp1252), "cp1252") and not streams("auto", str(utf16), "utf-16") and not streams("auto", str(utf16), "utf-32-le")
    with pytest.raises(DataError, match=r"streamed text is cut into lines at the byte 0x0A, which is not a newline in utf-16 \(data\.encoding\): set data\.streaming to false$"):
        Corpus([str(utf16)], "utf-16")


def test_streamed_training_reads_cp1252_as_its_utf8_original(tmp_path):
    runs = [train(load_recipe(write_run(tmp_path / encoding, "language_model", encoding), ["data.streaming=true"]), quiet=True).run_dir
            for encoding in ("utf-8", "cp1252")]  # fmt: skip
    assert _vocabularies(runs[0]) == _vocabularies(runs[1])
    assert _train_losses(runs[0]) == _train_losses(runs[1]) and len(_train_losses(runs[0])) == 2


def test_word_vectors_stay_utf8_whatever_data_encoding_says(tmp_path):
    """data.encoding is the data's: a vectors file (model.embeddings.pretrained) is read as
    UTF-8, and its error does not point at data.encoding."""
    recipe = write_run(tmp_path / "lm", "language_model", "cp1252")
    vectors = tmp_path / "vectors.txt"
    vectors.write_bytes("the 0.1 0.2\ncafé 0.3 0.4\n".encode("cp1252"))
    overrides = [f"model.embeddings.pretrained={vectors}", "model.embedding_dim=2"]
    assert_cli_error(run_cli(["train", str(recipe), "--quiet", *(part for item in overrides for part in ("--set", item))]),
                     rf"^seqkit: error: {re.escape(str(vectors))}:2: not UTF-8 text \(convert it to UTF-8: word vectors files are read as UTF-8\)$")  # fmt: skip
