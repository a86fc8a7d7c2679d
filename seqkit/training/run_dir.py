"""The run directory: what counts as seqkit's, the lock a run holds on it, and what
``--overwrite`` removes.

Nothing a user owns is replaced: seqkit trains only into an empty directory or one of its
own run directories (``seqkit_run``), one run at a time (``RunLock``), and ``overwrite``
removes the old run only once the new one has made its first step (``remove_run``, called
by the loop). Free space for the checkpoints is checked before training starts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from ..checkpoint import CONFIG, LABELS, TARGET_TOKENIZER, TOKENIZER, read_config, recover
from ..config import Recipe, TrainConfig
from ..errors import RecipeError, SeqkitError

# What a resumed run must share with the run it continues; `train` and `generate` may change.
FIXED_SECTIONS = ("task", "seed", "data", "tokenizer", "model")
# In every run directory: marks it as seqkit's, and the run writing it holds an flock on it (its PID inside).
RUN_MARKER = ".seqkit-run"
# What a run writes at the top of its directory: what --overwrite removes (nothing else there is touched).
_RUN_FILES = ("metrics.jsonl", CONFIG, TOKENIZER, LABELS, TARGET_TOKENIZER, "error.log")
_RUN_DIRECTORIES = ("last", "best", "last.old", "best.old", "tb")


def prepare_run_dir(run_dir: Path, recipe: Recipe, lock: "RunLock", *, resume: bool, overwrite: bool) -> None:
    """Check the output directory before any work, and lock it: never lose a saved run, or
    a file seqkit did not write, by accident. ``overwrite`` removes nothing here: the old
    run goes once the new one has made its first step (``remove_run``)."""
    if run_dir.is_dir() and not seqkit_run(run_dir):
        others = sorted(path.name for path in run_dir.iterdir())
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise SeqkitError(f"{run_dir}: not a seqkit run directory and not empty (it holds {shown}); seqkit never writes "
                              "among files it did not write: choose a new or empty directory with --output-dir")  # fmt: skip
    if resume and not run_dir.is_dir():
        raise SeqkitError(f"{run_dir / 'last'}: nothing to resume (no checkpoint saved there yet)")
    check_writable(run_dir)  # before recover() renames anything; a file in the way is named there
    lock.acquire(run_dir)
    if resume:
        recover(run_dir / "last")
        recover(run_dir / "best")
        if not (run_dir / "last").is_dir():
            raise SeqkitError(f"{run_dir / 'last'}: nothing to resume (no checkpoint saved there yet)")
        saved, _ = read_config(run_dir / "last")
        problems = [
            f"{run_dir / 'last' / CONFIG}: {key}: the run was trained with {old!r}, the recipe now says {new!r}"
            for key, old, new in _differences(saved.model_dump(mode="json"), recipe.model_dump(mode="json"))
            if key.split(".")[0] in FIXED_SECTIONS
        ]
        if problems:
            raise RecipeError(problems + ["--resume continues a run with the same task, seed, data, tokenizer and model"])
        return
    existing = [name for name in ("last", "best", "metrics.jsonl", CONFIG) if (run_dir / name).exists()]
    if existing and not overwrite:
        raise SeqkitError(
            f"{run_dir}: already holds a run ({', '.join(existing)}); pass --resume to continue it, "
            "--overwrite to replace it, or --output-dir to train elsewhere"
        )


def seqkit_run(run_dir: Path) -> bool:
    """Whether seqkit wrote ``run_dir``: it holds ``RUN_MARKER``, or (a run of an earlier
    seqkit, which wrote no marker) a ``last/`` or ``best/`` checkpoint, or a ``config.yaml``
    with a recipe's sections beside the ``tb/`` or ``metrics.jsonl`` of a run (a recipe of
    the user's alone does not make a directory seqkit's)."""
    if (run_dir / RUN_MARKER).is_file():
        return True
    if any(recipe_like(run_dir / name / CONFIG) for name in ("last", "best", "last.old", "best.old")):
        return True
    return recipe_like(run_dir / CONFIG) and ((run_dir / "tb").is_dir() or (run_dir / "metrics.jsonl").is_file())


def recipe_like(config: Path) -> bool:
    """Whether ``config`` is a YAML mapping with a recipe's task, model and train sections."""
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):  # absent, not text, not YAML: not seqkit's
        return False
    return isinstance(data, dict) and {"task", "model", "train"} <= data.keys()


def holds_run(run_dir: Path) -> bool:
    """Whether a seqkit run directory holds anything of a run (what ``remove_run`` removes)."""
    return any((run_dir / name).exists() for name in (*_RUN_FILES, *_RUN_DIRECTORIES)) or any(run_dir.glob(".*.tmp-*"))


def remove_run(run_dir: Path) -> None:
    """``overwrite``: remove what a run wrote at the top of ``run_dir`` (its checkpoints, their
    leftovers of an interrupted save, metrics, TensorBoard, config.yaml, tokenizer, labels);
    anything else there stays."""
    for name in _RUN_DIRECTORIES:
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for leftover in run_dir.glob(".*.tmp-*"):  # a save interrupted by a kill (checkpoint.save_checkpoint)
        shutil.rmtree(leftover, ignore_errors=True)
    for name in _RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for log in run_dir.glob("error-rank*.log"):
        log.unlink()


class RunLock:
    """The lock a run holds on its directory while it writes it: an flock on ``RUN_MARKER``,
    which holds the PID of the process that has it. The OS drops the lock when that process
    ends, however it ends (kill -9 included), so a lock is never left behind."""

    def __init__(self) -> None:
        self.handle: Any = None
        self.path: Optional[Path] = None

    def acquire(self, run_dir: Path) -> None:
        """Lock ``run_dir`` or say which process has it."""
        try:
            import fcntl
        except ImportError:  # Windows: no flock; runs are not locked there
            return
        path = run_dir / RUN_MARKER
        while True:
            handle = path.open("a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip()
                handle.close()
                who = f"process {holder}" if holder.isdigit() else "another process"
                raise SeqkitError(f"{run_dir}: {who} is training into this directory now; wait for it to end or stop it, "
                                  "or choose another directory with --output-dir") from None  # fmt: skip
            try:
                same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:  # the run before released it and removed it meanwhile
                same = False
            if same:
                break
            handle.close()  # locked a marker that is gone: take the one there now
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle, self.path = handle, path

    def release(self) -> None:
        """Unlock; remove the marker when the run wrote nothing else (a run that stopped
        before it started leaves the directory as it found it)."""
        if self.handle is None:
            return
        run_dir = self.path.parent
        try:
            if not any(path.name != RUN_MARKER for path in run_dir.iterdir()):
                self.path.unlink()
        except OSError:
            pass
        self.handle.close()
        self.handle = None


def check_writable(run_dir: Path) -> None:
    """Create the run directory and write a probe file in it, or say why that fails."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".seqkit-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        in_the_way = next((path for path in (run_dir, *run_dir.parents) if path.exists() and not path.is_dir()), None)
        reason = f"{in_the_way} is a file, not a directory" if in_the_way is not None else error.strerror or str(error)
        raise SeqkitError(f"{run_dir}: cannot create or write the run directory ({reason}); choose another with --output-dir") from None


def check_free_space(run_dir: Path, model: torch.nn.Module, config: TrainConfig, tokenizer: Any, *, resume: bool) -> None:
    """Refuse to start when the checkpoints cannot fit: ``best/``, ``last/`` (weights, the
    optimizer's moments, the tokenizer) and the temporary copy a save writes before it swaps
    it in -- about three ``last/`` in all; one more on resume, when the others exist already."""
    tensors = {id(tensor): tensor for tensor in model.state_dict(keep_vars=True).values()}.values()  # tied weights once
    weights = sum(tensor.numel() * tensor.element_size() for tensor in tensors)
    moments = 2 if config.optimizer in ("adam", "adamw") else int(config.momentum > 0)
    tokenizer_bytes = len(tokenizer.to_str()) if tokenizer is not None else 0
    last = weights * (1 + moments) + tokenizer_bytes + 2**16  # 64 KiB: config.yaml, labels, RNG states
    need = last if resume else 3 * last
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise SeqkitError(
            f"{run_dir}: not enough free disk space for the checkpoints: they need about {_megabytes(need)}, "
            f"{_megabytes(free)} is free; make room or choose another directory with --output-dir"
        )


def _megabytes(size: float) -> str:
    return f"{size / 1e6:,.1f} MB"


def _differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in dict.fromkeys([*old, *new]):
            found += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [(prefix.rstrip("."), old, new)]
