"""Shared fixtures: small slices of the shipped data and a tiny recipe that trains in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from helpers import MOBY, TINY_RECIPE, first_lines


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory):
    """Keep the datasets cache out of the user's home and make runs quiet."""
    os.environ["HF_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("hf-datasets"))
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
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
