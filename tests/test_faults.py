"""Faults lose nothing saved: Ctrl-C / SIGTERM, ``kill -9`` at any moment (inside a
checkpoint save too), a NaN or infinite loss or gradient, a full disk or an unwritable
output directory.

Run as a script (``python tests/test_faults.py kill-points``, in a directory holding
``tiny.yaml`` and its data), this file is the helper of the ``kill -9`` test: it imports
seqkit once, then forks one training process per kill point, each a real ``seqkit train``
(the CLI's ``main``) that SIGKILLs itself at that point, and writes what happened to
``kills.json``. Its hooks wrap seqkit's functions from the outside; the library has none.
"""

from __future__ import annotations

import errno
import itertools
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import seqkit
from seqkit.cli import main
from seqkit.config import load_recipe
from seqkit.errors import SeqkitError
from seqkit.tasks import LanguageModelTask
from seqkit.train import TrainingDiverged, train

posix = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and POSIX signals")
# The kill -9 runs: two evaluations, each saving best/ and then last/ (steps 2 and 4).
KILL_SETTINGS = ["--set", "train.max_steps=4", "--set", "train.eval_every=2", "--set", "generate.max_tokens=4", "--quiet"]


def _records(run_dir: Path, split: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["split"] == split]


def _leftovers(run_dir: Path) -> list[str]:
    """What an unfinished save leaves behind: ``NAME.old`` and ``.NAME.tmp-PID`` directories."""
    return sorted(path.name for path in run_dir.iterdir() if path.name.endswith(".old") or ".tmp-" in path.name)


def _seqkit_env() -> dict[str, str]:
    """The environment of a child Python that imports the same seqkit as these tests."""
    source = str(Path(seqkit.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # fmt: skip


# --- 1. Ctrl-C / SIGTERM ---------------------------------------------------------------


@posix
def test_sigterm_to_seqkit_train_saves_last_prints_the_resume_command_and_resume_finishes(tiny_recipe):
    settings = ["--set", "train.epochs=3", "--set", "train.max_steps=60", "--set", "train.eval_every=5"]
    command = [sys.executable, "-m", "seqkit", "train", str(tiny_recipe.name), *settings, "--output-dir", "runs/stopped"]
    process = subprocess.Popen(command, cwd=tiny_recipe.parent, env=_seqkit_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:  # the first evaluation's line: the loop is running
            if line.startswith("step"):
                break
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    interrupted = re.search(r"^seqkit: interrupted at step (\d+); saved runs/stopped/last$", stderr, flags=re.M)
    assert interrupted, stderr
    step = int(interrupted.group(1))
    assert 5 <= step < 60
    assert seqkit.load(tiny_recipe.parent / "runs/stopped/last", device="cpu").info["step"] == step

    # the command it prints continues the run to the end, with the losses of a run never stopped
    resume = re.search(r"^seqkit: continue with: (.*)$", stderr, flags=re.M).group(1)
    arguments = shlex.split(resume)
    assert arguments[0] == "seqkit" and arguments[-1] == "--resume"
    resumed = CliRunner().invoke(main, [*arguments[1:], "--quiet"])
    assert resumed.exit_code == 0, resumed.output + resumed.stderr
    assert "trained 60 steps" in resumed.output
    straight = train(load_recipe(tiny_recipe, ["train.epochs=3", "train.max_steps=60", "train.eval_every=5", "output_dir=runs/straight"]), quiet=True)
    assert _records(tiny_recipe.parent / "runs/stopped", "valid") == _records(straight.run_dir, "valid")


# --- 2. kill -9 ------------------------------------------------------------------------


@posix
def test_kill_9_at_any_moment_leaves_best_and_last_loadable_and_resumable(tiny_recipe):
    workdir = tiny_recipe.parent
    started = time.perf_counter()
    helper = subprocess.run([sys.executable, __file__, "kill-points"], cwd=workdir, env=_seqkit_env(), capture_output=True, text=True, timeout=600)
    assert helper.returncode == 0, helper.stdout + helper.stderr
    kills = json.loads((workdir / "kills.json").read_text())
    reference = workdir / "runs" / "reference"
    assert _saves(workdir / "logs" / "reference.log") == [("best", 2), ("last", 2), ("best", 4), ("last", 4)]
    expected_weights = load_file(reference / "last" / "model.safetensors")
    stages = [kill["event"] for kill in kills if kill["mode"] in ("before", "torn")]
    for name in ("best", "last"):  # each stage of each save was a kill point
        assert stages.count(f"_write_text .{name}.tmp/config.yaml") == 1
        assert stages.count(f"_write_bytes .{name}.tmp/model.safetensors") == 1
        assert stages.count(f"rename .{name}.tmp {name}") == 2 and stages.count(f"rename {name} {name}.old") == 1
        assert stages.count(f"rmtree {name}.old") == 2
    assert stages.count("_write_bytes .last.tmp/trainer_state.pt") == 1 and stages.count("_fsync .") == 2
    print(f"{len(kills)} kills in {time.perf_counter() - started:.1f} s")

    for kill in kills:
        run_dir, where = workdir / kill["run_dir"], f"killed {kill['mode']} {kill['at']} ({kill['event']})"
        if kill["mode"] != "time":
            assert kill["signal"] == signal.SIGKILL, where
        elif kill["signal"] != signal.SIGKILL:  # finished before the clock ran out
            continue
        saved = _saves(workdir / kill["log"])
        # every checkpoint saved whole before the kill loads and predicts, at its own step or the one being saved
        for name in ("best", "last"):
            steps = [step for saved_name, step in saved if saved_name == name]
            if not steps:
                continue
            lm = seqkit.load(run_dir / name, device="cpu")
            assert lm.info["step"] in (steps[-1], steps[-1] + 2), where
            assert lm.generate("the whale", max_tokens=3, seed=0).startswith("the whale"), where
        # --resume continues from last/ and ends where a run never killed ends
        resumed = CliRunner().invoke(main, ["train", "tiny.yaml", "--output-dir", kill["run_dir"], "--resume", *KILL_SETTINGS])
        if any(name == "last" for name, _ in saved) or (run_dir / "last").is_dir() or (run_dir / "last.old").is_dir():
            assert resumed.exit_code == 0, f"{where}: {resumed.output}{resumed.stderr}"
            weights = load_file(run_dir / "last" / "model.safetensors")
            assert weights.keys() == expected_weights.keys() and all(torch.equal(weights[k], expected_weights[k]) for k in weights), where
            assert _records(run_dir, "valid") == _records(reference, "valid"), where
            assert _records(run_dir, "test") == _records(reference, "test"), where
            assert _leftovers(run_dir) == [], where
        else:  # killed before the first last/ was in place: nothing to resume, and it says so
            assert resumed.exit_code == 2 and "nothing to resume" in resumed.stderr, f"{where}: {resumed.stderr}"
    assert sum(kill["mode"] == "time" and kill["signal"] == signal.SIGKILL for kill in kills) >= 2


# --- 3. NaN or infinite loss or gradient -----------------------------------------------


def _nonfinite_at(monkeypatch, calls: set[int], what: str = "loss") -> None:
    """Make the training loss (or, with ``what="gradient"``, only the gradient) NaN at these
    calls of the language model's loss."""
    original, count = LanguageModelTask.loss, itertools.count(1)

    def loss(self, model, chunk, carry):
        value, num_targets, carry = original(self, model, chunk, carry)
        if next(count) in calls:
            if what == "loss":
                value = value * float("nan")
            else:  # sqrt at 0: the value stays finite, its gradient is inf * 0 = NaN
                value = value + torch.sqrt(0 * model.embedding.embedding.weight.sum())
        return value, num_targets, carry

    monkeypatch.setattr(LanguageModelTask, "loss", loss)


@pytest.mark.parametrize("what", ["loss", "gradient"])
def test_nonfinite_loss_or_gradient_stops_naming_step_batch_and_last_good_checkpoint(tiny_recipe, monkeypatch, what):
    _nonfinite_at(monkeypatch, {13}, what)
    with pytest.raises(TrainingDiverged) as diverged:
        train(load_recipe(tiny_recipe), quiet=True)
    message = str(diverged.value)
    assert re.fullmatch(
        r"step 13 \(epoch 1, batch 13 of 25, whose first text begins '[^']+'\): "
        + ("the loss is nan" if what == "loss" else "the gradient norm is nan")
        + r", so training stopped before updating the weights; the last good checkpoint is runs/tiny/last \(step 10\)\. "
        r"Lower train.lr, set train.grad_clip, or set train.on_nonfinite: skip to leave such batches out",
        message,
    ), message
    assert seqkit.load("runs/tiny/last", device="cpu").info["step"] == 10
    assert [record["step"] for record in _records(Path("runs/tiny"), "train")] == [5, 10]  # nothing after the bad step


def test_nonfinite_loss_before_any_checkpoint_says_so_through_the_cli_in_one_line(tiny_recipe, monkeypatch):
    _nonfinite_at(monkeypatch, {3})
    result = CliRunner().invoke(main, ["train", str(tiny_recipe), "--quiet"])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqkit: error: step 3 (epoch 1, batch 3 of 25, "), result.stderr
    assert "the loss is nan" in lines[0] and "no checkpoint was saved yet" in lines[0]
    assert "Traceback" not in result.output + result.stderr


def test_on_nonfinite_skip_leaves_bad_batches_out_and_counts_them(tiny_recipe, monkeypatch):
    _nonfinite_at(monkeypatch, {13, 14})
    _nonfinite_at(monkeypatch, {17}, "gradient")
    result = CliRunner().invoke(main, ["train", str(tiny_recipe), "--set", "train.on_nonfinite=skip", "--set", "train.max_steps=20"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "trained 20 steps (3 batches skipped: NaN or infinite loss or gradient)" in result.output
    run_dir = Path("runs/tiny")
    assert [(r["step"], r["skipped_batches"]) for r in _records(run_dir, "train")] == [(5, 0), (10, 0), (15, 2), (20, 3)]
    assert all(math.isfinite(r["loss"]) for r in _records(run_dir, "train") + _records(run_dir, "valid"))
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    assert [(event.step, event.value) for event in events.Scalars("train/skipped_batches")] == [(5, 0), (10, 0), (15, 2), (20, 3)]
    for name in ("best", "last"):
        lm = seqkit.load(run_dir / name, device="cpu")
        assert all(torch.isfinite(tensor).all() for tensor in lm.model.state_dict().values())
        assert lm.info["step"] == 20


def test_on_nonfinite_skip_stops_after_too_many_bad_batches_in_a_row(tiny_recipe, monkeypatch):
    from seqkit.training import faults

    monkeypatch.setattr(faults, "MAX_SKIPPED_IN_A_ROW", 5)
    _nonfinite_at(monkeypatch, {3, *range(12, 100)}, "gradient")
    with pytest.raises(TrainingDiverged, match=r"^5 batches in a row had a NaN or infinite loss or gradient, the last at step 16 "
                                               r"\(epoch 1, batch 16 of 25, .*\): the gradient norm is nan; the last good checkpoint "
                                               r"is runs/tiny/last \(step 10\)\. Lower train.lr or set train.grad_clip$"):  # fmt: skip
        train(load_recipe(tiny_recipe, ["train.on_nonfinite=skip"]), quiet=True)
    assert torch.load("runs/tiny/last/trainer_state.pt", weights_only=True)["progress"]["skipped_batches"] == 1


def test_fp16_gradient_overflow_is_the_scalers_business_not_a_divergence():
    from seqkit.training.faults import nonfinite

    loss, overflowed = torch.tensor(2.5), torch.tensor(float("inf"))
    assert nonfinite(loss, overflowed, "fp16") is None  # GradScaler skips the step and lowers its scale
    assert nonfinite(loss, overflowed, "fp32") == "the gradient norm is inf"
    assert nonfinite(torch.tensor(float("nan")), torch.tensor(1.0), "fp16") == "the loss is nan"


# --- 4. A full disk, an unwritable output directory -----------------------------------


def test_output_dir_below_a_regular_file_is_refused_before_training(tiny_recipe):
    Path("runs").mkdir()
    Path("runs/taken").write_text("a file, not a directory\n")
    result = CliRunner().invoke(main, ["train", str(tiny_recipe), "--output-dir", "runs/taken/lm", "--quiet"])
    assert result.exit_code == 2
    assert result.stderr == ("seqkit: error: runs/taken/lm: cannot create or write the run directory "
                             "(runs/taken is a file, not a directory); choose another with --output-dir\n")  # fmt: skip
    with pytest.raises(SeqkitError, match="runs/taken is a file, not a directory"):
        train(load_recipe(tiny_recipe, ["output_dir=runs/taken"]), resume=False, quiet=True)


def test_too_little_free_space_is_refused_before_training(tiny_recipe, monkeypatch):
    real_disk_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real_disk_usage(path)._replace(free=200_000))
    result = CliRunner().invoke(main, ["train", str(tiny_recipe), "--quiet"])
    assert result.exit_code == 2
    assert re.fullmatch(r"seqkit: error: runs/tiny: not enough free disk space for the checkpoints: they need about (\d+\.\d) MB, "
                        r"0\.2 MB is free; make room or choose another directory with --output-dir\n", result.stderr), result.stderr  # fmt: skip
    assert sorted(path.name for path in Path("runs/tiny").iterdir()) == []  # nothing that would block the next try
    monkeypatch.setattr(shutil, "disk_usage", real_disk_usage)
    again = CliRunner().invoke(main, ["train", str(tiny_recipe), "--quiet", "--set", "train.max_steps=2"])
    assert again.exit_code == 0, again.stderr


@pytest.mark.parametrize("failing_save, intact", [
    (1, "no checkpoint was saved before; make room, then train again with --overwrite"),
    (3, "intact: runs/tiny/best (step 2), runs/tiny/last (step 2); make room, then continue with --resume"),
    (4, "intact: runs/tiny/best (step 4), runs/tiny/last (step 2); make room, then continue with --resume"),
])  # fmt: skip
def test_a_full_disk_during_a_save_keeps_the_checkpoints_before_it(tiny_recipe, monkeypatch, failing_save, intact):
    from seqkit import checkpoint

    write_bytes, weights_written = checkpoint._write_bytes, itertools.count(1)

    def write_until_the_disk_is_full(path: Path, data: bytes) -> None:
        if path.name == "model.safetensors" and next(weights_written) == failing_save:
            write_bytes(path, data[: len(data) // 2])  # what fitted
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write_bytes(path, data)

    settings = ["--set", "train.max_steps=4", "--set", "train.eval_every=2", "--quiet"]
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "_write_bytes", write_until_the_disk_is_full)
        result = CliRunner().invoke(main, ["train", str(tiny_recipe), *settings])
    name = "best" if failing_save in (1, 3) else "last"
    assert result.exit_code == 2
    assert result.stderr == (f"seqkit: error: runs/tiny/{name}: cannot save the checkpoint (No space left on device); "
                             f"what was there is unchanged; {intact}\n")  # fmt: skip
    run_dir = Path("runs/tiny")
    assert _leftovers(run_dir) == []
    for name in ("best", "last"):
        if f"runs/tiny/{name} (step" in intact:
            step = int(re.search(rf"runs/tiny/{name} \(step (\d)\)", intact).group(1))
            lm = seqkit.load(run_dir / name, device="cpu")
            assert lm.info["step"] == step and lm.generate("the whale", max_tokens=3, seed=0).startswith("the whale")
        else:
            assert not (run_dir / name).exists()
    if "--resume" in intact:  # with room again, the run goes on from last/ to its end
        with (run_dir / "metrics.jsonl").open("a") as handle:
            handle.write('{"step": 3, "split": "tr')  # a record cut short as the disk filled up
        resumed = CliRunner().invoke(main, ["train", str(tiny_recipe), *settings, "--resume"])
        assert resumed.exit_code == 0, resumed.stderr
        assert "trained 4 steps" in resumed.output and _leftovers(run_dir) == []
        assert [record["step"] for record in _records(run_dir, "valid")] == [2, 4]


def test_a_full_disk_under_tensorboard_is_one_line_too(tiny_recipe, monkeypatch):
    from tensorboard.summary.writer.record_writer import RecordWriter

    write, records = RecordWriter.write, itertools.count(1)

    def write_until_the_disk_is_full(self, data: bytes) -> None:
        if next(records) > 40:  # TensorBoard's writer thread fails (a few evaluations in)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(self, data)

    monkeypatch.setattr(RecordWriter, "write", write_until_the_disk_is_full)
    result = CliRunner().invoke(main, ["train", str(tiny_recipe), "--set", "train.eval_every=5", "--quiet"])
    assert result.exit_code == 2
    assert re.fullmatch(r"seqkit: error: No space left on device \(training into runs/tiny\); intact: runs/tiny/best \(step (\d+)\), "
                        r"runs/tiny/last \(step (\d+)\); fix that, then continue with --resume\n", result.stderr), result.stderr  # fmt: skip
    assert seqkit.load("runs/tiny/last", device="cpu").info["step"] >= 5


# --- the kill -9 helper ------------------------------------------------------------------


def _saves(log: Path) -> list[tuple[str, int]]:
    """The checkpoints a killed run saved whole, in order: ``[("best", 2), ("last", 2), ...]``."""
    lines = log.read_text().splitlines() if log.exists() else []
    return [(line.split()[2], int(line.split()[3])) for line in lines if line.startswith("- saved ")]


class _Patched:
    """A module seen through a few replaced functions."""

    def __init__(self, module: Any, **replaced: Any):
        self._module = module
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def _install_kill_points(run_dir: str, log_path: str, kill: Optional[tuple[str, int]]) -> None:
    """Number every file operation of ``seqkit.checkpoint`` (writes, fsyncs, renames,
    removals), log each to ``log_path`` before it runs, and SIGKILL this process where
    ``kill`` says: ``("before", n)``, ``("torn", n)`` (half of the n-th file written),
    ``("after", n)`` the n-th operation, or ``("step", k)`` inside the k-th training step."""
    from seqkit import checkpoint
    from seqkit.training import run as run_module

    log = open(log_path, "a", buffering=1)  # a line at a time: on disk before any kill
    operations, steps = itertools.count(1), itertools.count(1)

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def numbered(label: str, function: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            n = next(operations)
            paths = " ".join(re.sub(r"\.tmp-\d+", ".tmp", os.path.relpath(arg, run_dir)) for arg in args if isinstance(arg, Path))
            log.write(f"{n} {label} {paths}\n")
            if kill == ("before", n):
                die()
            result = function(*args, **kwargs)
            if kill == ("torn", n):
                os.truncate(args[0], os.path.getsize(args[0]) // 2)
                die()
            if kill == ("after", n):
                die()
            return result

        return run

    for name in ("_write_text", "_write_bytes", "_fsync"):
        setattr(checkpoint, name, numbered(name, getattr(checkpoint, name)))
    checkpoint.os = _Patched(os, rename=numbered("rename", os.rename))
    checkpoint.shutil = _Patched(shutil, rmtree=numbered("rmtree", shutil.rmtree))

    save_checkpoint = run_module.save_checkpoint

    def logged_save(directory: Path, *args: Any, **kwargs: Any) -> Path:
        step = args[3]["step"]  # info
        log.write(f"- saving {Path(directory).name} {step}\n")
        saved = save_checkpoint(directory, *args, **kwargs)
        log.write(f"- saved {Path(directory).name} {step}\n")
        return saved

    run_module.save_checkpoint = logged_save
    loss = LanguageModelTask.loss

    def loss_or_die(self: Any, *args: Any) -> Any:
        if kill == ("step", next(steps)):
            die()
        return loss(self, *args)

    LanguageModelTask.loss = loss_or_die


def _train_in_child(name: str, kill: Optional[tuple[str, int]]) -> int:
    """Fork a process that runs ``seqkit train tiny.yaml`` into ``runs/NAME``, logging to
    ``logs/NAME.log`` and SIGKILLing itself where ``kill`` says; returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 3
    try:
        _install_kill_points(f"runs/{name}", f"logs/{name}.log", kill)
        code = main(["train", "tiny.yaml", "--output-dir", f"runs/{name}", *KILL_SETTINGS], standalone_mode=False) or 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _kill_points() -> None:
    """Kill training inside steps, at clock times, and at each stage of its saves; write
    ``kills.json``.

    The stages of a save that replaces a checkpoint (step 4): the temporary directory just
    made (before its first file), half-way through writing the weights and the trainer
    state, before each rename (the old checkpoint set aside; the new one swapped in),
    before the old one is removed, before the directory is flushed; and after the last
    save. The first saves (step 2) replace nothing: killed before and after their swap.
    """
    import datasets  # noqa: F401 -- what training imports lazily: each forked run then starts warm
    import torch._dynamo  # noqa: F401

    Path("logs").mkdir()
    started = time.perf_counter()
    _, status = os.waitpid(_train_in_child("reference", None), 0)  # never killed: lists the operations, gives the final weights
    assert os.waitstatus_to_exitcode(status) == 0
    duration = time.perf_counter() - started
    events, step = [], None  # (number, operation, step of the save it belongs to)
    for line in Path("logs/reference.log").read_text().splitlines():
        if line.startswith("- saving"):
            step = int(line.split()[-1])
        elif not line.startswith("-"):
            events.append((*line.split(maxsplit=1), step))
    stages = {2: r"rename|rmtree \w+\.old", 4: r"_write_text \.\w+\.tmp/config|rename|rmtree \w+\.old|_fsync \.$"}
    plan = [("step", k) for k in (1, 3)]
    plan += [("before", int(number)) for number, event, step in events if re.match(stages[step], event)]
    plan += [("torn", int(number)) for number, event, step in events if step == 4 and event.startswith("_write_bytes")]
    plan += [("after", int(events[-1][0]))]
    plan += [("time", round(duration * fraction, 3)) for fraction in (0.3, 0.5, 0.7)]
    kills = []
    for index, (mode, at) in enumerate(plan):
        name = f"k{index}"
        pid = _train_in_child(name, None if mode == "time" else (mode, at))
        if mode == "time":
            time.sleep(at)
            os.kill(pid, signal.SIGKILL)  # a zombie at worst: it is our child until waitpid
        _, status = os.waitpid(pid, 0)
        event = next((event for number, event, _ in events if number == str(at)), "") if mode in ("before", "torn", "after") else ""
        kills.append({"mode": mode, "at": at, "event": event, "run_dir": f"runs/{name}", "log": f"logs/{name}.log",
                      "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None})  # fmt: skip
    Path("kills.json").write_text(json.dumps(kills, indent=1))


if __name__ == "__main__" and sys.argv[1:] == ["kill-points"]:
    _kill_points()


def test_the_fp16_loss_scale_is_logged(tiny_recipe, monkeypatch):
    """Under fp16 each train record and TensorBoard carry the gradient scaler's factor (here a
    real scaler on the CPU, growing 2x every 5 overflow-free steps; fp16 itself needs CUDA)."""
    scaler_class = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device, enabled: scaler_class(device, init_scale=1024.0, growth_interval=5))
    train(load_recipe(tiny_recipe, ["train.max_steps=20"]), quiet=True)
    expected = [(5, 2048.0), (10, 4096.0), (15, 8192.0), (20, 16384.0)]
    assert [(r["step"], r["loss_scale"]) for r in _records(Path("runs/tiny"), "train")] == expected
    events = EventAccumulator("runs/tiny/tb")
    events.Reload()
    assert [(event.step, event.value) for event in events.Scalars("train/loss_scale")] == expected
