"""Checkpoint references and writes that never destroy: ``save_pretrained`` replaces only a
checkpoint it is told to; every command and ``from_pretrained`` take a run directory (its
best/, else last/), an archive and a URL alike; ``export`` packages only what loads; an
archive that turns out bad is named as the user passed it; ``export`` and
``export-embeddings`` replace a file only with ``--overwrite`` and never leave half of one."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import seqkit
from seqkit.cli import main
from seqkit.config import load_recipe
from seqkit.errors import CheckpointError
from seqkit.train import train

from helpers import MOBY, TINY_RECIPE, first_lines


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch) -> Path:
    """An empty download cache for each test, outside its tmp_path (whose files the tests list)."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("SEQKIT_CACHE", str(path))
    monkeypatch.delenv("SEQKIT_OFFLINE", raising=False)
    return path


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> Path:
    """A tiny language model's run directory (best/, last/, tb/, metrics.jsonl), four steps."""
    root = tmp_path_factory.mktemp("lm")
    for split, count in (("train", 40), ("valid", 6)):
        (root / f"{split}.txt").write_text(first_lines(MOBY / f"{split}.txt", count), encoding="utf-8")
    recipe = {**TINY_RECIPE, "output_dir": str(root / "runs" / "lm"), "data": {"train": str(root / "train.txt"), "valid": str(root / "valid.txt")},
              "train": {**TINY_RECIPE["train"], "max_steps": 4, "eval_every": 2}}  # fmt: skip
    path = root / "lm.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return train(load_recipe(path), quiet=True).run_dir


@pytest.fixture(scope="module")
def vectors_run(tmp_path_factory) -> Path:
    """A tiny regression model that reads vectors (no tokenizer, no word embedding), two steps."""
    root = tmp_path_factory.mktemp("vectors")
    np.savez(root / "train.npz", x=np.arange(24, dtype=np.float32).reshape(4, 3, 2) / 10, y=np.arange(12, dtype=np.float32).reshape(4, 3, 1))
    recipe = {"task": "regression", "seed": 0, "output_dir": str(root / "run"),
              "data": {"train": str(root / "train.npz"), "valid": str(root / "train.npz"), "inputs": "vectors", "input_field": "x", "target_field": "y"},
              "model": {"input_size": 2, "pooling": "none", "hidden_size": 8, "num_layers": 1, "dropout": 0.0},
              "train": {"epochs": 1, "max_steps": 2, "batch_size": 2, "device": "cpu", "precision": "fp32"}}  # fmt: skip
    path = root / "vectors.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return train(load_recipe(path), quiet=True).run_dir


def _tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` and its bytes: to see that nothing changed."""
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


def _cli(arguments: list[str]):
    result = CliRunner().invoke(main, [str(argument) for argument in arguments])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def _one_error(result, text: str) -> None:
    """Exit code 2 and one ``seqkit: error:`` line holding ``text``, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr.startswith("seqkit: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert text in result.stderr, result.stderr


def _generated(path: Path | str) -> str:
    return seqkit.load(path, device="cpu").generate("the whale", max_tokens=6, seed=3)


# --- save_pretrained ------------------------------------------------------------------------


def test_save_pretrained_refuses_a_run_directory_a_foreign_folder_and_a_file(lm_run, tmp_path):
    lm = seqkit.load(lm_run / "best", device="cpu")
    run = shutil.copytree(lm_run, tmp_path / "runs" / "lm")
    before = _tree(run)
    with pytest.raises(CheckpointError, match=rf"^{run}: a run directory \(it holds best/, last/, metrics.jsonl, tb/\): save to a new directory, "
                                              rf"or to {run}/best with overwrite=True to replace its best checkpoint$"):  # fmt: skip
        lm.save_pretrained(run)
    with pytest.raises(CheckpointError, match="a run directory"):
        lm.save_pretrained(run, overwrite=True)  # overwrite replaces a checkpoint, never a run
    assert _tree(run) == before

    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    (folder / "sub" / "more.txt").write_text("mine too")
    with pytest.raises(CheckpointError, match=r"folder: not a seqkit checkpoint directory \(it holds notes.txt, sub/\), and saving would replace it whole"):
        lm.save_pretrained(folder, overwrite=True)
    assert _tree(folder) == {"notes.txt": b"mine", "sub/more.txt": b"mine too"}

    afile = tmp_path / "afile.txt"
    afile.write_text("keep me")
    with pytest.raises(CheckpointError, match=r"afile.txt: exists and is not a directory: save to a new directory"):
        lm.save_pretrained(afile)
    assert afile.read_text() == "keep me" and sorted(path.name for path in tmp_path.iterdir()) == ["afile.txt", "folder", "runs"]

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine.old").mkdir()  # where a save moves the checkpoint it replaces: the user's, here
    (tmp_path / "mine.old" / "diary.txt").write_text("private")
    with pytest.raises(CheckpointError, match=r"mine.old: in the way: saving .*mine moves what is there aside to this name"):
        lm.save_pretrained(tmp_path / "mine")
    assert (tmp_path / "mine.old" / "diary.txt").read_text() == "private"


def test_save_pretrained_writes_new_and_empty_directories_and_replaces_a_checkpoint_only_when_told(lm_run, tmp_path):
    lm = seqkit.load(lm_run / "best", device="cpu")
    expected = _generated(lm_run / "best")
    assert lm.save_pretrained(tmp_path / "new" / "lm") == tmp_path / "new" / "lm"
    (tmp_path / "empty").mkdir()
    lm.save_pretrained(tmp_path / "empty")
    assert _generated(tmp_path / "new" / "lm") == _generated(tmp_path / "empty") == expected

    other = seqkit.load(lm_run / "last", device="cpu")
    other.model.encoder.rnn.weight_hh_l0.data.fill_(0.5)  # a different model, to tell the two apart
    with pytest.raises(CheckpointError, match=r"empty: already holds a checkpoint: pass overwrite=True to replace it, or save to a new directory$"):
        other.save_pretrained(tmp_path / "empty")
    assert _generated(tmp_path / "empty") == expected
    other.save_pretrained(tmp_path / "empty", overwrite=True)
    assert bool((seqkit.load(tmp_path / "empty", device="cpu").model.encoder.rnn.weight_hh_l0 == 0.5).all())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty", "new"]  # no temporary or .old left

    run = shutil.copytree(lm_run, tmp_path / "run")
    lm.save_pretrained(run / "best", overwrite=True)  # a run's best/ is a checkpoint: replaced when asked
    assert _generated(run) == expected and (run / "last" / "trainer_state.pt").is_file()
    with pytest.raises(TypeError, match="directory: expected a path"):
        lm.save_pretrained(None)


# --- a run directory means its best/ ----------------------------------------------------------


def test_every_command_takes_a_run_directory_and_uses_its_best(lm_run, tmp_path, capsys):
    assert _generated(lm_run) == _generated(lm_run / "best")
    assert f"{lm_run} is a run directory: using {lm_run}/best\n" in capsys.readouterr().err
    note = f"{lm_run} is a run directory: using {lm_run}/best\n"
    for arguments in (["info", lm_run], ["eval", lm_run, "--data", lm_run.parents[1] / "valid.txt", "--json"],
                      ["generate", lm_run, "--max-tokens", "3", "--seed", "0"]):  # fmt: skip
        result = _cli(arguments)
        assert result.exit_code == 0 and result.stderr == note, (arguments, result.stdout, result.stderr)
    assert _cli(["info", lm_run]).stdout == _cli(["info", lm_run / "best"]).stdout.replace(f"{lm_run}/best", str(lm_run))
    exported = _cli(["export", lm_run, tmp_path / "lm.tar.gz"])
    assert exported.exit_code == 0 and exported.stderr == note
    with tarfile.open(tmp_path / "lm.tar.gz") as bundle:
        assert {member.name for member in bundle} == {"lm/config.yaml", "lm/model.safetensors", "lm/tokenizer.json"}
    assert _generated(tmp_path / "lm.tar.gz") == _generated(lm_run / "best")
    vectors = _cli(["export-embeddings", lm_run, tmp_path / "vectors.txt"])
    assert vectors.exit_code == 0 and vectors.stderr == note
    assert _cli(["export-embeddings", lm_run / "best", tmp_path / "best.txt"]).exit_code == 0
    assert (tmp_path / "vectors.txt").read_bytes() == (tmp_path / "best.txt").read_bytes()


def test_a_run_directory_without_best_uses_last_and_says_so_and_one_without_either_is_named(lm_run, vectors_run, tmp_path):
    run = shutil.copytree(lm_run, tmp_path / "lm")
    shutil.rmtree(run / "best")
    result = _cli(["info", run])
    assert result.exit_code == 0 and result.stderr == f"{run} is a run directory with no best/ checkpoint: using {run}/last, its latest\n"
    assert "step         4 " in result.stdout
    shutil.rmtree(run / "last")
    _one_error(_cli(["info", run]), f"{run}: a run directory with no checkpoint yet (no best/ or last/): train until the first evaluation saves one")
    _one_error(_cli(["export", run, tmp_path / "x.zip"]), "a run directory with no checkpoint yet")
    assert not (tmp_path / "x.zip").exists()
    steps = tmp_path / "steps.jsonl"
    steps.write_text(json.dumps({"x": [[0.1, 0.2], [0.3, 0.4]]}) + "\n")
    predicted = _cli(["predict", vectors_run, steps, "--format", "jsonl"])
    assert predicted.exit_code == 0 and predicted.stderr == f"{vectors_run} is a run directory: using {vectors_run}/best\n", predicted.stderr
    assert predicted.stdout == _cli(["predict", vectors_run / "best", steps, "--format", "jsonl"]).stdout


# --- export: anything the other commands take, only what loads ---------------------------------


def test_export_refuses_what_holds_no_weights_before_writing_and_a_bad_archive_names_itself(lm_run, tmp_path, cache):
    no_weights = shutil.copytree(lm_run / "best", tmp_path / "no-weights")
    (no_weights / "model.safetensors").unlink()
    _one_error(_cli(["export", no_weights, tmp_path / "out" / "lm.tar.gz"]), f"{no_weights}/model.safetensors: missing: a checkpoint needs its weights")
    assert not (tmp_path / "out").exists()

    # what the old export wrote for a run directory: its top-level files, no weights
    bad = tmp_path / "ner2.tar.gz"
    with tarfile.open(bad, "w:gz") as bundle:
        for name in ("config.yaml", "tokenizer.json", "metrics.jsonl"):
            bundle.add(lm_run / name, f"ner2/{name}")
    _one_error(_cli(["info", bad]), f"{bad}: holds no weights (no ner2/model.safetensors), so no model: it is not the archive of a checkpoint directory")
    _one_error(_cli(["export", bad, tmp_path / "again.zip"]), f"{bad}: holds no weights")
    assert not (tmp_path / "again.zip").exists()

    cut = tmp_path / "cut.tar.gz"  # weights cut off: found only once the checkpoint is read
    with tarfile.open(cut, "w:gz") as bundle:
        for path in sorted((lm_run / "best").iterdir()):
            info = bundle.gettarinfo(path, f"cut/{path.name}")
            data = path.read_bytes()[:100] if path.name == "model.safetensors" else path.read_bytes()
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    with pytest.raises(CheckpointError, match=rf"^{cut}: model.safetensors in the archive: unreadable or truncated"):
        seqkit.load(cut, device="cpu")
    assert str(cache) not in _cli(["info", cut]).stderr


def test_export_takes_an_archive_and_a_url(lm_run, tmp_path, server):
    url, files = server.url, server.files
    first = _cli(["export", lm_run / "best", tmp_path / "lm.tar.gz"])
    assert first.exit_code == 0 and first.stderr == ""
    again = _cli(["export", tmp_path / "lm.tar.gz", tmp_path / "lm2.zip"])
    assert again.exit_code == 0, again.stderr
    files["/lm.tar.gz"] = (tmp_path / "lm.tar.gz").read_bytes()
    digest = hashlib.sha256(files["/lm.tar.gz"]).hexdigest()
    from_url = _cli(["export", f"{url}/lm.tar.gz#sha256={digest}", tmp_path / "lm3.tgz"])
    assert from_url.exit_code == 0, from_url.stderr
    assert f"sha256 {hashlib.sha256((tmp_path / 'lm3.tgz').read_bytes()).hexdigest()}" in from_url.stdout
    expected = _generated(lm_run / "best")
    assert _generated(tmp_path / "lm2.zip") == _generated(tmp_path / "lm3.tgz") == expected
    _one_error(_cli(["export", f"{url}/lm.tar.gz#sha256={'0' * 64}", tmp_path / "lm4.zip"]), f"{url}/lm.tar.gz: SHA-256 mismatch")
    assert not (tmp_path / "lm4.zip").exists()


# --- export and export-embeddings never replace a file unasked ---------------------------------


def test_an_existing_output_is_refused_without_overwrite_and_replaced_whole_with_it(lm_run, tmp_path):
    best = lm_run / "best"
    for command, output in (("export", tmp_path / "lm.tar.gz"), ("export-embeddings", tmp_path / "notes.txt")):
        output.write_text("the user's own file")
        _one_error(_cli([command, best, output]), f"{output}: already exists: pass --overwrite to replace it, or choose another name")
        assert output.read_text() == "the user's own file"
        replaced = _cli([command, best, output, "--overwrite"])
        assert replaced.exit_code == 0, replaced.stderr
        assert output.read_bytes() != b"the user's own file"
        assert "--overwrite" in _cli([command, "--help"]).stdout
    assert _generated(tmp_path / "lm.tar.gz") == _generated(best)
    assert (tmp_path / "notes.txt").read_text().splitlines()[0].split()[1] == "16"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["lm.tar.gz", "notes.txt"]  # no temporary left


def test_export_embeddings_refusals_are_one_line(lm_run, vectors_run, tmp_path):
    _one_error(_cli(["export-embeddings", vectors_run / "best", tmp_path / "v.txt"]), f"{vectors_run}/best: reads vectors, not words: it has no word embedding to export")
    missing = tmp_path / "nowhere" / "v.txt"
    _one_error(_cli(["export-embeddings", lm_run / "best", missing]), f"{missing}: cannot write it: the directory {missing.parent} does not exist")
    (tmp_path / "afile").write_text("x")
    _one_error(_cli(["export-embeddings", lm_run / "best", tmp_path / "afile" / "v.txt"]), f"{tmp_path / 'afile'} is a file, not a directory")
    _one_error(_cli(["export-embeddings", lm_run / "best", tmp_path]), f"{tmp_path}: is a directory: name the file to write")
    _one_error(_cli(["export", lm_run / "best", tmp_path / "afile" / "lm.zip"]), f"{tmp_path / 'afile'} is a file, not a directory")
    weights = (lm_run / "best" / "model.safetensors").read_bytes()
    _one_error(_cli(["export-embeddings", lm_run / "best", lm_run / "best" / "model.safetensors", "--overwrite"]),
               f"{lm_run}/best is a checkpoint directory, which only seqkit writes")
    assert (lm_run / "best" / "model.safetensors").read_bytes() == weights
    assert sorted(path.name for path in tmp_path.iterdir()) == ["afile"]


def test_a_write_that_fails_leaves_what_was_there_and_no_half_file(lm_run, tmp_path, monkeypatch):
    import seqkit.checkpoint

    def full_disk(path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(seqkit.checkpoint, "_fsync", full_disk)  # fails once the file is written, before it is renamed
    for command, output in (("export", tmp_path / "lm.zip"), ("export-embeddings", tmp_path / "vectors.txt")):
        output.write_text("before")
        _one_error(_cli([command, lm_run / "best", output, "--overwrite"]), f"{output}: cannot write it (No space left on device); nothing was written there")
        assert output.read_text() == "before"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["lm.zip", "vectors.txt"]
