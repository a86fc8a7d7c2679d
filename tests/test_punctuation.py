"""Punctuation restoration as tagging: ``data/punctuation/make.py`` on a small input (marks
removed, words lowercase, each tagged with the mark after it, windows, splits by document),
the shipped files being what the script makes, and a tiny tagger trained on a slice of them
that learns (its loss falls) and restores marks from ``seqkit predict`` and ``Tagger.tag``."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections import Counter

import pytest
import torch
import yaml
from click.testing import CliRunner

import seqkit
from seqkit.cli import main
from seqkit.config import load_recipe
from seqkit.errors import RecipeError
from seqkit.heads import IGNORE_INDEX, TaggingHead
from seqkit.tasks import TaggingTask

from helpers import ROOT, TINY_TAGGER

PUNCTUATION = ROOT / "data" / "punctuation"
MAKE = PUNCTUATION / "make.py"

CHAPTERS = {
    "train.txt": 'CHAPTER 1. Loomings.\n\nCall me Ishmael. Some years ago—never mind how long precisely—having '
                 'little money, I thought: "Shall I sail?" Mr. Stubb\'s whale-fish cost $1,000!\n\n'
                 "     CETUS,               Latin.\n\n\nCHAPTER 2. The Carpet-Bag.\n\nI stuffed a shirt (or two) in; U.S. ships...\n",
    "valid.txt": "CHAPTER 3. The Spouter-Inn.\n\nWhy so? Because.\n",
    "test.txt": "Epilogue \"AND I ONLY AM ESCAPED ALONE TO TELL THEE\" Job.\n\nThe drama's done. Why then here does any one step forth?\n",
}  # fmt: skip
ADDRESSES = [f"{1790 + index} President{index}" for index in range(10)]


def _make(tmp_path, *args: str) -> dict[str, str]:
    """Run the script as a user would; the text of each file it wrote."""
    completed = subprocess.run([sys.executable, str(MAKE), "--out", str(tmp_path), *args], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return {split: gzip.decompress((tmp_path / f"{split}.conll.gz").read_bytes()).decode("utf-8") for split in ("train", "valid", "test")}


def _pairs(text: str) -> list[list[tuple[str, str]]]:
    """The windows of a CoNLL text, comments left out, as ``(word, tag)`` lists."""
    windows = []
    for block in text.split("\n\n"):
        rows = [tuple(line.split("\t")) for line in block.splitlines() if line and not line.startswith("#")]
        if rows:
            windows.append(rows)
    return windows


def _documents(text: str) -> dict[str, list[list[tuple[str, str]]]]:
    """The windows of each document of a CoNLL text the script wrote, by the document's name."""
    return {part.split("\n", 1)[0]: _pairs(part.split("\n", 1)[1]) for part in text.split("# document: ")[1:]}


def test_make_strips_marks_tags_the_mark_after_each_word_and_splits_by_document(tmp_path):
    moby = tmp_path / "moby"
    moby.mkdir()
    for name, text in CHAPTERS.items():
        (moby / name).write_text(text, encoding="utf-8")
    records = [{"text": f"Address {index}, to Congress. Is it well?", "address": address} for index, address in enumerate(ADDRESSES)]
    records.insert(1, {"text": "Gen. Knox, the U.S. Army: 1,000 men.", "address": ADDRESSES[0]})  # a second paragraph of the first address
    sotu = tmp_path / "sotu.jsonl.gz"
    sotu.write_bytes(gzip.compress("".join(json.dumps(record) + "\n" for record in records).encode("utf-8")))
    out = tmp_path / "out"
    out.mkdir()
    texts = _make(out, "--moby", str(moby), "--sotu", str(sotu), "--window", "10")

    train = texts["train"]
    assert [line for line in train.splitlines() if line.startswith("#")] == [
        "# document: Moby-Dick chapter 1", "# document: Moby-Dick chapter 2",
        *(f"# document: State of the Union {address}" for index, address in enumerate(ADDRESSES) if index not in (4, 9))]  # fmt: skip
    documents = _documents(train)
    chapter_1 = [pair for window in documents["Moby-Dick chapter 1"] for pair in window]
    assert chapter_1 == [
        ("call", "O"), ("me", "O"), ("ishmael", "PERIOD"), ("some", "O"), ("years", "O"), ("ago", "COMMA"),
        ("never", "O"), ("mind", "O"), ("how", "O"), ("long", "O"), ("precisely", "COMMA"), ("having", "O"),
        ("little", "O"), ("money", "COMMA"), ("i", "O"), ("thought", "COMMA"), ("shall", "O"), ("i", "O"),
        ("sail", "QUESTION"), ("mr.", "O"), ("stubb's", "O"), ("whale-fish", "O"), ("cost", "O"), ("1,000", "PERIOD")]  # fmt: skip
    assert [len(window) for window in documents["Moby-Dick chapter 1"]] == [10, 10, 4]  # cut every 10 words, mid-sentence
    assert documents["Moby-Dick chapter 2"] == [[("i", "O"), ("stuffed", "O"), ("a", "O"), ("shirt", "O"), ("or", "O"),
                                                       ("two", "O"), ("in", "PERIOD"), ("u.s.", "O"), ("ships", "PERIOD")]]  # fmt: skip
    first_address = [pair for window in documents["State of the Union 1790 President0"] for pair in window]
    assert first_address == [("address", "O"), ("0", "COMMA"), ("to", "O"), ("congress", "PERIOD"), ("is", "O"), ("it", "O"),
                             ("well", "QUESTION"), ("gen.", "O"), ("knox", "COMMA"), ("the", "O"), ("u.s.", "O"),
                             ("army", "COMMA"), ("1,000", "O"), ("men", "PERIOD")]  # fmt: skip
    assert "cetus" not in train and "loomings" not in train and "carpet" not in train  # headings and indented lines left out

    assert _documents(texts["valid"])["Moby-Dick chapter 3"] == [[("why", "O"), ("so", "QUESTION"), ("because", "PERIOD")]]
    assert "# document: State of the Union 1794 President4\n" in texts["valid"] and texts["valid"].count("# document:") == 2
    test = texts["test"]
    assert test.startswith("# document: Moby-Dick epilogue\nthe\tO\ndrama's\tO\ndone\tPERIOD\nwhy\tO\n")
    assert "one\tO\nstep\tO\n\nforth\tQUESTION\n\n" in test and "# document: State of the Union 1799 President9\n" in test
    assert "escaped" not in test and "President4" not in test and "President9" not in train + texts["valid"]
    every_word = [word for text in texts.values() for window in _pairs(text) for word, _ in window]
    assert all(word == word.lower() and not set(word) & set("\"?!;:()$—") for word in every_word)


def test_shipped_files_are_what_the_script_makes(tmp_path):
    texts = _make(tmp_path)
    for split in ("train", "valid", "test"):
        shipped = gzip.decompress((PUNCTUATION / f"{split}.conll.gz").read_bytes()).decode("utf-8")
        assert texts[split] == shipped, split  # the text, not the bytes: another zlib may compress differently
    train = _pairs(texts["train"])
    assert train[0][:4] == [("the", "O"), ("pale", "O"), ("usher", "COMMA"), ("threadbare", "O")]  # the Etymology
    assert all(len(window) <= 50 for window in train) and sum(len(window) == 50 for window in train) > 0.9 * len(train)
    tags = {tag for text in texts.values() for window in _pairs(text) for _, tag in window}
    assert tags == {"O", "COMMA", "PERIOD", "QUESTION"}
    assert texts["test"].startswith("# document: Moby-Dick chapter 129\n")


def _first_windows(name: str, count: int) -> str:
    with gzip.open(PUNCTUATION / name, "rt", encoding="utf-8") as handle:
        return "\n\n".join(handle.read().split("\n\n")[:count]).strip("\n") + "\n"


def test_a_tiny_tagger_learns_to_restore_marks(tmp_path):
    (tmp_path / "train.conll").write_text(_first_windows("train.conll.gz", 300), encoding="utf-8")
    (tmp_path / "valid.conll").write_text(_first_windows("valid.conll.gz", 40), encoding="utf-8")
    recipe = yaml.safe_load((ROOT / "recipes" / "punctuation.yaml").read_text(encoding="utf-8"))
    recipe.update(output_dir=str(tmp_path / "run"), data={**recipe["data"], "train": str(tmp_path / "train.conll"),
                                                          "valid": str(tmp_path / "valid.conll"), "test": None})  # fmt: skip
    recipe["model"] = {**recipe["model"], "embedding_dim": 24, "hidden_size": 32, "num_layers": 1}
    recipe["train"] = {**recipe["train"], **TINY_TAGGER["train"], "epochs": 4, "batch_size": 16, "lr": 0.01, "eval_every": 40, "warmup_steps": 0}
    path = tmp_path / "punctuation.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    result = CliRunner().invoke(main, ["train", str(path), "--quiet"])
    assert result.exit_code == 0, result.output

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in records if "loss" in record and "accuracy" not in record]
    assert len(losses) >= 4 and losses[-1] < 0.8 * losses[0], losses
    best = str(tmp_path / "run" / "best")
    tagger = seqkit.Tagger.from_pretrained(best, device="cpu")
    assert sorted(tagger.labels.labels) == ["COMMA", "O", "PERIOD", "QUESTION"]
    doc = tagger.tag("call me ishmael some years ago never mind how long precisely")
    assert doc.tokens == "call me ishmael some years ago never mind how long precisely".split() and doc.spans == []
    assert set(doc.tags) <= {"O", "COMMA", "PERIOD", "QUESTION"}
    predicted = CliRunner().invoke(main, ["predict", best, "-"], input="the whale's sea-port\n")
    assert predicted.exit_code == 0 and predicted.output.split()[0].startswith("the/")  # split at spaces only
    assert [pair.split("/")[0] for pair in predicted.output.split()] == ["the", "whale's", "sea-port"]


def test_class_weights_weigh_each_word_of_a_softmax_head_by_its_tag():
    torch.manual_seed(0)
    head = TaggingHead(input_dim=3, num_tags=3, crf=False)
    emissions = torch.randn(2, 3, 3)
    tags = torch.tensor([[0, 2, 1], [2, 0, IGNORE_INDEX]])  # the second row is padded
    weights = torch.tensor([1.0, 2.0, 5.0])
    nll = -emissions.log_softmax(-1)
    words = [(row, time) for row in range(2) for time in range(3) if tags[row, time] != IGNORE_INDEX]
    plain = sum(nll[row, time, tags[row, time]] for row, time in words) / len(words)
    weighted = sum(weights[tags[row, time]] * nll[row, time, tags[row, time]] for row, time in words) / sum(weights[tags[row, time]] for row, time in words)
    assert torch.allclose(head.loss(emissions, tags), plain)
    assert torch.allclose(head.loss(emissions, tags, weights), weighted)
    assert not torch.allclose(weighted, plain)
    assert torch.allclose(head.loss(emissions, tags, torch.ones(3)), plain)  # equal weights: the plain mean
    with pytest.raises(ValueError, match="class weights need the softmax head"):
        TaggingHead(input_dim=3, num_tags=3, crf=True).loss(emissions, tags, weights)


def _punctuation_recipe(tmp_path, overrides: list[str]):
    (tmp_path / "train.conll").write_text(_first_windows("train.conll.gz", 60), encoding="utf-8")
    (tmp_path / "valid.conll").write_text(_first_windows("valid.conll.gz", 10), encoding="utf-8")
    data = [f"data.train={tmp_path / 'train.conll'}", f"data.valid={tmp_path / 'valid.conll'}", "data.test=null"]
    return load_recipe(ROOT / "recipes" / "punctuation.yaml", [*data, "model.crf=false", *overrides])


def test_class_weights_of_a_tagger_from_the_recipe(tmp_path):
    recipe = _punctuation_recipe(tmp_path, ["train.class_weights={COMMA: 2, QUESTION: 4}"])
    task = TaggingTask(recipe, TaggingTask.make_tokenizer(recipe))
    assert task.labels.labels == ["COMMA", "O", "PERIOD", "QUESTION"] and task.class_weights.tolist() == [2.0, 1.0, 1.0, 4.0]
    batch = next(iter(task.train_batches(0, torch.device("cpu"))))
    counts = Counter(tag for tag in batch.tag_ids.flatten().tolist() if tag != IGNORE_INDEX)
    assert task.loss_weight(batch) == 2 * counts[0] + counts[1] + counts[2] + 4 * counts[3]  # what the weighted mean is over

    recipe = _punctuation_recipe(tmp_path, ["train.class_weights=balanced"])
    task = TaggingTask(recipe, TaggingTask.make_tokenizer(recipe))
    counts = Counter(tag for tags in task.train_examples[2] for tag in tags)
    total = sum(counts.values())
    assert task.class_weights.tolist() == pytest.approx([total / (4 * counts[index]) for index in range(4)])  # each tag weighs the same in all

    recipe = _punctuation_recipe(tmp_path, ["train.class_weights={COMA: 2}"])
    with pytest.raises(RecipeError) as raised:
        TaggingTask(recipe, TaggingTask.make_tokenizer(recipe))
    assert raised.value.problems == ["train.class_weights: unknown tag 'COMA' (tags: COMMA, O, PERIOD, QUESTION)"]
