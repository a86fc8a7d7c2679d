"""Shared fixtures: small slices of the shipped data and a tiny recipe that trains in seconds."""

from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from helpers import (
    MOBY, NAMES, SPAM, TINY_CLASSIFIER, TINY_RECIPE, TINY_TAGGER, WNUT, first_lines, first_records, first_sentences, short_pairs,
    write_generator_recipe, write_jsonl, write_seq2seq_recipe,
)  # fmt: skip


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory):
    """Keep the datasets cache out of the user's home and make runs quiet."""
    os.environ["HF_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("hf-datasets"))
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # commands choose their threads from the machine's load (runtime.choose_threads), which
    # the suite itself raises: pin torch's count so that every test computes alike
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    yield


@pytest.fixture
def moby_slice(tmp_path, monkeypatch) -> Path:
    """A working directory holding data/train.txt, valid.txt and test.txt cut from Moby-Dick."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_text(first_lines(MOBY / "train.txt", 80), encoding="utf-8")
    (data / "valid.txt").write_text(first_lines(MOBY / "valid.txt", 12), encoding="utf-8")
    (data / "test.txt").write_text(first_lines(MOBY / "test.txt", 12), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tiny_recipe(moby_slice) -> Path:
    """A recipe file for a tiny LSTM language model on ``moby_slice``."""
    path = moby_slice / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_RECIPE, sort_keys=False), encoding="utf-8")
    return path


def _write_tagger_data(directory: Path) -> Path:
    """data/train.conll and data/dev.conll (the same first 40 WNUT-16 tweets) and a tiny
    tagger recipe naming them by absolute path; returns the recipe."""
    data = directory / "data"
    data.mkdir()
    slice_ = first_sentences(WNUT / "train.conll", 40)
    (data / "train.conll").write_text(slice_, encoding="utf-8")
    (data / "dev.conll").write_text(slice_, encoding="utf-8")
    recipe = {**TINY_TAGGER, "output_dir": str(directory / "runs" / "tagger"),
              "data": {"train": str(data / "train.conll"), "valid": str(data / "dev.conll")}}  # fmt: skip
    path = directory / "tagger.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def tagger_recipe(tmp_path, monkeypatch) -> Path:
    """A tiny tagger recipe on the first 40 WNUT-16 tweets (dev: the same tweets)."""
    monkeypatch.chdir(tmp_path)
    return _write_tagger_data(tmp_path)


@pytest.fixture(scope="module")
def trained_tagger(tmp_path_factory):
    """A tagger overfitted to 40 tweets, trained once per test module."""
    from seqkit.config import load_recipe
    from seqkit.train import train

    recipe = _write_tagger_data(tmp_path_factory.mktemp("tagger"))
    return train(load_recipe(recipe, ["train.epochs=40", "train.eval_every=null"]), quiet=True)


def _write_classifier_data(directory: Path) -> Path:
    """data/train.jsonl and data/valid.jsonl (the same 20 ham + 20 spam real messages)
    and a tiny classifier recipe naming them by absolute path; returns the recipe."""
    data = directory / "data"
    data.mkdir()
    records = first_records(SPAM, 20, per="label")
    write_jsonl(data / "train.jsonl", records)
    write_jsonl(data / "valid.jsonl", records)
    recipe = {**TINY_CLASSIFIER, "output_dir": str(directory / "runs" / "classifier"),
              "data": {**TINY_CLASSIFIER["data"], "train": str(data / "train.jsonl"), "valid": str(data / "valid.jsonl")}}  # fmt: skip
    path = directory / "classifier.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def classifier_recipe(tmp_path, monkeypatch) -> Path:
    """A tiny spam classifier recipe on 40 real messages (valid: the same messages)."""
    monkeypatch.chdir(tmp_path)
    return _write_classifier_data(tmp_path)


@pytest.fixture(scope="module")
def trained_classifier(tmp_path_factory):
    """A classifier overfitted to 40 messages, trained once per test module."""
    from seqkit.config import load_recipe
    from seqkit.train import train

    recipe = _write_classifier_data(tmp_path_factory.mktemp("classifier"))
    return train(load_recipe(recipe, ["train.epochs=25", "train.early_stopping=null"]), quiet=True)


@pytest.fixture(scope="module")
def trained_generator(tmp_path_factory):
    """A generator overfitted to one female and one male name, trained once per test module."""
    from seqkit.config import load_recipe
    from seqkit.train import train

    return train(load_recipe(write_generator_recipe(tmp_path_factory.mktemp("generator"), NAMES)), quiet=True)


@pytest.fixture(scope="module")
def trained_seq2seq(tmp_path_factory):
    """A G2P model overfitted to 40 short CMUdict words, trained once per test module."""
    from seqkit.config import load_recipe
    from seqkit.train import train

    return train(load_recipe(write_seq2seq_recipe(tmp_path_factory.mktemp("seq2seq"), short_pairs(40))), quiet=True)


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 in a thread: ``files`` maps a path to the bytes it serves
    (others are 404), ``requests`` lists the paths asked for."""
    files: dict[str, bytes] = {}
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            if self.path not in files:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(files[self.path])))
            self.end_headers()
            self.wfile.write(files[self.path])

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_port}", files=files, requests=requests)
    httpd.shutdown()
    httpd.server_close()
