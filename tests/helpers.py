"""Helpers the tests share (imported as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MOBY = ROOT / "data" / "moby-dick"
WNUT = ROOT / "data" / "wnut16"
SPAM = ROOT / "data" / "spam" / "spam-subset.jsonl.gz"
SOTU = ROOT / "data" / "sotu" / "paragraphs.jsonl.gz"


def first_lines(source: Path, count: int) -> str:
    """The first ``count`` non-empty lines of a shipped file, blank lines between them."""
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    return "\n\n".join(lines[:count]) + "\n"


TINY_RECIPE = {
    "task": "language_model",
    "seed": 0,
    "output_dir": "runs/tiny",
    "data": {"train": "data/train.txt", "valid": "data/valid.txt", "test": "data/test.txt"},
    "tokenizer": {"kind": "word", "lowercase": True, "min_frequency": 2},
    "model": {"embedding_dim": 16, "encoder": "lstm", "hidden_size": 24, "num_layers": 2, "dropout": 0.2},
    "train": {"epochs": 2, "batch_size": 8, "bptt": 12, "lr": 0.01, "eval_every": 10, "log_every": 5, "device": "cpu", "precision": "fp32"},
    "generate": {"prompt": "the whale", "max_tokens": 12, "temperature": 0.8, "top_k": 20},
}


def first_sentences(source: Path, count: int) -> str:
    """The first ``count`` sentences of a shipped CoNLL file."""
    sentences = source.read_text(encoding="utf-8").split("\n\n")
    return "\n\n".join(sentences[:count]).strip("\n") + "\n"


TINY_TAGGER = {
    "task": "tagging",
    "seed": 0,
    "output_dir": "runs/tagger",
    "data": {"train": "data/train.conll", "valid": "data/dev.conll"},
    "tokenizer": {"kind": "word", "split": "tweet"},
    "model": {"embedding_dim": 24, "hidden_size": 32, "num_layers": 1, "bidirectional": True, "dropout": 0.0,
              "crf": True, "char_features": "cnn", "char_embedding_dim": 8, "char_hidden_size": 8},
    "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "eval_batch_size": 16, "log_every": 5, "device": "cpu", "precision": "fp32"},
}  # fmt: skip


def run_python(code: str, cwd: Path) -> str:
    """Run ``code`` in a fresh Python process; returns its stdout."""
    completed = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def first_records(source: Path, count: int, per: str | None = None) -> list[dict]:
    """The first ``count`` records of a shipped JSON Lines file (``count`` of each value of
    the field ``per``, when given), in file order."""
    import gzip
    import json

    taken: dict = {}
    records = []
    with gzip.open(source, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            group = record.get(per) if per else None
            if taken.get(group, 0) < count:
                taken[group] = taken.get(group, 0) + 1
                records.append(record)
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    import json

    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return path


TINY_CLASSIFIER = {
    "task": "classification",
    "seed": 0,
    "output_dir": "runs/classifier",
    "data": {"train": "data/train.jsonl", "valid": "data/valid.jsonl", "max_length": 48, "truncation": "head+tail"},
    "tokenizer": {"kind": "word", "lowercase": True},
    "model": {"embedding_dim": 24, "hidden_size": 24, "num_layers": 1, "bidirectional": True, "dropout": 0.0, "pooling": "attention"},
    "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "eval_batch_size": 16, "log_every": 5, "device": "cpu", "precision": "fp32"},
}  # fmt: skip


NAMES = [{"text": "Abigail", "label": "female"}, {"text": "Zachary", "label": "male"}]


def write_generator_recipe(directory: Path, records: list[dict], **model) -> Path:
    """A tiny conditioned name generator recipe on ``records`` (valid: the same records)."""
    data = write_jsonl(directory / "names.jsonl", records)
    recipe = {
        "task": "generation", "seed": 0, "output_dir": str(directory / "runs" / "names"),
        "data": {"train": str(data), "valid": str(data), "input_field": "text", "condition_field": "label"},
        "tokenizer": {"kind": "char"},
        "model": {"embedding_dim": 16, "encoder": "gru", "hidden_size": 32, "num_layers": 1, "dropout": 0.0, **model},
        "train": {"epochs": 150, "batch_size": 2, "lr": 0.02, "eval_every": 50, "log_every": 10, "device": "cpu", "precision": "fp32"},
        "generate": {"max_tokens": 15, "temperature": 0.5},
    }  # fmt: skip
    path = directory / "names.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


CMUDICT = ROOT / "data" / "cmudict"


def short_pairs(count: int, max_letters: int = 5) -> str:
    """The first ``count`` training words of CMUdict with at most ``max_letters`` letters,
    as WORD<TAB>PHONEMES lines."""
    import gzip

    lines = []
    with gzip.open(CMUDICT / "train.tsv.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            word = line.split("\t")[0]
            if word.isalpha() and len(word) <= max_letters:
                lines.append(line)
                if len(lines) == count:
                    break
    return "".join(lines)


def write_seq2seq_recipe(directory: Path, pairs: str, **train) -> Path:
    """A tiny G2P recipe on ``pairs`` (valid: the same pairs)."""
    data = directory / "pairs.tsv"
    data.write_text(pairs, encoding="utf-8")
    recipe = {
        "task": "seq2seq", "seed": 0, "output_dir": str(directory / "runs" / "g2p"),
        "data": {"train": str(data), "valid": str(data)},
        "tokenizer": {"kind": "char", "lowercase": True},
        "target_tokenizer": {"kind": "word", "split": "whitespace"},
        "model": {"embedding_dim": 16, "encoder": "gru", "hidden_size": 48, "num_layers": 1, "bidirectional": True, "dropout": 0.0},
        "train": {"epochs": 100, "batch_size": 16, "lr": 0.01, "eval_every": 60, "log_every": 20, "device": "cpu", "precision": "fp32", **train},
    }  # fmt: skip
    path = directory / "g2p.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path
