"""Faults met while training, and what each costs: nothing saved is lost.

Ctrl-C or SIGTERM sets a flag the loop checks after each step (``StopSignal``), so
``last/`` is saved after the step in hand; a NaN or infinite loss or gradient is caught
before the optimizer step (``nonfinite``) and stops the run or leaves the batch out
(``skip_or_stop``); an OSError or a failure inside torch becomes one line that names where
training was and which checkpoints are intact (``describe_os_error``,
``describe_failure``, the traceback in ``error.log``).
"""

from __future__ import annotations

import math
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch

from .. import distributed
from ..checkpoint import read_config, readable_directory
from ..errors import SeqkitError

if TYPE_CHECKING:
    from .run import Progress

# train.on_nonfinite: skip gives up after this many batches in a row with a NaN or inf loss or gradient.
MAX_SKIPPED_IN_A_ROW = 100


class TrainingInterrupted(SeqkitError):
    """Raised after SIGINT/SIGTERM once ``last/`` is saved; the run can be resumed."""

    def __init__(self, step: int, last: Path):
        self.step, self.last = step, last
        super().__init__(f"interrupted at step {step}; saved {last}")


class TrainingDiverged(SeqkitError):
    """The loss or the gradient became NaN or infinite; the weights were not updated with it."""


class Doing:
    """What training is doing now (``setting up``, ``step 12 (epoch 1, batch 12 of 211)``),
    for the one line that reports a failure inside torch."""

    now = "setting up"


class StopSignal:
    """Turns SIGINT / SIGTERM into a flag the loop checks after each step. A second signal
    stops at once, unless it comes within ``repeat_after`` seconds (torchrun forwards the
    terminal's Ctrl-C to processes that got it already)."""

    def __init__(self, repeat_after: float = 0.0):
        self.requested = False
        self.repeat_after, self.first = repeat_after, 0.0
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame: Any) -> None:
        if self.requested and time.monotonic() - self.first >= self.repeat_after:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        if not self.requested:
            self.requested, self.first = True, time.monotonic()

    def __exit__(self, *exc_info: Any) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def nonfinite(loss: torch.Tensor, grad_norm: torch.Tensor, precision: str) -> Optional[str]:
    """What is NaN or infinite in this step (``None``: nothing). Under fp16 the gradient
    scaler skips steps whose scaled gradients overflow, by design, so only the loss counts."""
    values = [loss.detach().float()] if precision == "fp16" else [loss.detach().float(), grad_norm.detach().float()]
    loss_value, *grad_norm_value = torch.stack(values).tolist()
    if not math.isfinite(loss_value):
        return f"the loss is {loss_value}"
    if grad_norm_value and not math.isfinite(grad_norm_value[0]):
        return f"the gradient norm is {grad_norm_value[0]}"
    return None


def describe_step(progress: Progress, index: int, batches: Any) -> str:
    """``step 13 (epoch 1, batch 13 of 25)``; a streamed epoch's length shows only at its end."""
    of = f" of {len(batches)}" if hasattr(batches, "__len__") else ""
    return f"step {progress.step + 1} (epoch {progress.epoch + 1}, batch {index + 1}{of})"


def describe_batch(step: str, batch: Any, tokenizer: Any) -> str:
    """Which batch: its step, epoch and place in the epoch (``describe_step``) and how its first text begins."""
    where = step[:-1]
    token_ids = next((getattr(batch, name) for name in ("token_ids", "sources", "inputs") if hasattr(batch, name)), None)
    if tokenizer is None or not isinstance(token_ids, torch.Tensor) or token_ids.dim() != 2 or token_ids.is_floating_point():
        return where + ")"
    length = int(batch.lengths[0]) if hasattr(batch, "lengths") else token_ids.shape[1]
    text = " ".join(tokenizer.decode(token_ids[0, :length].tolist()).split())
    return f"{where}, whose first text begins {text[:60]!r})"


def skip_or_stop(problem: str, where: str, progress: Progress, on_nonfinite: str, run_dir: Path) -> Optional[TrainingDiverged]:
    """Count a batch left out for a NaN or inf; the error to raise when the run must stop instead."""
    if on_nonfinite == "skip" and progress.skipped_in_a_row + 1 < MAX_SKIPPED_IN_A_ROW:
        progress.skipped_batches += 1
        progress.skipped_in_a_row += 1
        return None
    last = run_dir / "last"
    step = checkpoint_step(last)
    saved = f"the last good checkpoint is {last} (step {step})" if step is not None else "no checkpoint was saved yet"
    if on_nonfinite == "skip":
        return TrainingDiverged(f"{MAX_SKIPPED_IN_A_ROW} batches in a row had a NaN or infinite loss or gradient, the last at {where}: "
                                f"{problem}; {saved}. Lower train.lr or set train.grad_clip")  # fmt: skip
    return TrainingDiverged(f"{where}: {problem}, so training stopped before updating the weights; {saved}. "
                            "Lower train.lr, set train.grad_clip, or set train.on_nonfinite: skip to leave such batches out")  # fmt: skip


def checkpoint_step(directory: Path) -> Optional[int]:
    """The step a checkpoint was saved at; ``None`` when there is none (or it is unreadable)."""
    try:
        return read_config(readable_directory(directory))[1].get("step")
    except SeqkitError:
        return None


def saved_checkpoints(run_dir: Path) -> str:
    """The run's checkpoints and their steps, as a phrase: ``runs/x/best (step 20), runs/x/last (step 30)``."""
    steps = {name: checkpoint_step(run_dir / name) for name in ("best", "last")}
    return ", ".join(f"{run_dir / name} (step {step})" for name, step in steps.items() if step is not None)


def describe_os_error(error: OSError, run_dir: Path) -> str:
    """One line for an OSError met while training: what failed, and which checkpoints are intact."""
    where = f"{error.filename}: " if error.filename else ""
    saved = saved_checkpoints(run_dir)
    then = f"intact: {saved}; fix that, then continue with --resume" if saved else "no checkpoint was saved yet; fix that, then train again with --overwrite"
    return f"{where}{error.strerror or error} (training into {run_dir}); {then}"


def describe_failure(error: RuntimeError, doing: str, run_dir: Path) -> str:
    """One line for a failure inside torch (a kernel that does not run here, a bug): where
    training was, what failed, where the full traceback went, and which checkpoints are
    intact. The traceback goes to ``error.log`` in the run directory, for a bug report."""
    message = (str(error).strip() or type(error).__name__).splitlines()[0]
    rank = distributed.process_rank()[0]
    log = run_dir / ("error.log" if rank == 0 else f"error-rank{rank}.log")
    try:
        log.write_text("".join(traceback.format_exception(error)), encoding="utf-8")
        written = f"the full traceback is in {log}"
    except OSError as log_error:
        written = f"the traceback could not be written to {log} ({log_error.strerror or log_error})"
    saved = saved_checkpoints(run_dir)
    intact = f"intact: {saved}" if saved else "no checkpoint was saved yet"
    return f"{doing}: {type(error).__name__} inside PyTorch: {message}; {written}; {intact}"


def quiet_writer_errors(excepthook: Any) -> Any:
    """A ``threading.excepthook`` that leaves out TensorBoard's writer thread failing to
    write (a full disk): the main thread meets the same error at its next write, and
    ``train`` reports it in one line instead of a traceback."""

    def hook(args: Any) -> None:
        if not (issubclass(args.exc_type, OSError) and type(args.thread).__module__.startswith("tensorboard")):
            excepthook(args)

    return hook
