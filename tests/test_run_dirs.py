"""Run directories are never clobbered: seqkit trains only into an empty directory or one of
its own runs, one run at a time; ``--overwrite`` removes the old run only once the new one
has made a step; resume keeps TensorBoard's record of the step it continues from; every
line of ``metrics.jsonl`` is strict JSON; a language model trains on a text of a few words;
a transfer that loads nothing stops before training, and its report shows with ``--quiet``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import seqkit
from helpers import ROOT, SPAM, TINY_CLASSIFIER, first_records, write_jsonl
from seqkit.cli import main
from seqkit.tasks import LanguageModelTask
from seqkit.training.run_dir import RUN_MARKER

SHORT = ["--set", "train.max_steps=2", "--set", "generate.max_tokens=4", "--quiet"]


def _listing(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` and its bytes."""
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


def _strict(line: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def _records(run_dir: Path) -> list[dict]:
    return [_strict(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqkit: error: "), result.stderr
    return lines[0]


# --- 14. a directory seqkit did not write -----------------------------------------------


def test_a_non_empty_directory_that_is_not_a_run_is_refused_before_anything_is_written(tiny_recipe):
    mine = Path("mine3")
    mine.mkdir()
    (mine / "tokenizer.json").write_text('{"mine": true}\n')
    (mine / "labels.json").write_text('["mine"]\n')
    before = _listing(mine)
    for extra in ([], ["--overwrite"]):
        line = _one_error_line(CliRunner().invoke(main, ["train", str(tiny_recipe), *SHORT, "--output-dir", "mine3", *extra]))
        assert line == ("seqkit: error: mine3: not a seqkit run directory and not empty (it holds labels.json, tokenizer.json); "
                        "seqkit never writes among files it did not write: choose a new or empty directory with --output-dir")  # fmt: skip
        assert _listing(mine) == before and sorted(path.name for path in mine.iterdir()) == ["labels.json", "tokenizer.json"]

    Path("recipe-only").mkdir()  # a recipe of the user's named config.yaml does not make a run directory
    (Path("recipe-only") / "config.yaml").write_text(tiny_recipe.read_text())
    line = _one_error_line(CliRunner().invoke(main, ["train", str(tiny_recipe), *SHORT, "--output-dir", "recipe-only", "--overwrite"]))
    assert "recipe-only: not a seqkit run directory and not empty (it holds config.yaml)" in line
    assert (Path("recipe-only") / "config.yaml").read_text() == tiny_recipe.read_text()

    Path("notes.txt").write_text("my notes\n")
    line = _one_error_line(CliRunner().invoke(main, ["train", str(tiny_recipe), *SHORT, "--output-dir", "notes.txt"]))
    assert line == ("seqkit: error: notes.txt: cannot create or write the run directory (notes.txt is a file, not a directory); "
                    "choose another with --output-dir")  # fmt: skip
    assert Path("notes.txt").read_text() == "my notes\n"

    Path("empty").mkdir()  # an empty directory is fine, and so is one seqkit made
    assert CliRunner().invoke(main, ["train", str(tiny_recipe), *SHORT, "--output-dir", "empty"]).exit_code == 0
    assert seqkit.load("empty/best", device="cpu").info["step"] == 2


def test_a_run_of_an_earlier_seqkit_without_the_marker_is_still_a_run(tiny_recipe):
    assert CliRunner().invoke(main, ["train", str(tiny_recipe), *SHORT]).exit_code == 0
    run_dir = Path("runs/tiny")
    (run_dir / RUN_MARKER).unlink()  # as an earlier seqkit left it: config.yaml, best/, last/, metrics.jsonl, tb/
    (run_dir / "notes.txt").write_text("mine\n")
    again = _one_error_line(CliRunner().invoke(main, ["train", str(tiny_recipe), *SHORT]))
    assert "runs/tiny: already holds a run (last, best, metrics.jsonl, config.yaml); pass --resume" in again
    resumed = CliRunner().invoke(main, ["train", str(tiny_recipe), *SHORT[:-1], "--set", "train.max_steps=3", "--resume"])
    assert resumed.exit_code == 0, resumed.stderr
    (run_dir / RUN_MARKER).unlink()
    replaced = CliRunner().invoke(main, ["train", str(tiny_recipe), "--set", "train.max_steps=1", "--quiet", "--overwrite"])
    assert replaced.exit_code == 0, replaced.stderr
    assert replaced.output.startswith("trained 1 step;")
    assert seqkit.load("runs/tiny/last", device="cpu").info["step"] == 1
    assert (run_dir / "notes.txt").read_text() == "mine\n"  # not seqkit's: --overwrite leaves it


# --- 15. --overwrite keeps the old run until the new one has started --------------------


def test_overwrite_that_fails_before_its_first_step_leaves_the_old_run_intact(tiny_recipe, monkeypatch):
    assert CliRunner().invoke(main, ["train", str(tiny_recipe), *SHORT]).exit_code == 0
    run_dir = Path("runs/tiny")
    before = _listing(run_dir)
    Path("bad").mkdir()
    Path("bad/notzip.npz").write_bytes(bytes(range(256)) * 4)  # not text
    line = _one_error_line(CliRunner().invoke(main, ["train", str(tiny_recipe), *SHORT, "--set", "data.train=bad/notzip.npz", "--overwrite"]))
    assert line.startswith("seqkit: error: bad/notzip.npz:") and "not UTF-8 text" in line
    assert _listing(run_dir) == before

    original = LanguageModelTask.loss  # the new run starts, and its first step is NaN

    def nan_loss(self, model, chunk, carry):
        value, num_targets, carry = original(self, model, chunk, carry)
        return value * float("nan"), num_targets, carry

    monkeypatch.setattr(LanguageModelTask, "loss", nan_loss)
    line = _one_error_line(CliRunner().invoke(main, ["train", str(tiny_recipe), *SHORT, "--set", "model.hidden_size=32", "--overwrite"]))
    assert "step 1 (epoch 1, batch 1 of 25" in line and "the loss is nan" in line and "runs/tiny/last (step 2)" in line
    assert _listing(run_dir) == before
    monkeypatch.setattr(LanguageModelTask, "loss", original)

    both = _one_error_line(CliRunner().invoke(main, ["train", str(tiny_recipe), *SHORT, "--resume", "--overwrite"]))
    assert both == "seqkit: error: runs/tiny: --resume continues the run there and --overwrite replaces it: pass one of them"
    assert _listing(run_dir) == before

    replaced = CliRunner().invoke(main, ["train", str(tiny_recipe), *SHORT, "--set", "model.hidden_size=32", "--overwrite"])
    assert replaced.exit_code == 0, replaced.stderr
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["hidden_size"] == 32
    assert seqkit.load("runs/tiny/best", device="cpu").recipe.model.hidden_size == 32
    assert [record["step"] for record in _records(run_dir) if record["split"] == "valid"] == [2]  # the old run's records are gone
    assert len(list((run_dir / "tb").iterdir())) == 1


# --- 16. one run at a time ---------------------------------------------------------------


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="needs flock and POSIX signals")
def test_a_second_run_into_a_directory_being_written_exits_2_naming_the_first(tiny_recipe):
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    first = subprocess.Popen([sys.executable, "-m", "seqkit", "train", str(tiny_recipe), "--set", "train.epochs=1000", "--quiet"],
                             env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    run_dir = Path("runs/tiny")
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.jsonl").exists():  # training: the lock is held
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
        assert (run_dir / RUN_MARKER).read_text().strip() == str(first.pid)
        for extra in ([], ["--overwrite"], ["--resume"]):
            line = _one_error_line(CliRunner().invoke(main, ["train", str(tiny_recipe), *SHORT, *extra]))
            assert line == (f"seqkit: error: runs/tiny: process {first.pid} is training into this directory now; "
                            "wait for it to end or stop it, or choose another directory with --output-dir")  # fmt: skip
    finally:
        first.send_signal(signal.SIGTERM)  # saves last/ and exits 130
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    steps = [(record["split"], record["step"]) for record in _records(run_dir)]
    assert len(steps) == len(set(steps))  # nothing written twice
    assert len(list((run_dir / "tb").iterdir())) == 1
    resumed = CliRunner().invoke(main, ["train", str(tiny_recipe), "--set", "train.epochs=1000", "--set", "train.max_steps=1",
                                        "--quiet", "--resume"])  # fmt: skip
    assert resumed.exit_code == 0, resumed.stderr  # the lock went with the process


# --- 17. TensorBoard after --resume ------------------------------------------------------


def test_resume_keeps_tensorboard_events_up_to_and_including_the_resumed_step(tiny_recipe, monkeypatch):
    import seqkit.train as training

    class StopAfter15(training.StopSignal):  # Ctrl-C during step 15
        checks = 0

        @property
        def requested(self) -> bool:
            StopAfter15.checks += 1
            return StopAfter15.checks >= 15

        @requested.setter
        def requested(self, value: bool) -> None:
            pass

    settings = ["--set", "train.max_steps=20", "--set", "train.eval_every=5", "--set", "generate.max_tokens=4", "--quiet"]
    monkeypatch.setattr(training, "StopSignal", StopAfter15)
    interrupted = CliRunner().invoke(main, ["train", str(tiny_recipe), *settings])
    assert interrupted.exit_code == 130, interrupted.stderr
    monkeypatch.setattr(training, "StopSignal", StopAfter15.__mro__[1])
    resumed = CliRunner().invoke(main, ["train", str(tiny_recipe), *settings, "--resume"])
    assert resumed.exit_code == 0, resumed.stderr
    events = EventAccumulator("runs/tiny/tb")
    events.Reload()
    assert [event.step for event in events.Scalars("valid/loss")] == [5, 10, 15, 20]
    assert [event.step for event in events.Scalars("train/loss")] == [5, 10, 15, 20]
    assert [record["step"] for record in _records(Path("runs/tiny")) if record["split"] == "valid"] == [5, 10, 15, 20]


# --- 19. strict JSON in metrics.jsonl ----------------------------------------------------


def test_metrics_jsonl_writes_nan_as_null_and_every_line_is_strict_json(tiny_recipe, monkeypatch):
    original, calls = LanguageModelTask.loss, [0]

    def nan_at_step_2(self, model, chunk, carry):
        value, num_targets, carry = original(self, model, chunk, carry)
        calls[0] += 1
        return (value * float("nan") if calls[0] == 2 else value), num_targets, carry

    monkeypatch.setattr(LanguageModelTask, "loss", nan_at_step_2)
    result = CliRunner().invoke(main, ["train", str(tiny_recipe), "--set", "train.max_steps=3", "--set", "train.log_every=1",
                                       "--set", "train.eval_every=2", "--set", "train.on_nonfinite=skip", *SHORT[2:]])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    train_records = [record for record in _records(Path("runs/tiny")) if record["split"] == "train"]
    assert [record["step"] for record in train_records] == [1, 2, 3]
    assert train_records[1]["loss"] is None and train_records[1]["skipped_batches"] == 1  # every batch of the interval skipped
    assert all(isinstance(record["loss"], float) for record in (train_records[0], train_records[2]))


# --- 20a. a language model on a text of a few words ---------------------------------------


def test_a_language_model_trains_on_a_text_shorter_than_bptt_and_scores_a_one_word_valid_file(tiny_recipe):
    Path("data/train.txt").write_text("the whale is white\n")
    Path("data/valid.txt").write_text("whale\n")
    result = CliRunner().invoke(main, ["train", str(tiny_recipe), "--set", "tokenizer.min_frequency=1", "--set", "train.epochs=5",
                                       "--set", "train.log_every=1", "--set", "generate.max_tokens=4", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    records = _records(Path("runs/tiny"))
    losses = [record["loss"] for record in records if record["split"] == "train"]
    assert len(losses) == 5 and all(isinstance(loss, float) and loss > 0 for loss in losses)  # no epoch left empty
    valid = [record for record in records if record["split"] == "valid"]
    assert valid[-1]["tokens"] == 1 and valid[-1]["perplexity"] > 1


# --- 20b. transfer: reported with --quiet, and loading nothing is an error ---------------


def _classifier(lm_dir: Path, **model) -> Path:
    write_jsonl(Path("spam.jsonl"), first_records(SPAM, 4, per="label"))
    recipe = {**TINY_CLASSIFIER, "output_dir": "runs/clf", "data": {**TINY_CLASSIFIER["data"], "train": "spam.jsonl", "valid": "spam.jsonl"},
              "model": {**TINY_CLASSIFIER["model"], "init_from": str(lm_dir / "best"), **model},
              "train": {**TINY_CLASSIFIER["train"], "max_steps": 1}}  # fmt: skip
    path = Path("clf.yaml")
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_transfer_report_shows_with_quiet_and_a_transfer_of_nothing_stops_before_training(tiny_recipe):
    assert CliRunner().invoke(main, ["train", str(tiny_recipe), *SHORT]).exit_code == 0  # embedding 16, LSTM 2 x 24
    fits = CliRunner().invoke(main, ["train", str(_classifier(Path("runs/tiny"), embedding_dim=16, hidden_size=24, num_layers=2)), "--quiet"])
    assert fits.exit_code == 0, fits.stderr
    assert fits.output.startswith("init_from runs/tiny/best: loaded 8 tensors, 13 new, 1 skipped (shape)\n")

    nothing = _classifier(Path("runs/tiny"), embedding_dim=24, hidden_size=32, num_layers=1)
    line = _one_error_line(CliRunner().invoke(main, ["train", str(nothing), "--quiet", "--output-dir", "runs/none"]))
    assert line.startswith("seqkit: error: model.init_from: runs/tiny/best: none of its tensors fit this model (5 differ in shape: "
                           "embedding.embedding.weight ")  # fmt: skip
    assert line.endswith("; model.embedding_dim: 16 there, 24 here, model.hidden_size: 24 there, 32 here: "
                         "give the model the sizes of the source's config.yaml, or remove model.init_from to train from scratch")  # fmt: skip
    assert list(Path("runs/none").iterdir()) == []  # the run that never started took its marker with it
