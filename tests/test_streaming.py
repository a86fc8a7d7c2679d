"""Streaming a language model's training text (data.streaming): the same token stream as
reading it whole, every token a target once, a bounded tokenizer sample, training that
learns and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqkit.config import load_recipe
from seqkit.data import LMStream, streaming, token_stream
from seqkit.data.streaming import Corpus, StreamedText, sample_lines
from seqkit.errors import DataError, RecipeError
from seqkit.tokenize import special_ids, train_tokenizer
from seqkit.train import TrainingInterrupted, train

from helpers import MOBY
from test_language_model import _interrupt_at_step


@pytest.fixture
def corpus_files(tmp_path) -> list[Path]:
    """Moby-Dick's validation chapters in two files, with \\n, \\r\\n and \\r line ends and blank lines."""
    lines = (MOBY / "valid.txt").read_text(encoding="utf-8").splitlines()
    ends = ["\n", "\r\n", "\r", "\n\n"]
    text = "".join(line + ends[number % len(ends)] for number, line in enumerate(lines))
    half = len(text) // 2
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_bytes(text[:half].rsplit("\n", 1)[0].encode("utf-8") + b"\n")
    second.write_bytes(text[half:].split("\n", 1)[1].encode("utf-8"))  # no line end at the very end
    return [first, second]


@pytest.fixture
def tokenizer(corpus_files):
    return train_tokenizer("word", sample_lines([str(path) for path in corpus_files], 1 << 20), lowercase=True)


@pytest.mark.parametrize("offset", [0, 7])
def test_one_row_gives_exactly_the_in_memory_chunks(corpus_files, tokenizer, offset):
    paths = [str(path) for path in corpus_files]
    pad = special_ids(tokenizer).pad
    expected = list(LMStream(token_stream(paths, tokenizer), 1, 35, pad, offset))
    chunks = list(StreamedText(Corpus(paths), tokenizer, 1, 35, pad, offset).chunks())
    assert len(chunks) == len(expected) > 10
    for chunk, wanted in zip(chunks, expected):
        assert torch.equal(chunk.token_ids, wanted.token_ids) and torch.equal(chunk.targets, wanted.targets)


def test_rows_read_every_token_once_and_a_resume_finds_its_place(corpus_files, tokenizer):
    paths = [str(path) for path in corpus_files]
    pad = special_ids(tokenizer).pad
    stream = token_stream(paths, tokenizer)
    text = StreamedText(Corpus(paths), tokenizer, 6, 20, pad)  # rows span the boundary between the files
    chunks = list(text.chunks())
    targets = torch.cat([chunk.targets for chunk in chunks], dim=1)
    assert [token for row in targets.tolist() for token in row if token != pad] == stream[1:].tolist()
    assert chunks[0].token_ids[0, 0] == stream[0]
    for row in range(5):  # each row's last target is the next row's first input
        last = [token for token in targets[row].tolist() if token != pad][-1]
        assert last == chunks[0].token_ids[row + 1, 0]
    later = list(text.chunks(start=7))
    assert len(later) == len(chunks) - 7
    assert all(torch.equal(a.token_ids, b.token_ids) and torch.equal(a.targets, b.targets) for a, b in zip(later, chunks[7:]))
    # DDP: a process reading rows 3..5 gets exactly those rows of the chunks
    own = list(StreamedText(Corpus(paths), tokenizer, 6, 20, pad, rows=range(3, 6)).chunks())
    assert len(own) <= len(chunks)
    for mine, whole in zip(own, chunks):
        width = mine.targets.shape[1]
        assert torch.equal(mine.targets, whole.targets[3:, :width]) and (whole.targets[3:, width:] == pad).all()


def test_the_tokenizer_sample_is_bounded_and_spread_over_the_text(tmp_path):
    lines = [f"line {number} of the corpus" for number in range(20_000)]
    path = tmp_path / "big.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sample = list(sample_lines(str(path), 32_000))
    assert 25_000 < sum(len(line) + 1 for line in sample) <= 32_000 + 64 * 30
    assert set(sample) <= set(lines)
    assert sample[0] == lines[0] and int(sample[-1].split()[1]) > 19_000  # from the start to the end
    assert list(sample_lines(str(path), 10**9)) == lines  # a small corpus is read whole


def _records(run_dir: Path, split: str) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


def test_streamed_training_learns_and_resumes_exactly(tiny_recipe, monkeypatch):
    overrides = ["data.streaming=true", "tokenizer.sample_mb=0.005", "train.max_steps=30", "train.eval_every=10"]
    straight = train(load_recipe(tiny_recipe, [*overrides, "output_dir=runs/straight"]), quiet=True)
    valid = _records(straight.run_dir, "valid")
    assert valid[-1]["loss"] < valid[0]["loss"] - 0.1 and straight.steps == 30
    # the vocabulary came from a ~5 KB sample of the training text
    words = json.loads((straight.run_dir / "tokenizer.json").read_text())["model"]["vocab"]
    full = train(load_recipe(tiny_recipe, ["train.max_steps=1", "output_dir=runs/whole"]), quiet=True).run_dir
    assert 50 < len(words) < len(json.loads((full / "tokenizer.json").read_text())["model"]["vocab"])

    recipe = load_recipe(tiny_recipe, [*overrides, "output_dir=runs/interrupted"])
    with monkeypatch.context() as patch:
        _interrupt_at_step(patch, 14)
        with pytest.raises(TrainingInterrupted):
            train(recipe, quiet=True)
    resumed = train(recipe, resume=True, quiet=True).run_dir
    assert _records(resumed, "valid") == valid
    assert [r["loss"] for r in _records(resumed, "train")] == [r["loss"] for r in _records(straight.run_dir, "train")]


def test_streaming_is_automatic_above_a_size_and_refused_where_it_does_not_apply(tiny_recipe, monkeypatch):
    assert not streaming.streams("auto", "data/train.txt") and streaming.streams(True, "data/train.txt")
    monkeypatch.setattr(streaming, "STREAM_ABOVE", 1000)
    assert streaming.streams("auto", "data/train.txt") and not streaming.streams(False, "data/train.txt")
    with pytest.raises(RecipeError, match="data.streaming: only a language model streams"):
        load_recipe(tiny_recipe, ["task=tagging", "data.streaming=true"])
    gz = Path("data/train.txt.gz")
    gz.write_bytes(b"")
    with pytest.raises(DataError, match="data.streaming reads plain text files"):
        Corpus(str(gz))
