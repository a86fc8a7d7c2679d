"""``train(recipe)``: the training loop, written out.

``setup_run`` (``training/run.py``) builds everything the loop works on -- run directory,
tokenizer, task and data, model, optimizer, schedule -- as one ``Run``, or restores it from
``last/`` with ``resume``. Then the loop, in ``fit``::

    for each epoch:
        for each batch:
            train_step(run, batch)       # forward, loss, backward, clip, step, schedule
            progress.advance()           # step, epoch, place in the epoch
            log_train(run)               # every train.log_every steps
            evaluate_and_save(run)       # when due: valid metrics, best/, last/, early stopping
            stop when finished or on Ctrl-C (last/ saved first)

and ``report`` evaluates ``best/`` on the test split. What differs between tasks (their
data, the loss of a batch, evaluation) lives in ``tasks/``; what training writes in
``training/records.py``; faults and what they cost in ``training/faults.py``; the run
directory's rules in ``training/run_dir.py``. Under ``torchrun`` every process runs this
same loop: ``distributed.World`` shards batches, weighs losses and lets rank 0 write.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .checkpoint import WEIGHTS, load_weights, read_config
from .config import Recipe
from .errors import NotTextError, RecipeError, SeqkitError
from .runtime import autocast
from .training.faults import (
    Doing, StopSignal, TrainingDiverged, TrainingInterrupted, describe_batch, describe_failure, describe_os_error, describe_step,
    nonfinite, quiet_writer_errors, skip_or_stop,
)  # fmt: skip
from .training.optim import scaled_lr
from .training.records import add_scalars, append_record, describe_evaluation
from .training.run import Run, detach, setup_run
from .training.run_dir import RunLock

__all__ = ["train", "TrainResult", "TrainingDiverged", "TrainingInterrupted"]


@dataclass
class TrainResult:
    """What ``train`` returns: where the run is and how it went."""

    run_dir: Path
    steps: int
    best_metrics: dict[str, Any] = field(default_factory=dict)
    test_metrics: Optional[dict[str, Any]] = None
    sample: Optional[str] = None
    train_tokens_per_sec: float = float("nan")  # steady state: first log interval and evaluations left out
    skipped_batches: int = 0  # train.on_nonfinite: skip
    rank: int = 0  # under torchrun, this process's rank: rank 0 alone reports


def train(recipe: Recipe, *, resume: bool = False, overwrite: bool = False, quiet: bool = False) -> TrainResult:
    """Train the model a recipe describes and write its run directory.

    Args:
        recipe: a validated recipe (``config.load_recipe``).
        resume: continue the run in ``recipe.output_dir`` from its ``last/`` checkpoint.
        overwrite: replace a run already in ``recipe.output_dir``.
        quiet: print nothing but what ``model.init_from`` loaded and the final summary.

    Returns:
        A ``TrainResult``.

    Raises:
        SeqkitError: bad input (named), divergence (``TrainingDiverged``), an interruption
            after ``last/`` was saved (``TrainingInterrupted``), or a full disk or lost
            directory (naming the checkpoints still intact).
    """
    if resume and overwrite:
        raise SeqkitError(f"{recipe.output_dir}: --resume continues the run there and --overwrite replaces it: pass one of them")
    excepthook = threading.excepthook
    threading.excepthook = quiet_writer_errors(excepthook)
    doing, lock = Doing(), RunLock()
    try:
        return _train(recipe, doing, lock, resume=resume, overwrite=overwrite, quiet=quiet)
    except NotTextError as error:  # the recipe's data files are read with data.encoding: name it as the fix
        raise error.naming("data.encoding") from None
    except OSError as error:  # a full disk, a directory gone or turned read-only: one line, and what is safe
        raise SeqkitError(describe_os_error(error, Path(recipe.output_dir))) from None
    except RuntimeError as error:  # a kernel or library failure inside torch: one line, the traceback to a file
        raise SeqkitError(describe_failure(error, doing.now, Path(recipe.output_dir))) from None
    finally:
        lock.release()
        threading.excepthook = excepthook



def _train(recipe: Recipe, doing: Doing, lock: RunLock, *, resume: bool, overwrite: bool, quiet: bool) -> TrainResult:
    """``train`` itself: setup, the loop, the report (``train`` adds only the handling of
    OS errors and of failures inside torch)."""
    run = setup_run(recipe, lock, doing, resume=resume, overwrite=overwrite, quiet=quiet)
    try:
        with StopSignal(repeat_after=2.0 if run.world.distributed else 0.0) as stop:
            fit(run, stop)
        run.bar.close()
        return report(run)
    finally:
        run.close()


def fit(run: Run, stop: StopSignal) -> None:
    """The training loop: epochs of batches, each batch one optimizer step, until the
    recipe's steps or epochs are done, early stopping ends it, or a stop is requested."""
    progress, world = run.progress, run.world
    while not progress.finished and progress.epoch < run.epochs:
        run.unfreeze_for_epoch()  # gradual unfreezing of the layers model.init_from loaded
        loss_of = world.loss_function(run.task, run.model)  # task.loss, in DDP when distributed
        batches = run.task.train_batches(progress.epoch, run.device)
        for index, batch, end_of_epoch in world.batches(batches, progress.batch_in_epoch):
            run.doing.now = describe_step(progress, index, batches)
            train_step(run, loss_of, batch)
            progress.advance(index, end_of_epoch)
            run.remove_old_run()  # overwrite: the old run goes only now that the new one made a step
            if end_of_epoch:
                run.carry = None
            run.bar.update()
            if progress.step % run.config.log_every == 0:
                log_train(run)
            last = run.out_of_budget(end_of_epoch)
            if last or run.evaluation_due(end_of_epoch):
                evaluate_and_save(run, last)
            if progress.finished:
                return
            if world.any(stop.requested):  # DDP: a request to any process stops them all at this step
                stop_here(run)


def train_step(run: Run, loss_of: Callable[[Any, Any], tuple], batch: Any) -> None:
    """One optimizer step on one batch: forward, loss, backward, clip, step, schedule. A NaN
    or infinite loss or gradient never reaches the weights: the run stops, or with
    ``train.on_nonfinite: skip`` the batch is left out."""
    run.model.train()
    with autocast(run.device, run.precision.chosen):
        loss, num_targets, carry = loss_of(batch, run.carry)
    run.carry = detach(carry)  # backpropagation through time stops at chunk boundaries
    # DDP: back-propagate this process's share of the global batch's mean loss; log the global loss
    share, loss, num_targets = run.world.share(run.task, batch, loss, num_targets)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(share).backward()
    run.scaler.unscale_(run.optimizer)  # clip and log the true gradient under fp16
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.grad_clip or math.inf)
    problem = nonfinite(loss, grad_norm, run.precision.chosen)  # one sync a step, before any update
    if problem is None:
        with scaled_lr(run.optimizer, getattr(batch, "lr_scale", 1.0)):  # train.variable_bptt: lr x chunk length / bptt
            run.scaler.step(run.optimizer)
        run.average.update(run.model, run.progress.step + 1)  # train.average: fold the new weights in
        run.meter.add(loss.detach(), num_targets, grad_norm)
        run.progress.skipped_in_a_row = 0
    else:
        where = describe_batch(run.doing.now, batch, run.tokenizer)
        diverged = skip_or_stop(problem, where, run.progress, run.config.on_nonfinite, run.run_dir)
        if diverged is not None:
            raise diverged
        run.carry = None  # the carried state may hold the NaN too
    run.scaler.update()
    if not run.plateau:
        run.scheduler.step()


def log_train(run: Run) -> None:
    """The training log line of the steps since the last: metrics.jsonl, TensorBoard, the progress bar."""
    step = run.progress.step
    logged = run.meter.log(run.writer, step, run.lr)
    if run.config.on_nonfinite == "skip":
        logged["skipped_batches"] = run.progress.skipped_batches
        run.writer.add_scalar("train/skipped_batches", run.progress.skipped_batches, step)
    if run.scaler.is_enabled():  # fp16: the scaler halves its factor at each step it skips for overflow
        logged["loss_scale"] = run.scaler.get_scale()
        run.writer.add_scalar("train/loss_scale", logged["loss_scale"], step)
    append_record(run.run_dir / "metrics.jsonl", {"step": step, "split": "train", **logged})
    run.bar.set_postfix(loss=f"{logged['loss']:.3f}", tok_s=f"{logged['tokens_per_sec']:,.0f}")


def evaluate_and_save(run: Run, last: bool) -> None:
    """Validation metrics (on rank 0; every process decides on its numbers), the plateau
    schedule, early stopping, metrics.jsonl and TensorBoard, ``best/`` when the metric
    improved, ``last/`` always, and a sample of what a generative model writes now.
    ``last``: the step was the last the recipe allows, so training finishes here."""
    run.meter.pause()  # evaluation time is not training time
    run.doing.now = f"the evaluation after step {run.progress.step}"
    with run.average.applied(run.model):  # train.average: evaluate and save the averaged weights
        _evaluate_and_save(run, last)
    run.meter.resume()


def _evaluate_and_save(run: Run, last: bool) -> None:
    progress, task = run.progress, run.task
    metrics = run.world.on_main(task.evaluate, run.model, run.precision.chosen)
    check_selected_metric(metrics, task, run.config.select_on)
    improved = progress.record_evaluation(metrics[task.metric], task.higher_is_better)
    if run.plateau:
        run.scheduler.step(metrics[task.metric])
    early_stop = run.config.early_stopping is not None and progress.evals_without_improvement >= run.config.early_stopping
    progress.finished = last or early_stop
    epoch = run.epoch_of(progress.step)
    record = {"step": progress.step, "epoch": epoch, "split": "valid", **metrics,
              "train_loss": run.meter.take_eval_loss(), "lr": run.lr, "best": improved}  # fmt: skip
    append_record(run.run_dir / "metrics.jsonl", record)
    add_scalars(run.writer, "valid", metrics, progress.step)
    run.writer.flush()
    info = {"step": progress.step, "epoch": epoch, "metrics": {"valid": metrics}}
    if improved:
        run.save_best(info)
    run.save_last(info)
    run.say(describe_evaluation(record, task, run.config.select_on) + ("  *best" if improved else ""))
    _log_sample(run, task.sample(run.model) if run.world.main else None, progress.step)  # generative tasks
    if early_stop:
        run.say(f"early stopping: no improvement in {run.config.early_stopping} evaluations")


def check_selected_metric(metrics: dict[str, Any], task: Any, select_on: str) -> None:
    """The metric that picks ``best/`` must be among the evaluation's numbers: recipe
    loading checks ``train.select_on`` against each task's names (``recipe_rules``); this
    catches a task that reports otherwise, at the first evaluation, before anything is saved."""
    if not isinstance(metrics.get(task.metric), (int, float)):
        names = ", ".join(name for name, value in metrics.items() if isinstance(value, float))
        key = f"train.select_on: {select_on!r}" if select_on != "auto" else f"the task's metric {task.metric!r}"
        raise RecipeError([f"{key} is not among the validation metrics this run reports ({names})"])


def stop_here(run: Run) -> None:
    """Ctrl-C or SIGTERM: the step in hand is finished; save everything a resume needs, then leave."""
    run.save_last({"step": run.progress.step, "epoch": run.epoch_of(run.progress.step)})
    run.world.barrier()  # torchrun ends every process once one exits with an error: only after last/ is written
    raise TrainingInterrupted(run.progress.step, run.run_dir / "last")


def report(run: Run) -> TrainResult:
    """What ``train`` returns: the best checkpoint's validation metrics, its test metrics
    (when there is a test split) and, for generative tasks, a sample of what it writes."""
    progress = run.progress
    if not run.world.main:  # rank 0 reports
        return TrainResult(run_dir=run.run_dir, steps=progress.step, rank=run.world.rank)
    run.doing.now = "the report on best/ after training"
    result = TrainResult(run_dir=run.run_dir, steps=progress.step, train_tokens_per_sec=run.meter.steady_tokens_per_sec(),
                         skipped_batches=progress.skipped_batches)  # fmt: skip
    best = run.run_dir / "best"
    if best.is_dir():
        load_weights(run.model, best / WEIGHTS)
        result.best_metrics = read_config(best)[1].get("metrics", {}).get("valid", {})
    holdout = run.recipe.data.holdout
    if run.recipe.data.test is not None or (holdout is not None and holdout.test > 0):
        result.test_metrics = run.task.evaluate(run.model, run.precision.chosen, split="test")
        append_record(run.run_dir / "metrics.jsonl", {"step": progress.best_step, "split": "test", **result.test_metrics})
        add_scalars(run.writer, "test", result.test_metrics, progress.best_step or 0)
    result.sample = run.task.sample(run.model)
    _log_sample(run, result.sample, progress.step)
    return result


def _log_sample(run: Run, text: Optional[str], step: int) -> None:
    if text is not None:
        run.writer.add_text("sample", "    " + text.replace("\n", "\n    "), step)
